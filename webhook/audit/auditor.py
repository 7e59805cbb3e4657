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

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Optional

from webhook.audit.deps import Cause, Change, DependencyIndex, policy_ip_blocks, policy_tokens
from webhook.audit.diff import AuditDelta, Identity, PolicyDelta, diff_findings, identities
from webhook.cluster.view import ClusterView
from webhook.config import Config
from webhook.policy.model import NetworkPolicy
from webhook.rules.base import Finding
from webhook.rules.context import Context
from webhook.rules.runner import check_policy


@dataclass(frozen=True)
class PolicyResult:
    """One audited policy: its findings; for each (by identity, see diff.identities) when it
    was first seen and, when it appeared on a re-check that a change triggered, the causes."""

    policy: NetworkPolicy
    findings: tuple[Finding, ...]
    causes: Mapping[Identity, tuple[Cause, ...]] = field(default_factory=dict)
    seen: Mapping[Identity, float] = field(default_factory=dict)
    since: float = 0.0  # when the set of findings last changed (or the policy was first audited)

    def causes_of(self, finding: Finding) -> tuple[Cause, ...]:
        for ident, f in identities(self.findings).items():
            if f is finding:
                return self.causes.get(ident, ())
        return ()

    def seen_of(self, finding: Finding) -> float:
        for ident, f in identities(self.findings).items():
            if f is finding:
                return self.seen.get(ident, 0.0)
        return 0.0


class Auditor:
    def __init__(self, view: ClusterView, config: Config, clock: Callable[[], float] = time.time):
        self.view = view
        self.clock = clock
        self.config = config
        self.results: dict[str, PolicyResult] = {}
        self._by_namespace: dict[str, dict[str, PolicyResult]] = {}  # reports are per namespace
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
            ns_results = self._by_namespace.get(key.partition("/")[0], {})
            ns_results.pop(key, None)
            if not ns_results:
                self._by_namespace.pop(key.partition("/")[0], None)
            self.index.remove(key)
            return diff_findings(key, old, (), causes, deleted=True)
        findings = tuple(check_policy(policy, ctx))
        self.checks += 1
        self.index.put(key, policy_tokens(policy, self.view, self.config), policy_ip_blocks(policy))
        d = diff_findings(key, old, findings, causes)
        now = self.clock()
        old_causes = before.causes if before else {}
        old_seen = before.seen if before else {}
        new_causes: dict[Identity, tuple[Cause, ...]] = {}
        seen: dict[Identity, float] = {}
        for ident in identities(findings):
            if ident in old_seen:
                seen[ident] = old_seen[ident]
                if ident in old_causes:
                    new_causes[ident] = old_causes[ident]
            else:
                seen[ident] = now
                if causes:
                    new_causes[ident] = causes
        since = before.since if before and not (d.appeared or d.cleared) else now
        self.results[key] = self._by_namespace.setdefault(policy.namespace, {})[key] = \
            PolicyResult(policy, findings, new_causes, seen, since)
        return d

    def _exempt(self, namespace: str) -> bool:
        return namespace in self.config.exemptNamespaces

    # --- reading -------------------------------------------------------------------------
    def findings(self) -> dict[str, tuple[Finding, ...]]:
        return {k: r.findings for k, r in self.results.items()}

    def in_namespace(self, namespace: str) -> list[PolicyResult]:
        return [r for _, r in sorted(self._by_namespace.get(namespace, {}).items())]

    def namespaces(self) -> list[str]:
        return sorted(self._by_namespace)



# --- results that belong to no one policy ----------------------------------------------------

DNS_TARGET_RULE = "dns-target-missing"


def dns_target_problem(view: ClusterView, config: Config) -> Optional[str]:
    """Why the configured DNS target selects no pod in the live view, or None. Every
    egress-isolated namespace's DNS allowance points at it, so this is one cluster-level
    result (a ClusterPolicyReport), not a finding repeated on every egress policy."""
    dns = config.dns
    if not view.pods_known or dns.nodeLocalAddresses:
        return None  # nothing to tell from an inventory that was not shown; node-local DNS is an address
    from webhook.policy.selectors import LabelSelector
    sel = LabelSelector(tuple(sorted(dns.podLabels.items())))
    if view.select_pods(dns.namespace, sel, limit=1):
        return None
    wanted = ", ".join(f"{k}={v}" for k, v in sorted(dns.podLabels.items()))
    if view.namespace(dns.namespace) is None:
        return f"the DNS namespace {dns.namespace} does not exist; DNS allowances toward it reach nothing"
    looks = [p for p in view.pods(dns.namespace) if any(cp.port == 53 for cp in p.ports)]
    hint = ""
    if looks:
        p = sorted(looks, key=lambda p: p.name)[0]
        labels = ", ".join(f"{k}={v}" for k, v in sorted(p.labels.items())) or "no labels"
        hint = (f"; {p.ref} listens on port 53 with {labels} - relabel it or set dns.podLabels "
                "to match")
    return (f"no pod in {dns.namespace} carries {wanted} (the configured DNS target): every DNS "
            f"allowance that selects it reaches nothing, so egress-isolated pods cannot resolve names{hint}")


ISOLATION_MISSING_RULE = "isolation-policy-missing"

_AUDIT_DOCS = ("https://github.com/netpol-guard/netpol-guard/blob/main/docs/operations.md"
               "#the-background-audit-policyreports-events-metrics")
# The two results no single policy carries, described as the rule registry describes a rule
# (for the rule entries of `audit --format sarif`); docs/operations.md explains them.
CLUSTER_RULES = (
    {"id": DNS_TARGET_RULE, "category": "dns", "severity": "error", "helpUri": _AUDIT_DOCS,
     "summary": "No pod matches the configured DNS target",
     "rationale": "Every DNS allowance (the isolation controller's and the fixes lint suggests) points at "
                  "the pods of dns.namespace with dns.podLabels. When no pod carries those labels, each "
                  "allowance reaches nothing and egress-isolated pods cannot resolve names."},
    {"id": ISOLATION_MISSING_RULE, "category": "isolation", "severity": "error", "helpUri": _AUDIT_DOCS,
     "summary": "A managed policy the namespace's isolation label asks for is missing",
     "rationale": "The namespace is labeled for isolation, but the default-deny (or DNS) policy the "
                  "isolation controller keeps there is not in the cluster: the namespace is not isolated "
                  "as its label says. The controller creates it within seconds; if it stays missing, the "
                  "controller is off or failing."},
)


def isolation_problems(view: ClusterView, config: Config, namespace: str) -> list[tuple[str, str]]:
    """(managed policy name, why) for each policy the namespace's isolation label asks for
    that is not there. A namespace-level result: with the policy missing there is no policy
    for a rule to report on, so the audit puts it in the namespace's report under the missing
    policy's name. Namespaces being deleted, exempt, or with an unknown label value (the
    controller's own Event explains those) have none."""
    from webhook.isolation.desired import MODES, desired_policies

    ns = view.namespace(namespace)
    if ns is None or ns.terminating or namespace in config.exemptNamespaces:
        return []
    mode = ns.labels.get(config.isolation.labelKey)
    if mode not in MODES:
        return []
    out = []
    for d in desired_policies(namespace, mode, config):
        name = d["metadata"]["name"]
        if view.policy(namespace, name) is None:
            out.append((name, f"namespace {namespace} is labeled {config.isolation.labelKey}={mode}, but {name} "
                              "is not there: the namespace is not isolated as its label says (the isolation "
                              "controller creates it within seconds; is it running?)"))
    return out


def isolation_causes(changes: Iterable[Change], config: Config) -> dict[str, list[Cause]]:
    """Namespace -> the changes that can make its managed policies go missing: its isolation
    label set or changed, a managed policy deleted (or rewritten). Reported as the cause of an
    isolation-policy-missing result that appears on the same pass."""
    from webhook.isolation.desired import MANAGED_NAMES

    key = config.isolation.labelKey
    out: dict[str, list[Cause]] = {}
    for c in changes:
        if c.kind == "Namespace":
            old = c.old.labels.get(key) if c.old is not None else None  # type: ignore[union-attr]
            new = c.new.labels.get(key) if c.new is not None else None  # type: ignore[union-attr]
            if old != new:
                out.setdefault(c.subject.name, []).append(Cause("Namespace", c.subject.name, key, old, new))  # type: ignore[attr-defined]
        elif c.kind == "NetworkPolicy" and c.subject.name in MANAGED_NAMES:  # type: ignore[attr-defined]
            change = "created" if c.old is None else "deleted" if c.new is None else "changed"
            out.setdefault(c.subject.namespace, []).append(  # type: ignore[attr-defined]
                Cause("NetworkPolicy", c.subject.key, change=change))  # type: ignore[attr-defined]
    return out


def isolated_namespaces(view: ClusterView, config: Config) -> list[str]:
    key = config.isolation.labelKey
    return sorted(ns.name for ns in view.namespaces() if key in ns.labels)
