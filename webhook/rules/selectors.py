"""Selectors: peers and pod selectors that select nothing, or something else than meant.

Every "matches nothing" verdict needs an inventory: without Namespace objects (resp. pods
or workloads) in view these checks stay quiet rather than guess. Lookups go through the
view's label indexes (and the cross-namespace summary in cluster/view.py), so one policy's
checks cost the same in a cluster of 20 namespaces or 2,000.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Optional

from webhook.cluster.objects import NAME_LABEL
from webhook.cluster.view import ClusterView, namespaces_with_pods
from webhook.policy.model import EGRESS, INGRESS, NetworkPolicy, Peer, Rule
from webhook.policy.selectors import EVERYTHING, LabelSelector, Requirement
from webhook.rules.base import Example, Hit, rule
from webhook.rules.context import Context, charge_suggestion, close_matches
from webhook.rules.fixes import snippet
from webhook.rules.inventory import CLUSTER

# Keys people write when they mean "the namespace called X".
NAME_LIKE_KEYS = frozenset({"name", "namespace", "ns", "kubernetes.io/name", "metadata.name",
                            "app.kubernetes.io/namespace", "kubernetes.io/namespace"})
SCOPE_SAMPLE = 20  # namespaces consulted for suggestions when a selector spans many
SHOWN = 3  # namespaces named in a message before "and N more"


# --- shared helpers ------------------------------------------------------------------------

def view_memo(view: ClusterView, key: tuple, compute: Callable[[], Any]) -> Any:
    """A fact derived from the view, computed once per view generation: suggestions over
    thousands of namespaces are worth computing once per batch, not once per policy."""
    return view.memo(("selectors",) + key, compute)


def _rules(policy: NetworkPolicy) -> Iterator[Rule]:
    for direction in (INGRESS, EGRESS):
        yield from policy.rules_for(direction)


def _peer_path(r: Rule, peer: Peer) -> str:
    return f"{r.path}.{r.peers_field}[{peer.index}]"


def _peer_dict(peer: Peer, *, pod: Optional[LabelSelector] = None, ns: Optional[LabelSelector] = None) -> dict:
    """The peer as YAML, with one selector replaced."""
    out: dict = {}
    nsel = ns if ns is not None else peer.namespace_selector
    psel = pod if pod is not None else peer.pod_selector
    if nsel is not None:
        out["namespaceSelector"] = nsel.to_dict()
    if psel is not None:
        out["podSelector"] = psel.to_dict()
    return out


def _names(namespaces: list[str], more: bool = False) -> str:
    """At most SHOWN names; `more` when the list was cut short by a query limit."""
    shown = ", ".join(namespaces[:SHOWN])
    extra = len(namespaces) - SHOWN
    if more:
        shown += " and more"
    elif extra > 0:
        shown += f" and {extra} more"
    return shown


def _name_selector(namespaces: list[str]) -> LabelSelector:
    if len(namespaces) == 1:
        return LabelSelector(((NAME_LABEL, namespaces[0]),))
    return LabelSelector((), (Requirement(NAME_LABEL, "In", frozenset(namespaces)),))


def ns_scope_known(ctx: Context, sel: LabelSelector) -> bool:
    """Whether the view can tell which namespaces `sel` matches. Namespaces implied by other
    objects carry only their name label, so name-only selectors are answerable without them."""
    if ctx.view.namespaces_known:
        return True
    return all(k == NAME_LABEL for k in sel.required_keys()) and all(
        r.key == NAME_LABEL for r in sel.expressions)


@dataclass
class Diagnosis:
    """Why a selector matches nothing, and a corrected selector when every broken term has one."""

    reasons: list[str]
    corrected: Optional[LabelSelector]


# A hook that explains one broken term before the generic key/value suggestions:
# (key, values) -> (reason, replacement key, replacement values) or None.
Special = Callable[[str, tuple[str, ...]], Optional[tuple[str, str, tuple[str, ...]]]]


def _diagnose(sel: LabelSelector, noun: str, keys: set[str], values: Callable[[str], set[str]],
              special: Optional[Special] = None,
              close_value: Optional[Callable[[str, str], list[str]]] = None) -> Diagnosis:
    reasons: list[str] = []
    fixable = True
    changed = False

    def fix_term(k: str, vs: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
        nonlocal fixable, changed
        known_values = values(k) if k in keys else set()
        if k in keys and any(v in known_values for v in vs):
            return k, vs
        if special is not None:
            sp = special(k, vs)
            if sp is not None:
                reason, k2, vs2 = sp
                reasons.append(reason)
                changed = True
                return k2, vs2
        if k not in keys:
            close = Context.closest(k, keys)
            if not close:
                reasons.append(f"no {noun} has the label key `{k}`")
                fixable = False
                return k, vs
            reasons.append(f"no {noun} has the label key `{k}` (did you mean `{close[0]}`?)")
            changed = True
            k = close[0]
            known_values = values(k)
            if any(v in known_values for v in vs):
                return k, vs
        out = []
        for v in vs:
            if v in known_values:
                out.append(v)
                continue
            close = close_value(k, v) if close_value else Context.closest(v, known_values)
            if close:
                reasons.append(f"no {noun} has `{k}={v}` (did you mean `{close[0]}`?)")
                out.append(close[0])
                changed = True
            else:
                # (sorted only when short: sorting 5,000 values for each unknown one cost 0.6 s)
                in_use = sorted(known_values) if 0 < len(known_values) <= 5 else ()
                hint = f" (values in use: {', '.join(in_use)})" if in_use else ""
                reasons.append(f"no {noun} has `{k}={v}`{hint}")
                fixable = False
                out.append(v)
        return k, tuple(out)

    labels: list[tuple[str, str]] = []
    exprs: list[Requirement] = []
    for k, v in sel.match_labels:
        k2, (v2,) = fix_term(k, (v,))
        labels.append((k2, v2))
    for r in sel.expressions:
        if r.operator == "In":
            k2, vs2 = fix_term(r.key, tuple(sorted(r.values)))
            exprs.append(Requirement(k2, "In", frozenset(vs2)))
        elif r.operator == "Exists" and r.key not in keys:
            close = Context.closest(r.key, keys)
            hint = f" (did you mean `{close[0]}`?)" if close else ""
            reasons.append(f"`{r.key}` must exist, and no {noun} has that label key{hint}")
            if close:
                exprs.append(Requirement(close[0], "Exists", frozenset()))
                changed = True
            else:
                fixable = False
                exprs.append(r)
        else:
            exprs.append(r)
    if not reasons:
        terms = len(sel.match_labels) + len(sel.expressions)
        reasons.append(f"no single {noun} meets all of {sel.describe()} together" if terms > 1
                       else f"no {noun} satisfies {sel.describe()}")
        fixable = False
    corrected = LabelSelector(tuple(dict(labels).items()), tuple(exprs)) if fixable and changed else None
    return Diagnosis(reasons, corrected)


def diagnose_namespace_selector(ctx: Context, sel: LabelSelector) -> Diagnosis:
    view = ctx.view
    keys = view_memo(view, ("ns-keys",), view.namespace_label_keys)

    def values(k: str) -> set[str]:
        return view_memo(view, ("ns-values", k), lambda: view.namespace_label_values(k))

    def close_value(k: str, v: str) -> list[str]:
        known = values(k)
        if not charge_suggestion(len(known)):
            return []  # not memoized: it depends on this policy's budget, not on the view
        return view_memo(view, ("ns-close", k, v), lambda: close_matches(v, known))

    def special(k: str, vs: tuple[str, ...]):
        # `name: monitoring` (a label nobody set) or `team: monitoring` (a namespace's name
        # used as another label's value): the namespace is meant by its name.
        named = [v for v in vs if view.namespace(v) is not None]
        if k not in keys:
            close_names = [c for v in vs for c in close_value(NAME_LABEL, v)]
            target = tuple(named) or (tuple(close_names) if k in NAME_LIKE_KEYS else ())
            if not target:
                return None
            return (f"no namespace has the label key `{k}`: namespaces carry `{NAME_LABEL}` automatically, "
                    f"other labels only if someone set them; use `{NAME_LABEL}: {target[0]}`", NAME_LABEL, target)
        if named and len(named) == len(vs) and k != NAME_LABEL:
            return (f"no namespace has `{k}={vs[0]}`, but a namespace is named {named[0]}; "
                    f"select it by name with `{NAME_LABEL}: {named[0]}`", NAME_LABEL, tuple(named))
        return None

    return _diagnose(sel, "namespace", keys, values, special, close_value)


def diagnose_pod_selector(ctx: Context, sel: LabelSelector, namespaces: Iterable[str]) -> Diagnosis:
    scope = list(namespaces)[:SCOPE_SAMPLE]
    keys: set[str] = set()
    for ns in scope:
        keys |= ctx.view.label_keys(ns)

    def values(k: str) -> set[str]:
        out: set[str] = set()
        for ns in scope:
            out |= ctx.view.label_values(ns, k)
        return out

    if not keys and not any(ctx.view.any_pod(ns, EVERYTHING) for ns in scope):
        # Nothing to compare against: say so rather than "no pod has the key app".
        return Diagnosis([f"there are no pods or workloads in view in namespace {_names(scope)}"], None)
    return _diagnose(sel, "pod", keys, values)


def _names_pods(sel: LabelSelector) -> bool:
    """Whether the selector asks for labels (not only their absence): only then do matches in
    another namespace say where the author's pods are."""
    return bool(sel.required_keys())


def _or_pair(r: Rule) -> Optional[tuple[Peer, Peer]]:
    """The rule's first namespace-only peer and first pod-only peer (with a non-empty selector),
    when it has both: the shape of an OR that may have been meant as one peer (an AND)."""
    ns_only = [p for p in r.peers if p.is_namespace_only and p.ip_block is None]
    pod_only = [p for p in r.peers if p.is_pod_only and p.ip_block is None and not p.pod_selector.is_empty]
    if not ns_only or not pod_only:
        return None
    return ns_only[0], pod_only[0]


def _or_confusion(ctx: Context, policy: NetworkPolicy, r: Rule) -> Optional[tuple[Peer, Peer, bool]]:
    """(namespace-only peer, pod-only peer, the merged peer matches pods) when a rule ORs the two
    and the AND is the likelier intent; None otherwise."""
    pair = _or_pair(r)
    if pair is None:
        return None
    nsp, podp = pair
    view = ctx.view
    if not view.pods_known or not ns_scope_known(ctx, nsp.namespace_selector):
        return nsp, podp, False  # no inventory: the shape alone is the signal
    merged = namespaces_with_pods(view, podp.pod_selector, ns_selector=nsp.namespace_selector, limit=1)
    if not merged:
        return None  # those pods live only here: an OR of two different groups is plausible
    return nsp, podp, True


# Preconditions (Rule.applies): what a policy must contain for a check below to find anything,
# read from the policy alone (every written rule, a superset of the rules that take effect;
# see model.Contents). The runner skips the check for policies without it (~1 us a call).

def _has_namespace_selector(policy: NetworkPolicy) -> bool:
    return policy.contents.namespace_selector


def _has_or_pair(policy: NetworkPolicy) -> bool:
    """Some rule has the shape _or_pair looks for."""
    return policy.contents.namespace_and_pod_peers


# --- namespace-selector-matches-nothing ------------------------------------------------------

@rule(
    id="namespace-selector-matches-nothing", category="selector", severity="error",
    applies=_has_namespace_selector,
    summary="A peer's namespaceSelector matches no namespace, so the peer allows nothing.",
    rationale="""
Namespaces carry `kubernetes.io/metadata.name` automatically; every other label exists only
if someone set it. `namespaceSelector: {matchLabels: {name: monitoring}}` is the classic
mistake: it looks right, matches no namespace, and the traffic it was meant to allow is
silently dropped once the pods are isolated. A namespace selector that matches nothing is
almost never intended, so this denies; the message names the missing key or value and
suggests the label that exists.
""",
    bad=(Example("a `name` label that no namespace carries", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-metrics, namespace: shop, annotations: {description: "prometheus scrapes api"}}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {name: monitoring}}
      podSelector: {matchLabels: {app: prometheus}}
    ports: [{port: 9090}]
""" + CLUSTER),
         Example("a misspelt namespace name in matchExpressions", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-metrics, namespace: shop, annotations: {description: "prometheus scrapes api"}}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - from:
    - namespaceSelector:
        matchExpressions:
        - {key: kubernetes.io/metadata.name, operator: In, values: [monitorng]}
    ports: [{port: 9090}]
""" + CLUSTER)),
    good=(Example("the automatic name label", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-metrics, namespace: shop, annotations: {description: "prometheus scrapes api"}}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}
      podSelector: {matchLabels: {app: prometheus}}
    ports: [{port: 9090}]
""" + CLUSTER),
          Example("a label someone did set", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-metrics, namespace: shop, annotations: {description: "prometheus scrapes api"}}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {team: observability}}
    ports: [{port: 9090}]
""" + CLUSTER)),
)
def namespace_selector_matches_nothing(policy: NetworkPolicy, ctx: Context) -> Iterator[Hit]:
    if not ctx.view.namespaces_known:
        return
    for r in _rules(policy):
        for peer in r.peers:
            sel = peer.namespace_selector
            if sel is None or sel.is_empty or ctx.view.select_namespaces(sel):
                continue
            d = diagnose_namespace_selector(ctx, sel)
            fix = None
            if d.corrected is not None and ctx.view.select_namespaces(d.corrected):
                fix = snippet([_peer_dict(peer, ns=d.corrected)])
            yield Hit(f"{_peer_path(r, peer)}.namespaceSelector",
                      f"namespaceSelector {sel.describe()} matches no namespace, so this peer allows "
                      f"nothing: {'; '.join(d.reasons)}", fix)


# --- pod-selector-matches-nothing -------------------------------------------------------------

@rule(
    id="pod-selector-matches-nothing", category="selector", severity="warning",
    summary="A podSelector matches no pod or workload in its scope.",
    rationale="""
A typo in a label (`ap: frontend`, `app: frontnd`) makes a selector match nothing: as
spec.podSelector the policy protects no pod, as a peer it allows no traffic, and nothing
says so until a request times out. Pods may be created later, so this is a warning; the
message suggests the label keys and values that pods in scope do carry.
""",
    bad=(Example("a misspelt label value in a peer", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-ingress, namespace: shop, annotations: {description: "frontend calls api"}}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: frontnd}}}]
    ports: [{port: 8080}]
""" + CLUSTER),
         Example("a misspelt label key in spec.podSelector", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-ingress, namespace: shop, annotations: {description: "frontend calls api"}}
spec:
  podSelector: {matchLabels: {ap: api}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: frontend}}}]
    ports: [{port: 8080}]
""" + CLUSTER)),
    good=(Example("labels the workloads carry", """
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
def pod_selector_matches_nothing(policy: NetworkPolicy, ctx: Context) -> Iterator[Hit]:
    view = ctx.view
    if not view.pods_known:
        return
    ns = policy.namespace
    sel = policy.pod_selector
    if not sel.is_empty and not view.any_pod(ns, sel):
        elsewhere = namespaces_with_pods(view, sel, exclude=(ns,), limit=SHOWN + 1) if _names_pods(sel) else []
        d = diagnose_pod_selector(ctx, sel, [ns])
        msg = f"spec.podSelector {sel.describe()} matches no pod or workload in namespace {ns}, so this policy " \
              f"applies to nothing (yet)"
        if elsewhere:
            msg += f"; pods with these labels run in namespace " \
                   f"{_names(elsewhere[:SHOWN], len(elsewhere) > SHOWN)}: is metadata.namespace right?"
            fix = None
        else:
            msg += ": " + "; ".join(d.reasons)
            fix = (snippet({"spec": {"podSelector": d.corrected.to_dict()}})
                   if d.corrected is not None and view.any_pod(ns, d.corrected) else None)
        yield Hit("spec.podSelector", msg, fix)
    for r in _rules(policy):
        for peer in r.peers:
            psel = peer.pod_selector
            if psel is None or psel.is_empty:
                continue
            if peer.namespace_selector is None:
                if view.any_pod(ns, psel) or (_names_pods(psel) and namespaces_with_pods(
                        view, psel, exclude=(ns,), limit=1)):
                    continue  # matched here, or pod-selector-wrong-namespace says where
                scope, where = [ns], f"namespace {ns}"
            else:
                nsel = peer.namespace_selector
                if not ns_scope_known(ctx, nsel):
                    continue
                if namespaces_with_pods(view, psel, ns_selector=nsel, limit=1):
                    continue
                scope = sorted(view.select_namespaces(nsel))
                if not scope:
                    continue  # namespace-selector-matches-nothing reports the peer
                where = f"the namespaces its namespaceSelector matches ({_names(scope)})"
            d = diagnose_pod_selector(ctx, psel, scope)
            fix = None
            if d.corrected is not None and namespaces_with_pods(
                    view, d.corrected, ns_selector=peer.namespace_selector or LabelSelector(((NAME_LABEL, ns),)),
                    limit=1):
                fix = snippet([_peer_dict(peer, pod=d.corrected)])
            yield Hit(f"{_peer_path(r, peer)}.podSelector",
                      f"podSelector {psel.describe()} matches no pod or workload in {where}, so this peer "
                      f"allows nothing (yet): {'; '.join(d.reasons)}", fix)


# --- peers-or-confusion -----------------------------------------------------------------------

@rule(
    id="peers-or-confusion", category="selector", severity="warning",
    applies=_has_or_pair,
    summary="A rule lists a namespaceSelector peer and a podSelector peer separately (OR) where one peer (AND) was likely meant.",
    rationale="""
In YAML the difference is one dash: `- namespaceSelector: ...` followed by `- podSelector: ...`
is two peers, ORed - every pod of the matching namespaces, plus the selected pods of the
policy's own namespace. Written as one peer (no dash before `podSelector`) it is the AND:
only those pods, in those namespaces. The OR form usually opens a whole namespace by
accident. When the pods exist only in the policy's own namespace the OR is plausible and
this stays quiet.
""",
    bad=(Example("one dash too many", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-metrics, namespace: shop, annotations: {description: "prometheus scrapes api"}}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}
    - podSelector: {matchLabels: {app: prometheus}}
    ports: [{port: 9090}]
""" + CLUSTER),),
    good=(Example("one peer: prometheus pods in monitoring", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-metrics, namespace: shop, annotations: {description: "prometheus scrapes api"}}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}
      podSelector: {matchLabels: {app: prometheus}}
    ports: [{port: 9090}]
""" + CLUSTER),
          Example("two peers meant as two: the monitoring namespace, and frontend pods here", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-ingress, namespace: shop, annotations: {description: "frontend and monitoring reach api"}}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}
    - podSelector: {matchLabels: {app: frontend}}
    ports: [{port: 8080}, {port: 9090}]
""" + CLUSTER)),
)
def peers_or_confusion(policy: NetworkPolicy, ctx: Context) -> Iterator[Hit]:
    for r in _rules(policy):
        found = _or_confusion(ctx, policy, r)
        if found is None:
            continue
        nsp, podp, _ = found
        f = r.peers_field
        merged = {"namespaceSelector": nsp.namespace_selector.to_dict(),
                  "podSelector": podp.pod_selector.to_dict()}
        peers = [merged if p.index == nsp.index else _peer_dict(p) if p.ip_block is None
                 else {"ipBlock": {"cidr": p.ip_block.cidr, **({"except": list(p.ip_block.excepts)}
                                                               if p.ip_block.excepts else {})}}
                 for p in r.peers if p.index != podp.index]
        yield Hit(
            f"{r.path}.{f}",
            f"{f}[{nsp.index}] (namespaceSelector only) and {f}[{podp.index}] (podSelector only) are two "
            f"peers, ORed: this allows every pod in namespaces matching {nsp.namespace_selector.describe()}, "
            f"plus pods {podp.pod_selector.describe()} of the policy's own namespace {policy.namespace}; "
            f"to allow only pods {podp.pod_selector.describe()} in those namespaces, write both selectors "
            f"in one peer",
            snippet({f: peers}))


# --- pod-selector-wrong-namespace -------------------------------------------------------------

@rule(
    id="pod-selector-wrong-namespace", category="selector", severity="warning",
    summary="A podSelector-only peer matches nothing in the policy's namespace but matches pods in another namespace.",
    rationale="""
A peer with only `podSelector` means pods of the policy's own namespace. Writing
`podSelector: {matchLabels: {app: prometheus}}` to admit Prometheus from the `monitoring`
namespace admits nothing: the selector is evaluated in the policy's namespace, where no
such pod runs. The fix is a namespaceSelector in the same peer, naming the namespace
where those pods live.
""",
    bad=(Example("prometheus lives in monitoring, not shop", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-metrics, namespace: shop, annotations: {description: "prometheus scrapes api"}}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: prometheus}}}]
    ports: [{port: 9090}]
""" + CLUSTER),
         Example("egress to CoreDNS without a namespaceSelector", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-egress, namespace: shop, annotations: {description: "api egress"}}
spec:
  podSelector: {matchLabels: {app: api}}
  policyTypes: [Egress]
  egress:
  - to: [{podSelector: {matchLabels: {k8s-app: kube-dns}}}]
    ports: [{port: 53, protocol: UDP}, {port: 53, protocol: TCP}]
""" + CLUSTER)),
    good=(Example("namespace and pods in one peer", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-metrics, namespace: shop, annotations: {description: "prometheus scrapes api"}}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}
      podSelector: {matchLabels: {app: prometheus}}
    ports: [{port: 9090}]
""" + CLUSTER),),
)
def pod_selector_wrong_namespace(policy: NetworkPolicy, ctx: Context) -> Iterator[Hit]:
    view = ctx.view
    if not view.pods_known:
        return
    ns = policy.namespace
    for r in _rules(policy):
        confused = _or_confusion(ctx, policy, r)
        for peer in r.peers:
            sel = peer.pod_selector
            if not peer.is_pod_only or not _names_pods(sel) or peer.ip_block is not None:
                continue
            if confused is not None and confused[1].index == peer.index and confused[2]:
                continue  # peers-or-confusion already explains where these pods are
            if view.any_pod(ns, sel):
                continue
            elsewhere = namespaces_with_pods(view, sel, exclude=(ns,), limit=SHOWN + 1)
            if not elsewhere:
                continue
            more = len(elsewhere) > SHOWN
            target = elsewhere[:SHOWN]
            fixed = _peer_dict(peer, ns=_name_selector(target))
            yield Hit(f"{_peer_path(r, peer)}.podSelector",
                      f"podSelector {sel.describe()} without a namespaceSelector means pods of namespace {ns}, "
                      f"where none match; such pods run in namespace {_names(elsewhere[:SHOWN], more)}: add a "
                      f"namespaceSelector to this peer",
                      snippet([fixed]))
