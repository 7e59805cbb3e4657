"""The Kubernetes API stand-in, driven only through the real `kubernetes` Python client."""

import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest
import urllib3
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from tests.kubeapi import KubeAPI

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def api_client(kube_api):
    c = client.ApiClient(kube_api.client_configuration())
    yield c
    c.close()


@pytest.fixture
def core(api_client):
    return client.CoreV1Api(api_client)


@pytest.fixture
def net(api_client):
    return client.NetworkingV1Api(api_client)


def namespace(name, labels=None):
    return client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels))


def pod(name, labels=None):
    return client.V1Pod(metadata=client.V1ObjectMeta(name=name, labels=labels),
                        spec=client.V1PodSpec(containers=[client.V1Container(name="app", image="nginx")]))


def policy(name, pod_labels=None):
    return client.V1NetworkPolicy(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1NetworkPolicySpec(pod_selector=client.V1LabelSelector(match_labels=pod_labels),
                                        policy_types=["Ingress"]))


def collect_in_thread(func, stop_after, **kwargs):
    """Run a Watch in a thread; returns (thread, events list)."""
    events = []
    w = watch.Watch()

    def run():
        for ev in w.stream(func, **kwargs):
            events.append(ev)
            if len(events) >= stop_after:
                w.stop()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, events


# ---- namespaces, metadata, errors -------------------------------------------------------

def test_namespace_create_get_list_adds_name_label_and_metadata(core):
    created = core.create_namespace(namespace("shop", {"team": "a"}))
    assert created.metadata.labels == {"team": "a", "kubernetes.io/metadata.name": "shop"}
    assert created.metadata.uid and created.metadata.creation_timestamp
    assert created.status.phase == "Active" and created.metadata.generation == 1
    second = core.create_namespace(namespace("billing"))
    assert int(second.metadata.resource_version) > int(created.metadata.resource_version)

    got = core.read_namespace("shop")
    assert got.metadata.uid == created.metadata.uid
    listed = core.list_namespace()
    assert [n.metadata.name for n in listed.items] == ["billing", "shop"]
    assert int(listed.metadata.resource_version) >= int(second.metadata.resource_version)
    assert [n.metadata.name for n in core.list_namespace(label_selector="kubernetes.io/metadata.name=shop").items] \
        == ["shop"]


def test_generate_name_gives_unique_names(core):
    core.create_namespace(namespace("shop"))
    body = client.V1ConfigMap(metadata=client.V1ObjectMeta(generate_name="cfg-"), data={"a": "1"})
    names = {core.create_namespaced_config_map("shop", body).metadata.name for _ in range(5)}
    assert len(names) == 5 and all(n.startswith("cfg-") and len(n) == 9 for n in names)


def test_duplicate_create_is_409_already_exists_with_status(core):
    core.create_namespace(namespace("shop"))
    with pytest.raises(ApiException) as err:
        core.create_namespace(namespace("shop"))
    assert err.value.status == 409
    assert '"reason":"AlreadyExists"' in err.value.body and 'namespaces \\"shop\\" already exists' in err.value.body


def test_stale_update_is_409_conflict_and_missing_update_is_404(core):
    core.create_namespace(namespace("shop"))
    first = core.create_namespaced_config_map("shop", client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="cfg"), data={"v": "1"}))
    first.data = {"v": "2"}
    second = core.replace_namespaced_config_map("cfg", "shop", first)
    assert second.data == {"v": "2"}
    assert int(second.metadata.resource_version) > int(first.metadata.resource_version)
    assert second.metadata.uid == first.metadata.uid

    first.data = {"v": "3"}  # still carries the old resourceVersion
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_config_map("cfg", "shop", first)
    assert err.value.status == 409 and '"reason":"Conflict"' in err.value.body
    assert core.read_namespaced_config_map("cfg", "shop").data == {"v": "2"}

    with pytest.raises(ApiException) as err:
        core.replace_namespaced_config_map("absent", "shop", client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="absent")))
    assert err.value.status == 404


def test_no_op_update_keeps_resource_version(core):
    core.create_namespace(namespace("shop"))
    cm = core.create_namespaced_config_map("shop", client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="cfg"), data={"v": "1"}))
    again = core.replace_namespaced_config_map("cfg", "shop", cm)
    assert again.metadata.resource_version == cm.metadata.resource_version


def test_create_in_missing_namespace_is_404(core):
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod("ghost", pod("web"))
    assert err.value.status == 404 and 'namespaces \\"ghost\\" not found' in err.value.body


def test_namespace_deletion_goes_through_terminating_and_removes_contents(kube_api, core, net):
    kube_api.namespace_delete_delay = 0.3
    core.create_namespace(namespace("shop"))
    core.create_namespaced_pod("shop", pod("web"))
    net.create_namespaced_network_policy("shop", policy("deny"))
    rv = core.list_namespace().metadata.resource_version

    deleted = core.delete_namespace("shop")
    # delete_namespace returns the Namespace as a plain dict (its declared type is "object")
    assert deleted["status"]["phase"] == "Terminating" and deleted["metadata"]["deletionTimestamp"]
    terminating = core.read_namespace("shop")
    assert terminating.status.phase == "Terminating"
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("shop", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="x")))
    assert err.value.status == 403 and "being terminated" in err.value.body

    # The namespace and everything in it disappear; a watch sees it happen in order.
    seen = []
    for ev in watch.Watch().stream(core.list_namespace, resource_version=rv, timeout_seconds=10):
        seen.append((ev["type"], ev["object"].status.phase))
        if ev["type"] == "DELETED":
            break
    assert seen == [("MODIFIED", "Terminating"), ("DELETED", "Terminating")]
    with pytest.raises(ApiException) as err:
        core.read_namespace("shop")
    assert err.value.status == 404
    assert core.list_pod_for_all_namespaces().items == []
    assert net.list_network_policy_for_all_namespaces().items == []


def test_delete_returns_status_and_honours_preconditions(core):
    core.create_namespace(namespace("shop"))
    cm = core.create_namespaced_config_map("shop", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cfg")))
    with pytest.raises(ApiException) as err:
        core.delete_namespaced_config_map("cfg", "shop", body=client.V1DeleteOptions(
            preconditions=client.V1Preconditions(resource_version="1")))
    assert err.value.status == 409 and "Precondition failed" in err.value.body
    status = core.delete_namespaced_config_map("cfg", "shop", body=client.V1DeleteOptions(
        preconditions=client.V1Preconditions(resource_version=cm.metadata.resource_version)))
    assert status["status"] == "Success" and status["details"]["name"] == "cfg"
    with pytest.raises(ApiException) as err:
        core.delete_namespaced_config_map("cfg", "shop")
    assert err.value.status == 404


# ---- selectors ----------------------------------------------------------------------------

def test_label_and_field_selectors_filter_lists(core):
    for ns in ("a", "b"):
        core.create_namespace(namespace(ns))
    core.create_namespaced_pod("a", pod("web", {"app": "web", "tier": "front"}))
    core.create_namespaced_pod("a", pod("db", {"app": "db"}))
    core.create_namespaced_pod("b", pod("cache", {"app": "cache", "tier": "back"}))

    def names(**kw):
        return sorted(p.metadata.name for p in core.list_pod_for_all_namespaces(**kw).items)

    assert names() == ["cache", "db", "web"]
    assert names(label_selector="app=web") == ["web"]
    assert names(label_selector="app==db") == ["db"]
    assert names(label_selector="app!=web") == ["cache", "db"]
    assert names(label_selector="app in (web, cache)") == ["cache", "web"]
    assert names(label_selector="app notin (web,cache)") == ["db"]
    assert names(label_selector="tier") == ["cache", "web"]
    assert names(label_selector="!tier") == ["db"]
    assert names(label_selector="tier,app!=cache") == ["web"]
    assert names(field_selector="metadata.name=db") == ["db"]
    assert names(field_selector="metadata.namespace!=a") == ["cache"]
    assert [p.metadata.name for p in core.list_namespaced_pod("a", label_selector="tier").items] == ["web"]
    with pytest.raises(ApiException) as err:
        core.list_pod_for_all_namespaces(label_selector="app in (web")
    assert err.value.status == 400


def test_list_pagination_with_limit_and_continue(core):
    core.create_namespace(namespace("shop"))
    for i in range(5):
        core.create_namespaced_config_map("shop", client.V1ConfigMap(metadata=client.V1ObjectMeta(name=f"c{i}")))
    page = core.list_namespaced_config_map("shop", limit=2)
    names = [c.metadata.name for c in page.items]
    while page.metadata._continue:
        page = core.list_namespaced_config_map("shop", limit=2, _continue=page.metadata._continue)
        names += [c.metadata.name for c in page.items]
    assert names == ["c0", "c1", "c2", "c3", "c4"]


# ---- patch ------------------------------------------------------------------------------------

def test_merge_patch_and_json_patch(core, net):
    core.create_namespace(namespace("shop"))
    created = net.create_namespaced_network_policy("shop", policy("allow", {"app": "web"}))
    assert created.metadata.generation == 1

    merged = net.patch_namespaced_network_policy(
        "allow", "shop", {"metadata": {"labels": {"owner": "me"}}, "spec": {"podSelector": {"matchLabels": {"app": "api"}}}},
        _content_type="application/merge-patch+json")
    assert merged.metadata.labels == {"owner": "me"}
    assert merged.spec.pod_selector.match_labels == {"app": "api"}
    assert merged.metadata.generation == 2

    # The client sends a dict body as strategic merge patch: labels merge, null deletes.
    strategic = net.patch_namespaced_network_policy("allow", "shop", {"metadata": {"labels": {"owner": None, "x": "y"}}})
    assert strategic.metadata.labels == {"x": "y"}

    patched = net.patch_namespaced_network_policy("allow", "shop", [
        {"op": "test", "path": "/spec/podSelector/matchLabels/app", "value": "api"},
        {"op": "add", "path": "/spec/policyTypes/-", "value": "Egress"},
        {"op": "replace", "path": "/metadata/labels/x", "value": "z"},
    ])
    assert patched.spec.policy_types == ["Ingress", "Egress"]
    assert patched.metadata.labels == {"x": "z"}

    with pytest.raises(ApiException) as err:
        net.patch_namespaced_network_policy("allow", "shop", [
            {"op": "test", "path": "/spec/podSelector/matchLabels/app", "value": "web"}])
    assert err.value.status == 422
    with pytest.raises(ApiException) as err:
        net.patch_namespaced_network_policy("allow", "shop", {"metadata": {"resourceVersion": "1", "labels": {"a": "b"}}},
                                            _content_type="application/merge-patch+json")
    assert err.value.status == 409


# ---- leases, events, webhook configurations -----------------------------------------------------

def test_lease_create_update_with_conflict(api_client, core):
    coord = client.CoordinationV1Api(api_client)
    core.create_namespace(namespace("netpol-guard"))
    lease = coord.create_namespaced_lease("netpol-guard", client.V1Lease(
        metadata=client.V1ObjectMeta(name="isolation-controller"),
        spec=client.V1LeaseSpec(holder_identity="pod-a", lease_duration_seconds=15)))
    assert lease.kind == "Lease" and lease.api_version == "coordination.k8s.io/v1"

    mine = coord.read_namespaced_lease("isolation-controller", "netpol-guard")
    theirs = coord.read_namespaced_lease("isolation-controller", "netpol-guard")
    theirs.spec.holder_identity = "pod-b"
    coord.replace_namespaced_lease("isolation-controller", "netpol-guard", theirs)
    mine.spec.holder_identity = "pod-a"
    with pytest.raises(ApiException) as err:
        coord.replace_namespaced_lease("isolation-controller", "netpol-guard", mine)
    assert err.value.status == 409
    assert coord.read_namespaced_lease("isolation-controller", "netpol-guard").spec.holder_identity == "pod-b"


def test_events_and_webhook_configurations(kube_api, api_client, core):
    core.create_namespace(namespace("shop"))
    core.create_namespace(namespace("default"))
    about_shop = client.V1ObjectReference(kind="Namespace", name="shop")
    # as on a real server: an Event about a cluster-scoped object lives in `default`, never in the
    # namespace it is about (422, pkg/apis/core/validation/events.go)
    with pytest.raises(client.ApiException) as refused:
        core.create_namespaced_event("shop", client.CoreV1Event(
            metadata=client.V1ObjectMeta(name="e0"), involved_object=about_shop, reason="Isolated", message="x"))
    assert refused.value.status == 422 and "does not match event.namespace" in refused.value.body
    core.create_namespaced_event("default", client.CoreV1Event(
        metadata=client.V1ObjectMeta(name="e1"), involved_object=about_shop,
        reason="Isolated", message="created default deny"))
    events = client.EventsV1Api(api_client)
    from datetime import datetime, timezone
    events.create_namespaced_event("default", client.EventsV1Event(
        metadata=client.V1ObjectMeta(name="e2"), event_time=datetime.now(timezone.utc),
        reason="Isolated", action="Create", reporting_controller="netpol-guard", reporting_instance="x",
        type="Normal", note="hi"))
    assert [e.reason for e in core.list_namespaced_event("default").items] == ["Isolated"]
    assert [e.note for e in events.list_event_for_all_namespaces().items] == ["hi"]
    assert kube_api.get_object("Event", "default", "e2", api_version="events.k8s.io/v1")["note"] == "hi"

    admission = client.AdmissionregistrationV1Api(api_client)
    webhook = client.V1ValidatingWebhook(
        name="validate.netpol-guard.io", admission_review_versions=["v1"], side_effects="None",
        client_config=client.AdmissionregistrationV1WebhookClientConfig(ca_bundle="Y2E=", service=client.AdmissionregistrationV1ServiceReference(
            name="netpol-guard", namespace="netpol-guard", path="/validate")))
    admission.create_validating_webhook_configuration(client.V1ValidatingWebhookConfiguration(
        metadata=client.V1ObjectMeta(name="netpol-guard"), webhooks=[webhook]))
    admission.patch_validating_webhook_configuration("netpol-guard", [
        {"op": "replace", "path": "/webhooks/0/clientConfig/caBundle", "value": "bmV3"}])
    got = admission.read_validating_webhook_configuration("netpol-guard")
    assert got.webhooks[0].client_config.ca_bundle == "bmV3"
    assert admission.list_mutating_webhook_configuration().items == []


# ---- watch --------------------------------------------------------------------------------------

def test_watch_from_resource_version_sees_added_modified_deleted(core):
    core.create_namespace(namespace("shop"))
    rv = core.list_namespaced_config_map("shop").metadata.resource_version
    cm = core.create_namespaced_config_map("shop", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cfg"), data={"v": "1"}))
    cm.data = {"v": "2"}
    core.replace_namespaced_config_map("cfg", "shop", cm)
    core.delete_namespaced_config_map("cfg", "shop")

    w = watch.Watch()
    seen = []
    for ev in w.stream(core.list_namespaced_config_map, "shop", resource_version=rv, timeout_seconds=5):
        seen.append((ev["type"], ev["object"].metadata.name, (ev["object"].data or {}).get("v")))
        if len(seen) == 3:
            w.stop()
    assert seen == [("ADDED", "cfg", "1"), ("MODIFIED", "cfg", "2"), ("DELETED", "cfg", "2")]
    assert int(w.resource_version) > int(rv)


def test_watch_without_resource_version_replays_state_then_follows(kube_api, core):
    core.create_namespace(namespace("shop"))
    t, events = collect_in_thread(core.list_namespace, stop_after=2, timeout_seconds=10)
    assert kube_api.wait_for_watches(1)
    core.create_namespace(namespace("billing"))
    t.join(10)
    assert [(e["type"], e["object"].metadata.name) for e in events] == [("ADDED", "shop"), ("ADDED", "billing")]


def test_watch_honours_label_selector_entering_and_leaving(kube_api, core):
    core.create_namespace(namespace("shop"))
    rv = core.list_namespaced_pod("shop").metadata.resource_version
    core.create_namespaced_pod("shop", pod("web", {"app": "web"}))
    core.create_namespaced_pod("shop", pod("db", {"app": "db"}))
    core.patch_namespaced_pod("db", "shop", {"metadata": {"labels": {"app": "web"}}})  # enters
    core.patch_namespaced_pod("web", "shop", {"metadata": {"labels": {"app": "old"}}})  # leaves
    seen = [(e["type"], e["object"].metadata.name)
            for e in watch.Watch().stream(core.list_namespaced_pod, "shop", label_selector="app=web",
                                          resource_version=rv, timeout_seconds=1)]
    assert seen == [("ADDED", "web"), ("ADDED", "db"), ("DELETED", "web")]


def test_watch_after_compaction_raises_410_gone(kube_api, core):
    core.create_namespace(namespace("shop"))
    old_rv = core.list_namespace().metadata.resource_version
    core.create_namespace(namespace("billing"))
    kube_api.compact()
    with pytest.raises(ApiException) as err:
        for _ in watch.Watch().stream(core.list_namespace, resource_version=old_rv, timeout_seconds=5):
            pass
    assert err.value.status == 410 and "Expired" in err.value.reason
    # Without timeout_seconds the client retries once from the same RV, then gives up the same way.
    with pytest.raises(ApiException) as err:
        for _ in watch.Watch().stream(core.list_namespace, resource_version=old_rv):
            pass
    assert err.value.status == 410
    # Watching from the current resourceVersion works again.
    current = core.list_namespace().metadata.resource_version
    assert list(watch.Watch().stream(core.list_namespace, resource_version=current, timeout_seconds=1)) == []


def test_bounded_history_expires_old_resource_versions(kube_api, core):
    kube_api.set_history_size(3)
    core.create_namespace(namespace("shop"))
    start = core.list_namespace().metadata.resource_version
    for i in range(5):
        core.create_namespaced_config_map("shop", client.V1ConfigMap(metadata=client.V1ObjectMeta(name=f"c{i}")))
    with pytest.raises(ApiException) as err:
        list(watch.Watch().stream(core.list_namespaced_config_map, "shop", resource_version=start, timeout_seconds=2))
    assert err.value.status == 410


def test_watch_bookmarks_carry_the_current_resource_version():
    with KubeAPI(bookmark_interval=0.05) as api:
        with client.ApiClient(api.client_configuration()) as c:
            core = client.CoreV1Api(c)
            core.create_namespace(namespace("shop"))
            rv = core.list_namespace().metadata.resource_version
            w = watch.Watch()
            kinds = []
            for ev in w.stream(core.list_namespace, resource_version=rv, allow_watch_bookmarks=True, timeout_seconds=10):
                kinds.append(ev["type"])
                if ev["type"] == "BOOKMARK":
                    assert ev["raw_object"]["metadata"]["resourceVersion"] == rv
                    w.stop()
            assert kinds == ["BOOKMARK"]


def test_dropped_watch_ends_the_stream(kube_api, core):
    core.create_namespace(namespace("shop"))
    t, events = collect_in_thread(core.list_namespace, stop_after=100, timeout_seconds=30)
    assert kube_api.wait_for_watches(1)
    assert kube_api.drop_watches() == 1
    t.join(10)
    assert not t.is_alive()
    assert [e["type"] for e in events] == ["ADDED"]
    assert [r.status for r in kube_api.requests(watch=True)] == [200]


# ---- fault injection, outage, observability ------------------------------------------------------

def test_injected_500_appears_exactly_n_times(kube_api, core):
    core.create_namespace(namespace("shop"))
    fault = kube_api.inject_failure("GET", r"/api/v1/namespaces/shop$", status=500, count=2)
    for _ in range(2):
        with pytest.raises(ApiException) as err:
            core.read_namespace("shop")
        assert err.value.status == 500 and '"reason":"InternalError"' in err.value.body
    assert core.read_namespace("shop").metadata.name == "shop"
    assert fault.hits == 2 and fault.remaining == 0
    statuses = [r.status for r in kube_api.requests("GET", r"/namespaces/shop$")]
    assert statuses == [500, 500, 200]


@pytest.mark.parametrize("status", [409, 429, 503])
def test_injected_statuses_reach_the_client(kube_api, core, status):
    core.create_namespace(namespace("shop"))
    kube_api.inject_failure("POST", r"/configmaps$", status=status)
    body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cfg"))
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("shop", body)
    assert err.value.status == status
    assert core.create_namespaced_config_map("shop", body).metadata.name == "cfg"


def test_latency_fault_delays_but_serves(kube_api, core):
    fault = kube_api.add_latency(0.05, "GET", r"/api/v1/namespaces$", count=2)
    assert core.list_namespace().items == [] and core.list_namespace().items == []
    assert fault.hits == 2
    assert min(r.duration for r in kube_api.requests("GET")) >= 0.05


def test_outage_refuses_connections_and_keeps_state(kube_api, core):
    core.create_namespace(namespace("shop"))
    kube_api.stop_accepting()
    assert not kube_api.accepting
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        core.read_namespace("shop")
    kube_api.start_accepting()
    assert core.read_namespace("shop").metadata.name == "shop"


def test_outage_ends_open_watches(kube_api, core):
    t, events = collect_in_thread(core.list_namespace, stop_after=100, timeout_seconds=30)
    assert kube_api.wait_for_watches(1)
    with kube_api.outage():
        t.join(10)
        assert not t.is_alive()


def test_request_log_counts_writes_per_namespace(kube_api, core):
    core.create_namespace(namespace("a"))
    core.create_namespace(namespace("b"))
    kube_api.reset_log()
    core.create_namespaced_config_map("a", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="x")))
    core.patch_namespaced_config_map("x", "a", {"data": {"k": "v"}})
    core.create_namespaced_config_map("b", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="y")))
    core.delete_namespaced_config_map("y", "b")
    core.list_namespaced_config_map("a")
    assert kube_api.writes() == 4 and kube_api.writes("a") == 2 and kube_api.writes("b") == 2
    record = kube_api.requests("PATCH")[0]
    assert (record.path, record.status, record.namespace) == ("/api/v1/namespaces/a/configmaps/x", 200, "a")
    kube_api.reset_log()
    assert kube_api.requests() == []


def test_direct_state_access_is_visible_through_the_api(kube_api, core):
    stored = kube_api.put_object({"apiVersion": "v1", "kind": "Pod",
                                  "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": "x"}]},
                                  "status": {"podIP": "10.0.0.7"}})
    assert stored["metadata"]["resourceVersion"]
    read = core.read_namespaced_pod("web", "shop")
    assert read.status.pod_ip == "10.0.0.7"
    assert core.read_namespace("shop").metadata.labels["kubernetes.io/metadata.name"] == "shop"
    kube_api.put_object({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "shop"},
                         "spec": {"containers": [{"name": "c", "image": "y"}]}, "status": {"podIP": "10.0.0.8"}})
    assert kube_api.get_object("Pod", "shop", "web")["status"]["podIP"] == "10.0.0.8"
    assert [p["metadata"]["name"] for p in kube_api.list_objects("Pod")] == ["web"]
    assert kube_api.get_object("Pod", "shop", "absent") is None
    with pytest.raises(KeyError):
        kube_api.list_objects("Deployment")


def test_stop_ends_watches_and_leaves_no_threads():
    api = KubeAPI().start()
    with client.ApiClient(api.client_configuration()) as c:
        t, _ = collect_in_thread(client.CoreV1Api(c).list_namespace, stop_after=100, timeout_seconds=30)
        assert api.wait_for_watches(1)
        api.delete_object("Namespace", None, "missing")
        api.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}})
        api.delete_object("Namespace", None, "x")  # leaves a pending namespace reaper timer
        api.stop()
        t.join(10)
        assert not t.is_alive()
    leftovers = [th.name for th in threading.enumerate() if th.name.startswith("kubeapi")]
    assert leftovers == []


def test_runs_as_a_separate_process():
    proc = subprocess.Popen([sys.executable, "-m", "tests.kubeapi", "--port", "0"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url + "/version", timeout=5) as resp:
            assert b"gitVersion" in resp.read()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_secret_string_data_and_service_cluster_ip_are_defaulted_like_the_server(core):
    core.create_namespace(namespace("shop"))
    secret = core.create_namespaced_secret("shop", client.V1Secret(
        metadata=client.V1ObjectMeta(name="tls"), string_data={"tls.crt": "PEM"}))
    assert secret.data == {"tls.crt": "UEVN"} and secret.string_data is None and secret.type == "Opaque"
    svc = core.create_namespaced_service("shop", client.V1Service(
        metadata=client.V1ObjectMeta(name="web"),
        spec=client.V1ServiceSpec(selector={"app": "web"}, ports=[client.V1ServicePort(port=80)])))
    assert svc.spec.type == "ClusterIP" and svc.spec.cluster_ip.startswith("10.96.")


def test_watch_thread_is_released_when_the_client_goes_away(kube_api, core):
    t, _ = collect_in_thread(core.list_namespace, stop_after=1, timeout_seconds=60)
    assert kube_api.wait_for_watches(1)
    core.create_namespace(namespace("shop"))  # the watcher takes one event and closes its end
    t.join(10)
    for _ in range(100):  # bounded wait: the server notices the closed socket within ~0.25 s
        if kube_api.open_watches == 0:
            break
        threading.Event().wait(0.05)
    assert kube_api.open_watches == 0
