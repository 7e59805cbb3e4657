"""The live cluster view (webhook/cluster/live.py) through the real kubernetes client against the
Kubernetes API stand-in (tests/kubeapi): sync, events, 410 Gone, injected failures, outages.

Every wait is bounded and polls the view; nothing asserts on elapsed time."""
from __future__ import annotations

import dataclasses

import pytest

from webhook.cluster.live import LiveSource
from webhook.config import DEFAULT, ServerConfig
from webhook.policy.selectors import LabelSelector
from tests.waiting import wait_until

WAIT = 15.0  # generous upper bound for CI on 2 cores; passing tests finish far sooner


def wait_for(predicate, what: str, timeout: float = WAIT):
    """Poll `predicate` until it returns something truthy; fail naming `what` after `timeout`."""
    return wait_until(predicate, what, timeout)


# --- objects -------------------------------------------------------------------------------

def namespace(name, **labels):
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def pod(ns, name, labels=None, ports=(), ip=None):
    obj = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": ns, "labels": dict(labels or {}),
                        "managedFields": [{"manager": "kubelet", "fieldsV1": {"f:status": {}}}]},
           "spec": {"containers": [{"name": "main", "image": "nginx",
                                    "ports": [{"containerPort": p, "name": n, "protocol": "TCP"}
                                              for n, p in ports]}]},
           "status": {"phase": "Running"}}
    if ip:
        obj["status"].update(podIP=ip, podIPs=[{"ip": ip}])
    return obj


def service(ns, name, selector, port=80):
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": selector, "ports": [{"port": port, "targetPort": port, "protocol": "TCP"}],
                     "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"]}}


def policy(ns, name, app="web", port=80):
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": ns,
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": {"podSelector": {"matchLabels": {"app": app}},
                     "ingress": [{"ports": [{"port": port, "protocol": "TCP"}]}]}}


def invalid_policy(ns, name):
    bad = policy(ns, name)
    bad["spec"]["policyTypes"] = ["Sideways"]  # our parser refuses it, as the API server would
    return bad


def seed(api):
    api.put_object(namespace("shop", team="payments"))
    api.put_object(namespace("monitoring", team="observability"))
    api.put_object(pod("shop", "web-1", {"app": "web"}, [("http", 8080)], ip="10.0.0.11"))
    api.put_object(pod("shop", "web-2", {"app": "web"}, [("http", 8080)], ip="10.0.0.12"))
    api.put_object(pod("shop", "db-1", {"app": "db"}, [("pg", 5432)], ip="10.0.0.21"))
    api.put_object(pod("monitoring", "prom-1", {"app": "prometheus"}, ip="10.0.1.5"))
    api.put_object(service("shop", "web", {"app": "web"}))
    api.put_object(policy("shop", "allow-web"))


APP = lambda value: LabelSelector(match_labels=(("app", value),))  # noqa: E731


def pod_names(view, ns, selector):
    return sorted(p.name for p in view.select_pods(ns, selector))


def policy_keys(view):
    return sorted(p.key for p in view.policies())


@pytest.fixture
def live(kube_api):
    """Start LiveSources against the test's stand-in with short retry timings; stop them after."""
    started: list[LiveSource] = []

    def start(config=DEFAULT, sync=True, **overrides) -> LiveSource:
        options = dict(backoff_initial=0.05, backoff_max=0.4, watch_timeout=(30, 30), read_grace=5.0,
                       list_timeout=10.0)
        options.update(overrides)
        source = LiveSource(kube_api.client_configuration(), config, **options)
        started.append(source)
        source.start()
        if sync:
            assert source.wait_ready(WAIT), f"no initial sync; last errors: {source.last_errors()}"
            assert kube_api.wait_for_watches(4, WAIT), "the four kind watches did not open"
        return source

    yield start
    for source in started:
        source.stop()


# --- tests -----------------------------------------------------------------------------------

def test_initial_sync_fills_the_view_and_makes_it_ready(kube_api, live):
    seed(kube_api)
    invalid = kube_api.put_object(invalid_policy("shop", "sideways"))
    assert invalid["metadata"]["resourceVersion"]
    source = live(sync=False)
    assert source.wait_ready(WAIT)
    assert source.ready()
    view = source.view

    assert sorted(ns.name for ns in view.namespaces()) == ["monitoring", "shop"]
    assert view.namespace_labels("shop")["team"] == "payments"
    assert view.namespace_labels("shop")["kubernetes.io/metadata.name"] == "shop"
    web = view.find_pod("shop", "web-1")
    assert dict(web.labels) == {"app": "web"}
    assert [(p.name, p.port, p.protocol) for p in web.ports] == [("http", 8080, "TCP")]
    assert web.ips == ("10.0.0.11",)
    assert pod_names(view, "shop", APP("web")) == ["web-1", "web-2"]
    assert [s.name for s in view.services("shop")] == ["web"]
    assert policy_keys(view) == ["shop/allow-web"]
    stored = view.policy("shop", "allow-web")
    assert "managedFields" not in stored.raw["metadata"]
    assert "kubectl.kubernetes.io/last-applied-configuration" not in (stored.annotations or {})

    stats = source.stats()
    assert stats["synced"] is True
    assert (stats["namespaces"], stats["pods"], stats["services"], stats["networkpolicies"]) == (2, 4, 1, 1)
    assert stats["objects"] == 8
    assert stats["invalid_policies"] == 1
    assert stats["errors"] == 0 and stats["relists"] == 0
    assert 0 <= stats["age_seconds"] < WAIT
    for key in ("reconnects", "pods_age_seconds", "pods_synced"):
        assert key in stats


def test_an_empty_cluster_syncs_to_a_complete_empty_inventory(kube_api, live):
    source = live()
    assert source.ready()
    assert source.stats()["objects"] == 0
    # The lists were complete, so "no pod matches" is a fact the checks may report.
    assert source.view.pods_known and source.view.namespaces_known


def test_add_modify_delete_of_every_kind_reach_the_view(kube_api, live):
    seed(kube_api)
    source = live()
    view = source.view

    kube_api.put_object(namespace("billing", tier="gold"))
    kube_api.put_object(pod("shop", "web-3", {"app": "web"}, [("http", 8080)]))
    kube_api.put_object(service("shop", "db", {"app": "db"}, 5432))
    kube_api.put_object(policy("shop", "allow-db", app="db", port=5432))
    wait_for(lambda: view.namespace("billing") and view.find_pod("shop", "web-3")
             and len(view.services("shop")) == 2 and view.policy("shop", "allow-db"), "four additions")

    kube_api.put_object(namespace("billing", tier="silver"))
    kube_api.put_object(pod("shop", "web-3", {"app": "web"}, [("http", 9090)], ip="10.0.0.13"))
    kube_api.put_object(service("shop", "db", {"app": "db"}, 6432))
    kube_api.put_object(policy("shop", "allow-db", app="db", port=6432))
    wait_for(lambda: view.namespace_labels("billing").get("tier") == "silver"
             and view.find_pod("shop", "web-3").ports[0].port == 9090
             and {s.name: s.ports[0].port for s in view.services("shop")}.get("db") == 6432
             and view.policy("shop", "allow-db").ingress[0].ports[0].port == 6432, "four modifications")
    assert view.find_pod("shop", "web-3").ips == ("10.0.0.13",)

    assert kube_api.delete_object("Pod", "shop", "web-3")
    assert kube_api.delete_object("Service", "shop", "db")
    assert kube_api.delete_object("NetworkPolicy", "shop", "allow-db")
    assert kube_api.delete_object("Namespace", None, "billing")
    wait_for(lambda: view.find_pod("shop", "web-3") is None and len(view.services("shop")) == 1
             and view.policy("shop", "allow-db") is None and view.namespace("billing") is None,
             "four deletions")
    stats = source.stats()
    assert (stats["namespaces"], stats["pods"], stats["services"], stats["networkpolicies"]) == (2, 4, 1, 1)


def test_label_changes_move_pods_between_selector_results(kube_api, live):
    seed(kube_api)
    view = live().view
    assert pod_names(view, "shop", APP("db")) == ["db-1"]

    kube_api.put_object(pod("shop", "web-2", {"app": "db"}, [("http", 8080)], ip="10.0.0.12"))
    wait_for(lambda: pod_names(view, "shop", APP("db")) == ["db-1", "web-2"], "web-2 relabelled to app=db")
    assert pod_names(view, "shop", APP("web")) == ["web-1"]

    kube_api.put_object(namespace("monitoring", team="platform"))
    team = LabelSelector(match_labels=(("team", "platform"),))
    wait_for(lambda: view.select_namespaces(team) == ["monitoring"], "namespace relabelled")
    assert view.select_namespaces(LabelSelector(match_labels=(("team", "observability"),))) == []


def test_gone_relists_and_reflects_what_changed_during_the_gap(kube_api, live):
    seed(kube_api)
    source = live()
    view = source.view
    untouched = view.find_pod("monitoring", "prom-1")
    generation_before = None

    with kube_api.outage():  # the watches break; meanwhile the cluster changes
        wait_for(lambda: source.stats()["errors"] > 0, "the cache noticing the outage")
        assert kube_api.delete_object("Pod", "shop", "web-2")
        assert kube_api.delete_object("NetworkPolicy", "shop", "allow-web")
        kube_api.put_object(pod("shop", "web-4", {"app": "web"}))
        kube_api.compact()  # ...and the history that would let a watch resume is gone
        generation_before = view.generation
        assert view.find_pod("shop", "web-2") is not None  # still the last good view

    wait_for(lambda: view.find_pod("shop", "web-2") is None and view.policy("shop", "allow-web") is None
             and view.find_pod("shop", "web-4") is not None, "the relist after 410 Gone")
    assert source.stats()["relists"] >= 2  # at least pods and policies had to relist
    assert pod_names(view, "shop", APP("web")) == ["web-1", "web-4"]
    # The relist applied a difference, not a reload: unchanged objects were left in place.
    assert view.find_pod("monitoring", "prom-1") is untouched
    assert view.generation - generation_before < 10


def test_a_410_answer_to_a_watch_request_relists(kube_api, live):
    seed(kube_api)
    source = live(page_size=2)  # several pages per list, so relists page too
    pods = source._kind("pods")
    kube_api.inject_failure("GET", r"^/api/v1/pods$", status=410, count=1)
    kube_api.drop_watches()
    kube_api.put_object(pod("shop", "web-5", {"app": "web"}))
    wait_for(lambda: pods.relists >= 1 and source.view.find_pod("shop", "web-5") is not None,
             "a relist of pods after the 410")
    assert pod_names(source.view, "shop", APP("web")) == ["web-1", "web-2", "web-5"]
    assert pods.errors == 0  # expected protocol, not a failure


def test_injected_500s_on_list_are_retried_until_ready(kube_api, live):
    seed(kube_api)
    kube_api.inject_failure("GET", r"^/api/v1/pods$", status=500, count=3)
    kube_api.inject_failure("GET", r"^/apis/networking.k8s.io/v1/networkpolicies$", status=503, count=2)
    source = live(sync=False)
    assert source.wait_ready(WAIT), source.last_errors()
    assert pod_names(source.view, "shop", APP("web")) == ["web-1", "web-2"]
    assert policy_keys(source.view) == ["shop/allow-web"]
    stats = source.stats()
    assert stats["errors"] >= 5
    assert len(kube_api.requests("GET", r"^/api/v1/pods$", watch=False)) >= 4


def test_not_ready_until_every_kind_is_listed(kube_api, live):
    seed(kube_api)
    fault = kube_api.inject_failure("GET", r"^/api/v1/services$", status=500, count=10_000)
    source = live(sync=False)
    wait_for(lambda: source.stats()["pods_synced"] and source.stats()["errors"] >= 2,
             "pods synced while services keep failing")
    assert source.ready() is False
    assert source.stats()["synced"] is False
    fault.cancel()
    assert source.wait_ready(WAIT)


@pytest.mark.parametrize("abrupt", [False, True])
def test_dropped_watches_reconnect_without_missing_events(kube_api, live, abrupt):
    seed(kube_api)
    source = live()
    view = source.view
    watches_before = len(kube_api.requests("GET", watch=True))
    assert kube_api.drop_watches(abrupt=abrupt) == 4
    # Changes made while the watches are down are replayed from the last resourceVersion.
    for i in range(20):
        kube_api.put_object(pod("shop", f"batch-{i}", {"app": "batch"}))
    assert kube_api.delete_object("Pod", "shop", "db-1")
    kube_api.put_object(namespace("shop", team="checkout"))
    wait_for(lambda: len(pod_names(view, "shop", APP("batch"))) == 20 and view.find_pod("shop", "db-1") is None
             and view.namespace_labels("shop").get("team") == "checkout", "changes made during the drop")
    # Reopened by the cache (counted in reconnects) or, when the socket died before the response
    # headers were read, retried by urllib3 itself; either way from the last resourceVersion.
    wait_for(lambda: len(kube_api.requests("GET", watch=True)) >= watches_before + 4, "four watches reopened")
    reopened = kube_api.requests("GET", watch=True)[watches_before:]
    assert all(r.query.get("resourceVersion") not in (None, "", "0") for r in reopened)
    assert source.stats()["relists"] == 0  # resumed, not relisted
    assert kube_api.wait_for_watches(4, WAIT)


def test_outage_keeps_serving_the_last_view_and_catches_up(kube_api, live):
    seed(kube_api)
    source = live()
    view = source.view
    assert source.behind() == {}
    with kube_api.outage():
        wait_for(lambda: source.stats()["errors"] >= 2, "failed reconnects during the outage")
        assert source.ready() is True
        # still ready (the last good view judges), but it says which kinds it no longer follows
        wait_for(lambda: set(source.behind()) == {"namespaces", "pods", "services", "networkpolicies"},
                 "every kind reported as not following the API server")
        assert all(why.startswith("retrying after ") for why in source.behind().values()), source.behind()
        stats = source.stats()
        assert stats["synced"] is True and stats["pods"] == 4
        assert pod_names(view, "shop", APP("web")) == ["web-1", "web-2"]
        kube_api.put_object(pod("shop", "web-9", {"app": "web"}))
        kube_api.put_object(policy("monitoring", "allow-prom", app="prometheus", port=9090))
        kube_api.delete_object("Service", "shop", "web")
    wait_for(lambda: pod_names(view, "shop", APP("web")) == ["web-1", "web-2", "web-9"]
             and view.policy("monitoring", "allow-prom") is not None and view.services("shop") == [],
             "catching up after the outage")
    assert source.stats()["relists"] == 0  # the history still covered the gap
    wait_for(lambda: source.behind() == {}, "every kind following again")


def test_invalid_policies_are_counted_and_left_out(kube_api, live):
    seed(kube_api)
    kube_api.put_object(invalid_policy("shop", "broken"))
    source = live()
    view = source.view
    assert policy_keys(view) == ["shop/allow-web"]
    assert source.stats()["invalid_policies"] == 1
    assert "policyTypes" in source.invalid_policies()["shop/broken"]

    kube_api.put_object(policy("shop", "broken"))  # fixed: now it counts
    wait_for(lambda: view.policy("shop", "broken") is not None, "the fixed policy")
    assert source.stats()["invalid_policies"] == 0

    kube_api.put_object(invalid_policy("shop", "allow-web"))  # broken by an update: leaves the view
    wait_for(lambda: view.policy("shop", "allow-web") is None, "the broken policy leaving the view")
    assert source.stats()["invalid_policies"] == 1
    kube_api.delete_object("NetworkPolicy", "shop", "allow-web")
    wait_for(lambda: source.stats()["invalid_policies"] == 0, "the deleted invalid policy uncounted")
    assert policy_keys(view) == ["shop/broken"]


def test_bookmarks_keep_quiet_kinds_resumable_after_compaction(kube_api, live):
    seed(kube_api)
    source = live()
    # Only namespaces change; the pod watch hears nothing but BOOKMARKs (every second here).
    for i in range(5):
        kube_api.put_object(namespace(f"team-{i}"))
    target = kube_api.resource_version
    pods = source._kind("pods")
    wait_for(lambda: int(pods.resource_version or 0) >= target, "a bookmark advancing the pod watch")
    kube_api.compact()
    kube_api.drop_watches()
    wait_for(lambda: pods.reconnects >= 1 and kube_api.open_watches >= 4, "the pod watch resuming")
    kube_api.put_object(pod("team-0", "api-1", {"app": "api"}))
    wait_for(lambda: source.view.find_pod("team-0", "api-1") is not None, "a pod after resuming")
    assert pods.relists == 0  # thanks to the bookmark, no 410 and no relist


def test_periodic_relist_when_configured(kube_api, live):
    seed(kube_api)
    config = dataclasses.replace(DEFAULT, server=ServerConfig(relistSeconds=1))
    source = live(config)
    wait_for(lambda: source.stats()["relists"] >= 4, "one periodic relist per kind")
    assert pod_names(source.view, "shop", APP("web")) == ["web-1", "web-2"]


def test_reads_make_no_api_calls_and_pods_share_label_dicts(kube_api, live):
    seed(kube_api)
    source = live()
    view = source.view
    before = len(kube_api.requests())
    for _ in range(50):
        view.select_pods("shop", APP("web"))
        view.policies("shop")
        view.select_namespaces(LabelSelector(match_labels=(("team", "payments"),)))
        source.ready()
        source.stats()
    assert len(kube_api.requests()) == before
    assert view.find_pod("shop", "web-1").labels is view.find_pod("shop", "web-2").labels


def test_stop_ends_every_watch_and_joins_the_threads(kube_api, live):
    seed(kube_api)
    source = live()
    assert source.threads_alive() == 7  # 4 kinds, and 3 admin policy kinds (not served here: waiting)
    source.stop()
    assert source.threads_alive() == 0
    wait_for(lambda: kube_api.open_watches == 0, "the server seeing the watches close")
    source.stop()  # idempotent


def test_stop_during_an_outage_is_prompt(kube_api, live):
    seed(kube_api)
    source = live(backoff_initial=5.0, backoff_max=30.0)  # it would sleep long between retries
    kube_api.stop_accepting()
    wait_for(lambda: source.stats()["errors"] >= 1, "a failed reconnect")
    source.stop()
    assert source.threads_alive() == 0
    kube_api.start_accepting()


def test_backoff_grows_is_jittered_and_bounded():
    import random

    from webhook.cluster.live import Backoff

    backoff = Backoff(0.5, 30.0, random.Random(7))
    delays = [backoff.next_delay() for _ in range(12)]
    assert 0.25 <= delays[0] <= 0.5
    assert all(d <= 30.0 for d in delays)
    assert all(15.0 <= d for d in delays[7:])  # capped: the ceiling stays 30 s, jitter keeps >= half
    assert len(set(delays)) == len(delays)  # jittered, not lockstep
    backoff.reset()
    assert backoff.next_delay() <= 0.5


def test_a_synced_view_is_taken_out_of_the_garbage_collectors_walks(kube_api, live):
    # A full view is millions of long-lived objects; walking them in every full collection
    # stalled reviews (webhook/cluster/heap.py). After the first complete list they are frozen.
    import gc
    seed(kube_api)
    gc.unfreeze()
    try:
        source = live()
        web = source.view.find_pod("shop", "web-1")
        assert gc.is_tracked(web)
        assert gc.get_freeze_count() > 0
        assert not any(o is web for o in gc.get_objects()), "the synced view is still walked by the collector"
        # what arrives later is not frozen until the next complete list
        kube_api.put_object(pod("shop", "web-3", {"app": "web"}, [("http", 8080)], ip="10.0.0.13"))
        late = wait_for(lambda: source.view.find_pod("shop", "web-3"), "the new pod in view")
        assert any(o is late for o in gc.get_objects())
    finally:
        gc.unfreeze()


def test_objects_replaced_by_watch_events_are_frozen_again_once_a_tenth_of_the_view(kube_api, live):
    import gc
    seed(kube_api)
    gc.unfreeze()
    try:
        source = live()
        source.refreezer.minimum = 3  # the view holds 8 objects; 3 changes are more than a tenth
        for i in range(2):
            kube_api.put_object(pod("shop", f"new-{i}", {"app": "web"}, ip=f"10.0.0.{30 + i}"))
        second = wait_for(lambda: source.view.find_pod("shop", "new-1"), "the second new pod")
        assert any(o is second for o in gc.get_objects()), "frozen before enough of the view changed"
        kube_api.put_object(pod("shop", "new-2", {"app": "web"}, ip="10.0.0.32"))
        wait_for(lambda: source.view.find_pod("shop", "new-2"), "the third new pod")
        wait_for(lambda: not any(o is second for o in gc.get_objects()), "the changed objects frozen again")
        assert source.refreezer.changed == 0
    finally:
        gc.unfreeze()


ADMIN_KINDS = {"AdminNetworkPolicy", "BaselineAdminNetworkPolicy", "ClusterNetworkPolicy"}


def test_admin_policy_kinds_the_server_does_not_serve_are_logged_once_and_only_rediscovered(kube_api, live, caplog):
    # The stand-in, like an API server without the network-policy-api CRDs, answers 404 to
    # /apis/policy.networking.k8s.io/v1alpha1 and v1alpha2.
    import logging
    import time
    seed(kube_api)
    with caplog.at_level(logging.INFO, logger="webhook.cluster.live"):
        source = live(rediscover_seconds=0.3)
        time.sleep(1.5)
    assert source.ready() and source.behind() == {}
    assert set(source.not_followed()) == ADMIN_KINDS
    assert all("not served by this API server" in why for why in source.not_followed().values())
    asked = kube_api.requests(path_regex=r"^/apis/policy\.networking\.k8s\.io")
    # discovery only (no list, no watch of what is not there), at the rediscovery period
    assert {r.path for r in asked} == {"/apis/policy.networking.k8s.io/v1alpha1",
                                       "/apis/policy.networking.k8s.io/v1alpha2"}
    assert not any(r.watch for r in asked)
    assert 3 <= len(asked) <= 3 * (1.5 / 0.3 + 2)
    said = [r.getMessage() for r in caplog.records if "not served by this API server" in r.getMessage()]
    assert sorted(m.split()[2] for m in said) == sorted(ADMIN_KINDS)  # once each, not per look
    assert source.stats()["adminnetworkpolicies"] == 0 and source.stats()["adminnetworkpolicies_synced"]


def test_admin_policy_kinds_we_may_not_list_are_left_out_with_the_reason(kube_api, live):
    seed(kube_api)
    kube_api.inject_failure("GET", r"^/apis/policy\.networking\.k8s\.io", status=403, count=1000)
    source = live(rediscover_seconds=60)
    assert source.ready()  # a missing permission for an optional kind does not hold the view back
    assert set(source.not_followed()) == ADMIN_KINDS
    assert all("HTTP 403" in why for why in source.not_followed().values())
    assert source.stats()["errors"] == 0


def test_a_view_without_admin_policies_asks_nothing_about_them(kube_api, live):
    # the audit's own view: its rules read NetworkPolicies only
    seed(kube_api)
    source = live(admin_policies=False)
    assert source.threads_alive() == 4 and source.not_followed() == {}
    assert kube_api.requests(path_regex=r"^/apis/policy\.networking\.k8s\.io") == []


def test_a_policy_past_the_size_limits_is_left_out_and_says_why(kube_api, live, monkeypatch):
    from webhook.policy import limits
    monkeypatch.setattr(limits, "PORTS", 2)  # small: the live cache parses with the same limits
    seed(kube_api)
    big = policy("shop", "big")
    big["spec"]["ingress"][0]["ports"] = [{"port": p} for p in (80, 443, 8080)]
    kube_api.put_object(big)
    source = live()
    assert policy_keys(source.view) == ["shop/allow-web"]
    assert source.stats()["invalid_policies"] == 1
    why = source.invalid_policies()["shop/big"]
    assert "spec.ingress[0].ports: Too large: 3 ports in all rules" in why and "limit of 2" in why
