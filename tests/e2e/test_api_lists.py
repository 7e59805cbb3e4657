"""Typed lists as the API server returns them (`kubectl get --raw`, client libraries):
`kind: PodList`, `NetworkPolicyList`, ... whose items carry no kind or apiVersion. Saved from
the real kube-apiserver of the guarded cluster, they are read by every loader - lint PATH,
lint/simulate/serve --cluster - as the same objects the live cluster holds."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.server_fixture import serve  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parent.parent.parent
RAW = {"namespaces.json": "/api/v1/namespaces", "pods.json": "/api/v1/pods", "services.json": "/api/v1/services",
       "networkpolicies.json": "/apis/networking.k8s.io/v1/networkpolicies"}


@pytest.fixture(scope="module")
def raw(guarded_cluster, tmp_path_factory):
    """The cluster's lists, saved as `kubectl get --raw PATH > FILE` saves them."""
    d = tmp_path_factory.mktemp("raw-lists")
    for name, path in RAW.items():
        (d / name).write_text(guarded_cluster.kubectl("get", "--raw", path).stdout)
    return d


def cli(*args):
    return subprocess.run([sys.executable, "-m", "webhook", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=120)


def items(raw, name):
    return json.loads((raw / name).read_text())["items"]


def test_the_api_server_really_returns_kind_less_items(raw):
    lists = {name: json.loads((raw / name).read_text()) for name in RAW}
    assert lists["pods.json"]["kind"] == "PodList" and lists["pods.json"]["items"]
    for body in lists.values():
        assert body["kind"].endswith("List") and all("kind" not in i for i in body["items"])


def test_lint_cluster_reads_a_raw_pod_list_as_pods(raw):
    policy = "examples/policies/good/shop-api-egress-payments.yaml"
    r = cli("lint", "--format", "json", "--cluster", raw / "pods.json", "--cluster", raw / "namespaces.json", policy)
    assert r.returncode in (0, 1), r.stderr
    out = json.loads(r.stdout)
    assert out["summary"]["objects"]["Pod"] == len(items(raw, "pods.json"))
    assert out["summary"]["objects"]["Namespace"] == len(items(raw, "namespaces.json"))
    # the pods are in the view: the finding names the cluster's api pod, not "(none in view)"
    api_pods = [p["metadata"]["name"] for p in items(raw, "pods.json")
                if p["metadata"]["namespace"] == "shop" and p["metadata"].get("labels", {}).get("app") == "api"]
    dns = [f for f in out["findings"] if f["rule"] == "dns-egress-missing"]
    assert api_pods and dns and f"shop/{api_pods[0]}" in dns[0]["message"]


def test_lint_of_a_raw_network_policy_list_finds_what_lint_of_the_live_cluster_finds(raw, guarded_cluster):
    lists = [a for name in ("pods.json", "namespaces.json", "services.json") for a in ("--cluster", raw / name)]
    r = cli("lint", "--format", "json", *lists, raw / "networkpolicies.json")
    assert r.returncode in (0, 1), r.stderr
    from_file = json.loads(r.stdout)
    live = cli("lint", "--format", "json", "--kubeconfig", guarded_cluster.kubeconfig)
    assert live.returncode in (0, 1), live.stderr
    from_cluster = json.loads(live.stdout)
    assert from_file["summary"]["policies"] == len(items(raw, "networkpolicies.json")) > 0
    key = lambda f: (f["rule"], f["policy"], f["path"], f["severity"])  # noqa: E731
    assert sorted(map(key, from_file["findings"])) == sorted(map(key, from_cluster["findings"]))
    # NetworkPolicies from a list keep the line of each field for the findings
    assert all(f["line"] for f in from_file["findings"])


def test_simulate_over_raw_lists_answers_as_over_the_live_cluster(raw, guarded_cluster):
    pod = {p["metadata"]["labels"]["app"]: p["metadata"]["name"] for p in items(raw, "pods.json")
           if p["metadata"]["namespace"] == "shop" and "app" in p["metadata"].get("labels", {})}
    flow = ["--from", f"shop/{pod['frontend']}", "--to", f"shop/{pod['api']}", "--port", "8080", "--format", "json"]
    lists = [a for name in RAW for a in ("--cluster", raw / name)]
    r = cli("simulate", *lists, *flow)
    assert r.returncode == 0, r.stderr
    live = cli("simulate", "--kubeconfig", guarded_cluster.kubeconfig, *flow)
    assert live.returncode == 0, live.stderr
    assert json.loads(r.stdout)["allowed"] is json.loads(live.stdout)["allowed"] is True


def test_serve_cluster_loads_a_directory_of_raw_lists(raw, serve):  # noqa: F811
    server = serve(["--cluster", str(raw)])
    server.wait_ready()
    status, text = server.get("/metrics")
    assert status == 200
    pods = re.search(r'^netpol_guard_cache_objects\{kind="pods"\} (\S+)$', text, re.M)
    assert pods and float(pods.group(1)) == len(items(raw, "pods.json")), text[:2000]
