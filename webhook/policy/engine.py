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

Admin network policies (policy.networking.k8s.io: v1alpha1 AdminNetworkPolicy and
BaselineAdminNetworkPolicy, v1alpha2 ClusterNetworkPolicy), when the view holds any, wrap
that decision per side (see docs/simulate.md):
- admin tier: the admin-tier policies whose subject selects the pod, lowest priority number
  first, each one's rules in written order; the first rule that matches decides. Allow
  (Accept) and Deny are final; Pass skips every remaining admin rule.
- then the NetworkPolicies above, if any isolates the pod for the direction;
- else the baseline tier, in the same way; a Pass there ends it;
- else allowed.
Peers the view cannot decide (a Node, a domain name, a CIDR against a pod whose IP is not
known) are assumed not to match, and the verdict says so in a caveat.
"""
from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass, field
from typing import Iterable, Optional

from webhook.cluster.objects import Pod
from webhook.cluster.view import ClusterView
from webhook.policy.model import (
    ACCEPT, ADMIN_TIER, ALLOW, CLUSTER_KIND, DENY, EGRESS, INGRESS, PASS, PEER_DOMAIN_NAMES, PEER_NAMESPACES, PEER_NETWORKS, PEER_NODES,
    PEER_PODS, AdminPeer, AdminPolicy, AdminPort, AdminRule, NetworkPolicy, Peer, PortSpec, Rule,
)

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
class AdminMatch:
    """The admin or baseline rule (and the peer and port within it) that matched a connection."""

    kind: str
    name: str
    priority: Optional[int]
    direction: str
    rule: int
    rule_name: str
    action: str
    peer: Optional[int] = None
    port: Optional[int] = None
    tier: str = ADMIN_TIER

    @property
    def allows(self) -> bool:
        return self.action == ALLOW or self.action == ACCEPT

    @property
    def path(self) -> str:
        p = f"spec.{self.direction.lower()}[{self.rule}]"
        if self.peer is not None:
            p += f".{'from' if self.direction == INGRESS else 'to'}[{self.peer}]"
        return p

    def describe(self) -> str:
        prio = f" (priority {self.priority})" if self.priority is not None else ""
        if self.kind == CLUSTER_KIND:
            prio = f" ({self.tier} tier, priority {self.priority})"
        rule = f" {self.rule_name!r}" if self.rule_name else ""
        return f"{self.kind} {self.name}{prio} {self.path}{rule}"

    def to_dict(self) -> dict:
        out = {"kind": self.kind, "name": self.name, "tier": self.tier, "action": self.action,
               "rule": self.rule, "ruleName": self.rule_name, "path": self.path}
        if self.priority is not None:
            out["priority"] = self.priority
        return out


@dataclass(frozen=True)
class SideVerdict:
    """The decision of one side: egress of the source or ingress of the destination."""

    direction: str
    endpoint: str
    isolated: bool
    selecting: tuple[str, ...] = ()  # policies that select the pod for this direction
    allowed_by: tuple[RuleRef, ...] = ()
    # Set only when the view holds admin policies (the NetworkPolicy-only answer is unchanged):
    admin: Optional[AdminMatch] = None  # the admin-tier Allow or Deny rule that decided
    passed: Optional[AdminMatch] = None  # the admin-tier Pass rule that handed over
    baseline: Optional[AdminMatch] = None  # the baseline rule that decided
    caveats: tuple[str, ...] = ()  # what the view cannot account for
    admin_in_view: bool = False

    @property
    def allowed(self) -> bool:
        if self.admin is not None:
            return self.admin.allows
        if self.isolated:
            return bool(self.allowed_by)
        if self.baseline is not None:
            return self.baseline.action != DENY  # a baseline Pass leaves the default: allowed
        return True

    @property
    def tier(self) -> str:
        """Which tier decided: admin, networkpolicy, baseline, or default (nothing applies)."""
        if self.admin is not None:
            return "admin"
        if self.isolated:
            return "networkpolicy"
        return "baseline" if self.baseline is not None else "default"

    def _admin_explain(self, side: str) -> str:
        word = "allowed" if self.allowed else "denied"
        if self.admin is not None:
            text = f"{side} {self.endpoint}: {word} by {self.admin.describe()}; NetworkPolicies are not consulted"
        else:
            then = f"passed by {self.passed.describe()}; " if self.passed else ""
            if self.isolated and self.allowed_by:
                text = f"{side} {self.endpoint}: {then}allowed by " + ", ".join(r.describe() for r in self.allowed_by)
            elif self.isolated:
                text = (f"{side} {self.endpoint}: {then}denied: isolated by " + ", ".join(self.selecting)
                        + " and no rule of theirs allows it")
            elif self.baseline is not None and self.baseline.action == PASS:
                text = (f"{side} {self.endpoint}: {then}passed by {self.baseline.describe()}, the last tier: allowed "
                        "(no NetworkPolicy isolates it)")
            elif self.baseline is not None:
                text = f"{side} {self.endpoint}: {then}{word} by {self.baseline.describe()} (no NetworkPolicy isolates it)"
            elif self.endpoint and "/" not in self.endpoint:
                text = f"{side} {self.endpoint}: allowed (not a cluster pod)"
            else:
                text = (f"{side} {self.endpoint}: {then}allowed (no admin or baseline rule matches and no "
                        "NetworkPolicy isolates it)")
        return text + "".join(f"\n    note: {c}" for c in self.caveats)

    def explain(self) -> str:
        side = "egress from" if self.direction == EGRESS else "ingress to"
        if self.admin_in_view:
            return self._admin_explain(side)
        if not self.isolated:
            why = "not a cluster pod" if self.endpoint and "/" not in self.endpoint else "no policy isolates it"
            return f"{side} {self.endpoint}: allowed ({why})"
        if self.allowed_by:
            return f"{side} {self.endpoint}: allowed by " + ", ".join(r.describe() for r in self.allowed_by)
        return (f"{side} {self.endpoint}: denied: isolated by " + ", ".join(self.selecting)
                + " and no rule of theirs allows it")

    def reason(self) -> str:
        """The shortest account of this side's decision, for matrix cells and diffs."""
        if self.admin_in_view:
            return self._admin_reason() + "".join(f" (note: {c})" for c in self.caveats)
        if not self.isolated:
            return "not isolated"
        if self.allowed_by:
            return "allowed by " + ", ".join(r.describe() for r in self.allowed_by)
        return "denied: isolated by " + ", ".join(self.selecting) + ", no rule allows"

    def _admin_reason(self) -> str:
        word = "allowed" if self.allowed else "denied"
        if self.admin is not None:
            return f"{word} by {self.admin.describe()}"
        then = f"passed by {self.passed.describe()}, then " if self.passed else ""
        if self.isolated and self.allowed_by:
            return then + "allowed by " + ", ".join(r.describe() for r in self.allowed_by)
        if self.isolated:
            return then + "denied: isolated by " + ", ".join(self.selecting) + ", no rule allows"
        if self.baseline is not None and self.baseline.action == PASS:
            return f"{then}passed by {self.baseline.describe()}, allowed"
        if self.baseline is not None:
            return f"{then}{word} by {self.baseline.describe()}"
        return then + "not isolated"


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
            out = {"allowed": s.allowed, "isolated": s.isolated, "policies": list(s.selecting),
                   "allowedBy": [{"policy": r.policy, "path": r.path} for r in s.allowed_by],
                   "explain": s.explain()}
            if s.admin_in_view:  # new keys only where admin policies exist: NetworkPolicy-only JSON is unchanged
                out["tier"] = s.tier
                out["adminRule"] = s.admin.to_dict() if s.admin else None
                out["passedBy"] = s.passed.to_dict() if s.passed else None
                out["baselineRule"] = s.baseline.to_dict() if s.baseline else None
                out["caveats"] = list(s.caveats)
            return out
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
        if self.admin_policies():
            return self._admin_side(direction, subject, peer, port, protocol, destination)
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

    # --- AdminNetworkPolicy and BaselineAdminNetworkPolicy ----------------------------------
    def admin_policies(self) -> list[AdminPolicy]:
        """The view's admin policies in evaluation order: the admin tier, then the baseline tier;
        within a tier by priority, then kind and name (the API leaves equal priorities to the
        implementation; verdicts say when that matters; the v1alpha1 baseline, which has no
        priority, comes after v1alpha2 baseline policies). Built once per view generation."""
        return self.view.memo(("admin-policies",), lambda: sorted(
            self.view.admin_policies(),
            key=lambda p: (p.tier != ADMIN_TIER, p.priority if p.priority is not None else 1001, p.kind, p.name)))

    def admin_selecting(self, pod: Pod, direction: str) -> list[AdminPolicy]:
        """Admin policies whose subject selects `pod` and which have rules for the direction
        (policies without rules for a direction do not affect it), in evaluation order."""
        key = ("admin", self.view.generation, pod.namespace, frozenset(pod.labels.items()), direction)
        found = self._selecting_cache.get(key)
        if found is None:
            ns_labels = self.view.namespace_labels(pod.namespace)
            found = [p for p in self.admin_policies()
                     if p.rules_for(direction) and p.namespace_selector.matches(ns_labels)
                     and (p.pod_selector is None or p.pod_selector.matches(pod.labels))]
            self._selecting_cache[key] = found
        return found

    def admin_peer_matches(self, peer: AdminPeer, other: Endpoint) -> Optional[bool]:
        """Whether an admin rule's peer matches the other end; None when the view cannot tell."""
        pod = other.pod
        if peer.kind == PEER_NAMESPACES or peer.kind == PEER_PODS:
            if pod is None:
                return False  # namespaces and pods peers select cluster pods only
            if not peer.namespace_selector.matches(self.view.namespace_labels(pod.namespace)):
                return False
            return peer.pod_selector is None or peer.pod_selector.matches(pod.labels)
        if peer.kind == PEER_NETWORKS:
            # Unlike a NetworkPolicy ipBlock, networks are checked against pod-to-pod traffic too
            # (the API says so: Deny 0.0.0.0/0 denies every IPv4 pod).
            if other.ip is not None:
                return any(other.ip in net for net in peer.networks)
            if pod is not None and pod.ips:
                return any(ipaddress.ip_address(i) in net for i in pod.ips for net in peer.networks)
            return None  # a workload template or a pod without a known IP
        if peer.kind in (PEER_NODES, PEER_DOMAIN_NAMES):
            # Pods are neither nodes nor domain names; an address outside the cluster may be
            # either, and the view holds no Nodes and resolves no names.
            return False if pod is not None else None
        return None

    @staticmethod
    def admin_port_matches(spec: AdminPort, port: int, protocol: str, destination: Endpoint) -> bool:
        if spec.name is not None:  # a named port takes the protocol the destination pod declares
            pod = destination.pod
            return pod is not None and any(p.name == spec.name and p.port == port and p.protocol == protocol
                                           for p in pod.ports)
        if spec.protocol != protocol:
            return False
        if spec.end_port is not None:
            return spec.port <= port <= spec.end_port
        return port == spec.port

    def admin_rule_match(self, policy: AdminPolicy, rule: AdminRule, peer_endpoint: Endpoint, port: int,
                         protocol: str, destination: Endpoint) -> tuple[Optional[AdminMatch], Optional[AdminPeer]]:
        """(the match, None) when the rule matches; (None, peer) when only a peer the view cannot
        decide might make it match; (None, None) when it does not."""
        port_idx: Optional[int] = None
        if rule.ports is not None:
            for spec in rule.ports:
                if self.admin_port_matches(spec, port, protocol, destination):
                    port_idx = spec.index
                    break
            else:
                return None, None
        unsure = None
        for peer in rule.peers:
            hit = self.admin_peer_matches(peer, peer_endpoint)
            if hit:
                return AdminMatch(policy.kind, policy.name, policy.priority, rule.direction, rule.index,
                                  rule.name, rule.action, peer.index, port_idx, policy.tier), None
            if hit is None and unsure is None:
                unsure = peer
        return None, unsure

    @staticmethod
    def _caveat(policy: AdminPolicy, rule: AdminRule, peer: AdminPeer, other: Endpoint) -> str:
        field = "from" if rule.direction == INGRESS else "to"
        if peer.kind == PEER_NETWORKS:
            why = f"the IP of {other.describe()} is not known (give the Pod with status.podIP)"
        elif peer.kind == PEER_NODES:
            why = f"Nodes are not in the view, so whether {other.describe()} is a node's address is unknown"
        else:
            why = f"domain names are not resolved, so whether {other.describe()} is one of them is unknown"
        return (f"{policy.describe()} {rule.path}.{field}[{peer.index}] ({peer.kind}, {rule.action}) may match: "
                f"{why}; this answer assumes it does not")

    def _first_match(self, policies: list[AdminPolicy], direction: str, peer: Endpoint, port: int, protocol: str,
                     destination: Endpoint, caveats: list) -> Optional[tuple[AdminPolicy, AdminMatch]]:
        """The first rule that matches, in order; rules only an undecidable peer could match
        are skipped and noted in `caveats` as (text, action)."""
        for pol in policies:
            for rule in pol.rules_for(direction):
                m, unsure = self.admin_rule_match(pol, rule, peer, port, protocol, destination)
                if m is not None:
                    return pol, m
                if unsure is not None:
                    caveats.append((self._caveat(pol, rule, unsure, peer), rule.action))
        return None

    def _admin_side(self, direction: str, subject: Endpoint, peer: Endpoint, port: int, protocol: str,
                    destination: Endpoint) -> SideVerdict:
        name = subject.describe()
        if subject.pod is None:  # admin subjects, like NetworkPolicies, select cluster pods only
            return SideVerdict(direction, name, isolated=False, admin_in_view=True)
        pod = subject.pod
        applying = self.admin_selecting(pod, direction)
        admins = [p for p in applying if p.tier == ADMIN_TIER]
        caveats: list[str] = []
        decided = passed = None
        first = self._first_match(admins, direction, peer, port, protocol, destination, caveats)
        if first is not None:
            pol, m = first
            if m.action == PASS:
                passed = m
            else:
                decided = m
            # Equal priorities leave the order to the network plugin: say so when it matters.
            for other in admins:
                if other is pol or other.priority != pol.priority:
                    continue
                rival = self._first_match([other], direction, peer, port, protocol, destination, [])
                if rival is not None and rival[1].action != m.action:
                    caveats.append((f"{other.describe()} {rival[1].path} also matches with {rival[1].action}: "
                                    f"policies of equal priority may be applied in any order by the network "
                                    f"plugin; this answer applies {pol.kind} {pol.name} first (by name)", None))
        selecting = self.policies_selecting(pod, direction)
        keys = tuple(sorted(p.key for p in selecting))
        if decided is not None:
            verdict = SideVerdict(direction, name, bool(selecting), keys, admin=decided, admin_in_view=True)
        elif selecting:
            allowed = []
            for pol in selecting:
                for rule in pol.rules_for(direction):
                    ref = self.rule_allows(pol, rule, peer, port, protocol, destination)
                    if ref:
                        allowed.append(ref)
            verdict = SideVerdict(direction, name, True, keys, tuple(allowed), passed=passed, admin_in_view=True)
        else:
            baselines = [p for p in applying if p.tier != ADMIN_TIER]
            found = self._first_match(baselines, direction, peer, port, protocol, destination, caveats)
            verdict = SideVerdict(direction, name, False, (), (), passed=passed,
                                  baseline=found[1] if found else None, admin_in_view=True)
        # A rule that might have matched matters only if it would have changed the answer.
        notes = tuple(text for text, action in caveats
                      if action is None or action == PASS or (action in (ALLOW, ACCEPT)) != verdict.allowed)
        return dataclasses.replace(verdict, caveats=notes) if notes else verdict
