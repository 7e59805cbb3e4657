"""What a rule is, what it finds, and the registry that holds them.

A rule is a pure function of (policy, context) that yields Hits. Everything a user reads
about it - summary, rationale, the bad and good examples - is declared beside the
function, so `docs/rules.md`, `netpol-guard rules --explain` and the example tests all
render from one source.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Optional

CATEGORIES = ("selector", "dns", "ipblock", "ports", "structure", "isolation")
SEVERITIES = ("error", "warning", "info")
_ID_RE = re.compile(r"^[a-z][a-z0-9-]*$")


@dataclass(frozen=True)
class Example:
    """A manifest stream: the first NetworkPolicy is the subject, every other object is the
    inventory (Namespaces, Pods, workloads, Services, other policies) the check sees."""

    title: str
    manifest: str
    # Set when the example is about a severity other than the rule's default (e.g.
    # allow-all-peers is a warning only in isolated namespaces).
    expect_severity: Optional[str] = None
    # Rules off by default that the example turns on (at their default severity), as a
    # configuration would: the examples of such a rule show it enabled.
    enables: tuple[str, ...] = ()


@dataclass(frozen=True)
class Hit:
    """What a check yields: where, what, and how to fix it."""

    path: str
    message: str
    fix: Optional[str] = None  # a YAML snippet that would make it right
    severity: Optional[str] = None  # only when the rule itself varies its severity


@dataclass(frozen=True)
class Finding:
    rule: str
    category: str
    severity: str
    policy: str  # namespace/name
    path: str
    message: str
    fix: Optional[str] = None
    file: Optional[str] = None
    line: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "category": self.category, "severity": self.severity,
                "policy": self.policy, "file": self.file, "line": self.line or None,
                "path": self.path, "message": self.message, "fix": self.fix}


Check = Callable[[Any, Any], Iterable[Hit]]


@dataclass(frozen=True)
class Rule:
    id: str
    category: str
    severity: str
    summary: str
    rationale: str
    check: Check = field(repr=False)
    bad: tuple[Example, ...] = ()
    good: tuple[Example, ...] = ()
    # Rules reported by the runner itself rather than by a check (invalid-spec, skip-*).
    builtin: bool = False
    # A cheap test of the policy alone (e.g. "isolates egress") that must hold for the check
    # to find anything. The runner skips the check when it fails: most rules are about one
    # direction or one kind of peer, and calling every check costs ~1 us even when it has
    # nothing to look at. The check stays correct without it (examples call it directly).
    applies: Optional[Callable[[Any], bool]] = field(default=None, repr=False)
    # Off unless the configuration names it (`rules: {id: info}`): checks whose findings are
    # advice some teams want and others would only find noisy.
    default_off: bool = False


class Registry:
    def __init__(self) -> None:
        self._rules: dict[str, Rule] = {}
        self._ordered: tuple[Rule, ...] | None = None  # sorted once: the runner iterates per policy
        # id(config) -> (config, its enabled checks); see enabled()
        self._enabled: dict[int, tuple[Any, tuple[tuple[Rule, Optional[str]], ...]]] = {}

    def add(self, rule: Rule) -> Rule:
        if rule.id in self._rules:
            raise ValueError(f"rule id {rule.id!r} registered twice")
        if not _ID_RE.match(rule.id):
            raise ValueError(f"rule id {rule.id!r} is not kebab-case")
        if rule.category not in CATEGORIES:
            raise ValueError(f"rule {rule.id}: category {rule.category!r} not one of {CATEGORIES}")
        if rule.severity not in SEVERITIES:
            raise ValueError(f"rule {rule.id}: severity {rule.severity!r} not one of {SEVERITIES}")
        self._rules[rule.id] = rule
        self._ordered = None
        self._enabled.clear()
        return rule

    def get(self, rule_id: str) -> Rule:
        return self._rules[rule_id]

    def __contains__(self, rule_id: str) -> bool:
        return rule_id in self._rules

    def __iter__(self) -> Iterator[Rule]:
        if self._ordered is None:
            self._ordered = tuple(sorted(self._rules.values(), key=lambda r: (CATEGORIES.index(r.category), r.id)))
        return iter(self._ordered)

    def ids(self) -> list[str]:
        return [r.id for r in self]

    def enabled(self, config: Any) -> tuple[tuple[Rule, Optional[str]], ...]:
        """The checks the runner calls under `config` - not builtin, not turned "off" - in
        order, each with its configured severity (None: the rule's own).

        Asked once per policy reviewed, so computed once per configuration object, not per
        rule per review: configurations are immutable and live as long as the server. The
        entry holds the config, so its id cannot be reused while the entry lives."""
        got = self._enabled.get(id(config))
        if got is None:
            if len(self._enabled) >= 32:  # lint runs and tests make many short-lived configs
                self._enabled.clear()
            rules = tuple((r, config.rules.get(r.id)) for r in self
                          if not r.builtin and config.rules.get(r.id, "off" if r.default_off else None) != "off")
            got = self._enabled[id(config)] = (config, rules)
        return got[1]


REGISTRY = Registry()


def rule(*, id: str, category: str, severity: str, summary: str, rationale: str,
         bad: Iterable[Example], good: Iterable[Example], builtin: bool = False,
         applies: Optional[Callable[[Any], bool]] = None, default_off: bool = False) -> Callable[[Check], Check]:
    """Declare a rule: decorates its check function and registers it."""
    def deco(fn: Check) -> Check:
        REGISTRY.add(Rule(id=id, category=category, severity=severity, summary=summary,
                          rationale=rationale.strip(), check=fn, bad=tuple(bad), good=tuple(good),
                          builtin=builtin, applies=applies, default_off=default_off))
        return fn
    return deco
