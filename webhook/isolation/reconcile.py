"""What to do for one namespace, as a pure function of what the caches show.

plan(namespace, managed, config) -> Plan: the writes (in order) and the notes (Events that
go with no write) that bring the namespace's managed policies to the desired state. The
controller executes a plan; tests read plans without any API.

Decisions, in order:
- namespace gone, or terminating: nothing (its contents go with it);
- label value unknown: a Warning note, nothing created or removed (a typo must not drop
  the protection a namespace already has);
- label absent: the managed policies are deleted (isolation.onLabelRemoved: delete) or
  left as they are (keep);
- label set: each desired policy is created when missing, rewritten when it drifted
  (spec, our label or our annotations differ; others' labels are not drift), and managed
  policies the mode no longer wants (the DNS allowance after all -> ingress) are deleted.
  Creates come in desired order (DNS allowance before default-deny), deletes after
  the update of default-deny, so pods never lose DNS while egress is still denied.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from webhook.config import Config
from webhook.isolation.desired import (MANAGED_NAMES, MODE_ANNOTATION, UnknownMode, desired_policies, drifted,
                                       is_managed, mode_of)


@dataclass(frozen=True)
class Create:
    desired: dict


@dataclass(frozen=True)
class Update:
    actual: dict
    desired: dict  # what we own; the PUT body is merged_for_update(actual, desired)
    mode_changed: bool


@dataclass(frozen=True)
class Delete:
    actual: dict


@dataclass(frozen=True)
class Note:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Plan:
    namespace: str
    state: str  # absent | terminating | invalid-label | unlabeled | isolated
    mode: Optional[str] = None
    writes: tuple = ()
    notes: tuple[Note, ...] = field(default_factory=tuple)

    @property
    def converged(self) -> bool:
        return not self.writes


def is_terminating(ns: Mapping[str, Any]) -> bool:
    return bool((ns.get("metadata") or {}).get("deletionTimestamp")) or \
        (ns.get("status") or {}).get("phase") == "Terminating"


def plan(name: str, namespace: Optional[Mapping[str, Any]], managed: Mapping[str, Mapping[str, Any]],
         config: Config) -> Plan:
    """managed: the namespace's live managed policies by name (from the managed-by watch)."""
    if namespace is None:
        return Plan(name, "absent")
    if is_terminating(namespace):
        return Plan(name, "terminating")
    labels = (namespace.get("metadata") or {}).get("labels") or {}
    try:
        mode = mode_of(labels, config)
    except UnknownMode as exc:
        return Plan(name, "invalid-label", notes=(Note(
            "Warning", "InvalidIsolationLabel",
            f"{exc}; nothing was created or removed for namespace {name}"),))
    ours = {n: p for n, p in managed.items() if n in MANAGED_NAMES and is_managed(p)}
    if mode is None:
        if config.isolation.onLabelRemoved == "keep":
            return Plan(name, "unlabeled")
        return Plan(name, "unlabeled", writes=tuple(Delete(dict(ours[n])) for n in MANAGED_NAMES if n in ours))

    writes: list = []
    desired = desired_policies(name, mode, config)
    wanted = {d["metadata"]["name"] for d in desired}
    for d in desired:
        actual = ours.get(d["metadata"]["name"])
        if actual is None:
            writes.append(Create(d))
        elif drifted(actual, d):
            old_mode = ((actual.get("metadata") or {}).get("annotations") or {}).get(MODE_ANNOTATION)
            writes.append(Update(dict(actual), d, mode_changed=old_mode != mode))
    writes.extend(Delete(dict(p)) for n, p in sorted(ours.items()) if n not in wanted)
    return Plan(name, "isolated", mode, tuple(writes))
