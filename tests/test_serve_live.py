"""`netpol-guard serve` against a live cluster: no --cluster, a kubeconfig pointing at the
Kubernetes API stand-in; the real kubernetes client feeds each worker's watch cache, and
admission answers follow the cluster as it changes."""
from __future__ import annotations

import json
import time
from pathlib import Path

from tests.kubeapi.fixtures import write_kubeconfig
from tests.server_fixture import serve  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parent.parent
REVIEW = json.loads((REPO / "examples" / "admission" / "create-denied.json").read_text())
DNS_POLICY = {
    "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
    "metadata": {"name": "allow-dns", "namespace": "monitoring"},
    "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{
        "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
        "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}]}}


def _pod(ns, name, labels, ports=()):
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"containers": [{"name": "c", "image": "x", "ports": list(ports)}]},
            "status": {"podIP": "10.1.0.7"}}


def _decisions(server, n: int) -> list[str]:
    """'allowed', or the denial's first error line, for n reviews on n new connections
    (so both workers get asked)."""
    out = []
    for _ in range(n):
        client = server.client()
        resp = client.post_json("/validate", REVIEW)[1]["response"]
        client.close()
        out.append("allowed" if resp["allowed"] else resp["status"]["message"].splitlines()[1].split("]")[0] + "]")
    return out


def test_answers_follow_the_live_cluster_in_every_worker(serve, kube_api, tmp_path):
    for name in ("kube-system", "monitoring", "shop"):
        kube_api.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    kube_api.put_object(_pod("kube-system", "coredns-1", {"k8s-app": "kube-dns"},
                             [{"containerPort": 53, "protocol": "UDP", "name": "dns"}]))
    kube_api.put_object(_pod("monitoring", "prometheus-0", {"app": "prometheus"}))
    kubeconfig = tmp_path / "kubeconfig"
    write_kubeconfig(kubeconfig, kube_api.url)

    server = serve(["--workers", "2", "--threads", "2", "--kubeconfig", str(kubeconfig)],
                   env={"HOME": str(tmp_path)})
    # ready means synced: the pods are in view, so the policy's missing DNS is an error
    assert _decisions(server, 6) == ["- [dns-egress-missing]"] * 6
    metrics = server.client().get("/metrics")[1]
    assert "netpol_guard_cache_synced 1" in metrics
    assert 'netpol_guard_cache_objects{kind="pods"} 2' in metrics
    assert 'netpol_guard_cache_synced{kind="networkpolicies"} 1' in metrics

    kube_api.put_object(DNS_POLICY)  # someone allows DNS for the whole namespace
    deadline = time.monotonic() + 20
    seen: list[str] = []
    while time.monotonic() < deadline:
        seen = _decisions(server, 6)
        if seen == ["allowed"] * 6:
            break
        time.sleep(0.2)
    assert seen == ["allowed"] * 6  # every worker's cache saw the new policy
