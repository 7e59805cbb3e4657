"""Who may reach whom, for many pods at once: the connectivity matrix and the diff of two.

Pure computation over an Engine; rendering lives in webhook/commands/simulate.py.

A verdict depends only on a pod's namespace, labels and (for named ports) container
ports - and on its IPs when ipBlocks may match pods - so pods are grouped into classes
by that key and each (source class, destination class, port) is evaluated once. A
500-workload cluster typically has a few hundred classes, not 500 x 500 x ports questions
of full cost.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

from webhook.cluster.objects import Pod
from webhook.policy.engine import Endpoint, Engine, Verdict

PROTOCOLS = ("TCP", "UDP", "SCTP")


@dataclass(frozen=True)
class PortQuery:
    """The port a matrix asks about: a number or a name (resolved per destination), and a protocol."""

    port: int | str
    protocol: str = "TCP"

    def describe(self) -> str:
        return f"{self.port}/{self.protocol}"


@dataclass(frozen=True)
class Cell:
    """One flow of the matrix: source -> destination on one port."""

    source: str
    destination: str
    port: int
    protocol: str
    verdict: Verdict

    @property
    def allowed(self) -> bool:
        return self.verdict.allowed

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


def compute(engine: Engine, sources: Sequence[Endpoint], destinations: Sequence[Endpoint],
            query: Optional[PortQuery] = None) -> Matrix:
    """Every flow from each source to each destination (itself included: pods of one
    workload talk to each other through the same policies) on the queried port(s)."""
    with_ips = engine.ip_block_matches_pods
    memo: dict[tuple, Verdict] = {}
    cells: list[Cell] = []
    not_applicable: set[str] = set()
    dst_ports = [(d, _ports_for(query, d)) for d in destinations]
    for d, ports in dst_ports:
        if not ports:
            not_applicable.add(d.describe())
    for s in sources:
        s_cls = endpoint_class(s, with_ips)
        for d, ports in dst_ports:
            d_cls = endpoint_class(d, with_ips)
            for port, proto in ports:
                key = (s_cls, d_cls, port, proto)
                v = memo.get(key)
                if v is None:
                    v = memo[key] = engine.evaluate(s, d, port, proto)
                # the memoized verdict may name another pod of the class: name these ones
                if v.source != s.describe() or v.destination != d.describe():
                    v = Verdict(s.describe(), d.describe(), port, proto,
                                _renamed(v.egress, s.describe()), _renamed(v.ingress, d.describe()))
                cells.append(Cell(s.describe(), d.describe(), port, proto, v))
    return Matrix([s.describe() for s in sources], [d.describe() for d in destinations],
                  query, cells, not_applicable)


def _renamed(side, endpoint: str):
    from dataclasses import replace
    return side if side.endpoint == endpoint else replace(side, endpoint=endpoint)


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
            b_verdict = old.evaluate(old_pods[c.source], old_pods[c.destination], c.port, c.protocol)
        else:
            b_verdict = b.verdict
        if c.allowed and not b_verdict.allowed:
            opened.append(FlowChange(c, b_verdict))
        elif b_verdict.allowed and not c.allowed:
            closed.append(FlowChange(c, b_verdict))
    # ports only OLD declared: a flow there that was allowed and now is not counts as closed
    new_keys = {c.key for c in new_m.cells}
    for c in old_m.cells:
        if c.key not in new_keys:
            after = new.evaluate(new_pods[c.source], new_pods[c.destination], c.port, c.protocol)
            if c.allowed and not after.allowed:
                closed.append(FlowChange(Cell(*c.key, after), c.verdict))
            elif after.allowed and not c.allowed:
                opened.append(FlowChange(Cell(*c.key, after), c.verdict))
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
        raise ValueError(f"{text!r}: protocol must be TCP, UDP or SCTP")
    if port_s.isdigit():
        n = int(port_s)
        if not 1 <= n <= 65535:
            raise ValueError(f"{text!r}: port must be between 1 and 65535")
        return PortQuery(n, proto)
    from webhook.policy.parse import port_name_problem
    problem = port_name_problem(port_s) if port_s else "empty port"
    if problem:
        raise ValueError(f"{text!r}: not a port number, and {problem}")
    return PortQuery(port_s, proto)


def iter_unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
