"""A minimal RFC 6902 JSONPatch: the diff that turns one JSON value into another, and an
apply function (used by tests and by anyone checking what a patch does).

The diff touches only the paths that changed: lists are compared index by index, new
elements are appended with ``add`` at their index, surplus ones removed from the end.
(An insertion in the middle of a list therefore shows as changes plus an append:
still correct, and NetworkPolicy mutations only ever append.)
"""
from __future__ import annotations

import copy
from typing import Any


class PatchError(ValueError):
    pass


def escape(token: str) -> str:
    """RFC 6901: '~' -> '~0', '/' -> '~1' (in that order)."""
    return token.replace("~", "~0").replace("/", "~1")


def unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def pointer(*tokens: Any) -> str:
    return "".join("/" + escape(str(t)) for t in tokens)


def diff(old: Any, new: Any, path: str = "") -> list[dict]:
    if type(old) is not type(new):
        return [{"op": "replace", "path": path, "value": copy.deepcopy(new)}]
    if isinstance(old, dict):
        ops: list[dict] = []
        for key in old:
            if key not in new:
                ops.append({"op": "remove", "path": path + pointer(key)})
        for key, value in new.items():
            if key not in old:
                ops.append({"op": "add", "path": path + pointer(key), "value": copy.deepcopy(value)})
            else:
                ops.extend(diff(old[key], value, path + pointer(key)))
        return ops
    if isinstance(old, list):
        # index by index over the common length, then appends (or removals from the end,
        # highest index first so earlier indices stay valid)
        common = min(len(old), len(new))
        ops = [op for i in range(common) for op in diff(old[i], new[i], path + pointer(i))]
        ops += [{"op": "add", "path": path + pointer(i), "value": copy.deepcopy(new[i])}
                for i in range(common, len(new))]
        ops += [{"op": "remove", "path": path + pointer(i)} for i in range(len(old) - 1, common - 1, -1)]
        return ops
    if old != new:
        return [{"op": "replace", "path": path, "value": copy.deepcopy(new)}]
    return []


def _parent(doc: Any, path: str) -> tuple[Any, str]:
    if not path.startswith("/"):
        raise PatchError(f"path {path!r} must start with '/'")
    tokens = [unescape(t) for t in path[1:].split("/")]
    node = doc
    for t in tokens[:-1]:
        if isinstance(node, dict) and t in node:
            node = node[t]
        elif isinstance(node, list) and t.isascii() and t.isdigit() and int(t) < len(node):
            node = node[int(t)]
        else:
            raise PatchError(f"path {path!r}: {t!r} does not exist")
    return node, tokens[-1]


def apply(doc: Any, patch: list[dict]) -> Any:
    """Apply add/remove/replace operations to a copy of doc."""
    doc = copy.deepcopy(doc)
    for op in patch:
        kind, path = op.get("op"), op.get("path")
        if not isinstance(path, str):
            raise PatchError(f"operation {op!r} has no path")
        if path == "":
            if kind in ("add", "replace"):
                doc = copy.deepcopy(op["value"])
                continue
            raise PatchError("cannot remove the whole document")
        parent, last = _parent(doc, path)
        if isinstance(parent, dict):
            if kind == "add":
                parent[last] = copy.deepcopy(op["value"])
            elif kind in ("remove", "replace"):
                if last not in parent:
                    raise PatchError(f"path {path!r} does not exist")
                if kind == "remove":
                    del parent[last]
                else:
                    parent[last] = copy.deepcopy(op["value"])
            else:
                raise PatchError(f"unsupported op {kind!r}")
        elif isinstance(parent, list):
            if kind == "add":
                index = len(parent) if last == "-" else int(last) if last.isascii() and last.isdigit() else -1
                if not 0 <= index <= len(parent):
                    raise PatchError(f"path {path!r}: index out of range")
                parent.insert(index, copy.deepcopy(op["value"]))
            elif kind in ("remove", "replace"):
                if not (last.isascii() and last.isdigit() and int(last) < len(parent)):
                    raise PatchError(f"path {path!r}: index out of range")
                if kind == "remove":
                    del parent[int(last)]
                else:
                    parent[int(last)] = copy.deepcopy(op["value"])
            else:
                raise PatchError(f"unsupported op {kind!r}")
        else:
            raise PatchError(f"path {path!r}: parent is not a container")
    return doc
