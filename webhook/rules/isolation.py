"""Isolation: the managed policies of a namespace labeled for isolation, as the audit sees them.

The controller keeps `netpol-guard-default-deny` and `netpol-guard-allow-dns` in namespaces
carrying the isolation label, and puts them back when edited; these checks say so when that
has not (yet) happened - the controller is off, failing, or the edit came from around it.
A namespace whose managed policies are missing altogether has no policy to hang a finding
on: the audit reports it in the namespace's PolicyReport (webhook/audit/auditor.py).
"""
from __future__ import annotations

from typing import Iterator

from webhook.policy.model import NetworkPolicy
from webhook.rules.base import Example, Hit, rule
from webhook.rules.context import Context
from webhook.rules.fixes import snippet
from webhook.rules.inventory import CLUSTER, ISOLATED_SHOP

MANAGED_BY_KEY, MANAGED_BY_VALUE = "app.kubernetes.io/managed-by", "netpol-guard"


# The DNS allowance the controller keeps beside the default-deny (inventory of the examples).
_ALLOW_DNS = """
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: netpol-guard-allow-dns
  namespace: shop
  labels: {app.kubernetes.io/managed-by: netpol-guard}
  annotations: {description: "Managed by netpol-guard"}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}
      podSelector: {matchLabels: {k8s-app: kube-dns}}
    ports: [{port: 53, protocol: UDP}, {port: 53, protocol: TCP}]
"""


def _managed(policy: NetworkPolicy) -> bool:
    return policy.labels.get(MANAGED_BY_KEY) == MANAGED_BY_VALUE


@rule(
    id="managed-policy-edited", category="isolation", severity="warning", applies=_managed,
    summary="A policy netpol-guard maintains for an isolated namespace differs from what it should be.",
    rationale="""
In a namespace labeled for isolation, netpol-guard keeps `netpol-guard-default-deny` (and,
when egress is denied, `netpol-guard-allow-dns`) exactly as the label asks. A hand edit of
their spec - a default-deny narrowed to ingress, a DNS allowance pointed elsewhere - changes
what the namespace's isolation means. The controller restores them within seconds; this
finding means that has not happened (the controller is off or failing), or the edit keeps
coming back (a GitOps tool owns a copy). Change the namespace label, not the policy.
""",
    bad=(Example("the default-deny narrowed to ingress in a namespace isolated for all", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: netpol-guard-default-deny
  namespace: shop
  labels: {app.kubernetes.io/managed-by: netpol-guard}
  annotations: {description: "Managed by netpol-guard"}
spec:
  podSelector: {}
  policyTypes: [Ingress]
""" + ISOLATED_SHOP),),
    good=(Example("the default-deny as the isolation label asks", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: netpol-guard-default-deny
  namespace: shop
  labels: {app.kubernetes.io/managed-by: netpol-guard}
  annotations: {description: "Managed by netpol-guard"}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
""" + _ALLOW_DNS + ISOLATED_SHOP),),
)
def managed_policy_edited(policy: NetworkPolicy, ctx: Context) -> Iterator[Hit]:
    from webhook.isolation.desired import desired_policies

    mode = ctx.isolation_mode(policy.namespace)
    if mode is None:
        return  # not isolated (any more): with onLabelRemoved=keep the policy is simply left
    wanted = next((d for d in desired_policies(policy.namespace, mode, ctx.config)
                   if d["metadata"]["name"] == policy.name), None)
    if wanted is None:
        return  # e.g. the DNS allowance in an ingress-only namespace: removed by the controller
    actual = policy.raw.get("spec") if isinstance(policy.raw, dict) else None
    if actual == wanted["spec"]:
        return
    key = ctx.config.isolation.labelKey
    yield Hit("spec", f"differs from what netpol-guard maintains for {key}={mode}; the controller restores "
                      "it, so this means the controller is off or failing, or another writer keeps editing it "
                      "(change the namespace label instead)", snippet({"spec": wanted["spec"]}))


def _isolating_with_selector(policy: NetworkPolicy) -> bool:
    return bool(policy.policy_types)


@rule(
    id="workload-not-isolated", category="isolation", severity="info", default_off=True,
    applies=_isolating_with_selector,
    summary="Workloads in a namespace that uses NetworkPolicies are selected by none for a direction, so it is open.",
    rationale="""
A pod is isolated for ingress (or egress) only when some policy selects it for that
direction; every other pod accepts (or sends) anything. In a namespace whose team writes
policies, a workload that none of them selects - a new Deployment, a relabeled one - is
silently wide open. Reported once per namespace and direction, on the first policy (by
name) that isolates that direction, listing the open workloads. Off by default: a
namespace-wide default-deny (or the isolation label) is the usual answer, and not every
team wants the advice; turn it on with `rules: {workload-not-isolated: info}`.
""",
    bad=(Example("only the api is isolated for ingress; frontend and db are open", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-ingress, namespace: shop, annotations: {description: "api ingress"}}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: frontend}}}]
    ports: [{port: 8080}]
""" + CLUSTER, enables=("workload-not-isolated",)),),
    good=(Example("a default-deny for ingress covers every workload", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny-ingress, namespace: shop, annotations: {description: "deny ingress"}}
spec:
  podSelector: {}
  policyTypes: [Ingress]
""" + CLUSTER, enables=("workload-not-isolated",)),),
)
def workload_not_isolated(policy: NetworkPolicy, ctx: Context) -> Iterator[Hit]:
    from webhook.policy.model import EGRESS, INGRESS
    from webhook.policy.selectors import EVERYTHING

    ns = policy.namespace
    if not ctx.view.pods_known:
        return
    for direction in (INGRESS, EGRESS):
        if direction not in policy.policy_types:
            continue
        isolating = sorted((p for p in ctx.engine.policies_in(ns) if direction in p.policy_types),
                           key=lambda p: p.name)
        if not isolating or isolating[0].name != policy.name:
            continue  # reported once per namespace and direction, on its first isolating policy
        open_ = sorted((p for p in ctx.view.pod_label_classes(ns, EVERYTHING)
                        if not any(q.pod_selector.matches(p.labels) for q in isolating)), key=lambda p: p.ref)
        if not open_:
            continue
        word = direction.lower()
        names = ", ".join(p.ref for p in open_[:5]) + (f" and {len(open_) - 5} more" if len(open_) > 5 else "")
        yield Hit("spec.podSelector",
                  f"{names} {'is' if len(open_) == 1 else 'are'} selected by no {word} policy in {ns}, so "
                  f"{'its' if len(open_) == 1 else 'their'} {word} is open (reported on the first policy isolating "
                  f"{word} here)",
                  snippet({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                           "metadata": {"name": f"default-deny-{word}", "namespace": ns},
                           "spec": {"podSelector": {}, "policyTypes": [direction]}}))
