"""Admin network policies from manifests, into a cluster view: AdminNetworkPolicy and
BaselineAdminNetworkPolicy (policy.networking.k8s.io/v1alpha1), ClusterNetworkPolicy (v1alpha2).

`lint` and `simulate` both call this: an admin policy the API server would refuse is unusable
input (exit 2) naming file, line, object and field, because any verdict over a cluster that
cannot exist would be a guess. Other plugins' policy kinds (CiliumNetworkPolicy, Calico's
GlobalNetworkPolicy, Antrea's ClusterNetworkPolicy, ...) also change what traffic flows, and
the engine does not evaluate them: they are recorded on the view so every answer can say so.
"""
from __future__ import annotations

from typing import Iterable, Mapping

from webhook.bounded_text import MESSAGE_MAX_CHARS, shown, shown_path
from webhook.cluster.files import Document, InputError
from webhook.cluster.view import ClusterView
from webhook.policy.parse_admin import is_admin_kind, parse_admin_policy


def add_admin_policies(view: ClusterView, docs: Iterable[Document]) -> None:
    """Parse every admin policy and put it into the view (InputError on the first invalid one);
    count the other policy kinds in view.not_evaluated."""
    seen: dict[str, Document] = {}
    for doc in docs:
        if not is_admin_kind(doc.obj):
            label = f"{shown(doc.kind)} ({shown(doc.obj.get('apiVersion'))})"  # printed in a note
            view.not_evaluated[label] = view.not_evaluated.get(label, 0) + 1
            continue
        origin = doc.origin()
        result = parse_admin_policy(doc.obj, origin=origin)
        if not result.ok:
            err = result.errors[0]
            more = f" (and {len(result.errors) - 1} more)" if len(result.errors) > 1 else ""
            raise InputError(doc.file, f"{doc.kind} {_name(doc.obj)} is invalid (the API server would refuse "
                                       f"it): {shown(err, MESSAGE_MAX_CHARS)}{more}",
                             origin.line_of(str(err.path)))
        policy = result.policy
        earlier = seen.get(policy.key)
        if earlier is not None and earlier.obj != doc.obj:
            # Cluster-scoped: two different objects of one name cannot both exist.
            where = shown_path(earlier.file) + (f":{earlier.line}" if earlier.line else "")
            raise InputError(doc.file, f"{policy.kind} {shown(policy.name)} is given twice with different contents "
                                       f"(also at {where}); a cluster holds one object per name", doc.line)
        seen[policy.key] = doc
        view.upsert_admin_policy(policy)


def _name(obj: Mapping) -> str:
    meta = obj.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    return shown(name) if name else "?"


def admin_counts(view: ClusterView) -> dict[str, int]:
    """AdminNetworkPolicy / BaselineAdminNetworkPolicy / ClusterNetworkPolicy -> how many the view
    holds (none: {})."""
    counts: dict[str, int] = {}
    for p in view.admin_policies():
        counts[p.kind] = counts.get(p.kind, 0) + 1
    return dict(sorted(counts.items()))


def admin_note(counts: Mapping[str, int], tool: str = "these checks") -> str:
    """What findings over NetworkPolicies mean when admin policies are in view."""
    held = " and ".join(f"{n} {kind if n == 1 else kind[:-1] + 'ies'}" for kind, n in counts.items())
    return (f"{held} in view: on clusters whose network plugin implements them the admin tier "
            f"decides before NetworkPolicies (and the baseline after), and {tool} look at "
            "NetworkPolicies alone (an admin Allow or Deny can override what a finding says); "
            "`netpol-guard simulate` evaluates them")
