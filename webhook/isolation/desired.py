"""The managed policies a namespace should have, as a pure function of (namespace, mode, config).

Both are labeled app.kubernetes.io/managed-by=netpol-guard and carry a description. The
DNS allowance exists whenever egress is denied, and is created before the default-deny
so that no pod is ever without DNS in between.
"""
from __future__ import annotations

import copy
from typing import Any, Mapping

from webhook.config import Config
from webhook.rules.fixes import dns_egress_rule

MODES = ("all", "ingress", "egress")
MANAGED_BY_KEY = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "netpol-guard"
DEFAULT_DENY = "netpol-guard-default-deny"
ALLOW_DNS = "netpol-guard-allow-dns"
MANAGED_NAMES = (ALLOW_DNS, DEFAULT_DENY)  # creation order: the allowance first
DESCRIPTION_KEY = "description"
MODE_ANNOTATION = "netpol-guard.io/isolate-mode"


class UnknownMode(ValueError):
    def __init__(self, value: str, label_key: str):
        super().__init__(f"label {label_key}={value!r} is not a known isolation mode; "
                         f"use one of: {', '.join(MODES)}")
        self.value = value


def policy_types(mode: str) -> list[str]:
    return {"all": ["Ingress", "Egress"], "ingress": ["Ingress"], "egress": ["Egress"]}[mode]


def _metadata(name: str, namespace: str, mode: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace,
        "labels": {MANAGED_BY_KEY: MANAGED_BY_VALUE},
        "annotations": {DESCRIPTION_KEY: description, MODE_ANNOTATION: mode},
    }


def desired_policies(namespace: str, mode: str, config: Config) -> list[dict[str, Any]]:
    """The managed NetworkPolicies for `namespace` in isolation `mode`, in creation order."""
    if mode not in MODES:
        raise UnknownMode(mode, config.isolation.labelKey)
    types = policy_types(mode)
    out = []
    if "Egress" in types:
        dns = config.dns
        out.append({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": _metadata(
                ALLOW_DNS, namespace, mode,
                f"Managed by netpol-guard: every pod in {namespace} may reach cluster DNS "
                f"({dns.namespace} pods {','.join(f'{k}={v}' for k, v in sorted(dns.podLabels.items()))}) "
                "on UDP and TCP 53, because the namespace denies egress by default."),
            "spec": {"podSelector": {}, "policyTypes": ["Egress"],
                     "egress": [dns_egress_rule(dns.namespace, dict(dns.podLabels), dns.nodeLocalAddresses)]},
        })
    directions = " and ".join(t.lower() for t in types)
    out.append({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(
            DEFAULT_DENY, namespace, mode,
            f"Managed by netpol-guard: denies all {directions} traffic of every pod in {namespace} "
            f"unless another policy allows it ({config.isolation.labelKey}={mode})."),
        "spec": {"podSelector": {}, "policyTypes": types},
    })
    return out


def is_managed(obj: Mapping[str, Any]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return labels.get(MANAGED_BY_KEY) == MANAGED_BY_VALUE


def drifted(actual: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """Whether `actual` must be rewritten to match `desired`.

    Only what we own is compared: the spec, our label and our annotations. Labels and
    annotations others add (a GitOps tool's tracking label) are not drift, so a second
    writer re-applying the same object never starts an update loop.
    """
    if actual.get("spec") != desired.get("spec"):
        return True
    meta_a = actual.get("metadata") or {}
    meta_d = desired["metadata"]
    for k, v in meta_d["labels"].items():
        if (meta_a.get("labels") or {}).get(k) != v:
            return True
    for k, v in meta_d["annotations"].items():
        if (meta_a.get("annotations") or {}).get(k) != v:
            return True
    return False


def merged_for_update(actual: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """`desired`, keeping the live object's resourceVersion and the labels/annotations others added."""
    out = copy.deepcopy(dict(desired))
    meta_a = actual.get("metadata") or {}
    meta = out["metadata"]
    meta["labels"] = {**(meta_a.get("labels") or {}), **meta["labels"]}
    meta["annotations"] = {**(meta_a.get("annotations") or {}), **meta["annotations"]}
    if meta_a.get("resourceVersion"):
        meta["resourceVersion"] = meta_a["resourceVersion"]
    return out


def mode_of(labels: Mapping[str, str] | None, config: Config) -> str | None:
    """The isolation mode a namespace asks for; None when unlabeled. Raises UnknownMode."""
    value = (labels or {}).get(config.isolation.labelKey)
    if value is None:
        return None
    if value not in MODES:
        raise UnknownMode(value, config.isolation.labelKey)
    return value
