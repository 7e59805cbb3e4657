"""IP blocks: CIDRs written loosely, cloud metadata left reachable, cluster addresses used
where selectors belong, and "anywhere" that covers one IP family only."""
from __future__ import annotations

import bisect
import ipaddress
import socket
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator, Optional, Union

from webhook.cluster.objects import Pod, Service
from webhook.policy.engine import Endpoint
from webhook.policy.model import EGRESS, INGRESS, IPBlock, NetworkPolicy, Peer, Rule
from webhook.rules.base import Example, Hit, rule
from webhook.rules.context import Context, has_ip_block, isolates_egress, name_selector
from webhook.rules.fixes import snippet
from webhook.rules.inventory import CLUSTER, DNS_EGRESS

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

# Cloud instance metadata (AWS, GCP, Azure, OpenStack...; AWS also serves it over IPv6).
METADATA_ADDRESSES = ("169.254.169.254", "fd00:ec2::254")
METADATA_PORT = 80
# Parsed once: the check asks about them for every egress rule of every policy.
_METADATA_ENDPOINTS = tuple((addr, Endpoint.of_ip(addr)) for addr in METADATA_ADDRESSES)
# A block inside these ranges names link-local / metadata addresses on purpose.
_DELIBERATE = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fd00:ec2::/32"))


def _host_len(version: int) -> int:
    return 32 if version == 4 else 128


def _as_cidr(addr: str) -> str:
    ip = ipaddress.ip_address(addr)
    return f"{ip}/{_host_len(ip.version)}"


def _ip_block_peers(rules: tuple[Rule, ...]) -> Iterator[tuple[Rule, Peer, IPBlock]]:
    for r in rules:
        for peer in r.peers:
            if peer.ip_block is not None:
                yield r, peer, peer.ip_block


def _block_path(r: Rule, peer: Peer) -> str:
    return f"{r.path}.{r.peers_field}[{peer.index}].ipBlock"


def _block_dict(block: IPBlock, extra_excepts: tuple[str, ...] = ()) -> dict:
    out: dict = {"cidr": block.cidr}
    excepts = list(block.excepts) + [e for e in extra_excepts if e not in block.excepts]
    if excepts:
        out["except"] = excepts
    return out


# --- ipblock-host-bits ---------------------------------------------------------------------------

# A pure function of the text; the same few CIDRs recur (see parse_cidr). Callers pass CIDRs
# of a parsed policy, so the text is short (parse_cidr accepted it).
@lru_cache(maxsize=1024)
def canonical_cidr(text: str) -> Optional[str]:
    """The canonical form of a CIDR with host bits set (`10.0.0.1/8` -> `10.0.0.0/8`), else None."""
    try:
        ipaddress.ip_network(text, strict=True)
        return None
    except ValueError:
        try:
            return str(ipaddress.ip_network(text, strict=False))
        except ValueError:
            return None  # not a CIDR at all: invalid-spec's finding


@rule(
    id="ipblock-host-bits", category="ipblock", severity="warning",
    applies=has_ip_block,
    summary="An ipBlock CIDR has host bits set, so it covers more (or other) addresses than it reads.",
    rationale="""
`cidr: 10.0.0.1/8` is accepted by the API server and means `10.0.0.0/8` - sixteen million
addresses, not the one host the author had in mind (that would be `10.0.0.1/32`). The
same holds inside `except`, where a loose CIDR can carve out far more than intended.
Writing the canonical network address makes the real extent visible in review.
""",
    bad=(Example("a host address with a /8 prefix", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-egress, namespace: shop, annotations: {description: "api may call the payment gateway"}}
spec:
  podSelector: {matchLabels: {app: api}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 203.0.113.10/24}}]
    ports: [{port: 443}]""" + DNS_EGRESS + CLUSTER),
         Example("host bits in except", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-egress, namespace: shop, annotations: {description: "api may call partners"}}
spec:
  podSelector: {matchLabels: {app: api}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 198.51.100.0/24, except: [198.51.100.77/28]}}]
    ports: [{port: 443}]""" + DNS_EGRESS + CLUSTER)),
    good=(Example("canonical CIDRs", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-egress, namespace: shop, annotations: {description: "api may call the payment gateway"}}
spec:
  podSelector: {matchLabels: {app: api}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 203.0.113.10/32}}, {ipBlock: {cidr: 198.51.100.0/24, except: [198.51.100.64/28]}}]
    ports: [{port: 443}]""" + DNS_EGRESS + CLUSTER),),
)
def ipblock_host_bits(policy: NetworkPolicy, ctx: Context) -> Iterator[Hit]:
    # Every written rule: a loose CIDR is misleading even where policyTypes ignores it.
    for r, peer, block in _ip_block_peers(policy.ingress + policy.egress):
        path = _block_path(r, peer)
        fixed = canonical_cidr(block.cidr)
        if fixed:
            yield Hit(f"{path}.cidr",
                      f"{block.cidr} has host bits set and means {fixed}"
                      f" ({block.network.num_addresses} addresses); write {fixed}, or "
                      f"{_as_cidr(block.cidr.split('/')[0])} for the one host",
                      snippet({"cidr": fixed}))
        for i, ex in enumerate(block.excepts):
            fixed_ex = canonical_cidr(ex)
            if fixed_ex:
                canon = [canonical_cidr(e) or e for e in block.excepts]
                yield Hit(f"{path}.except[{i}]",
                          f"except {ex} has host bits set and means {fixed_ex}",
                          snippet({"except": canon}))


# --- ipblock-metadata-reachable ------------------------------------------------------------------

def _deliberate(block: IPBlock) -> bool:
    return any(block.network.version == net.version and block.network.subnet_of(net) for net in _DELIBERATE)


@rule(
    id="ipblock-metadata-reachable", category="ipblock", severity="warning",
    applies=isolates_egress,
    summary="Egress lets pods reach the cloud metadata service (169.254.169.254) on port 80.",
    rationale="""
The instance metadata endpoint hands out the node's cloud credentials to anyone who can
reach it. `0.0.0.0/0` (or an allow-all egress rule) on port 80 or all ports includes it,
so a compromised pod can take the node's identity. Add `169.254.169.254/32` (and
`fd00:ec2::254/128` for IPv6 on AWS) to the block's `except`. A block written inside the
link-local range is taken as a deliberate grant and not reported.
""",
    bad=(Example("internet egress without an except", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-egress, namespace: shop, annotations: {description: "api may call the internet"}}
spec:
  podSelector: {matchLabels: {app: api}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 0.0.0.0/0}}, {ipBlock: {cidr: "::/0"}}]""" + DNS_EGRESS + CLUSTER),),
    good=(Example("internet egress except metadata", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-egress, namespace: shop, annotations: {description: "api may call the internet"}}
spec:
  podSelector: {matchLabels: {app: api}}
  policyTypes: [Egress]
  egress:
  - to:
    - ipBlock: {cidr: 0.0.0.0/0, except: [169.254.169.254/32]}
    - ipBlock: {cidr: "::/0", except: ["fd00:ec2::254/128"]}""" + DNS_EGRESS + CLUSTER),
          Example("only HTTPS to the internet", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-egress, namespace: shop, annotations: {description: "api may call HTTPS APIs"}}
spec:
  podSelector: {matchLabels: {app: api}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 0.0.0.0/0}}, {ipBlock: {cidr: "::/0"}}]
    ports: [{port: 443}]""" + DNS_EGRESS + CLUSTER)),
)
def ipblock_metadata_reachable(policy: NetworkPolicy, ctx: Context) -> Iterator[Hit]:
    engine = ctx.engine
    for r in policy.rules_for(EGRESS):
        reachable = []
        for addr, ep in _METADATA_ENDPOINTS:
            if engine.rule_allows(policy, r, ep, METADATA_PORT, "TCP", ep) is None:
                continue
            reachable.append(addr)
        if not reachable:
            continue
        ports = "on every port" if r.all_ports else f"on port {METADATA_PORT}"
        if r.all_peers:
            yield Hit(r.path,
                      f"this rule allows every destination {ports}, the cloud metadata service "
                      f"({', '.join(reachable)}) included; list destinations with the metadata "
                      f"address excepted",
                      snippet({"to": [{"namespaceSelector": {}},
                                      {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]}},
                                      {"ipBlock": {"cidr": "::/0", "except": ["fd00:ec2::254/128"]}}]}))
            continue
        for peer in r.peers:
            block = peer.ip_block
            if block is None or _deliberate(block):
                continue
            hits = [a for a, ep in _METADATA_ENDPOINTS if a in reachable and block.contains(ep.ip)]
            if not hits:
                continue
            yield Hit(_block_path(r, peer),
                      f"{block.cidr} includes the cloud metadata service {hits[0]} {ports}: a pod can "
                      f"read the node's cloud credentials; add it to `except`",
                      snippet({"ipBlock": _block_dict(block, tuple(_as_cidr(a) for a in hits))}))


# --- ipblock-targets-cluster ---------------------------------------------------------------------

@dataclass(frozen=True)
class _Owner:
    ip: str
    pod: Optional[Pod] = None
    service: Optional[Service] = None


class _AddressIndex:
    """Pod and Service IPs in view, sorted once per view generation and shared by every review,
    so a block's cluster addresses are a binary search, not a walk over every pod."""

    def __init__(self, ctx: Context) -> None:
        entries: list[tuple[int, int, int, _Owner]] = []
        seq = 0
        for pod in ctx.view.pods():
            for text in pod.ips:
                parsed = _ip_key(text)
                if parsed is not None:
                    seq += 1
                    entries.append((*parsed, seq, _Owner(text, pod=pod)))
        for svc in ctx.view.services():
            for text in svc.cluster_ips:
                parsed = _ip_key(text)
                if parsed is not None:
                    seq += 1
                    entries.append((*parsed, seq, _Owner(text, service=svc)))
        entries.sort(key=lambda e: e[:3])
        self.keys = [(v, n) for v, n, _, _ in entries]
        self.owners = [e[3] for e in entries]
        self.pod_nets = _networks(ctx.config.cluster.podCIDRs)
        self.service_nets = _networks(ctx.config.cluster.serviceCIDRs)

    def within(self, block: IPBlock, limit: int = 3) -> list[_Owner]:
        net = block.network
        lo = bisect.bisect_left(self.keys, (net.version, int(net.network_address)))
        hi = bisect.bisect_right(self.keys, (net.version, int(net.broadcast_address)))
        excepts = [(int(ex.network_address), int(ex.broadcast_address))
                   for ex in block.except_networks if ex.version == net.version]
        out = []
        for i in range(lo, hi):
            n = self.keys[i][1]
            if any(a <= n <= b for a, b in excepts):
                continue
            out.append(self.owners[i])
            if len(out) >= limit:
                break
        return out


def _ip_key(text: str) -> Optional[tuple[int, int]]:
    """(version, integer) of an address; socket's C parser, as pods number in the tens of thousands."""
    for family, version in ((socket.AF_INET, 4), (socket.AF_INET6, 6)):
        try:
            return version, int.from_bytes(socket.inet_pton(family, text), "big")
        except (OSError, ValueError):
            continue
    return None


def _networks(cidrs) -> list[IPNetwork]:
    out = []
    for c in cidrs:
        try:
            out.append(ipaddress.ip_network(c, strict=False))
        except ValueError:
            continue  # the configuration loader reports these
    return out


def _address_index(ctx: Context) -> _AddressIndex:
    return ctx.shared("ipblock-addresses", lambda: _AddressIndex(ctx))


def _selector_peer(namespace: str, labels) -> dict:
    return {"namespaceSelector": name_selector(namespace), "podSelector": {"matchLabels": dict(labels)}}


def _placeholder_peer() -> dict:
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "<namespace>"}},
            "podSelector": {"matchLabels": {"app": "<app>"}}}


@rule(
    id="ipblock-targets-cluster", category="ipblock", severity="warning",
    applies=has_ip_block,
    summary="An ipBlock names pod or Service addresses, which policies do not reliably match.",
    rationale="""
`ipBlock` is meant for addresses outside the cluster. Pod IPs change on every restart, and
whether an ipBlock matches pod traffic at all differs between CNIs (many ignore it for
pods); Service IPs are translated to pod IPs before policy applies, so a block naming a
ClusterIP never matches. Select the pods with `namespaceSelector` and `podSelector`
instead. Reported when a block lies inside the configured pod or service network
(`cluster.podCIDRs`, `cluster.serviceCIDRs`) or contains pod or Service IPs in view;
`0.0.0.0/0` and `::/0` mean "anywhere" and are not this mistake.
""",
    bad=(Example("a pod IP as an ipBlock", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-egress, namespace: shop, annotations: {description: "api may call the db"}}
spec:
  podSelector: {matchLabels: {app: api}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 10.244.1.17/32}}]
    ports: [{port: 5432}]""" + DNS_EGRESS + CLUSTER + """
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: shop, labels: {app: db, tier: data}}
spec:
  containers: [{name: postgres, image: "postgres:16", ports: [{name: postgres, containerPort: 5432}]}]
status: {podIP: 10.244.1.17, podIPs: [{ip: 10.244.1.17}]}
"""),
         Example("a Service ClusterIP as an ipBlock", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: frontend-egress, namespace: shop, annotations: {description: "frontend may call api"}}
spec:
  podSelector: {matchLabels: {app: frontend}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 10.96.12.40/32}}]
    ports: [{port: 80}]""" + DNS_EGRESS + CLUSTER + """
---
apiVersion: v1
kind: Service
metadata: {name: api-internal, namespace: shop}
spec:
  selector: {app: api}
  clusterIP: 10.96.12.40
  ports: [{port: 80, targetPort: 8080}]
""")),
    good=(Example("selectors for pods, ipBlock for the outside", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-egress, namespace: shop, annotations: {description: "api may call db and the partner API"}}
spec:
  podSelector: {matchLabels: {app: api}}
  policyTypes: [Egress]
  egress:
  - to: [{podSelector: {matchLabels: {app: db}}}]
    ports: [{port: 5432}]
  - to: [{ipBlock: {cidr: 203.0.113.0/24}}]
    ports: [{port: 443}]""" + DNS_EGRESS + CLUSTER + """
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: shop, labels: {app: db, tier: data}}
spec:
  containers: [{name: postgres, image: "postgres:16", ports: [{name: postgres, containerPort: 5432}]}]
status: {podIP: 10.244.1.17}
"""),),
)
def ipblock_targets_cluster(policy: NetworkPolicy, ctx: Context) -> Iterator[Hit]:
    index: Optional[_AddressIndex] = None
    for direction in (INGRESS, EGRESS):
        for r, peer, block in _ip_block_peers(policy.rules_for(direction)):
            if block.is_anywhere:
                continue
            index = index or _address_index(ctx)
            path = _block_path(r, peer)
            hit = _cluster_target(ctx, block, index, path, r.peers_field)
            if hit:
                yield hit


def _cluster_target(ctx: Context, block: IPBlock, index: _AddressIndex, path: str, field: str) -> Optional[Hit]:
    net = block.network
    owners = index.within(block)
    pods = [o.pod for o in owners if o.pod is not None]
    services = [o.service for o in owners if o.service is not None]
    for kind, nets in (("service", index.service_nets), ("pod", index.pod_nets)):
        for cluster_net in nets:
            if cluster_net.version == net.version and net.subnet_of(cluster_net):
                peer = (_selector_peer(services[0].namespace, services[0].selector) if kind == "service" and services
                        else _selector_peer(pods[0].namespace, pods[0].labels) if pods else _placeholder_peer())
                why = ("Services are translated to pod IPs before policy applies, so it never matches"
                       if kind == "service" else "pod IPs change and CNIs differ on whether ipBlock matches pods")
                return Hit(path, f"{block.cidr} lies inside the {kind} network {cluster_net}: {why}; "
                                 f"select the pods instead", snippet({field: [peer]}))
    if services:
        svc = services[0]
        return Hit(path, f"{block.cidr} contains the ClusterIP {svc.cluster_ips[0]} of Service {svc.key}: "
                         f"Services are translated to pod IPs before policy applies, so it never matches; "
                         f"select the Service's pods instead",
                   snippet({field: [_selector_peer(svc.namespace, svc.selector)]}))
    if pods:
        names = ", ".join(f"{p.ref} ({p.ips[0]})" for p in pods)
        return Hit(path, f"{block.cidr} contains the IPs of pods in view: {names}; pod IPs change and "
                         f"CNIs differ on whether ipBlock matches pods; select the pods instead",
                   snippet({field: [_selector_peer(pods[0].namespace, pods[0].labels)]}))
    for cluster_net in index.pod_nets:
        if cluster_net.version == net.version and cluster_net.subnet_of(net) and not any(
                cluster_net.subnet_of(ex) for ex in block.except_networks if ex.version == net.version):
            return Hit(path, f"{block.cidr} contains the whole pod network {cluster_net}: whether it admits "
                             f"pods depends on the CNI; except the pod network and select pods explicitly",
                       snippet({"ipBlock": _block_dict(block, (str(cluster_net),))}))
    return None


# --- ipblock-single-family -----------------------------------------------------------------------

@rule(
    id="ipblock-single-family", category="ipblock", severity="info",
    applies=has_ip_block,
    summary="A rule opens 0.0.0.0/0 without ::/0 (or the reverse), so one IP family stays blocked.",
    rationale="""
On a dual-stack cluster "anywhere" needs both `0.0.0.0/0` and `::/0`. With only the IPv4
block, destinations reached over IPv6 are denied (and the reverse), which shows up as
timeouts for some hosts only - usually after a cloud provider or partner turns on IPv6.
On a single-stack cluster this is harmless, hence informational.
""",
    bad=(Example("IPv4 only", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-egress, namespace: shop, annotations: {description: "api may call HTTPS APIs"}}
spec:
  podSelector: {matchLabels: {app: api}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 0.0.0.0/0, except: [169.254.169.254/32]}}]
    ports: [{port: 443}]""" + DNS_EGRESS + CLUSTER),),
    good=(Example("both families", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-egress, namespace: shop, annotations: {description: "api may call HTTPS APIs"}}
spec:
  podSelector: {matchLabels: {app: api}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 0.0.0.0/0}}, {ipBlock: {cidr: "::/0"}}]
    ports: [{port: 443}]""" + DNS_EGRESS + CLUSTER),),
)
def ipblock_single_family(policy: NetworkPolicy, ctx: Context) -> Iterator[Hit]:
    for direction in (INGRESS, EGRESS):
        for r in policy.rules_for(direction):
            anywhere = {4: [], 6: []}  # type: dict[int, list[tuple[Peer, IPBlock]]]
            for peer in r.peers:
                if peer.ip_block is not None and peer.ip_block.is_anywhere:
                    anywhere[peer.ip_block.network.version].append((peer, peer.ip_block))
            for have, missing in ((4, 6), (6, 4)):
                if anywhere[have] and not anywhere[missing]:
                    peer, block = anywhere[have][0]
                    other = "::/0" if missing == 6 else "0.0.0.0/0"
                    counterpart: dict = {"cidr": other}
                    if any(ipaddress.ip_address(METADATA_ADDRESSES[0 if have == 4 else 1]) in ex
                           for ex in block.except_networks):
                        counterpart["except"] = [_as_cidr(METADATA_ADDRESSES[1 if have == 4 else 0])]
                    yield Hit(_block_path(r, peer),
                              f"{block.cidr} opens every IPv{have} address but this rule has no {other}: "
                              f"IPv{missing} destinations stay blocked on dual-stack clusters",
                              snippet([{"ipBlock": counterpart}]))
