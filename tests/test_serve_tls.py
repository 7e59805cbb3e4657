"""TLS of `netpol-guard serve`: certificate hot reload without dropping a request, TLS 1.2
minimum, client certificates (--client-ca), and --dev's self-signed certificate."""
from __future__ import annotations

import json
import os
import socket
import ssl
import threading
import time
import warnings
from pathlib import Path

import pytest

from tests.server_fixture import CertPaths, Client, make_certs, make_client_cert, serve  # noqa: F401
from webhook import certs as certlib

REPO = Path(__file__).resolve().parent.parent
REVIEW = json.loads((REPO / "examples" / "admission" / "create-denied.json").read_text())


def test_replacing_the_certificate_files_drops_no_request_and_new_connections_get_the_new_cert(serve, tmp_path):
    certs = make_certs(tmp_path / "tls")
    server = serve(["--cluster", "examples/cluster", "--workers", "2", "--threads", "2"], certs=certs)
    old_der = server.client().peer_certificate()

    # The client trusts the old and the new CA, as an API server does during a rotation.
    new_ca = certlib.make_ca(common_name="rotated-ca")
    new_bundle = certlib.TLSBundle.from_pairs(new_ca, certlib.issue_serving_cert(new_ca, ["localhost"]))
    both = tmp_path / "both-cas.crt"
    both.write_bytes(Path(certs.ca).read_bytes() + new_bundle.ca_pem)

    results: list[object] = []
    stop = threading.Event()

    def post_continuously(fresh_connection_every: int) -> None:
        client = Client(server.port, str(both))
        n = 0
        while not stop.is_set() and n < 5000:  # bounded
            if n % fresh_connection_every == 0:
                client.close()  # a new TLS handshake now and then, across the swap
            try:
                status, body = client.post_json("/validate", REVIEW)
                results.append(status if body["response"]["uid"] == REVIEW["request"]["uid"] else "bad uid")
            except Exception as exc:  # noqa: BLE001 - recorded and asserted on below
                results.append(repr(exc))
            n += 1
        client.close()

    threads = [threading.Thread(target=post_continuously, args=(k,)) for k in (1, 7, 1000)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        certlib.write_bundle(new_bundle, certs.directory, force=True)  # key first, then cert: as a Secret update
        deadline = time.monotonic() + 15
        new_der = old_der
        while time.monotonic() < deadline and new_der == old_der:
            time.sleep(0.2)
            new_der = Client(server.port, str(both)).peer_certificate()
        time.sleep(0.5)  # keep posting with the new certificate in place
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert new_der == certlib.load_cert_pem(new_bundle.cert_pem).public_bytes(
        certlib.serialization.Encoding.DER)
    failures = [r for r in results if r != 200]
    assert not failures, failures[:5]
    assert len(results) > 50
    assert server.alive()


def test_tls_below_1_2_is_refused(serve):
    server = serve(["--cluster", "examples/cluster", "--workers", "1"])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with socket.create_connection(("127.0.0.1", server.port), 10) as sock:
        with pytest.raises(ssl.SSLError) as exc:
            ctx.wrap_socket(sock)
    assert "PROTOCOL_VERSION" in str(exc.value).upper()  # the server's alert: protocol version
    ok = ssl.create_default_context(cafile=server.certs.ca)
    with socket.create_connection(("127.0.0.1", server.port), 10) as sock:
        with ok.wrap_socket(sock, server_hostname="localhost") as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_plain_http_gets_no_answer(serve):
    server = serve(["--cluster", "examples/cluster", "--workers", "1"])
    with socket.create_connection(("127.0.0.1", server.port), 10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(10)
        data = sock.recv(1024)
    assert b'"status":"ok"' not in data


def test_client_ca_requires_a_client_certificate_signed_by_it(serve, tmp_path):
    client = make_client_cert(tmp_path / "client")
    server = serve(["--cluster", "examples/cluster", "--workers", "1", "--client-ca", client.ca], client=client)  # ready check uses the client cert
    assert server.client().get("/healthz")[0] == 200
    anonymous = Client(server.port, server.certs.ca, client=None)
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        anonymous.get("/healthz")
    stranger = make_client_cert(tmp_path / "stranger", name="someone-else")
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        Client(server.port, server.certs.ca, client=stranger).get("/healthz")


def test_dev_makes_a_certificate_once_and_reuses_it(serve, tmp_path):
    cwd = tmp_path / "project"
    cwd.mkdir()
    dev = CertPaths(str(cwd / "certs"), str(cwd / "certs" / "ca.crt"), str(cwd / "certs" / "tls.crt"),
                    str(cwd / "certs" / "tls.key"))
    no_cluster = {"KUBECONFIG": str(tmp_path / "no-kubeconfig"), "HOME": str(tmp_path)}
    server = serve(["--dev", "--workers", "1"], certs=dev, pass_certs=False, cwd=str(cwd), env=no_cluster)
    assert "--dev with an empty cluster view" in server.log_text()
    # an empty view still knows what cluster DNS normally is: the policy is still denied
    status, body = server.post_json("/validate", REVIEW)
    assert status == 200 and "[dns-egress-missing]" in body["response"]["status"]["message"]
    first = Path(dev.cert).read_bytes()
    assert oct(os.stat(dev.key).st_mode & 0o777) == "0o600"
    server.stop()
    again = serve(["--dev", "--workers", "1"], certs=dev, pass_certs=False, cwd=str(cwd), env=no_cluster)
    assert Path(dev.cert).read_bytes() == first
    assert again.get("/readyz")[0] == 200
