"""The live cache on a real API server: verdicts follow the cluster, survive 410 Gone and restarts.

The webhook judges from a watch cache (webhook/cluster/live.py); the API server never waits for
it to ask anything. So what a user notices is whether a verdict reflects the cluster as it is:
a namespace labeled a moment ago must count, a pod relabeled a moment ago must not.

Every change below is made for real through kubectl (Namespaces, Pods that stay Pending - there
is no scheduler or kubelet - with a pod IP patched into their status, Services), and every
verdict is a `kubectl apply --dry-run=server` through the API server: admission runs, our
webhook answers, nothing is stored.

How a real API server produces `410 Gone` for a watch client (found on this kube-apiserver,
v1.35, default flags - the watch cache on):
- compacting etcd alone does NOT: a watch from a resourceVersion that etcd has compacted away
  is still served from the API server's watch cache, which keeps its own window of events;
- the watch cache's window starts where the cache last listed etcd. After an API server restart
  it starts at the current revision, so every client re-watching from the revision it had
  reached gets an ERROR event `410 Expired: too old resource version: <ours> (<cache's>)` -
  with or without a compaction;
- with `--watch-cache=false` watches go to etcd directly, and then a compaction past the
  client's revision is what gives the 410 (`The resourceVersion for the provided watch is too
  old.`); without the compaction etcd replays the history.
(Each measured on this control plane with a raw watch request.)
So the test below makes the webhook fall behind (SIGSTOP of its whole process group: gunicorn
master, workers and agent - it cannot read its watch streams), changes the cluster, compacts
etcd and stops the API server; on SIGCONT every watch finds its connection closed and retries
until the API server is back, re-watches from its old resourceVersion and gets 410; the cache
relists and must apply what it missed (including a pod deleted meanwhile). The stop is kept well under gunicorn's 30 s worker
timeout, or the master would replace the workers (a fresh start, not a recovery).

"No verdict on a stale view without /readyz saying so": the cache keeps judging with its last
good view through API server trouble (ready stays true - unready replicas would leave the API
server no endpoint at all), and /readyz's clusterView check names each kind that is not
following the API server and why. Checked with one kept-alive connection, so /readyz and the
verdict come from the same worker (each worker has its own view).
"""
from __future__ import annotations

import json
import os
import signal
import time
import uuid

import pytest

from tests.e2e.cluster import GuardedCluster
from tests.e2e.verdicts import Verdict, dry_run, network_policy, until
from tests.server_fixture import Client

FOLLOW = 1.0  # the promise: a verdict requested a second after a change reflects it
RECOVER = 45.0  # after an outage: the watch retry backoff is capped at 30 s, then a relist
MAX_STOPPED = 25.0  # SIGSTOP window: below gunicorn's worker timeout (30 s)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A guarded cluster of this module's own: the tests stop its webhook and its API server."""
    c = GuardedCluster(tmp_path_factory.mktemp("live-cache"), examples=False).up()
    try:
        yield c
    finally:
        c.down()


@pytest.fixture
def ns(cluster):
    name = f"live-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def follows(cluster, doc: dict, holds, what: str, within: float = FOLLOW) -> Verdict:
    """Poll the verdict on `doc` until `holds(verdict)`; a verdict asked for `within` seconds
    after the change that still does not hold fails the test."""
    last: list[Verdict] = []

    def check():
        v = dry_run(cluster, doc)
        last[:] = [v]
        return v if holds(v) else None

    return until(check, within, what, describe=lambda: f"last verdict: {last[0] if last else None}\n"
                                                       f"serve log:\n{cluster.serve.log_tail(2000)}")


def from_namespaces(ns: str, name: str, labels: dict) -> dict:
    return network_policy(ns, name, {"podSelector": {}, "policyTypes": ["Ingress"],
                                     "ingress": [{"from": [{"namespaceSelector": {"matchLabels": labels}}]}]})


def selecting_pods(ns: str, name: str, labels: dict) -> dict:
    own = {"kubernetes.io/metadata.name": ns}
    return network_policy(ns, name, {"podSelector": {"matchLabels": labels}, "policyTypes": ["Ingress"],
                                     "ingress": [{"from": [{"namespaceSelector": {"matchLabels": own}}]}]})


def from_address(ns: str, name: str, ip: str) -> dict:
    return network_policy(ns, name, {"podSelector": {}, "policyTypes": ["Ingress"],
                                     "ingress": [{"from": [{"ipBlock": {"cidr": f"{ip}/32"}}]}]})


def pod(ns: str, name: str, labels: dict) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns,
                                                                          "labels": labels},
                       "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1"}]}})


def matches_nothing(v: Verdict) -> bool:
    return v.denied and "[namespace-selector-matches-nothing]" in v.stderr


# --- verdicts follow the cluster ------------------------------------------------------------

def test_a_namespace_created_and_relabeled_changes_the_verdict_within_a_second(cluster, ns):
    team = uniq("team")
    policy = from_namespaces(ns, "from-team", {"team": team})
    assert matches_nothing(dry_run(cluster, policy))
    peer = uniq("peer")
    cluster.kubectl("create", "namespace", peer)
    try:
        cluster.kubectl("label", "namespace", peer, f"team={team}")
        follows(cluster, policy, lambda v: v.allowed, "allowed once a namespace carries the label")
        cluster.kubectl("label", "namespace", peer, "team=someone-else", "--overwrite")
        follows(cluster, policy, matches_nothing, "denied again once that namespace is relabeled")
    finally:
        cluster.kubectl("delete", "namespace", peer, "--wait=false", check=False)


def test_a_pending_pod_created_relabeled_and_given_an_ip_changes_the_verdict_within_a_second(cluster, ns):
    app = uniq("app")
    selects = selecting_pods(ns, "to-app", {"app": app})
    assert dry_run(cluster, selects).warns("pod-selector-matches-nothing")
    cluster.kubectl("create", "-f", "-", input=pod(ns, "web-0", {"app": app}))
    follows(cluster, selects, lambda v: v.allowed and not v.warns("pod-selector-matches-nothing"),
            "the warning goes once a Pending pod carries the labels")
    cluster.kubectl("label", "pod", "web-0", "-n", ns, "app=elsewhere", "--overwrite")
    follows(cluster, selects, lambda v: v.warns("pod-selector-matches-nothing"),
            "the warning is back once the pod is relabeled")

    ip = "10.244.77.5"
    by_address = from_address(ns, "from-web-0", ip)
    assert not dry_run(cluster, by_address).warns("ipblock-targets-cluster")  # no pod has that IP yet
    cluster.kubectl("patch", "pod", "web-0", "-n", ns, "--subresource=status", "--type=merge",
                    "-p", json.dumps({"status": {"podIP": ip, "podIPs": [{"ip": ip}]}}))
    follows(cluster, by_address, lambda v: v.warns("ipblock-targets-cluster"),
            "an ipBlock naming the pod's IP warns once the status carries it")


def test_a_service_created_and_deleted_changes_the_verdict_within_a_second(cluster, ns):
    ip = "10.96.77.7"  # inside the control plane's --service-cluster-ip-range
    by_address = from_address(ns, "from-service", ip)
    assert not dry_run(cluster, by_address).warns("ipblock-targets-cluster")
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api", "namespace": ns},
               "spec": {"clusterIP": ip, "selector": {"app": "api"}, "ports": [{"port": 80, "targetPort": 8080}]}}
    cluster.kubectl("create", "-f", "-", input=json.dumps(service))
    follows(cluster, by_address, lambda v: v.warns("ipblock-targets-cluster"),
            "an ipBlock naming a Service's ClusterIP warns once the Service exists")
    cluster.kubectl("delete", "service", "api", "-n", ns)
    follows(cluster, by_address, lambda v: v.allowed and not v.warns("ipblock-targets-cluster"),
            "the warning goes with the Service")


def test_a_network_policy_created_and_deleted_changes_other_verdicts_in_every_worker(cluster, ns):
    """Moved from tests/test_serve_live.py (it ran on the stand-in only because no real server
    existed): another policy allowing DNS makes an egress policy without DNS acceptable, in
    every worker's cache - checked on fresh connections, which gunicorn spreads over workers."""
    dns_pod = json.dumps({"apiVersion": "v1", "kind": "Pod",
                          "metadata": {"name": f"coredns-{ns}", "namespace": "kube-system",
                                       "labels": {"k8s-app": "kube-dns"}},
                          "spec": {"containers": [{"name": "coredns", "image": "example.invalid/coredns",
                                                   "ports": [{"containerPort": 53, "protocol": "UDP"}]}]}})
    cluster.kubectl("create", "-f", "-", input=dns_pod)
    try:
        egress = network_policy(ns, "egress-only", {
            "podSelector": {}, "policyTypes": ["Egress"],
            "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}]}]})
        no_dns = lambda v: v.denied and "[dns-egress-missing]" in v.stderr  # noqa: E731
        follows(cluster, egress, no_dns, "egress without DNS is denied once the DNS pods are in view")
        allow_dns = network_policy(ns, "allow-dns", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{
            "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
            "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}]})
        cluster.kubectl("apply", "-f", "-", input=json.dumps(allow_dns))
        follows(cluster, egress, lambda v: v.allowed, "allowed once another policy allows DNS")

        def every_worker(allowed: bool):
            answers = []
            for _ in range(8):  # fresh connections: spread over the workers
                client = webhook_client(cluster)
                answers.append(client.post_json("/validate", admission_review(egress))[1]["response"]["allowed"])
                client.close()
            return answers if all(a is allowed for a in answers) else None
        until(lambda: every_worker(True), FOLLOW, "every worker allows it")
        cluster.kubectl("delete", "networkpolicy", "allow-dns", "-n", ns)
        follows(cluster, egress, no_dns, "denied again once the DNS policy is deleted")
        until(lambda: every_worker(False), FOLLOW, "every worker denies it again")
    finally:
        cluster.kubectl("delete", "pod", f"coredns-{ns}", "-n", "kube-system", check=False)


# --- 410 Gone, restarts, and what /readyz says meanwhile -------------------------------------

def readyz(client: Client) -> tuple[int, dict]:
    status, text = client.get("/readyz")
    return status, json.loads(text)


def behind(body: dict) -> dict:
    return body["checks"]["clusterView"].get("behind") or {}


def webhook_client(cluster) -> Client:
    return Client(cluster.serve_port, str(cluster.state / "webhook-pki" / "ca.crt"))


def admission_review(doc: dict) -> dict:
    """What the API server would send for a CREATE of `doc` (the test plays an API server the
    real one cannot be while it is down: in HA, other API servers keep calling)."""
    meta = doc["metadata"]
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": str(uuid.uuid4()), "kind": {"group": "networking.k8s.io", "version": "v1", "kind": "NetworkPolicy"},
        "resource": {"group": "networking.k8s.io", "version": "v1", "resource": "networkpolicies"},
        "operation": "CREATE", "name": meta["name"], "namespace": meta["namespace"],
        "userInfo": {"username": "e2e", "groups": ["system:authenticated"]},
        "object": doc, "oldObject": None, "dryRun": True}}


def test_a_410_gone_after_compaction_and_restart_makes_the_cache_relist_what_it_missed(cluster, ns):
    team = uniq("team")
    gains_a_namespace = from_namespaces(ns, "from-new-team", {"team": team})
    loses_a_namespace = from_namespaces(ns, "from-old-team", {"team": f"{team}-old"})
    loses_a_pod = selecting_pods(ns, "to-doomed", {"app": "doomed"})
    old, new = uniq("old"), uniq("new")
    cluster.kubectl("create", "namespace", old)
    cluster.kubectl("label", "namespace", old, f"team={team}-old")
    cluster.kubectl("create", "-f", "-", input=pod(ns, "doomed-0", {"app": "doomed"}))
    follows(cluster, loses_a_pod, lambda v: v.allowed and not v.warns("pod-selector-matches-nothing"),
            "the webhook sees the pod before it falls behind")
    follows(cluster, loses_a_namespace, lambda v: v.allowed, "the webhook sees the old team's namespace")
    assert matches_nothing(dry_run(cluster, gains_a_namespace))
    log_before = cluster.serve.log_path.read_text(errors="replace")

    group = cluster.serve.pid  # serve runs in a session of its own: its pgid is its pid
    os.killpg(group, signal.SIGSTOP)
    stopped = time.monotonic()
    try:  # straight API calls, not kubectl: the stop must stay short on a busy machine
        api = cluster.cp.request
        merge = "application/merge-patch+json"
        assert api("POST", "/api/v1/namespaces", {"metadata": {"name": new, "labels": {"team": team}}})[0] == 201
        assert api("PATCH", f"/api/v1/namespaces/{old}", {"metadata": {"labels": {"team": None}}}, merge)[0] == 200
        assert api("DELETE", f"/api/v1/namespaces/{ns}/pods/doomed-0")[0] == 200
        compacted = cluster.cp.compact_etcd()
        cluster.cp.stop_apiserver()  # its watch cache goes with it; started again below
    finally:
        os.killpg(group, signal.SIGCONT)
    stopped_for = time.monotonic() - stopped
    cluster.cp.start_apiserver()
    try:
        assert stopped_for < MAX_STOPPED, (f"the webhook was stopped {stopped_for:.0f} s (machine too busy): "
                                           "gunicorn may have replaced its workers, which proves nothing")

        def relisted():
            text = cluster.serve.log_path.read_text(errors="replace")[len(log_before):]
            return text if "resourceVersion expired" in text else None
        log = until(relisted, RECOVER, "the watches get 410 Gone and relist",
                    describe=lambda: cluster.serve.log_tail())
        assert "WORKER TIMEOUT" not in log, log
        follows(cluster, gains_a_namespace, lambda v: v.allowed,
                "a namespace labeled while the webhook was behind counts after the relist", within=RECOVER)
        follows(cluster, loses_a_namespace, matches_nothing,
                "a label removed while the webhook was behind no longer counts", within=FOLLOW)
        follows(cluster, loses_a_pod, lambda v: v.warns("pod-selector-matches-nothing"),
                "a pod deleted while the webhook was behind is gone from the view", within=FOLLOW)
        client = webhook_client(cluster)
        until(lambda: not behind(readyz(client)[1]), RECOVER, "/readyz: every kind follows again")
        assert compacted > 0
    finally:
        cluster.kubectl("delete", "namespace", old, new, "--wait=false", check=False)


def test_while_the_api_server_is_down_verdicts_go_on_and_readyz_says_the_view_may_be_stale(cluster, ns):
    team = uniq("team")
    policy = from_namespaces(ns, "from-absent-team", {"team": team})
    client = webhook_client(cluster)
    status, body = readyz(client)
    assert status == 200 and not behind(body), body

    cluster.cp.stop_apiserver()
    try:
        def stale():
            status, body = readyz(client)
            lagging = behind(body)
            return body if status == 200 and set(lagging) == {"namespaces", "pods", "services",
                                                              "networkpolicies"} else None
        body = until(stale, 15.0, "/readyz names every kind as not following the API server")
        assert "not following the API server" in body["checks"]["clusterView"]["detail"]
        # the same worker (one kept-alive connection) still judges, from its last good view
        status, answer = client.post_json("/validate", admission_review(policy))
        assert status == 200, answer
        assert answer["response"]["allowed"] is False
        assert "namespace-selector-matches-nothing" in answer["response"]["status"]["message"]
        status, body = readyz(client)
        assert status == 200 and behind(body), "the verdict above was made on a view /readyz calls stale"
    finally:
        cluster.cp.start_apiserver()
    until(lambda: not behind(readyz(client)[1]), RECOVER, "/readyz: every kind follows again after the restart",
          describe=lambda: cluster.serve.log_tail())
    cluster.wait_for_denial()  # and the API server calls the webhook again
