"""Label and field selectors, as the API server reads them from the query string."""

from __future__ import annotations

import re
from typing import Callable

Predicate = Callable[[dict], bool]


class SelectorError(ValueError):
    """A selector the real server would reject with 400 BadRequest."""


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside the parentheses of an `in (...)` set."""
    parts, depth, current = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


_SET_RE = re.compile(r"^([^\s!=(),]+)\s+(in|notin)\s*\(([^()]*)\)$")
_EQ_RE = re.compile(r"^([^\s!=(),]+)\s*(==|=|!=)\s*([^\s!=(),]*)$")
_EXISTS_RE = re.compile(r"^(!?)\s*([^\s!=(),]+)$")


def _label_requirement(req: str) -> Callable[[dict], bool]:
    m = _SET_RE.match(req)
    if m:
        key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",") if v.strip()}
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    m = _EQ_RE.match(req)
    if m:
        key, op, value = m.groups()
        if op == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    m = _EXISTS_RE.match(req)
    if m:
        negate, key = m.group(1) == "!", m.group(2)
        return (lambda labels: key not in labels) if negate else (lambda labels: key in labels)
    raise SelectorError(f"unable to parse requirement: {req!r}")


def label_selector(text: str | None) -> Predicate:
    """Compile `a=b,c!=d,e in (x,y),f notin (z),g,!h` into a predicate on an object."""
    if not text:
        return lambda obj: True
    reqs = [_label_requirement(r) for r in _split_top_level(text)]

    def matches(obj: dict) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(r(labels) for r in reqs)

    return matches


def _field_value(obj: dict, dotted: str) -> str:
    value = obj
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return ""
        value = value.get(part)
    return "" if value is None else str(value)


def field_selector(text: str | None) -> Predicate:
    """Compile `metadata.name=x,metadata.namespace!=y` (any dotted field path; =, ==, !=)."""
    if not text:
        return lambda obj: True
    reqs = []
    for req in _split_top_level(text):
        m = re.match(r"^([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*)$", req)
        if not m:
            raise SelectorError(f"invalid field selector: {req!r}")
        reqs.append(m.groups())

    def matches(obj: dict) -> bool:
        for path, op, value in reqs:
            equal = _field_value(obj, path) == value
            if equal != (op != "!="):
                return False
        return True

    return matches
