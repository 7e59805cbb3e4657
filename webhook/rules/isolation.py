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
from webhook.rules.inventory import ISOLATED_SHOP

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
