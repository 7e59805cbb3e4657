"""`netpol-guard serve` refuses to start on unusable input: exit 2, every problem named,
no traceback, nothing bound."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.server_fixture import make_certs, run_serve

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("tls"))


def tls_args(tls):
    return ["--cert", tls.cert, "--key", tls.key, "--bind", "127.0.0.1:1"]


def test_help_describes_the_flags():
    result = run_serve(["--help"])
    assert result.returncode == 0
    for flag in ("--dev", "--cluster", "--config", "--bind", "--cert", "--key", "--client-ca", "--controller",
                 "--workers", "--threads"):
        assert flag in result.stdout


def test_a_bad_config_exits_2_listing_every_problem(tmp_path, tls):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("mode: strict\nexemptNamespaces: kube-system\nmutations: {addDNSEgress: true}\n")
    result = run_serve(["--cluster", "examples/cluster", "--config", str(cfg), *tls_args(tls)])
    assert result.returncode == 2
    err = result.stderr
    assert "Traceback" not in err
    assert "exemptNamespaces: must be a list of strings" in err
    assert "mutations.addDNSEgress: unknown key" in err
    assert str(cfg) in err


def test_a_bad_environment_override_exits_2(tls):
    result = run_serve(["--cluster", "examples/cluster", *tls_args(tls)], env={"NETPOL_GUARD_MODE": "loud"})
    assert result.returncode == 2 and "mode: must be 'enforce' or 'warn'" in result.stderr


def test_tls_is_required_without_dev():
    result = run_serve(["--cluster", "examples/cluster"])
    assert result.returncode == 2 and "TLS only" in result.stderr


def test_a_missing_or_mismatched_certificate_exits_2_naming_the_file(tmp_path, tls):
    result = run_serve(["--cluster", "examples/cluster", "--cert", str(tmp_path / "nope.crt"), "--key", tls.key])
    assert result.returncode == 2 and "nope.crt: no such file" in result.stderr
    other = make_certs(tmp_path / "other")
    result = run_serve(["--cluster", "examples/cluster", "--cert", tls.cert, "--key", other.key])
    assert result.returncode == 2 and "cannot use --cert" in result.stderr and "Traceback" not in result.stderr


def test_an_unreadable_cluster_snapshot_exits_2_naming_the_file(tmp_path, tls):
    bad = tmp_path / "cluster.yaml"
    bad.write_text("kind: Namespace\nmetadata: {name: [oops\n")
    result = run_serve(["--cluster", str(bad), *tls_args(tls)])
    assert result.returncode == 2 and str(bad) in result.stderr and "Traceback" not in result.stderr


def test_a_bad_bind_address_exits_2(tls):
    result = run_serve(["--cluster", "examples/cluster", "--cert", tls.cert, "--key", tls.key, "--bind", "8443"])
    assert result.returncode == 2 and "expected HOST:PORT" in result.stderr


def test_without_cluster_or_kubeconfig_serve_says_how_to_run(tmp_path, tls):
    result = run_serve(tls_args(tls), env={"KUBECONFIG": str(tmp_path / "missing"), "HOME": str(tmp_path),
                                           "KUBERNETES_SERVICE_HOST": ""})
    assert result.returncode == 2
    assert "--cluster PATH" in result.stderr and "Traceback" not in result.stderr


def test_an_invalid_admin_network_policy_in_the_snapshot_exits_2_naming_it(tmp_path, tls):
    bad = tmp_path / "anp.yaml"
    bad.write_text("apiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\n"
                   "metadata: {name: too-high}\nspec:\n  priority: 5000\n  subject: {namespaces: {}}\n")
    result = run_serve(["--cluster", "examples/cluster", "--cluster", str(bad), *tls_args(tls)])
    assert result.returncode == 2, result.stderr
    assert str(bad) in result.stderr and "too-high" in result.stderr and "Traceback" not in result.stderr


def test_the_snapshot_holds_its_admin_network_policies():
    from webhook.cluster.source import SnapshotSource
    source = SnapshotSource([str(REPO / "examples" / "cluster"), str(REPO / "examples" / "admin-policies")])
    names = sorted(p.name for p in source.view.admin_policies())
    assert "cluster-dns" in names and len(names) == source.admin_policies >= 3, names
