"""Admin network policies on a live cluster: with the upstream network-policy-api CRDs installed
on the real API server (tests/e2e/crds/network-policy-api), `serve`'s live view follows
AdminNetworkPolicies, the BaselineAdminNetworkPolicy and ClusterNetworkPolicies under the chart's
RBAC, and `simulate --kubeconfig`, `lint --kubeconfig` and `audit` see one when it is created and
no more once it is deleted. On a cluster without the CRDs (the session's guarded cluster) they
carry on, saying so in the log."""
from __future__ import annotations

import json
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.cluster import GuardedCluster

CRDS = sorted((Path(__file__).parent / "crds" / "network-policy-api").glob("*.yaml"))
TARGET = 30.0

LOCKDOWN = """
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: e2e-lockdown}
spec:
  priority: 3
  subject:
    namespaces: {matchLabels: {kubernetes.io/metadata.name: shop}}
  ingress:
  - name: deny-everyone
    action: Deny
    from:
    - namespaces: {}
"""

BASELINE_AND_CLUSTER = """
apiVersion: policy.networking.k8s.io/v1alpha1
kind: BaselineAdminNetworkPolicy
metadata: {name: default}
spec:
  subject:
    namespaces: {}
  ingress:
  - name: default-deny
    action: Deny
    from:
    - namespaces: {}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: e2e-accept-dns}
spec:
  tier: Admin
  priority: 4
  subject:
    namespaces: {}
  egress:
  - name: dns
    action: Accept
    to:
    - pods:
        namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}
        podSelector: {matchLabels: {k8s-app: kube-dns}}
"""


@pytest.fixture(scope="module")
def anp_cluster(tmp_path_factory):
    assert len(CRDS) == 3, CRDS
    cluster = GuardedCluster(tmp_path_factory.mktemp("anp-cluster"), crds=CRDS)
    cluster.up()
    try:
        yield cluster
    finally:
        cluster.down()


def netpol_guard(cluster, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "webhook", *args, "--kubeconfig", str(cluster.kubeconfig)],
                          capture_output=True, text=True, timeout=120)


def shop_pod(cluster, prefix: str) -> str:
    pods = json.loads(cluster.kubectl("get", "pods", "-n", "shop", "-o", "json").stdout)["items"]
    [name] = [p["metadata"]["name"] for p in pods if p["metadata"]["name"].startswith(prefix + "-")]
    return f"shop/{name}"


def flow(cluster) -> dict:
    res = netpol_guard(cluster, "simulate", "--from", shop_pod(cluster, "frontend"), "--to", shop_pod(cluster, "api"),
                       "--port", "8080/TCP", "--format", "json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def cache_objects(cluster, kind: str) -> float | None:
    ctx = ssl.create_default_context(cafile=str(cluster.state / "webhook-pki" / "ca.crt"))
    with urllib.request.urlopen(f"https://127.0.0.1:{cluster.serve_port}/metrics", context=ctx, timeout=5) as r:
        text = r.read().decode()
    prefix = f'netpol_guard_cache_objects{{kind="{kind}"}} '
    found = [float(line[len(prefix):]) for line in text.splitlines() if line.startswith(prefix)]
    return found[0] if found else None


def wait_for(what, fn, timeout=TARGET):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"not within {timeout:.0f} s: {what} (last: {last!r})")


def test_an_admin_network_policy_is_seen_live_by_simulate_audit_and_serve_and_goes_when_deleted(anp_cluster):
    before = flow(anp_cluster)
    assert before["allowed"] is True and "adminPolicies" not in before
    assert cache_objects(anp_cluster, "adminnetworkpolicies") == 0.0  # followed (served), none yet

    anp_cluster.kubectl("apply", "-f", "-", input=LOCKDOWN)
    try:
        denied = flow(anp_cluster)
        assert denied["allowed"] is False
        assert denied["ingress"]["tier"] == "admin"
        assert denied["ingress"]["adminRule"]["name"] == "e2e-lockdown"
        assert denied["ingress"]["adminRule"]["ruleName"] == "deny-everyone"
        assert denied["adminPolicies"] == [{"kind": "AdminNetworkPolicy", "name": "e2e-lockdown", "priority": 3}]

        audit = netpol_guard(anp_cluster, "audit", "--format", "json")
        assert audit.returncode in (0, 1), audit.stderr
        report = json.loads(audit.stdout)
        assert report["summary"]["adminPolicies"] == {"AdminNetworkPolicy": 1}
        assert report["summary"]["objects"]["adminnetworkpolicies"] == 1
        assert any("1 AdminNetworkPolicy in view" in n for n in report["notes"])
        text = netpol_guard(anp_cluster, "audit")
        assert "note: 1 AdminNetworkPolicy in view" in text.stdout, text.stdout

        # serve's live view (its watch, under the chart's ClusterRole) follows it too
        wait_for("serve's view holding the AdminNetworkPolicy",
                 lambda: cache_objects(anp_cluster, "adminnetworkpolicies") == 1.0)
    finally:
        anp_cluster.kubectl("delete", "adminnetworkpolicy", "e2e-lockdown", "--wait=true")

    after = flow(anp_cluster)
    assert after["allowed"] is True and "adminPolicies" not in after
    audit = json.loads(netpol_guard(anp_cluster, "audit", "--format", "json").stdout)
    assert "adminPolicies" not in audit["summary"] and "notes" not in audit
    wait_for("serve's view without it", lambda: cache_objects(anp_cluster, "adminnetworkpolicies") == 0.0)


def test_the_baseline_and_cluster_network_policies_are_followed_too(anp_cluster):
    anp_cluster.kubectl("apply", "-f", "-", input=BASELINE_AND_CLUSTER)
    try:
        lint = netpol_guard(anp_cluster, "lint", "--namespace", "shop", "--format", "json")
        assert lint.returncode in (0, 1), lint.stderr
        assert json.loads(lint.stdout)["summary"]["adminPolicies"] == {"BaselineAdminNetworkPolicy": 1,
                                                                       "ClusterNetworkPolicy": 1}
        # the baseline decides where no NetworkPolicy isolates: kube-system's pods have none
        dns = json.loads(anp_cluster.kubectl("get", "pods", "-n", "kube-system", "-l", "k8s-app=kube-dns",
                                             "-o", "json").stdout)["items"][0]["metadata"]["name"]
        res = netpol_guard(anp_cluster, "simulate", "--from", shop_pod(anp_cluster, "frontend"),
                           "--to", f"kube-system/{dns}", "--port", "53/UDP", "--format", "json")
        assert res.returncode == 0, res.stderr
        answer = json.loads(res.stdout)
        assert answer["allowed"] is False and answer["ingress"]["tier"] == "baseline"
        assert {p["kind"] for p in answer["adminPolicies"]} == {"BaselineAdminNetworkPolicy", "ClusterNetworkPolicy"}
        wait_for("serve's view holding both", lambda: (
            cache_objects(anp_cluster, "baselineadminnetworkpolicies") == 1.0
            and cache_objects(anp_cluster, "clusternetworkpolicies") == 1.0))
    finally:
        anp_cluster.kubectl("delete", "-f", "-", "--wait=true", input=BASELINE_AND_CLUSTER)


def test_without_the_crds_the_live_view_says_so_once_and_carries_on(guarded_cluster):
    """The session cluster has no network-policy-api CRDs: serve is ready, and each of its
    processes logged once per kind that the kind is not served (no retry loop of 404s)."""
    log = guarded_cluster.serve.log_tail(2_000_000)
    lines = [ln for ln in log.splitlines() if "AdminNetworkPolicy not served by this API server" in ln]
    assert lines, log[-3000:]
    time.sleep(1.0)
    again = [ln for ln in guarded_cluster.serve.log_tail(2_000_000).splitlines()
             if "AdminNetworkPolicy not served by this API server" in ln]
    assert len(again) == len(lines)  # not repeated
    assert cache_objects(guarded_cluster, "adminnetworkpolicies") is not None  # synced, empty
    res = netpol_guard(guarded_cluster, "simulate", "--from", shop_pod(guarded_cluster, "frontend"),
                       "--to", shop_pod(guarded_cluster, "api"), "--port", "8080/TCP", "--format", "json")
    assert res.returncode == 0 and "adminPolicies" not in json.loads(res.stdout), res.stderr
