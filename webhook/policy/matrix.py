"""Who may reach whom, for many pods at once: the connectivity matrix and the diff of two.

Pure computation over an Engine; rendering lives in webhook/commands/simulate.py.

A verdict depends only on a pod's namespace, labels and named container ports (and its
IPs when ipBlocks may match pods), so endpoints are grouped into classes by that key. Each
rule's peers are matched once per class, and each (subject class, port) costs one union of
sets; a pair of pods then costs two set lookups. 500 workloads x 500 on one port (250,000
flows) take about a second of CPU. Full verdicts - which policy and rule decide - are built
only for the cells someone reads (--explain, the diff's changed flows).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from webhook.bounded_text import quoted
from webhook.cluster.objects import Pod
from webhook.policy.engine import Endpoint, Engine, Verdict
from webhook.policy.model import EGRESS, INGRESS

PROTOCOLS = ("TCP", "UDP", "SCTP")


@dataclass(frozen=True)
class PortQuery:
    """The port a matrix asks about: a number or a name (resolved per destination), and a protocol."""

    port: int | str
    protocol: str = "TCP"

    def describe(self) -> str:
        return f"{self.port}/{self.protocol}"


class Cell:
    """One flow of the matrix: source -> destination on one port. `allowed` is computed with
    the matrix; the full verdict (which policies and rules decide) only when asked for."""

    __slots__ = ("source", "destination", "port", "protocol", "allowed", "_src", "_dst", "_engine", "_verdict")

    def __init__(self, source: Endpoint, destination: Endpoint, port: int, protocol: str, allowed: bool,
                 engine: Engine, names: tuple[str, str] | None = None, verdict: Verdict | None = None):
        self.source, self.destination = names or (source.describe(), destination.describe())
        self.port, self.protocol, self.allowed = port, protocol, allowed
        self._src, self._dst, self._engine, self._verdict = source, destination, engine, verdict

    @property
    def verdict(self) -> Verdict:
        if self._verdict is None:
            self._verdict = self._engine.evaluate(self._src, self._dst, self.port, self.protocol)
        return self._verdict

    @property
    def key(self) -> tuple[str, str, int, str]:
        return (self.source, self.destination, self.port, self.protocol)

    @property
    def port_label(self) -> str:
        return f"{self.port}/{self.protocol}"

    def to_dict(self, explain: bool = False) -> dict:
        out = {"from": self.source, "to": self.destination, "port": self.port,
               "protocol": self.protocol, "allowed": self.allowed}
        if explain:
            out["reason"] = self.verdict.reason()
            d = self.verdict.to_dict()
            out["egress"], out["ingress"] = d["egress"], d["ingress"]
        return out


@dataclass
class Matrix:
    sources: list[str]
    destinations: list[str]
    query: Optional[PortQuery]  # None: every declared container port of each destination
    cells: list[Cell]
    # destinations the query's port does not apply to (a named port they do not declare,
    # or no declared ports at all when no port was given)
    not_applicable: set[str]

    def cells_for(self, source: str, destination: str) -> list[Cell]:
        return self._index().get((source, destination), [])

    def _index(self) -> dict[tuple[str, str], list[Cell]]:
        idx = getattr(self, "_idx", None)
        if idx is None:
            idx = {}
            for c in self.cells:
                idx.setdefault((c.source, c.destination), []).append(c)
            self._idx = idx
        return idx

    def summary(self) -> dict:
        allowed = sum(1 for c in self.cells if c.allowed)
        return {"sources": len(self.sources), "destinations": len(self.destinations),
                "flows": len(self.cells), "allowed": allowed, "denied": len(self.cells) - allowed}

    def to_dict(self, explain: bool = False) -> dict:
        return {"port": self.query.describe() if self.query else None,
                "sources": self.sources, "destinations": self.destinations,
                "flows": [c.to_dict(explain) for c in self.cells],
                "noPort": sorted(self.not_applicable),  # destinations the port does not exist on
                "summary": self.summary()}


def declared_ports(pod: Pod) -> list[tuple[int, str]]:
    """The distinct (port, protocol) pairs a pod declares, in declaration order."""
    seen: dict[tuple[int, str], None] = {}
    for p in pod.ports:
        seen.setdefault((p.port, p.protocol.upper()), None)
    return list(seen)


def resolve_port(query: PortQuery, destination: Endpoint) -> Optional[int]:
    """The number a query means at this destination; None when a named port is not declared there."""
    if isinstance(query.port, int):
        return query.port
    if destination.pod is None:
        return None
    return destination.pod.named_port(query.port, query.protocol)


def endpoint_class(ep: Endpoint, with_ips: bool) -> tuple:
    """What a verdict can depend on: pods with equal keys get equal verdicts."""
    if ep.pod is None:
        return ("ip", str(ep.ip))
    pod = ep.pod
    return ("pod", pod.namespace, frozenset(pod.labels.items()),
            frozenset((p.name, p.port, p.protocol) for p in pod.ports if p.name),
            tuple(pod.ips) if with_ips else ())


def _ports_for(query: Optional[PortQuery], destination: Endpoint) -> list[tuple[int, str]]:
    if query is None:
        return declared_ports(destination.pod) if destination.pod else []
    number = resolve_port(query, destination)
    return [] if number is None else [(number, query.protocol)]


ALL = None  # an allowed-set meaning "every endpoint" (the side is not isolated)


class _AllowedSets:
    """For one direction: which peers each subject class admits on a port, as sets of class ids.

    Built from the engine's own primitives (policies_selecting, peer_matches, port_matches),
    so a cell's `allowed` equals engine.evaluate(); but each rule's peers are matched once per
    endpoint class, and each (subject class, port) costs one union of sets, so a pair of pods
    costs two set lookups instead of a walk over policies and rules.
    """

    def __init__(self, engine: Engine, direction: str, classes: dict[int, Endpoint]):
        self.engine, self.direction, self.classes = engine, direction, classes
        self.selecting: dict[int, list] = {}
        self.peer_sets: dict[int, frozenset[int] | None] = {}  # id(rule) -> classes its peers match
        self.port_sets: dict[tuple, frozenset[int] | None] = {}  # (id(rule), port, proto) -> dst classes
        self.allowed: dict[tuple, frozenset[int] | None] = {}
        self._rules: dict[int, tuple] = {}

    def _policies(self, cls: int) -> list:
        found = self.selecting.get(cls)
        if found is None:
            ep = self.classes[cls]
            found = self.engine.policies_selecting(ep.pod, self.direction) if ep.pod is not None else []
            self.selecting[cls] = found
        return found

    def _peers(self, policy, rule) -> frozenset[int] | None:
        key = id(rule)
        if key not in self.peer_sets:
            self._rules[key] = (policy, rule)  # keep the rule alive while its id is a key
            if not rule.peers:
                self.peer_sets[key] = ALL
            else:
                self.peer_sets[key] = frozenset(
                    c for c, ep in self.classes.items()
                    if any(self.engine.peer_matches(policy, pe, ep) for pe in rule.peers))
        return self.peer_sets[key]

    def _ports(self, rule, port: int, proto: str) -> frozenset[int] | None:
        """Destination classes on which the rule's ports admit port/proto (ALL: every one)."""
        if not rule.ports:
            return ALL
        key = (id(rule), port, proto)
        if key not in self.port_sets:
            if not any(isinstance(sp.port, str) for sp in rule.ports):
                ok = any(sp.matches_number(port, proto) for sp in rule.ports)
                self.port_sets[key] = ALL if ok else frozenset()
            else:  # named ports resolve per destination
                self.port_sets[key] = frozenset(
                    c for c, ep in self.classes.items()
                    if any(self.engine.port_matches(sp, port, proto, ep) for sp in rule.ports))
        return self.port_sets[key]

    def admits(self, subject_cls: int, peer_cls: int, dst_cls: int, port: int, proto: str) -> bool:
        """Whether the subject's side allows the flow to/from peer_cls (dst_cls: the destination)."""
        pols = self._policies(subject_cls)
        if not pols:
            return True
        if self.direction == INGRESS:
            # the destination is the subject: named ports resolve on it, one answer per (subject, port)
            key = (subject_cls, port, proto)
            sources = self.allowed.get(key, 0)
            if sources == 0:
                sources = frozenset()
                for pol in pols:
                    for rule in pol.rules_for(INGRESS):
                        ports = self._ports(rule, port, proto)
                        if ports is not ALL and subject_cls not in ports:
                            continue
                        peers = self._peers(pol, rule)
                        if peers is ALL:
                            sources = ALL
                            break
                        sources = sources | peers
                    if sources is ALL:
                        break
                self.allowed[key] = sources
            return sources is ALL or peer_cls in sources
        key = (subject_cls, port, proto)
        parts = self.allowed.get(key, 0)
        if parts == 0:
            parts = []  # (peer set, port set) per rule: both must hold for the destination
            for pol in pols:
                for rule in pol.rules_for(EGRESS):
                    ports = self._ports(rule, port, proto)
                    if ports is not ALL and not ports:
                        continue
                    parts.append((self._peers(pol, rule), ports))
            self.allowed[key] = parts
        return any((peers is ALL or dst_cls in peers) and (ports is ALL or dst_cls in ports)
                   for peers, ports in parts)


def compute(engine: Engine, sources: Sequence[Endpoint], destinations: Sequence[Endpoint],
            query: Optional[PortQuery] = None) -> Matrix:
    """Every flow from each source to each destination (itself included: pods of one
    workload talk to each other through the same policies) on the queried port(s).
    Each cell's `allowed` equals engine.evaluate() for that flow (tests hold it to that)."""
    with_ips = engine.ip_block_matches_pods
    class_ids: dict[tuple, int] = {}
    classes: dict[int, Endpoint] = {}

    def cls(ep: Endpoint) -> int:
        key = endpoint_class(ep, with_ips)
        c = class_ids.get(key)
        if c is None:
            c = class_ids[key] = len(class_ids)
            classes[c] = ep
        return c

    srcs = [(s, s.describe(), cls(s)) for s in sources]
    dsts = [(d, d.describe(), cls(d), _ports_for(query, d)) for d in destinations]
    if engine.admin_policies():
        return _compute_with_admin(engine, srcs, dsts, query)
    egress = _AllowedSets(engine, EGRESS, classes)
    ingress = _AllowedSets(engine, INGRESS, classes)
    cells: list[Cell] = []
    not_applicable = {name for _, name, _, ports in dsts if not ports}
    for s, s_name, s_cls in srcs:
        for d, d_name, d_cls, ports in dsts:
            for port, proto in ports:
                ok = (egress.admits(s_cls, d_cls, d_cls, port, proto)
                      and ingress.admits(d_cls, s_cls, d_cls, port, proto))
                cells.append(Cell(s, d, port, proto, ok, engine, (s_name, d_name)))
    return Matrix([x[1] for x in srcs], [x[1] for x in dsts], query, cells, not_applicable)


def _compute_with_admin(engine: Engine, srcs: list, dsts: list, query: Optional[PortQuery]) -> Matrix:
    """The matrix when admin policies are in view: their rules are ordered (first match
    decides, per side), which the allowed-set unions above do not express, so each cell is
    decided by the engine's own sides, once per (source class, destination class, port); the
    ingress side only when the egress side allows. Full verdicts are built when read."""
    allowed: dict[tuple, bool] = {}
    cells: list[Cell] = []
    for s, s_name, s_cls in srcs:
        for d, d_name, d_cls, ports in dsts:
            for port, proto in ports:
                key = (s_cls, d_cls, port, proto)
                ok = allowed.get(key)
                if ok is None:
                    ok = allowed[key] = (engine.side(EGRESS, s, d, port, proto, d).allowed
                                         and engine.side(INGRESS, d, s, port, proto, d).allowed)
                cells.append(Cell(s, d, port, proto, ok, engine, (s_name, d_name)))
    not_applicable = {name for _, name, _, ports in dsts if not ports}
    return Matrix([x[1] for x in srcs], [x[1] for x in dsts], query, cells, not_applicable)


def pods_of(engine: Engine) -> list[Endpoint]:
    """Every pod and workload in the view, sorted by how messages name them."""
    return [Endpoint.of_pod(p) for p in sorted(engine.view.pods(), key=lambda p: p.ref)]


@dataclass(frozen=True)
class FlowChange:
    cell: Cell  # the flow as it is after the change
    before: Verdict

    def to_dict(self) -> dict:
        out = self.cell.to_dict()
        out["before"] = self.before.reason()
        out["after"] = self.cell.verdict.reason()
        return out


@dataclass
class Diff:
    opened: list[FlowChange]
    closed: list[FlowChange]
    added: list[str]    # pods/workloads only in NEW: their flows are new, not "opened"
    removed: list[str]  # pods/workloads only in OLD
    flows_compared: int

    @property
    def changed(self) -> bool:
        return bool(self.opened or self.closed)

    def to_dict(self) -> dict:
        return {"opened": [c.to_dict() for c in self.opened],
                "closed": [c.to_dict() for c in self.closed],
                "addedPods": self.added, "removedPods": self.removed,
                "summary": {"flowsCompared": self.flows_compared, "opened": len(self.opened),
                            "closed": len(self.closed)}}


def diff(old: Engine, new: Engine) -> Diff:
    """Flows among pods present in both views, on every declared port of the destination
    (as NEW declares them), that the change opens or closes."""
    old_pods = {e.describe(): e for e in pods_of(old)}
    new_pods = {e.describe(): e for e in pods_of(new)}
    common = [r for r in new_pods if r in old_pods]
    new_m = compute(new, [new_pods[r] for r in common], [new_pods[r] for r in common])
    old_m = compute(old, [old_pods[r] for r in common], [old_pods[r] for r in common])
    before = {c.key: c for c in old_m.cells}
    opened, closed = [], []
    for c in new_m.cells:
        b = before.get(c.key)
        if b is None:
            # a port the destination declares only in NEW: compare with how OLD treats it
            v = old.evaluate(old_pods[c.source], old_pods[c.destination], c.port, c.protocol)
            b = Cell(old_pods[c.source], old_pods[c.destination], c.port, c.protocol, v.allowed, old,
                     verdict=v)
        if c.allowed != b.allowed:  # verdicts (the slow part) only for the flows that changed
            (opened if c.allowed else closed).append(FlowChange(c, b.verdict))
    # ports only OLD declared: a flow there that was allowed and now is not counts as closed
    new_keys = {c.key for c in new_m.cells}
    for c in old_m.cells:
        if c.key not in new_keys:
            after = new.evaluate(new_pods[c.source], new_pods[c.destination], c.port, c.protocol)
            cell = Cell(new_pods[c.source], new_pods[c.destination], c.port, c.protocol, after.allowed,
                        new, verdict=after)
            if c.allowed and not after.allowed:
                closed.append(FlowChange(cell, c.verdict))
            elif after.allowed and not c.allowed:
                opened.append(FlowChange(cell, c.verdict))
    order = lambda fc: fc.cell.key  # noqa: E731
    return Diff(sorted(opened, key=order), sorted(closed, key=order),
                sorted(r for r in new_pods if r not in old_pods),
                sorted(r for r in old_pods if r not in new_pods),
                len(new_m.cells))


def parse_port(text: str) -> PortQuery:
    """`8080`, `8080/TCP`, `53/udp`, `http`, `dns/UDP` -> PortQuery; ValueError with a reason."""
    port_s, _, proto = text.partition("/")
    proto = (proto or "TCP").upper()
    if proto not in PROTOCOLS:
        raise ValueError(f"{quoted(text)}: protocol must be TCP, UDP or SCTP")
    if port_s.isascii() and port_s.isdigit():  # not '²', which int() refuses
        # (no int() of thousands of digits either: Python refuses those with its own message)
        n = int(port_s) if len(port_s) <= 6 else 0
        if not 1 <= n <= 65535:
            raise ValueError(f"{quoted(text)}: port must be between 1 and 65535")
        return PortQuery(n, proto)
    from webhook.policy.parse import port_name_problem
    problem = port_name_problem(port_s) if port_s else "empty port"
    if problem:
        raise ValueError(f"{quoted(text)}: not a port number, and {problem}")
    return PortQuery(port_s, proto)
