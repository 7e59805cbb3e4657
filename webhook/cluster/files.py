"""Cluster view from manifest files: YAML or JSON, multi-document, `kind: List`,
directories recursively. The only module that reads manifests from disk.

Every document is accounted for: NetworkPolicies are returned for checking, the kinds
the checks use go into the view, and the rest are counted by kind so the user can see
what was read. Anything unusable raises InputError naming the file and line.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import yaml

from webhook import safeload
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
    """Unusable input: the message names the file (and line where known)."""

    def __init__(self, file: str, message: str, line: int = 0):
        self.file, self.line, self.message = file, line, message
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {message}")


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


def field_lines(node: Any) -> dict[str, int]:
    """Field path -> 1-based line, for every key in a composed YAML document."""
    out: dict[str, int] = {}

    def walk(n: Any, path: str) -> None:
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                key = str(k.value)
                p = f"{path}.{key}" if path else key
                out[p] = k.start_mark.line + 1
                walk(v, p)
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                p = f"{path}[{i}]"
                out[p] = v.start_mark.line + 1
                walk(v, p)

    walk(node, "")
    return out


def find_files(paths: Iterable[str]) -> list[str]:
    """Manifest files under the given paths; directories are walked recursively, sorted."""
    out: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            found = []
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                found.extend(os.path.join(root, f) for f in files if f.endswith(MANIFEST_SUFFIXES))
            out.extend(sorted(found))
        elif os.path.exists(p) or p == STDIN:
            out.append(p)
        else:
            raise InputError(p, "no such file or directory")
    return out


def _check_object(obj: Any, file: str, line: int) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        kind = "list" if isinstance(obj, list) else type(obj).__name__
        raise InputError(file, f"document is a {kind}, not a Kubernetes object (expected a mapping "
                               "with apiVersion and kind)", line)
    if not isinstance(obj.get("kind"), str) or not obj.get("kind"):
        raise InputError(file, "object has no kind", line)
    if not isinstance(obj.get("apiVersion"), str) or not obj.get("apiVersion"):
        raise InputError(file, f"{obj['kind']} has no apiVersion", line)
    return obj


def _expand(obj: Mapping[str, Any], node: Any, file: str, line: int) -> list[Document]:
    """A document, or the items of a `kind: List` (any *List kind, as kubectl accepts)."""
    if obj["kind"] == "List" or (obj["kind"].endswith("List") and "items" in obj):
        items = obj.get("items") or []
        if not isinstance(items, list):
            raise InputError(file, "List.items must be a list", line)
        item_nodes = _child(node, "items")
        docs = []
        for i, item in enumerate(items):
            inode = item_nodes.value[i] if isinstance(item_nodes, yaml.SequenceNode) else None
            iline = inode.start_mark.line + 1 if inode is not None else line
            docs.extend(_expand(_check_object(item, file, iline), inode, file, iline))
        return docs
    lines = field_lines(node) if obj["kind"].endswith("NetworkPolicy") and node is not None else {}
    return [Document(file, line, obj, lines)]


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
    try:
        for node, loader in safeload.yaml_nodes(text):
            line = node.start_mark.line + 1
            obj = safeload.construct(node, loader)
            if obj is None:
                continue  # an empty document (e.g. a trailing ---)
            docs.extend(_expand(_check_object(obj, file, line), node, file, line))
    except safeload.UnsafeInput as exc:
        raise InputError(file, exc.message, exc.line) from None
    except yaml.YAMLError as exc:
        if file.endswith(".json"):
            return _parse_json(text, file)
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise InputError(file, f"not valid YAML: {problem}", mark.line + 1 if mark else 0) from None
    return docs


def _parse_json_fast(text: str, file: str) -> list[Document] | None:
    """JSON through the json module (a `kubectl get -A -o json` snapshot of 50,000 pods
    parses in a second instead of a minute). Files holding NetworkPolicies go through the
    YAML path instead, which knows the line of every field for the findings."""
    if '"NetworkPolicy"' in text:
        return None
    try:
        return _parse_json(text, file)
    except InputError:
        return None  # let the YAML path report it (it tolerates JSON-with-comments etc.)


def _parse_json(text: str, file: str) -> list[Document]:
    try:
        obj = safeload.load_json(text)
    except json.JSONDecodeError as exc:
        raise InputError(file, f"not valid JSON: {exc.msg}", exc.lineno) from None
    except safeload.UnsafeInput as exc:
        raise InputError(file, exc.message, exc.line) from None
    return _expand(_check_object(obj, file, 1), None, file, 1)


def read_file(path: str) -> list[Document]:
    """The documents of one manifest file; refused past MAX_MANIFEST_BYTES (see safeload)."""
    try:
        text = safeload.read_text(path, safeload.MAX_MANIFEST_BYTES)
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror}") from None
    except safeload.UnsafeInput as exc:
        raise InputError(path, exc.message) from None
    return parse_text(text, path)


def _read(path: str) -> list[Document]:
    """read_file, and "-" for standard input: read as /dev/stdin (so like any file, and
    within the same limits), its documents and errors named <stdin>."""
    if path != STDIN:
        return read_file(path)
    try:
        docs = read_file("/dev/stdin")
    except InputError as exc:
        raise InputError(STDIN_NAME, exc.message, exc.line) from None
    for d in docs:
        d.file = STDIN_NAME
    return docs


@dataclass
class Snapshot:
    """What was read: the view (every object the checks use) and the documents to check."""

    view: ClusterView
    policy_docs: list[Document]  # NetworkPolicies from the checked paths, in order
    kinds: Counter
    files: int
    context_policy_docs: list[Document] = field(default_factory=list)  # from --cluster: context only
    admin_policy_docs: list[Document] = field(default_factory=list)  # is_other_policy_kind(), anywhere


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


def read_files(files: list[str]) -> list[list[Document]]:
    """read_file over many files; large inputs are parsed on every core (YAML parsing is
    CPU-bound and the GIL keeps threads from helping). Order is preserved."""
    total = 0
    for f in files:
        try:
            total += os.path.getsize(f)
        except OSError:
            pass
    workers = min(os.cpu_count() or 1, 8)
    if workers < 2 or STDIN in files or len(files) < 4 or total < PARALLEL_MIN_BYTES:
        return [_read(f) for f in files]
    import concurrent.futures
    import multiprocessing
    ctx = multiprocessing.get_context("fork") if hasattr(os, "fork") else None
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        return list(pool.map(read_file, files, chunksize=max(1, len(files) // (workers * 4))))


def load_snapshot(paths: Iterable[str], cluster_paths: Iterable[str] = (),
                  view: ClusterView | None = None) -> Snapshot:
    """Read the checked paths and the --cluster paths into one view (a new one, or `view`:
    the live cluster listed once, which the files then add to or override).

    NetworkPolicies under `paths` are returned for checking; those under `cluster_paths`
    are context only (the caller parses and adds them to the view).
    """
    view = ClusterView() if view is None else view
    kinds: Counter = Counter()
    policy_docs: list[Document] = []
    context_policies: list[Document] = []
    admin_policies: list[Document] = []
    checked = find_files(paths)
    checked_set = set(checked)
    context = [f for f in find_files(cluster_paths) if f not in checked_set]
    parsed = iter(read_files(context + checked))
    for files, is_checked in ((context, False), (checked, True)):
        for _ in files:
            for doc in next(parsed):
                kinds[doc.kind] += 1
                if doc.kind == "NetworkPolicy":
                    (policy_docs if is_checked else context_policies).append(doc)
                elif is_other_policy_kind(doc.kind):
                    admin_policies.append(doc)
                else:
                    add_to_view(view, doc)
    return Snapshot(view, policy_docs, kinds, len(checked) + len(context), context_policies, admin_policies)
