"""The communication map, typed and resolved: who may talk to whom, on which ports.

Everything here is already validated (see mapparse.py): workload references are
resolved to Workload objects, named ports to numbers, CIDRs to networks. The generator,
the proof and the test-script renderer read only these types.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Mapping, Optional

from webhook.cluster.objects import NAME_LABEL, ContainerPort, Namespace, Pod
from webhook.config import DNSConfig

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# The cloud instance-metadata service: reachable from every pod unless a policy says no,
# and a classic way from a compromised pod to the node's cloud credentials.
METADATA_V4 = ipaddress.ip_network("169.254.169.254/32")
METADATA_V6 = ipaddress.ip_network("fd00:ec2::254/128")


@dataclass(frozen=True)
class PortDecl:
    """A container port a workload declares."""

    port: int
    protocol: str = "TCP"
    name: Optional[str] = None

    def describe(self) -> str:
        return f"{self.port}/{self.protocol}" + (f" ({self.name})" if self.name else "")


@dataclass(frozen=True)
class NamespaceSpec:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    # managed: policies are generated here. Unmanaged namespaces (an ingress controller's,
    # say) are only referenced as peers; their own policies are someone else's business.
    managed: bool = True

    def as_namespace(self) -> Namespace:
        labels = dict(self.labels)
        labels[NAME_LABEL] = self.name
        return Namespace(self.name, labels)


@dataclass(frozen=True, eq=False)
class Workload:
    namespace: str
    name: str
    labels: Mapping[str, str]
    ports: tuple[PortDecl, ...] = ()
    line: int = 0

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def port_by_name(self, name: str) -> Optional[PortDecl]:
        return next((p for p in self.ports if p.name == name), None)

    def declares(self, number: int, protocol: str) -> bool:
        return any(p.port == number and p.protocol == protocol for p in self.ports)

    def as_pod(self) -> Pod:
        return Pod(self.namespace, self.name, dict(self.labels),
                   tuple(ContainerPort(p.port, p.protocol, p.name) for p in self.ports), kind="Deployment")


@dataclass(frozen=True)
class Party:
    """The sending side of a flow: one workload, or every pod of a namespace."""

    namespace: str
    workload: Optional[Workload] = None

    @property
    def key(self) -> str:
        return self.workload.key if self.workload else f"{self.namespace}/*"

    def describe(self) -> str:
        return self.workload.key if self.workload else f"every pod in {self.namespace}"

    def pod_selector(self) -> dict:
        return {"matchLabels": dict(sorted(self.workload.labels.items()))} if self.workload else {}


@dataclass(frozen=True)
class FlowPort:
    """A port as the map wrote it (number or name) and the number it resolves to."""

    port: int | str
    protocol: str
    number: int

    def spec(self) -> dict:
        return {"port": self.port, "protocol": self.protocol}

    def describe(self) -> str:
        if isinstance(self.port, str):
            return f"{self.port} ({self.number}/{self.protocol})"
        return f"{self.number}/{self.protocol}"

    def sort_key(self) -> tuple:
        return (isinstance(self.port, str), str(self.port).zfill(5), self.protocol)


@dataclass(frozen=True)
class Flow:
    source: Party
    destination: Workload
    ports: tuple[FlowPort, ...]
    line: int = 0
    note: str = ""  # the map's own words for this flow, if it gave any

    def describe(self) -> str:
        return (f"{self.source.describe()} -> {self.destination.key} on "
                + ", ".join(p.describe() for p in self.ports))


@dataclass(frozen=True)
class Target:
    """An address block outside the cluster, named by the endpoint it belongs to (if any)."""

    cidr: str
    network: IPNetwork
    endpoint: Optional[str] = None
    # blocks inside `network` the map leaves out (`{cidr: 10.0.0.0/8, except: [...]}`)
    excluded: tuple[IPNetwork, ...] = ()

    def describe(self) -> str:
        text = self.cidr + (f" except {', '.join(str(e) for e in self.excluded)}" if self.excluded else "")
        return f"{self.endpoint} ({text})" if self.endpoint else text

    def excepts(self) -> tuple[str, ...]:
        """The map's excepts, plus the metadata address when this block contains it (and is
        not just it) and no except of the map covers it already."""
        out = [str(e) for e in self.excluded]
        meta = METADATA_V4 if self.network.version == 4 else METADATA_V6
        if (meta.subnet_of(self.network) and meta != self.network  # type: ignore[arg-type]
                and not any(meta.subnet_of(e) for e in self.excluded)):  # type: ignore[arg-type]
            out.append(str(meta))
        return tuple(out)

    def allows(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        if ip.version != self.network.version or ip not in self.network:
            return False
        return not any(ip in ipaddress.ip_network(e) for e in self.excepts())


@dataclass(frozen=True)
class NumericPort:
    number: int
    protocol: str = "TCP"
    end: Optional[int] = None  # a range number..end (endPort), outside the cluster only

    def spec(self) -> dict:
        out: dict = {"port": self.number, "protocol": self.protocol}
        if self.end is not None:
            out["endPort"] = self.end
        return out

    def describe(self) -> str:
        return f"{self.number}-{self.end}/{self.protocol}" if self.end is not None else f"{self.number}/{self.protocol}"

    @property
    def last(self) -> int:
        return self.end if self.end is not None else self.number

    def matches(self, port: int, protocol: str) -> bool:
        return protocol == self.protocol and self.number <= port <= self.last


@dataclass(frozen=True)
class ExternalIngress:
    """Traffic from outside the cluster (CIDRs) to a workload."""

    destination: Workload
    sources: tuple[Target, ...]
    ports: tuple[FlowPort, ...]
    line: int = 0
    note: str = ""

    def describe(self) -> str:
        return (f"{', '.join(t.describe() for t in self.sources)} -> {self.destination.key} on "
                + ", ".join(p.describe() for p in self.ports))


@dataclass(frozen=True)
class ExternalEgress:
    """Traffic from a workload (or every pod of a namespace) to addresses outside the cluster."""

    source: Party
    targets: tuple[Target, ...]
    ports: tuple[NumericPort, ...]
    line: int = 0
    note: str = ""

    def describe(self) -> str:
        return (f"{self.source.describe()} -> {', '.join(t.describe() for t in self.targets)} on "
                + ", ".join(p.describe() for p in self.ports))


@dataclass
class CommMap:
    file: str
    namespaces: dict[str, NamespaceSpec]
    workloads: list[Workload]
    flows: list[Flow]
    ingress: list[ExternalIngress]
    egress: list[ExternalEgress]
    dns: Optional[DNSConfig] = None  # None: the configuration's DNS target

    def managed(self, namespace: str) -> bool:
        ns = self.namespaces.get(namespace)
        return bool(ns and ns.managed)

    def workloads_in(self, namespace: str) -> list[Workload]:
        return [w for w in self.workloads if w.namespace == namespace]
