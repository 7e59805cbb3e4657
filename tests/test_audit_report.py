"""Audit results rendered as wgpolicyk8s.io/v1alpha2 PolicyReports (what kubectl and Policy
Reporter show): one result per (policy, rule), the cause of what changed, stable content."""
import json
from dataclasses import replace

from tests.test_audit_core import cluster
from webhook.audit import report
from webhook.audit.auditor import Auditor, dns_target_problem
from webhook.cluster.objects import Namespace, Pod
from webhook.config import DEFAULT


def test_a_namespace_losing_its_label_shows_as_a_failing_result_naming_the_cause():
    view, rec = cluster()
    clock = iter(range(1000, 2000)).__next__
    auditor = Auditor(view, DEFAULT, clock=lambda: float(clock()))
    auditor.full()
    rec.upsert(Namespace("monitoring", {"kubernetes.io/metadata.name": "monitoring"}))
    auditor.apply(rec.take())
    [rep] = report.namespace_reports("ns1", auditor.in_namespace("ns1"))
    assert rep["apiVersion"] == "wgpolicyk8s.io/v1alpha2" and rep["kind"] == "PolicyReport"
    assert rep["metadata"] == {"name": "netpol-guard", "namespace": "ns1",
                               "labels": {"app.kubernetes.io/managed-by": "netpol-guard"}}
    got = [r for r in rep["results"] if r["policy"] == "ns1/from-ns-1"
           and r["rule"] == "namespace-selector-matches-nothing"]
    assert len(got) == 1
    r = got[0]
    assert r["source"] == "netpol-guard" and r["result"] == "fail" and r["severity"] == "high"
    assert r["properties"]["cause"] == "Namespace monitoring: label team 'obs' -> (absent)"
    assert r["properties"]["path"].startswith("spec.ingress[0]")
    assert r["resources"] == [{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                               "namespace": "ns1", "name": "from-ns-1"}]
    # findings that were there before the change carry no cause
    others = [x for x in rep["results"] if x is not r and x["result"] in ("fail", "warn")]
    assert all("cause" not in x.get("properties", {}) for x in others)
    # every policy of the namespace is in the report; clean ones pass
    assert {x["policy"] for x in rep["results"]} == {p.key for p in view.policies("ns1")}
    assert rep["summary"] == report.summary(rep["results"])
    assert rep["summary"]["pass"] >= 1 and rep["summary"]["fail"] >= 1
    assert all(x["severity"] in ("high", "medium", "low") for x in rep["results"] if "severity" in x)


def test_report_content_does_not_change_when_nothing_changed():
    view, rec = cluster()
    ticks = iter(range(1000, 2000))
    auditor = Auditor(view, DEFAULT, clock=lambda: float(next(ticks)))
    auditor.full()
    before = [report.content(r) for r in report.namespace_reports("ns2", auditor.in_namespace("ns2"))]
    auditor.full()  # the periodic safety net, later (the clock moved on)
    old = view.find_pod("ns2", "web-0")
    rec.upsert(Pod("ns2", "web-0", {**old.labels, "version": "v9"}, old.ports, old.ips))
    auditor.apply(rec.take())
    after = [report.content(r) for r in report.namespace_reports("ns2", auditor.in_namespace("ns2"))]
    assert before == after


def test_a_large_namespace_is_split_into_reports_under_the_size_limit(monkeypatch):
    view, _ = cluster()
    auditor = Auditor(view, DEFAULT)
    auditor.full()
    results = auditor.in_namespace("ns0")
    [whole] = report.namespace_reports("ns0", results)
    limit = len(json.dumps(whole)) // 3
    monkeypatch.setattr(report, "MAX_REPORT_BYTES", limit)
    parts = report.namespace_reports("ns0", results)
    assert len(parts) >= 3
    assert [p["metadata"]["name"] for p in parts] == ["netpol-guard"] + [f"netpol-guard-{i}" for i in
                                                                        range(2, len(parts) + 1)]
    assert all(len(json.dumps(p, separators=(",", ":"))) <= limit for p in parts)
    assert [r for p in parts for r in p["results"]] == whole["results"]  # nothing lost


def test_skipped_rules_are_skip_results_with_the_reason():
    from tests.test_audit_core import netpol
    view, rec = cluster()
    p = netpol("ns0", "skipper", "  podSelector: {matchLabels: {app: nothing}}\n  ingress: []\n")
    raw = dict(p.raw)
    raw["metadata"] = {**raw["metadata"], "annotations": {"description": "t",
                       "netpol-guard.io/skip-rules": "pod-selector-matches-nothing",
                       "netpol-guard.io/skip-reason": "pods arrive later"}}
    from webhook.policy.parse import parse_policy
    rec.upsert(parse_policy(raw).policy)
    auditor = Auditor(view, DEFAULT)
    auditor.full()
    rows = [r for r in report.namespace_reports("ns0", auditor.in_namespace("ns0"))[0]["results"]
            if r["policy"] == "ns0/skipper"]
    skip = [r for r in rows if r["result"] == "skip"]
    assert [(r["rule"], r["message"]) for r in skip] == [
        ("pod-selector-matches-nothing", "skipped by netpol-guard.io/skip-rules: pods arrive later")]


def test_dns_target_missing_is_one_cluster_level_result():
    view, rec = cluster()
    assert dns_target_problem(view, DEFAULT) is None
    rec.upsert(Pod("kube-system", "coredns-1", {"k8s-app": "coredns"},
                   view.find_pod("kube-system", "coredns-1").ports))
    problem = dns_target_problem(view, DEFAULT)
    assert "no pod in kube-system carries k8s-app=kube-dns" in problem
    assert "kube-system/coredns-1 listens on port 53 with k8s-app=coredns" in problem
    [rep] = report.cluster_report(report.dns_target_rows(problem, "kube-system"))
    assert rep["kind"] == "ClusterPolicyReport" and "namespace" not in rep["metadata"]
    assert rep["summary"]["fail"] == 1
    # node-local DNS is an address, not pods: nothing to say
    local = replace(DEFAULT, dns=replace(DEFAULT.dns, nodeLocalAddresses=("169.254.20.10",)))
    assert dns_target_problem(view, local) is None


def test_a_rewritten_report_keeps_the_first_seen_time_of_unchanged_results():
    stored = {"results": [{"policy": "a/p", "rule": "r", "result": "fail", "message": "m", "timestamp": {"seconds": 5, "nanos": 0}},
                          {"policy": "a/q", "rule": "r", "result": "fail", "message": "old", "timestamp": {"seconds": 6, "nanos": 0}}]}
    new = {"results": [{"policy": "a/p", "rule": "r", "result": "fail", "message": "m", "timestamp": {"seconds": 90, "nanos": 0}},
                       {"policy": "a/q", "rule": "r", "result": "fail", "message": "new", "timestamp": {"seconds": 91, "nanos": 0}}]}
    kept = report.keep_timestamps(new, stored)
    assert [r["timestamp"]["seconds"] for r in kept["results"]] == [5, 91]
    assert report.content(kept) == report.content(new)  # timestamps alone never cause a write
