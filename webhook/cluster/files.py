"""Cluster view from manifest files: YAML or JSON, multi-document, `kind: List` and typed
lists as the API returns them (`kind: PodList`, items without kind), directories
recursively. The only module that reads manifests from disk.

Every document is accounted for: NetworkPolicies are returned for checking, the kinds
the checks use go into the view, and the rest are counted by kind so the user can see
what was read. A file found in a directory that holds no Kubernetes object at all (other
tools' YAML) is skipped and listed, for the caller to name; anything else unusable raises
InputError naming the file and line.
"""
from __future__ import annotations

import json
import os
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import yaml

from webhook import safeload
from webhook.bounded_text import shown, shown_path
from webhook.cluster.objects import (WORKLOAD_TEMPLATES, namespace_from, pod_from, service_from,
                                     workload_from)
from webhook.cluster.view import ClusterView
from webhook.policy.model import Origin

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
STDIN = "-"  # a PATH of "-" reads standard input (`helm template ... | netpol-guard lint -`)
STDIN_NAME = "<stdin>"  # how findings name it
USED_KINDS = {"Namespace", "Pod", "Service", "NetworkPolicy", *WORKLOAD_TEMPLATES}


def is_other_policy_kind(kind: str) -> bool:
    """Policy kinds beside the NetworkPolicy: AdminNetworkPolicy, BaselineAdminNetworkPolicy,
    ClusterNetworkPolicy, and other plugins' (CiliumNetworkPolicy, GlobalNetworkPolicy, ...).
    The caller evaluates or reports them (see cluster/admin_policies.py), never drops them."""
    return kind != "NetworkPolicy" and kind.endswith("NetworkPolicy")


class InputError(Exception):
    """Unusable input: the message names the file (and line where known). The file name is
    shown escaped and clipped (a name may hold a newline or bytes that are not UTF-8); `file`
    keeps it as it is, to compare and to open."""

    def __init__(self, file: str, message: str, line: int = 0):
        self.file, self.line, self.message = file, line, message
        where = f"{shown_path(file)}:{line}" if line else shown_path(file)
        super().__init__(f"{where}: {message}")

    def __reduce__(self):  # rebuilt from its parts when it crosses from a parsing process
        return (self.__class__, (self.file, self.message, self.line))


class NotAManifest(InputError):
    """A file that holds no Kubernetes object at all (a Helm Chart.yaml or values file, a
    kustomization, a communication map, any other tool's YAML). Found while walking a
    directory it is skipped with a note; named on the command line (or with --strict) it
    stays unusable input."""

    def __init__(self, file: str, reason: str, line: int = 0):
        self.reason = reason
        super().__init__(file, reason, line)

    def __reduce__(self):
        return (self.__class__, (self.file, self.reason, self.line))


@dataclass
class Document:
    file: str
    line: int
    obj: Mapping[str, Any]
    # field path -> line, for NetworkPolicies only (what findings point at)
    lines: Mapping[str, int] = field(default_factory=dict, repr=False)

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind"))

    def origin(self) -> Origin:
        return Origin(self.file, self.line, self.lines)


def field_lines(node: Any) -> "FieldLines":
    """Field path -> 1-based line, for every key and list item in a composed YAML document."""
    return FieldLines(node)


class FieldLines(Mapping[str, int]):
    """The line of every field of a document, looked up by path (``spec.ingress[0].ports``).

    Not a dict of path strings: those repeat every key above them, and one long key over a
    list of N items made N copies of it (a 1 MB key over 3,000 items took 3 GB). Each
    node gets a number instead; ``_child`` maps "<parent number>.<key>" and
    "<parent number>[<index>]" to the child's number, and ``_lines[number]`` is its line,
    so each key is stored once and an aliased node once. Only strings and ints: the
    garbage collector never walks them, which keeps unpickling 10,000 of them from a
    parsing process as fast as the old flat dicts. A key may hold '.' or '[' itself
    (label keys do), so a lookup tries each way the path can be cut."""

    def __init__(self, node: Any):
        child: dict[str, int] = {}
        lines = array("l", [0])  # number 0: the document itself
        numbered = {id(node): 0}  # collections numbered so far: an alias is not walked again
        todo = [] if node.__class__ is yaml.ScalarNode else [(node, 0)]  # a document of one scalar: no fields
        while todo:
            n, number = todo.pop()
            mapping = n.__class__ is yaml.MappingNode
            for i, pair in enumerate(n.value):
                at, v = pair if mapping else (pair, pair)
                name = f"{number}.{at.value}" if mapping else f"{number}[{i}]"
                if v.__class__ is yaml.ScalarNode:
                    child[name] = len(lines)
                    lines.append(at.start_mark.line + 1)
                    continue
                known = numbered.get(id(v))
                if known is None:
                    known = numbered[id(v)] = len(lines)
                    lines.append(at.start_mark.line + 1)
                    todo.append((v, known))
                child[name] = known
        self._child, self._lines = child, lines

    def __getitem__(self, path: str) -> int:
        number = self._find(0, path) if path else None
        if number is None:
            raise KeyError(path)
        return self._lines[number]

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and bool(path) and self._find(0, path) is not None

    def get(self, path: str, default: Any = None) -> Any:
        number = self._find(0, path) if path else None
        return default if number is None else self._lines[number]

    def _find(self, number: int, rest: str) -> int | None:
        """The number of the node at `rest` below node `number`, or None."""
        if rest[0] == "[":
            end = rest.find("]")
            child = self._child.get(f"{number}{rest[:end + 1]}") if end > 0 else None
            return child if child is None or end + 1 == len(rest) else self._after(child, rest[end + 1:])
        # the key is the path up to the next '.' or '[', else up to a later one (a key with a dot)
        cut = _separator(rest, 0)
        while True:
            child = self._child.get(f"{number}.{rest[:cut]}")
            if child is not None:
                found = child if cut == len(rest) else self._after(child, rest[cut:])
                if found is not None:
                    return found
            if cut == len(rest):
                return None
            cut = _separator(rest, cut + 1)

    def _after(self, number: int, rest: str) -> int | None:
        # `rest` starts with '.' (a key follows) or '[' (an index)
        if rest == ".":
            return None
        return self._find(number, rest[1:] if rest[0] == "." else rest)

    def __iter__(self):
        # every path (for tests and debugging; lookups never iterate): the names back to paths
        parent_of = {number: name for name, number in self._child.items()}
        for name, number in self._child.items():
            if parent_of.get(number) == name:
                yield self._path(name, parent_of)

    def _path(self, name: str, parent_of: dict[int, str]) -> str:
        parts = []
        while True:
            cut = min(i for i in (name.find("."), name.find("[")) if i >= 0)
            number, label = int(name[:cut]), name[cut:]
            parts.append(label)
            if number == 0:
                break
            name = parent_of[number]
        return "".join(reversed(parts)).lstrip(".")

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _separator(path: str, start: int) -> int:
    """Where the next '.' or '[' of `path` is from `start`, else its length."""
    dot, bracket = path.find(".", start), path.find("[", start)
    if dot < 0:
        return bracket if bracket >= 0 else len(path)
    return dot if bracket < 0 or dot < bracket else bracket


def find_files(paths: Iterable[str]) -> list[str]:
    """Manifest files under the given paths; directories are walked recursively, sorted."""
    return [f for f, _ in walk(paths)]


def walk(paths: Iterable[str]) -> list[tuple[str, bool]]:
    """(file, found in a directory) for the manifest files under the given paths. Only
    files found in a directory may be skipped as not Kubernetes objects: a file named on
    the command line is what the user asked for."""
    out: list[tuple[str, bool]] = []
    for p in paths:
        if os.path.isdir(p):
            out.extend((f, True) for f in sorted(_files_in(p)))
        elif os.path.exists(p) or p == STDIN:
            out.append((p, False))
        else:
            raise InputError(p, "no such file or directory")
    return out


def _files_in(top: str) -> list[str]:
    """The manifest files under a directory. Symlinked directories are followed (a
    repository linking a shared folder of policies means them to be checked), each real
    directory read once: a link back up the tree, or a second link to the same folder,
    is not walked again ((device, inode) seen). Hidden directories (.git, .github) are
    left out: they hold tools' files, not manifests; name one to check it. A directory
    that cannot be read is unusable input, not a silent gap."""
    def unreadable(err: OSError) -> None:
        raise InputError(err.filename or top, f"cannot read directory: {err.strerror}")

    seen: set[tuple[int, int]] = set()
    found: list[str] = []
    for root, dirs, files in os.walk(top, onerror=unreadable, followlinks=True):
        st = os.stat(root)
        if (st.st_dev, st.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(os.path.join(root, f) for f in files if f.endswith(MANIFEST_SUFFIXES))
    return found


# apiVersion groups of configuration files that look like objects but are read by a tool,
# never sent to the API server
_TOOL_GROUPS = {"kustomize.config.k8s.io": "kubectl kustomize DIR | netpol-guard lint -"}


def not_an_object(obj: Any, file: str) -> str | None:
    """Why a document is no Kubernetes object at all (so its file may be skipped), or None.

    A mapping with metadata and only one of apiVersion/kind is a broken manifest, not some
    other tool's file: _check_object names what it lacks. A values file that happens to
    have a top-level `kind:` has no metadata and is no object."""
    if not isinstance(obj, Mapping):
        kind = "list" if isinstance(obj, list) else type(obj).__name__
        return f"not a Kubernetes object (the document is a {kind})"
    api, kind = obj.get("apiVersion"), obj.get("kind")
    group = api.split("/")[0] if isinstance(api, str) and "/" in api else ""
    if group in _TOOL_GROUPS:
        return (f"a {shown(kind or 'configuration')} of {shown(api)}, not a Kubernetes object "
                f"(`{_TOOL_GROUPS[group]}` checks what it builds)")
    if api and kind:
        return None
    if "metadata" in obj and (api or kind):
        return None
    lacks = "kind" if api else "apiVersion" if kind else "apiVersion or kind"
    hint = ""
    name = os.path.basename(file)
    if name in ("Chart.yaml", "Chart.yml"):
        hint = "; a Helm chart: `helm template RELEASE DIR | netpol-guard lint -` checks what it renders"
    return f"not a Kubernetes object (no {lacks}){hint}"


def _check_object(obj: Any, file: str, line: int) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        kind = "list" if isinstance(obj, list) else type(obj).__name__
        raise InputError(file, f"document is a {kind}, not a Kubernetes object (expected a mapping "
                               "with apiVersion and kind)", line)
    if not isinstance(obj.get("kind"), str) or not obj.get("kind"):
        raise InputError(file, "object has no kind", line)
    if not isinstance(obj.get("apiVersion"), str) or not obj.get("apiVersion"):
        raise InputError(file, f"{shown(obj['kind'])} has no apiVersion", line)
    return obj


def _expand(obj: Mapping[str, Any], node: Any, file: str, line: int) -> list[Document]:
    """A document, or the items of a `kind: List` (any *List kind, as kubectl accepts)."""
    if obj["kind"] == "List" or (obj["kind"].endswith("List") and "items" in obj):
        items = obj.get("items") or []
        if not isinstance(items, list):
            raise InputError(file, f"{shown(obj['kind'])}.items must be a list", line)
        item_nodes = _child(node, "items")
        docs = []
        for i, item in enumerate(items):
            inode = item_nodes.value[i] if isinstance(item_nodes, yaml.SequenceNode) else None
            iline = inode.start_mark.line + 1 if inode is not None else line
            item = _typed_item(obj, item)
            docs.extend(_expand(_check_object(item, file, iline), inode, file, iline))
        return docs
    lines = field_lines(node) if obj["kind"].endswith("NetworkPolicy") and node is not None else {}
    return [Document(file, line, obj, lines)]


def _typed_item(lst: Mapping[str, Any], item: Any) -> Any:
    """An item of a typed list as the API returns it (`kind: PodList`, from `kubectl get
    --raw` or a client library) carries no kind or apiVersion: they are the list's, less
    `List`. An item with a kind of its own keeps it; a plain `kind: List` names no type."""
    kind = lst["kind"][:-len("List")]
    if not kind or not isinstance(item, Mapping) or item.get("kind"):
        return item
    typed = {**item, "kind": kind}
    if not item.get("apiVersion") and lst.get("apiVersion"):
        typed["apiVersion"] = lst["apiVersion"]
    return typed


def _child(node: Any, key: str) -> Any:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if k.value == key:
                return v
    return None


def parse_text(text: str, file: str) -> list[Document]:
    """Every object in a YAML/JSON stream, with the line each starts on."""
    if file.endswith(".json"):
        docs = _parse_json_fast(text, file)
        if docs is not None:
            return docs
    docs: list[Document] = []
    others: list[tuple[int, str]] = []  # (line, why) of documents that are no Kubernetes object
    try:
        for node, loader in safeload.yaml_nodes(text):
            line = node.start_mark.line + 1
            obj = safeload.construct(node, loader)
            if obj is None:
                continue  # an empty document (e.g. a trailing ---)
            why = not_an_object(obj, file)
            if why:
                others.append((line, why))
                continue
            docs.extend(_expand(_check_object(obj, file, line), node, file, line))
    except safeload.UnsafeInput as exc:
        raise InputError(file, exc.message, exc.line) from None
    except yaml.YAMLError as exc:
        if file.endswith(".json"):
            return _parse_json(text, file)
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise InputError(file, f"not valid YAML: {problem}", mark.line + 1 if mark else 0) from None
    _refuse_others(others, bool(docs), file)
    return docs


def _refuse_others(others: list[tuple[int, str]], has_objects: bool, file: str) -> None:
    """A file of nothing but other YAML is NotAManifest (the caller may skip it); a document
    of other YAML among Kubernetes objects is a mistake in a manifest: unusable input."""
    if not others:
        return
    line, why = others[0]
    if has_objects:
        raise InputError(file, f"{why}, in a file of Kubernetes objects", line)
    raise NotAManifest(file, why, line)


def _parse_json_fast(text: str, file: str) -> list[Document] | None:
    """JSON through the json module (a `kubectl get -A -o json` snapshot of 50,000 pods
    parses in a second instead of a minute). Files holding NetworkPolicies (or a
    NetworkPolicyList, whose items name no kind) go through the YAML path instead, which
    knows the line of every field for the findings. A duplicate key goes there too, to be
    reported with its line and path."""
    if '"NetworkPolicy' in text:  # a NetworkPolicyList from the API too
        return None
    try:
        return _parse_json(text, file)
    except NotAManifest:
        raise
    except InputError:
        return None  # let the YAML path report it (it tolerates JSON-with-comments etc.)


def _parse_json(text: str, file: str) -> list[Document]:
    try:
        obj = safeload.load_json(text, refuse_duplicates=True)
    except json.JSONDecodeError as exc:
        raise InputError(file, f"not valid JSON: {exc.msg}", exc.lineno) from None
    except safeload.UnsafeInput as exc:
        raise InputError(file, exc.message, exc.line) from None
    why = not_an_object(obj, file)
    if why:
        raise NotAManifest(file, why, 1)
    return _expand(_check_object(obj, file, 1), None, file, 1)


def read_file(path: str, in_dir: bool = False) -> list[Document]:
    """The documents of one manifest file; refused past MAX_MANIFEST_BYTES (see safeload).
    A FIFO, socket or device found in a directory (`in_dir`) is NotAManifest: reading
    could wait for ever (a FIFO nobody writes to hung `lint DIR`)."""
    try:
        text = safeload.read_text(path, safeload.MAX_MANIFEST_BYTES, regular_only=in_dir)
    except safeload.NotARegularFile as exc:
        raise NotAManifest(path, exc.message) from None
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror}") from None
    except safeload.UnsafeInput as exc:
        raise InputError(path, exc.message) from None
    return parse_text(text, path)


def _read(path: str, in_dir: bool = False) -> list[Document]:
    """read_file, and "-" for standard input: read as /dev/stdin (so like any file, and
    within the same limits), its documents and errors named <stdin>."""
    if path != STDIN:
        return read_file(path, in_dir)
    try:
        docs = read_file("/dev/stdin")
    except InputError as exc:
        raise InputError(STDIN_NAME, exc.message, exc.line) from None
    for d in docs:
        d.file = STDIN_NAME
    return docs


def skipped_note(file: str, why: str) -> str:
    """The note naming a file skipped as no Kubernetes object (`why` quotes the input through
    shown() already), one line whatever the file's name holds."""
    return f"note: skipped {shown_path(file)}: {why}"


@dataclass
class Snapshot:
    """What was read: the view (every object the checks use) and the documents to check."""

    view: ClusterView
    policy_docs: list[Document]  # NetworkPolicies from the checked paths, in order
    kinds: Counter
    files: int
    context_policy_docs: list[Document] = field(default_factory=list)  # from --cluster: context only
    admin_policy_docs: list[Document] = field(default_factory=list)  # is_other_policy_kind(), anywhere
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why): found in a directory,
    # holding no Kubernetes object (the caller says so on stderr)


def add_to_view(view: ClusterView, doc: Document) -> None:
    """Put a non-policy object into the view (policies are parsed by the caller)."""
    obj, kind = doc.obj, doc.kind
    if kind == "Namespace":
        view.upsert_namespace(namespace_from(obj))
    elif kind == "Pod":
        view.upsert_pod(pod_from(obj))
    elif kind in WORKLOAD_TEMPLATES:
        w = workload_from(obj)
        if w is not None:
            view.upsert_pod(w)
    elif kind == "Service":
        view.upsert_service(service_from(obj))


# Below this much input, a second process costs more than it saves.
PARALLEL_MIN_BYTES = 4 * 1024 * 1024


def _read_or_skip(job: tuple[str, bool, bool]) -> list[Document] | NotAManifest:
    """The file's documents, or (when it may be skipped) why it holds no Kubernetes object."""
    path, may_skip, in_dir = job
    try:
        return _read(path, in_dir)
    except NotAManifest as exc:
        if may_skip:
            # A new exception with no traceback: the caught one holds the frames of the
            # parse, and with them the file's text and the YAML parser, for as long as the
            # list of results lives (100,000 skipped files of `a: 1` took 2 GB).
            return NotAManifest(exc.file, exc.reason, exc.line)
        raise


def read_files(files: list[str], skippable: frozenset[str] | set[str] = frozenset(),
               in_dirs: frozenset[str] | set[str] = frozenset()) -> list[list[Document] | NotAManifest]:
    """read_file over many files; large inputs are parsed on every core (YAML parsing is
    CPU-bound and the GIL keeps threads from helping). Order is preserved. A file in
    `skippable` that holds no Kubernetes object comes back as its NotAManifest. Files in
    `in_dirs` were found in a directory: only regular files among them are read."""
    jobs = [(f, f in skippable, f in in_dirs) for f in files]
    total = 0
    for f in files:
        try:
            total += os.path.getsize(f)
        except OSError:
            pass
    workers = min(os.cpu_count() or 1, 8)
    if workers < 2 or STDIN in files or len(files) < 4 or total < PARALLEL_MIN_BYTES:
        return [_read_or_skip(j) for j in jobs]
    import concurrent.futures
    import multiprocessing
    ctx = multiprocessing.get_context("fork") if hasattr(os, "fork") else None
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        return list(pool.map(_read_or_skip, jobs, chunksize=max(1, len(files) // (workers * 4))))


def load_snapshot(paths: Iterable[str], cluster_paths: Iterable[str] = (),
                  view: ClusterView | None = None, *, walked: Iterable[str] = (),
                  strict: bool = False) -> Snapshot:
    """Read the checked paths and the --cluster paths into one view (a new one, or `view`:
    the live cluster listed once, which the files then add to or override).

    NetworkPolicies under `paths` are returned for checking; those under `cluster_paths`
    are context only (the caller parses and adds them to the view).

    A file found by walking a directory (or listed in `walked`: found so by the caller)
    that holds no Kubernetes object is skipped and listed in Snapshot.skipped; with
    `strict`, or named directly, it is unusable input (NotAManifest).
    """
    view = ClusterView() if view is None else view
    kinds: Counter = Counter()
    policy_docs: list[Document] = []
    context_policies: list[Document] = []
    admin_policies: list[Document] = []
    skipped: list[tuple[str, str]] = []
    found = walk(paths)
    checked = [f for f, _ in found]
    checked_set = set(checked)
    found_context = [(f, d) for f, d in walk(cluster_paths) if f not in checked_set]
    context = [f for f, _ in found_context]
    in_dirs = {f for f, in_dir in found + found_context if in_dir} | (set(walked) & checked_set)
    skippable = set() if strict else in_dirs
    try:
        parsed = iter(read_files(context + checked, frozenset(skippable), frozenset(in_dirs)))
    except NotAManifest as exc:
        in_dir = any(f == exc.file and d for f, d in found + found_context) or exc.file in set(walked)
        raise InputError(exc.file, exc.reason + (
            " (--strict: a file in a directory that holds no Kubernetes object is an error)" if in_dir else
            " (a file named on the command line must hold Kubernetes objects; in a directory it would be "
            "skipped with a note)"), exc.line) from None
    for files, is_checked in ((context, False), (checked, True)):
        for file in files:
            docs = next(parsed)
            if isinstance(docs, NotAManifest):
                skipped.append((file, docs.reason))
                continue
            for doc in docs:
                kinds[doc.kind] += 1
                if doc.kind == "NetworkPolicy":
                    (policy_docs if is_checked else context_policies).append(doc)
                elif is_other_policy_kind(doc.kind):
                    admin_policies.append(doc)
                else:
                    add_to_view(view, doc)
    return Snapshot(view, policy_docs, kinds, len(checked) + len(context) - len(skipped), context_policies,
                    admin_policies, skipped)
