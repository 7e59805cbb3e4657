"""DNS: egress-isolated pods that cannot resolve names, resolve only over UDP, or may send
port 53 traffic further than the cluster DNS.

The question "may the pods of this policy reach cluster DNS?" is answered by the engine
(`rule_allows` with the DNS pods and node-local addresses as destinations), never by
re-reading ports and peers here, so named ports, ranges, `ipBlock` and the
ipBlock-matches-pods switch mean exactly what they mean in `simulate`.

Public API (reused by the webhook's "add a DNS egress rule" mutation):

- `dns_status(policy, ctx) -> DnsStatus`: for every pod class the policy selects (or the
  hypothetical pod its selector describes when none is in view), whether the union of all
  egress-isolating policies that select it allows UDP 53 / TCP 53 to cluster DNS.
  `status.needs_udp` / `status.needs_tcp` say whether something must be added.
- `dns_allowed(policies, ctx) -> (udp, tcp)`: whether the union of `policies`' egress rules
  reaches DNS on UDP 53 / TCP 53.
- `dns_fix_rule(ctx) -> dict`: the egress rule that allows DNS under this configuration.

Who is judged: only policies that isolate egress themselves (an ingress-only policy cannot
fix DNS; its egress rules would be ignored). A policy that is not in the context's engine
(an admission candidate) is judged as if it replaced the stored policy of the same name.
When no pod in view is selected (or no pods were supplied at all), the pod the selector
describes is judged: exactly the labels it requires (matchLabels, the first `In` value, an
empty value for `Exists`). A policy that selects that pod selects every pod the subject
can select only if it needs no more labels - so `{}` allow-dns policies and policies with
the same or a smaller selector count, narrower ones do not (they may miss real pods).

How "every DNS pod" is judged: the DNS Service balances over all its pods, so a pod class
has DNS on a protocol when its policies reach every DNS pod in view, or any configured
node-local address (the node-local cache, not the pod, talks to CoreDNS).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable, Iterable, Iterator, Sequence

from webhook.cluster.objects import NAME_LABEL, Pod
from webhook.cluster.view import ClusterView
from webhook.policy.engine import Endpoint, Engine
from webhook.policy.model import EGRESS, NetworkPolicy, Rule
from webhook.policy.selectors import LabelSelector
from webhook.rules.base import Example, Hit, rule
from webhook.rules.context import Context, isolates_egress, shared_fact
from webhook.rules.fixes import dns_egress_rule, snippet
from webhook.rules.inventory import CLUSTER, DNS_EGRESS

DNS_PORT = 53
UDP, TCP = "UDP", "TCP"
_SHOW = 3  # pods named in one message
# The destination numeric ports are matched "toward": they never look at it (see reach()).
_NO_DESTINATION = Endpoint()


# --- what one policy allows toward DNS ---------------------------------------------------------

@dataclass(frozen=True)
class Allowance:
    """Which DNS targets (indices into the context's target list) one policy's egress rules
    reach on UDP 53 and on TCP 53."""

    udp: frozenset[int] = frozenset()
    tcp: frozenset[int] = frozenset()

    def __or__(self, other: "Allowance") -> "Allowance":
        return Allowance(self.udp | other.udp, self.tcp | other.tcp)


NOTHING = Allowance()


@dataclass(eq=False)
class PodDns:
    """The DNS verdict for one pod class (one representative per distinct label set)."""

    pod: Pod
    hypothetical: bool  # no pod in view: the pod the policy's selector describes
    udp: bool
    tcp: bool
    # Which policies isolate it is needed only for the pods a message names, so it is
    # worked out on first use (the verdict itself looks only at policies that allow DNS).
    _isolating: Callable[[], tuple[str, ...]] = field(repr=False)

    @cached_property
    def isolating(self) -> tuple[str, ...]:
        """Keys of the policies that isolate its egress."""
        return self._isolating()

    def describe(self) -> str:
        if not self.hypothetical:
            return self.pod.ref
        if not self.pod.labels:
            return f"every pod of namespace {self.pod.namespace} (none in view)"
        labels = ", ".join(f"{k}={v}" for k, v in sorted(self.pod.labels.items()))
        return f"pods labeled {labels} in {self.pod.namespace} (none in view)"


@dataclass(frozen=True)
class DnsStatus:
    """DNS reachability for every pod class a policy selects."""

    isolates_egress: bool  # False: the policy does not isolate egress; nothing to judge
    # The pod classes judged one by one; empty when the policy itself together with the
    # namespace-wide (`podSelector: {}`) policies already allows DNS on both protocols.
    pods: tuple[PodDns, ...] = ()

    @property
    def udp_gaps(self) -> list[PodDns]:
        return [p for p in self.pods if not p.udp]

    @property
    def tcp_gaps(self) -> list[PodDns]:
        return [p for p in self.pods if not p.tcp]

    @property
    def needs_udp(self) -> bool:
        return bool(self.udp_gaps)

    @property
    def needs_tcp(self) -> bool:
        return bool(self.tcp_gaps)


# What stored policies allow toward DNS, kept across contexts (one context per admission
# review, and the live view's generation moves on every watch event). A stored policy is an
# immutable object, and its allowance depends only on it and on what the targets look like
# to the engine (the DNS pods, their namespaces' labels, node-local addresses, the ipBlock
# switch): entries are checked against that signature, so a changed DNS deployment is
# recomputed. id(policy) -> (policy, signature, allowance); the policy is kept so the id
# stays its own. Bounded: cleared when full.
_STORED_ALLOWANCES: dict[int, tuple[NetworkPolicy, tuple, "Allowance"]] = {}
_STORED_ALLOWANCES_MAX = 100_000


class _DnsTargets:
    """What a DNS verdict is judged against: the DNS pods and node-local addresses as engine
    endpoints, and the fix snippets. A fact of the view and the configuration alone, so it is
    shared by the contexts of every review until the view changes (see Context.shared)."""

    def __init__(self, ctx: Context) -> None:
        self.dns_pods: list[Pod] = list(ctx.dns_pods)
        self.node_local: tuple[str, ...] = tuple(ctx.config.dns.nodeLocalAddresses)
        self.targets: list[Endpoint] = ([Endpoint.of_pod(p) for p in self.dns_pods]
                                        + [Endpoint.of_ip(a) for a in self.node_local])
        self.pod_targets = len(self.dns_pods)
        self.pod_endpoints = self.targets[:self.pod_targets]
        self.pod_ids = frozenset(range(self.pod_targets))
        self.node_local_ids = frozenset(range(self.pod_targets, len(self.targets)))
        # What the targets look like to the engine, but for its ipBlock switch (see
        # _STORED_ALLOWANCES): one object per view generation, so comparing it is cheap.
        self.signature = (tuple(self.dns_pods), self.node_local,
                          tuple(ctx.view.namespace_labels(p.namespace) for p in self.dns_pods))
        self.fix_rule = dns_fix_rule(ctx)  # read only: dns_fix_rule() hands out copies
        self.fix_snippet = snippet([self.fix_rule])
        self._snippets: dict[str, str] = {}

    def rendered(self, name: str, obj) -> str:
        """Other fixed snippets (the DNS peer, the `to` list), rendered once."""
        got = self._snippets.get(name)
        if got is None:
            got = self._snippets[name] = snippet(obj)
        return got


class _StoredDns:
    """What the view's own egress-isolating policies of one namespace allow toward DNS: their
    allowances, the namespace-wide cover and the providers grouped by selector. Facts of the
    view, the configuration and the engine's ipBlock switch alone (never of a review's overlay),
    so shared by the contexts of every review until the view changes; each review combines
    them with its own candidate (_DnsAnalysis). Holds no context, only policies and allowances."""

    def __init__(self, policies: list[NetworkPolicy], allowance: Callable[[NetworkPolicy], Allowance]) -> None:
        self.policies = tuple(policies)
        self.allowances = {id(p): allowance(p) for p in self.policies}  # objects kept alive above
        self.wide = tuple(p for p in self.policies if p.pod_selector.is_empty)
        self.wide_names = frozenset(p.name for p in self.wide)
        self.cover = self.union(self.wide)
        # Only the policies that allow some DNS decide a verdict; many share a selector
        # (`{}`, `app: x`), so each pod class tests each distinct selector once.
        groups: dict[LabelSelector, list[NetworkPolicy]] = {}
        for p in self.policies:
            if self.allowances[id(p)].udp or self.allowances[id(p)].tcp:
                groups.setdefault(p.pod_selector, []).append(p)
        self.providers = [(sel, tuple(ps)) for sel, ps in groups.items()]
        self.provider_names = frozenset(p.name for _, ps in self.providers for p in ps)
        # Label class of a pod in view -> what the providers selecting it allow. Only classes
        # of the view are kept (a hypothetical pod's labels come from a candidate).
        self._class_totals: dict[frozenset, Allowance] = {}

    def union(self, policies: Iterable[NetworkPolicy]) -> Allowance:
        udp: set[int] = set()
        tcp: set[int] = set()
        for p in policies:
            a = self.allowances[id(p)]
            udp.update(a.udp)
            tcp.update(a.tcp)
        return Allowance(frozenset(udp), frozenset(tcp))

    def selecting(self, labels, dropped: frozenset[str]) -> Allowance:
        """What the providers selecting `labels` allow, without the policies named in `dropped`."""
        return self.union(p for sel, ps in self.providers if sel.matches(labels)
                          for p in ps if p.name not in dropped)

    def class_total(self, labels) -> Allowance:
        """selecting(labels) for the label class of a pod in view, kept."""
        key = frozenset(labels.items())
        got = self._class_totals.get(key)
        if got is None:
            got = self._class_totals[key] = self.selecting(labels, frozenset())
        return got


class _DnsAnalysis:
    """Per-context caches: each policy's allowance (asked for by every policy that shares pods
    with it), each namespace's policies and each label class's verdict. They read the engine,
    whose overlay holds the candidate, so they are never shared between contexts; what the
    view's own policies allow is (`stored`, _StoredDns), and is combined here with the
    overlay the way engine.policies_in applies it. Rebuilt when the view changes."""

    def __init__(self, ctx: Context) -> None:
        # The parts of the context, not the context: the context keeps this analysis, and a
        # reference back would make a cycle that holds each review's objects (the candidate,
        # its parsed body) until the garbage collector's next pass instead of freeing them
        # when the review ends.
        self.view, self.config, self.engine = ctx.view, ctx.config, ctx.engine
        shared = ctx.shared("dns-targets", lambda: _DnsTargets(ctx))
        self.shared = shared
        self.dns_pods = shared.dns_pods
        self.targets = shared.targets
        self.pod_targets = shared.pod_targets
        self.pod_ids, self.node_local_ids = shared.pod_ids, shared.node_local_ids
        self.signature = (ctx.engine.ip_block_matches_pods, shared.signature)
        # Keyed by id(): hashing a policy formats its key. The entries keep the policies alive.
        self.allowances: dict[int, tuple[NetworkPolicy, Allowance]] = {}
        self.ns_policies: dict[str, list[NetworkPolicy]] = {}
        self.ns_overlay: dict[str, tuple[frozenset[str], tuple[NetworkPolicy, ...]]] = {}
        self.ns_cover: dict[str, Allowance] = {}
        self.class_verdicts: dict[tuple[str, frozenset, bool], PodDns] = {}
        self.statuses: dict[int, tuple[NetworkPolicy, DnsStatus]] = {}  # asked for by two rules per policy

    def fix_snippet(self) -> str:
        """The DNS egress rule as YAML: the same for every finding, so rendered once."""
        return self.shared.fix_snippet

    def rendered(self, name: str, obj) -> str:
        return self.shared.rendered(name, obj)

    # A protocol is covered when every DNS pod is reached, or any node-local address.
    def covers(self, reached: frozenset[int]) -> bool:
        return not reached.isdisjoint(self.node_local_ids) or (self.pod_targets > 0 and reached >= self.pod_ids)

    def allowance(self, policy: NetworkPolicy) -> Allowance:
        got = self.allowances.get(id(policy))
        if got is None:
            got = self.allowances[id(policy)] = (policy, self._stored_allowance(policy))
        return got[1]

    def _stored_allowance(self, policy: NetworkPolicy) -> Allowance:
        """The allowance, from the cross-context cache when `policy` is the view's own object."""
        view = self.view
        if view.policy(policy.namespace, policy.name) is not policy:
            return self._compute(policy)  # a candidate or lint input: seen once
        entry = _STORED_ALLOWANCES.get(id(policy))
        if entry is not None and entry[0] is policy and entry[1] == self.signature:
            return entry[2]
        got = self._compute(policy)
        if len(_STORED_ALLOWANCES) >= _STORED_ALLOWANCES_MAX:
            _STORED_ALLOWANCES.clear()
        _STORED_ALLOWANCES[id(policy)] = (policy, self.signature, got)
        return got

    def _compute(self, policy: NetworkPolicy) -> Allowance:
        return self.reach(policy, policy.rules_for(EGRESS))

    def reach(self, policy: NetworkPolicy, rules: Iterable[Rule]) -> Allowance:
        """The targets `rules` (of `policy`) reach on UDP 53 and TCP 53: engine.rule_allows,
        with the peer half asked once for both protocols."""
        engine = self.engine
        udp: set[int] = set()
        tcp: set[int] = set()
        for r in rules:
            named = any(isinstance(spec.port, str) for spec in r.ports)
            if not named:
                # Numeric ports (or none) mean the same toward every target: ask once per
                # rule, and skip the targets when the rule opens 53 on neither protocol.
                rule_udp = engine.rule_ports_allow(r, DNS_PORT, UDP, _NO_DESTINATION)
                rule_tcp = engine.rule_ports_allow(r, DNS_PORT, TCP, _NO_DESTINATION)
                if not (rule_udp or rule_tcp):
                    continue
            for i, ep in enumerate(self.targets):
                if named:  # a named port resolves against each DNS pod's own ports
                    on_udp = i not in udp and engine.rule_ports_allow(r, DNS_PORT, UDP, ep)
                    on_tcp = i not in tcp and engine.rule_ports_allow(r, DNS_PORT, TCP, ep)
                else:
                    on_udp = rule_udp and i not in udp
                    on_tcp = rule_tcp and i not in tcp
                if (on_udp or on_tcp) and engine.rule_peers_allow(policy, r, ep):
                    if on_udp:
                        udp.add(i)
                    if on_tcp:
                        tcp.add(i)
        return Allowance(frozenset(udp), frozenset(tcp))

    def union(self, policies: Iterable[NetworkPolicy]) -> Allowance:
        udp: set[int] = set()
        tcp: set[int] = set()
        for p in policies:
            a = self.allowance(p)
            udp.update(a.udp)
            tcp.update(a.tcp)
        return Allowance(frozenset(udp), frozenset(tcp))

    def policies_in(self, namespace: str) -> list[NetworkPolicy]:
        """The namespace's egress-isolating policies in the engine (the view plus overlay)."""
        got = self.ns_policies.get(namespace)
        if got is None:
            got = self.ns_policies[namespace] = _egress_isolating(self.engine, namespace)
        return got

    def stored(self, namespace: str) -> _StoredDns:
        """The view's own egress-isolating policies of the namespace, shared across reviews.
        Their allowances are computed through this context's engine, but reaching a target
        reads only the policy, the view and the ipBlock switch (part of the key), not the overlay."""
        ip_switch = self.engine.ip_block_matches_pods
        return shared_fact(self.view, self.config, ("dns-stored", namespace, ip_switch), lambda: _StoredDns(
            [p for p in self.view.policies(namespace) if EGRESS in p.policy_types],
            self._stored_allowance))

    def overlay_in(self, namespace: str) -> tuple[frozenset[str], tuple[NetworkPolicy, ...]]:
        """How this context's engine differs from the view in the namespace, as engine.policies_in
        applies it: (names of stored policies it does not hold - replaced by the overlay or
        removed -, the overlay's egress-isolating policies there)."""
        got = self.ns_overlay.get(namespace)
        if got is None:
            engine = self.engine
            over = [p for p in engine.overlay.values() if p.namespace == namespace]
            dropped = {p.name for p in over}
            if engine.removed:
                dropped.update(p.name for p in self.stored(namespace).policies if p.key in engine.removed)
            got = self.ns_overlay[namespace] = (
                frozenset(dropped), tuple(p for p in over if EGRESS in p.policy_types))
        return got

    def is_stored(self, policy: NetworkPolicy) -> bool:
        """Whether this very object is what the engine holds (so namespace caches apply to it)."""
        return EGRESS in policy.policy_types and self.engine.holds(policy)

    def namespace_cover(self, namespace: str) -> Allowance:
        """What the policies selecting every pod of the namespace allow: when that is full
        DNS, no pod class there needs looking at."""
        got = self.ns_cover.get(namespace)
        if got is None:
            stored = self.stored(namespace)
            dropped, added = self.overlay_in(namespace)
            got = stored.cover
            if not dropped.isdisjoint(stored.wide_names):
                got = stored.union(p for p in stored.wide if p.name not in dropped)
            wide = [p for p in added if p.pod_selector.is_empty]
            if wide:
                got = got | self.union(wide)
            self.ns_cover[namespace] = got
        return got

    def class_verdict(self, pod: Pod, hypothetical: bool) -> PodDns:
        """The verdict for the pod's label class under the stored policies, once per class."""
        key = (pod.namespace, frozenset(pod.labels.items()), hypothetical)
        got = self.class_verdicts.get(key)
        if got is None:
            labels = pod.labels
            stored = self.stored(pod.namespace)
            dropped, added = self.overlay_in(pod.namespace)
            if hypothetical or not dropped.isdisjoint(stored.provider_names):
                total = stored.selecting(labels, dropped)
            else:
                total = stored.class_total(labels)
            mine = [p for p in added if p.pod_selector.matches(labels)]
            if mine:
                total = total | self.union(mine)
            # The lazy part holds the engine and the pod, not this analysis (which holds the
            # verdict: a cycle; see __init__).
            engine = self.engine
            got = self.class_verdicts[key] = PodDns(pod, hypothetical, self.covers(total.udp),
                                                    self.covers(total.tcp), lambda: _isolating_keys(engine, pod))
        return got


def _egress_isolating(engine: Engine, namespace: str) -> list[NetworkPolicy]:
    """The namespace's egress-isolating policies in the engine (the view plus overlay)."""
    return [p for p in engine.policies_in(namespace) if EGRESS in p.policy_types]


def _isolating_keys(engine: Engine, pod: Pod) -> tuple[str, ...]:
    """Keys of the egress-isolating policies selecting `pod` in the engine (view plus overlay).
    Only for the pods a message names, so read from the engine's list as it is."""
    labels = pod.labels
    return tuple(sorted(p.key for p in _egress_isolating(engine, pod.namespace) if p.pod_selector.matches(labels)))


def _analysis(ctx: Context) -> _DnsAnalysis:
    return ctx.derived("dns-analysis", lambda: _DnsAnalysis(ctx))


def hypothetical_pod(policy: NetworkPolicy) -> Pod:
    """The pod the policy's selector describes when no pod in view is selected: exactly the
    labels it requires (matchLabels, the first value of each `In`, an empty value for
    `Exists`), nothing else. Policies selecting it (an `{}` allow-dns policy, a policy with
    the same or a smaller selector) are certain to select every real pod this policy will
    select; policies that need more labels are not, so they are not counted."""
    labels = dict(policy.pod_selector.match_labels)
    for req in policy.pod_selector.expressions:
        if req.key in labels:
            continue
        if req.operator == "In" and req.values:
            labels[req.key] = sorted(req.values)[0]
        elif req.operator == "Exists":
            labels[req.key] = ""
    return Pod(policy.namespace, "(selected by " + policy.name + ")", labels)


def _pod_classes(policy: NetworkPolicy, view: ClusterView) -> tuple[list[Pod], bool]:
    if view.pods_known:
        classes = view.pod_label_classes(policy.namespace, policy.pod_selector)
        if classes:
            return classes, False
    pod = hypothetical_pod(policy)
    # A selector no label set satisfies (e.g. In and NotIn of the same value) selects nothing.
    return ([pod], True) if policy.pod_selector.matches(pod.labels) else ([], True)


def dns_status(policy: NetworkPolicy, ctx: Context) -> DnsStatus:
    """Whether every pod `policy` selects may reach cluster DNS on UDP 53 and TCP 53.

    The union is over every egress-isolating policy that selects the pod in the context's
    engine (view plus overlay); `policy` itself always takes part, replacing any stored
    version of the same name, so a candidate can be judged before it is stored."""
    if EGRESS not in policy.policy_types:
        return DnsStatus(False)
    an = _analysis(ctx)
    got = an.statuses.get(id(policy))
    if got is None:
        got = an.statuses[id(policy)] = (policy, _dns_status(policy, an))
    return got[1]


def _dns_status(policy: NetworkPolicy, an: _DnsAnalysis) -> DnsStatus:
    own = an.allowance(policy)
    in_view = an.is_stored(policy)
    if in_view:
        cover = an.namespace_cover(policy.namespace)
    else:
        stored = an.policies_in(policy.namespace)
        cover = an.union(p for p in stored if p.pod_selector.is_empty and p.key != policy.key)
        if policy.pod_selector.is_empty:
            cover = cover | own
    base = own | cover
    if an.covers(base.udp) and an.covers(base.tcp):
        # The policy itself and the namespace-wide policies allow DNS: every pod it selects
        # has it, whatever else selects them, so no pod class needs looking at.
        return DnsStatus(True)
    classes, hypothetical = _pod_classes(policy, an.view)
    out = []
    for pod in classes:
        if in_view:
            out.append(an.class_verdict(pod, hypothetical))
            continue
        # A candidate not (yet) stored: it replaces the stored version of the same name.
        isolating = [p for p in stored if p.key != policy.key and p.pod_selector.matches(pod.labels)]
        isolating.append(policy)
        total = an.union(isolating)
        keys = tuple(sorted(p.key for p in isolating))
        out.append(PodDns(pod, hypothetical, an.covers(total.udp), an.covers(total.tcp), lambda keys=keys: keys))
    return DnsStatus(True, tuple(out))


def dns_allowed(policies: Sequence[NetworkPolicy], ctx: Context) -> tuple[bool, bool]:
    """(udp, tcp): whether the union of these policies' egress rules reaches cluster DNS."""
    an = _analysis(ctx)
    total = an.union(policies)
    return an.covers(total.udp), an.covers(total.tcp)


def dns_fix_rule(ctx: Context) -> dict:
    dns = ctx.config.dns
    return dns_egress_rule(dns.namespace, dict(dns.podLabels), tuple(dns.nodeLocalAddresses))


def _target_text(ctx: Context) -> str:
    dns = ctx.config.dns
    labels = ",".join(f"{k}={v}" for k, v in sorted(dns.podLabels.items()))
    text = f"the DNS pods ({dns.namespace}, {labels})"
    if dns.nodeLocalAddresses:
        text += " or node-local DNS " + ", ".join(dns.nodeLocalAddresses)
    return text


def _who(gaps: list[PodDns]) -> str:
    names = ", ".join(g.describe() for g in gaps[:_SHOW])
    more = f" and {len(gaps) - _SHOW} more" if len(gaps) > _SHOW else ""
    return names + more


def _isolated_by(gaps: list[PodDns]) -> str:
    keys = sorted({k for g in gaps[:_SHOW] for k in g.isolating})  # the pods the message names
    return ", ".join(keys[:_SHOW]) + (f" and {len(keys) - _SHOW} more" if len(keys) > _SHOW else "")


def _tcp_only_port_53(policy: NetworkPolicy) -> bool:
    """Whether the policy writes port 53 without a protocol (which the API defaults to TCP)."""
    for r in policy.rules_for(EGRESS):
        raw_rules = (policy.raw.get("spec") or {}).get("egress") or []
        raw_ports = raw_rules[r.index].get("ports") if r.index < len(raw_rules) else None
        for spec in r.ports:
            raw = raw_ports[spec.index] if raw_ports and spec.index < len(raw_ports) else {}
            if spec.port == DNS_PORT and isinstance(raw, dict) and "protocol" not in raw:
                return True
    return False


# --- rules ---------------------------------------------------------------------------------------

_BAD_NO_DNS = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-egress, namespace: shop, annotations: {description: "api may call db"}}
spec:
  podSelector: {matchLabels: {app: api}}
  policyTypes: [Egress]
  egress:
  - to: [{podSelector: {matchLabels: {app: db}}}]
    ports: [{port: 5432}]
"""


@rule(
    id="dns-egress-missing", category="dns", severity="error",
    applies=isolates_egress,
    summary="Egress-isolated pods cannot reach cluster DNS on UDP 53, so every name lookup fails.",
    rationale="""
Once any policy lists `Egress` in `policyTypes` for a pod, only the union of the egress
rules of the policies selecting it is allowed - and almost every workload resolves names
first. DNS must reach the DNS *pods* (the Service is translated before policy applies):
by default namespace `kube-system`, pods `k8s-app: kube-dns`, UDP 53 (configurable, as are
node-local DNS addresses). `port: 53` without `protocol` is TCP only; a named port counts
when the DNS pods declare it (CoreDNS: `dns`/UDP); ranges and allow-all rules count; an
`ipBlock` counts only when it contains a node-local DNS address. Another policy selecting
the same pods may provide DNS: the union is what is judged. When no selected pod is in
view, the pod the selector describes (exactly its required labels) is judged.
""",
    bad=(Example("egress restricted to the database, no DNS", _BAD_NO_DNS + CLUSTER),
         Example("port 53 without protocol is TCP only", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-egress, namespace: shop, annotations: {description: "api may resolve names"}}
spec:
  podSelector: {matchLabels: {app: api}}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}
      podSelector: {matchLabels: {k8s-app: kube-dns}}
    ports: [{port: 53}]
""" + CLUSTER),
         Example("a policy that isolates egress with no rules", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny, namespace: shop, annotations: {description: "deny all egress"}}
spec:
  podSelector: {}
  policyTypes: [Egress]
""" + CLUSTER)),
    good=(Example("DNS allowed beside the database", _BAD_NO_DNS.rstrip("\n") + DNS_EGRESS + CLUSTER),
          Example("a second policy allows DNS for every pod of the namespace", _BAD_NO_DNS + CLUSTER + """
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-dns, namespace: shop, annotations: {description: "every pod may resolve names"}}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:""" + DNS_EGRESS + "\n"),
          Example("named CoreDNS ports", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-egress, namespace: shop, annotations: {description: "api may resolve names"}}
spec:
  podSelector: {matchLabels: {app: api}}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}
      podSelector: {matchLabels: {k8s-app: kube-dns}}
    ports: [{port: dns, protocol: UDP}, {port: dns-tcp, protocol: TCP}]
""" + CLUSTER)),
)
def dns_egress_missing(policy: NetworkPolicy, ctx: Context) -> Iterator[Hit]:
    status = dns_status(policy, ctx)
    gaps = status.udp_gaps
    if not gaps:
        return
    hint = " (a port without `protocol` is TCP; DNS needs UDP)" if _tcp_only_port_53(policy) else ""
    yield Hit(
        "spec.egress",
        f"{_who(gaps)} cannot resolve names: egress is isolated by {_isolated_by(gaps)} and no rule "
        f"of theirs allows UDP 53 to {_target_text(ctx)}{hint}; add this egress rule",
        _analysis(ctx).fix_snippet(),
    )


@rule(
    id="dns-tcp-missing", category="dns", severity="warning",
    applies=isolates_egress,
    summary="DNS is allowed over UDP 53 but not TCP 53, so large or truncated answers fail.",
    rationale="""
Resolvers fall back to TCP when an answer does not fit in a UDP datagram (many records,
DNSSEC, long TXT records): the server sets the truncation bit and the client retries over
TCP 53. With only UDP allowed, those lookups fail intermittently and only for some names,
which is hard to debug in production. Allow TCP 53 to the same DNS pods as UDP 53.
""",
    bad=(Example("UDP only", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-egress, namespace: shop, annotations: {description: "api may resolve names"}}
spec:
  podSelector: {matchLabels: {app: api}}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}
      podSelector: {matchLabels: {k8s-app: kube-dns}}
    ports: [{port: 53, protocol: UDP}]
""" + CLUSTER),),
    good=(Example("UDP and TCP", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-egress, namespace: shop, annotations: {description: "api may resolve names"}}
spec:
  podSelector: {matchLabels: {app: api}}
  policyTypes: [Egress]
  egress:""" + DNS_EGRESS + CLUSTER),),
)
def dns_tcp_missing(policy: NetworkPolicy, ctx: Context) -> Iterator[Hit]:
    status = dns_status(policy, ctx)
    gaps = [p for p in status.tcp_gaps if p.udp]  # without UDP, dns-egress-missing says it all
    if not gaps:
        return
    an = _analysis(ctx)
    own_udp = [r for r in policy.rules_for(EGRESS) if an.covers(an.reach(policy, (r,)).udp)]
    if own_udp:
        r = own_udp[0]
        path, fix = f"{r.path}.ports", an.rendered("tcp-port", [{"port": DNS_PORT, "protocol": TCP}])
        where = f"add TCP 53 to the ports of {r.path}"
    else:
        path, fix = "spec.egress", an.fix_snippet()
        where = "add this egress rule"
    yield Hit(path,
              f"{_who(gaps)}: UDP 53 to cluster DNS is allowed but TCP 53 is not (isolated by "
              f"{_isolated_by(gaps)}); answers too large for UDP will fail; {where}", fix)


def _specific_dns_port(r: Rule, an: _DnsAnalysis) -> bool:
    """The rule names port 53 itself (number or a DNS pod's named port), not a range or all ports."""
    for spec in r.ports:
        if spec.port == DNS_PORT and spec.end_port is None:
            return True
        if isinstance(spec.port, str) and any(p.named_port(spec.port, spec.protocol) == DNS_PORT
                                              for p in an.dns_pods):
            return True
    return False


@rule(
    id="dns-scope-too-broad", category="dns", severity="info",
    applies=isolates_egress,
    summary="Port 53 is allowed to every pod of the DNS namespace or to every destination, not just the DNS pods.",
    rationale="""
A DNS rule needs the DNS pods and nothing else. A `namespaceSelector` for kube-system
without a `podSelector` (or with `podSelector: {}`) also opens port 53 to every other pod
there; a port 53 rule without `to` lets pods query any resolver on the internet,
which bypasses cluster DNS policy and is a classic exfiltration channel. Name the DNS pods
with a `podSelector` in the same peer.
""",
    bad=(Example("every pod of kube-system", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-egress, namespace: shop, annotations: {description: "api may resolve names"}}
spec:
  podSelector: {matchLabels: {app: api}}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}
    ports: [{port: 53, protocol: UDP}, {port: 53, protocol: TCP}]
""" + CLUSTER),
         Example("port 53 to every destination", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-egress, namespace: shop, annotations: {description: "api may resolve names"}}
spec:
  podSelector: {matchLabels: {app: api}}
  policyTypes: [Egress]
  egress:
  - ports: [{port: 53, protocol: UDP}, {port: 53, protocol: TCP}]
""" + CLUSTER)),
    good=(Example("the DNS pods only", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-egress, namespace: shop, annotations: {description: "api may resolve names"}}
spec:
  podSelector: {matchLabels: {app: api}}
  policyTypes: [Egress]
  egress:""" + DNS_EGRESS + CLUSTER),),
)
def dns_scope_too_broad(policy: NetworkPolicy, ctx: Context) -> Iterator[Hit]:
    if not any(r.ports for r in policy.rules_for(EGRESS)):
        return  # only rules naming ports can be DNS rules: skip building the DNS analysis
    an = _analysis(ctx)
    engine = ctx.engine
    dns_peer = an.shared.fix_rule["to"][0]
    dns_eps = an.shared.pod_endpoints
    for r in policy.rules_for(EGRESS):
        # Only rules written for DNS (port 53 or a DNS port name); a rule opening all ports
        # to a namespace is about something else (allow-all-peers covers "everywhere").
        if not r.ports or not _specific_dns_port(r, an):
            continue
        if not any(engine.rule_allows(policy, r, ep, DNS_PORT, proto, ep)
                   for ep in dns_eps for proto in (UDP, TCP)):
            continue
        if r.all_peers:
            yield Hit(r.path,
                      "port 53 is allowed to every destination (no `to`), outside the cluster too; "
                      "pods may query any resolver. Limit it to the DNS pods",
                      an.rendered("to", {"to": an.shared.fix_rule["to"]}))
            continue
        for peer in r.peers:
            if peer.namespace_selector is None or not (peer.pod_selector is None or peer.pod_selector.is_empty):
                continue
            if not any(engine.peer_matches(policy, peer, ep) for ep in dns_eps):
                continue
            dns_ns = ctx.config.dns.namespace
            if peer.namespace_selector.is_empty:
                scope = "every pod of every namespace"
            elif peer.namespace_selector.match_labels == ((NAME_LABEL, dns_ns),) and not peer.namespace_selector.expressions:
                scope = f"every pod of {dns_ns}"
            else:
                scope = f"every pod of the namespaces it selects ({dns_ns} among them)"
            yield Hit(f"{r.path}.to[{peer.index}]",
                      f"port 53 is allowed to {scope}, not only the DNS pods; add a podSelector to this peer",
                      an.rendered("peer", dns_peer))
