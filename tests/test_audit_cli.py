"""`audit`, and `lint`/`simulate` on a live cluster: what a user sees when the cluster cannot
be read (the real-cluster behaviour is tested in tests/e2e/ against a real kube-apiserver)."""
import socket
import subprocess
import sys

import pytest


def cli(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "webhook", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def dead_kubeconfig(tmp_path):
    """A kubeconfig whose server is a port on 127.0.0.1 nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = tmp_path / "kubeconfig"
    path.write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {{server: "https://127.0.0.1:{port}", insecure-skip-tls-verify: true}}
users:
- name: u
  user: {{token: not-a-secret}}
contexts:
- name: staging
  context: {{cluster: c, user: u}}
current-context: staging
""")
    return str(path), port


@pytest.mark.parametrize("command", ["audit", "lint", "simulate"])
def test_an_unreachable_cluster_is_one_clear_error_and_exit_2(command, dead_kubeconfig):
    path, port = dead_kubeconfig
    r = cli(command, "--kubeconfig", path, "--context", "staging")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"netpol-guard {command}: listing {r.stderr.split('listing ')[1].split(' ')[0]} from "
        f"https://127.0.0.1:{port} failed: [Errno 111] Connection refused"]
    assert "Traceback" not in r.stderr and "not-a-secret" not in r.stderr + r.stdout


def test_an_unknown_context_or_missing_kubeconfig_names_it(dead_kubeconfig, tmp_path):
    path, _ = dead_kubeconfig
    r = cli("audit", "--kubeconfig", path, "--context", "prod")
    assert r.returncode == 2
    assert r.stderr.startswith(f"netpol-guard audit: kubeconfig {path}, context prod: cannot be used:")
    missing = str(tmp_path / "nope")
    r = cli("lint", "--kubeconfig", missing)
    assert r.returncode == 2 and r.stderr.startswith(f"netpol-guard lint: kubeconfig {missing}: cannot be used")


def test_lint_without_path_or_cluster_says_what_it_needs():
    r = cli("lint")
    assert r.returncode == 2
    assert "no PATH given" in r.stderr and "--kubeconfig" in r.stderr


def test_audit_help_shows_formats_and_exit_codes():
    r = cli("audit", "--help")
    assert r.returncode == 0
    for word in ("--kubeconfig", "--context", "policyreport", "exit status", "--format sarif", "--format github",
                 "--format junit", "kubectl netpol-guard audit"):
        assert word in r.stdout


def test_admin_policies_the_credentials_may_not_list_are_named_in_a_note(kube_api, tmp_path):
    """A cluster that serves AdminNetworkPolicies to others but answers us 403: the answers
    cannot account for them, and each command says so (stdout stays the answer for simulate)."""
    import json

    from tests.kubeapi.fixtures import write_kubeconfig
    kube_api.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
    kube_api.put_object({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                         "metadata": {"name": "deny", "namespace": "shop"},
                         "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}})
    kube_api.put_object({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "shop",
                                                                      "labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "web", "image": "x"}]}})
    kube_api.inject_failure("GET", r"^/apis/policy\.networking\.k8s\.io", status=403, count=1000)
    kubeconfig = str(write_kubeconfig(tmp_path / "kubeconfig", kube_api.url))
    note = ("AdminNetworkPolicy, BaselineAdminNetworkPolicy, ClusterNetworkPolicy not followed: the API server "
            "answered HTTP 403 Forbidden")
    lint = cli("lint", "--kubeconfig", kubeconfig)
    assert lint.returncode == 0 and f"note: {note}" in lint.stdout, lint.stdout + lint.stderr
    audit = cli("audit", "--kubeconfig", kubeconfig, "--format", "json")
    assert audit.returncode in (0, 1), audit.stderr  # 1: no DNS pods in this small cluster
    assert any(note in n for n in json.loads(audit.stdout)["notes"])
    sim = cli("simulate", "--kubeconfig", kubeconfig, "--format", "json")
    assert sim.returncode == 0 and json.loads(sim.stdout) and f"note: {note}" in sim.stderr, sim.stderr
