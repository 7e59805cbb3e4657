"""Parse a NetworkPolicy mapping into the typed model, validating as the API server does.

Field paths and wording follow k8s.io/kubernetes pkg/apis/networking/validation so that
`lint` says what `kubectl apply` would say, before anything reaches a cluster. Unknown
fields are reported too: kubectl's strict field validation refuses them, and a misspelt
`namespaceSelectors` silently dropped by a lenient client turns a peer into "everyone".
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping  # not typing.Mapping: isinstance() against the alias costs twice as much
from functools import lru_cache
from typing import Any, Optional

from webhook.bounded_text import quoted
from webhook.policy.errors import ROOT, SPEC, FieldError, Path, frozen_record
from webhook.policy.limits import size_problems
from webhook.policy.model import (
    EGRESS, INGRESS, PROTOCOLS, IPBlock, NetworkPolicy, Origin, Peer, PortSpec, Rule,
)
from webhook.policy.selectors import (
    EVERYTHING, MAPPING, _kind, dns_label_problem, dns_subdomain_problem, label_key_problem,
    label_value_problem, parse_selector,
)

API_VERSION = "networking.k8s.io/v1"
_PORT_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")

_TOP_FIELDS = {"apiVersion", "kind", "metadata", "spec", "status"}
_SPEC_FIELDS = {"podSelector", "ingress", "egress", "policyTypes"}
_RULE_FIELDS = {INGRESS: {"from", "ports"}, EGRESS: {"to", "ports"}}
_PEER_FIELDS = {"podSelector", "namespaceSelector", "ipBlock"}
_PORT_FIELDS = {"protocol", "port", "endPort"}
_IPBLOCK_FIELDS = {"cidr", "except"}

# Paths every parse passes down, built once (Path objects are only read when reporting an error).
_LABELS = Path("metadata.labels")
_ANNOTATIONS = Path("metadata.annotations")
_POD_SELECTOR = SPEC.child("podSelector")
_POLICY_TYPES = SPEC.child("policyTypes")
_RULE_LISTS = {INGRESS: SPEC.child("ingress"), EGRESS: SPEC.child("egress")}


@frozen_record
class ParseResult:
    policy: Optional[NetworkPolicy]
    errors: tuple[FieldError, ...]

    @property
    def ok(self) -> bool:
        return not self.errors


def port_name_problem(name: str) -> str | None:
    """IANA_SVC_NAME: 1-15 lowercase alphanumerics or '-', at least one letter, no '--'."""
    if len(name) > 15:
        return f"{quoted(name)}: a port name must be no more than 15 characters"
    if not _PORT_NAME_RE.match(name):
        return (f"{quoted(name)}: a port name must contain only lowercase alphanumerics and '-', "
                "starting and ending with an alphanumeric")
    if "--" in name:
        return f"{quoted(name)}: a port name must not contain consecutive hyphens"
    if not any(c.isalpha() for c in name):
        return f"{quoted(name)}: a port name must contain at least one letter"
    return None


UNKNOWN_FIELDS_SHOWN = 20  # per mapping; the rest are counted in one more error


def _unknown(obj: Mapping, allowed: set[str], path: Path, errors: list[FieldError], what: str) -> None:
    unknown = [key for key in obj if key not in allowed]
    for key in unknown[:UNKNOWN_FIELDS_SHOWN]:
        hint = _closest(str(key), allowed)
        extra = f" (did you mean {hint!r}?)" if hint else ""
        errors.append(FieldError(path.child(str(key)), "Unknown field",
                                 f"{what} has no field {quoted(key)}{extra}; "
                                 f"known fields: {', '.join(sorted(allowed))}"))
    if len(unknown) > UNKNOWN_FIELDS_SHOWN:
        # Each suggestion is a difflib search (~20 us): 60,000 unknown keys in one mapping
        # cost a review over a second. The object is refused either way.
        errors.append(FieldError(path, "Unknown field", f"and {len(unknown) - UNKNOWN_FIELDS_SHOWN:,} more "
                                 f"unknown fields in {what}"))


def _closest(word: str, options: set[str]) -> str | None:
    import difflib
    low = {o.lower(): o for o in options}
    if word.lower() in low:
        return low[word.lower()]
    m = difflib.get_close_matches(word, list(options), n=1, cutoff=0.75)
    return m[0] if m else None


def _string_map(obj: Any, path: Path, errors: list[FieldError], labels: bool) -> dict[str, str]:
    if obj is None:
        return {}
    if not isinstance(obj, MAPPING):
        errors.append(FieldError(path, "Invalid value", f"must be a mapping, got {_kind(obj)}"))
        return {}
    out: dict[str, str] = {}
    for k, v in obj.items():
        if labels:
            problem = label_key_problem(k) or label_value_problem(v)
            if problem:
                errors.append(FieldError(path.child(str(k)), "Invalid value", problem))
                continue
        elif not isinstance(v, str):
            errors.append(FieldError(path.child(str(k)), "Invalid value",
                                     f"annotation values must be strings, got {_kind(v)} (quote it)"))
            continue
        out[str(k)] = v
    return out


def parse_policy(obj: Any, default_namespace: str = "default",
                 origin: Origin | None = None) -> ParseResult:
    """Parse a NetworkPolicy object. On any error the policy is None: the API server would refuse it,
    or (errors of kind limits.TOO_LARGE, the only ones then) it is too large for netpol-guard to judge."""
    errors: list[FieldError] = []
    if not isinstance(obj, MAPPING):
        return ParseResult(None, (FieldError(ROOT, "Invalid value",
                                             f"a NetworkPolicy must be a mapping, got {_kind(obj)}"),))
    too_large = size_problems(obj)  # before any per-item work: see webhook/policy/limits.py
    if too_large:
        return ParseResult(None, too_large)
    _unknown(obj, _TOP_FIELDS, ROOT, errors, "a NetworkPolicy")
    if obj.get("apiVersion") != API_VERSION:
        errors.append(FieldError(Path("apiVersion"), "Unsupported value",
                                 f"{obj.get('apiVersion')!r}: NetworkPolicy is served as \"{API_VERSION}\""))
    meta = obj.get("metadata")
    if not isinstance(meta, MAPPING):
        errors.append(FieldError(Path("metadata"), "Required value", "metadata with a name is required"))
        meta = {}
    name = meta.get("name")
    if name is None and meta.get("generateName"):
        name = str(meta["generateName"])  # the server completes it; use the prefix for messages
    else:
        problem = dns_subdomain_problem(name)
        if problem:
            errors.append(FieldError(Path("metadata.name"), "Required value" if name is None else "Invalid value",
                                     problem if name is not None else "name or generateName is required"))
    namespace = meta.get("namespace") or default_namespace
    ns_problem = dns_label_problem(namespace)
    if ns_problem:
        errors.append(FieldError(Path("metadata.namespace"), "Invalid value", ns_problem))
    labels = _string_map(meta.get("labels"), _LABELS, errors, labels=True)
    annotations = _string_map(meta.get("annotations"), _ANNOTATIONS, errors, labels=False)

    spec = obj.get("spec")
    if spec is None:
        errors.append(FieldError(SPEC, "Required value", "a NetworkPolicy needs a spec with a podSelector"))
        spec = {}
    elif not isinstance(spec, MAPPING):
        errors.append(FieldError(SPEC, "Invalid value", f"must be a mapping, got {_kind(spec)}"))
        spec = {}
    else:
        _unknown(spec, _SPEC_FIELDS, SPEC, errors, "spec")
    if spec and "podSelector" not in spec:
        errors.append(FieldError(_POD_SELECTOR, "Required value",
                                 "podSelector is required; use `podSelector: {}` to select every pod "
                                 "in the namespace"))
    pod_selector = parse_selector(spec.get("podSelector"), _POD_SELECTOR, errors)

    ingress = _parse_rules(spec, INGRESS, errors)
    egress = _parse_rules(spec, EGRESS, errors)
    policy_types, written = _parse_policy_types(spec, errors)

    if errors:
        return ParseResult(None, tuple(errors))
    policy = NetworkPolicy(
        name=str(name), namespace=str(namespace), pod_selector=pod_selector,
        policy_types=policy_types, ingress=ingress, egress=egress,
        policy_types_written=written,
        ingress_written="ingress" in spec and spec["ingress"] is not None,
        egress_written="egress" in spec and spec["egress"] is not None,
        labels=labels, annotations=annotations, raw=obj, origin=origin,
    )
    return ParseResult(policy, ())


def _parse_policy_types(spec: Mapping, errors: list[FieldError]) -> tuple[frozenset[str], bool]:
    raw = spec.get("policyTypes")
    path = _POLICY_TYPES
    if raw is None or raw == []:
        # API server defaulting: Ingress always, Egress when egress rules are present.
        types = {INGRESS}
        if spec.get("egress"):
            types.add(EGRESS)
        return frozenset(types), False
    if not isinstance(raw, list):
        errors.append(FieldError(path, "Invalid value", f"must be a list, got {_kind(raw)}"))
        return frozenset({INGRESS}), True
    if len(raw) > 2:
        errors.append(FieldError(path, "Invalid value", "may not specify more than two policyTypes"))
    out = set()
    for i, t in enumerate(raw):
        if t not in (INGRESS, EGRESS):
            errors.append(FieldError(path.index(i), "Unsupported value",
                                     f"{t!r}: supported values: \"Ingress\", \"Egress\" (case-sensitive)"))
        else:
            out.add(t)
    return frozenset(out), True


def _parse_rules(spec: Mapping, direction: str, errors: list[FieldError]) -> tuple[Rule, ...]:
    field_name = direction.lower()
    raw = spec.get(field_name)
    path = _RULE_LISTS[direction]
    if raw is None:
        return ()
    if not isinstance(raw, list):
        errors.append(FieldError(path, "Invalid value", f"must be a list of rules, got {_kind(raw)}"))
        return ()
    rules = []
    peers_key = "from" if direction == INGRESS else "to"
    for i, r in enumerate(raw):
        rp = path.index(i)
        if r is None:
            r = {}
        if not isinstance(r, MAPPING):
            errors.append(FieldError(rp, "Invalid value", f"a rule must be a mapping, got {_kind(r)}"))
            continue
        _unknown(r, _RULE_FIELDS[direction], rp, errors, f"an {field_name} rule")
        peers = _parse_peers(r.get(peers_key), rp.child(peers_key), errors)
        ports = _parse_ports(r.get("ports"), rp.child("ports"), errors)
        rules.append(Rule(
            direction=direction, index=i, peers=peers, ports=ports,
            peers_written_empty=isinstance(r.get(peers_key), list) and not r.get(peers_key),
            ports_written_empty=isinstance(r.get("ports"), list) and not r.get("ports"),
        ))
    return tuple(rules)


def _parse_peers(raw: Any, path: Path, errors: list[FieldError]) -> tuple[Peer, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        errors.append(FieldError(path, "Invalid value", f"must be a list of peers, got {_kind(raw)}"))
        return ()
    peers = []
    for i, p in enumerate(raw):
        pp = path.index(i)
        if not isinstance(p, MAPPING):
            errors.append(FieldError(pp, "Invalid value", f"a peer must be a mapping, got {_kind(p)}"))
            continue
        _unknown(p, _PEER_FIELDS, pp, errors, "a peer")
        present = [k for k in ("podSelector", "namespaceSelector", "ipBlock") if k in p and p[k] is not None]
        if not present:
            errors.append(FieldError(pp, "Required value",
                                     "must specify a peer (podSelector, namespaceSelector or ipBlock)"))
            continue
        if "ipBlock" in present and len(present) > 1:
            errors.append(FieldError(pp, "Forbidden",
                                     "may not specify both ipBlock and another peer"))
            continue
        pod_sel = parse_selector(p["podSelector"], pp.child("podSelector"), errors) if "podSelector" in present else None
        ns_sel = (parse_selector(p["namespaceSelector"], pp.child("namespaceSelector"), errors)
                  if "namespaceSelector" in present else None)
        block = _parse_ip_block(p["ipBlock"], pp.child("ipBlock"), errors) if "ipBlock" in present else None
        peers.append(Peer(index=i, pod_selector=pod_sel, namespace_selector=ns_sel, ip_block=block))
    return tuple(peers)


def parse_cidr(value: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    if not isinstance(value, str) or "/" not in value:
        return None
    if len(value) > _CIDR_CACHED_LEN:  # no real CIDR is this long: not worth keeping
        return _ip_network(value)
    return _parse_cidr(value)


def _ip_network(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        return None


# ipaddress parses in Python (~5 us a CIDR); clusters write the same few CIDRs (0.0.0.0/0,
# ::/0, 10.0.0.0/8, the metadata /32) in policy after policy. Networks are immutable. Only
# short strings are kept (the longest IPv6 CIDR is 49 characters), so a review full of
# megabyte-long "CIDRs" cannot fill the cache with them.
_CIDR_CACHED_LEN = 64
_parse_cidr = lru_cache(maxsize=1024)(_ip_network)


def _parse_ip_block(raw: Any, path: Path, errors: list[FieldError]) -> IPBlock | None:
    if not isinstance(raw, MAPPING):
        errors.append(FieldError(path, "Invalid value", f"must be a mapping with cidr, got {_kind(raw)}"))
        return None
    _unknown(raw, _IPBLOCK_FIELDS, path, errors, "an ipBlock")
    cidr = raw.get("cidr")
    if cidr is None or cidr == "":
        errors.append(FieldError(path.child("cidr"), "Required value", "an ipBlock needs a cidr"))
        return None
    net = parse_cidr(cidr)
    if net is None:
        errors.append(FieldError(path.child("cidr"), "Invalid value",
                                 f"{cidr!r}: must be a valid CIDR such as 10.0.0.0/8 or 2001:db8::/32"))
        return None
    excepts_raw = raw.get("except") or []
    if not isinstance(excepts_raw, list):
        errors.append(FieldError(path.child("except"), "Invalid value", f"must be a list of CIDRs, got {_kind(excepts_raw)}"))
        return None
    ex_nets = []
    ok = True
    for i, e in enumerate(excepts_raw):
        ep = path.child("except").index(i)
        en = parse_cidr(e)
        if en is None:
            errors.append(FieldError(ep, "Invalid value", f"{e!r}: must be a valid CIDR"))
            ok = False
            continue
        if en.version != net.version:
            errors.append(FieldError(ep, "Invalid value",
                                     f"{e!r}: must be of the same IP family as cidr {cidr!r}"))
            ok = False
            continue
        # strict subset: inside cidr and with a longer prefix
        if not (en.subnet_of(net) and en.prefixlen > net.prefixlen):
            errors.append(FieldError(ep, "Invalid value", f"{e!r}: must be a strict subset of `cidr` {cidr!r}"))
            ok = False
            continue
        ex_nets.append(en)
    if not ok:
        return None
    return IPBlock(cidr=cidr, network=net, excepts=tuple(excepts_raw), except_networks=tuple(ex_nets))


def _parse_ports(raw: Any, path: Path, errors: list[FieldError]) -> tuple[PortSpec, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        errors.append(FieldError(path, "Invalid value", f"must be a list of ports, got {_kind(raw)}"))
        return ()
    out = []
    for i, p in enumerate(raw):
        pp = path.index(i)
        if p is None:
            p = {}
        if not isinstance(p, MAPPING):
            errors.append(FieldError(pp, "Invalid value", f"a port must be a mapping, got {_kind(p)}"))
            continue
        _unknown(p, _PORT_FIELDS, pp, errors, "a port")
        proto = p.get("protocol")
        ok = True
        if proto is None:
            proto = "TCP"
        elif proto not in PROTOCOLS:
            errors.append(FieldError(pp.child("protocol"), "Unsupported value",
                                     f"{proto!r}: supported values: \"SCTP\", \"TCP\", \"UDP\" (upper case)"))
            ok = False
        port = p.get("port")
        if port is not None:
            if isinstance(port, bool) or not isinstance(port, (int, str)):
                errors.append(FieldError(pp.child("port"), "Invalid value",
                                         f"must be a port number or a port name, got {_kind(port)}"))
                ok = False
            elif isinstance(port, str) and port.isascii() and port.isdigit():
                # YAML `port: "80"` is an IntOrString holding a string: the server validates it as a name
                errors.append(FieldError(pp.child("port"), "Invalid value",
                                         f"{port!r}: a quoted number is a port *name*; write port: {port} unquoted"))
                ok = False
            elif isinstance(port, str):
                problem = port_name_problem(port)
                if problem:
                    errors.append(FieldError(pp.child("port"), "Invalid value", problem))
                    ok = False
            elif not 1 <= port <= 65535:
                errors.append(FieldError(pp.child("port"), "Invalid value",
                                         f"{port}: must be between 1 and 65535, inclusive"))
                ok = False
        end = p.get("endPort")
        if end is not None:
            if isinstance(end, bool) or not isinstance(end, int):
                errors.append(FieldError(pp.child("endPort"), "Invalid value", f"must be a number, got {_kind(end)}"))
                ok = False
            elif port is None:
                errors.append(FieldError(pp.child("endPort"), "Forbidden", "may not be specified when `port` is not specified"))
                ok = False
            elif isinstance(port, str):
                errors.append(FieldError(pp.child("endPort"), "Forbidden", "may not be specified when `port` is non-numeric"))
                ok = False
            elif ok and end < port:
                errors.append(FieldError(pp.child("endPort"), "Invalid value",
                                         f"{end}: must be greater than or equal to `port` ({port})"))
                ok = False
            elif not 1 <= end <= 65535:
                errors.append(FieldError(pp.child("endPort"), "Invalid value", f"{end}: must be between 1 and 65535, inclusive"))
                ok = False
        if ok:
            out.append(PortSpec(index=i, protocol=proto, port=port, end_port=end))
    return tuple(out)


__all__ = ["ParseResult", "parse_policy", "parse_cidr", "port_name_problem", "EVERYTHING"]
