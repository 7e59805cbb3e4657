"""`netpol-guard simulate`: golden outputs for the matrix and the diff over the bundled example
cluster, and the command line's exit codes and error messages (through a real subprocess).

Golden files live in tests/golden/simulate/. After an intended output change, regenerate them:

    UPDATE_GOLDEN=1 .venv/bin/python -m pytest -q tests/test_simulate.py

and review the diff of tests/golden/simulate/ before committing.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from webhook.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "tests", "golden", "simulate")
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
CLUSTER = "examples/cluster"
DIFF = ["--diff", "tests/golden/simulate/diff/old", "tests/golden/simulate/diff/new"]

# golden file -> simulate arguments (run from the repository root, paths relative to it)
CASES = {
    "flow-frontend-api.txt": ["--from", "shop/frontend", "--to", "shop/api", "--port", "8080"],
    "flow-frontend-db.json": ["--from", "shop/frontend", "--to", "shop/db", "--port", "postgres",
                              "--format", "json"],
    "matrix-all-ports.txt": [],
    "matrix-all-ports.json": ["--format", "json"],
    "matrix-8080.txt": ["--port", "8080/TCP"],
    "matrix-dns-explain.txt": ["--port", "53/UDP", "--explain"],
    "matrix-metrics-explain.json": ["--port", "metrics", "--format", "json", "--explain"],
    "row-frontend.txt": ["--from", "shop/frontend"],
    "column-db-explain.txt": ["--to", "shop/db", "--explain"],
    "flow-service-ip.txt": ["--from", "shop/frontend", "--to", "10.96.12.34", "--port", "80"],
    "flow-service-ip.json": ["--from", "shop/api", "--to", "10.96.0.10", "--port", "53/UDP", "--format", "json"],
    "diff.txt": DIFF,
    "diff.json": DIFF + ["--format", "json"],
}


def run_inprocess(capsys, monkeypatch, args: list[str]) -> tuple[int, str]:
    monkeypatch.chdir(ROOT)
    code = main(["simulate", "--cluster", CLUSTER, *args])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return code, captured.out


def check_golden(name: str, actual: str) -> None:
    path = os.path.join(GOLDEN, name)
    if UPDATE:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(actual)
        return
    assert os.path.exists(path), f"no golden file {name}: run with UPDATE_GOLDEN=1"
    with open(path, encoding="utf-8") as fh:
        expected = fh.read()
    assert actual == expected, (f"{name} differs from its golden file; if the change is intended, "
                                "regenerate with UPDATE_GOLDEN=1 and review the diff")


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name, capsys, monkeypatch):
    code, out = run_inprocess(capsys, monkeypatch, CASES[name])
    assert code == 0
    if name.endswith(".json"):
        json.loads(out)  # well-formed
    check_golden(name, out)


def test_dot_file(tmp_path, capsys, monkeypatch):
    dot = tmp_path / "matrix.dot"
    code, _ = run_inprocess(capsys, monkeypatch, ["--port", "8080", "--dot", str(dot)])
    assert code == 0
    text = dot.read_text()
    assert text.startswith("digraph connectivity {")
    assert '"shop/deployment/frontend" -> "shop/deployment/api" [label="8080/TCP"];' in text
    assert '"shop/deployment/api" -> "shop/deployment/frontend"' not in text  # denied: no edge
    check_golden("matrix-8080.dot", text)


# --- what the goldens say, spelled out -------------------------------------------------------

def test_example_cluster_allows_exactly_the_app_flows(capsys, monkeypatch):
    _, out = run_inprocess(capsys, monkeypatch, ["--format", "json"])
    flows = json.loads(out)["flows"]
    allowed_in_shop = {(f["from"], f["to"], f["port"]) for f in flows if f["allowed"]
                       and f["to"].startswith("shop/")}
    assert allowed_in_shop == {
        ("ingress-nginx/daemonset/ingress-nginx-controller", "shop/deployment/frontend", 8080),
        ("shop/deployment/frontend", "shop/deployment/api", 8080),
        ("shop/deployment/api", "shop/statefulset/db", 5432),
        ("shop/deployment/api", "shop/deployment/cache", 6379),
        ("monitoring/statefulset/prometheus", "shop/deployment/api", 9090),
        ("monitoring/statefulset/prometheus", "shop/statefulset/db", 9187),
        ("monitoring/statefulset/prometheus", "shop/deployment/cache", 9121),
    }
    # every shop workload reaches DNS on UDP and TCP
    for w in ("deployment/frontend", "deployment/api", "statefulset/db", "deployment/cache"):
        for proto in ("UDP", "TCP"):
            assert any(f["allowed"] and f["from"] == f"shop/{w}" and f["to"] == "kube-system/deployment/coredns"
                       and f["port"] == 53 and f["protocol"] == proto for f in flows), (w, proto)


def test_diff_names_opened_and_closed(capsys, monkeypatch):
    _, out = run_inprocess(capsys, monkeypatch, DIFF + ["--format", "json"])
    d = json.loads(out)
    assert [(f["from"], f["to"], f["port"]) for f in d["opened"]] == [
        ("ingress-nginx/daemonset/ingress-nginx-controller", "shop/deployment/api", 8080)]
    assert [(f["from"], f["to"], f["port"]) for f in d["closed"]] == [
        ("shop/deployment/api", "shop/deployment/cache", 6379)]
    assert "shop/api-from-ingress" in d["opened"][0]["after"]
    assert "shop/api spec.egress[1]" in d["closed"][0]["before"]


def test_diff_of_identical_sets_is_empty(capsys, monkeypatch):
    old = "tests/golden/simulate/diff/old"
    code, out = run_inprocess(capsys, monkeypatch, ["--diff", old, old])
    assert code == 0
    assert "opened (0):\n  none" in out and "closed (0):\n  none" in out


# --- the command line through a real process ---------------------------------------------------

def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "webhook", "simulate", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_cli_allowed_and_denied_both_exit_0_with_json_verdict():
    ok = cli("--cluster", CLUSTER, "--from", "shop/frontend", "--to", "shop/api", "--port", "8080/tcp",
             "--format", "json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["allowed"] is True
    no = cli("--cluster", CLUSTER, "--from", "203.0.113.5", "--to", "shop/frontend", "--port", "http",
             "--format", "json")
    assert no.returncode == 0, no.stderr
    verdict = json.loads(no.stdout)
    assert verdict["allowed"] is False and verdict["ingress"]["policies"]
    assert verdict["port"] == 8080  # the name resolved against frontend's container ports


@pytest.mark.parametrize("args,message", [
    (["--from", "shop/nope", "--to", "shop/api", "--port", "80"],
     "--from shop/nope: no such pod or workload; known in shop: api, cache, db, frontend"),
    (["--from", "shop/api", "--to", "shop/db", "--port", "99999"], "port must be between 1 and 65535"),
    (["--from", "shop/api", "--to", "shop/db", "--port", "5432/ICMP"], "protocol must be TCP, UDP or SCTP"),
    (["--from", "shop/api", "--to", "shop/db", "--port", "http"], "shop/statefulset/db declares no TCP port named 'http'"),
    (["--from", "shop/api", "--to", "shop/db"], "--from and --to need --port"),
    (["--from", "api", "--to", "shop/db", "--port", "80"], "expected NAMESPACE/NAME"),
    (["--from", "10.0.0.0/8", "--to", "shop/db", "--port", "80"], "give one address, not a CIDR"),
    (["--from", "10.96.12.34", "--to", "shop/db", "--port", "80"], "traffic never comes from a Service"),
])
def test_cli_usage_errors_exit_2(args, message):
    r = cli("--cluster", CLUSTER, *args)
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def test_service_ip_is_translated_to_pods_and_target_port(capsys, monkeypatch):
    # frontend's policy allows egress to api on 8080 only: the Service port 80 is translated first
    _, out = run_inprocess(capsys, monkeypatch, ["--from", "shop/frontend", "--to", "10.96.12.34",
                                                 "--port", "80", "--format", "json"])
    d = json.loads(out)
    assert d["allowed"] is True and d["service"] == "shop/api"
    assert [(b["to"], b["port"]) for b in d["backends"]] == [("shop/deployment/api", 8080)]


def test_cli_unusable_files_exit_2_naming_file_and_line(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: x\n")
    r = cli("--cluster", str(broken))
    assert r.returncode == 2 and f"{broken}:" in r.stderr and "not valid YAML" in r.stderr
    assert "Traceback" not in r.stderr

    invalid = tmp_path / "policy.yaml"
    invalid.write_text("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: a}\n"
                       "spec:\n  podSelector: {}\n  ingress:\n  - ports:\n    - {port: 80, endPort: 70}\n")
    r = cli("--cluster", CLUSTER, "--cluster", str(invalid))
    assert r.returncode == 2
    assert f"{invalid}:8: NetworkPolicy p is invalid" in r.stderr and "endPort" in r.stderr

    r = cli("--cluster", str(tmp_path / "missing"))
    assert r.returncode == 2 and "no such file or directory" in r.stderr

    r = cli("--cluster", CLUSTER, "--diff", "tests/golden/simulate/diff/old", str(tmp_path / "missing"))
    assert r.returncode == 2 and "missing: no such file or directory" in r.stderr
    assert "Traceback" not in r.stderr


def test_cli_diff_exits_0_with_changes():
    r = cli("--cluster", CLUSTER, *DIFF)
    assert r.returncode == 0, r.stderr
    assert "1 opened, 1 closed" in r.stdout
