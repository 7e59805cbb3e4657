"""Reading a communication map: YAML text -> a validated, resolved CommMap.

Every problem is collected (not just the first) and reported with the file, the line
and the field path, e.g. ``map.yaml:14: flows[2].to: no workload 'shop/apii' (did you
mean shop/api?)``. The accepted shape mirrors docs/commmap.schema.json; a test keeps the
two in step.
"""
from __future__ import annotations

import difflib
import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Iterable, Optional

import yaml

from webhook import safeload
from webhook.bounded_text import MESSAGE_MAX_CHARS, NAME_MAX_CHARS, shown, shown_path
from webhook.cluster.files import field_lines
from webhook.config import DNSConfig
from webhook.generate.model import (METADATA_V4, METADATA_V6, CommMap, ExternalEgress, ExternalIngress, Flow,
                                    FlowPort, NamespaceSpec, NumericPort, Party, PortDecl, Target, Workload)
from webhook.policy.model import PROTOCOLS, line_of_path
from webhook.policy.selectors import dns_label_problem, label_key_problem, label_value_problem

TOP_KEYS = ("namespaces", "workloads", "endpoints", "flows", "ingress", "egress", "dns")
NAMESPACE_KEYS = ("name", "labels", "managed")
WORKLOAD_KEYS = ("name", "namespace", "labels", "ports")
PORT_DECL_KEYS = ("name", "port", "protocol")
ENDPOINT_KEYS = ("name", "cidrs", "description")
FLOW_KEYS = ("from", "to", "ports", "description")
INGRESS_KEYS = ("from", "to", "ports", "description")
EGRESS_KEYS = ("from", "to", "ports", "description")
PORT_KEYS = ("port", "protocol")
RANGE_KEYS = ("port", "endPort", "protocol")
TARGET_KEYS = ("cidr", "except")
PARTY_KEYS = ("namespace",)
DNS_KEYS = ("namespace", "podLabels", "nodeLocalAddresses")
_PORT_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_PORT_PROTO_RE = re.compile(r"^(\d+)/([A-Za-z]+)$")
_PORT_RANGE_RE = re.compile(r"^(\d+)-(\d+)(?:/([A-Za-z]+))?$")
EVERY_WORKLOAD = "*"


@dataclass(frozen=True)
class MapProblem:
    line: int
    path: str
    message: str


class MapError(Exception):
    """The map cannot be used; every problem found, each with file, line and field path."""

    def __init__(self, file: str, problems: list[MapProblem]):
        self.file = file
        self.problems = sorted(problems, key=lambda p: (p.line, p.path))
        super().__init__(str(self))

    def lines(self) -> list[str]:
        # shown: a message quotes the map (an unknown key of a megabyte is shown by its start, a
        # newline in a key does not start a line of its own)
        out = []
        for p in self.problems:
            where = shown_path(self.file) + (f":{p.line}" if p.line else "")
            path, message = shown(p.path, NAME_MAX_CHARS), shown(p.message, MESSAGE_MAX_CHARS)
            out.append(f"{where}: {path}: {message}" if p.path else f"{where}: {message}")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


def _suggest(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, sorted(set(options)), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


class _Reader:
    """Holds the problems and the line of every field path while the map is read."""

    def __init__(self, file: str, lines: dict[str, int]):
        self.file = file
        self.lines = lines
        self.problems: list[MapProblem] = []

    def line(self, path: str) -> int:
        return line_of_path(self.lines, path)

    def problem(self, path: str, message: str) -> None:
        self.problems.append(MapProblem(self.line(path), path, message))

    # --- shape helpers ---------------------------------------------------------------------
    def mapping(self, value: Any, path: str, keys: tuple[str, ...], required: tuple[str, ...] = ()) -> Optional[dict]:
        if not isinstance(value, dict):
            self.problem(path, f"must be a mapping with {', '.join(keys)}, got {_kind(value)}")
            return None
        for k in value:
            if k not in keys:
                self.problem(f"{path}.{k}" if path else str(k),
                             f"unknown key {k!r}{_suggest(str(k), keys)}; allowed: {', '.join(keys)}")
        for k in required:
            if k not in value:
                self.problem(path, f"missing required key {k!r}")
        return value

    def list_of(self, value: Any, path: str, what: str, allow_empty: bool = True) -> list:
        if value is None:
            return []
        if not isinstance(value, list):
            self.problem(path, f"must be a list of {what}, got {_kind(value)}")
            return []
        if not value and not allow_empty:
            self.problem(path, f"must list at least one {what}")
        return value

    def labels(self, value: Any, path: str, required: bool) -> dict[str, str]:
        if value is None:
            if required:
                self.problem(path, "missing labels: the generated policies select the pods by them")
            return {}
        if not isinstance(value, dict):
            self.problem(path, f"must be a mapping of label key to value, got {_kind(value)}")
            return {}
        out = {}
        for k, v in value.items():
            problem = label_key_problem(k) or label_value_problem(v)
            if problem:
                self.problem(f"{path}.{k}", problem)
            else:
                out[k] = v
        if required and not out and not value:
            self.problem(path, "must have at least one label: an empty selector would select every pod "
                               "of the namespace")
        return out


def _kind(v: Any) -> str:
    if v is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: f"the string {v!r}", bool: f"{v}"}.get(type(v), repr(v))


# --- YAML ------------------------------------------------------------------------------------

def _compose(text: str, file: str) -> tuple[Any, Any]:
    """The single YAML document as (python value, node); duplicate keys are problems.
    Aliases, nesting and numbers are bounded by webhook.safeload before anything walks
    the document."""
    try:
        documents = safeload.yaml_nodes(text)
        first = next(documents, None)
        if first is None:
            raise MapError(file, [MapProblem(0, "", "the map is empty")])
        node, loader = first
        extra = next(documents, None)
        if extra is not None:
            raise MapError(file, [MapProblem(extra[0].start_mark.line + 1, "",
                                             "the map must be one YAML document; found a second one")])
        safeload.check_node(node)
        dups = [MapProblem(line, path, safeload.duplicate_key_message(key))
                for line, path, key in safeload.duplicate_keys(node)]
        if dups:
            raise MapError(file, dups)
        return safeload.construct_full(node, loader), node
    except safeload.UnsafeInput as exc:
        raise MapError(file, [MapProblem(exc.line, "", exc.message)]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise MapError(file, [MapProblem(mark.line + 1 if mark else 0, "", f"not valid YAML: {problem}")]) from None


def read_map(path: str) -> str:
    """The map file's text; MapError when it cannot be read, is over
    safeload.MAX_MAP_BYTES, binary or not UTF-8."""
    try:
        return safeload.read_text(path, safeload.MAX_MAP_BYTES)
    except OSError as exc:
        raise MapError(path, [MapProblem(0, "", f"cannot read: {exc.strerror}")]) from None
    except safeload.UnsafeInput as exc:
        raise MapError(path, [MapProblem(0, "", exc.message)]) from None


# --- the map ---------------------------------------------------------------------------------

def parse_map(text: str, file: str = "<map>") -> CommMap:
    """A validated CommMap, or MapError listing every problem with its line."""
    data, node = _compose(text, file)
    r = _Reader(file, field_lines(node))
    top = r.mapping(data, "", TOP_KEYS)
    if top is None:
        raise MapError(file, r.problems)
    namespaces = _namespaces(r, top.get("namespaces"))
    workloads = _workloads(r, top.get("workloads"), namespaces)
    endpoints = _endpoints(r, top.get("endpoints"))
    resolver = _Resolver(r, namespaces, workloads)
    flows = [f for i, item in enumerate(r.list_of(top.get("flows"), "flows", "flows"))
             for f in _flow(r, resolver, item, f"flows[{i}]")]
    ingress = [x for i, item in enumerate(r.list_of(top.get("ingress"), "ingress", "ingress entries"))
               for x in _ingress(r, resolver, item, f"ingress[{i}]")]
    egress = [x for i, item in enumerate(r.list_of(top.get("egress"), "egress", "egress entries"))
              for x in _egress(r, resolver, endpoints, item, f"egress[{i}]")]
    dns = _dns(r, top.get("dns"))
    if r.problems:
        raise MapError(file, r.problems)
    return CommMap(file, {n.name: n for n in namespaces}, workloads, flows, ingress, egress, dns)


def _namespaces(r: _Reader, value: Any) -> list[NamespaceSpec]:
    out: list[NamespaceSpec] = []
    seen: set[str] = set()
    items = r.list_of(value, "namespaces", "namespaces", allow_empty=False)
    if value is None:
        r.problem("namespaces", "missing: list the namespaces the map covers")
    for i, item in enumerate(items):
        path = f"namespaces[{i}]"
        if isinstance(item, str):
            item = {"name": item}
        m = r.mapping(item, path, NAMESPACE_KEYS, required=("name",))
        if m is None or "name" not in m:
            continue
        name = m["name"]
        problem = dns_label_problem(name)
        if problem:
            r.problem(f"{path}.name", problem)
            continue
        if name in seen:
            r.problem(f"{path}.name", f"duplicate namespace {name!r}")
            continue
        seen.add(name)
        managed = m.get("managed", True)
        if not isinstance(managed, bool):
            r.problem(f"{path}.managed", f"must be true or false, got {_kind(managed)}")
            managed = True
        out.append(NamespaceSpec(name, r.labels(m.get("labels"), f"{path}.labels", required=False), managed))
    return out


def _workloads(r: _Reader, value: Any, namespaces: list[NamespaceSpec]) -> list[Workload]:
    known = {n.name for n in namespaces}
    out: list[Workload] = []
    seen: set[str] = set()
    for i, item in enumerate(r.list_of(value, "workloads", "workloads")):
        path = f"workloads[{i}]"
        m = r.mapping(item, path, WORKLOAD_KEYS, required=("name", "namespace", "labels"))
        if m is None or "name" not in m or "namespace" not in m:
            continue
        name, ns = m["name"], m["namespace"]
        problem = dns_label_problem(name)
        if problem:
            r.problem(f"{path}.name", problem.replace("namespace name", "workload name"))
            continue
        if ns not in known:
            r.problem(f"{path}.namespace", f"namespace {ns!r} is not listed under namespaces{_suggest(str(ns), known)}")
            continue
        if f"{ns}/{name}" in seen:
            r.problem(f"{path}.name", f"duplicate workload {ns}/{name}")
            continue
        seen.add(f"{ns}/{name}")
        labels = r.labels(m.get("labels"), f"{path}.labels", required="labels" in m)
        ports = _port_decls(r, m.get("ports"), f"{path}.ports")
        out.append(Workload(ns, name, labels, ports, r.line(path)))
    _check_overlapping_labels(r, out)
    return out


def _port_decls(r: _Reader, value: Any, path: str) -> tuple[PortDecl, ...]:
    out: list[PortDecl] = []
    names: set[str] = set()
    numbers: set[tuple[int, str]] = set()
    for j, item in enumerate(r.list_of(value, path, "container ports")):
        p = f"{path}[{j}]"
        if isinstance(item, int) and not isinstance(item, bool):
            item = {"port": item}
        m = r.mapping(item, p, PORT_DECL_KEYS, required=("port",))
        if m is None or "port" not in m:
            continue
        number = m["port"]
        if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= 65535:
            r.problem(f"{p}.port", f"must be a port number 1-65535, got {_kind(number)}")
            continue
        proto = _protocol(r, m.get("protocol", "TCP"), f"{p}.protocol")
        name = m.get("name")
        if name is not None:
            if not isinstance(name, str) or len(name) > 15 or not _PORT_NAME_RE.match(name) \
                    or not re.search(r"[a-z]", name):
                r.problem(f"{p}.name", f"{name!r} is not a valid port name: at most 15 lowercase "
                                       "alphanumerics or '-', with at least one letter")
                continue
            if name in names:
                r.problem(f"{p}.name", f"duplicate port name {name!r}")
                continue
            names.add(name)
        if (number, proto) in numbers:
            r.problem(p, f"duplicate port {number}/{proto}")
            continue
        numbers.add((number, proto))
        out.append(PortDecl(number, proto, name))
    return tuple(out)


def _protocol(r: _Reader, value: Any, path: str) -> str:
    if isinstance(value, str) and value.upper() in PROTOCOLS:
        return value.upper()
    r.problem(path, f"protocol must be one of {', '.join(PROTOCOLS)}, got {_kind(value)}")
    return "TCP"


def _check_overlapping_labels(r: _Reader, workloads: list[Workload]) -> None:
    """A workload's labels are its pods' selector: if another workload's pods carry them too,
    the policies meant for one would also apply to the other."""
    by_ns: dict[str, list[tuple[int, Workload]]] = {}
    for i, w in enumerate(workloads):
        by_ns.setdefault(w.namespace, []).append((i, w))
    for group in by_ns.values():
        for i, a in group:
            for _, b in group:
                if a is not b and a.labels and set(a.labels.items()) <= set(b.labels.items()):
                    r.problem(f"workloads[{_index_of(workloads, a)}].labels",
                              f"the labels of {a.key} also select the pods of {b.key}; give each "
                              "workload a label set no other workload of its namespace carries")
                    break


def _index_of(workloads: list[Workload], w: Workload) -> int:
    return next(i for i, x in enumerate(workloads) if x is w)


def _endpoints(r: _Reader, value: Any) -> dict[str, tuple[Target, ...]]:
    out: dict[str, tuple[Target, ...]] = {}
    for i, item in enumerate(r.list_of(value, "endpoints", "endpoints")):
        path = f"endpoints[{i}]"
        m = r.mapping(item, path, ENDPOINT_KEYS, required=("name", "cidrs"))
        if m is None or "name" not in m:
            continue
        name = m["name"]
        if not isinstance(name, str) or not name:
            r.problem(f"{path}.name", f"must be a non-empty string, got {_kind(name)}")
            continue
        if name in out:
            r.problem(f"{path}.name", f"duplicate endpoint {name!r}")
            continue
        cidrs = r.list_of(m.get("cidrs"), f"{path}.cidrs", "CIDRs", allow_empty=False)
        targets = [t for j, c in enumerate(cidrs) if (t := _target(r, c, f"{path}.cidrs[{j}]", name, egress=True))]
        out[name] = tuple(targets)
    return out


def _network(r: _Reader, value: Any, path: str) -> Optional[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    if not isinstance(value, str):
        r.problem(path, f"must be a CIDR such as 203.0.113.0/24, got {_kind(value)}")
        return None
    if "/" not in value:
        r.problem(path, f"{value!r} is not a CIDR: add the prefix length, e.g. {value}/32")
        return None
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError:
        try:
            fixed = ipaddress.ip_network(value, strict=False)
            r.problem(path, f"{value!r} has host bits set; did you mean {fixed}?")
        except ValueError:
            r.problem(path, f"{value!r} is not a valid CIDR")
        return None


def _target(r: _Reader, value: Any, path: str, endpoint: Optional[str], egress: bool) -> Optional[Target]:
    """A CIDR, or (egress) `{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}` - one rule instead of
    the eight blocks a hand-split 10.0.0.0/8 minus one /16 takes."""
    excluded: list = []
    if isinstance(value, dict):
        if not egress:
            r.problem(path, "must be a CIDR; `except` is for egress blocks (endpoints and egress.to)")
            return None
        m = r.mapping(value, path, TARGET_KEYS, required=("cidr",))
        if m is None or "cidr" not in m:
            return None
        value = m["cidr"]
        for j, e in enumerate(r.list_of(m.get("except", []), f"{path}.except", "CIDRs")):
            excluded.append((f"{path}.except[{j}]", _network(r, e, f"{path}.except[{j}]")))
        path = f"{path}.cidr"
    net = _network(r, value, path)
    if net is None:
        return None
    if egress and net in (METADATA_V4, METADATA_V6):
        r.problem(path, f"{net} is the cloud metadata address; generate never allows it (it hands out the "
                        "node's cloud credentials)")
        return None
    kept = []
    for epath, e in excluded:
        if e is None:
            continue
        if e.version != net.version or not e.subnet_of(net) or e == net:  # type: ignore[arg-type]
            r.problem(epath, f"{e} is not a block strictly inside {net}; an except must narrow the cidr")
            continue
        kept.append(e)
    return Target(str(net), net, endpoint, tuple(sorted(set(kept))))


# --- references -----------------------------------------------------------------------------

class _Resolver:
    def __init__(self, r: _Reader, namespaces: list[NamespaceSpec], workloads: list[Workload]):
        self.r = r
        self.namespaces = {n.name for n in namespaces}
        self.managed = {n.name for n in namespaces if n.managed}
        self.by_key = {w.key: w for w in workloads}
        self.by_name: dict[str, list[Workload]] = {}
        for w in workloads:
            self.by_name.setdefault(w.name, []).append(w)
        self.workloads = workloads

    def workload(self, value: Any, path: str) -> Optional[Workload]:
        if not isinstance(value, str) or not value:
            self.r.problem(path, f"must name a workload as NAMESPACE/NAME (or NAME when unique), got {_kind(value)}")
            return None
        if "/" in value:
            w = self.by_key.get(value)
            if w is None:
                self.r.problem(path, f"no workload {value!r}{_suggest(value, self.by_key)}")
            return w
        found = self.by_name.get(value, [])
        if len(found) == 1:
            return found[0]
        if found:
            self.r.problem(path, f"{value!r} is ambiguous: {', '.join(sorted(w.key for w in found))}; "
                                 "write NAMESPACE/NAME")
        else:
            self.r.problem(path, f"no workload {value!r}{_suggest(value, list(self.by_name) + list(self.by_key))}")
        return None

    def namespace(self, value: Any, path: str) -> Optional[str]:
        m = self.r.mapping(value, path, PARTY_KEYS, required=("namespace",))
        if m is None or "namespace" not in m:
            return None
        ns = m["namespace"]
        if ns not in self.namespaces:
            self.r.problem(f"{path}.namespace",
                           f"namespace {ns!r} is not listed under namespaces{_suggest(str(ns), self.namespaces)}")
            return None
        return ns

    def source(self, value: Any, path: str) -> Optional[Party]:
        """A workload, or `{namespace: NS}` for every pod of a namespace."""
        if isinstance(value, dict):
            ns = self.namespace(value, path)
            return Party(ns) if ns else None
        w = self.workload(value, path)
        return Party(w.namespace, w) if w else None

    def destinations(self, value: Any, path: str) -> list[Workload]:
        """A workload, `{namespace: NS}` (its workloads in the map), or "*" (every workload)."""
        if value == EVERY_WORKLOAD:
            return list(self.workloads)
        if isinstance(value, dict):
            ns = self.namespace(value, path)
            if ns is None:
                return []
            found = [w for w in self.workloads if w.namespace == ns]
            if not found:
                self.r.problem(path, f"namespace {ns!r} has no workloads in the map to receive traffic")
            return found
        w = self.workload(value, path)
        return [w] if w else []


def _ports_for(r: _Reader, value: Any, path: str, dest: Workload) -> tuple[FlowPort, ...]:
    """Ports as the map wrote them, resolved against (and required to be declared by) `dest`."""
    out: list[FlowPort] = []
    for j, item in enumerate(value):
        p = f"{path}[{j}]"
        parsed = _port_ref(r, item, p)
        if parsed is None:
            continue
        port, proto = parsed
        if isinstance(port, str):
            decl = dest.port_by_name(port)
            if decl is None:
                names = [d.name for d in dest.ports if d.name]
                r.problem(p, f"{dest.key} declares no port named {port!r}{_suggest(port, names)}"
                             f"; it declares {_declared(dest)}")
                continue
            if proto is not None and proto != decl.protocol:
                r.problem(p, f"port {port!r} of {dest.key} is {decl.protocol}, not {proto}")
                continue
            fp = FlowPort(port, decl.protocol, decl.port)
        else:
            proto = proto or "TCP"
            if not dest.declares(port, proto):
                r.problem(p, f"{dest.key} does not declare port {port}/{proto}; it declares {_declared(dest)}")
                continue
            fp = FlowPort(port, proto, port)
        if fp not in out:
            out.append(fp)
    return tuple(sorted(out, key=FlowPort.sort_key))


def _declared(w: Workload) -> str:
    return ", ".join(p.describe() for p in w.ports) or "no ports"


def _port_ref(r: _Reader, item: Any, path: str) -> Optional[tuple[int | str, Optional[str]]]:
    """8080 | "8080/UDP" | "http" | {port: 8080|http, protocol: UDP} -> (port, protocol or None)."""
    proto: Optional[str] = None
    if isinstance(item, dict):
        m = r.mapping(item, path, PORT_KEYS, required=("port",))
        if m is None or "port" not in m:
            return None
        if "protocol" in m:
            proto = _protocol(r, m["protocol"], f"{path}.protocol")
        item = m["port"]
    if isinstance(item, bool):
        r.problem(path, f"must be a port number or name, got {item}")
        return None
    if isinstance(item, int):
        if not 1 <= item <= 65535:
            r.problem(path, f"port {item} is out of range 1-65535")
            return None
        return item, proto
    if isinstance(item, str):
        m2 = _PORT_PROTO_RE.match(item)
        if m2 and proto is None:
            return _port_ref(r, {"port": int(m2.group(1)), "protocol": m2.group(2)}, path)
        if item.isascii() and item.isdigit():
            return _port_ref(r, int(item), path) if proto is None else (int(item), proto)
        return item, proto
    r.problem(path, f"must be a port number or name, got {_kind(item)}")
    return None


def _flow(r: _Reader, res: _Resolver, item: Any, path: str) -> list[Flow]:
    m = r.mapping(item, path, FLOW_KEYS, required=("from", "to", "ports"))
    if m is None or not all(k in m for k in ("from", "to", "ports")):
        return []
    source = res.source(m["from"], f"{path}.from")
    dests = res.destinations(m["to"], f"{path}.to")
    ports = r.list_of(m["ports"], f"{path}.ports", "ports", allow_empty=False)
    if source is None or not ports:
        return []
    if source.namespace not in res.managed:
        ours = [d for d in dests if d.namespace in res.managed]
        if not ours and dests and m["to"] != EVERY_WORKLOAD:
            r.problem(path, f"neither side is in a managed namespace ({source.namespace}, {dests[0].namespace}): "
                            "no policy would carry this flow; set managed: true on one of them or drop it")
            return []
        dests = ours  # "*" from an unmanaged namespace: only the destinations generate can protect
    note = _note(r, m, path)
    return [Flow(source, d, rp, r.line(path), note)
            for d, rp in _ports_per_destination(r, ports, path, dests, _is_many(m["to"]))]


def _is_many(to: Any) -> bool:
    return to == EVERY_WORKLOAD or isinstance(to, dict)


def _ports_per_destination(r: _Reader, ports: list, path: str, dests: list[Workload],
                           many: bool) -> list[tuple[Workload, tuple[FlowPort, ...]]]:
    """Each destination with the ports it receives. One named workload must declare every
    port; `{namespace: NS}` or "*" stand for many workloads, and each receives the ports it
    declares (a CronJob with no ports is simply not a destination), so long as some do."""
    if not many:
        return [(d, rp) for d in dests if (rp := _ports_for(r, ports, f"{path}.ports", d))]
    out = []
    for d in dests:
        # ports d does not declare are not a problem here: it just does not receive them
        rp = _ports_for(_Reader(r.file, r.lines), ports, f"{path}.ports", d)
        if rp:
            out.append((d, rp))
    if dests and not out:
        before = len(r.problems)
        for j, item in enumerate(ports):
            _port_ref(r, item, f"{path}.ports[{j}]")  # malformed entries speak for themselves
        if len(r.problems) == before:
            keys = sorted(d.key for d in dests)
            shown = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
            r.problem(f"{path}.ports", f"no destination declares any of these ports ({shown})")
    return out


def _ingress(r: _Reader, res: _Resolver, item: Any, path: str) -> list[ExternalIngress]:
    m = r.mapping(item, path, INGRESS_KEYS, required=("from", "to", "ports"))
    if m is None or not all(k in m for k in ("from", "to", "ports")):
        return []
    dests = res.destinations(m["to"], f"{path}.to")
    cidrs = r.list_of(m["from"], f"{path}.from", "CIDRs", allow_empty=False)
    sources = tuple(t for j, c in enumerate(cidrs) if (t := _target(r, c, f"{path}.from[{j}]", None, egress=False)))
    ports = r.list_of(m["ports"], f"{path}.ports", "ports", allow_empty=False)
    if not sources or not ports:
        return []
    unmanaged = sorted({d.namespace for d in dests if d.namespace not in res.managed})
    if unmanaged:
        r.problem(f"{path}.to", f"namespace {', '.join(unmanaged)} is not managed: no policy would carry this "
                                "ingress; set managed: true or drop it")
        return []
    note = _note(r, m, path)
    return [ExternalIngress(d, sources, rp, r.line(path), note)
            for d, rp in _ports_per_destination(r, ports, path, dests, _is_many(m["to"]))]


def _egress(r: _Reader, res: _Resolver, endpoints: dict[str, tuple[Target, ...]], item: Any,
            path: str) -> list[ExternalEgress]:
    m = r.mapping(item, path, EGRESS_KEYS, required=("from", "to", "ports"))
    if m is None or not all(k in m for k in ("from", "to", "ports")):
        return []
    source = res.source(m["from"], f"{path}.from")
    targets: list[Target] = []
    for j, t in enumerate(r.list_of(m["to"], f"{path}.to", "CIDRs or endpoint names", allow_empty=False)):
        tp = f"{path}.to[{j}]"
        if isinstance(t, str) and "/" not in t and not _looks_like_ip(t):
            if t not in endpoints:
                r.problem(tp, f"no endpoint {t!r}{_suggest(t, endpoints)}; list it under endpoints "
                              "with its CIDRs, or write a CIDR here")
                continue
            targets.extend(endpoints[t])
        elif (target := _target(r, t, tp, None, egress=True)) is not None:
            targets.append(target)
    ports: list[NumericPort] = []
    for j, p in enumerate(r.list_of(m["ports"], f"{path}.ports", "ports", allow_empty=False)):
        if (np_ := _numeric_port(r, p, f"{path}.ports[{j}]")) is not None and np_ not in ports:
            ports.append(np_)
    if source is None or not targets or not ports:
        return []
    if source.namespace not in res.managed:
        r.problem(f"{path}.from", f"namespace {source.namespace} is not managed: no policy would carry this "
                                  "egress; set managed: true or drop it")
        return []
    uniq = tuple(sorted(set(targets), key=lambda t: (t.network.version, t.network, t.endpoint or "")))
    return [ExternalEgress(source, uniq, tuple(sorted(ports, key=lambda p: (p.protocol, p.number))), r.line(path),
                           _note(r, m, path))]


def _numeric_port(r: _Reader, item: Any, path: str) -> Optional[NumericPort]:
    """443 | "443/TCP" | {port: 443} | a range: "30000-32767[/UDP]" or {port: 30000, endPort: 32767}."""
    if isinstance(item, str) and (rm := _PORT_RANGE_RE.match(item)):
        item = {"port": int(rm.group(1)), "endPort": int(rm.group(2)),
                **({"protocol": rm.group(3)} if rm.group(3) else {})}
    if isinstance(item, dict) and "endPort" in item:
        m = r.mapping(item, path, RANGE_KEYS, required=("port", "endPort"))
        if m is None or "port" not in m:
            return None
        start, end = m["port"], m["endPort"]
        proto = _protocol(r, m["protocol"], f"{path}.protocol") if "protocol" in m else "TCP"
        if not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 65535 for v in (start, end)):
            r.problem(path, f"port and endPort must be numbers 1-65535, got {start!r} and {end!r}")
            return None
        if end < start:
            r.problem(f"{path}.endPort", f"endPort {end} is below port {start}")
            return None
        return NumericPort(start, proto or "TCP", end if end > start else None)
    parsed = _port_ref(r, item, path)
    if parsed is None:
        return None
    if isinstance(parsed[0], str):
        r.problem(path, f"ports outside the cluster must be numbers, got the name {parsed[0]!r}")
        return None
    return NumericPort(parsed[0], parsed[1] or "TCP")


def _note(r: _Reader, m: dict, path: str) -> str:
    v = m.get("description", "")
    if not isinstance(v, str):
        r.problem(f"{path}.description", f"must be a string, got {_kind(v)}")
        return ""
    return " ".join(v.split())


def _looks_like_ip(s: str) -> bool:
    try:
        ipaddress.ip_address(s)
        return True
    except ValueError:
        return False


def _dns(r: _Reader, value: Any) -> Optional[DNSConfig]:
    if value is None:
        return None
    m = r.mapping(value, "dns", DNS_KEYS)
    if m is None:
        return None
    base = DNSConfig()
    ns = m.get("namespace", base.namespace)
    problem = dns_label_problem(ns)
    if problem:
        r.problem("dns.namespace", problem)
    labels = r.labels(m["podLabels"], "dns.podLabels", required=True) if "podLabels" in m else dict(base.podLabels)
    addrs = []
    for j, a in enumerate(r.list_of(m.get("nodeLocalAddresses"), "dns.nodeLocalAddresses", "addresses")):
        if isinstance(a, str) and _looks_like_ip(a):
            addrs.append(a)
        else:
            r.problem(f"dns.nodeLocalAddresses[{j}]", f"must be an IP address such as 169.254.20.10, got {_kind(a)}")
    return DNSConfig(namespace=ns, podLabels=labels, nodeLocalAddresses=tuple(addrs))
