"""The background audit on a real kube-apiserver: PolicyReports that follow the cluster, name
the cause, go back when a change is undone, are not rewritten when nothing changed, and go
away with their namespace. netpol-guard runs as `serve --controller` with the chart's RBAC
and the chart's PolicyReport CRDs (config.audit.enabled)."""
from __future__ import annotations

import json
import ssl
import time
import urllib.request
import uuid

import pytest

from tests.e2e.cluster import GuardedCluster

TARGET = 30.0  # seconds for a change to show in the report (debounce 200 ms here; ~1 s in practice)


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    cluster = GuardedCluster(tmp_path_factory.mktemp("audited-cluster"), chart_values=["config.audit.enabled=true"],
                             extra_config={"audit": {"debounceMilliseconds": 200, "maxDelayMilliseconds": 1000}})
    cluster.up()
    try:
        yield cluster
    finally:
        cluster.down()


def get_json(cluster, *args):
    res = cluster.kubectl("get", *args, "-o", "json", check=False)
    return json.loads(res.stdout) if res.returncode == 0 else None


def report(cluster, ns):
    return get_json(cluster, "policyreports.wgpolicyk8s.io", "netpol-guard", "-n", ns)


def results_of(cluster, ns, policy):
    rep = report(cluster, ns)
    return [r for r in (rep or {}).get("results", []) if r["policy"] == f"{ns}/{policy}"]


def wait_for(what, fn, timeout=TARGET):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"not within {timeout:.0f} s: {what} (last: {last!r})")


def apply(cluster, text):
    cluster.kubectl("apply", "-f", "-", input=text)


@pytest.fixture
def names():
    tag = uuid.uuid4().hex[:6]
    return f"aud-{tag}", f"obs-{tag}"


def test_reports_exist_for_the_example_namespaces_and_kubectl_lists_them(audited):
    rep = wait_for("the shop report", lambda: report(audited, "shop"))
    assert rep["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "netpol-guard"}
    assert {r["source"] for r in rep["results"]} == {"netpol-guard"}
    listed = audited.kubectl("get", "policyreports", "-A").stdout
    assert "shop" in listed and "PASS" in listed.upper()
    cluster_rep = get_json(audited, "clusterpolicyreports.wgpolicyk8s.io", "netpol-guard")
    assert [(r["rule"], r["result"]) for r in cluster_rep["results"]] == [("dns-target-missing", "pass")]


def test_a_namespace_losing_its_label_fails_the_policy_with_the_cause_and_recovers(audited, names):
    ns, obs = names
    apply(audited, f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {obs}, labels: {{team: {obs}}}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {ns}}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: from-obs, namespace: {ns}, annotations: {{description: scraping}}}}
spec:
  podSelector: {{}}
  ingress:
  - from: [{{namespaceSelector: {{matchLabels: {{team: {obs}}}}}}}]
""")
    wait_for("a pass result", lambda: [r for r in results_of(audited, ns, "from-obs") if r["result"] == "pass"])
    audited.kubectl("label", "namespace", obs, "team-")
    failed = wait_for("the finding", lambda: [r for r in results_of(audited, ns, "from-obs")
                                              if r["rule"] == "namespace-selector-matches-nothing"])
    assert failed[0]["result"] == "fail" and failed[0]["severity"] == "high"
    assert failed[0]["properties"]["cause"] == f"Namespace {obs}: label team '{obs}' -> (absent)"
    events = wait_for("an Event on the policy", lambda: [
        e for e in get_json(audited, "events", "-n", ns, "--field-selector",
                            "involvedObject.kind=NetworkPolicy,involvedObject.name=from-obs")["items"]
        if e["reason"] == "FindingAppeared"])
    assert f"label team '{obs}' -> (absent)" in events[0]["message"]
    assert events[0]["involvedObject"].get("uid") and events[0]["type"] == "Warning"
    audited.kubectl("label", "namespace", obs, f"team={obs}")
    wait_for("the pass again", lambda: [r["result"] for r in results_of(audited, ns, "from-obs")] == ["pass"])


def test_a_relabeled_pod_leaves_its_policy_selecting_nothing_and_back(audited, names):
    ns, _ = names
    apply(audited, f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {ns}}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: web, namespace: {ns}, annotations: {{description: web ingress}}}}
spec:
  podSelector: {{matchLabels: {{app: web}}}}
  ingress: [{{ports: [{{port: 8080}}]}}]
""")
    audited.create_pod({"apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": "web-0", "namespace": ns, "labels": {"app": "web"}},
                        "spec": {"containers": [{"name": "web", "image": "example/web:1",
                                                 "ports": [{"containerPort": 8080}]}]}}, "10.244.9.1")
    def selects_nothing():
        return [r for r in results_of(audited, ns, "web") if r["rule"] == "pod-selector-matches-nothing"]

    wait_for("the policy in the report, selecting web-0", lambda: results_of(audited, ns, "web") and not selects_nothing())
    audited.kubectl("label", "pod", "web-0", "-n", ns, "app=web2", "--overwrite")
    found = wait_for("the finding", selects_nothing)
    assert found[0]["properties"]["cause"] == f"Pod {ns}/web-0: label app 'web' -> 'web2'"
    audited.kubectl("label", "pod", "web-0", "-n", ns, "app=web", "--overwrite")
    wait_for("the finding cleared", lambda: results_of(audited, ns, "web") and not selects_nothing())


def _metric(cluster, name):
    ctx = ssl.create_default_context(cafile=str(cluster.state / "webhook-pki" / "ca.crt"))
    with urllib.request.urlopen(f"https://127.0.0.1:{cluster.serve_port}/metrics", context=ctx, timeout=5) as r:
        text = r.read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def test_nothing_is_written_when_nothing_the_audit_reads_changed(audited, names):
    ns, _ = names
    apply(audited, f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {ns}}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: deny, namespace: {ns}, annotations: {{description: deny all}}}}
spec: {{podSelector: {{}}, policyTypes: [Ingress]}}
""")
    first = wait_for("the report", lambda: report(audited, ns))
    time.sleep(2.0)  # past the debounce of anything still queued
    version = report(audited, ns)["metadata"]["resourceVersion"]
    writes = _metric(audited, "netpol_guard_audit_report_writes_total")
    changes = _metric(audited, "netpol_guard_audit_changes_total")
    # a label nothing depends on, on the namespace and on a new pod
    audited.kubectl("label", "namespace", ns, "owner=someone")
    audited.create_pod({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": ns,
                        "labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}},
                       "10.244.9.2")
    wait_for("the changes audited", lambda: _metric(audited, "netpol_guard_audit_changes_total") >= changes + 2)
    time.sleep(1.0)
    assert report(audited, ns)["metadata"]["resourceVersion"] == version
    assert _metric(audited, "netpol_guard_audit_report_writes_total") == writes
    assert first["results"] == report(audited, ns)["results"]


def test_dns_pods_relabeled_fail_the_cluster_report_and_recover(audited):
    pod = next(p for p in get_json(audited, "pods", "-n", "kube-system")["items"]
               if p["metadata"].get("labels", {}).get("k8s-app") == "kube-dns")
    name = pod["metadata"]["name"]

    def cluster_result():
        rep = get_json(audited, "clusterpolicyreports.wgpolicyk8s.io", "netpol-guard")
        return [r for r in (rep or {}).get("results", []) if r["rule"] == "dns-target-missing"]

    audited.kubectl("label", "pod", name, "-n", "kube-system", "k8s-app=coredns", "--overwrite")
    try:
        # One cluster-level result, not one per egress policy: with no DNS pod in view, each
        # policy's DNS allowance is judged against the configured target, which is what broke.
        failed = wait_for("the cluster finding", lambda: [r for r in cluster_result() if r["result"] == "fail"])
        assert "no pod in kube-system carries k8s-app=kube-dns" in failed[0]["message"]
        assert f"{name} listens on port 53 with k8s-app=coredns" in failed[0]["message"]
    finally:
        audited.kubectl("label", "pod", name, "-n", "kube-system", "k8s-app=kube-dns", "--overwrite")
    wait_for("the pass again", lambda: [r["result"] for r in cluster_result()] == ["pass"])


def test_a_deleted_namespace_leaves_no_report_behind(audited, names):
    ns, _ = names
    apply(audited, f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {ns}}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: deny, namespace: {ns}, annotations: {{description: deny all}}}}
spec: {{podSelector: {{}}, policyTypes: [Ingress]}}
""")
    wait_for("the report", lambda: report(audited, ns))
    audited.kubectl("delete", "namespace", ns, "--wait=true", timeout=120)
    time.sleep(2.0)  # the audit has seen the deletions; it must not write the report again
    listed = get_json(audited, "policyreports.wgpolicyk8s.io", "-A")
    assert not [i for i in listed["items"] if i["metadata"]["namespace"] == ns]


def test_audit_cli_on_the_live_cluster_prints_reports_kubectl_accepts(audited):
    import subprocess
    import sys
    res = subprocess.run([sys.executable, "-m", "webhook", "audit", "--kubeconfig", str(audited.kubeconfig),
                          "--format", "policyreport"], capture_output=True, text=True, timeout=120)
    assert res.returncode in (0, 1), res.stderr
    dry = audited.kubectl("apply", "--dry-run=server", "-f", "-", input=res.stdout)
    assert "policyreport.wgpolicyk8s.io/netpol-guard" in dry.stdout
    text = subprocess.run([sys.executable, "-m", "webhook", "audit", "--kubeconfig", str(audited.kubeconfig),
                           "--namespace", "shop"], capture_output=True, text=True, timeout=120)
    assert "audited" in text.stdout and text.returncode in (0, 1), text.stderr
    lint = subprocess.run([sys.executable, "-m", "webhook", "lint", "--kubeconfig", str(audited.kubeconfig),
                           "--namespace", "shop", "--format", "json"], capture_output=True, text=True, timeout=120)
    assert lint.returncode in (0, 1), lint.stderr
    checked = json.loads(lint.stdout)["summary"]["policies"]
    assert checked == len(get_json(audited, "networkpolicies", "-n", "shop")["items"])
    sim = subprocess.run([sys.executable, "-m", "webhook", "simulate", "--kubeconfig", str(audited.kubeconfig),
                          "--namespace", "shop", "--port", "8080/TCP", "--format", "json"],
                         capture_output=True, text=True, timeout=120)
    assert sim.returncode == 0, sim.stderr
    matrix = json.loads(sim.stdout)
    pods = {p["metadata"]["name"] for p in get_json(audited, "pods", "-n", "shop")["items"]}
    assert pods and all(name.split("/")[0] == "shop" for name in _endpoints(matrix))


def _endpoints(matrix) -> set:
    """Every endpoint a simulate --format json matrix names (NS/NAME strings)."""
    found = set()

    def walk(node):
        if isinstance(node, dict):
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
        elif isinstance(node, str) and node.count("/") == 1 and not node[0].isdigit():
            found.add(node)
    walk(matrix)
    return found


def test_a_leader_change_neither_duplicates_nor_loses_results(audited, names):
    """A second replica (its own agent and live view) stands by; the leader stops; the standby
    takes over: it rewrites no report that is already right, and keeps them current. Runs
    last: the standby then serves the rest of the module (the fixture stops it)."""
    import sys

    from tests.e2e.controlplane import Process, free_port

    ns, obs = names
    apply(audited, f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {obs}, labels: {{team: {obs}}}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {ns}}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: from-obs, namespace: {ns}, annotations: {{description: scraping}}}}
spec:
  podSelector: {{}}
  ingress:
  - from: [{{namespaceSelector: {{matchLabels: {{team: {obs}}}}}}}]
""")
    wait_for("a pass result", lambda: [r for r in results_of(audited, ns, "from-obs") if r["result"] == "pass"])
    time.sleep(2.0)
    before = {(i["metadata"]["namespace"], i["metadata"]["name"]): i["metadata"]["resourceVersion"]
              for i in get_json(audited, "policyreports.wgpolicyk8s.io", "-A")["items"]}
    first = audited.serve
    config_path = (audited.state / "netpol-guard.cmd").read_text().strip()
    standby = Process("netpol-guard-standby", [
        sys.executable, "-m", "webhook", "serve", "--config", config_path,
        "--kubeconfig", str(audited.state / "netpol-guard.kubeconfig"), "--bind", f"127.0.0.1:{free_port()}",
        "--cert", str(audited.tls_cert), "--key", str(audited.tls_key), "--controller"], audited.state,
        env={**first.env, "POD_NAME": "netpol-guard-local-1"})
    standby.start()
    try:
        wait_for("the standby's agent running", lambda: "under Lease" in standby.log_tail(20000), timeout=60)
        first.stop(timeout=30)  # releases the Lease on SIGTERM
        wait_for("the standby leading", lambda: "netpol-guard-local-1 is now the leader" in standby.log_tail(50000),
                 timeout=60)
        wait_for("the standby's first full pass", lambda: "audit: full pass" in standby.log_tail(50000), timeout=60)
        time.sleep(2.0)
        after = {(i["metadata"]["namespace"], i["metadata"]["name"]): i["metadata"]["resourceVersion"]
                 for i in get_json(audited, "policyreports.wgpolicyk8s.io", "-A")["items"]}
        assert after == before  # nothing rewritten, nothing lost, nothing duplicated
        # and the new leader keeps them current (a namespace label: its webhook ignores failures,
        # and the old replica's webhook endpoint is gone)
        audited.kubectl("label", "namespace", obs, "team-")
        failed = wait_for("the finding, from the new leader", lambda: [
            r for r in results_of(audited, ns, "from-obs") if r["rule"] == "namespace-selector-matches-nothing"])
        assert failed[0]["properties"]["cause"] == f"Namespace {obs}: label team '{obs}' -> (absent)"
    finally:
        audited.serve = standby  # the module fixture stops whichever serves now
        first.stop(timeout=30)
