"""Runs the registered rules over one policy and turns hits into findings.

The one place that applies configuration (severity overrides, rules turned off) and the
per-policy skip annotations, so that every entry point - lint, the webhook, generate's
proof - decides the same way.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional

from webhook.policy.errors import FieldError
from webhook.policy.limits import TOO_LARGE
from webhook.policy.model import NetworkPolicy, Origin
from webhook.policy.parse import parse_policy
from webhook.rules.base import REGISTRY, SEVERITIES, Finding, Rule
from webhook.rules.context import Context, suggestion_budget

log = logging.getLogger(__name__)

SKIP_RULES = "netpol-guard.io/skip-rules"
SKIP_REASON = "netpol-guard.io/skip-reason"
# invalid-spec: the API server refuses these whatever we say; policy-too-large: the policy
# is not parsed, so its annotations are never read
TOO_LARGE_RULE = "policy-too-large"  # a policy past webhook/policy/limits.py's limits
_UNSKIPPABLE_WHY = {"invalid-spec": "the API server refuses such objects anyway",
                    TOO_LARGE_RULE: "such a policy is not read, its annotations included"}
UNSKIPPABLE = frozenset(_UNSKIPPABLE_WHY)


@dataclass(frozen=True)
class PolicyReport:
    key: str
    policy: Optional[NetworkPolicy]
    findings: tuple[Finding, ...]

    def count(self, severity: str) -> int:
        return sum(1 for f in self.findings if f.severity == severity)


def _finding(ctx: Context, rule_id: str, severity: str, policy_key: str, path: str, message: str,
             fix: Optional[str], origin: Optional[Origin]) -> Optional[Finding]:
    configured = ctx.config.rules.get(rule_id)
    if configured == "off":
        return None
    return _new_finding(REGISTRY.get(rule_id), configured or severity, policy_key, path, message, fix, origin)


def _new_finding(rule: Rule, severity: str, policy_key: str, path: str, message: str,
                 fix: Optional[str], origin: Optional[Origin]) -> Finding:
    return Finding(rule=rule.id, category=rule.category, severity=severity, policy=policy_key, path=path,
                   message=message, fix=fix, file=origin.file if origin else None,
                   line=origin.line_of(path) if origin else 0)


def _skips(policy: NetworkPolicy, ctx: Context) -> tuple[set[str], list[Finding]]:
    raw = policy.annotations.get(SKIP_RULES)
    if raw is None:
        return set(), []
    findings: list[Finding] = []
    path = f"metadata.annotations[{SKIP_RULES}]"
    wanted = {r.strip() for r in raw.split(",") if r.strip()}
    unknown = sorted(r for r in wanted if r not in REGISTRY)
    for r in unknown:
        close = Context.closest(r, REGISTRY.ids())
        hint = f" (did you mean {close[0]}?)" if close else ""
        f = _finding(ctx, "skip-unknown-rule", REGISTRY.get("skip-unknown-rule").severity, policy.key, path,
                     f"skips rule {r!r}, which does not exist{hint}; nothing is skipped for it", None, policy.origin)
        if f:
            findings.append(f)
    unskippable = sorted(wanted & UNSKIPPABLE)
    for r in unskippable:
        f = _finding(ctx, "skip-unknown-rule", REGISTRY.get("skip-unknown-rule").severity, policy.key, path,
                     f"rule {r!r} cannot be skipped: {_UNSKIPPABLE_WHY[r]}", None, policy.origin)
        if f:
            findings.append(f)
    if not policy.annotations.get(SKIP_REASON, "").strip():
        fix = f"metadata:\n  annotations:\n    {SKIP_REASON}: \"<why these rules do not apply here>\""
        f = _finding(ctx, "skip-without-reason", REGISTRY.get("skip-without-reason").severity, policy.key, path,
                     f"skips {', '.join(sorted(wanted))} without a {SKIP_REASON} annotation saying why",
                     fix, policy.origin)
        if f:
            findings.append(f)
    return wanted - UNSKIPPABLE, findings


def check_policy(policy: NetworkPolicy, ctx: Context) -> list[Finding]:
    """Every finding for a parsed (valid) policy, skip annotations and config applied."""
    with suggestion_budget():
        return _check_policy(policy, ctx)


def _check_policy(policy: NetworkPolicy, ctx: Context) -> list[Finding]:
    skipped, findings = _skips(policy, ctx)
    key, origin = policy.key, policy.origin
    for rule, configured in REGISTRY.enabled(ctx.config):
        if rule.applies is not None and not rule.applies(policy):
            continue  # the check could find nothing here (see Rule.applies)
        if skipped and rule.id in skipped:
            continue
        try:
            hits = list(rule.check(policy, ctx))
        except Exception:  # a bug in one check must not take down the webhook or hide others
            log.exception("rule %s failed on %s", rule.id, policy.key)
            continue
        for hit in hits:
            findings.append(_new_finding(rule, configured or hit.severity or rule.severity, key, hit.path,
                                         hit.message, hit.fix, origin))
    return sort_findings(findings)


def invalid_spec_findings(errors: Iterable[FieldError], policy_key: str, ctx: Context,
                          origin: Optional[Origin]) -> list[Finding]:
    """Findings for the parse errors of a policy the model refused: invalid-spec, or
    policy-too-large for a policy past netpol-guard's size limits (webhook/policy/limits.py)."""
    out = []
    for e in errors:
        rule_id = TOO_LARGE_RULE if e.kind == TOO_LARGE else "invalid-spec"
        f = _finding(ctx, rule_id, "error", policy_key, str(e.path) or "(object)",
                     f"{e.kind}: {e.detail}", None, origin)
        if f:
            out.append(f)
    return out


def policy_key_of(obj: Any, default_namespace: str = "default") -> str:
    meta = obj.get("metadata") if isinstance(obj, Mapping) else None
    meta = meta if isinstance(meta, Mapping) else {}
    name = meta.get("name") or meta.get("generateName") or "<unnamed>"
    return f"{meta.get('namespace') or default_namespace}/{name}"


def parse_and_check(obj: Any, ctx: Context, origin: Optional[Origin] = None,
                    default_namespace: str = "default") -> PolicyReport:
    """Parse a NetworkPolicy object and check it; invalid objects yield invalid-spec findings."""
    result = parse_policy(obj, default_namespace, origin)
    key = result.policy.key if result.policy else policy_key_of(obj, default_namespace)
    if result.policy is None:
        return PolicyReport(key, None, tuple(invalid_spec_findings(result.errors, key, ctx, origin)))
    return PolicyReport(key, result.policy, tuple(check_policy(result.policy, ctx)))


_SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}


def sort_findings(findings: Iterable[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (_SEVERITY_RANK[f.severity], f.line, f.path, f.rule))
