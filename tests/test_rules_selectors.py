"""Selector rules over realistic clusters: what fires, where, what it suggests, when it stays quiet."""
import textwrap

import yaml

from webhook.cluster.objects import Namespace, Pod
from webhook.cluster.view import ClusterView, namespaces_with_pods
from webhook.config import DEFAULT
from webhook.policy.parse import parse_policy
from webhook.policy.selectors import LabelSelector
from webhook.rules.base import Example
from webhook.rules.context import Context
from webhook.rules.examples import run_example
from webhook.rules.inventory import CLUSTER
from webhook.rules.runner import check_policy

NS_RULE = "namespace-selector-matches-nothing"
POD_RULE = "pod-selector-matches-nothing"
OR_RULE = "peers-or-confusion"
WRONG_NS = "pod-selector-wrong-namespace"


def policy(spec: str, namespace: str = "shop") -> str:
    return (f"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
            f"metadata: {{name: p, namespace: {namespace}, annotations: {{description: test}}}}\n"
            f"spec:\n{textwrap.indent(textwrap.dedent(spec).strip(), '  ')}\n")


def run(manifest: str, rule_id: str | None = None):
    found = run_example(Example("test", manifest))
    return [f for f in found if rule_id is None or f.rule == rule_id]


def ingress_from(peers: str, namespace: str = "shop", selector: str = "{matchLabels: {app: api}}") -> str:
    """A policy on `selector` whose one ingress rule has `peers` (a YAML list) as `from`."""
    spec = (f"podSelector: {selector}\ningress:\n- from:\n"
            + textwrap.indent(textwrap.dedent(peers).strip(), "  "))
    return policy(spec, namespace)


# --- namespace-selector-matches-nothing ----------------------------------------------------

def test_name_label_suggests_metadata_name_and_keeps_the_pod_selector_in_the_fix():
    found = run(ingress_from("""
        - namespaceSelector: {matchLabels: {name: monitoring}}
          podSelector: {matchLabels: {app: prometheus}}
    """) + CLUSTER, NS_RULE)
    assert len(found) == 1
    f = found[0]
    assert f.severity == "error"
    assert f.path == "spec.ingress[0].from[0].namespaceSelector"
    assert "no namespace has the label key `name`" in f.message
    assert "kubernetes.io/metadata.name: monitoring" in f.message
    fixed = yaml.safe_load(f.fix)
    assert fixed == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                      "podSelector": {"matchLabels": {"app": "prometheus"}}}]


def test_misspelt_value_of_a_set_label_suggests_the_close_value():
    found = run(ingress_from("- namespaceSelector: {matchLabels: {team: observabilty}}") + CLUSTER, NS_RULE)
    assert len(found) == 1
    assert "did you mean `observability`?" in found[0].message
    assert yaml.safe_load(found[0].fix) == [{"namespaceSelector": {"matchLabels": {"team": "observability"}}}]


def test_misspelt_namespace_name_suggests_monitoring():
    found = run(ingress_from(
        "- namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitorng}}") + CLUSTER, NS_RULE)
    assert "did you mean `monitoring`?" in found[0].message


def test_namespace_name_used_as_another_labels_value_suggests_selecting_by_name():
    found = run(ingress_from("- namespaceSelector: {matchLabels: {team: monitoring}}") + CLUSTER, NS_RULE)
    assert len(found) == 1
    assert "a namespace is named monitoring" in found[0].message
    assert yaml.safe_load(found[0].fix)[0]["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}


def test_match_expressions_exists_on_a_key_no_namespace_has():
    found = run(ingress_from("""
        - namespaceSelector:
            matchExpressions: [{key: environment, operator: Exists}]
    """) + CLUSTER, NS_RULE)
    assert len(found) == 1
    assert "`environment` must exist, and no namespace has that label key" in found[0].message


def test_match_expressions_in_with_values_no_namespace_has():
    found = run(ingress_from("""
        - namespaceSelector:
            matchExpressions: [{key: team, operator: In, values: [billing, payments]}]
    """) + CLUSTER, NS_RULE)
    assert len(found) == 1
    assert "no namespace has `team=billing`" in found[0].message
    assert "values in use: observability, shop" in found[0].message
    assert found[0].fix is None  # nothing close: no guess


def test_not_in_that_matches_some_namespace_is_quiet_and_does_not_exist_on_name_label_fires():
    quiet = run(ingress_from("""
        - namespaceSelector:
            matchExpressions: [{key: team, operator: NotIn, values: [shop]}]
    """) + CLUSTER, NS_RULE)
    assert quiet == []
    loud = run(ingress_from("""
        - namespaceSelector:
            matchExpressions: [{key: kubernetes.io/metadata.name, operator: DoesNotExist}]
    """) + CLUSTER, NS_RULE)
    assert len(loud) == 1
    assert "no namespace satisfies !kubernetes.io/metadata.name" in loud[0].message


def test_terms_that_each_match_but_not_together():
    found = run(ingress_from("- namespaceSelector: {matchLabels: {team: shop, kubernetes.io/metadata.name: monitoring}}")
                + CLUSTER, NS_RULE)
    assert len(found) == 1
    assert "no single namespace meets all of" in found[0].message


def test_quiet_when_no_namespace_objects_are_in_view():
    only_workloads = CLUSTER.replace("kind: Namespace", "kind: ConfigMap")
    found = run(ingress_from("- namespaceSelector: {matchLabels: {name: monitoring}}") + only_workloads, NS_RULE)
    assert found == []


def test_egress_peer_path():
    found = run(policy("""
        podSelector: {matchLabels: {app: api}}
        policyTypes: [Egress]
        egress:
        - to:
          - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}
            podSelector: {matchLabels: {k8s-app: kube-dns}}
          ports: [{port: 53, protocol: UDP}, {port: 53, protocol: TCP}]
        - to:
          - ipBlock: {cidr: 10.0.0.0/8}
          - namespaceSelector: {matchLabels: {name: kube-system}}
    """) + CLUSTER, NS_RULE)
    assert [f.path for f in found] == ["spec.egress[1].to[1].namespaceSelector"]


# --- pod-selector-matches-nothing ----------------------------------------------------------

def test_spec_pod_selector_key_typo_suggests_app():
    found = run(policy("""
        podSelector: {matchLabels: {ap: api}}
        policyTypes: [Ingress]
    """) + CLUSTER, POD_RULE)
    assert len(found) == 1
    assert found[0].path == "spec.podSelector"
    assert "did you mean `app`?" in found[0].message
    assert yaml.safe_load(found[0].fix) == {"spec": {"podSelector": {"matchLabels": {"app": "api"}}}}


def test_peer_value_typo_suggests_frontend():
    found = run(ingress_from("- podSelector: {matchLabels: {app: frontnd}}") + CLUSTER, POD_RULE)
    assert len(found) == 1
    assert found[0].path == "spec.ingress[0].from[0].podSelector"
    assert "did you mean `frontend`?" in found[0].message
    assert found[0].severity == "warning"


def test_key_and_value_typo_together():
    found = run(ingress_from("- podSelector: {matchLabels: {ap: frontnd}}") + CLUSTER, POD_RULE)
    msg = found[0].message
    assert "did you mean `app`?" in msg and "did you mean `frontend`?" in msg
    assert yaml.safe_load(found[0].fix) == [{"podSelector": {"matchLabels": {"app": "frontend"}}}]


def test_combined_peer_looks_in_the_selected_namespaces_and_suggests_from_their_pods():
    found = run(ingress_from("""
        - namespaceSelector: {matchLabels: {team: observability}}
          podSelector: {matchLabels: {app: prometheus-server}}
    """) + CLUSTER, POD_RULE)
    assert len(found) == 1
    assert "namespaces its namespaceSelector matches (monitoring)" in found[0].message
    assert "did you mean `prometheus`?" in found[0].message


def test_combined_peer_whose_namespace_selector_matches_nothing_is_reported_once():
    found = run(ingress_from("""
        - namespaceSelector: {matchLabels: {name: monitoring}}
          podSelector: {matchLabels: {app: nothing-like-this}}
    """) + CLUSTER)
    rules = sorted(f.rule for f in found if f.rule in (NS_RULE, POD_RULE))
    assert rules == [NS_RULE]


def test_not_in_and_does_not_exist_pod_selectors():
    none_left = run(ingress_from("""
        - podSelector:
            matchExpressions: [{key: app, operator: NotIn, values: [api, frontend, db]}]
    """) + CLUSTER, POD_RULE)
    assert len(none_left) == 1
    assert "no pod satisfies app notin (api,db,frontend)" in none_left[0].message
    some_left = run(ingress_from("""
        - podSelector:
            matchExpressions: [{key: app, operator: NotIn, values: [api]}]
    """) + CLUSTER, POD_RULE)
    assert some_left == []
    no_tier = run(ingress_from("""
        - podSelector:
            matchExpressions: [{key: tier, operator: DoesNotExist}]
    """) + CLUSTER, POD_RULE)
    assert len(no_tier) == 1


def test_empty_pod_selectors_are_never_reported():
    found = run(policy("""
        podSelector: {}
        ingress:
        - from: [{podSelector: {}}]
    """, namespace="ingress-nginx") + CLUSTER, POD_RULE)
    assert found == []


def test_quiet_without_pods_in_view():
    namespaces_only = "\n".join(
        "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: %s}" % n for n in ("shop", "monitoring"))
    found = run(ingress_from("- podSelector: {matchLabels: {app: frontnd}}") + namespaces_only, POD_RULE)
    assert found == []


def test_spec_pod_selector_of_a_policy_in_the_wrong_namespace():
    found = run(policy("""
        podSelector: {matchLabels: {app: api}}
        policyTypes: [Ingress]
    """, namespace="default") + CLUSTER, POD_RULE)
    assert len(found) == 1
    assert "run in namespace shop: is metadata.namespace right?" in found[0].message


# --- peers-or-confusion --------------------------------------------------------------------

def test_or_of_namespace_and_pod_peers_explains_what_it_allows_and_merges():
    found = run(ingress_from("""
        - ipBlock: {cidr: 192.0.2.0/24}
        - namespaceSelector: {matchLabels: {team: observability}}
        - podSelector: {matchLabels: {app: prometheus}}
    """) + CLUSTER, OR_RULE)
    assert len(found) == 1
    f = found[0]
    assert f.path == "spec.ingress[0].from"
    assert "every pod in namespaces matching team=observability" in f.message
    assert "plus pods app=prometheus of the policy's own namespace shop" in f.message
    assert yaml.safe_load(f.fix) == {"from": [
        {"ipBlock": {"cidr": "192.0.2.0/24"}},
        {"namespaceSelector": {"matchLabels": {"team": "observability"}},
         "podSelector": {"matchLabels": {"app": "prometheus"}}}]}
    # peers-or-confusion explains it; the wrong-namespace rule does not repeat it
    assert run(ingress_from("""
        - namespaceSelector: {matchLabels: {team: observability}}
        - podSelector: {matchLabels: {app: prometheus}}
    """) + CLUSTER, WRONG_NS) == []


def test_or_with_an_empty_pod_selector_is_the_own_namespace_and_is_quiet():
    found = run(ingress_from("""
        - namespaceSelector: {matchLabels: {team: observability}}
        - podSelector: {}
    """) + CLUSTER, OR_RULE)
    assert found == []


def test_or_fires_on_shape_alone_without_an_inventory():
    found = run(ingress_from("""
        - namespaceSelector: {matchLabels: {team: observability}}
        - podSelector: {matchLabels: {app: prometheus}}
    """), OR_RULE)
    assert len(found) == 1


# --- pod-selector-wrong-namespace ----------------------------------------------------------

EXTRA_PROMETHEUS = """
---
apiVersion: v1
kind: Namespace
metadata: {name: monitoring-staging}
---
apiVersion: v1
kind: Pod
metadata: {name: prometheus-0, namespace: monitoring-staging, labels: {app: prometheus}}
spec:
  containers: [{name: p, image: prom/prometheus, ports: [{name: web, containerPort: 9090}]}]
"""


def test_wrong_namespace_names_every_namespace_and_fixes_with_in():
    found = run(ingress_from("- podSelector: {matchLabels: {app: prometheus}}") + CLUSTER + EXTRA_PROMETHEUS)
    wrong = [f for f in found if f.rule == WRONG_NS]
    assert len(wrong) == 1
    assert "run in namespace monitoring, monitoring-staging" in wrong[0].message
    assert yaml.safe_load(wrong[0].fix) == [{
        "namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In",
                                                    "values": ["monitoring", "monitoring-staging"]}]},
        "podSelector": {"matchLabels": {"app": "prometheus"}}}]
    assert not [f for f in found if f.rule == POD_RULE]  # one diagnosis, not two


def test_wrong_namespace_quiet_when_pods_match_at_home():
    found = run(ingress_from("- podSelector: {matchLabels: {app: frontend}}") + CLUSTER, WRONG_NS)
    assert found == []


class CountingView(ClusterView):
    """A real view that counts per-namespace pod lookups, to show the checks do not walk namespaces."""

    lookups = 0

    def any_pod(self, namespace, sel):
        CountingView.lookups += 1
        return super().any_pod(namespace, sel)


def _big_view(namespaces: int) -> ClusterView:
    view = CountingView()
    for i in range(namespaces):
        name = f"team-{i:04d}"
        view.upsert_namespace(Namespace(name, {"kubernetes.io/metadata.name": name, "team": f"t{i}"}))
        view.upsert_pod(Pod(name, "web", {"app": "web", "team": f"t{i}"}, kind="Deployment"))
    view.upsert_namespace(Namespace("monitoring", {"kubernetes.io/metadata.name": "monitoring"}))
    view.upsert_pod(Pod("monitoring", "prometheus", {"app": "prometheus"}, kind="Deployment"))
    return view


def test_wrong_namespace_with_2000_namespaces_looks_only_where_the_labels_are():
    view = _big_view(2000)
    obj = yaml.safe_load(ingress_from("- podSelector: {matchLabels: {app: prometheus}}", namespace="team-0001",
                                      selector="{matchLabels: {app: web}}"))
    pol = parse_policy(obj).policy
    view.upsert_policy(pol)
    CountingView.lookups = 0
    found = [f for f in check_policy(pol, Context(view, DEFAULT)) if f.rule.startswith(("pod-", "namespace-"))]
    assert [f.rule for f in found] == [WRONG_NS]
    assert "run in namespace monitoring" in found[0].message
    assert CountingView.lookups < 20  # not one per namespace


def test_namespaces_with_pods_respects_namespace_selector_and_limit():
    view = _big_view(50)
    sel = LabelSelector((("app", "web"),))
    assert namespaces_with_pods(view, sel, ns_selector=LabelSelector((("team", "t7"),))) == ["team-0007"]
    assert len(namespaces_with_pods(view, sel, limit=3)) == 3
    assert namespaces_with_pods(view, sel, exclude=["team-0000"], limit=1) == ["team-0001"]


def test_suggestions_follow_the_live_view_as_namespaces_come_and_go():
    view = ClusterView()
    view.upsert_namespace(Namespace("shop", {"kubernetes.io/metadata.name": "shop"}))
    view.upsert_pod(Pod("shop", "api", {"app": "api"}, kind="Deployment"))
    obj = yaml.safe_load(ingress_from("- namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitorng}}"))
    pol = parse_policy(obj).policy
    ctx = Context(view, DEFAULT)
    first = [f for f in check_policy(pol, ctx) if f.rule == NS_RULE]
    assert len(first) == 1 and "did you mean" not in first[0].message
    view.upsert_namespace(Namespace("monitoring", {"kubernetes.io/metadata.name": "monitoring"}))
    second = [f for f in check_policy(pol, ctx) if f.rule == NS_RULE]
    assert "did you mean `monitoring`?" in second[0].message
    view.upsert_namespace(Namespace("monitorng", {"kubernetes.io/metadata.name": "monitorng"}))
    assert [f for f in check_policy(pol, ctx) if f.rule == NS_RULE] == []


def test_a_namespace_without_any_pods_is_named_as_such():
    empty_ns = "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: payments}\n"
    found = run(policy("""
        podSelector: {matchLabels: {app: billing}}
        policyTypes: [Ingress]
    """, namespace="payments") + CLUSTER + empty_ns, POD_RULE)
    assert len(found) == 1
    assert "there are no pods or workloads in view in namespace payments" in found[0].message


# --- the cost of suggestions -----------------------------------------------------------------

def test_suggestions_per_policy_are_bounded_and_the_same_every_time():
    # 1,000 namespaces labeled team=team-NNNN and a policy with 200 near-miss values: each
    # "did you mean" compares the value with all 1,000 in use. Unbounded, 250 such selectors
    # against 5,000 namespaces cost 2.6 s of CPU per review. Every finding is still there;
    # only the first SUGGESTION_BUDGET / 1,000 of them carry a suggestion.
    from webhook.rules.context import SUGGESTION_BUDGET
    view = ClusterView()
    for i in range(1000):
        view.upsert_namespace(Namespace(f"ns-{i:04}", {"team": f"team-{i:04}",
                                                        "kubernetes.io/metadata.name": f"ns-{i:04}"}))
    peers = [{"namespaceSelector": {"matchLabels": {"team": f"teem-{i:04}"}}} for i in range(200)]
    obj = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
           "metadata": {"name": "p", "namespace": "ns-0000"},
           "spec": {"podSelector": {}, "ingress": [{"from": peers}]}}
    pol = parse_policy(obj).policy

    def messages():
        return [f.message for f in check_policy(pol, Context(view, DEFAULT)) if f.rule == NS_RULE]
    first = messages()
    assert len(first) == 200
    suggested = sum("did you mean" in m for m in first)
    assert suggested == SUGGESTION_BUDGET // 1000, suggested
    assert messages() == first  # cached answers are charged too: nothing depends on what ran before
