"""The background audit's reports over their life on a real kube-apiserver (with the garbage
collector of kube-controller-manager): a namespace labeled for isolation whose managed policies
are missing or edited shows in its report with the cause, and uninstalling the chart leaves no
report behind - the ClusterPolicyReport included, which no namespace deletion removes.

The isolation controller is off here (serve without --controller; the chart's RBAC still lets
its identity write managed policies), so nothing heals what the tests break: that is the
situation the audit's isolation results exist for (a controller stopped or failing)."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import pytest

from tests.e2e.cluster import GuardedCluster

TARGET = 30.0
LABEL = "netpol-guard.io/isolate"


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    cluster = GuardedCluster(tmp_path_factory.mktemp("audit-lifecycle"), controller=False,
                             chart_values=["config.audit.enabled=true"],
                             extra_config={"audit": {"debounceMilliseconds": 200, "maxDelayMilliseconds": 1000}})
    cluster.up()
    try:
        yield cluster
    finally:
        cluster.down()


def get_json(cluster, *args):
    res = cluster.kubectl("get", *args, "-o", "json", check=False)
    return json.loads(res.stdout) if res.returncode == 0 else None


def rows(cluster, ns, rule=None):
    rep = get_json(cluster, "policyreports.wgpolicyk8s.io", "netpol-guard", "-n", ns) or {}
    return [r for r in rep.get("results", []) if rule is None or r["rule"] == rule]


def wait_for(what, fn, timeout=TARGET):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"not within {timeout:.0f} s: {what} (last: {last!r})")


def as_controller(cluster, *args, **kwargs):
    """kubectl as the chart's ServiceAccount: the one identity the webhook lets write managed policies."""
    return cluster.kubectl(*args, kubeconfig=cluster.state / "netpol-guard.kubeconfig", **kwargs)


@pytest.fixture
def ns(audited):
    name = f"iso-{uuid.uuid4().hex[:6]}"
    audited.kubectl("create", "namespace", name)
    return name


def test_a_namespace_labeled_for_isolation_without_its_managed_policies_is_reported_with_the_cause(audited, ns):
    audited.kubectl("label", "namespace", ns, f"{LABEL}=all")
    # The rows may first be written without their cause: a pass for the namespace's creation
    # reads the view, which can already hold the label whose change the next pass brings
    # (debounced); that pass adds the cause. So wait for rows with a cause.
    missing = wait_for("both managed policies reported missing, with their cause", lambda: (
        found := rows(audited, ns, "isolation-policy-missing")) and len(found) == 2
        and all("cause" in r.get("properties", {}) for r in found) and found)
    assert {r["policy"] for r in missing} == {f"{ns}/netpol-guard-allow-dns", f"{ns}/netpol-guard-default-deny"}
    for r in missing:
        assert r["result"] == "fail" and r["severity"] == "high"
        assert f"labeled {LABEL}=all, but {r['policy'].split('/')[1]} is not there" in r["message"]
        assert r["properties"]["cause"] == f"Namespace {ns}: label {LABEL} (absent) -> 'all'"
        assert r["resources"] == [{"apiVersion": "v1", "kind": "Namespace", "name": ns}]

    # what the controller would have created: the results clear
    rendered = subprocess.run([sys.executable, "-m", "webhook", "isolation", "render", "--namespace", ns,
                               "--mode", "all"], capture_output=True, text=True, check=True).stdout
    as_controller(audited, "apply", "-f", "-", input=rendered)
    wait_for("the results cleared", lambda: rows(audited, ns) and not rows(audited, ns, "isolation-policy-missing"))

    # one deleted (by the controller's identity, as a stray script with its token would): back, with
    # the deletion as the cause
    as_controller(audited, "delete", "networkpolicy", "netpol-guard-default-deny", "-n", ns)
    [again] = wait_for("the deleted policy reported", lambda: rows(audited, ns, "isolation-policy-missing"))
    assert again["policy"] == f"{ns}/netpol-guard-default-deny"
    assert again["properties"]["cause"] == f"NetworkPolicy {ns}/netpol-guard-default-deny deleted"


def test_an_edited_managed_policy_is_reported_and_cleared_when_put_back(audited, ns):
    audited.kubectl("label", "namespace", ns, f"{LABEL}=all")
    rendered = subprocess.run([sys.executable, "-m", "webhook", "isolation", "render", "--namespace", ns,
                               "--mode", "all"], capture_output=True, text=True, check=True).stdout
    as_controller(audited, "apply", "-f", "-", input=rendered)
    wait_for("the managed policies passing", lambda: [r["result"] for r in rows(audited, ns)] == ["pass", "pass"])
    as_controller(audited, "patch", "networkpolicy", "netpol-guard-default-deny", "-n", ns, "--type=merge",
                  "-p", json.dumps({"spec": {"ingress": [{}]}}))
    [edited] = wait_for("the edit reported", lambda: rows(audited, ns, "managed-policy-edited"))
    assert edited["policy"] == f"{ns}/netpol-guard-default-deny"
    assert edited["result"] == "warn"
    assert edited["properties"]["cause"] == f"NetworkPolicy {ns}/netpol-guard-default-deny changed"
    as_controller(audited, "replace", "-f", "-", input=rendered)  # put back as rendered (apply would keep ingress)
    wait_for("the edit cleared", lambda: rows(audited, ns) and not rows(audited, ns, "managed-policy-edited"))


def test_uninstalling_the_chart_leaves_no_report_behind(audited):
    """Runs last: it takes the release away. What `helm uninstall` deletes is the release's
    objects (the CRDs stay, annotated keep); the reports name the chart's ClusterRole as their
    owner, so the garbage collector deletes them with it."""
    cluster_report = wait_for("the ClusterPolicyReport", lambda: get_json(
        audited, "clusterpolicyreports.wgpolicyk8s.io", "netpol-guard"))
    role = get_json(audited, "clusterrole", "netpol-guard")
    owner = [{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "name": "netpol-guard",
              "uid": role["metadata"]["uid"]}]
    assert cluster_report["metadata"]["ownerReferences"] == owner
    reports = wait_for("namespaced reports", lambda: get_json(audited, "policyreports.wgpolicyk8s.io", "-A")["items"])
    assert all(r["metadata"]["ownerReferences"] == owner for r in reports)

    release = [d for d in audited.objects if d["kind"] != "CustomResourceDefinition"
               and "helm.sh/hook" not in (d["metadata"].get("annotations") or {})]
    assert any(d["kind"] == "ClusterRole" and d["metadata"]["name"] == "netpol-guard" for d in release)
    audited.kubectl("delete", "--ignore-not-found", "--wait=false", "-f", "-",
                    input=json.dumps({"apiVersion": "v1", "kind": "List", "items": release}))
    audited.serve.stop(timeout=30)  # the Deployment's pods go with the release
    wait_for("the ClusterPolicyReport gone", lambda: get_json(
        audited, "clusterpolicyreports.wgpolicyk8s.io", "netpol-guard") is None, timeout=60)
    wait_for("every PolicyReport gone", lambda: get_json(
        audited, "policyreports.wgpolicyk8s.io", "-A")["items"] == [], timeout=60)
    # the CRDs are kept (other tools' reports live in them too)
    assert get_json(audited, "crd", "clusterpolicyreports.wgpolicyk8s.io") is not None
