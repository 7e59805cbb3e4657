"""Handlers by kind and operation: a small registry, so new kinds plug in without
touching the dispatcher.

    from webhook.admission.handlers import register_handler
    from webhook.admission.review import GroupVersionKind

    register_handler(GroupVersionKind("", "v1", "Namespace"), ("CREATE", "UPDATE"), my_fn)

``my_fn(request: AdmissionRequest, ctx: HandlerContext) -> Decision`` (see response.py
for the vocabulary). Several handlers may claim the same kind and operation: on
/validate the request is denied if any of them denies and every warning is kept; on
/mutate their JSONPatch operations are concatenated in registration order (each
handler sees the original object, so two mutators must not touch the same field).
A request nobody handles is allowed with no opinion.

Exempt namespaces, users and groups (config) are answered before any handler runs,
unless a handler registers with ``exemptions=False`` (e.g. a guard that must see
every write to the objects it owns). ``mode: warn`` turns every remaining denial into
a warning here, whatever handler produced it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Iterable, Literal

from webhook.admission.response import Decision, allow, combine, short
from webhook.admission.review import AdmissionRequest, GroupVersionKind
from webhook.cluster.source import ViewSource
from webhook.config import Config

log = logging.getLogger(__name__)

Endpoint = Literal["validate", "mutate"]
ENDPOINTS = ("validate", "mutate")


@dataclass(frozen=True)
class HandlerContext:
    """What a handler may use: configuration and the cluster view (never the API server)."""

    config: Config
    source: ViewSource

    @property
    def view(self):
        return self.source.view


Handler = Callable[[AdmissionRequest, HandlerContext], Decision]


@dataclass(frozen=True)
class Registration:
    kind: GroupVersionKind
    operations: frozenset[str]
    fn: Handler
    endpoint: str
    exemptions: bool


_REGISTRY: list[Registration] = []


def register_handler(kind: GroupVersionKind, operations: Iterable[str], fn: Handler, *,
                     endpoint: Endpoint = "validate", exemptions: bool = True) -> Handler:
    """Register fn for (kind, each operation) on an endpoint; returns fn (usable as a decorator body)."""
    from webhook.admission.review import OPERATIONS

    ops = frozenset(operations)
    bad = sorted(ops - set(OPERATIONS))
    if bad or not ops:
        raise ValueError(f"operations must be among {OPERATIONS}, got {sorted(ops)}")
    if endpoint not in ENDPOINTS:
        raise ValueError(f"endpoint must be one of {ENDPOINTS}, got {endpoint!r}")
    reg = Registration(kind, ops, fn, endpoint, exemptions)
    if any(r.kind == kind and r.fn is fn and r.endpoint == endpoint for r in _REGISTRY):
        raise ValueError(f"{getattr(fn, '__name__', fn)} is already registered for {kind} on /{endpoint}")
    _REGISTRY.append(reg)
    return fn


# (endpoint, group, version, kind, operation) -> registrations in order, and the registry it was
# built from. Asked on every review: a scan compared each registration's kind field by field
# (a Python-level __eq__ per entry), ~5% of a review's own cost over sockets. Rebuilt whenever
# the registry differs from the copy (tests restore it in place with `_REGISTRY[:] = ...`).
_INDEX: tuple[list[Registration], dict[tuple[str, ...], tuple[Registration, ...]]] = ([], {})


def _index() -> dict[tuple[str, ...], tuple[Registration, ...]]:
    global _INDEX
    built_from, index = _INDEX
    if built_from != _REGISTRY:  # element identity first: ~0.1 us for a handful of entries
        index = {}
        for r in _REGISTRY:
            for op in r.operations:
                key = (r.endpoint, r.kind.group, r.kind.version, r.kind.kind, op)
                index[key] = index.get(key, ()) + (r,)
        _INDEX = (list(_REGISTRY), index)
    return index


def handlers_for(endpoint: str, kind: GroupVersionKind, operation: str) -> tuple[Registration, ...]:
    """The registrations for (endpoint, kind, operation), in registration order."""
    return _index().get((endpoint, kind.group, kind.version, kind.kind, operation), ())


def exemption(request: AdmissionRequest, config: Config) -> str | None:
    """Why this request is exempt, or None."""
    if request.namespace and request.namespace in config.exemptNamespaces:
        return f"namespace {request.namespace} is exempt"
    if request.user.username and request.user.username in config.exemptUsers:
        return f"user {request.user.username} is exempt"
    groups = config.exemptGroups and set(request.user.groups).intersection(config.exemptGroups)
    if groups:
        return f"group {sorted(groups)[0]} is exempt"
    return None


def _errored(reg: Registration) -> Decision:
    # A bug in one handler must not become an HTTP 500 (the API server would apply
    # failurePolicy to every request); answer like controller-runtime's Errored.
    return Decision(allowed=False, outcome="error",
                    message=f"netpol-guard could not evaluate this request (internal error in "
                            f"{getattr(reg.fn, '__name__', 'a handler')}); see the webhook's log")


def dispatch(endpoint: str, request: AdmissionRequest, ctx: HandlerContext) -> Decision:
    regs = handlers_for(endpoint, request.kind, request.operation)
    if not regs:
        return allow("no-opinion")
    exempt_reason = exemption(request, ctx.config)
    decisions = []
    for reg in regs:
        if reg.exemptions and exempt_reason:
            continue
        try:
            decisions.append(reg.fn(request, ctx))
        except Exception:  # noqa: BLE001 - see _errored
            log.exception("handler %s failed on %s %s uid=%s", getattr(reg.fn, "__name__", reg.fn),
                          request.operation, request.kind, request.uid)
            decisions.append(_errored(reg))
    if not decisions:
        return allow("exempt")
    decision = combine(decisions)
    if not decision.allowed and ctx.config.mode == "warn" and decision.outcome != "error":
        first = decision.message.splitlines()[0] if decision.message else "denied"
        decision = Decision(allowed=True, warnings=(short(f"(would deny) {first}"),) + decision.warnings,
                            findings=decision.findings, patch=decision.patch)
    return decision
