"""Reading input nobody vetted: files of bounded size, YAML with bounded alias expansion
and nesting, numbers that convert without raising.

Every loader goes through here - manifests and cluster snapshots (cluster/files.py),
communication maps (generate/mapparse.py), the configuration (config.py) and the
AdmissionReview body (admission/review.py), and the kubeconfig (cluster/kubeconfig.py) - so the limits are one set, documented once
(docs/operations.md, "Limits on input"). Each loader turns ``UnsafeInput`` into its own
error type (InputError, MapError, ConfigError, BadReview), which names the file and line.

Why each limit exists:
- size: a file is read into memory whole; ``/dev/zero`` or a mistyped path to a disk
  image must be refused after a bounded read, not after filling memory;
- alias expansion: a few hundred bytes of nested YAML aliases ("billion laughs") stand
  for billions of nodes, and every walk over a document visits an aliased node once per
  reference. Kubernetes never writes aliases; people writing maps and configs sometimes
  do, so aliases are allowed while what they add stays small;
- nesting: the walks over documents recurse once per level; a Kubernetes object is a
  few dozen levels deep at most;
- integers: Python refuses to convert a decimal text of more than 4,300 digits (and
  ``int('²')`` raises although ``'²'.isdigit()``); both become a clear error here. Hex,
  binary, octal and sexagesimal text converts without that limit, and the value then
  cannot be printed: the converted value's digits count (_too_many_digits).
"""
from __future__ import annotations

import codecs
import json
import math
import os
import stat
import sys
from typing import Any, Iterator

import yaml

from webhook.bounded_text import quoted, shown

MIB = 1024 * 1024
# Per file. A `kubectl get pods -A -o json` of ~100,000 real pods is under 1 GiB; larger
# snapshots can be split (directories are read whole).
MAX_MANIFEST_BYTES = 1024 * MIB
MAX_MAP_BYTES = 64 * MIB
MAX_CONFIG_BYTES = 4 * MIB
# A kubeconfig of a few hundred clusters with certificates written in is well under this.
MAX_KUBECONFIG_BYTES = 4 * MIB
# Nodes that aliases may add to one YAML document on top of the nodes written out.
MAX_ALIAS_NODES = 100_000
# Levels of nesting in one YAML document (JSON: the json parser's own recursion guard).
MAX_DEPTH = 200
# Decimal digits of an integer; Python's own limit, kept explicit so the message can say it.
MAX_INT_DIGITS = sys.get_int_max_str_digits() or 4300

_READ_CHUNK = 1 * MIB
_T = "tag:yaml.org,2002:"
_STR, _INT, _BOOL, _NULL, _FLOAT = _T + "str", _T + "int", _T + "bool", _T + "null", _T + "float"
_TIMESTAMP, _MERGE = _T + "timestamp", _T + "merge"


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """PyYAML's safe loader with timestamps kept as text, in PyYAML's own constructor too:
    JSON and the API server have no dates (kubectl sends `released: 2020-01-01` as a
    string), and a document must not read differently because a merge key somewhere in
    it sent it through PyYAML's constructor instead of the fast path."""


_Loader.add_constructor(_TIMESTAMP, _Loader.construct_yaml_str)


class UnsafeInput(ValueError):
    """Input refused by a limit or unreadable as data; ``line`` is 1-based, 0 when unknown."""

    def __init__(self, message: str, line: int = 0):
        super().__init__(message)
        self.message, self.line = message, line


def size_text(n: int) -> str:
    return f"{n // MIB} MiB" if n >= MIB and n % MIB == 0 else f"{n:,} bytes"


# --- files -----------------------------------------------------------------------------

class NotARegularFile(UnsafeInput):
    """read_text(regular_only=True) met a FIFO, socket or device: a file found by walking a
    directory that reading could wait on for ever (a FIFO with no writer) or never end."""


def read_text(path: str, limit: int, *, regular_only: bool = False) -> str:
    """The file's text (UTF-8, a BOM dropped), read in chunks and refused as soon as it is
    over ``limit`` bytes, binary (a NUL in the first chunk) or not UTF-8.

    Raises OSError when the file cannot be opened or read, UnsafeInput otherwise. Works
    on anything that can be read, not only regular files (a pipe, /dev/stdin, /dev/zero),
    unless ``regular_only`` (then NotARegularFile). Opening never waits: a FIFO with no
    writer is opened without one, and reads as nothing (refused, unless it is our stdin).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as fh:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode) and regular_only:
            raise NotARegularFile(f"{_file_type(mode)}, not a regular file; name it on the command line to read it")
        os.set_blocking(fd, True)  # O_NONBLOCK was for the open only: a pipe's writer may be slow
        text, total = _read_limited(fh, limit)
        if total == 0 and stat.S_ISFIFO(mode) and not _is_stdin(fd):
            raise UnsafeInput("a FIFO with nothing written to it (no writer); to read a pipe, use `-` (stdin)")
    return text


def _read_limited(fh: Any, limit: int) -> tuple[str, int]:
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    parts: list[str] = []
    total = 0
    while True:
        chunk = fh.read(min(_READ_CHUNK, limit + 1 - total))
        if not chunk:
            break
        if total == 0 and b"\x00" in chunk[:8192]:
            raise UnsafeInput("binary file, not YAML or JSON")
        total += len(chunk)
        if total > limit:
            raise UnsafeInput(f"file is larger than the limit of {size_text(limit)}")
        try:
            parts.append(decoder.decode(chunk))
        except UnicodeDecodeError:
            raise UnsafeInput("not UTF-8 text") from None
    try:
        parts.append(decoder.decode(b"", final=True))
    except UnicodeDecodeError:
        raise UnsafeInput("not UTF-8 text") from None
    return "".join(parts), total


def _file_type(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "a special file"


def _is_stdin(fd: int) -> bool:
    try:
        a, b = os.fstat(fd), os.fstat(0)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


# --- JSON ------------------------------------------------------------------------------

def load_json(text: str | bytes, *, refuse_duplicates: bool = False) -> Any:
    """json.loads, with the two ways it fails on hostile input made UnsafeInput:
    nesting past the parser's recursion guard, and integers of too many digits; with
    ``refuse_duplicates``, a key written twice in one object too (no line: the json
    module does not say where). Malformed JSON still raises json.JSONDecodeError (the
    caller reports line and column)."""
    try:
        return json.loads(text, object_pairs_hook=_object_without_duplicates) if refuse_duplicates else json.loads(text)
    except RecursionError:
        raise UnsafeInput("JSON nested too deeply") from None
    except (json.JSONDecodeError, UnicodeDecodeError, UnsafeInput):
        raise
    except ValueError as exc:  # only the integer digit limit raises a plain ValueError
        raise UnsafeInput(_value_problem(exc)) from None


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    # One dict() in C per object; the loop only runs for an object that has a duplicate.
    # (~20% on json.loads of a 16 MB pod list: paid by manifests, not by review bodies.)
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise UnsafeInput(duplicate_key_message(key))
            seen.add(key)
    return out


def _value_problem(exc: Exception) -> str:
    if "digits" in str(exc):
        return f"a number has more than {MAX_INT_DIGITS} digits"
    return f"unreadable value: {str(exc)[:200]}"  # (a KeyError quotes the whole value)


# --- YAML ------------------------------------------------------------------------------

def yaml_nodes(text: str) -> Iterator[tuple[Any, Any]]:
    """(node, loader) for every document of a YAML stream, not yet checked: pass each to
    construct() or construct_full() (which check it) or to check_node() before walking it.
    yaml.YAMLError passes through (the caller knows the file)."""
    loader = _Loader(text)
    try:
        while loader.check_node():
            yield loader.get_node(), loader
    finally:
        loader.dispose()


def one_document(text: str, *, full: bool = False) -> Any:
    """The single YAML document of a file that holds one (a configuration, a kubeconfig):
    None when empty, UnsafeInput naming the line of a second one. ``full``: through
    construct_full (PyYAML's constructor), else construct."""
    data: Any = None
    for i, (node, loader) in enumerate(yaml_nodes(text)):
        if i:
            raise UnsafeInput("expected one YAML document, found a second one", node.start_mark.line + 1)
        data = construct_full(node, loader) if full else construct(node, loader)
    return data


def _children(node: Any) -> list:
    if node.__class__ is yaml.MappingNode:
        return [n for kv in node.value for n in kv]
    if node.__class__ is yaml.SequenceNode:
        return node.value
    return []


def _line(node: Any) -> int:
    return node.start_mark.line + 1


def duplicate_key_message(key: str, path: str = "") -> str:
    # the path is made of the file's own keys: shown (clipped, escaped) like any input text
    # on a line, so a key holding a newline cannot start a line of its own
    where = f"{shown(path, 200)}: " if path else ""
    return (f"{where}duplicate key {quoted(key)} (YAML and JSON keep only the last one, "
            "and kubectl refuses the file)")


def duplicate_keys(root: Any) -> Iterator[tuple[int, str, str]]:
    """(line, field path, key) for every key written a second time in one mapping of a
    composed document, keys compared as written; merge keys (`<<`) are not keys. One pass
    over the distinct nodes (an aliased node is scanned once); the path of a node is only
    spelled out for a duplicate, as a long key over a long list would repeat it per item."""
    stack: list[tuple[Any, Any]] = [(root, None)]  # (node, (parent link, label) or None)
    seen: set[int] = set()
    while stack:
        node, link = stack.pop()
        if node.__class__ is yaml.MappingNode:
            if id(node) in seen:
                continue
            seen.add(id(node))
            keys: set[str] = set()
            for k, v in node.value:
                if k.tag == _MERGE:
                    continue
                key = str(k.value)
                if key in keys:
                    yield _line(k), _path((link, key)), key
                keys.add(key)
                stack.append((v, (link, key)))
        elif node.__class__ is yaml.SequenceNode:
            if id(node) in seen:
                continue
            seen.add(id(node))
            stack.extend((v, (link, i)) for i, v in enumerate(node.value))


def _path(link: Any) -> str:
    labels = []
    while link is not None:
        link, label = link
        labels.append(label)
    out = ""
    for label in reversed(labels):
        out += f"[{label}]" if isinstance(label, int) else (f".{label}" if out else label)
    return out


def refuse_duplicate_keys(root: Any) -> None:
    """UnsafeInput naming the line, path and key of the first key written twice."""
    for line, path, key in duplicate_keys(root):
        raise UnsafeInput(duplicate_key_message(key, path), line)


def check_node(root: Any) -> None:
    """Refuse a composed document whose aliases expand it by more than MAX_ALIAS_NODES
    nodes, that contains itself through an alias, that is nested (aliases included) more
    than MAX_DEPTH levels, or that has an integer of too many digits.

    One iterative pass over the distinct nodes (an aliased node is counted, not walked,
    again), so the check is linear in the text and never recurses. construct() runs it
    only for documents that use aliases or go to PyYAML's constructor.
    """
    size: dict[int, int] = {}  # id(collection node) -> nodes it stands for, aliases expanded
    height: dict[int, int] = {}
    on_path: set[int] = set()
    distinct = 0
    stack: list[tuple[Any, list | None]] = [(root, None)]
    while stack:
        node, kids = stack.pop()
        nid = id(node)
        if kids is not None:  # every child done
            s, h = 1, 1
            for k in kids:
                kid = id(k)
                s += size.get(kid, 1)
                h = max(h, height.get(kid, 1) + 1)
            size[nid], height[nid] = s, h
            on_path.discard(nid)
            if h > MAX_DEPTH:
                raise UnsafeInput(f"nested more than {MAX_DEPTH} levels deep (aliases expanded)", _line(node))
            if s - distinct > MAX_ALIAS_NODES:
                raise UnsafeInput(f"YAML aliases expand this document by more than {MAX_ALIAS_NODES:,} "
                                  "nodes (nested aliases, a 'billion laughs'); write the values out "
                                  "instead", _line(node))
            continue
        distinct += 1
        if node.__class__ is yaml.ScalarNode:
            if node.tag == _INT:
                _check_int(node)
            continue
        if nid in size:
            continue  # an alias to a node already counted
        if nid in on_path:
            raise UnsafeInput("a YAML alias refers to a node that contains it (a recursive structure)",
                              _line(node))
        if len(on_path) >= MAX_DEPTH:
            raise UnsafeInput(f"nested more than {MAX_DEPTH} levels deep", _line(node))
        on_path.add(nid)
        kids = _children(node)
        stack.append((node, kids))
        stack.extend((k, None) for k in kids)


def _check_int(node: Any) -> None:
    if _too_many_digits(node.value):
        raise UnsafeInput(f"a number has more than {MAX_INT_DIGITS} digits", _line(node))


_DIGITS_PER = {2: math.log10(2), 8: math.log10(8), 16: math.log10(16), 60: math.log10(60)}


def _too_many_digits(text: str) -> bool:
    """Whether the integer YAML 1.1 reads from ``text`` has more than MAX_INT_DIGITS decimal
    digits. The value counts, not the text: PyYAML converts hex (0x), binary (0b), octal
    (leading 0) and sexagesimal (1:30:00) text without Python's limit, and 4,200 hex digits
    are about 5,060 decimal ones, so the first str() of the result would raise. Decided
    from the digit count where it is clear either way; converted exactly (a few thousand
    digits at most) only near the limit."""
    t = text.replace("_", "").lstrip("+-")
    if ":" in t:
        base, head, rest = 60, t.split(":")[0], t.split(":")[1:]
        n = len(rest)  # further places of 60, each 0-59
        low = len(head.lstrip("0")) + n * _DIGITS_PER[60]
        high = len(head) + n * _DIGITS_PER[60] + 1
    elif t[:2] in ("0x", "0b"):
        base, t = (16 if t[1] == "x" else 2), t[2:].lstrip("0")
        low, high = (len(t) - 1) * _DIGITS_PER[base], len(t) * _DIGITS_PER[base] + 1
    elif len(t) > 1 and t[0] == "0":
        base, t = 8, t.lstrip("0")
        low, high = (len(t) - 1) * _DIGITS_PER[8], len(t) * _DIGITS_PER[8] + 1
    else:
        return len(t) > MAX_INT_DIGITS
    if high <= MAX_INT_DIGITS:
        return False
    if low > MAX_INT_DIGITS:
        return True
    try:
        if base == 60:
            value = int(head)
            for place in rest:
                value = value * 60 + int(place)
        else:
            value = int(t, base)  # power-of-two bases: no digit limit in int()
    except ValueError:
        return False  # not a number at all: the converter says so
    return value >= 10 ** MAX_INT_DIGITS


class _NeedsCheck(Exception):
    """The fast path met an alias or something it leaves to PyYAML: check the whole
    document first."""


class _NeedsFullConstructor(_NeedsCheck):
    """A document uses something the fast path leaves to PyYAML (merge keys, custom tags)."""


class _Duplicate(Exception):
    """The fast path met a key already in its mapping (the key node is the argument)."""


def construct(node: Any, loader: Any) -> Any:
    """A node -> Python, the way JSON would give it: maps, lists, strings, numbers,
    booleans, nulls; timestamps stay text. Merge keys and other tags go through PyYAML's
    safe constructor (timestamps stay text there too). Safe on an unchecked node: a document that uses aliases (or nests
    too deep) is checked by check_node before it is expanded. A key written twice in
    one mapping is refused (duplicate_keys). Raises UnsafeInput."""
    try:
        try:
            return _fast_value(node, loader, 1, set())
        except _NeedsFullConstructor:
            return construct_full(node, loader)
        except _NeedsCheck:
            check_node(node)
        try:
            return _fast_value(node, loader, 1, None)
        except _NeedsFullConstructor:
            return construct_full(node, loader)
    except _Duplicate as dup:
        refuse_duplicate_keys(node)  # the path, from the one scan every loader shares
        key = dup.args[0]  # written differently, read as the same key (1 and 0x1)
        raise UnsafeInput(duplicate_key_message(str(key.value)), _line(key)) from None


def construct_full(node: Any, loader: Any) -> Any:
    """PyYAML's safe constructor (timestamps stay text, see _Loader) on a node it checks first, with
    the exceptions its scalar converters raise on odd text (`!!int ²`, `!!bool maybe`) made
    UnsafeInput, and a key written twice in one mapping refused (PyYAML keeps the last).
    yaml.YAMLError passes through."""
    check_node(node)
    refuse_duplicate_keys(node)
    try:
        return loader.construct_document(node)
    except yaml.YAMLError:
        raise
    except (ValueError, TypeError, KeyError, OverflowError, IndexError, AttributeError) as exc:
        loader.constructed_objects, loader.recursive_objects, loader.state_generators = {}, {}, []
        bad = _unreadable_scalar(node, loader)
        if bad is not None:
            raise UnsafeInput(f"cannot read {bad.value[:40]!r} as {bad.tag.rsplit(':', 1)[-1]}", _line(bad)) from None
        raise UnsafeInput(_value_problem(exc), _line(node)) from None


def _unreadable_scalar(root: Any, loader: Any) -> Any:
    """The first scalar PyYAML's constructor cannot convert (for the line in the message)."""
    stack, seen = [root], set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if node.__class__ is yaml.ScalarNode:
            convert = loader.yaml_constructors.get(node.tag)
            try:
                if convert is not None:
                    convert(loader, node)
            except Exception:  # noqa: BLE001 - any failure is the answer looked for
                return node
        else:
            stack.extend(reversed(_children(node)))
    return None


def _scalar(convert: Any, node: Any) -> Any:
    try:
        return convert(node)
    except yaml.YAMLError:
        raise
    except (ValueError, TypeError, KeyError, OverflowError, IndexError) as exc:
        raise UnsafeInput(f"cannot read {node.value[:40]!r} as {node.tag.rsplit(':', 1)[-1]}",
                          _line(node)) from None


def _fast_value(node: Any, fallback: Any, depth: int, seen: set[int] | None) -> Any:
    # PyYAML's own constructor costs about as much as parsing itself; manifests use only
    # JSON-like values, so those are converted directly. `seen`: the collections met so
    # far; meeting one again means an alias, and the document is checked before any alias
    # is expanded (None: already checked).
    cls = node.__class__
    if cls is yaml.ScalarNode:
        tag = node.tag
        if tag == _STR or tag == _TIMESTAMP:
            return node.value
        if tag == _INT:
            v = node.value
            # isascii: '²'.isdigit() is true but int() refuses it; YAML 1.1: a leading 0 is octal
            if v.isascii() and v.isdigit() and (v[0] != "0" or v == "0") and len(v) <= MAX_INT_DIGITS:
                return int(v)
            _check_int(node)
            return _scalar(fallback.construct_yaml_int, node)
        if tag == _NULL:
            return None
        if tag == _BOOL:
            return _scalar(fallback.construct_yaml_bool, node)
        if tag == _FLOAT:
            return _scalar(fallback.construct_yaml_float, node)
        raise _NeedsFullConstructor
    if depth > MAX_DEPTH:
        raise _NeedsCheck
    if seen is not None:
        nid = id(node)
        if nid in seen:
            raise _NeedsCheck
        seen.add(nid)
    depth += 1
    if cls is yaml.MappingNode:
        out = {}
        for k, v in node.value:
            if k.tag == _MERGE or k.__class__ is not yaml.ScalarNode:
                raise _NeedsFullConstructor
            key = _fast_value(k, fallback, depth, seen)
            if key in out:
                raise _Duplicate(k)
            out[key] = _fast_value(v, fallback, depth, seen)
        return out
    if cls is yaml.SequenceNode:
        return [_fast_value(v, fallback, depth, seen) for v in node.value]
    raise _NeedsFullConstructor
