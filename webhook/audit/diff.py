"""Old vs new findings of one policy: which appeared, which cleared, and why.

A finding is identified by (rule, path) and its place among findings with the same pair, so
a message that only changes its wording (a count, a suggestion) is a *changed* finding, not
one cleared and another appeared - Events are for findings that come and go.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

from webhook.audit.deps import Cause
from webhook.rules.base import Finding


Identity = tuple[str, str, int]  # (rule, path, n-th finding of that rule at that path)


def identities(findings: Iterable[Finding]) -> dict[Identity, Finding]:
    out: dict[Identity, Finding] = {}
    seen: dict[tuple[str, str], int] = {}
    for f in findings:
        n = seen.get((f.rule, f.path), 0)
        seen[(f.rule, f.path)] = n + 1
        out[(f.rule, f.path, n)] = f
    return out


@dataclass(frozen=True)
class PolicyDelta:
    """What changed in one policy's findings, and the causes of the re-check that found it."""

    policy: str  # namespace/name
    appeared: tuple[Finding, ...] = ()
    cleared: tuple[Finding, ...] = ()
    reworded: tuple[Finding, ...] = ()  # same rule and path, new message or severity
    causes: tuple[Cause, ...] = ()
    deleted: bool = False  # the policy itself is gone (its findings are all in `cleared`)

    @property
    def namespace(self) -> str:
        return self.policy.split("/", 1)[0]

    @property
    def changed(self) -> bool:
        return bool(self.appeared or self.cleared or self.reworded)


def diff_findings(policy: str, old: Sequence[Finding], new: Sequence[Finding],
                  causes: Sequence[Cause] = (), deleted: bool = False) -> PolicyDelta:
    before, after = identities(old), identities(new)
    appeared = tuple(f for k, f in after.items() if k not in before)
    cleared = tuple(f for k, f in before.items() if k not in after)
    reworded = tuple(f for k, f in after.items() if k in before and before[k] != f)
    return PolicyDelta(policy, appeared, cleared, reworded, tuple(causes), deleted)


@dataclass
class AuditDelta:
    """The outcome of one audit pass (full or incremental)."""

    policies: list[PolicyDelta] = field(default_factory=list)
    rechecked: int = 0  # policies whose rules ran in this pass
    full: bool = False

    @property
    def changed(self) -> list[PolicyDelta]:
        return [d for d in self.policies if d.changed or d.deleted]

    @property
    def namespaces(self) -> set[str]:
        """Namespaces whose report content may differ after this pass: of every policy re-checked
        (a new policy without findings adds a pass result; an edited one may add skip results)."""
        return {d.namespace for d in self.policies}
