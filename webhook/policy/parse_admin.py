"""Parse AdminNetworkPolicy and BaselineAdminNetworkPolicy (policy.networking.k8s.io/v1alpha1)
and ClusterNetworkPolicy (v1alpha2) into the typed model, validating as the API server does
with the CRDs of kubernetes-sigs/network-policy-api (standard and experimental channels).

Errors carry field paths and the API server's wording, as parse.py does for NetworkPolicies,
so a mistake is reported where it was written instead of surfacing as a verdict nobody can
explain. Unknown fields are errors too: strict field validation refuses them, and a
misspelt `namespace` (for `namespaces`) would otherwise turn a peer into nothing.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Optional

from webhook.bounded_text import quoted
from webhook.policy.errors import ROOT, SPEC, FieldError, Path, frozen_record
from webhook.policy.model import (
    ACCEPT, ADMIN_KIND, ADMIN_TIER, ALLOW, BASELINE_KIND, BASELINE_TIER, CLUSTER_KIND, DENY, EGRESS, INGRESS,
    PASS, PEER_DOMAIN_NAMES, PEER_NAMESPACES, PEER_NETWORKS, PEER_NODES, PEER_PODS, PROTOCOLS, AdminPeer,
    AdminPolicy, AdminPort, AdminRule, Origin,
)
from webhook.policy.parse import _string_map, _unknown, parse_cidr, port_name_problem
from webhook.policy.selectors import MAPPING, _kind, dns_subdomain_problem, parse_selector

API_GROUP = "policy.networking.k8s.io"
API_VERSION = f"{API_GROUP}/v1alpha1"
API_VERSIONS = {ADMIN_KIND: API_VERSION, BASELINE_KIND: API_VERSION, CLUSTER_KIND: f"{API_GROUP}/v1alpha2"}
ADMIN_KINDS = (ADMIN_KIND, BASELINE_KIND, CLUSTER_KIND)
BASELINE_NAME = "default"  # the CRD admits one BaselineAdminNetworkPolicy, named default
MAX_PRIORITY = 1000
# per direction, per rule: v1alpha1 allows 100 rules, peers and ports; v1alpha2 25
MAX_ITEMS = {ADMIN_KIND: 100, BASELINE_KIND: 100, CLUSTER_KIND: 25}
MAX_NETWORKS = MAX_DOMAIN_NAMES = 25
_TIERS = {"Admin": ADMIN_TIER, "Baseline": BASELINE_TIER}
MAX_RULE_NAME = 100
MAX_CIDR_LENGTH = 43
# The CRD's pattern for domainNames: exact names, or '*.' followed by whole labels.
_DOMAIN_RE = re.compile(r"^(\*\.)?([a-zA-z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\.)+[a-zA-z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\.?$")

_TOP_FIELDS = {"apiVersion", "kind", "metadata", "spec", "status"}
_SPEC_FIELDS = {ADMIN_KIND: {"priority", "subject", "ingress", "egress"},
                BASELINE_KIND: {"subject", "ingress", "egress"},
                CLUSTER_KIND: {"tier", "priority", "subject", "ingress", "egress"}}
_ACTIONS = {ADMIN_KIND: (ALLOW, DENY, PASS), BASELINE_KIND: (ALLOW, DENY), CLUSTER_KIND: (ACCEPT, DENY, PASS)}
_SUBJECT_FIELDS = {"namespaces", "pods"}
_NAMESPACED_POD_FIELDS = {"namespaceSelector", "podSelector"}
# v1alpha1 rules match ports with `ports`, v1alpha2 with `protocols`
_PORTS_FIELD = {ADMIN_KIND: "ports", BASELINE_KIND: "ports", CLUSTER_KIND: "protocols"}
# Ingress peers select pods; egress peers may also name nodes and networks (and, in an
# AdminNetworkPolicy only, domain names).
_PEER_FIELDS = {(ADMIN_KIND, INGRESS): (PEER_NAMESPACES, PEER_PODS),
                (BASELINE_KIND, INGRESS): (PEER_NAMESPACES, PEER_PODS),
                (CLUSTER_KIND, INGRESS): (PEER_NAMESPACES, PEER_PODS),
                (ADMIN_KIND, EGRESS): (PEER_NAMESPACES, PEER_PODS, PEER_NODES, PEER_NETWORKS, PEER_DOMAIN_NAMES),
                (BASELINE_KIND, EGRESS): (PEER_NAMESPACES, PEER_PODS, PEER_NODES, PEER_NETWORKS),
                (CLUSTER_KIND, EGRESS): (PEER_NAMESPACES, PEER_PODS, PEER_NODES, PEER_NETWORKS, PEER_DOMAIN_NAMES)}
_PORT_FIELDS = ("portNumber", "namedPort", "portRange")
_PORT_NUMBER_FIELDS = {"protocol", "port"}
_PORT_RANGE_FIELDS = {"protocol", "start", "end"}
_PROTOCOL_FIELDS = ("tcp", "udp", "sctp", "destinationNamedPort")  # v1alpha2
_CNP_PORT_FIELDS = ("number", "range")


@frozen_record
class AdminParseResult:
    policy: Optional[AdminPolicy]
    errors: tuple[FieldError, ...]

    @property
    def ok(self) -> bool:
        return not self.errors


def is_admin_kind(obj: Any) -> bool:
    """An object of this API group that parse_admin_policy reads: ANP, BANP, or a ClusterNetworkPolicy
    of policy.networking.k8s.io (other plugins, such as Antrea, have ClusterNetworkPolicy kinds too)."""
    if not isinstance(obj, MAPPING) or obj.get("kind") not in ADMIN_KINDS:
        return False
    return obj["kind"] != CLUSTER_KIND or str(obj.get("apiVersion", "")).split("/")[0] == API_GROUP


def parse_admin_policy(obj: Any, origin: Origin | None = None) -> AdminParseResult:
    """Parse an AdminNetworkPolicy, BaselineAdminNetworkPolicy or ClusterNetworkPolicy. On any
    error the policy is None: the API server would refuse the object."""
    if not isinstance(obj, MAPPING):
        return AdminParseResult(None, (FieldError(ROOT, "Invalid value",
                                                  f"an admin network policy must be a mapping, got {_kind(obj)}"),))
    kind = obj.get("kind")
    if kind not in ADMIN_KINDS:
        return AdminParseResult(None, (FieldError(Path("kind"), "Unsupported value",
                                                  f"{quoted(kind)}: supported values: "
                                                  + ", ".join(f'"{k}"' for k in ADMIN_KINDS)),))
    errors: list[FieldError] = []
    _unknown(obj, _TOP_FIELDS, ROOT, errors, f"an {kind}" if kind == ADMIN_KIND else f"a {kind}")
    if obj.get("apiVersion") != API_VERSIONS[kind]:
        errors.append(FieldError(Path("apiVersion"), "Unsupported value",
                                 f"{quoted(obj.get('apiVersion'))}: {kind} is served as \"{API_VERSIONS[kind]}\""))
    meta = obj.get("metadata")
    if not isinstance(meta, MAPPING):
        errors.append(FieldError(Path("metadata"), "Required value", "metadata with a name is required"))
        meta = {}
    name = meta.get("name")
    problem = dns_subdomain_problem(name)
    if name is None:
        errors.append(FieldError(Path("metadata.name"), "Required value", "name is required"))
    elif problem:
        errors.append(FieldError(Path("metadata.name"), "Invalid value", problem))
    elif kind == BASELINE_KIND and name != BASELINE_NAME:
        errors.append(FieldError(Path("metadata.name"), "Invalid value",
                                 f"{quoted(name)}: Only one baseline admin network policy with metadata.name=\"default\" "
                                 "can be created in the cluster"))
    _string_map(meta.get("labels"), Path("metadata.labels"), errors, labels=True)

    spec = obj.get("spec")
    if spec is None:
        errors.append(FieldError(SPEC, "Required value", f"an {kind} needs a spec with a subject"))
        spec = {}
    elif not isinstance(spec, MAPPING):
        errors.append(FieldError(SPEC, "Invalid value", f"must be a mapping, got {_kind(spec)}"))
        spec = {}
    else:
        _unknown(spec, _SPEC_FIELDS[kind], SPEC, errors, "spec")
    priority = _parse_priority(spec, errors) if kind != BASELINE_KIND and spec else None
    tier = _parse_tier(spec, errors) if kind == CLUSTER_KIND and spec else (
        BASELINE_TIER if kind == BASELINE_KIND else ADMIN_TIER)
    subject = _parse_subject(kind, spec.get("subject"), SPEC.child("subject"), errors) if spec else None
    if spec and "subject" not in spec:
        errors.append(FieldError(SPEC.child("subject"), "Required value",
                                 "subject is required: `namespaces: {}` selects every pod of every namespace"))
    ingress = _parse_rules(kind, spec, INGRESS, errors)
    egress = _parse_rules(kind, spec, EGRESS, errors)
    if errors or subject is None:
        return AdminParseResult(None, tuple(errors))
    ns_sel, pod_sel = subject
    return AdminParseResult(AdminPolicy(kind=kind, name=str(name), namespace_selector=ns_sel, pod_selector=pod_sel,
                                        priority=priority, ingress=ingress, egress=egress, tier=tier, raw=obj,
                                        origin=origin), ())


def _parse_tier(spec: Mapping, errors: list[FieldError]) -> str:
    raw = spec.get("tier")
    path = SPEC.child("tier")
    if raw is None:
        errors.append(FieldError(path, "Required value", 'tier is required: "Admin" or "Baseline"'))
    elif raw not in _TIERS:
        errors.append(FieldError(path, "Unsupported value",
                                 f'{quoted(raw)}: supported values: "Admin", "Baseline" (case-sensitive)'))
    return _TIERS.get(raw, ADMIN_TIER)


def _parse_priority(spec: Mapping, errors: list[FieldError]) -> Optional[int]:
    path = SPEC.child("priority")
    raw = spec.get("priority")
    if raw is None:
        errors.append(FieldError(path, "Required value",
                                 f"priority is required: 0 to {MAX_PRIORITY}, lower numbers are evaluated first"))
        return None
    if isinstance(raw, bool) or not isinstance(raw, int):
        errors.append(FieldError(path, "Invalid value", f"must be a number from 0 to {MAX_PRIORITY}, got {_kind(raw)}"))
        return None
    if not 0 <= raw <= MAX_PRIORITY:
        errors.append(FieldError(path, "Invalid value", f"{raw}: must be between 0 and {MAX_PRIORITY}, inclusive"))
        return None
    return raw


def _exactly_one(obj: Mapping, allowed: tuple[str, ...] | set[str], path: Path, errors: list[FieldError],
                 what: str) -> Optional[str]:
    """The one field of `allowed` set in `obj` (the CRDs' MinProperties=MaxProperties=1)."""
    present = [k for k in obj if k in allowed and obj[k] is not None]
    if len(present) == 1:
        return present[0]
    listed = ", ".join(sorted(allowed))
    if not present:
        errors.append(FieldError(path, "Required value", f"{what} must set exactly one of: {listed}"))
    else:
        errors.append(FieldError(path, "Forbidden", f"{what} must set exactly one of {listed}; "
                                                    f"it sets {', '.join(present)}"))
    return None


def _mapping(raw: Any, path: Path, errors: list[FieldError], what: str) -> Optional[Mapping]:
    if not isinstance(raw, MAPPING):
        errors.append(FieldError(path, "Invalid value", f"{what} must be a mapping, got {_kind(raw)}"))
        return None
    return raw


def _parse_namespaced_pod(kind: str, raw: Any, path: Path, errors: list[FieldError]):
    """`pods: {namespaceSelector, podSelector}`: both required in v1alpha1, podSelector in
    v1alpha2 (`{}` selects every one)."""
    m = _mapping(raw, path, errors, "pods")
    if m is None:
        return None
    _unknown(m, _NAMESPACED_POD_FIELDS, path, errors, "pods")
    ok = True
    for key in ("podSelector",) if kind == CLUSTER_KIND else ("namespaceSelector", "podSelector"):
        if m.get(key) is None:
            errors.append(FieldError(path.child(key), "Required value",
                                     f"{key} is required (`{key}: {{}}` selects every one)"))
            ok = False
    before = len(errors)
    ns_sel = parse_selector(m.get("namespaceSelector"), path.child("namespaceSelector"), errors)
    pod_sel = parse_selector(m.get("podSelector"), path.child("podSelector"), errors)
    return (ns_sel, pod_sel) if ok and len(errors) == before else None


def _parse_subject(kind: str, raw: Any, path: Path, errors: list[FieldError]):
    if raw is None:
        return None
    m = _mapping(raw, path, errors, "subject")
    if m is None:
        return None
    _unknown(m, _SUBJECT_FIELDS, path, errors, "subject")
    which = _exactly_one(m, _SUBJECT_FIELDS, path, errors, "subject")
    if which == "namespaces":
        before = len(errors)
        sel = parse_selector(m["namespaces"], path.child("namespaces"), errors)
        return (sel, None) if len(errors) == before else None
    if which == "pods":
        return _parse_namespaced_pod(kind, m["pods"], path.child("pods"), errors)
    return None


def _parse_rules(kind: str, spec: Mapping, direction: str, errors: list[FieldError]) -> tuple[AdminRule, ...]:
    field_name = direction.lower()
    raw = spec.get(field_name)
    path = SPEC.child(field_name)
    if raw is None:
        return ()
    if not isinstance(raw, list):
        errors.append(FieldError(path, "Invalid value", f"must be a list of rules, got {_kind(raw)}"))
        return ()
    limit = MAX_ITEMS[kind]
    if len(raw) > limit:
        errors.append(FieldError(path, "Too many", f"{len(raw)}: must have at most {limit} items"))
    peers_key = "from" if direction == INGRESS else "to"
    ports_key = _PORTS_FIELD[kind]
    actions = _ACTIONS[kind]
    rule_fields = {"name", "action", peers_key, ports_key}
    rules = []
    for i, r in enumerate(raw):
        rp = path.index(i)
        if not isinstance(r, MAPPING):
            errors.append(FieldError(rp, "Invalid value", f"a rule must be a mapping, got {_kind(r)}"))
            continue
        _unknown(r, rule_fields, rp, errors, f"an {field_name} rule")
        ok = True
        name = r.get("name", "")
        if name is None:
            name = ""
        if not isinstance(name, str):
            errors.append(FieldError(rp.child("name"), "Invalid value", f"must be a string, got {_kind(name)}"))
            ok = False
        elif len(name) > MAX_RULE_NAME:
            errors.append(FieldError(rp.child("name"), "Too long", f"may not be more than {MAX_RULE_NAME} characters"))
            ok = False
        action = r.get("action")
        if action is None:
            errors.append(FieldError(rp.child("action"), "Required value",
                                     "action is required: " + ", ".join(f'"{a}"' for a in actions)))
            ok = False
        elif action not in actions:
            hint = {(BASELINE_KIND, PASS): " (Pass exists only in an AdminNetworkPolicy)",
                    (CLUSTER_KIND, ALLOW): " (v1alpha2 calls it Accept)",
                    (ADMIN_KIND, ACCEPT): " (Accept is v1alpha2's ClusterNetworkPolicy; v1alpha1 says Allow)",
                    (BASELINE_KIND, ACCEPT): " (Accept is v1alpha2's ClusterNetworkPolicy; v1alpha1 says Allow)",
                    }.get((kind, action), "")
            errors.append(FieldError(rp.child("action"), "Unsupported value",
                                     f"{quoted(action)}: supported values: " + ", ".join(f'"{a}"' for a in actions)
                                     + " (case-sensitive)" + hint))
            ok = False
        peers = _parse_peers(kind, direction, r.get(peers_key), rp.child(peers_key), errors)
        has_ports = r.get(ports_key) is not None  # `ports: null` is left out, as the API server does
        parse_ports = _parse_protocols if kind == CLUSTER_KIND else _parse_ports
        ports = parse_ports(r[ports_key], rp.child(ports_key), errors, limit) if has_ports else None
        if peers is None or (ports is None and has_ports):
            ok = False
        elif ports and any(p.name is not None for p in ports) and any(
                p.kind in (PEER_NETWORKS, PEER_NODES, PEER_DOMAIN_NAMES) for p in peers):
            errors.append(FieldError(rp, "Invalid value",
                                     "networks/nodes/domainNames peer cannot be set with namedPorts since there "
                                     "are no namedPorts for networks/nodes/domainNames"))
            ok = False
        if ok:
            rules.append(AdminRule(direction=direction, index=i, action=action, peers=peers, ports=ports,
                                   name=name))
    return tuple(rules)


def _parse_peers(kind: str, direction: str, raw: Any, path: Path,
                 errors: list[FieldError]) -> Optional[tuple[AdminPeer, ...]]:
    if raw is None or raw == []:
        # Unlike a NetworkPolicy's, an admin rule without peers is refused, not "everyone".
        errors.append(FieldError(path, "Required value",
                                 f"{path.text.rsplit('.', 1)[-1]} must list at least one peer "
                                 "(`namespaces: {}` for every pod in the cluster)"))
        return None
    if not isinstance(raw, list):
        errors.append(FieldError(path, "Invalid value", f"must be a list of peers, got {_kind(raw)}"))
        return None
    if len(raw) > MAX_ITEMS[kind]:
        errors.append(FieldError(path, "Too many", f"{len(raw)}: must have at most {MAX_ITEMS[kind]} items"))
    allowed = _PEER_FIELDS[(kind, direction)]
    out = []
    ok = True
    for i, p in enumerate(raw):
        pp = path.index(i)
        before = len(errors)
        m = _mapping(p, pp, errors, "a peer")
        if m is None:
            ok = False
            continue
        _unknown(m, set(allowed), pp, errors, f"an {direction.lower()} peer")
        which = _exactly_one(m, allowed, pp, errors, "a peer")
        peer = _parse_peer(kind, which, m.get(which), i, pp.child(which), errors) if which else None
        if peer is None or len(errors) != before:
            ok = False
            continue
        out.append(peer)
    return tuple(out) if ok else None


def _parse_peer(kind: str, which: str, raw: Any, index: int, path: Path,
                errors: list[FieldError]) -> Optional[AdminPeer]:
    if which == PEER_NAMESPACES:
        return AdminPeer(index, which, namespace_selector=parse_selector(raw, path, errors))
    if which == PEER_NODES:
        return AdminPeer(index, which, node_selector=parse_selector(raw, path, errors))
    if which == PEER_PODS:
        sels = _parse_namespaced_pod(kind, raw, path, errors)
        return AdminPeer(index, which, namespace_selector=sels[0], pod_selector=sels[1]) if sels else None
    limit = MAX_NETWORKS if which == PEER_NETWORKS else MAX_DOMAIN_NAMES
    if not isinstance(raw, list) or not raw:
        errors.append(FieldError(path, "Invalid value" if not isinstance(raw, list) else "Required value",
                                 f"must be a list of 1 to {limit} items, got "
                                 + (_kind(raw) if not isinstance(raw, list) else "an empty list")))
        return None
    if len(raw) > limit:
        errors.append(FieldError(path, "Too many", f"{len(raw)}: must have at most {limit} items"))
        return None
    if which == PEER_NETWORKS:
        nets = []
        for j, cidr in enumerate(raw):
            net = parse_cidr(cidr) if isinstance(cidr, str) and len(cidr) <= MAX_CIDR_LENGTH else None
            if net is None:
                errors.append(FieldError(path.index(j), "Invalid value",
                                         f"{quoted(cidr)}: Invalid CIDR format provided (e.g. 10.0.0.0/8 or fd00::/8)"))
                continue
            nets.append(net)
        return AdminPeer(index, which, networks=tuple(nets)) if len(nets) == len(raw) else None
    names = []
    for j, dn in enumerate(raw):
        if not isinstance(dn, str) or not _DOMAIN_RE.match(dn):
            errors.append(FieldError(path.index(j), "Invalid value",
                                     f"{quoted(dn)}: must be a domain name such as example.com or *.example.com"))
            continue
        names.append(dn)
    return AdminPeer(index, which, domain_names=tuple(names)) if len(names) == len(raw) else None


def _port_number(raw: Any, path: Path, errors: list[FieldError]) -> Optional[int]:
    if raw is None:
        errors.append(FieldError(path, "Required value", "a port number (1-65535) is required"))
        return None
    if isinstance(raw, bool) or not isinstance(raw, int):
        errors.append(FieldError(path, "Invalid value", f"must be a port number, got {_kind(raw)}"
                                 + (" (namedPort takes a name)" if isinstance(raw, str) else "")))
        return None
    if not 1 <= raw <= 65535:
        errors.append(FieldError(path, "Invalid value", f"{raw}: must be between 1 and 65535, inclusive"))
        return None
    return raw


def _protocol(m: Mapping, path: Path, errors: list[FieldError]) -> Optional[str]:
    proto = m.get("protocol")
    if proto is None or proto == "":
        return "TCP"  # the CRD's default
    if proto not in PROTOCOLS:
        errors.append(FieldError(path.child("protocol"), "Unsupported value",
                                 f"{quoted(proto)}: supported values: \"SCTP\", \"TCP\", \"UDP\" (upper case)"))
        return None
    return proto


def _port_list(raw: Any, path: Path, errors: list[FieldError], limit: int) -> bool:
    if not isinstance(raw, list) or not raw:
        errors.append(FieldError(path, "Invalid value" if not isinstance(raw, list) else "Required value",
                                 f"must be a list of 1 to {limit} items, got "
                                 + (_kind(raw) if not isinstance(raw, list) else "an empty list")
                                 + f"; leave `{path.text.rsplit('.', 1)[-1]}` out to match every port"))
        return False
    if len(raw) > limit:
        errors.append(FieldError(path, "Too many", f"{len(raw)}: must have at most {limit} items"))
    return True


def _parse_ports(raw: Any, path: Path, errors: list[FieldError], limit: int) -> Optional[tuple[AdminPort, ...]]:
    """v1alpha1 `ports`: each one of portNumber, portRange, namedPort."""
    if not _port_list(raw, path, errors, limit):
        return None
    out = []
    before = len(errors)
    for i, p in enumerate(raw):
        pp = path.index(i)
        m = _mapping(p, pp, errors, "a port")
        if m is None:
            continue
        _unknown(m, set(_PORT_FIELDS), pp, errors, "a port")
        which = _exactly_one(m, _PORT_FIELDS, pp, errors, "a port")
        wp = pp.child(which) if which else pp
        if which == "namedPort":
            name = m["namedPort"]
            problem = (port_name_problem(name) if isinstance(name, str)
                       else f"must be a container port name, got {_kind(name)}")
            if problem:
                errors.append(FieldError(wp, "Invalid value", problem))
            else:
                out.append(AdminPort(index=i, name=name))
        elif which in ("portNumber", "portRange"):
            sub = _mapping(m[which], wp, errors, which)
            if sub is None:
                continue
            _unknown(sub, _PORT_NUMBER_FIELDS if which == "portNumber" else _PORT_RANGE_FIELDS, wp, errors, which)
            proto = _protocol(sub, wp, errors)
            if which == "portNumber":
                number = _port_number(sub.get("port"), wp.child("port"), errors)
                if proto and number:
                    out.append(AdminPort(index=i, protocol=proto, port=number))
                continue
            start = _port_number(sub.get("start"), wp.child("start"), errors)
            end = _port_number(sub.get("end"), wp.child("end"), errors)
            if start and end and start >= end:
                errors.append(FieldError(wp.child("end"), "Invalid value",
                                         f"{end}: the End value must be greater than Start ({start}); "
                                         "use portNumber for one port"))
            elif proto and start and end:
                out.append(AdminPort(index=i, protocol=proto, port=start, end_port=end))
    return tuple(out) if len(errors) == before else None


def _parse_protocols(raw: Any, path: Path, errors: list[FieldError],
                     limit: int) -> Optional[tuple[AdminPort, ...]]:
    """v1alpha2 `protocols`: each one of tcp/udp/sctp (with a destinationPort: a number or a
    range) or destinationNamedPort."""
    if not _port_list(raw, path, errors, limit):
        return None
    out = []
    before = len(errors)
    for i, p in enumerate(raw):
        pp = path.index(i)
        m = _mapping(p, pp, errors, "a protocol")
        if m is None:
            continue
        _unknown(m, set(_PROTOCOL_FIELDS), pp, errors, "a protocol")
        which = _exactly_one(m, _PROTOCOL_FIELDS, pp, errors, "a protocol")
        if which is None:
            continue
        wp = pp.child(which)
        if which == "destinationNamedPort":
            name = m[which]
            problem = (port_name_problem(name) if isinstance(name, str)
                       else f"must be a container port name, got {_kind(name)}")
            if problem:
                errors.append(FieldError(wp, "Invalid value", problem))
            else:
                out.append(AdminPort(index=i, name=name))
            continue
        body = _mapping(m[which], wp, errors, which)
        if body is None:
            continue
        _unknown(body, {"destinationPort"}, wp, errors, which)
        dp = body.get("destinationPort")
        if dp is None:
            errors.append(FieldError(wp.child("destinationPort"), "Required value",
                                     f"{which} needs a destinationPort (a number or a range); leave the protocol "
                                     "out of `protocols` to match every port"))
            continue
        dpp = wp.child("destinationPort")
        dpm = _mapping(dp, dpp, errors, "destinationPort")
        if dpm is None:
            continue
        _unknown(dpm, set(_CNP_PORT_FIELDS), dpp, errors, "destinationPort")
        kind = _exactly_one(dpm, _CNP_PORT_FIELDS, dpp, errors, "destinationPort")
        proto = which.upper()
        if kind == "number":
            number = _port_number(dpm["number"], dpp.child("number"), errors)
            if number:
                out.append(AdminPort(index=i, protocol=proto, port=number))
        elif kind == "range":
            rp = dpp.child("range")
            rng = _mapping(dpm["range"], rp, errors, "range")
            if rng is None:
                continue
            _unknown(rng, {"start", "end"}, rp, errors, "range")
            start = _port_number(rng.get("start"), rp.child("start"), errors)
            end = _port_number(rng.get("end"), rp.child("end"), errors)
            if start and end and start >= end:
                errors.append(FieldError(rp, "Invalid value", f"Start port must be less than End port "
                                                              f"(start {start}, end {end}); use number for one port"))
            elif start and end:
                out.append(AdminPort(index=i, protocol=proto, port=start, end_port=end))
    return tuple(out) if len(errors) == before else None


__all__ = ["API_VERSION", "ADMIN_KINDS", "AdminParseResult", "is_admin_kind", "parse_admin_policy"]
