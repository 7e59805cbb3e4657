"""What a newcomer meets in the first ten minutes: empty input, stdin, --exclude, `off`
unquoted, plurals. Each test is something a user would notice."""
import json
import os
import subprocess
import sys

from tests.test_chart import render, rendered_config
from tests.server_fixture import serve  # noqa: F401 - the fixture
from tests.test_lint_cli import BAD, CLUSTER, GOOD, lint


def test_lint_on_an_empty_file_exits_two_and_says_nothing_was_checked(tmp_path):
    f = tmp_path / "empty.yaml"
    f.write_text("")
    r = lint(f)
    assert r.returncode == 2
    assert "no NetworkPolicy found" in r.stderr and "--allow-empty" in r.stderr


def test_lint_on_files_without_any_network_policy_exits_two_unless_allowed(tmp_path):
    (tmp_path / "cluster.yaml").write_text(CLUSTER)
    r = lint(tmp_path)
    assert r.returncode == 2 and "no NetworkPolicy found" in r.stderr and "Traceback" not in r.stderr
    r = lint("--allow-empty", tmp_path)
    assert r.returncode == 0 and "checked 0 NetworkPolicies" in r.stdout
    r = lint("--format", "json", tmp_path)
    assert r.returncode == 2 and r.stdout == ""


def test_policies_only_in_cluster_paths_do_not_count_as_checked(tmp_path):
    (tmp_path / "ctx.yaml").write_text(GOOD)
    (tmp_path / "empty.yaml").write_text("# nothing yet\n")
    r = lint("--cluster", tmp_path / "ctx.yaml", tmp_path / "empty.yaml")
    assert r.returncode == 2 and "no NetworkPolicy found" in r.stderr


def test_lint_reads_stdin_for_a_dash_and_names_it_in_findings(tmp_path):
    (tmp_path / "cluster.yaml").write_text(CLUSTER)
    r = subprocess.run([sys.executable, "-m", "webhook", "lint", "--cluster", str(tmp_path / "cluster.yaml"),
                        "--format", "json", "-"], input=GOOD + "---\n" + BAD, capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    out = json.loads(r.stdout)
    assert out["summary"]["policies"] == 2
    dns = next(f for f in out["findings"] if f["rule"] == "dns-egress-missing")
    assert dns["file"] == "<stdin>" and dns["line"] > 0


def test_exclude_leaves_out_files_by_relative_path_or_name(tmp_path):
    (tmp_path / "cluster.yaml").write_text(CLUSTER)
    pol = tmp_path / "policies"
    (pol / "vendored").mkdir(parents=True)
    (pol / "api.yaml").write_text(GOOD)
    (pol / "vendored" / "broken.yaml").write_text("kind: [unclosed\n")
    (pol / "api-egress.yaml").write_text(BAD)
    assert lint("--cluster", tmp_path / "cluster.yaml", pol).returncode == 2  # the broken file
    r = lint("--cluster", tmp_path / "cluster.yaml", "--exclude", "vendored/*", "--exclude", "*-egress.yaml",
             "--format", "json", pol)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["summary"]["policies"] == 1


def test_summary_counts_read_as_english(tmp_path):
    (tmp_path / "cluster.yaml").write_text(CLUSTER)
    (tmp_path / "p.yaml").write_text(BAD)
    r = lint("--cluster", tmp_path / "cluster.yaml", tmp_path / "p.yaml")
    assert "checked 1 NetworkPolicy: 1 error, " in r.stdout, r.stdout
    assert "1 NetworkPolicies" not in r.stdout and "1 errors" not in r.stdout


def test_off_unquoted_in_the_config_file_turns_a_rule_off(tmp_path):
    (tmp_path / "cluster.yaml").write_text(CLUSTER)
    (tmp_path / "p.yaml").write_text(BAD)
    cfg = tmp_path / "config.yaml"
    cfg.write_text("rules:\n  dns-egress-missing: off\n")
    r = lint("--config", cfg, "--cluster", tmp_path / "cluster.yaml", "--format", "json", tmp_path / "p.yaml")
    assert r.returncode == 0, r.stderr
    assert "dns-egress-missing" not in {f["rule"] for f in json.loads(r.stdout)["findings"]}


def test_off_unquoted_in_chart_values_renders_as_off(tmp_path):
    docs = render({"config": {"rules": {"dns-tcp-missing": False}}})
    assert rendered_config(docs)["rules"] == {"dns-tcp-missing": "off"}


# --- serve --dev ------------------------------------------------------------------------

def test_dev_certificate_is_valid_for_the_address_the_server_prints(serve, tmp_path):
    from tests.server_fixture import CertPaths, Client
    cwd = tmp_path / "project"
    cwd.mkdir()
    dev = CertPaths(str(cwd / "certs"), str(cwd / "certs" / "ca.crt"), str(cwd / "certs" / "tls.crt"),
                    str(cwd / "certs" / "tls.key"))
    server = serve(["--dev", "--workers", "1"], certs=dev, pass_certs=False, cwd=str(cwd),
                   env={"KUBECONFIG": str(tmp_path / "none"), "HOME": str(tmp_path)})
    # hostname checking on, against the IP address: what `curl https://127.0.0.1:8443` does
    assert Client(server.port, dev.ca, server_name="127.0.0.1").get("/healthz")[0] == 200


def test_a_busy_port_is_one_line_and_exit_two(tmp_path):
    import socket
    import time

    from tests.server_fixture import make_certs, run_serve
    tls = make_certs(tmp_path / "tls")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        started = time.monotonic()
        r = run_serve(["--cluster", "examples/cluster", "--cert", tls.cert, "--key", tls.key,
                       "--bind", f"127.0.0.1:{port}"])
        elapsed = time.monotonic() - started
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0, r.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in r.stderr and "--bind" in r.stderr
    assert elapsed < 4.5, "gunicorn's bind retries (5 x 1 s) were not avoided"


def test_make_run_config_turns_on_mutations_and_mutate_patches(serve):
    import base64
    from pathlib import Path
    repo = Path(__file__).resolve().parent.parent
    review = json.loads((repo / "examples" / "admission" / "create-denied.json").read_text())
    server = serve(["--cluster", "examples/cluster", "--config", "examples/config/mutations.yaml", "--workers", "1"])
    status, body = server.post_json("/mutate", review)
    assert status == 200 and body["response"].get("patch"), body
    patch = json.loads(base64.b64decode(body["response"]["patch"]))
    assert any(op["path"].startswith("/spec/egress") for op in patch), patch


def test_rule_docs_show_every_policy_an_example_is_made_of():
    import yaml

    from webhook.rules.base import REGISTRY
    from webhook.rules.docs import explain
    checked = 0
    for rule in REGISTRY:
        text = explain(rule)
        for ex in (*rule.bad, *rule.good):
            for doc in yaml.safe_load_all(ex.manifest):
                if doc and doc.get("kind") == "NetworkPolicy":
                    assert f"name: {doc['metadata']['name']}" in text, (rule.id, ex.title)
                    checked += 1
    assert checked > 50
    assert "name: allow-dns" in explain(REGISTRY.get("dns-egress-missing"))


def test_the_package_builds_without_warnings_and_carries_the_license_pyproject_names(tmp_path):
    """pip builds the wheel as a user's `pip install .` would (isolated, from PyPI)."""
    import tomllib
    import zipfile
    from pathlib import Path
    repo = Path(__file__).resolve().parent.parent
    declared = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["license"]
    assert declared == "Apache-2.0"
    assert (repo / "LICENSE").read_text().split()[:4] == ["Apache", "License", "Version", "2.0,"]
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(tmp_path), str(repo)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Deprecat" not in r.stdout + r.stderr, "setuptools warns while building"
    wheel = next(tmp_path.glob("*.whl"))
    with zipfile.ZipFile(wheel) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith("METADATA"))).decode()
        assert "License-Expression: Apache-2.0" in meta
        assert any(n.endswith("licenses/LICENSE") for n in z.namelist())


def test_generated_output_is_ignored_by_git():
    from pathlib import Path
    r = subprocess.run(["git", "check-ignore", "-q", "generated/10-allow-dns.yaml"], capture_output=True,
                       cwd=Path(__file__).resolve().parent.parent)
    assert r.returncode == 0


def kubectl_binary():
    """The real kubectl the control-plane build leaves in the cache (scripts/controlplane)."""
    import glob
    import shutil
    found = sorted(glob.glob(os.path.expanduser("~/.cache/netpol-guard/controlplane/*/bin/kubectl")))
    return found[-1] if found else shutil.which("kubectl")


def test_generate_suggests_apply_k_and_kustomize_keeps_allowances_before_default_deny(tmp_path):
    import pytest
    out = tmp_path / "policies"
    r = subprocess.run([sys.executable, "-m", "webhook", "generate", "--map", "examples/maps/three-tier.yaml",
                        "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"next: kubectl apply -k {out} " in r.stdout and "apply -f" not in r.stdout
    kubectl = kubectl_binary()
    if not kubectl:
        pytest.skip("no kubectl binary (the control-plane build puts one in ~/.cache/netpol-guard/controlplane)")
    import yaml
    built = subprocess.run([kubectl, "kustomize", str(out)], capture_output=True, text=True, check=True).stdout
    order = [(d["metadata"]["namespace"], d["metadata"]["name"]) for d in yaml.safe_load_all(built)]
    assert len(order) == len(list(out.glob("*0-*.yaml")))
    for ns in {n for n, _ in order}:
        names = [name for n, name in order if n == ns]
        assert names[-1] == "default-deny" and names[0] == "allow-dns", (ns, names)
