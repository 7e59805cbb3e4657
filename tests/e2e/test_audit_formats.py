"""`audit --format sarif|github|junit` on a real kube-apiserver, checked by what reads each
format (the official SARIF 2.1.0 schema, the workflow-command syntax, a JUnit parser), and
`kubectl netpol-guard audit` through the real kubectl's plugin mechanism.

The scene, in two fresh namespaces of the shared guarded cluster: a policy whose
namespaceSelector lost its namespace's label (an error), one that allows every source (a
warning or info); and a configuration for the audit alone whose isolation label key the
running controller does not know (so the managed policies it asks for are missing) and whose
DNS target is a namespace without DNS pods - the two cluster-level results."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.test_ci_formats import COMMAND, _unescape, sarif_schema  # noqa: F401 (a fixture)

ISOLATE_KEY = "formats.e2e.example/isolate"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def scene(guarded_cluster, tmp_path_factory):
    tag = uuid.uuid4().hex[:6]
    ns, obs = f"fmt-{tag}", f"fmt-obs-{tag}"
    guarded_cluster.kubectl("apply", "-f", "-", input=f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {obs}, labels: {{team: {obs}}}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {ns}, labels: {{"{ISOLATE_KEY}": ingress}}}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: from-obs, namespace: {ns}, annotations: {{description: scraping}}}}
spec:
  podSelector: {{}}
  ingress:
  - from: [{{namespaceSelector: {{matchLabels: {{team: {obs}}}}}}}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: from-anyone, namespace: {ns}, annotations: {{description: public}}}}
spec:
  podSelector: {{}}
  ingress:
  - from: []
""")
    guarded_cluster.kubectl("label", "namespace", obs, "team-")  # from-obs now selects nothing
    config = tmp_path_factory.mktemp("audit-formats") / "config.yaml"
    config.write_text(yaml.safe_dump({"isolation": {"labelKey": ISOLATE_KEY}, "dns": {"namespace": obs}}))
    try:
        yield {"ns": ns, "obs": obs, "config": str(config), "cluster": guarded_cluster}
    finally:
        for name in (ns, obs):
            guarded_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def audit(scene, fmt, *extra):
    return subprocess.run([sys.executable, "-m", "webhook", "audit", "--kubeconfig", str(scene["cluster"].kubeconfig),
                           "--config", scene["config"], "--namespace", scene["ns"], "--format", fmt, *extra],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def expected(scene):
    """The findings as `audit --format json` lists them, the DNS target result as one more."""
    r = audit(scene, "json")
    assert r.returncode == 1, r.stderr
    out = json.loads(r.stdout)
    findings = out["findings"]
    assert {f["rule"] for f in findings} >= {"namespace-selector-matches-nothing", "isolation-policy-missing"}
    assert [c["rule"] for c in out["cluster"]] == ["dns-target-missing"]
    return findings, out["cluster"][0]


def test_sarif_from_a_live_cluster_is_valid_and_places_each_result_on_its_object(scene, expected, sarif_schema):
    findings, dns = expected
    r = audit(scene, "sarif")
    assert r.returncode == 1, r.stderr
    log = json.loads(r.stdout)
    jsonschema.Draft4Validator(sarif_schema).validate(log)
    run = log["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    results = run["results"]
    assert [res["ruleId"] for res in results] == [f["rule"] for f in findings] + ["dns-target-missing"]
    ns, cp = scene["ns"], scene["cluster"].cp
    for res, f in zip(results, findings + [dns]):
        assert rules[res["ruleIndex"]]["id"] == res["ruleId"]  # the cluster-level rules have entries too
        assert f["message"] in res["message"]["text"]
        uri = res["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
        assert not re.match(r"^[a-z]+:", uri)  # a relative reference: code scanning refuses URI schemes
        status, obj = cp.request("GET", "/" + uri)  # the location is the object on the API server
        assert status == 200, (uri, obj)
        names = [loc["fullyQualifiedName"] for loc in res["locations"][0]["logicalLocations"]]
        if res["ruleId"] == "isolation-policy-missing":
            assert (obj["kind"], obj["metadata"]["name"]) == ("Namespace", ns)  # where the label is
            assert names[0] == f"Namespace/{ns}"
        elif res["ruleId"] == "dns-target-missing":
            assert (obj["kind"], obj["metadata"]["name"]) == ("Namespace", scene["obs"])
        else:
            assert obj["kind"] == "NetworkPolicy" and f["policy"] == f"{ns}/{obj['metadata']['name']}"
            assert names[0] == f"{ns}/NetworkPolicy/{obj['metadata']['name']}"
    dns_rule = next(r for r in rules if r["id"] == "dns-target-missing")
    assert dns_rule["defaultConfiguration"]["level"] == "error" and dns_rule["help"]["text"]


def test_github_annotations_from_a_live_cluster_carry_no_file(scene, expected):
    findings, dns = expected
    r = audit(scene, "github")
    assert r.returncode == 1, r.stderr
    lines = r.stdout.splitlines()
    commands = [COMMAND.match(line) for line in lines[:-1]]
    assert all(commands), [line for line, m in zip(lines, commands) if not m]
    assert len(commands) == len(findings) + 1
    for m, f in zip(commands, findings + [{**dns, "policy": "netpol-guard/dns-target"}]):
        level, props, message = m.groups()
        props = dict(p.split("=", 1) for p in props.split(","))
        assert set(props) == {"title"} and f["policy"] in _unescape(props["title"])
        assert f["message"] in _unescape(message)
    errors = sum(1 for f in findings if f["severity"] == "error")
    assert lines[-1].startswith(f"netpol-guard: checked 2 NetworkPolicies: {errors} error")


def test_junit_from_a_live_cluster_has_one_case_per_policy(scene, expected, tmp_path):
    from junitparser import Failure, JUnitXml
    findings, _ = expected
    r = audit(scene, "junit")
    assert r.returncode == 1, r.stderr
    (tmp_path / "audit.xml").write_text(r.stdout)
    suites = list(JUnitXml.fromfile(str(tmp_path / "audit.xml")))
    ns = scene["ns"]
    cases = {c.name: c for c in suites[0]}
    missing = sorted(f["policy"] for f in findings if f["rule"] == "isolation-policy-missing")
    assert sorted(cases) == sorted([f"{ns}/from-anyone", f"{ns}/from-obs", *missing, "netpol-guard/dns-target"])
    assert suites[0].name == "netpol-guard audit" and suites[0].tests == len(cases)
    failed = cases[f"{ns}/from-obs"].result
    assert isinstance(failed[0], Failure) and "namespace-selector-matches-nothing" in failed[0].message
    assert f"{ns}/NetworkPolicy/from-obs: error" in failed[0].text  # the object, not a file
    assert cases[f"{ns}/from-anyone"].is_passed and "allow-all-peers" in cases[f"{ns}/from-anyone"].system_out
    assert {cases[m].classname for m in missing} == {ns}
    assert all(isinstance(cases[m].result[0], Failure) for m in missing)


def test_every_format_keeps_the_exit_status_of_text(scene):
    text = audit(scene, "text")
    assert text.returncode == 1 and "error [namespace-selector-matches-nothing]" in text.stdout
    clean = subprocess.run([sys.executable, "-m", "webhook", "audit", "--kubeconfig",
                            str(scene["cluster"].kubeconfig), "--namespace", scene["obs"], "--format", "sarif"],
                           capture_output=True, text=True, timeout=120)
    assert clean.returncode == 0 and json.loads(clean.stdout)["runs"][0]["results"] == [], clean.stderr


def test_kubectl_netpol_guard_audit_runs_through_the_real_kubectl(scene, expected):
    cluster = scene["cluster"]
    kubectl = cluster.cp.bin("kubectl")
    # the plugin found on PATH like any other; the cluster from KUBECONFIG, as kubectl's own
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETPOL_GUARD_")}
    env.update(PATH=f"{BIN}{os.pathsep}/usr/bin:/bin", KUBECONFIG=str(cluster.kubeconfig))
    r = subprocess.run([kubectl, "netpol-guard", "audit", "--config", scene["config"], "--namespace", scene["ns"],
                        "--format", "json"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr
    assert json.loads(r.stdout)["findings"] == expected[0]
    r = subprocess.run([kubectl, "netpol-guard", "audit", "--context", "e2e", "--namespace", scene["ns"]],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and f"{scene['ns']}/from-obs: error" in r.stdout, r.stdout + r.stderr


def test_lint_of_the_live_clusters_own_policies_places_sarif_results_on_the_objects_too(scene, sarif_schema):
    """`lint --kubeconfig` without PATH has no files either (before: every result was on "stdin")."""
    r = subprocess.run([sys.executable, "-m", "webhook", "lint", "--kubeconfig", str(scene["cluster"].kubeconfig),
                        "--namespace", scene["ns"], "--format", "sarif"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    log = json.loads(r.stdout)
    jsonschema.Draft4Validator(sarif_schema).validate(log)
    uris = {res["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for res in log["runs"][0]["results"]}
    prefix = f"apis/networking.k8s.io/v1/namespaces/{scene['ns']}/networkpolicies/"
    assert uris == {prefix + "from-obs", prefix + "from-anyone"}
