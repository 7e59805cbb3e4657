"""The audit core: every NetworkPolicy's current findings, kept current change by change.

Pure: it reads a ClusterView and a Config and runs the same rules as the webhook and lint
(webhook.rules.runner.check_policy); it writes nothing. The edges feed it:

    auditor = Auditor(view, config)
    auditor.full()                       # check every policy (start, and the slow safety net)
    ...the live cache applies events to the view, collecting Change(kind, old, new)...
    delta = auditor.apply(changes)       # re-check only the policies those changes can affect
    for d in delta.changed: ...          # appeared / cleared findings, each with its causes

The view must already hold the new state when apply() runs (old objects come in the
changes). Policies in exempt namespaces are not audited, as the webhook does not judge them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

from webhook.audit.deps import Cause, Change, DependencyIndex, policy_ip_blocks, policy_tokens
from webhook.audit.diff import AuditDelta, PolicyDelta, diff_findings
from webhook.cluster.view import ClusterView
from webhook.config import Config
from webhook.policy.model import NetworkPolicy
from webhook.rules.base import Finding
from webhook.rules.context import Context
from webhook.rules.runner import check_policy


@dataclass(frozen=True)
class PolicyResult:
    """One audited policy: its findings, and the causes of the last change of them."""

    policy: NetworkPolicy
    findings: tuple[Finding, ...]
    causes: tuple[Cause, ...] = ()  # why the findings last changed (empty after a full audit)


class Auditor:
    def __init__(self, view: ClusterView, config: Config):
        self.view = view
        self.config = config
        self.results: dict[str, PolicyResult] = {}
        self.index = DependencyIndex()
        self._known = (view.namespaces_known, view.pods_known)
        self.checks = 0  # policies checked since construction (all passes)

    # --- passes --------------------------------------------------------------------------
    def full(self) -> AuditDelta:
        """Check every policy in the view and rebuild the index; the delta against what the
        auditor held before (everything appears on the first pass)."""
        with self.view.lock:
            policies = {p.key: p for p in self.view.policies() if not self._exempt(p.namespace)}
        delta = AuditDelta(full=True)
        ctx = Context(self.view, self.config)
        for key in sorted(set(self.results) | set(policies)):
            delta.policies.append(self._recheck(key, policies.get(key), ctx, ()))
            delta.rechecked += key in policies
        self._known = (self.view.namespaces_known, self.view.pods_known)
        return delta

    def apply(self, changes: Iterable[Change]) -> AuditDelta:
        """Re-check the policies `changes` can affect (the view already holds the new state)."""
        changes = list(changes)
        if (self.view.namespaces_known, self.view.pods_known) != self._known:
            # "matches nothing" just became a fact (or stopped being one): every verdict may move
            return self.full()
        affected = self.index.affected(changes, self.view, self.config)
        delta = AuditDelta()
        ctx = Context(self.view, self.config)
        for key in sorted(affected):
            ns, _, name = key.partition("/")
            policy = None if self._exempt(ns) else self.view.policy(ns, name)
            if policy is None and key not in self.results:
                continue
            delta.policies.append(self._recheck(key, policy, ctx, affected[key]))
            delta.rechecked += policy is not None
        return delta

    def affected(self, changes: Iterable[Change]) -> dict[str, list[Cause]]:
        """The policies apply() would re-check, with their causes (for tests and metrics)."""
        return self.index.affected(list(changes), self.view, self.config)

    # --- one policy ----------------------------------------------------------------------
    def _recheck(self, key: str, policy: Optional[NetworkPolicy], ctx: Context,
                 causes: Iterable[Cause]) -> PolicyDelta:
        before = self.results.get(key)
        old = before.findings if before else ()
        causes = tuple(causes)
        if policy is None:
            self.results.pop(key, None)
            self.index.remove(key)
            return diff_findings(key, old, (), causes, deleted=True)
        findings = tuple(check_policy(policy, ctx))
        self.checks += 1
        self.index.put(key, policy_tokens(policy, self.view, self.config), policy_ip_blocks(policy))
        d = diff_findings(key, old, findings, causes)
        kept = causes if (d.appeared or d.cleared) else (before.causes if before else ())
        self.results[key] = PolicyResult(policy, findings, kept)
        return d

    def _exempt(self, namespace: str) -> bool:
        return namespace in self.config.exemptNamespaces

    # --- reading -------------------------------------------------------------------------
    def findings(self) -> dict[str, tuple[Finding, ...]]:
        return {k: r.findings for k, r in self.results.items()}

    def in_namespace(self, namespace: str) -> list[PolicyResult]:
        return [r for k, r in sorted(self.results.items()) if r.policy.namespace == namespace]

    def namespaces(self) -> list[str]:
        return sorted({r.policy.namespace for r in self.results.values()})

