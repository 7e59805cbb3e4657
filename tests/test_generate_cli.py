"""`netpol-guard generate` end to end: golden output of the examples, files and order with --out,
exit codes, and nothing written when the map is unusable or the proof fails.

Set UPDATE_GOLDEN=1 to rewrite tests/golden/generate/ after an intended change (then read the diff).
"""
from __future__ import annotations

import os
import subprocess

import pytest
import yaml

from webhook.cli import main
from webhook.policy.parse import parse_policy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "tests", "golden", "generate")
EXAMPLES = ("three-tier", "api-egress", "ingress-monitoring")


def example(name: str) -> str:
    return os.path.join(ROOT, "examples", "maps", f"{name}.yaml")


def check_golden(name: str, text: str) -> None:
    path = os.path.join(GOLDEN, name)
    if os.environ.get("UPDATE_GOLDEN"):
        os.makedirs(GOLDEN, exist_ok=True)
        with open(path, "w") as fh:
            fh.write(text)
    with open(path) as fh:
        assert text == fh.read(), f"{name} differs from the golden file (UPDATE_GOLDEN=1 to accept)"


@pytest.mark.parametrize("name", EXAMPLES)
def test_stdout_stream_matches_golden(name, capsys):
    assert main(["generate", "--map", example(name)]) == 0
    out, err = capsys.readouterr()
    check_golden(f"{name}.yaml", out)
    assert "proof passed" in err
    docs = [d for d in yaml.safe_load_all(out) if d]
    assert docs and all(parse_policy(d).policy is not None for d in docs)
    for d in docs:
        meta = d["metadata"]
        assert meta["labels"] == {"app.kubernetes.io/managed-by": "netpol-guard-generate"}
        assert meta["annotations"]["description"].startswith("netpol-guard generate: ")
    # the stream is in apply order: DNS first, default-deny last in every namespace
    names = [d["metadata"]["name"] for d in docs]
    assert names[0] == "allow-dns" and names[-1] == "default-deny"


@pytest.mark.parametrize("name", EXAMPLES)
def test_out_dir_files_order_kustomization_and_script_match_golden(name, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["generate", "--map", example(name), "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert f"to {out}" in stdout and "proof passed" in stdout
    files = sorted(os.listdir(out))
    policies = [f for f in files if f not in ("kustomization.yaml", "connectivity-tests.sh")]
    kust = yaml.safe_load((out / "kustomization.yaml").read_text())
    assert kust["resources"] == policies  # lexical order = kubectl apply -f order
    deny_at = min(i for i, f in enumerate(policies) if f.startswith("90-default-deny-"))
    assert all(f.startswith(("10-dns-", "20-allow-")) for f in policies[:deny_at])
    assert all(f.startswith("90-default-deny-") for f in policies[deny_at:])
    assert os.access(out / "connectivity-tests.sh", os.X_OK)
    check_golden(f"{name}.connectivity-tests.sh", (out / "connectivity-tests.sh").read_text())
    # the files hold exactly the policies of the stream, in the same order
    assert main(["generate", "--map", example(name)]) == 0
    stream_docs = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d]
    assert [yaml.safe_load((out / f).read_text()) for f in policies] == stream_docs


def test_output_is_deterministic(capsys):
    main(["generate", "--map", example("ingress-monitoring")])
    first = capsys.readouterr().out
    main(["generate", "--map", example("ingress-monitoring")])
    assert capsys.readouterr().out == first


def test_rerun_removes_stale_generated_files_and_keeps_others(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "20-allow-old-ingress-gone.yaml").write_text(
        "kind: NetworkPolicy\nmetadata:\n  labels: {app.kubernetes.io/managed-by: netpol-guard-generate}\n")
    (out / "mine.yaml").write_text("kind: ConfigMap\n")
    assert main(["generate", "--map", example("three-tier"), "--out", str(out)]) == 0
    names = os.listdir(out)
    assert "20-allow-old-ingress-gone.yaml" not in names and "mine.yaml" in names


def test_map_errors_exit_2_with_every_problem_and_write_nothing(tmp_path, capsys):
    bad = tmp_path / "map.yaml"
    bad.write_text("namespaces: [a]\nworkloads:\n  - {name: w, namespace: b, labels: {app: w}}\n"
                   "flows:\n  - {from: w, to: x, ports: [80]}\n")
    out = tmp_path / "out"
    assert main(["generate", "--map", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"netpol-guard generate: the map has 3 problem(s):\n{bad}:3: workloads[0].namespace" in err
    assert f"{bad}:5: flows[0].from: no workload 'w'" in err
    assert f"{bad}:5: flows[0].to: no workload 'x'" in err
    assert "Traceback" not in err and not out.exists()


def test_missing_map_file_is_exit_2(tmp_path, capsys):
    assert main(["generate", "--map", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml: cannot read: No such file or directory" in capsys.readouterr().err


def test_proof_failure_exits_1_and_writes_nothing(tmp_path, capsys):
    """External egress into the configured pod network: the flows are right but lint warns."""
    m = tmp_path / "map.yaml"
    m.write_text("namespaces: [a]\nworkloads: [{name: w, namespace: a, labels: {app: w}}]\n"
                 "egress: [{from: w, to: [10.0.0.0/8], ports: [443]}]\n")
    cfg = tmp_path / "config.yaml"
    cfg.write_text("cluster:\n  podCIDRs: [10.244.0.0/16]\n")
    out = tmp_path / "out"
    assert main(["generate", "--map", str(m), "--config", str(cfg), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "the generated policies do not match the map; nothing written" in captured.err
    assert "lint: warning [ipblock-targets-cluster] a/allow-external-egress-w" in captured.err
    assert not out.exists() and captured.out == ""
    assert main(["generate", "--map", str(m), "--config", str(cfg)]) == 1
    assert capsys.readouterr().out == ""


def test_help_and_console_script():
    proc = subprocess.run([os.path.join(ROOT, ".venv", "bin", "netpol-guard"), "generate", "--help"],
                          capture_output=True, text=True, timeout=60)
    if proc.returncode != 0 and "No such file" in proc.stderr:
        pytest.skip("console script not installed")
    assert proc.returncode == 0
    assert "--map FILE" in proc.stdout and "connectivity-tests.sh" in proc.stdout


@pytest.mark.parametrize("value", [
    {"a": [{"b": [1, [2, 3]], "c": {}}, "x", []], "d": {"e": "true", "f": "10.0.0.0/8", "g": "::/0"}},
    {"yes": "no", "k": "it's \"quoted\" – ünïcode", "n": "0x1F", "t": "2001-12-14", "e": "", "m": "a: b"},
])
def test_yaml_writer_round_trips(value):
    from webhook.generate.render import to_yaml
    assert yaml.safe_load(to_yaml(value)) == value


@pytest.mark.parametrize("version", ["1.28.0", "1.33.0"])
def test_generated_policies_are_valid_kubernetes_objects(version, capsys):
    """Strict schema of the Kubernetes API (kubernetes-validate's copy): no unknown or mistyped field."""
    import importlib.resources
    import json

    import jsonschema
    from referencing import Registry, Resource

    base = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema" / f"v{version}-local-strict"
    registry = Resource.from_contents(json.loads((base / "_definitions.json").read_text())) @ Registry()
    schema = json.loads((base / "networkpolicy-networking-v1.json").read_text())
    validator = jsonschema.Draft202012Validator(
        schema, registry=registry.with_resource("", Resource.from_contents(schema)))
    for name in EXAMPLES:
        assert main(["generate", "--map", example(name)]) == 0
        for doc in (d for d in yaml.safe_load_all(capsys.readouterr().out) if d):
            errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(doc)]
            assert not errors, (name, doc["metadata"]["name"], errors)
