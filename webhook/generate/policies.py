"""From a communication map to NetworkPolicy objects: a pure function, deterministic.

Per managed namespace:
  10-dns-NS.yaml                          allow-dns: every pod may reach cluster DNS (UDP+TCP 53)
  20-allow-NS-ingress-W.yaml              allow-ingress-W: who may reach workload W, on which ports
  20-allow-NS-egress-W.yaml               allow-egress-W: whom W may reach inside the cluster
  20-allow-NS-external-egress-W.yaml      allow-external-egress-W: which outside CIDRs W may reach
  90-default-deny-NS.yaml                 default-deny: everything else, both directions

`kubectl apply -f DIR` applies files in lexical order, so every allowance (DNS first)
exists before the default-deny that would otherwise cut running pods off.
A namespace-wide source (`from: {namespace: NS}`) gets `...-egress-all-pods`.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable

from webhook.cluster.objects import NAME_LABEL
from webhook.config import DNSConfig
from webhook.generate.mapparse import MapError, MapProblem
from webhook.generate.model import CommMap, ExternalEgress, ExternalIngress, Flow, FlowPort, Party, Workload
from webhook.rules.fixes import dns_egress_rule

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "netpol-guard-generate"  # not "netpol-guard": that one belongs to the isolation controller
DESCRIPTION = "description"
ALL_PODS = "all-pods"


@dataclass(frozen=True)
class GeneratedPolicy:
    file: str  # file name inside --out; the order of application
    obj: dict[str, Any]

    @property
    def key(self) -> str:
        return f"{self.obj['metadata']['namespace']}/{self.obj['metadata']['name']}"


def generate(cmap: CommMap, dns: DNSConfig) -> list[GeneratedPolicy]:
    """Every policy for the map, sorted by file name (= the order to apply them)."""
    dns = cmap.dns or dns
    _check_name_clash(cmap)
    out: list[GeneratedPolicy] = []
    flows_to: dict[str, list[Flow]] = defaultdict(list)
    flows_from: dict[str, list[Flow]] = defaultdict(list)
    sources: dict[str, Party] = {}
    for f in cmap.flows:
        flows_to[f.destination.key].append(f)
        flows_from[f.source.key].append(f)
        sources[f.source.key] = f.source
    ingress_to: dict[str, list[ExternalIngress]] = defaultdict(list)
    for x in cmap.ingress:
        ingress_to[x.destination.key].append(x)
    egress_from: dict[str, list[ExternalEgress]] = defaultdict(list)
    for e in cmap.egress:
        egress_from[e.source.key].append(e)
        sources[e.source.key] = e.source

    for ns in sorted(n for n, spec in cmap.namespaces.items() if spec.managed):
        out.append(_dns_policy(ns, dns))
        out.append(_default_deny(ns))
        for w in cmap.workloads_in(ns):
            if flows_to.get(w.key) or ingress_to.get(w.key):
                out.append(_ingress_policy(w, flows_to.get(w.key, []), ingress_to.get(w.key, [])))
        for key, party in sources.items():
            if party.namespace != ns:
                continue
            if flows_from.get(key):
                out.append(_egress_policy(party, flows_from[key]))
            if egress_from.get(key):
                out.append(_external_egress_policy(party, egress_from[key]))
    return sorted(out, key=lambda g: g.file)


def _check_name_clash(cmap: CommMap) -> None:
    wide = {f.source.namespace for f in cmap.flows if f.source.workload is None}
    wide |= {e.source.namespace for e in cmap.egress if e.source.workload is None}
    clash = [w for w in cmap.workloads if w.name == ALL_PODS and w.namespace in wide]
    if clash:
        raise MapError(cmap.file, [MapProblem(w.line, "workloads", f"workload {w.key}: the name {ALL_PODS!r} is "
                                              "what generate calls a namespace-wide source in that namespace; "
                                              "rename the workload") for w in clash])


# --- building blocks ---------------------------------------------------------------------------

def _policy(namespace: str, name: str, description: str, pod_selector: dict, policy_types: list[str],
            ingress: list | None = None, egress: list | None = None) -> dict:
    spec: dict[str, Any] = {"podSelector": pod_selector, "policyTypes": policy_types}
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {MANAGED_BY: MANAGED_BY_VALUE},
            "annotations": {DESCRIPTION: description},
        },
        "spec": spec,
    }


def party_peer(party: Party) -> dict:
    """Namespace by its immutable name label AND pods, in ONE peer (the AND, not an OR)."""
    return {"namespaceSelector": {"matchLabels": {NAME_LABEL: party.namespace}},
            "podSelector": party.pod_selector()}


def workload_peer(w: Workload) -> dict:
    return party_peer(Party(w.namespace, w))


def _selector(party: Party) -> dict:
    return party.pod_selector()


def _ports(ports: Iterable[FlowPort]) -> list[dict]:
    return [p.spec() for p in sorted(set(ports), key=FlowPort.sort_key)]


def _notes(items: Iterable[Any]) -> str:
    notes = sorted({i.note for i in items if i.note})
    return (" (" + "; ".join(notes) + ")") if notes else ""


def _ports_text(ports: Iterable[FlowPort]) -> str:
    return ", ".join(p.describe() for p in sorted(set(ports), key=FlowPort.sort_key))


# --- the policies ------------------------------------------------------------------------------

def _dns_policy(ns: str, dns: DNSConfig) -> GeneratedPolicy:
    desc = (f"netpol-guard generate: every pod in {ns} may resolve names at cluster DNS "
            f"({dns.namespace} pods {', '.join(f'{k}={v}' for k, v in sorted(dns.podLabels.items()))}) "
            "on 53/UDP and 53/TCP")
    rule = dns_egress_rule(dns.namespace, dict(sorted(dns.podLabels.items())), tuple(dns.nodeLocalAddresses))
    return GeneratedPolicy(f"10-dns-{ns}.yaml", _policy(ns, "allow-dns", desc, {}, ["Egress"], egress=[rule]))


def _default_deny(ns: str) -> GeneratedPolicy:
    desc = (f"netpol-guard generate: deny all ingress and egress of every pod in {ns} except what the "
            "allow-* policies of this set allow")
    return GeneratedPolicy(f"90-default-deny-{ns}.yaml",
                           _policy(ns, "default-deny", desc, {}, ["Ingress", "Egress"]))


def _ingress_policy(w: Workload, flows: list[Flow], outside: list[ExternalIngress]) -> GeneratedPolicy:
    by_source: dict[str, list[Flow]] = defaultdict(list)
    for f in flows:
        by_source[f.source.key].append(f)
    rules, parts = [], []
    for key in sorted(by_source):
        fs = by_source[key]
        ports = [p for f in fs for p in f.ports]
        rules.append({"from": [party_peer(fs[0].source)], "ports": _ports(ports)})
        parts.append(f"from {fs[0].source.describe()} on {_ports_text(ports)}{_notes(fs)}")
    for x in sorted(outside, key=lambda x: ([t.cidr for t in x.sources], [p.sort_key() for p in x.ports])):
        rules.append({"from": [{"ipBlock": {"cidr": t.cidr}} for t in x.sources], "ports": _ports(x.ports)})
        parts.append(f"from outside {', '.join(t.cidr for t in x.sources)} on {_ports_text(x.ports)}{_notes([x])}")
    desc = f"netpol-guard generate: ingress to {w.key}: " + "; ".join(parts)
    return GeneratedPolicy(f"20-allow-{w.namespace}-ingress-{w.name}.yaml",
                           _policy(w.namespace, f"allow-ingress-{w.name}", desc, _selector(Party(w.namespace, w)),
                                   ["Ingress"], ingress=rules))


def _party_name(party: Party) -> str:
    return party.workload.name if party.workload else ALL_PODS


def _egress_policy(party: Party, flows: list[Flow]) -> GeneratedPolicy:
    by_dest: dict[str, list[Flow]] = defaultdict(list)
    for f in flows:
        by_dest[f.destination.key].append(f)
    rules, parts = [], []
    for key in sorted(by_dest):
        fs = by_dest[key]
        ports = [p for f in fs for p in f.ports]
        rules.append({"to": [workload_peer(fs[0].destination)], "ports": _ports(ports)})
        parts.append(f"to {key} on {_ports_text(ports)}{_notes(fs)}")
    name = _party_name(party)
    desc = f"netpol-guard generate: egress from {party.describe()}: " + "; ".join(parts)
    return GeneratedPolicy(f"20-allow-{party.namespace}-egress-{name}.yaml",
                           _policy(party.namespace, f"allow-egress-{name}", desc, _selector(party),
                                   ["Egress"], egress=rules))


def _external_egress_policy(party: Party, entries: list[ExternalEgress]) -> GeneratedPolicy:
    rules, parts = [], []
    for e in sorted(entries, key=lambda e: ([t.cidr for t in e.targets], [(p.protocol, p.number) for p in e.ports])):
        peers = []
        for t in e.targets:
            block: dict[str, Any] = {"cidr": t.cidr}
            if t.excepts():
                block["except"] = list(t.excepts())
            peers.append({"ipBlock": block})
        rules.append({"to": peers, "ports": [p.spec() for p in e.ports]})
        parts.append(f"to {', '.join(t.describe() for t in e.targets)} on "
                     f"{', '.join(p.describe() for p in e.ports)}{_notes([e])}")
    name = _party_name(party)
    desc = (f"netpol-guard generate: egress from {party.describe()} to outside the cluster: " + "; ".join(parts)
            + "; never the cloud metadata address")
    return GeneratedPolicy(f"20-allow-{party.namespace}-external-egress-{name}.yaml",
                           _policy(party.namespace, f"allow-external-egress-{name}", desc, _selector(party),
                                   ["Egress"], egress=rules))
