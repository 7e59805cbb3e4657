"""The resource types the stand-in serves, and how URL paths map onto them.

Only the handful of types netpol-guard talks to are registered; an unknown path gets
the same 404 the real API server gives for a resource it does not serve.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ResourceType:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool
    has_status: bool = False  # has a /status subresource (main PUT keeps status)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    @property
    def prefix(self) -> str:
        """URL prefix of the group/version: /api/v1 or /apis/<group>/<version>."""
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"


RESOURCE_TYPES: tuple[ResourceType, ...] = (
    ResourceType("", "v1", "namespaces", "Namespace", False, has_status=True),
    ResourceType("", "v1", "pods", "Pod", True, has_status=True),
    ResourceType("", "v1", "services", "Service", True, has_status=True),
    ResourceType("", "v1", "configmaps", "ConfigMap", True),
    ResourceType("", "v1", "secrets", "Secret", True),
    ResourceType("", "v1", "events", "Event", True),
    ResourceType("events.k8s.io", "v1", "events", "Event", True),
    ResourceType("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True),
    ResourceType("coordination.k8s.io", "v1", "leases", "Lease", True),
    ResourceType("admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations",
                 "ValidatingWebhookConfiguration", False),
    ResourceType("admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations",
                 "MutatingWebhookConfiguration", False),
)

NAMESPACE = RESOURCE_TYPES[0]

_BY_PREFIX_AND_PLURAL = {(rt.prefix, rt.plural): rt for rt in RESOURCE_TYPES}
_BY_API_VERSION_AND_KIND = {(rt.api_version, rt.kind): rt for rt in RESOURCE_TYPES}


def lookup_by_kind(kind: str, api_version: str | None = None) -> ResourceType:
    """Find a type by kind (and apiVersion when the kind alone is ambiguous).

    A bare "Event" means the core/v1 Event; pass api_version="events.k8s.io/v1" for the other.
    """
    if api_version:
        rt = _BY_API_VERSION_AND_KIND.get((api_version, kind))
        if rt is None:
            raise KeyError(f"kube stand-in serves no {api_version} {kind}")
        return rt
    for rt in RESOURCE_TYPES:  # core group first, so "Event" is core/v1
        if rt.kind == kind:
            return rt
    raise KeyError(f"kube stand-in serves no kind {kind!r}; known: "
                   + ", ".join(sorted({rt.kind for rt in RESOURCE_TYPES})))


@dataclass(frozen=True)
class Route:
    """What a request path names."""

    rtype: ResourceType
    namespace: str | None  # the namespace segment of the path (namespaced types only)
    name: str | None  # None for a collection
    subresource: str | None = None  # "status" or None


def parse_path(path: str) -> Route | None:
    """Map /api/v1/... or /apis/<g>/<v>/... onto a Route; None when nothing is served there."""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        prefix, rest = f"/api/{parts[1]}", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        prefix, rest = f"/apis/{parts[1]}/{parts[2]}", parts[3:]
    else:
        return None

    def rt_for(plural: str) -> ResourceType | None:
        return _BY_PREFIX_AND_PLURAL.get((prefix, plural))

    # namespaces/<ns>/<plural>[/<name>[/status]] for namespaced types
    if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] != "status":
        rt = rt_for(rest[2])
        if rt is None or not rt.namespaced or len(rest) > 5:
            return None
        name = rest[3] if len(rest) >= 4 else None
        sub = rest[4] if len(rest) == 5 else None
        if sub is not None and sub != "status":
            return None
        return Route(rt, rest[1], name, sub)
    # <plural>[/<name>[/status]]: cluster-scoped types, or all-namespace lists
    if 1 <= len(rest) <= 3:
        rt = rt_for(rest[0])
        if rt is None:
            return None
        name = rest[1] if len(rest) >= 2 else None
        sub = rest[2] if len(rest) == 3 else None
        if sub is not None and sub != "status":
            return None
        if rt.namespaced and name is not None:
            return None  # a namespaced object needs its namespace in the path
        return Route(rt, None, name, sub)
    return None
