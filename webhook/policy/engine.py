"""The connectivity engine: may A reach B on port P, and which policies decide?

Semantics (see design.md), in the order they are applied:
- A connection needs the egress side of the source AND the ingress side of the destination.
- A pod is isolated for a direction only when some policy selecting it lists that direction
  in policyTypes; then only the union of those policies' rules allows traffic.
- A rule with no peers matches every peer; with no ports, every port.
- A peer: podSelector only = pods of the policy's namespace; namespaceSelector only = all
  pods of matching namespaces; both = AND. Peers in a list are ORed.
- ipBlock describes addresses outside the cluster; it matches pod IPs only when the
  `ip_block_matches_pods` switch is on (CNIs differ; off by default).
- A named port resolves against the destination pod's container ports, per protocol.
- Endpoints outside the cluster (plain IPs) have no policies: their side always allows.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Iterable, Optional

from webhook.cluster.objects import Pod
from webhook.cluster.view import ClusterView
from webhook.policy.model import EGRESS, INGRESS, NetworkPolicy, Peer, PortSpec, Rule

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Endpoint:
    """A pod (or workload template) in the cluster, or an address outside it."""

    pod: Optional[Pod] = None
    ip: Optional[IPAddress] = None

    @staticmethod
    def of_pod(pod: Pod) -> "Endpoint":
        return Endpoint(pod=pod)

    @staticmethod
    def of_ip(ip: str | IPAddress) -> "Endpoint":
        return Endpoint(ip=ipaddress.ip_address(ip) if isinstance(ip, str) else ip)

    @property
    def in_cluster(self) -> bool:
        return self.pod is not None

    def describe(self) -> str:
        return self.pod.ref if self.pod else str(self.ip)


@dataclass(frozen=True)
class RuleRef:
    """The rule (and the peer and port within it) that allowed a connection."""

    policy: str
    direction: str
    rule: int
    peer: Optional[int] = None
    port: Optional[int] = None

    @property
    def path(self) -> str:
        p = f"spec.{self.direction.lower()}[{self.rule}]"
        if self.peer is not None:
            p += f".{'from' if self.direction == INGRESS else 'to'}[{self.peer}]"
        return p

    def describe(self) -> str:
        return f"{self.policy} {self.path}"


@dataclass(frozen=True)
class SideVerdict:
    """The decision of one side: egress of the source or ingress of the destination."""

    direction: str
    endpoint: str
    isolated: bool
    selecting: tuple[str, ...] = ()  # policies that select the pod for this direction
    allowed_by: tuple[RuleRef, ...] = ()

    @property
    def allowed(self) -> bool:
        return not self.isolated or bool(self.allowed_by)

    def explain(self) -> str:
        side = "egress from" if self.direction == EGRESS else "ingress to"
        if not self.isolated:
            why = "not a cluster pod" if self.endpoint and "/" not in self.endpoint else "no policy isolates it"
            return f"{side} {self.endpoint}: allowed ({why})"
        if self.allowed_by:
            return f"{side} {self.endpoint}: allowed by " + ", ".join(r.describe() for r in self.allowed_by)
        return (f"{side} {self.endpoint}: denied: isolated by " + ", ".join(self.selecting)
                + " and no rule of theirs allows it")

    def reason(self) -> str:
        """The shortest account of this side's decision, for matrix cells and diffs."""
        if not self.isolated:
            return "not isolated"
        if self.allowed_by:
            return "allowed by " + ", ".join(r.describe() for r in self.allowed_by)
        return "denied: isolated by " + ", ".join(self.selecting) + ", no rule allows"


@dataclass(frozen=True)
class Verdict:
    source: str
    destination: str
    port: int
    protocol: str
    egress: SideVerdict
    ingress: SideVerdict

    @property
    def allowed(self) -> bool:
        return self.egress.allowed and self.ingress.allowed

    def explain(self) -> str:
        """Both sides, one line each: a connection needs both."""
        return self.egress.explain() + "\n" + self.ingress.explain()

    def reason(self) -> str:
        """Which side decides: the denying side(s) when denied, both allowances when allowed."""
        if self.allowed:
            return f"egress {self.egress.reason()}; ingress {self.ingress.reason()}"
        return "; ".join(f"{s.direction.lower()} {s.reason()}" for s in (self.egress, self.ingress)
                         if not s.allowed)

    def to_dict(self) -> dict:
        def side(s: SideVerdict) -> dict:
            return {"allowed": s.allowed, "isolated": s.isolated, "policies": list(s.selecting),
                    "allowedBy": [{"policy": r.policy, "path": r.path} for r in s.allowed_by],
                    "explain": s.explain()}
        return {"allowed": self.allowed, "from": self.source, "to": self.destination,
                "port": self.port, "protocol": self.protocol,
                "egress": side(self.egress), "ingress": side(self.ingress)}


@dataclass
class Engine:
    view: ClusterView
    ip_block_matches_pods: bool = False
    # Policies that override the view's by namespace/name (an admission candidate, lint input).
    overlay: dict[str, NetworkPolicy] = field(default_factory=dict)
    removed: frozenset[str] = frozenset()
    # (view generation, namespace, labels, direction) -> selecting policies. Pods of one
    # workload share labels, so a matrix asks the same question many times.
    _selecting_cache: dict = field(default_factory=dict, repr=False, compare=False)

    def with_overlay(self, policies: Iterable[NetworkPolicy], removed: Iterable[str] = ()) -> "Engine":
        over = dict(self.overlay)
        for p in policies:
            over[p.key] = p
        return Engine(self.view, self.ip_block_matches_pods, over, frozenset(removed) | self.removed)

    # --- which policies apply ------------------------------------------------------------
    def policies_in(self, namespace: str) -> list[NetworkPolicy]:
        stored = self.view.policies(namespace)
        if self.removed:
            stored = [p for p in stored if p.key not in self.removed]
        over = [p for p in self.overlay.values() if p.namespace == namespace]
        if not over:
            return stored
        pols = {p.name: p for p in stored}  # within one namespace a policy's key is its name
        for p in over:
            pols[p.name] = p
        return list(pols.values())

    def holds(self, policy: NetworkPolicy) -> bool:
        """Whether this very object is one policies_in() lists (the overlay's or the view's own)."""
        key = policy.key
        over = self.overlay.get(key)
        if over is not None:
            return over is policy
        return key not in self.removed and self.view.policy(policy.namespace, policy.name) is policy

    def policies_selecting(self, pod: Pod, direction: str) -> list[NetworkPolicy]:
        key = (self.view.generation, pod.namespace, frozenset(pod.labels.items()), direction)
        found = self._selecting_cache.get(key)
        if found is None:
            if len(self._selecting_cache) > 100_000:  # a long-lived engine over a live view
                self._selecting_cache.clear()
            found = [p for p in self.policies_in(pod.namespace)
                     if direction in p.policy_types and p.pod_selector.matches(pod.labels)]
            self._selecting_cache[key] = found
        return list(found)

    # --- matching --------------------------------------------------------------------------
    def peer_matches(self, policy: NetworkPolicy, peer: Peer, other: Endpoint) -> bool:
        if peer.ip_block is not None:
            if other.ip is not None:
                return peer.ip_block.contains(other.ip)
            if self.ip_block_matches_pods and other.pod is not None:
                return any(peer.ip_block.contains(ipaddress.ip_address(i)) for i in other.pod.ips)
            return False
        pod = other.pod
        if pod is None:
            return False  # selectors only ever select cluster pods
        if peer.namespace_selector is None:
            if pod.namespace != policy.namespace:
                return False
        elif not peer.namespace_selector.matches(self.view.namespace_labels(pod.namespace)):
            return False
        return peer.pod_selector is None or peer.pod_selector.matches(pod.labels)

    @staticmethod
    def port_matches(spec: PortSpec, port: int, protocol: str, destination: Endpoint) -> bool:
        if isinstance(spec.port, str):
            if spec.protocol != protocol or destination.pod is None:
                return False
            return destination.pod.named_port(spec.port, spec.protocol) == port
        return spec.matches_number(port, protocol)

    def rule_allows(self, policy: NetworkPolicy, rule: Rule, peer_endpoint: Endpoint, port: int,
                    protocol: str, destination: Endpoint) -> Optional[RuleRef]:
        """A reference to the matching peer/port if `rule` allows the connection, else None."""
        port_idx: Optional[int] = None
        if rule.ports:
            for spec in rule.ports:
                if self.port_matches(spec, port, protocol, destination):
                    port_idx = spec.index
                    break
            else:
                return None
        peer_idx: Optional[int] = None
        if rule.peers:
            for peer in rule.peers:
                if self.peer_matches(policy, peer, peer_endpoint):
                    peer_idx = peer.index
                    break
            else:
                return None
        return RuleRef(policy.key, rule.direction, rule.index, peer_idx, port_idx)

    # rule_allows in two halves, for callers that ask one rule about several protocols toward
    # the same peer (the DNS checks), so the peer half is not repeated per protocol.
    def rule_ports_allow(self, rule: Rule, port: int, protocol: str, destination: Endpoint) -> bool:
        if not rule.ports:
            return True
        for spec in rule.ports:
            if self.port_matches(spec, port, protocol, destination):
                return True
        return False

    def rule_peers_allow(self, policy: NetworkPolicy, rule: Rule, peer_endpoint: Endpoint) -> bool:
        if not rule.peers:
            return True
        for peer in rule.peers:
            if self.peer_matches(policy, peer, peer_endpoint):
                return True
        return False

    # --- decisions -------------------------------------------------------------------------
    def side(self, direction: str, subject: Endpoint, peer: Endpoint, port: int, protocol: str,
             destination: Endpoint) -> SideVerdict:
        if subject.pod is None:
            return SideVerdict(direction, subject.describe(), isolated=False)
        selecting = self.policies_selecting(subject.pod, direction)
        if not selecting:
            return SideVerdict(direction, subject.describe(), isolated=False)
        allowed = []
        for pol in selecting:
            for rule in pol.rules_for(direction):
                ref = self.rule_allows(pol, rule, peer, port, protocol, destination)
                if ref:
                    allowed.append(ref)
        return SideVerdict(direction, subject.describe(), True,
                           tuple(sorted(p.key for p in selecting)), tuple(allowed))

    def evaluate(self, source: Endpoint, destination: Endpoint, port: int, protocol: str = "TCP") -> Verdict:
        protocol = protocol.upper()  # policies hold the API's upper-case spelling
        egress = self.side(EGRESS, source, destination, port, protocol, destination)
        ingress = self.side(INGRESS, destination, source, port, protocol, destination)
        return Verdict(source.describe(), destination.describe(), port, protocol, egress, ingress)
