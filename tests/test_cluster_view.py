"""The cluster view answers selector questions from its indexes, and stays right as it changes."""
from webhook.cluster.objects import ContainerPort, Namespace, Pod, Service, ServicePort
from webhook.cluster.view import (ClusterView, namespaces_declaring_port, namespaces_with_pods,
                                  namespaces_with_service_port)
from webhook.policy.selectors import LabelSelector, Requirement


def sel(**labels):
    return LabelSelector(tuple(sorted(labels.items())))


def test_selectors_with_every_operator_use_the_index_and_match_exactly():
    view = ClusterView()
    view.upsert_pod(Pod("a", "p1", {"app": "web", "tier": "front"}))
    view.upsert_pod(Pod("a", "p2", {"app": "api"}))
    view.upsert_pod(Pod("b", "p3", {"app": "web"}))
    names = lambda s, ns="a": sorted(p.name for p in view.select_pods(ns, s))
    assert names(sel(app="web")) == ["p1"]
    assert names(LabelSelector()) == ["p1", "p2"]
    assert names(LabelSelector((), (Requirement("app", "In", frozenset({"web", "api"})),))) == ["p1", "p2"]
    assert names(LabelSelector((), (Requirement("tier", "NotIn", frozenset({"front"})),))) == ["p2"]
    assert names(LabelSelector((), (Requirement("tier", "Exists", frozenset()),))) == ["p1"]
    assert names(LabelSelector((), (Requirement("tier", "DoesNotExist", frozenset()),))) == ["p2"]


def test_namespaces_carry_their_automatic_name_label_even_when_only_implied():
    view = ClusterView()
    view.upsert_pod(Pod("shop", "p", {}))
    assert view.select_namespaces(sel(**{"kubernetes.io/metadata.name": "shop"})) == ["shop"]
    assert not view.namespaces_known and view.pods_known
    view.upsert_namespace(Namespace("shop", {"kubernetes.io/metadata.name": "shop", "team": "x"}))
    assert view.namespaces_known and view.select_namespaces(sel(team="x")) == ["shop"]


def test_cross_namespace_summaries_follow_adds_relabels_and_deletes():
    view = ClusterView()
    view.upsert_pod(Pod("a", "db", {"app": "db"}, (ContainerPort(5432, "TCP", "pg"),)))
    view.upsert_pod(Pod("b", "db", {"app": "db"}, (ContainerPort(5432, "TCP", "pg"),)))
    assert namespaces_with_pods(view, sel(app="db")) == ["a", "b"]
    assert namespaces_declaring_port(view, "pg") == {"a", "b"}
    view.upsert_pod(Pod("b", "db", {"app": "postgres"}, (ContainerPort(5433, "TCP", "pg2"),)))  # relabel
    assert namespaces_with_pods(view, sel(app="db")) == ["a"]
    assert namespaces_declaring_port(view, 5432) == {"a"} and namespaces_declaring_port(view, 5433) == {"b"}
    view.delete_pod("a", "db")
    assert namespaces_with_pods(view, sel(app="db")) == []
    assert namespaces_declaring_port(view, "pg") == frozenset()
    view.upsert_service(Service("a", "api", {"app": "api"}, (ServicePort(80, 8080),)))
    assert namespaces_with_service_port(view, 80, "TCP") == {"a"} and len(view.services("a")) == 1
    view.upsert_service(Service("a", "api", {"app": "api"}, (ServicePort(81, 8080),)))
    assert namespaces_with_service_port(view, 80, "TCP") == frozenset()
    view.delete_service("a", "api")
    assert view.services("a") == [] and namespaces_with_service_port(view, 81, "TCP") == frozenset()


def test_workload_templates_and_pods_of_the_same_name_are_kept_apart():
    view = ClusterView()
    view.upsert_pod(Pod("a", "api", {"app": "api"}, kind="Deployment"))
    view.upsert_pod(Pod("a", "api", {"app": "api", "pod": "yes"}))
    assert len(view.select_pods("a", sel(app="api"))) == 2
    assert view.find_pod("a", "api").kind == "Pod"
    view.delete_pod("a", "api")
    assert view.find_pod("a", "api").kind == "Deployment"


def test_a_static_source_freezes_its_view_when_a_worker_starts_it():
    # (webhook/cluster/heap.py) the collector's full walks skip the view once start() has run
    import gc
    from webhook.cluster.source import StaticSource
    view = ClusterView()
    view.upsert_pod(Pod("shop", "web-1", {"app": "web"}))
    pod = view.find_pod("shop", "web-1")
    gc.unfreeze()
    try:
        source = StaticSource(view)
        assert any(o is pod for o in gc.get_objects())
        source.start()
        assert not any(o is pod for o in gc.get_objects())
    finally:
        gc.unfreeze()


def test_view_facts_are_built_once_per_generation_and_bounded():
    from webhook.cluster.view import MEMO_MAX
    view = ClusterView()
    builds = []

    def fact(key):
        return view.memo(key, lambda: builds.append(key))  # a fact whose value is None

    fact("a")
    fact("a")
    assert builds == ["a"]  # kept, even though it is None
    view.upsert_namespace(Namespace("shop", {}))
    fact("a")
    assert builds == ["a", "a"]  # the view changed: rebuilt
    # Keys can come from reviews (close matches of a label value nobody carries); a view
    # that never changes must not keep one entry per value ever seen.
    for i in range(MEMO_MAX + 10):
        fact(("typo", i))
    fact("a")
    assert builds.count("a") == 3  # the store started over once full, and rebuilds on demand
    assert len(builds) < MEMO_MAX + 20
