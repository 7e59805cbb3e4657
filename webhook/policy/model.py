"""The typed, immutable NetworkPolicy model, with the API server's defaulting applied; and the
admin network policies of policy.networking.k8s.io (AdminPolicy, at the end).

Parsing and validation live in parse.py; this module only says what a policy *is*.
Absent and empty lists are kept apart where the difference is a mistake users make
(`from: []` reads like "no one" but means "everyone").
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Mapping, Optional

from webhook.policy.errors import frozen_record
from webhook.policy.selectors import LabelSelector

INGRESS, EGRESS = "Ingress", "Egress"
PROTOCOLS = ("TCP", "UDP", "SCTP")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class IPBlock:
    cidr: str
    network: IPNetwork
    excepts: tuple[str, ...] = ()
    except_networks: tuple[IPNetwork, ...] = ()

    def contains(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        if ip.version != self.network.version or ip not in self.network:
            return False
        return not any(ip in ex for ex in self.except_networks)

    @property
    def is_anywhere(self) -> bool:
        return self.network.prefixlen == 0


@frozen_record
class Peer:
    """One entry of `from`/`to`. Within a peer the selectors are ANDed."""

    index: int
    pod_selector: Optional[LabelSelector] = None
    namespace_selector: Optional[LabelSelector] = None
    ip_block: Optional[IPBlock] = None

    @property
    def is_pod_only(self) -> bool:
        return self.pod_selector is not None and self.namespace_selector is None

    @property
    def is_namespace_only(self) -> bool:
        return self.namespace_selector is not None and self.pod_selector is None


@frozen_record
class PortSpec:
    index: int
    protocol: str = "TCP"  # defaulted, as the API server does
    port: int | str | None = None  # None: every port of the protocol; str: a named port
    end_port: int | None = None

    def matches_number(self, port: int, protocol: str) -> bool:
        """Whether a numeric destination port matches, ignoring named ports."""
        if protocol != self.protocol:
            return False
        if self.port is None:
            return True
        if isinstance(self.port, str):
            return False
        if self.end_port is not None:
            return self.port <= port <= self.end_port
        return port == self.port

    def describe(self) -> str:
        if self.port is None:
            return f"all {self.protocol} ports"
        if self.end_port is not None:
            return f"{self.port}-{self.end_port}/{self.protocol}"
        return f"{self.port}/{self.protocol}"


@frozen_record
class Rule:
    """One ingress or egress rule."""

    direction: str  # INGRESS or EGRESS
    index: int
    peers: tuple[Peer, ...] = ()
    ports: tuple[PortSpec, ...] = ()
    peers_written_empty: bool = False  # `from: []` / `to: []` spelled out
    ports_written_empty: bool = False

    @property
    def all_peers(self) -> bool:
        return not self.peers

    @property
    def all_ports(self) -> bool:
        return not self.ports

    @property
    def peers_field(self) -> str:
        return "from" if self.direction == INGRESS else "to"

    @property
    def path(self) -> str:
        return f"spec.{self.direction.lower()}[{self.index}]"


def line_of_path(lines: Mapping[str, int], path: str, default: int = 0) -> int:
    """The line of the deepest field of `path` (``a.b[0].c``) that `lines` knows, else `default`."""
    p = path
    while p:
        line = lines.get(p)  # one lookup, not `in` and then `[]` (files.FieldLines walks a tree)
        if line is not None:
            return line
        cut = max(p.rfind("."), p.rfind("["))
        if cut <= 0:
            break
        p = p[:cut]
    return default


@dataclass(frozen=True)
class Origin:
    """Where a policy came from: file, first line, and field path -> line where known."""

    file: str
    line: int = 0
    lines: Mapping[str, int] = field(default_factory=dict)

    def line_of(self, path: str) -> int:
        """The line of the deepest known field on `path`."""
        return line_of_path(self.lines, path, self.line)


@dataclass(frozen=True)
class Contents:
    """What kinds of peers and ports a policy's written rules contain (every rule, whether or
    not policyTypes lets it take effect). The rules' preconditions (Rule.applies) ask a dozen
    such questions per review; answered from one pass, each costs an attribute read instead
    of its own walk over the rules (~0.5-1.5 us each)."""

    ip_block: bool = False  # some peer has an ipBlock
    named_port: bool = False  # some port is given by name
    namespace_selector: bool = False  # some peer has a non-empty namespaceSelector
    rule_without_peers: bool = False  # some rule has no (or an empty) from/to
    peers_written_empty: bool = False  # some rule spells out `from: []` / `to: []`
    # Some rule has both a namespace-only peer and a pod-only peer with a non-empty pod
    # selector (neither with an ipBlock): two peers ORed, where one peer may have been meant.
    namespace_and_pod_peers: bool = False

    @staticmethod
    def of(rules: tuple[Rule, ...]) -> "Contents":
        found: dict[str, bool] = {}
        for r in rules:
            if not r.peers:
                found["rule_without_peers"] = True
                if r.peers_written_empty:
                    found["peers_written_empty"] = True
            namespace_only = pod_only = False
            for p in r.peers:
                ns_sel = p.namespace_selector
                if p.ip_block is not None:
                    found["ip_block"] = True
                elif ns_sel is not None and p.pod_selector is None:
                    namespace_only = True
                elif ns_sel is None and p.pod_selector is not None and not p.pod_selector.is_empty:
                    pod_only = True
                if ns_sel is not None and not ns_sel.is_empty:
                    found["namespace_selector"] = True
            if namespace_only and pod_only:
                found["namespace_and_pod_peers"] = True
            for s in r.ports:
                if isinstance(s.port, str):
                    found["named_port"] = True
        return Contents(**found)


@frozen_record(eq=False)
class NetworkPolicy:
    name: str
    namespace: str
    pod_selector: LabelSelector
    policy_types: frozenset[str]
    ingress: tuple[Rule, ...] = ()
    egress: tuple[Rule, ...] = ()
    policy_types_written: bool = False
    ingress_written: bool = False  # the `ingress` key is present (even when empty)
    egress_written: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)
    origin: Optional[Origin] = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def isolates_ingress(self) -> bool:
        return INGRESS in self.policy_types

    @property
    def isolates_egress(self) -> bool:
        return EGRESS in self.policy_types

    @cached_property
    def contents(self) -> Contents:
        """Computed on first use and kept with this (immutable) policy object."""
        return Contents.of(self.ingress + self.egress)

    def rules_for(self, direction: str) -> tuple[Rule, ...]:
        """The rules that take effect for a direction ([] when the direction is not isolated)."""
        if direction not in self.policy_types:
            return ()
        return self.ingress if direction == INGRESS else self.egress

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NetworkPolicy) and self.key == other.key and self.raw == other.raw


# --- Admin network policies (policy.networking.k8s.io) ---------------------------------------
# Cluster-scoped policies from kubernetes-sigs/network-policy-api that network plugins which
# implement them apply around NetworkPolicies: the admin tier first (Allow/Accept and Deny are
# final, Pass hands over), then NetworkPolicies, then the baseline tier for pods no
# NetworkPolicy isolates. v1alpha1 has AdminNetworkPolicy (admin tier) and the
# BaselineAdminNetworkPolicy (baseline tier); v1alpha2 replaces both with ClusterNetworkPolicy,
# whose `tier` says which.

ADMIN_KIND, BASELINE_KIND = "AdminNetworkPolicy", "BaselineAdminNetworkPolicy"
CLUSTER_KIND = "ClusterNetworkPolicy"
ALLOW, ACCEPT, DENY, PASS = "Allow", "Accept", "Deny", "Pass"  # Accept: v1alpha2's word for Allow
ADMIN_TIER, BASELINE_TIER = "admin", "baseline"

# Peer kinds. The view knows no Nodes and resolves no domain names: rules with such peers
# can match an address outside the cluster without the engine being able to tell.
PEER_NAMESPACES, PEER_PODS, PEER_NETWORKS = "namespaces", "pods", "networks"
PEER_NODES, PEER_DOMAIN_NAMES = "nodes", "domainNames"


@frozen_record
class AdminPeer:
    """One entry of an admin rule's `from`/`to`: exactly one kind of peer."""

    index: int
    kind: str  # one of the PEER_* names
    namespace_selector: Optional[LabelSelector] = None  # namespaces, and pods' namespaceSelector
    pod_selector: Optional[LabelSelector] = None  # pods only
    node_selector: Optional[LabelSelector] = None  # nodes only
    networks: tuple[IPNetwork, ...] = ()
    domain_names: tuple[str, ...] = ()


@frozen_record
class AdminPort:
    """One entry of an admin rule's `ports`: a number, a range or a container port name."""

    index: int
    protocol: str = "TCP"  # defaulted as the CRD does; a named port takes the pod's protocol
    port: Optional[int] = None  # portNumber.port, or portRange.start
    end_port: Optional[int] = None  # portRange.end
    name: Optional[str] = None  # namedPort

    def describe(self) -> str:
        if self.name is not None:
            return f"named port {self.name}"
        if self.end_port is not None:
            return f"{self.port}-{self.end_port}/{self.protocol}"
        return f"{self.port}/{self.protocol}"


@frozen_record
class AdminRule:
    direction: str  # INGRESS or EGRESS
    index: int
    action: str  # ALLOW (ACCEPT in v1alpha2), DENY or PASS

    @property
    def allows(self) -> bool:
        return self.action == ALLOW or self.action == ACCEPT
    peers: tuple[AdminPeer, ...]
    ports: Optional[tuple[AdminPort, ...]] = None  # None: every port
    name: str = ""

    @property
    def path(self) -> str:
        return f"spec.{self.direction.lower()}[{self.index}]"


@frozen_record(eq=False)
class AdminPolicy:
    """An AdminNetworkPolicy (admin tier, with a priority), the BaselineAdminNetworkPolicy
    (baseline tier, no priority) or a ClusterNetworkPolicy (either tier, with a priority).
    The subject selects pods by namespace labels, and by pod labels when `pod_selector` is
    set (`subject.pods`)."""

    kind: str  # ADMIN_KIND, BASELINE_KIND or CLUSTER_KIND
    name: str
    namespace_selector: LabelSelector
    pod_selector: Optional[LabelSelector] = None
    priority: Optional[int] = None
    ingress: tuple[AdminRule, ...] = ()
    egress: tuple[AdminRule, ...] = ()
    tier: str = ADMIN_TIER  # ADMIN_TIER or BASELINE_TIER
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)
    origin: Optional[Origin] = None

    @property
    def key(self) -> str:
        """Cluster-scoped: the kind and the name tell policies apart."""
        return f"{self.kind}/{self.name}"

    def describe(self) -> str:
        if self.priority is None:
            return f"{self.kind} {self.name}"
        if self.kind == CLUSTER_KIND:
            return f"{self.kind} {self.name} ({self.tier} tier, priority {self.priority})"
        return f"{self.kind} {self.name} (priority {self.priority})"

    def rules_for(self, direction: str) -> tuple[AdminRule, ...]:
        return self.ingress if direction == INGRESS else self.egress

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AdminPolicy) and self.key == other.key and self.raw == other.raw
