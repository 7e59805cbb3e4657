"""Namespace CREATE and UPDATE on /validate: the labels that switch netpol-guard off
(netpol-guard.io/ignore) or on (the isolate label, config.isolation.labelKey) for a whole
namespace may be added, changed or removed only by the identities in config.namespaceLabels.

Without this guard, anyone who may label a namespace could take it out of every check
(the webhook configurations' namespaceSelector leaves out ignore=true) or drop its
default-deny baseline. The guard ignores exemptUsers/exemptGroups: those say whose
NetworkPolicies go unchecked, not who may switch the checks off for others.

The chart sends a Namespace here only when it carries one of the two label keys before
or after the change (objectSelector), so edits of other namespaces never wait for us, and
requests from the break-glass group never leave the API server (matchConditions, where
the API server has them). The in-process check below is what older API servers rely on.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

from webhook.admission.handlers import HandlerContext, register_handler
from webhook.admission.response import Decision, allow, deny
from webhook.admission.review import AdmissionRequest, GroupVersionKind
from webhook.config import IGNORE_LABEL, Config

NAMESPACE = GroupVersionKind("", "v1", "Namespace")


def _labels(obj: Optional[Mapping[str, Any]]) -> Mapping[str, str]:
    return ((obj or {}).get("metadata") or {}).get("labels") or {}


def guarded_keys(config: Config) -> tuple[str, ...]:
    return (IGNORE_LABEL, config.isolation.labelKey)


def _change(key: str, old: Optional[str], new: Optional[str]) -> str:
    if old is None:
        return f"add {key}={new}"
    if new is None:
        return f"remove {key} (was {old})"
    return f"change {key} from {old} to {new}"


def check_namespace_labels(request: AdmissionRequest, config: Config) -> Decision:
    old = _labels(request.old_object) if request.operation == "UPDATE" else {}
    new = _labels(request.object)
    changes = [_change(k, old.get(k), new.get(k)) for k in guarded_keys(config) if old.get(k) != new.get(k)]
    if not changes or config.namespaceLabels.allows(request.user.username, request.user.groups):
        return allow()
    name = request.name or ((request.object or {}).get("metadata") or {}).get("name", "")
    who = request.user.username or "this user"
    allowed = config.namespaceLabels
    may = [f"users {', '.join(allowed.allowedUsers)}"] if allowed.allowedUsers else []
    may += [f"groups {', '.join(allowed.allowedGroups)}"] if allowed.allowedGroups else []
    escape = (f"; in an emergency, an administrator may act as the break-glass group "
              f"(kubectl ... --as=$USER --as-group={allowed.breakGlassGroup})") if allowed.breakGlassGroup else ""
    return deny(f"namespace {name}: {who} may not {' and '.join(changes)}: these labels switch netpol-guard's "
                f"checks or isolation for the whole namespace and only {' or '.join(may) or 'nobody'} may change "
                f"them (config namespaceLabels){escape}")


def guard_namespace_labels(request: AdmissionRequest, ctx: HandlerContext) -> Decision:
    return check_namespace_labels(request, ctx.config)


# exemptions=False: an exempt user's policies go unchecked, but the user may not exempt namespaces.
register_handler(NAMESPACE, ("CREATE", "UPDATE"), guard_namespace_labels, endpoint="validate", exemptions=False)
