"""Label selectors and label syntax, exactly as the API server validates and evaluates them."""
from __future__ import annotations

import re
from dataclasses import dataclass
from collections.abc import Mapping  # not typing.Mapping: isinstance() against the alias costs twice as much
from typing import Any

from webhook.bounded_text import quoted
from webhook.policy.errors import FieldError, Path, frozen_record

# Parsed JSON and YAML are plain dicts: naming dict first answers isinstance() without the
# ABC machinery (~6x cheaper on this path); any other Mapping is still accepted.
MAPPING = (dict, Mapping)

_NAME_RE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS1123_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1123_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


def _remembers_valid(check):
    """`check(text) -> problem or None`, answering at once for a string it found valid before.
    Every review re-validates the same few label keys, values and namespace names (regular
    expressions, ~0.5 us each); only valid strings are kept, so no message is ever cached.
    Bounded: the set starts over past 4096 names. Not for object names (dns_subdomain_problem):
    each new policy brings a new one, and only a benchmark that repeats its bodies would hit."""
    valid: set[str] = set()

    def remembering(text: Any) -> str | None:
        if type(text) is str and text in valid:
            return None
        problem = check(text)
        if problem is None and type(text) is str:
            if len(valid) >= 4096:
                valid.clear()
            valid.add(text)
        return problem

    remembering.__name__, remembering.__doc__ = check.__name__, check.__doc__
    remembering.__wrapped__ = check
    return remembering


@_remembers_valid
def label_key_problem(key: Any) -> str | None:
    """Why `key` is not a valid label key (a qualified name), or None."""
    if not isinstance(key, str) or not key:
        return "label key must be a non-empty string"
    prefix, _, name = key.rpartition("/")
    if "/" in key and not prefix:
        return f"invalid label key {key!r}: prefix part must be non-empty"
    if prefix:
        if len(prefix) > 253 or not _DNS1123_SUBDOMAIN_RE.match(prefix):
            return (f"invalid label key {key!r}: prefix part must be a lowercase DNS subdomain "
                    "(e.g. 'example.com'), at most 253 characters")
    if not name or len(name) > 63 or not _NAME_RE.match(name):
        return (f"invalid label key {key!r}: name part must be 1-63 characters of alphanumerics, "
                "'-', '_' or '.', starting and ending with an alphanumeric")
    return None


@_remembers_valid
def label_value_problem(value: Any) -> str | None:
    """Why `value` is not a valid label value, or None. Empty is valid."""
    if not isinstance(value, str):
        return f"label value must be a string, got {_kind(value)} {value!r} (quote it in YAML)"
    if value == "":
        return None
    if len(value) > 63 or not _NAME_RE.match(value):
        return (f"invalid label value {value!r}: must be at most 63 characters of alphanumerics, "
                "'-', '_' or '.', starting and ending with an alphanumeric")
    return None


def dns_subdomain_problem(name: Any) -> str | None:
    if not isinstance(name, str) or not name:
        return "must be a non-empty string"
    if len(name) > 253 or not _DNS1123_SUBDOMAIN_RE.match(name):
        return (f"{quoted(name)} is not a valid name: lowercase alphanumerics, '-' and '.', "
                "starting and ending with an alphanumeric, at most 253 characters")
    return None


@_remembers_valid
def dns_label_problem(name: Any) -> str | None:
    if not isinstance(name, str) or not name:
        return "must be a non-empty string"
    if len(name) > 63 or not _DNS1123_LABEL_RE.match(name):
        return (f"{quoted(name)} is not a valid namespace name: lowercase alphanumerics and '-', "
                "starting and ending with an alphanumeric, at most 63 characters")
    return None


def _kind(v: Any) -> str:
    return {bool: "boolean", int: "number", float: "number", type(None): "null",
            list: "list", dict: "mapping"}.get(type(v), type(v).__name__)


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str
    values: frozenset[str]

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.operator
        if op == "In":
            return labels.get(self.key) in self.values
        if op == "NotIn":  # absent key satisfies NotIn, as in the API server
            return self.key not in labels or labels[self.key] not in self.values
        if op == "Exists":
            return self.key in labels
        return self.key not in labels  # DoesNotExist


@frozen_record
class LabelSelector:
    """A parsed labelSelector. The empty selector selects everything in its scope."""

    match_labels: tuple[tuple[str, str], ...] = ()
    expressions: tuple[Requirement, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not self.match_labels and not self.expressions

    def matches(self, labels: Mapping[str, str]) -> bool:
        for k, v in self.match_labels:
            if labels.get(k) != v:
                return False
        for req in self.expressions:
            if not req.matches(labels):
                return False
        return True

    def required_keys(self) -> set[str]:
        """Label keys an object must carry to be selected."""
        keys = {k for k, _ in self.match_labels}
        keys.update(r.key for r in self.expressions if r.operator in ("In", "Exists"))
        return keys

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.match_labels:
            out["matchLabels"] = dict(self.match_labels)
        if self.expressions:
            out["matchExpressions"] = [
                {"key": r.key, "operator": r.operator, **({"values": sorted(r.values)} if r.values else {})}
                for r in self.expressions
            ]
        return out

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in self.match_labels]
        for r in self.expressions:
            if r.operator in ("In", "NotIn"):
                parts.append(f"{r.key} {r.operator.lower()} ({','.join(sorted(r.values))})")
            elif r.operator == "Exists":
                parts.append(r.key)
            else:
                parts.append(f"!{r.key}")
        return ",".join(parts) if parts else "<all>"


EVERYTHING = LabelSelector()


def parse_selector(obj: Any, path: Path, errors: list[FieldError]) -> LabelSelector:
    """Parse and validate a labelSelector; problems are appended to `errors` with field paths."""
    if obj is None:
        return EVERYTHING
    if not isinstance(obj, MAPPING):
        errors.append(FieldError(path, "Invalid value", f"must be a label selector mapping, got {_kind(obj)}"))
        return EVERYTHING
    for key in obj:
        if key not in ("matchLabels", "matchExpressions"):
            errors.append(FieldError(path.child(str(key)), "Unknown field",
                                     "a label selector has only matchLabels and matchExpressions"))
    labels: list[tuple[str, str]] = []
    ml = obj.get("matchLabels")
    if ml is not None:
        if not isinstance(ml, MAPPING):
            errors.append(FieldError(path.child("matchLabels"), "Invalid value",
                                     f"must be a mapping of label keys to values, got {_kind(ml)}"))
        else:
            for k, v in ml.items():
                kp = label_key_problem(k)
                if kp:
                    errors.append(FieldError(path.child("matchLabels"), "Invalid value", kp))
                    continue
                vp = label_value_problem(v)
                if vp:
                    errors.append(FieldError(path.child("matchLabels").child(k), "Invalid value", vp))
                    continue
                labels.append((k, v))
    reqs: list[Requirement] = []
    me = obj.get("matchExpressions")
    if me is not None:
        if not isinstance(me, list):
            errors.append(FieldError(path.child("matchExpressions"), "Invalid value",
                                     f"must be a list, got {_kind(me)}"))
        else:
            for i, expr in enumerate(me):
                req = _parse_requirement(expr, path.child("matchExpressions").index(i), errors)
                if req:
                    reqs.append(req)
    return LabelSelector(tuple(labels), tuple(reqs))


def _parse_requirement(expr: Any, path: Path, errors: list[FieldError]) -> Requirement | None:
    if not isinstance(expr, MAPPING):
        errors.append(FieldError(path, "Invalid value", f"must be a mapping with key, operator, values; got {_kind(expr)}"))
        return None
    ok = True
    for key in expr:
        if key not in ("key", "operator", "values"):
            errors.append(FieldError(path.child(str(key)), "Unknown field",
                                     "a match expression has only key, operator and values"))
            ok = False
    key = expr.get("key")
    kp = label_key_problem(key) if key is not None else None
    if key is None:
        errors.append(FieldError(path.child("key"), "Required value", "a match expression needs a key"))
        ok = False
    elif kp:
        errors.append(FieldError(path.child("key"), "Invalid value", kp))
        ok = False
    op = expr.get("operator")
    if op not in OPERATORS:
        if op is None:
            errors.append(FieldError(path.child("operator"), "Required value", "operator is required"))
        else:
            errors.append(FieldError(path.child("operator"), "Unsupported value",
                                     f"{op!r}: supported values: " + ", ".join(f'"{o}"' for o in OPERATORS)))
        return None
    values = expr.get("values")
    if values is None:
        values = []
    if not isinstance(values, list):
        errors.append(FieldError(path.child("values"), "Invalid value", f"must be a list, got {_kind(values)}"))
        return None
    if op in ("In", "NotIn") and not values:
        errors.append(FieldError(path.child("values"), "Required value",
                                 f"must be specified when `operator` is '{op}'"))
        ok = False
    if op in ("Exists", "DoesNotExist") and values:
        errors.append(FieldError(path.child("values"), "Forbidden",
                                 f"may not be specified when `operator` is '{op}'"))
        ok = False
    for j, v in enumerate(values):
        vp = label_value_problem(v)
        if vp:
            errors.append(FieldError(path.child("values").index(j), "Invalid value", vp))
            ok = False
    if not ok:
        return None
    return Requirement(key, op, frozenset(values))
