"""Ports: port entries that cannot match what the destination pods listen on.

A NetworkPolicy sees the destination *pod's* port and protocol, after a Service has
translated its port to the targetPort. Named ports resolve against the destination pod's
container ports, per protocol. Every check here needs pods in view and stays quiet
without them; lookups go through the per-namespace indexes and the cross-namespace port
summary in cluster/view.py, never over every pod of the cluster.
"""
from __future__ import annotations

from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional

from webhook.cluster.objects import ContainerPort, Pod, Service
from webhook.cluster.view import (namespaces_declaring_port, namespaces_with_pods, namespaces_with_service_port,
                                  port_declared_with_other_protocol, services_in)
from webhook.policy.model import EGRESS, INGRESS, NetworkPolicy, PortSpec, Rule
from webhook.policy.selectors import EVERYTHING, LabelSelector
from webhook.rules.base import Example, Hit, rule
from webhook.rules.context import Context
from webhook.rules.fixes import snippet
from webhook.rules.inventory import CLUSTER, DNS_EGRESS
from webhook.rules.selectors import ns_scope_known

# Port names that usually mean one well-known number, for the ipBlock fix.
WELL_KNOWN = {"http": 80, "https": 443, "dns": 53, "ssh": 22, "smtp": 25, "submission": 587, "ldap": 389,
              "ldaps": 636, "postgres": 5432, "postgresql": 5432, "mysql": 3306, "redis": 6379,
              "mongodb": 27017, "kafka": 9092, "amqp": 5672, "ntp": 123}
SAMPLE_NAMESPACES = 5  # namespaces sampled for naming pods and suggesting port names
SHOWN = 3
_OTHER_PROTOCOLS = ("TCP", "UDP", "SCTP")  # what port-protocol-mismatch counts as "another protocol"


@dataclass(frozen=True)
class Scope:
    """Where a rule's destination pods are: pods `pod_selector` selects in the policy's own
    namespace (ns_selector None), in the namespaces `ns_selector` matches, or anywhere."""

    pod_selector: LabelSelector
    ns_selector: Optional[LabelSelector] = None
    anywhere: bool = False


def _rules(policy: NetworkPolicy) -> Iterator[Rule]:
    for direction in (INGRESS, EGRESS):
        yield from policy.rules_for(direction)


def destinations(ctx: Context, policy: NetworkPolicy, r: Rule) -> Optional[list[Scope]]:
    """The scopes of a rule's destination pods; [] when the destinations are only ipBlocks;
    None when the view cannot tell (a namespaceSelector over namespaces not in view)."""
    if r.direction == INGRESS:
        return [Scope(policy.pod_selector)]
    if r.all_peers:
        return [Scope(EVERYTHING, anywhere=True)]
    out = []
    for p in r.peers:
        if p.ip_block is not None:
            continue
        if p.namespace_selector is None:
            out.append(Scope(p.pod_selector or EVERYTHING))
        elif not ns_scope_known(ctx, p.namespace_selector):
            return None
        else:
            out.append(Scope(p.pod_selector or EVERYTHING, p.namespace_selector))
    return out


def _namespaces_in_scope(ctx: Context, policy: NetworkPolicy, scope: Scope, among: AbstractSet[str],
                         ordered: bool = True) -> Iterable[str]:
    """The namespaces of `among` that the scope covers, walking the smaller of the two sets.
    Sorted when the caller names what it finds; a yes/no question skips the sort."""
    if scope.anywhere:
        return sorted(among) if ordered else among
    if scope.ns_selector is None:
        return [policy.namespace] if policy.namespace in among else []
    if len(among) <= SAMPLE_NAMESPACES * 4:
        return sorted(ns for ns in among if scope.ns_selector.matches(ctx.view.namespace_labels(ns)))
    return sorted(set(ctx.view.select_namespaces(scope.ns_selector)) & among)


def declaring_pod(ctx: Context, policy: NetworkPolicy, scopes: list[Scope], port: int | str,
                  accept: Callable[[ContainerPort], bool], ordered: bool = False) -> Optional[Pod]:
    """The first destination pod with a container port `accept`s, found through the index of
    namespaces that declare that port number or name at all. `ordered` makes the pod found
    the same on every run (for messages); existence checks leave it off."""
    among = namespaces_declaring_port(ctx.view, port)
    if not among:
        return None

    def declares(pod: Pod) -> bool:
        return any(accept(cp) for cp in pod.ports)

    for scope in scopes:
        for ns in _namespaces_in_scope(ctx, policy, scope, among, ordered):
            pod = ctx.view.first_pod(ns, scope.pod_selector, declares)
            if pod is not None:
                return pod
    return None


def sample_pods(ctx: Context, policy: NetworkPolicy, scopes: list[Scope], limit: int = 20) -> list[Pod]:
    """A few destination pods (one per label class), for messages and suggestions."""
    out: list[Pod] = []
    for scope in scopes:
        if scope.anywhere:
            continue
        if scope.ns_selector is None:
            namespaces = [policy.namespace]
        else:
            namespaces = namespaces_with_pods(ctx.view, scope.pod_selector, ns_selector=scope.ns_selector,
                                              limit=SAMPLE_NAMESPACES)
        for ns in namespaces:
            out.extend(ctx.view.pod_label_classes(ns, scope.pod_selector))
            if len(out) >= limit:
                return out[:limit]
    return out


def has_pods(ctx: Context, policy: NetworkPolicy, scopes: list[Scope]) -> bool:
    for scope in scopes:
        if scope.anywhere:
            return True
        if scope.ns_selector is None:
            if ctx.view.any_pod(policy.namespace, scope.pod_selector):
                return True
        elif namespaces_with_pods(ctx.view, scope.pod_selector, ns_selector=scope.ns_selector, limit=1):
            return True
    return False


def _refs(pods: list[Pod]) -> str:
    refs = sorted({p.ref for p in pods})
    return ", ".join(refs[:SHOWN]) + (f" and {len(refs) - SHOWN} more" if len(refs) > SHOWN else "")


def _who(r: Rule) -> str:
    return "the pods this policy selects" if r.direction == INGRESS else "the pods this rule's peers select"


def _port_path(r: Rule, spec: PortSpec) -> str:
    return f"{r.path}.ports[{spec.index}]"


# --- named-port-unknown -----------------------------------------------------------------------

def _has_named_port(policy: NetworkPolicy) -> bool:
    """named-port-unknown's precondition (Rule.applies): some written rule names a port. Most
    policies use numbers, and the runner then skips the check (~1 us a call)."""
    return policy.contents.named_port


@rule(
    id="named-port-unknown", category="ports", severity="warning",
    applies=_has_named_port,
    summary="A named port is declared by no destination pod with that protocol, so it matches nothing.",
    rationale="""
A named port (`port: http`) resolves against the container ports of the destination pod:
for ingress the pods the policy selects, for egress the pods the rule's peers select. A
name no such pod declares - a typo, a name from another workload, or the right name with
the wrong protocol - matches nothing, and the traffic is dropped without a word. Toward
ipBlock destinations (addresses outside the cluster) a named port can never match at all.
""",
    bad=(Example("a misspelt port name", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-ingress, namespace: shop, annotations: {description: "frontend calls api"}}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: frontend}}}]
    ports: [{port: htp}]
""" + CLUSTER),
         Example("a named port toward an external address", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-egress, namespace: shop, annotations: {description: "api calls the payment provider"}}
spec:
  podSelector: {matchLabels: {app: api}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 203.0.113.0/24}}]
    ports: [{port: https}]""" + DNS_EGRESS + CLUSTER)),
    good=(Example("the name the api container declares", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-ingress, namespace: shop, annotations: {description: "frontend calls api"}}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: frontend}}}]
    ports: [{port: http}]
""" + CLUSTER),
          Example("egress to a named port of the destination pods", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-egress, namespace: shop, annotations: {description: "api uses the database"}}
spec:
  podSelector: {matchLabels: {app: api}}
  policyTypes: [Egress]
  egress:
  - to: [{podSelector: {matchLabels: {app: db}}}]
    ports: [{port: postgres}]""" + DNS_EGRESS + CLUSTER)),
)
def named_port_unknown(policy: NetworkPolicy, ctx: Context) -> Iterator[Hit]:
    for r in _rules(policy):
        named = [s for s in r.ports if isinstance(s.port, str)]
        if not named:
            continue
        scopes = destinations(ctx, policy, r)
        if scopes is not None and not scopes:
            for spec in named:
                number = WELL_KNOWN.get(str(spec.port).lower())
                yield Hit(f"{_port_path(r, spec)}.port",
                          f"named port `{spec.port}` can only match a container port of a pod, and this rule's "
                          f"destinations are only ipBlocks (addresses outside the cluster): it can't match "
                          f"external addresses; use the port number" + (f" ({number}?)" if number else ""),
                          snippet([{"port": number or "<number>", "protocol": spec.protocol}]))
            continue
        if scopes is None or not ctx.view.pods_known or not has_pods(ctx, policy, scopes):
            continue  # nothing to resolve against: pod-selector-matches-nothing has the story
        for spec in named:
            name, proto = spec.port, spec.protocol
            if declaring_pod(ctx, policy, scopes, name, lambda cp: cp.name == name and cp.protocol == proto):
                continue
            other = declaring_pod(ctx, policy, scopes, name, lambda cp: cp.name == name, ordered=True)
            sample = sample_pods(ctx, policy, scopes)
            where = f"{_who(r)}" + (f" ({_refs(sample)})" if sample else "")
            if other is not None:
                protos = sorted({cp.protocol for cp in other.ports if cp.name == name})
                yield Hit(f"{_port_path(r, spec)}",
                          f"named port `{name}` is declared as {'/'.join(protos)} by {other.ref}, but this entry "
                          f"says {proto}: no destination pod declares `{name}`/{proto}, so it matches nothing",
                          snippet([{"port": name, "protocol": protos[0]}]))
                continue
            names = {cp.name for pod in sample for cp in pod.ports if cp.name and cp.protocol == proto}
            close = Context.closest(name, names)
            hint = f"; did you mean `{close[0]}`?" if close else (
                f"; they declare {', '.join(sorted(names))}" if 0 < len(names) <= 6 else "")
            yield Hit(f"{_port_path(r, spec)}.port",
                      f"named port `{name}`/{proto} is declared by none of {where}, so this port entry "
                      f"matches nothing{hint}",
                      snippet([{"port": close[0], "protocol": proto}]) if close else None)


# --- service-port-not-target-port ---------------------------------------------------------------

def _target_port(svc_target: int | str, protocol: str, pods: list[Pod]) -> Optional[int]:
    if isinstance(svc_target, int):
        return svc_target
    if svc_target.isascii() and svc_target.isdigit():  # '²' is a (bad) name, not a number
        return int(svc_target)
    for pod in pods:
        n = pod.named_port(svc_target, protocol)
        if n is not None:
            return n
    return None


def _backing_services(ctx: Context, policy: NetworkPolicy, scopes: list[Scope], port: int,
                      protocol: str) -> Iterator[tuple[Service, list[Pod]]]:
    """Services exposing `port`/`protocol` whose selected pods are destinations of the rule, each
    with a few of those pods. Starts from the namespaces where such a Service exists at all."""
    among = namespaces_with_service_port(ctx.view, port, protocol)
    if not among:
        return
    for scope in scopes:
        for ns in list(_namespaces_in_scope(ctx, policy, scope, among))[:SAMPLE_NAMESPACES]:
            for svc in sorted(services_in(ctx.view, ns), key=lambda x: x.name):
                if not svc.selector or not any(p.port == port and p.protocol == protocol for p in svc.ports):
                    continue  # no selector: endpoints managed by hand, we cannot tell its pods
                both = LabelSelector(tuple(sorted({**dict(scope.pod_selector.match_labels),
                                                   **svc.selector}.items())), scope.pod_selector.expressions)
                if any(svc.selector.get(k, v) != v for k, v in scope.pod_selector.match_labels):
                    continue  # the Service and the rule want different values of one label
                backing = ctx.view.select_pods(ns, both, limit=SHOWN)
                if backing:
                    yield svc, backing


def _rule_covers(r: Rule, port: int, protocol: str, name: Optional[str]) -> bool:
    return any(s.matches_number(port, protocol) or (name is not None and s.port == name and s.protocol == protocol)
               for s in r.ports)


@rule(
    id="service-port-not-target-port", category="ports", severity="warning",
    summary="A port is the Service's port, but policies see the pod's port (the Service's targetPort).",
    rationale="""
Traffic to a Service is translated to a backend pod's address and the Service's
`targetPort` before any NetworkPolicy sees it. A rule that allows the Service's `port`
(80) where the pods listen on the `targetPort` (8080) allows nothing the client actually
sends: clients time out once the pods are isolated. The fix is the targetPort, with
named targetPorts resolved against the pods' container ports.
""",
    bad=(Example("ingress on the Service's port 80", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-ingress, namespace: shop, annotations: {description: "frontend calls api"}}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: frontend}}}]
    ports: [{port: 80}]
""" + CLUSTER),
         Example("egress to a Service port with a named targetPort", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: ingress-egress, namespace: ingress-nginx, annotations: {description: "ingress to shop frontend"}}
spec:
  podSelector: {matchLabels: {app.kubernetes.io/name: ingress-nginx}}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: shop}}
      podSelector: {matchLabels: {app: frontend}}
    ports: [{port: 80}]""" + DNS_EGRESS + CLUSTER + """
---
apiVersion: v1
kind: Service
metadata: {name: frontend, namespace: shop}
spec:
  selector: {app: frontend}
  ports: [{name: web, port: 80, targetPort: http}]
""")),
    good=(Example("ingress on the pods' port 8080", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-ingress, namespace: shop, annotations: {description: "frontend calls api"}}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: frontend}}}]
    ports: [{port: 8080}]
""" + CLUSTER),),
)
def service_port_not_target_port(policy: NetworkPolicy, ctx: Context) -> Iterator[Hit]:
    if not ctx.view.pods_known:
        return
    for r in _rules(policy):
        numeric = [s for s in r.ports if isinstance(s.port, int) and s.end_port is None]
        if not numeric:
            continue
        scopes = [sc for sc in destinations(ctx, policy, r) or () if not sc.anywhere]
        if not scopes:
            continue  # ipBlocks, everyone, or namespaces we cannot see
        for spec in numeric:
            port, proto = spec.port, spec.protocol
            for svc, backing in _backing_services(ctx, policy, scopes, port, proto):
                sp = next(p for p in svc.ports if p.port == port and p.protocol == proto)
                target = _target_port(sp.target_port, proto, backing)
                if target is None or target == port:
                    continue
                if declaring_pod(ctx, policy, scopes, port, lambda cp: cp.port == port and cp.protocol == proto):
                    continue  # some destination pod does listen on the Service's port itself
                name = sp.target_port if isinstance(sp.target_port, str) else None
                if _rule_covers(r, target, proto, name):
                    continue
                via = f"targetPort {name} = {target}" if name else f"targetPort {target}"
                yield Hit(_port_path(r, spec),
                          f"{port}/{proto} is the port of Service {svc.key}; policies see the pod's port after "
                          f"the Service's translation ({via} on {_refs(backing)}), so this entry does not "
                          f"allow traffic sent to the Service",
                          snippet([{"port": target, "protocol": proto}]))
                break


# --- port-protocol-mismatch ---------------------------------------------------------------------

def _other_protocol_allowed(r: Rule, spec: PortSpec) -> bool:
    """Whether the rule already allows the entry's port with another protocol."""
    port, proto = spec.port, spec.protocol
    return any(s.protocol != proto and s.protocol in _OTHER_PROTOCOLS and s.matches_number(port, s.protocol)
               for s in r.ports)


@rule(
    id="port-protocol-mismatch", category="ports", severity="warning",
    summary="A numeric port's protocol is one the destination pods do not use on that port.",
    rationale="""
`protocol` defaults to TCP. Allowing `port: 8125` toward a StatsD agent or `port: 514`
toward syslog, both UDP, allows TCP only, and the UDP packets the client sends are dropped
without a trace. When every destination pod that declares the port declares it with
another protocol, the entry almost certainly needs that protocol.
""",
    bad=(Example("UDP metrics agent, protocol left to default TCP", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-egress, namespace: shop, annotations: {description: "api sends metrics to the agent"}}
spec:
  podSelector: {matchLabels: {app: api}}
  policyTypes: [Egress]
  egress:
  - to: [{podSelector: {matchLabels: {app: statsd}}}]
    ports: [{port: 8125}]""" + DNS_EGRESS + CLUSTER + """
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: statsd, namespace: shop}
spec:
  selector: {matchLabels: {app: statsd}}
  template:
    metadata: {labels: {app: statsd}}
    spec:
      containers:
      - name: statsd
        image: statsd/statsd:v0.10.2
        ports: [{name: statsd, containerPort: 8125, protocol: UDP}]
"""),),
    good=(Example("protocol UDP written out", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-egress, namespace: shop, annotations: {description: "api sends metrics to the agent"}}
spec:
  podSelector: {matchLabels: {app: api}}
  policyTypes: [Egress]
  egress:
  - to: [{podSelector: {matchLabels: {app: statsd}}}]
    ports: [{port: 8125, protocol: UDP}]""" + DNS_EGRESS + CLUSTER + """
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: statsd, namespace: shop}
spec:
  selector: {matchLabels: {app: statsd}}
  template:
    metadata: {labels: {app: statsd}}
    spec:
      containers:
      - name: statsd
        image: statsd/statsd:v0.10.2
        ports: [{name: statsd, containerPort: 8125, protocol: UDP}]
"""),),
)
def port_protocol_mismatch(policy: NetworkPolicy, ctx: Context) -> Iterator[Hit]:
    if not ctx.view.pods_known:
        return
    for r in _rules(policy):
        numeric = [s for s in r.ports if isinstance(s.port, int) and s.end_port is None]
        if not numeric:
            continue
        if r.direction == EGRESS and (r.all_peers or any(p.ip_block is not None for p in r.peers)):
            continue  # an address outside the cluster may well listen on that protocol
        # A mismatch needs a destination pod that declares the port with another protocol.
        # Most ports are declared with one protocol across the whole view, so the view's port
        # summary rules those entries out before the rule's destinations and pods are looked
        # up (several us per entry, paid by nearly every policy that finds nothing here).
        suspects = [s for s in numeric if port_declared_with_other_protocol(ctx.view, s.port, s.protocol)
                    and not _other_protocol_allowed(r, s)]
        if not suspects:
            continue
        scopes = destinations(ctx, policy, r)
        if not scopes:
            continue
        for spec in suspects:
            port, proto = spec.port, spec.protocol
            if declaring_pod(ctx, policy, scopes, port, lambda cp: cp.port == port and cp.protocol == proto):
                continue
            other = declaring_pod(ctx, policy, scopes, port, lambda cp: cp.port == port, ordered=True)
            if other is None:
                continue  # nobody declares the port: declarations are optional, so say nothing
            protos = sorted({cp.protocol for cp in other.ports if cp.port == port})
            yield Hit(f"{_port_path(r, spec)}",
                      f"{port}/{proto} is allowed, but {other.ref} declares port {port} as {'/'.join(protos)} "
                      f"and no destination pod declares it as {proto}: add `protocol: {protos[0]}`",
                      snippet([{"port": port, "protocol": protos[0]}]))
