"""`netpol-guard simulate` and `lint` with AdminNetworkPolicies and the BaselineAdminNetworkPolicy:
golden outputs over examples/cluster + examples/admin-policies, the docs' examples run as
written, and unusable admin policies as exit 2 naming file, line, object and field.

Golden files live in tests/golden/simulate-admin/. After an intended output change:

    UPDATE_GOLDEN=1 .venv/bin/python -m pytest -q tests/test_simulate_admin.py

and review the diff before committing.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from webhook.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "tests", "golden", "simulate-admin")
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
CLUSTER = ["--cluster", "examples/cluster", "--cluster", "examples/admin-policies"]

CASES = {
    # ANP Allow (named port) beats the shop's default-deny
    "flow-prometheus-db-metrics.txt": ["--from", "monitoring/prometheus", "--to", "shop/db", "--port", "metrics"],
    # ANP Deny (port range) beats nothing the shop allows - and would beat it
    "flow-prometheus-db-postgres.json": ["--from", "monitoring/prometheus", "--to", "shop/db", "--port", "5432",
                                         "--format", "json"],
    # Pass to the shop's NetworkPolicies, which allow
    "flow-frontend-api.txt": ["--from", "shop/frontend", "--to", "shop/api", "--port", "8080"],
    # no admin rule, no NetworkPolicy: the baseline denies
    "flow-ingress-prometheus.json": ["--from", "ingress-nginx/ingress-nginx-controller",
                                     "--to", "monitoring/prometheus", "--port", "9090", "--format", "json"],
    "column-db-explain.txt": ["--to", "shop/db", "--explain"],
    "matrix-9090.txt": ["--port", "9090"],
}


def run(capsys, monkeypatch, args: list[str]) -> str:
    monkeypatch.chdir(ROOT)
    code = main(["simulate", *CLUSTER, *args])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def check_golden(name: str, actual: str) -> None:
    path = os.path.join(GOLDEN, name)
    if UPDATE:
        os.makedirs(GOLDEN, exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(actual)
        return
    assert os.path.exists(path), f"no golden file {name}: run with UPDATE_GOLDEN=1"
    with open(path, encoding="utf-8") as fh:
        assert actual == fh.read(), f"{name} differs from its golden file (UPDATE_GOLDEN=1 to regenerate)"


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name, capsys, monkeypatch):
    out = run(capsys, monkeypatch, CASES[name])
    if name.endswith(".json"):
        json.loads(out)
    check_golden(name, out)


def test_the_deciding_admin_rule_is_named_in_text_and_json(capsys, monkeypatch):
    text = run(capsys, monkeypatch, CASES["flow-prometheus-db-metrics.txt"])
    assert ": allowed\n" in text
    assert ("ingress to shop/statefulset/db: allowed by AdminNetworkPolicy monitoring-scrape (priority 10) "
            "spec.ingress[0].from[0] 'allow-prometheus-metrics'") in text
    verdict = json.loads(run(capsys, monkeypatch, CASES["flow-prometheus-db-postgres.json"]))
    assert verdict["allowed"] is False
    assert verdict["ingress"]["tier"] == "admin"
    assert verdict["ingress"]["adminRule"]["name"] == "data-tier-lockdown"
    assert verdict["ingress"]["adminRule"]["ruleName"] == "deny-database-ports"
    assert [p["name"] for p in verdict["adminPolicies"]][:2] == ["cluster-dns", "monitoring-scrape"]
    base = json.loads(run(capsys, monkeypatch, CASES["flow-ingress-prometheus.json"]))
    assert base["allowed"] is False and base["ingress"]["tier"] == "baseline"
    assert base["ingress"]["baselineRule"]["ruleName"] == "deny-everyone-else"


def test_without_admin_policies_the_answer_is_what_it_always_was(capsys, monkeypatch):
    # the shop's NetworkPolicies alone deny prometheus -> db 5432 at the NetworkPolicy tier,
    # and the JSON carries none of the admin keys
    monkeypatch.chdir(ROOT)
    assert main(["simulate", "--cluster", "examples/cluster", "--from", "monitoring/prometheus",
                 "--to", "shop/db", "--port", "5432", "--format", "json"]) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert "tier" not in verdict["ingress"] and "adminPolicies" not in verdict
    assert verdict["ingress"]["isolated"] is True and verdict["allowed"] is False


def test_matrix_cells_equal_the_flow_verdicts(capsys, monkeypatch):
    from webhook.commands.simulate import build_engine
    from webhook.policy.matrix import compute, pods_of

    monkeypatch.chdir(ROOT)
    engine = build_engine([], ["examples/cluster", "examples/admin-policies"], False)
    pods = pods_of(engine)
    matrix = compute(engine, pods, pods)
    assert matrix.cells
    by_name = {p.describe(): p for p in pods}
    for c in matrix.cells:
        assert c.allowed == engine.evaluate(by_name[c.source], by_name[c.destination], c.port, c.protocol).allowed


# --- the docs' examples, run as written --------------------------------------------------------

def doc_examples() -> list[tuple[str, str]]:
    with open(os.path.join(ROOT, "docs", "simulate.md"), encoding="utf-8") as fh:
        text = fh.read()
    section = text[text.index("## AdminNetworkPolicy and BaselineAdminNetworkPolicy"):]
    section = section[:section.find("\n## ", 3)] if "\n## " in section[3:] else section
    out = []
    for block in re.findall(r"```console\n(.*?)```", section, re.S):
        command, _, output = block.partition("\n")
        assert command.startswith("$ netpol-guard "), command
        out.append((command[2:], output))
    return out


@pytest.mark.parametrize("command,expected", doc_examples(), ids=lambda v: v[:60])
def test_docs_examples_print_what_the_docs_say(command, expected, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    args = command.split()[1:]
    code = main(args)
    assert code in (0, 1), capsys.readouterr().err
    assert capsys.readouterr().out == expected


# --- unusable input, and what the engine does not evaluate -------------------------------------

def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "webhook", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


INVALID = """\
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata:
  name: broken
spec:
  priority: 10
  subject:
    namespaces: {}
  ingress:
  - name: typo
    action: Allow
    from:
    - namespaces: {}
    ports:
    - portRange: {start: 90, end: 80}
"""


@pytest.mark.parametrize("command", ["simulate", "lint"])
def test_an_invalid_admin_policy_is_unusable_input_naming_file_line_and_field(tmp_path, command):
    bad = tmp_path / "anp.yaml"
    bad.write_text(INVALID)
    args = (["simulate", "--cluster", "examples/cluster", "--cluster", str(bad), "--port", "80"] if command == "simulate"
            else ["lint", "--cluster", str(bad), "examples/cluster/shop-policies.yaml"])
    r = cli(*args)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert f"{bad}:15:" in r.stderr  # the line of portRange
    assert "AdminNetworkPolicy broken is invalid" in r.stderr
    assert "spec.ingress[0].ports[0].portRange.end" in r.stderr


def test_a_baseline_not_named_default_is_refused(tmp_path):
    bad = tmp_path / "banp.yaml"
    bad.write_text("apiVersion: policy.networking.k8s.io/v1alpha1\nkind: BaselineAdminNetworkPolicy\n"
                   "metadata: {name: mine}\nspec:\n  subject: {namespaces: {}}\n")
    r = cli("simulate", "--cluster", "examples/cluster", "--cluster", str(bad), "--port", "80")
    assert r.returncode == 2 and "metadata.name" in r.stderr and "default" in r.stderr, r.stderr


CNP = """\
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: lock-api}
spec:
  tier: Admin
  priority: 1
  subject: {pods: {podSelector: {matchLabels: {app: api}}}}
  ingress:
  - name: only-http-from-shop
    action: Deny
    from: [{namespaces: {matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: [shop]}]}}]
  - {action: Accept, from: [{namespaces: {}}], protocols: [{tcp: {destinationPort: {number: 9090}}}]}
"""


def test_a_cluster_network_policy_is_evaluated(tmp_path):
    cnp = tmp_path / "cnp.yaml"
    cnp.write_text(CNP)
    r = cli("simulate", "--cluster", "examples/cluster", "--cluster", str(cnp),
            "--from", "shop/frontend", "--to", "shop/api", "--port", "9090", "--format", "json")
    assert r.returncode == 0, r.stderr
    verdict = json.loads(r.stdout)
    # Accept beats the shop's NetworkPolicies on api's ingress; frontend's own egress policies still deny 9090
    assert verdict["ingress"]["allowed"] is True and verdict["ingress"]["tier"] == "admin"
    assert verdict["egress"]["allowed"] is False and verdict["allowed"] is False
    assert verdict["ingress"]["adminRule"] == {"kind": "ClusterNetworkPolicy", "name": "lock-api", "tier": "admin",
                                               "action": "Accept", "rule": 1, "ruleName": "",
                                               "path": "spec.ingress[1].from[0]", "priority": 1}
    r = cli("simulate", "--cluster", "examples/cluster", "--cluster", str(cnp),
            "--from", "monitoring/prometheus", "--to", "shop/api", "--port", "9090")
    assert ("denied by ClusterNetworkPolicy lock-api (admin tier, priority 1) spec.ingress[0].from[0] "
            "'only-http-from-shop'") in r.stdout, r.stdout


def test_other_plugins_policy_kinds_are_said_to_be_ignored(tmp_path):
    other = tmp_path / "other.yaml"
    other.write_text("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: x, namespace: shop}\n"
                     "spec: {endpointSelector: {}}\n---\n"
                     "apiVersion: crd.antrea.io/v1beta1\nkind: ClusterNetworkPolicy\nmetadata: {name: y}\n"
                     "spec: {priority: 5, tier: securityops}\n")
    r = cli("simulate", "--cluster", "examples/cluster", "--cluster", str(other),
            "--from", "shop/frontend", "--to", "shop/api", "--port", "8080")
    assert r.returncode == 0, r.stderr
    assert "note: 1 CiliumNetworkPolicy (cilium.io/v2) object in view NOT evaluated" in r.stdout
    assert "note: 1 ClusterNetworkPolicy (crd.antrea.io/v1beta1) object in view NOT evaluated" in r.stdout
    r = cli("simulate", "--cluster", "examples/cluster", "--cluster", str(other), "--from", "shop/frontend",
            "--to", "shop/api", "--port", "8080", "--format", "json")
    assert json.loads(r.stdout)["notEvaluated"] == {"CiliumNetworkPolicy (cilium.io/v2)": 1,
                                                    "ClusterNetworkPolicy (crd.antrea.io/v1beta1)": 1}
    r = cli("lint", "--cluster", str(other), "examples/cluster/shop-policies.yaml")
    assert r.returncode == 0, r.stderr
    assert "1 CiliumNetworkPolicy (cilium.io/v2) object in view, not evaluated" in r.stdout


def test_lint_reports_admin_policies_and_every_rule_runs_unchanged(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    base = ["lint", "--format", "json", "--cluster", "examples/cluster", "examples/policies"]
    code_without = main(base)
    without = json.loads(capsys.readouterr().out)
    code_with = main(base[:3] + ["--cluster", "examples/admin-policies"] + base[3:])
    with_admin = json.loads(capsys.readouterr().out)
    assert code_with == code_without == 1  # the bad examples still fail
    assert with_admin["findings"] == without["findings"]
    assert with_admin["summary"]["adminPolicies"] == {"AdminNetworkPolicy": 5, "BaselineAdminNetworkPolicy": 1}
    assert "adminPolicies" not in without["summary"]
    main(base[:2] + ["text"] + base[3:4] + ["examples/admin-policies"] + base[4:])
    text = capsys.readouterr().out
    assert "note: 5 AdminNetworkPolicies and 1 BaselineAdminNetworkPolicy in view" in text


def test_diff_shows_what_adding_admin_policies_closes(tmp_path, capsys, monkeypatch):
    import shutil

    base, old, new = tmp_path / "base", tmp_path / "old", tmp_path / "new"
    for d in (base, old, new):
        d.mkdir()
    for f in ("00-namespaces.yaml", "shop.yaml", "monitoring.yaml", "kube-system.yaml", "ingress-nginx.yaml"):
        shutil.copy(os.path.join(ROOT, "examples", "cluster", f), base)
    for d in (old, new):
        shutil.copy(os.path.join(ROOT, "examples", "cluster", "shop-policies.yaml"), d)
    for f in ("admin-network-policies.yaml", "baseline-admin-network-policy.yaml"):
        shutil.copy(os.path.join(ROOT, "examples", "admin-policies", f), new)
    monkeypatch.chdir(ROOT)
    assert main(["simulate", "--cluster", str(base), "--diff", str(old), str(new), "--format", "json"]) == 0
    d = json.loads(capsys.readouterr().out)
    # the baseline closes monitoring to everyone but itself; the data-tier lockdown closes nothing the
    # shop allowed (api -> db is passed to the shop's policies first); nothing opens: the admin
    # Allows (DNS, prometheus scraping `metrics`) grant what the shop's own policies already allowed
    assert [(c["from"], c["to"], c["port"]) for c in d["closed"]] == [
        ("ingress-nginx/daemonset/ingress-nginx-controller", "monitoring/statefulset/prometheus", 9090),
        ("kube-system/deployment/coredns", "monitoring/statefulset/prometheus", 9090)]
    assert d["opened"] == []
    assert "BaselineAdminNetworkPolicy default" in d["closed"][0]["after"]
