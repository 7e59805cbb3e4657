"""What a policy's verdict depends on, and which policies a change of the cluster can affect.

The audit keeps every policy's findings current without re-checking every policy on every
event. Rules are opaque functions of (policy, context), so the dependencies are derived from
the policy's own selectors and ports - the only ways a rule can reach into the cluster on
its behalf - as *tokens*; a change of a Namespace, Pod, Service or policy yields the tokens it
touches; a policy is re-checked when the two meet (an inverted index, token -> policies).

The tokens over-approximate on purpose (a policy may be re-checked and found unchanged) but
never miss a change of *which* findings a policy has: a selector's match can only flip when a
label it names changes, so

- ("podkey", ns, k)   a pod in `ns` changed label k: for the policy's own namespace and the
                      namespaces its namespaceSelectors match (when few), where the rules
                      also look for close matches;
- ("podpair", k, v)   a pod anywhere gained or lost label k=v (matchLabels, In values), and
- ("podkeyany", k)    ... changed label k (Exists, NotIn, DoesNotExist): for selectors over
                      too many namespaces to name, and own-namespace selectors that match
                      nothing there (the rules then say where such pods do run);
- ("podpop", ns)      a pod was created or deleted in `ns` (an empty pod selector's scope);
- ("podpopany",)      ... anywhere (an empty pod selector over a large namespace scope);
- ("nspair", k, v) / ("nskey", k) / ("nsany",)   the same for namespaces and namespaceSelectors;
- ("ns", name)        the policy's own namespace changed (the isolation label, existence);
- ("policies", ns)    a policy in the same namespace changed (rules compare sibling policies);
- ("dns",)            the configured DNS target's pods or namespace changed (egress policies);
- ("port", p)         a pod or Service declares container/service/target port p (number or name);
- ("portrange",)      any port changed, for policies with an endPort range;
- ("podany", ns)      any pod of `ns` created, deleted or relabeled (workload-not-isolated, when on).

ipBlocks are matched by address (a pod or Service IP appearing inside a CIDR), not by token.

What the tokens do not follow is the *wording* of suggestions ("did you mean app=web?"),
which draws on labels the policy does not name; it is refreshed by the periodic full audit.
"""
from __future__ import annotations

import ipaddress
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Mapping, Optional

from webhook.cluster.objects import Namespace, Pod, Service
from webhook.cluster.view import ClusterView
from webhook.config import Config
from webhook.policy.model import EGRESS, IPBlock, NetworkPolicy
from webhook.policy.selectors import LabelSelector

Token = tuple
SCOPE_MAX = 64  # a namespaceSelector scope larger than this is followed by pairs only, not per namespace
RANGE_MAX = 64  # an endPort range wider than this is followed by the ("portrange",) token


@dataclass(frozen=True)
class Cause:
    """Why a policy was re-checked: which object changed, and how.

    `label` is set for a label change (old/new: the values, None when absent); otherwise
    `change` says what happened to the object (created, deleted, changed, ports changed...)."""

    kind: str  # Namespace | Pod | Service | NetworkPolicy (Pods also stand for workloads)
    object: str  # namespace/name, or name for a Namespace
    label: Optional[str] = None
    old: Optional[str] = None
    new: Optional[str] = None
    change: str = "changed"

    def describe(self) -> str:
        if self.label is not None:
            def show(v: Optional[str]) -> str:
                return "(absent)" if v is None else repr(v)
            return f"{self.kind} {self.object}: label {self.label} {show(self.old)} -> {show(self.new)}"
        return f"{self.kind} {self.object} {self.change}"

    def to_dict(self) -> dict:
        out = {"kind": self.kind, "object": self.object, "change": self.change}
        if self.label is not None:
            out.update(label=self.label, old=self.old, new=self.new)
        return out


@dataclass(frozen=True)
class Change:
    """One object's change as the live cache applied it: old and new model objects (None when
    created / deleted). `kind` is Namespace, Pod, Service or NetworkPolicy."""

    kind: str
    old: object = None
    new: object = None

    @property
    def subject(self) -> object:
        return self.new if self.new is not None else self.old


# --- what a policy depends on ------------------------------------------------------------------

def _selector_tokens(sel: LabelSelector, pair_tag: str, key_tag: str) -> Iterator[Token]:
    for k, v in sel.match_labels:
        yield (pair_tag, k, v)
    for r in sel.expressions:
        if r.operator == "In":
            for v in r.values:
                yield (pair_tag, r.key, v)
        else:
            yield (key_tag, r.key)


def _selector_keys(sel: LabelSelector) -> set[str]:
    return {k for k, _ in sel.match_labels} | {r.key for r in sel.expressions}


def _pod_selector_tokens(sel: Optional[LabelSelector], scope: Iterable[str] | None,
                         view: ClusterView, local: bool = False) -> Iterator[Token]:
    """Tokens of a pod selector whose scope is the namespaces `scope` (None: too many to name).

    `local`: a selector without a namespaceSelector (the policy's own namespace). The rules look
    beyond that namespace ("pods with these labels run in namespace X") only while the selector
    matches nothing in it, so only then does it depend on pods elsewhere; once it matches, a
    change elsewhere cannot move its verdict, and a change here re-checks (and re-indexes) it."""
    if sel is None or sel.is_empty:
        if scope is None:
            yield ("podpopany",)
        else:
            yield from (("podpop", ns) for ns in scope)
        return
    keys = _selector_keys(sel)
    if scope is not None:
        for ns in scope:
            for k in keys:
                yield ("podkey", ns, k)
    if scope is None or (local and not any(view.any_pod(ns, sel) for ns in scope)):
        yield from _selector_tokens(sel, "podpair", "podkeyany")


def policy_tokens(policy: NetworkPolicy, view: ClusterView, config: Config) -> set[Token]:
    """Every token `policy`'s findings may depend on, against the view as it is now (the
    namespace scopes of its namespaceSelectors are resolved, and whether its own-namespace
    selectors match; a change of either is itself a token, after which the policy is
    re-checked and re-indexed)."""
    ns = policy.namespace
    out: set[Token] = {("ns", ns), ("policies", ns)}
    if EGRESS in policy.policy_types:
        out.add(("dns",))
    if config.rules.get("workload-not-isolated", "off") != "off" and policy.policy_types:
        out.add(("podany", ns))  # which workloads no policy selects: any pod of the namespace
    out.update(_pod_selector_tokens(policy.pod_selector, (ns,), view, local=True))
    for rule in policy.ingress + policy.egress:
        # A rule that ORs a namespace-only peer with a pod-only one is checked for the AND the
        # author may have meant (peers-or-confusion): its pod selector over the other's scope.
        ored = any(p.is_namespace_only for p in rule.peers) and any(p.is_pod_only for p in rule.peers)
        for peer in rule.peers:
            nsel = peer.namespace_selector
            if nsel is None:
                if peer.pod_selector is not None:
                    out.update(_pod_selector_tokens(peer.pod_selector, None if ored else (ns,), view, local=True))
                continue
            out.update(_selector_tokens(nsel, "nspair", "nskey"))
            if nsel.is_empty:
                out.add(("nsany",))
                scope: Optional[list[str]] = None
            else:
                scope = view.select_namespaces(nsel)
                if len(scope) > SCOPE_MAX:
                    scope = None
            out.update(_pod_selector_tokens(peer.pod_selector, scope, view))
        for spec in rule.ports:
            if spec.port is None:
                continue
            if spec.end_port is not None and isinstance(spec.port, int):
                if spec.end_port - spec.port >= RANGE_MAX:
                    out.add(("portrange",))
                else:
                    out.update(("port", p) for p in range(spec.port, spec.end_port + 1))
            else:
                out.add(("port", spec.port))
    return out


def policy_ip_blocks(policy: NetworkPolicy) -> tuple[IPBlock, ...]:
    return tuple(p.ip_block for r in policy.ingress + policy.egress for p in r.peers if p.ip_block is not None)


# --- what a change touches ---------------------------------------------------------------------

def _label_changes(old: Mapping[str, str], new: Mapping[str, str]) -> Iterator[tuple[str, Optional[str], Optional[str]]]:
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if a != b:
            yield k, a, b


def _existence(change: Change) -> str:
    return "created" if change.old is None else "deleted" if change.new is None else "changed"


def _ports_of(pod: Optional[Pod]) -> set:
    if pod is None:
        return set()
    return {(p.port, p.protocol, p.name) for p in pod.ports}


def _ips(obj: object) -> set[str]:
    if isinstance(obj, Pod):
        return set(obj.ips)
    if isinstance(obj, Service):
        return set(obj.cluster_ips)
    return set()


def change_tokens(change: Change, view: ClusterView, config: Config) -> Iterator[tuple[Token, Cause]]:
    """The tokens `change` touches, each with the cause to report for it."""
    subject = change.subject
    existence = _existence(change)
    if change.kind == "Namespace":
        assert isinstance(subject, Namespace)
        name = subject.name
        old = change.old.labels if change.old is not None else {}  # type: ignore[union-attr]
        new = change.new.labels if change.new is not None else {}  # type: ignore[union-attr]
        whole = Cause("Namespace", name, change=existence)
        yield ("ns", name), whole
        if existence != "changed":
            yield ("nsany",), whole
        for k, a, b in _label_changes(old, new):
            cause = whole if existence != "changed" else Cause("Namespace", name, k, a, b)
            if existence == "changed":
                yield ("ns", name), cause
            yield ("nskey", k), cause
            for v in (a, b):
                if v is not None:
                    yield ("nspair", k, v), cause
        if name == config.dns.namespace and (existence != "changed" or old != new):
            yield ("dns",), whole
        return
    if change.kind == "Pod":
        assert isinstance(subject, Pod)
        ns = subject.namespace
        what = subject.kind if subject.kind != "Pod" else "Pod"
        obj_name = subject.key
        old_pod, new_pod = change.old, change.new
        old = old_pod.labels if old_pod is not None else {}  # type: ignore[union-attr]
        new = new_pod.labels if new_pod is not None else {}  # type: ignore[union-attr]
        whole = Cause(what, obj_name, change=existence)
        if existence != "changed":
            yield ("podpop", ns), whole
            yield ("podpopany",), whole
        if old != new or existence != "changed":
            yield ("podany", ns), (whole if existence != "changed" else Cause(what, obj_name, change="labels changed"))
        for k, a, b in _label_changes(old, new):
            cause = whole if existence != "changed" else Cause(what, obj_name, k, a, b)
            yield ("podkey", ns, k), cause
            yield ("podkeyany", k), cause
            for v in (a, b):
                if v is not None:
                    yield ("podpair", k, v), cause
        old_ports, new_ports = _ports_of(old_pod), _ports_of(new_pod)  # type: ignore[arg-type]
        if old_ports != new_ports:
            cause = whole if existence != "changed" else Cause(what, obj_name, change="container ports changed")
            for port, _proto, pname in old_ports ^ new_ports:
                yield ("port", port), cause
                if pname:
                    yield ("port", pname), cause
            yield ("portrange",), cause
            if ns == config.dns.namespace:
                yield ("dns",), cause  # the DNS pods' ports are what a DNS allowance must reach
        if old != new:
            # Services that pick the pod now and did not before, or the reverse: rules compare a
            # policy's ports with the Service ports and target ports its pods stand behind.
            for svc in view.services(ns):
                picks = [bool(svc.selector) and all(lbl.get(k) == v for k, v in svc.selector.items())
                         for lbl in (old, new)]
                if picks[0] != picks[1]:
                    cause = whole if existence != "changed" else Cause(what, obj_name, change="labels changed")
                    for sp in svc.ports:
                        yield ("port", sp.port), cause
                        yield ("port", sp.target_port), cause
        if ns == config.dns.namespace and old != new:
            dns_labels = config.dns.podLabels
            matched = [all(lbl.get(k) == v for k, v in dns_labels.items()) for lbl in (old, new)]
            if matched[0] != matched[1]:  # a DNS pod appeared or stopped being one
                cause = whole
                if existence == "changed":
                    k, a, b = next(c for c in _label_changes(old, new) if c[0] in dns_labels)
                    cause = Cause(what, obj_name, k, a, b)
                yield ("dns",), cause
        return
    if change.kind == "Service":
        assert isinstance(subject, Service)
        cause = Cause("Service", subject.key, change=existence)
        for svc in (change.old, change.new):
            if svc is not None:
                for sp in svc.ports:  # type: ignore[attr-defined]
                    yield ("port", sp.port), cause
                    yield ("port", sp.target_port), cause
        return
    if change.kind == "NetworkPolicy":
        assert isinstance(subject, NetworkPolicy)
        yield ("policies", subject.namespace), Cause("NetworkPolicy", subject.key, change=existence)
        return
    raise ValueError(f"unknown change kind {change.kind!r}")


# --- the index ---------------------------------------------------------------------------------

@dataclass
class DependencyIndex:
    """token -> policy keys, and the reverse, for every policy the audit holds."""

    by_token: dict[Token, set[str]] = field(default_factory=lambda: defaultdict(set))
    tokens_of: dict[str, set[Token]] = field(default_factory=dict)
    ip_blocks: dict[str, tuple[IPBlock, ...]] = field(default_factory=dict)

    def put(self, key: str, tokens: set[Token], blocks: tuple[IPBlock, ...] = ()) -> None:
        self.remove(key)
        self.tokens_of[key] = tokens
        for t in tokens:
            self.by_token[t].add(key)
        if blocks:
            self.ip_blocks[key] = blocks

    def remove(self, key: str) -> None:
        for t in self.tokens_of.pop(key, ()):
            s = self.by_token.get(t)
            if s is not None:
                s.discard(key)
                if not s:
                    del self.by_token[t]
        self.ip_blocks.pop(key, None)

    def __len__(self) -> int:
        return len(self.tokens_of)

    def affected(self, changes: Iterable[Change], view: ClusterView, config: Config) -> dict[str, list[Cause]]:
        """Policy key -> the causes (in order, without repeats) that make it worth re-checking.
        A changed NetworkPolicy itself is always included (created, edited or deleted)."""
        out: dict[str, list[Cause]] = {}

        def hit(key: str, cause: Cause) -> None:
            got = out.setdefault(key, [])
            if cause not in got:
                got.append(cause)

        for change in changes:
            if change.kind == "NetworkPolicy":
                pol = change.subject
                hit(pol.key, Cause("NetworkPolicy", pol.key, change=_existence(change)))  # type: ignore[attr-defined]
            for token, cause in change_tokens(change, view, config):
                for key in self.by_token.get(token, ()):
                    hit(key, cause)
            ips = _ips(change.old) ^ _ips(change.new)
            if ips and self.ip_blocks:
                addrs = []
                for ip in ips:
                    try:
                        addrs.append(ipaddress.ip_address(ip))
                    except ValueError:
                        continue
                cause = Cause(change.kind if change.kind != "Pod" else change.subject.kind,  # type: ignore[attr-defined]
                              change.subject.key, change="addresses changed")  # type: ignore[attr-defined]
                for key, blocks in self.ip_blocks.items():
                    if any(b.network.version == a.version and a in b.network for b in blocks for a in addrs):
                        hit(key, cause)
        return out
