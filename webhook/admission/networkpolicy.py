"""NetworkPolicy CREATE and UPDATE on /validate: the rules, judged against the cluster view
with the candidate in place of the stored version of itself.

On UPDATE the old object is judged the same way, and only errors the change introduces
(or adds more of) deny; errors the object already had are reported as warnings, so a
pre-existing problem never blocks an unrelated edit (a label change, a new port).
"""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any, Mapping, Optional, Sequence

from webhook.admission.handlers import HandlerContext, register_handler
from webhook.admission.response import Decision, decision_from_findings
from webhook.admission.review import NETWORK_POLICY, AdmissionRequest
from webhook.policy.model import NetworkPolicy
from webhook.policy.parse import parse_policy
from webhook.rules.base import Finding
from webhook.rules.context import Context
from webhook.rules.runner import TOO_LARGE_RULE, check_policy, invalid_spec_findings, policy_key_of


def judge(obj: Mapping[str, Any], namespace: str, ctx: HandlerContext) -> tuple[Optional[NetworkPolicy], list[Finding]]:
    """(policy or None if invalid, findings) for one object, with the object overlaid on the view."""
    result = parse_policy(obj, default_namespace=namespace or "default")
    view, config = ctx.view, ctx.config
    policy = result.policy
    if policy is None:
        key = policy_key_of(obj, namespace or "default")
        return None, invalid_spec_findings(result.errors, key, Context(view, config), None)
    return policy, check_policy(policy, Context.for_candidate(view, config, policy))


def introduced_errors(new: Sequence[Finding], old: Sequence[Finding]) -> tuple[list[Finding], list[Finding]]:
    """Split the new object's errors into (introduced or worsened, kept as they were).

    An error is kept when the old object had the same rule at the same field path (the
    message may differ, e.g. a count in it); when a rule now fires more often than it
    did, the extra ones count as introduced - the change made that problem worse.
    """
    old_errors = [f for f in old if f.severity == "error"]
    remaining: dict[str, Counter] = defaultdict(Counter)
    for f in old_errors:
        remaining[f.rule][f.path] += 1
    old_per_rule = Counter(f.rule for f in old_errors)
    new_errors = [f for f in new if f.severity == "error"]
    # exact (rule, path, message) matches first, then same rule and path
    introduced, kept = [], []
    exact = Counter((f.rule, f.path, f.message) for f in old_errors)
    pending = []
    for f in new_errors:
        if exact[(f.rule, f.path, f.message)] > 0 and remaining[f.rule][f.path] > 0:
            exact[(f.rule, f.path, f.message)] -= 1
            remaining[f.rule][f.path] -= 1
            kept.append(f)
        else:
            pending.append(f)
    for f in pending:
        if remaining[f.rule][f.path] > 0:
            remaining[f.rule][f.path] -= 1
            kept.append(f)
        else:
            introduced.append(f)
    # A rule that fires no more often than before, only at moved paths (an edit that
    # re-indexed the rules), is not worse: keep those too.
    new_per_rule = Counter(f.rule for f in new_errors)
    for f in list(introduced):
        if new_per_rule[f.rule] <= old_per_rule[f.rule]:
            introduced.remove(f)
            kept.append(f)
    return introduced, kept


def validate_network_policy(request: AdmissionRequest, ctx: HandlerContext) -> Decision:
    assert request.object is not None  # parse_review guarantees it for CREATE and UPDATE
    policy, findings = judge(request.object, request.namespace, ctx)
    subject = policy.key if policy else policy_key_of(request.object, request.namespace or "default")
    # The old object only matters when the new one has errors (to tell kept from new ones) -
    # unless the new one is past the size limits: it was not read, so nothing in it can be
    # told kept from new, and it is denied on UPDATE as on CREATE.
    has_errors = any(f.severity == "error" for f in findings)
    too_large = policy is None and any(f.rule == TOO_LARGE_RULE for f in findings)
    if request.operation == "UPDATE" and request.old_object is not None and has_errors and not too_large:
        _, old_findings = judge(request.old_object, request.namespace, ctx)
        introduced, kept = introduced_errors(findings, old_findings)
        others = [f for f in findings if f.severity != "error"]
        return decision_from_findings(subject, introduced + others, ctx.config.mode, kept=kept)
    return decision_from_findings(subject, findings, ctx.config.mode)


register_handler(NETWORK_POLICY, ("CREATE", "UPDATE"), validate_network_policy, endpoint="validate")
