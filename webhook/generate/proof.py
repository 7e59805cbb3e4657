"""The proof: a generated policy set allows exactly what the map says, and nothing more.

A pure function of (map, policy objects, configuration), usable on any policy set - the
generator calls it on its own output before writing anything, and the tests call it on
deliberately broken copies to show each kind of mistake is caught.

What is checked, with the connectivity engine (the same one `simulate` and `lint` use)
over a cluster view built from the map:

1. every flow of the map is allowed (both sides);
2. every other pod-to-pod flow among the map's workloads, on their declared ports, is
   denied - and denied on *each* side that the set controls, so one widened selector
   cannot hide behind the other side's policy. Besides the map's workloads, an
   "unlisted pod" per namespace (no labels, a probe port), one pod in a namespace the
   map does not know, and there a lookalike of every workload (same labels and ports)
   stand for everything the map did not mention;
3. DNS works for every pod of a managed namespace (53/UDP and 53/TCP to the DNS pods);
4. external egress reaches the listed CIDRs on the listed ports and nothing else nearby
   (addresses just outside each block, other ports, the cloud metadata address);
5. ingress from outside is allowed from the listed CIDRs on the listed ports only;
6. `lint` (the same rules and configuration) finds nothing above info.
"""
from __future__ import annotations

import dataclasses
import ipaddress
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from webhook.cluster.objects import NAME_LABEL, ContainerPort, Namespace, Pod
from webhook.cluster.view import ClusterView
from webhook.config import Config
from webhook.generate.model import METADATA_V4, METADATA_V6, CommMap, Target, Workload
from webhook.policy.engine import Endpoint, Engine
from webhook.policy.model import EGRESS, INGRESS, NetworkPolicy, Origin
from webhook.policy.parse import parse_policy
from webhook.rules.batch import check_all
from webhook.rules.context import Context

UNLISTED_POD = "<unlisted>"  # not a valid workload name: stand-ins never collide with the map
PROBE_PORT = ContainerPort(8080, "TCP", "probe")
OUTSIDE_PROBES = (ipaddress.ip_address("203.0.113.77"), ipaddress.ip_address("2001:db8::77"))
FlowKey = tuple[str, str, int, str]  # source pod key, destination pod key, port, protocol


@dataclass
class ProofReport:
    failures: list[str] = field(default_factory=list)
    checks: Counter = field(default_factory=Counter)  # what was checked, by kind

    @property
    def ok(self) -> bool:
        return not self.failures

    def fail(self, message: str) -> None:
        self.failures.append(message)

    def summary(self) -> str:
        parts = ", ".join(f"{n} {k}" for k, n in sorted(self.checks.items()))
        verdict = "passed" if self.ok else f"FAILED ({len(self.failures)} problems)"
        return f"proof {verdict}: checked {parts}"


class _MemoEngine(Engine):
    """The engine, remembering which policies select each pod: the proof asks that about the
    same few hundred pods tens of thousands of times, and the answer never changes here."""

    def __init__(self, view: ClusterView, ip_block_matches_pods: bool):
        super().__init__(view, ip_block_matches_pods)
        self._selecting: dict[tuple[str, str, str, str], list[NetworkPolicy]] = {}

    def policies_selecting(self, pod: Pod, direction: str) -> list[NetworkPolicy]:
        key = (pod.namespace, pod.name, pod.kind, direction)
        found = self._selecting.get(key)
        if found is None:
            found = self._selecting[key] = super().policies_selecting(pod, direction)
        return found


def proof_config(cmap: CommMap, config: Config) -> Config:
    """The configuration with the map's DNS target, if it overrides one."""
    return dataclasses.replace(config, dns=cmap.dns) if cmap.dns else config


def prove(cmap: CommMap, policy_objs: Iterable[Mapping[str, Any]], config: Config) -> ProofReport:
    config = proof_config(cmap, config)
    report = ProofReport()
    objs = list(policy_objs)
    policies = []
    for obj in objs:
        result = parse_policy(obj)
        if result.policy is None:
            name = (obj.get("metadata") or {}).get("name", "?") if isinstance(obj, Mapping) else "?"
            report.fail(f"policy {name} is not valid: " + "; ".join(str(e) for e in result.errors))
        else:
            policies.append(result.policy)
    world = _World(cmap, config)
    view = world.view(with_probes=True)
    for p in policies:
        view.upsert_policy(p)
    engine = _MemoEngine(view, config.cluster.ipBlockMatchesPods)
    ctx = Context(view, config, engine)
    _check_pod_flows(cmap, world, engine, report)
    _check_dns(cmap, world, ctx, report)
    _check_external_egress(cmap, world, engine, report)
    _check_external_ingress(cmap, world, engine, report)
    _check_lint(world, config, objs, report)
    return report


class _World:
    """The pods the proof reasons about: the map's workloads plus stand-ins for the rest."""

    def __init__(self, cmap: CommMap, config: Config):
        self.cmap = cmap
        self.config = config
        self.workload_pods = {w.key: w.as_pod() for w in cmap.workloads}
        self.unlisted = {ns: Pod(ns, UNLISTED_POD, {}, (PROBE_PORT,)) for ns in sorted(cmap.namespaces)}
        outside_ns = "netpol-guard-proof-elsewhere"
        while outside_ns in cmap.namespaces:
            outside_ns += "-x"
        self.elsewhere = Pod(outside_ns, UNLISTED_POD, {}, (PROBE_PORT,))
        # Pods elsewhere that carry a workload's labels and ports: a namespaceSelector widened
        # by mistake lets them in (or out), and only a lookalike can show it.
        self.lookalikes = [Pod(outside_ns, f"<lookalike of {w.key}>", dict(w.labels),
                               self.workload_pods[w.key].ports) for w in cmap.workloads]

    def namespaces(self) -> list[Namespace]:
        out = [n.as_namespace() for n in self.cmap.namespaces.values()]
        dns_ns = self.config.dns.namespace
        if dns_ns not in self.cmap.namespaces:
            out.append(Namespace(dns_ns, {NAME_LABEL: dns_ns}))
        return out

    def view(self, with_probes: bool) -> ClusterView:
        view = ClusterView()
        for ns in self.namespaces():
            view.upsert_namespace(ns)
        for pod in self.workload_pods.values():
            view.upsert_pod(pod)
        if with_probes:
            view.upsert_namespace(Namespace(self.elsewhere.namespace, {NAME_LABEL: self.elsewhere.namespace}))
            for pod in [*self.unlisted.values(), self.elsewhere, *self.lookalikes]:
                view.upsert_pod(pod)
        dns = self.config.dns
        view.upsert_pod(Pod(dns.namespace, "cluster-dns", dict(dns.podLabels),
                            (ContainerPort(53, "UDP", "dns"), ContainerPort(53, "TCP", "dns-tcp")), kind="Deployment"))
        return view

    def sources(self) -> list[Pod]:
        return [*self.workload_pods.values(), *self.unlisted.values(), self.elsewhere, *self.lookalikes]

    def destinations(self) -> list[Pod]:
        return [*self.workload_pods.values(), *self.unlisted.values(), *self.lookalikes]

    def senders(self, party_ns: str, workload: Workload | None) -> list[Pod]:
        """The pods a flow's source stands for."""
        if workload is not None:
            return [self.workload_pods[workload.key]]
        return [self.workload_pods[w.key] for w in self.cmap.workloads_in(party_ns)] + [self.unlisted[party_ns]]

    def managed(self, pod: Pod) -> bool:
        return self.cmap.managed(pod.namespace)


def _side_text(v) -> str:
    return f"{v.egress.explain()}; {v.ingress.explain()}"


def _check_pod_flows(cmap: CommMap, world: _World, engine: Engine, report: ProofReport) -> None:
    expected: set[FlowKey] = set()
    for f in cmap.flows:
        dst = world.workload_pods[f.destination.key]
        for src in world.senders(f.source.namespace, f.source.workload):
            for p in f.ports:
                expected.add((src.key, dst.key, p.number, p.protocol))
                v = engine.evaluate(Endpoint.of_pod(src), Endpoint.of_pod(dst), p.number, p.protocol)
                report.checks["allowed flows"] += 1
                if not v.allowed:
                    report.fail(f"flow {src.key} -> {dst.key} {p.number}/{p.protocol} (map line {f.line}) is "
                                f"denied, but the map allows it: {_side_text(v)}")
    sources = [(s, Endpoint.of_pod(s)) for s in world.sources()]
    dests = [(d, Endpoint.of_pod(d)) for d in world.destinations()]
    by_key = {p.key: (p, ep) for p, ep in sources + dests}
    managed_sources = sum(1 for s, _ in sources if world.managed(s))
    considered = sum(len(d.ports) * (len(sources) if world.managed(d) else managed_sources) for d, _ in dests)
    report.checks["denied flows"] += considered - sum(
        1 for s, d, _, _ in expected if world.managed(by_key[s][0]) or world.managed(by_key[d][0]))
    # Each side on its own: what does the ingress side of each destination let in, and the
    # egress side of each source let out? Anything beyond the map is a failure, even when
    # the other side happens to block it.
    for d, d_ep in dests:
        if not world.managed(d):
            continue
        allowed = side_allowances(engine, INGRESS, d, d_ep, sources, dests)
        for src_key, dst_key, port, proto in sorted(allowed - expected):
            v = engine.evaluate(by_key[src_key][1], d_ep, port, proto)
            report.fail(f"{src_key} -> {dst_key} {port}/{proto}, which the map does not allow, passes the "
                        f"ingress side: {v.ingress.explain()}")
    for s, s_ep in sources:
        if not world.managed(s):
            continue
        allowed = side_allowances(engine, EGRESS, s, s_ep, sources, dests)
        for src_key, dst_key, port, proto in sorted(allowed - expected):
            v = engine.evaluate(s_ep, by_key[dst_key][1], port, proto)
            report.fail(f"{src_key} -> {dst_key} {port}/{proto}, which the map does not allow, passes the "
                        f"egress side: {v.egress.explain()}")


def side_allowances(engine: Engine, direction: str, pod: Pod, pod_ep: Endpoint,
                    sources: list[tuple[Pod, Endpoint]], dests: list[tuple[Pod, Endpoint]]) -> set[FlowKey]:
    """Every (source, destination, port, protocol) that one side of `pod` lets through.

    The same decision as Engine.side() - isolated only when a policy selects the pod for
    the direction, then the union of those policies' rules, a rule matching when a peer
    and a port match (no peers / no ports: all) - but answered rule by rule over all peers
    at once instead of once per flow: the proof's hot loop. Peers are first narrowed to
    the namespaces a peer can match at all; Engine.peer_matches decides the rest. A test
    checks the result against Engine.evaluate flow by flow.
    """
    selecting = engine.policies_selecting(pod, direction)
    others = sources if direction == INGRESS else dests
    if not selecting:
        if direction == INGRESS:
            return {(s.key, pod.key, c.port, c.protocol) for s, _ in sources for c in pod.ports}
        return {(pod.key, d.key, c.port, c.protocol) for d, _ in dests for c in d.ports}
    by_ns: dict[str, list[tuple[Pod, Endpoint]]] = {}
    for o in others:
        by_ns.setdefault(o[0].namespace, []).append(o)
    out: set[FlowKey] = set()
    for pol in selecting:
        for rule in pol.rules_for(direction):
            if not rule.peers:
                matched = others
            else:
                matched = []
                for peer in rule.peers:
                    matched.extend(o for o in _peer_candidates(engine, pol, peer, by_ns, others)
                                   if engine.peer_matches(pol, peer, o[1]))
            if direction == INGRESS:
                ports = [c for c in pod.ports if not rule.ports
                         or any(engine.port_matches(spec, c.port, c.protocol, pod_ep) for spec in rule.ports)]
                out.update((s.key, pod.key, c.port, c.protocol) for s, _ in matched for c in ports)
            else:
                for d, d_ep in matched:
                    out.update((pod.key, d.key, c.port, c.protocol) for c in d.ports if not rule.ports
                               or any(engine.port_matches(spec, c.port, c.protocol, d_ep) for spec in rule.ports))
    return out


def _peer_candidates(engine: Engine, pol: NetworkPolicy, peer, by_ns, others):
    """The pods a peer could match judging by namespace alone (a superset; never fewer)."""
    if peer.ip_block is not None:
        return others  # pod IPs decide, when ipBlocks match pods at all
    if peer.namespace_selector is None:
        return by_ns.get(pol.namespace, [])
    return [o for ns, group in by_ns.items()
            if peer.namespace_selector.matches(engine.view.namespace_labels(ns)) for o in group]


def _check_dns(cmap: CommMap, world: _World, ctx: Context, report: ProofReport) -> None:
    dns_pods = [Endpoint.of_pod(p) for p in ctx.dns_pods]
    node_local = [Endpoint.of_ip(a) for a in ctx.config.dns.nodeLocalAddresses]
    for src in world.sources():
        if not world.managed(src):
            continue
        for dst in [*dns_pods, *node_local]:
            for proto in ("UDP", "TCP"):
                report.checks["DNS checks"] += 1
                v = ctx.engine.evaluate(Endpoint.of_pod(src), dst, 53, proto)
                if not v.allowed:
                    report.fail(f"DNS from {src.key} to {dst.describe()} 53/{proto} is denied: {_side_text(v)}")


def _samples(t: Target) -> list:
    """Addresses at both edges of a block, and just outside it."""
    net = t.network
    inside = {net.network_address, net.broadcast_address}
    if net.num_addresses > 2:
        inside = {net.network_address + 1, net.broadcast_address - 1}
    out = list(inside)
    for e in t.excluded:  # the map's excepts: their edges must be denied
        out += [e.network_address, e.broadcast_address]
    top = 2 ** net.max_prefixlen - 1
    if int(net.network_address) > 0:
        out.append(net.network_address - 1)
    if int(net.broadcast_address) < top:
        out.append(net.broadcast_address + 1)
    return out


def _check_external_egress(cmap: CommMap, world: _World, engine: Engine, report: ProofReport) -> None:
    node_local = {ipaddress.ip_address(a) for a in world.config.dns.nodeLocalAddresses}
    for ns in sorted(n for n in cmap.namespaces if cmap.managed(n)):
        entries = [e for e in cmap.egress if e.source.namespace == ns]
        ips = {*OUTSIDE_PROBES, METADATA_V4.network_address, METADATA_V6.network_address}
        ports = {(443, "TCP"), (80, "TCP")}
        for e in entries:
            for t in e.targets:
                ips.update(_samples(t))
            # both ends of a range, and just past its top
            listed = {(n, p.protocol) for p in e.ports for n in {p.number, p.last}}
            ports |= listed
            unlisted = max(p.last for p in e.ports) + 1
            if unlisted <= 65535:
                ports.add((unlisted, "TCP"))
        candidates = sorted(((ip, port, proto) for ip in ips for port, proto in ports),
                            key=lambda c: (c[0].version, c[0], c[1], c[2]))
        pods = world.senders(ns, None)
        for src in pods:
            mine = [e for e in entries if e.source.workload is None
                    or world.workload_pods[e.source.workload.key] is src]
            src_ep = Endpoint.of_pod(src)
            for ip, port, proto in candidates:
                expected = any(any(t.allows(ip) for t in e.targets) and any(
                    p.matches(port, proto) for p in e.ports) for e in mine)
                if ip in node_local and port == 53:
                    expected = True
                report.checks["external egress checks"] += 1
                v = engine.evaluate(src_ep, Endpoint.of_ip(ip), port, proto)
                if v.allowed != expected:
                    word = "allowed" if v.allowed else "denied"
                    want = "allows" if expected else "does not allow"
                    meta = " (the cloud metadata address)" if ip in (METADATA_V4.network_address,
                                                                    METADATA_V6.network_address) else ""
                    report.fail(f"egress from {src.key} to {ip}{meta} {port}/{proto} is {word}, but the map "
                                f"{want} it: {v.egress.explain()}")


def _check_external_ingress(cmap: CommMap, world: _World, engine: Engine, report: ProofReport) -> None:
    for ns in sorted(n for n in cmap.namespaces if cmap.managed(n)):
        entries = [x for x in cmap.ingress if x.destination.namespace == ns]
        ips = set(OUTSIDE_PROBES)
        for x in entries:
            for t in x.sources:
                ips.update(_samples(t))
        ordered = sorted(ips, key=lambda ip: (ip.version, ip))
        for w in cmap.workloads_in(ns):
            dst = world.workload_pods[w.key]
            dst_ep = Endpoint.of_pod(dst)
            mine = [x for x in entries if x.destination is w]
            for ip in ordered:
                for port in dst.ports:
                    expected = any(any(ip in t.network for t in x.sources) and any(
                        p.number == port.port and p.protocol == port.protocol for p in x.ports) for x in mine)
                    report.checks["external ingress checks"] += 1
                    v = engine.evaluate(Endpoint.of_ip(ip), dst_ep, port.port, port.protocol)
                    if v.allowed != expected:
                        word = "allowed" if v.allowed else "denied"
                        want = "allows" if expected else "does not allow"
                        report.fail(f"ingress from outside {ip} to {dst.key} {port.port}/{port.protocol} is "
                                    f"{word}, but the map {want} it: {v.ingress.explain()}")


def _check_lint(world: _World, config: Config, objs: list[Mapping[str, Any]], report: ProofReport) -> None:
    view = world.view(with_probes=False)
    origin = Origin(world.cmap.file)
    reports = check_all(view, config, [(o, origin) for o in objs])
    for r in reports:
        report.checks["linted policies"] += 1
        for f in r.findings:
            if f.severity in ("error", "warning"):
                report.fail(f"lint: {f.severity} [{f.rule}] {f.policy} {f.path}: {f.message}")
