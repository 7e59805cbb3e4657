"""Admission guards for isolation, on /validate. Pure functions of (request, view, config);
register() adds them to the admission handler registry (idempotent; the app calls it once).

- guard_managed_policy: UPDATE or DELETE of a managed policy (labeled managed-by
  netpol-guard) in a namespace that carries the isolate label is denied to everyone but
  config.isolation.controllerUsers, with the way to change isolation instead (unless the
  namespace is being deleted: its controller must empty it). An UPDATE
  that leaves the spec, our label and our annotations as they were (a GitOps tool
  adding its tracking label, an identical re-apply) is allowed.
- guard_namespace: a Namespace whose isolate label has an unknown value is denied with
  the allowed values; removing the label is allowed with a warning saying what follows.
- gate_pod (config.isolation.gatePods): Pod CREATE in a namespace labeled for isolation
  whose managed default-deny is not in the view yet is denied with a retryable message,
  so no pod ever runs there unprotected. The chart sends only pods of namespaces that
  carry the label key, so an unknown namespace here is one too new for the view.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

from webhook.admission.handlers import HandlerContext, register_handler
from webhook.admission.response import Decision, allow, deny, short
from webhook.admission.review import NETWORK_POLICY, AdmissionRequest, GroupVersionKind
from webhook.cluster.view import ClusterView
from webhook.config import Config
from webhook.isolation.desired import (DEFAULT_DENY, DESCRIPTION_KEY, MANAGED_BY_KEY, MANAGED_BY_VALUE,
                                       MODE_ANNOTATION, MODES, drifted, is_managed)

NAMESPACE = GroupVersionKind("", "v1", "Namespace")
POD = GroupVersionKind("", "v1", "Pod")


def _labels(obj: Optional[Mapping[str, Any]]) -> Mapping[str, str]:
    return ((obj or {}).get("metadata") or {}).get("labels") or {}


def _ours_only(obj: Mapping[str, Any]) -> dict:
    """The parts of a managed policy the controller owns, shaped for drifted()."""
    meta = obj.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    return {"spec": obj.get("spec"),
            "metadata": {"labels": {MANAGED_BY_KEY: (meta.get("labels") or {}).get(MANAGED_BY_KEY)},
                         "annotations": {k: annotations.get(k) for k in (DESCRIPTION_KEY, MODE_ANNOTATION)}}}


def how_to_change(namespace: str, key: str) -> str:
    return (f"To change isolation, change the namespace label (kubectl label namespace {namespace} "
            f"{key}=ingress --overwrite; one of {', '.join(MODES)}) or remove it (kubectl label namespace "
            f"{namespace} {key}-); to allow traffic, add your own NetworkPolicy next to the managed ones.")


def check_managed_policy(request: AdmissionRequest, view: ClusterView, config: Config) -> Decision:
    old = request.old_object
    if old is None or not is_managed(old):
        return allow()
    if request.user.username in config.isolation.controllerUsers:
        return allow()
    key = config.isolation.labelKey
    ns = view.namespace(request.namespace)
    value = (ns.labels if ns is not None else {}).get(key)
    if value is None:
        return allow()  # not (or no longer) isolated: the policy is the user's to change
    if ns is not None and ns.terminating:
        # the namespace controller empties a deleted namespace; refusing it leaves the
        # namespace Terminating for ever (and the controller creates nothing there any more)
        return allow()
    if request.operation == "UPDATE" and request.object is not None \
            and not drifted(request.object, _ours_only(old)):
        return allow()  # only others' labels or annotations changed
    verb = "deleted" if request.operation == "DELETE" else "changed"
    return deny(f"NetworkPolicy {request.namespace}/{request.name} is managed by netpol-guard because namespace "
                f"{request.namespace} is labeled {key}={value}; it cannot be {verb} by hand (the controller "
                f"would restore it). {how_to_change(request.namespace, key)}")


def check_namespace(request: AdmissionRequest, view: ClusterView, config: Config) -> Decision:
    key = config.isolation.labelKey
    new_value = _labels(request.object).get(key)
    name = request.name or ((request.object or {}).get("metadata") or {}).get("name", "")
    if new_value is not None and new_value not in MODES:
        old_value = _labels(request.old_object).get(key)
        if request.operation == "UPDATE" and old_value == new_value:
            return allow()  # a pre-existing bad value must not block unrelated edits
        return deny(f"namespace {name}: label {key}={new_value!r} is not an isolation mode; "
                    f"use one of: {', '.join(MODES)} (or remove the label for no isolation)")
    if request.operation == "UPDATE" and new_value is None and _labels(request.old_object).get(key) is not None:
        if config.isolation.onLabelRemoved == "keep":
            what = "its managed policies stay but are no longer maintained"
        else:
            what = "netpol-guard deletes its default-deny and DNS policies"
        return Decision(warnings=(short(f"removing {key} from namespace {name}: {what}"),))
    return allow()


def check_pod(request: AdmissionRequest, view: ClusterView, config: Config) -> Decision:
    if not config.isolation.gatePods or request.operation != "CREATE" or request.sub_resource:
        return allow()
    key = config.isolation.labelKey
    ns = view.namespace(request.namespace)
    if ns is not None:
        value = ns.labels.get(key)
        if value not in MODES:
            return allow()  # unlabeled, or a value nothing will be created for: never block forever
        policy = view.policy(request.namespace, DEFAULT_DENY)
        if policy is not None and policy.labels.get(MANAGED_BY_KEY) == MANAGED_BY_VALUE:
            return allow()
        why = (f"namespace {request.namespace} is labeled {key}={value} but its default-deny policy "
               f"{DEFAULT_DENY} does not exist yet")
    else:
        why = f"namespace {request.namespace} is not yet known to netpol-guard"
    return deny(f"{why}; netpol-guard admits no pod there until the namespace is protected. This is temporary: "
                "retry in a few seconds (Deployments, StatefulSets, DaemonSets and Jobs retry by themselves). "
                "If it persists, check that the netpol-guard controller is running and leading "
                "(kubectl -n netpol-guard get pods,leases).")


# --- registry adapters: (request, HandlerContext) -> Decision ---------------------------------

def guard_managed_policy(request: AdmissionRequest, ctx: HandlerContext) -> Decision:
    return check_managed_policy(request, ctx.view, ctx.config)


def guard_namespace(request: AdmissionRequest, ctx: HandlerContext) -> Decision:
    return check_namespace(request, ctx.view, ctx.config)


def gate_pod(request: AdmissionRequest, ctx: HandlerContext) -> Decision:
    return check_pod(request, ctx.view, ctx.config)


_GUARDS = (
    # exemptions=False for the policy guard: it must see every write to the objects the
    # controller owns (an exempt user can still remove the namespace label, the documented way out).
    (NETWORK_POLICY, ("UPDATE", "DELETE"), guard_managed_policy, False),
    (NAMESPACE, ("CREATE", "UPDATE"), guard_namespace, True),
    (POD, ("CREATE",), gate_pod, True),
)


def register() -> None:
    """Add the isolation guards to /validate; calling it again changes nothing."""
    from webhook.admission.handlers import handlers_for

    for kind, operations, fn, exemptions in _GUARDS:
        if any(r.fn is fn for r in handlers_for("validate", kind, operations[0])):
            continue
        register_handler(kind, operations, fn, endpoint="validate", exemptions=exemptions)
