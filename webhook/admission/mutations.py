"""/mutate for NetworkPolicies: three opt-in repairs, each off unless enabled in config
(``mutations.addDnsEgress``, ``mutations.explicitPolicyTypes``,
``mutations.exceptMetadataAddress``). The answer is always "allowed": a mutating
webhook repairs, the validating one judges (it runs after us, on the mutated object).

addDnsEgress is driven by the dns-egress-missing finding itself (through the rule
runner), never by re-deciding here what "allows DNS" means.
"""
from __future__ import annotations

import copy
import ipaddress
from typing import Any

from webhook.admission.handlers import HandlerContext, register_handler
from webhook.admission.jsonpatch import diff
from webhook.admission.response import Decision, allow, patched
from webhook.admission.review import NETWORK_POLICY, AdmissionRequest
from webhook.policy.model import EGRESS, INGRESS
from webhook.policy.parse import parse_policy
from webhook.rules.context import Context
from webhook.rules.dns import dns_fix_rule
from webhook.rules.runner import check_policy

DNS_RULE = "dns-egress-missing"
METADATA_ADDRESSES = {4: "169.254.169.254/32", 6: "fd00:ec2::254/128"}


def _except_metadata(obj: dict) -> bool:
    changed = False
    for rule in obj.get("spec", {}).get("egress") or []:
        if not isinstance(rule, dict):
            continue
        for peer in rule.get("to") or []:
            block = peer.get("ipBlock") if isinstance(peer, dict) else None
            if not isinstance(block, dict):
                continue
            try:
                net = ipaddress.ip_network(str(block.get("cidr")), strict=False)
            except ValueError:
                continue
            if net.prefixlen != 0:
                continue
            meta = ipaddress.ip_network(METADATA_ADDRESSES[net.version])
            excepts = block.get("except") or []
            covered = False
            for ex in excepts:
                try:
                    covered = covered or meta.subnet_of(ipaddress.ip_network(str(ex), strict=False))
                except (ValueError, TypeError):
                    continue
            if not covered:
                block["except"] = list(excepts) + [str(meta)]
                changed = True
    return changed


def mutated(obj: Any, namespace: str, ctx: HandlerContext) -> dict:
    """The object with every enabled repair applied (equal to the input when none applies)."""
    m = ctx.config.mutations
    result = parse_policy(obj, default_namespace=namespace or "default")
    if result.policy is None:
        return obj  # invalid: nothing to repair safely; /validate says why
    policy = result.policy
    new = copy.deepcopy(dict(obj))
    new["spec"] = dict(new.get("spec") or {})
    if m.exceptMetadataAddress:
        _except_metadata(new)
    if m.addDnsEgress:
        rules_ctx = Context.for_candidate(ctx.view, ctx.config, policy)
        if any(f.rule == DNS_RULE for f in check_policy(policy, rules_ctx)):
            new["spec"]["egress"] = list(new["spec"].get("egress") or []) + [dns_fix_rule(rules_ctx)]
    if m.explicitPolicyTypes and new["spec"].get("policyTypes") is None:
        # what the API server would default to, from the object as the user wrote it
        new["spec"]["policyTypes"] = [t for t in (INGRESS, EGRESS) if t in policy.policy_types]
    return new


def mutate_network_policy(request: AdmissionRequest, ctx: HandlerContext) -> Decision:
    if not ctx.config.mutations.any_enabled():
        return allow()
    assert request.object is not None
    new = mutated(request.object, request.namespace, ctx)
    if new is request.object:  # invalid or too large: not even compared (a diff walks all of it)
        return allow()
    ops = diff(request.object, new)
    return patched(ops) if ops else allow()


register_handler(NETWORK_POLICY, ("CREATE", "UPDATE"), mutate_network_policy, endpoint="mutate")
