"""Self-managed certificates (certificates.selfManaged) at the edges that need no cluster: the
start-up errors of a configuration that cannot work, and the placeholder certificate served until
the first real one loads. The first install itself - the agent's Secret and caBundle, the
placeholder period, a renewal under continuous load - runs on the real API server:
tests/e2e/test_first_install.py (and the chart's own objects with a CA rotation:
tests/e2e/test_certificates.py).
"""
from __future__ import annotations

import ssl
import threading
import time

import yaml

NS = "guard-system"


def test_self_managed_without_pod_namespace_is_a_clear_start_up_error(tmp_path):
    from tests.server_fixture import run_serve

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"certificates": {"selfManaged": True}}))
    env = {"POD_NAMESPACE": ""}
    result = run_serve(["--config", str(config), "--cert", str(tmp_path / "tls.crt"),
                        "--key", str(tmp_path / "tls.key"), "--bind", "127.0.0.1:1"], env=env)
    assert result.returncode == 2
    assert "certificates.selfManaged needs POD_NAMESPACE" in result.stderr
    assert "Traceback" not in result.stderr


def test_without_self_management_a_missing_certificate_is_still_a_usage_error(tmp_path):
    from tests.server_fixture import run_serve

    result = run_serve(["--cluster", "examples/cluster", "--cert", str(tmp_path / "tls.crt"),
                        "--key", str(tmp_path / "tls.key"), "--bind", "127.0.0.1:1"])
    assert result.returncode == 2
    assert f"--cert {tmp_path / 'tls.crt'}: no such file" in result.stderr


def test_the_placeholder_is_served_only_until_the_first_certificate_loads(tmp_path):
    from tests.server_fixture import make_certs
    from webhook.admission.tls import PLACEHOLDER_NAME, ReloadingContext, write_placeholder

    def served_name(reloader) -> str:
        """The subject the reloader's current context presents in a real handshake."""
        import socket
        ctx = reloader.context()
        server_sock, client_sock = socket.socketpair()
        with server_sock, client_sock:
            done = threading.Thread(target=lambda: _handshake(ctx, server_sock), daemon=True)
            done.start()
            with ssl._create_unverified_context().wrap_socket(client_sock) as tls:
                der = tls.getpeercert(binary_form=True)
            done.join(5)
        from cryptography import x509
        return x509.load_der_x509_certificate(der).subject.rfc4514_string()

    (tmp_path / "p").mkdir()
    live = tmp_path / "live"
    reloader = ReloadingContext(str(live / "tls.crt"), str(live / "tls.key"),
                                placeholder=write_placeholder(str(tmp_path / "p")), waiting_for="the leader's Secret")
    assert PLACEHOLDER_NAME in served_name(reloader)
    ok, why = reloader.ready()
    assert not ok and why.startswith("waiting for the certificate:") and why.endswith("; the leader's Secret")
    assert reloader.seconds_until_expiry() is None  # no expiry metric for the placeholder

    make_certs(live, names=["real.example"])  # appears: loaded on the very next connection
    assert served_name(reloader) == "CN=real.example"
    assert reloader.ready() == (True, "certificate loaded")
    for name in ("tls.crt", "tls.key"):
        (live / name).unlink()
    time.sleep(reloader.check_interval)
    assert served_name(reloader) == "CN=real.example"  # the last good pair, never the placeholder again
    ok, why = reloader.ready()
    assert ok and why.startswith("serving the previous certificate")


def _handshake(ctx, sock) -> None:
    try:
        with ctx.wrap_socket(sock, server_side=True) as tls:
            tls.recv(1)
    except (OSError, ssl.SSLError):
        pass


def test_self_managed_without_a_cluster_configuration_is_a_clear_start_up_error(tmp_path):
    from tests.server_fixture import run_serve

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"certificates": {"selfManaged": True}}))
    # no in-cluster service, no kubeconfig anywhere
    env = {"HOME": str(tmp_path), "KUBECONFIG": str(tmp_path / "none"), "KUBERNETES_SERVICE_HOST": "",
           "POD_NAMESPACE": NS}
    result = run_serve(["--cluster", "examples/cluster", "--config", str(config), "--cert", str(tmp_path / "tls.crt"),
                        "--key", str(tmp_path / "tls.key"), "--bind", "127.0.0.1:1"], env=env)
    assert result.returncode == 2
    assert "certificates.selfManaged needs the Kubernetes API" in result.stderr
    assert "Traceback" not in result.stderr
