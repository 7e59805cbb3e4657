"""Certificates: what `netpol-guard certs` writes, and that a TLS client really accepts it."""
from __future__ import annotations

import base64
import datetime as dt
import os
import socket
import ssl
import stat
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from webhook import certs
from webhook.cli import main

SERVICE, NAMESPACE = "netpol-guard", "guard-system"
EXPECTED_NAMES = [
    "netpol-guard",
    "netpol-guard.guard-system",
    "netpol-guard.guard-system.svc",
    "netpol-guard.guard-system.svc.cluster.local",
]


def run_certs(out, *extra):
    return main(["certs", "--service", SERVICE, "--namespace", NAMESPACE, "--out", str(out), *extra])


def load(path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


@pytest.fixture
def written(tmp_path):
    out = tmp_path / "certs"
    assert run_certs(out, "--days", "30") == 0
    return out


def test_writes_ca_cert_and_key_with_service_names(written):
    assert sorted(p.name for p in written.iterdir()) == ["ca.crt", "tls.crt", "tls.key"]
    cert = load(written / "tls.crt")
    assert certs.dns_names(cert) == EXPECTED_NAMES
    assert certs.is_signed_by(cert, load(written / "ca.crt"))
    ca_constraints = load(written / "ca.crt").extensions.get_extension_for_class(x509.BasicConstraints).value
    assert ca_constraints.ca is True
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False


def test_key_is_ecdsa_p256_and_matches_the_certificate(written):
    key = certs.load_key_pem((written / "tls.key").read_bytes())
    assert isinstance(key.curve, ec.SECP256R1)
    assert certs.public_keys_match(load(written / "tls.crt"), key)


def test_key_file_is_private(written):
    assert stat.S_IMODE(os.stat(written / "tls.key").st_mode) == 0o600


def test_key_file_is_private_even_with_a_permissive_umask(tmp_path):
    old = os.umask(0)
    try:
        assert run_certs(tmp_path / "o") == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "o" / "tls.key").st_mode) == 0o600


def test_validity_is_the_requested_number_of_days(written):
    cert = load(written / "tls.crt")
    remaining = cert.not_valid_after_utc - dt.datetime.now(dt.timezone.utc)
    assert dt.timedelta(days=29, hours=23) < remaining <= dt.timedelta(days=30)
    # not before is slightly in the past so a replica with a lagging clock accepts it
    assert cert.not_valid_before_utc < dt.datetime.now(dt.timezone.utc)
    assert load(written / "ca.crt").not_valid_after_utc >= cert.not_valid_after_utc


def test_refuses_to_overwrite_without_force(written, capsys):
    before = {p.name: p.read_bytes() for p in written.iterdir()}
    assert run_certs(written) == 2
    assert "already exists" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in written.iterdir()} == before

    assert run_certs(written, "--force") == 0
    after = {p.name: p.read_bytes() for p in written.iterdir()}
    assert all(after[name] != before[name] for name in before)
    assert stat.S_IMODE(os.stat(written / "tls.key").st_mode) == 0o600


def test_refuses_when_only_one_file_exists_and_writes_nothing(tmp_path):
    (tmp_path / "tls.key").write_text("mine")
    assert run_certs(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tls.key"]
    assert (tmp_path / "tls.key").read_text() == "mine"


@pytest.mark.parametrize("args, message", [
    (["--service", "Web_Hook", "--namespace", "ns"], "service name 'Web_Hook'"),
    (["--service", "web", "--namespace=ns-"], "namespace name 'ns-'"),
    (["--service", "web", "--namespace", "ns", "--days", "0"], "from 1 to 36,500"),
    (["--service", "web", "--namespace", "ns", "--days", "400", "--ca-days", "100"], "after the CA expires"),
])
def test_bad_input_is_a_usage_error_with_a_clear_message(tmp_path, capsys, args, message):
    assert main(["certs", "--out", str(tmp_path / "x"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def _serve_once(context: ssl.SSLContext, listener: socket.socket, result: dict) -> None:
    conn, _ = listener.accept()
    try:
        with context.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(b"hello " + tls.recv(5))
    except (ssl.SSLError, OSError) as exc:
        result["server_error"] = exc


def _handshake(directory, server_hostname: str) -> bytes:
    """One TLS exchange with a real python ssl server on 127.0.0.1 using the written files."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(directory / "tls.crt", directory / "tls.key")
    client_ctx = ssl.create_default_context(cafile=str(directory / "ca.crt"))
    result: dict = {}
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)
        thread = threading.Thread(target=_serve_once, args=(server_ctx, listener, result), daemon=True)
        thread.start()
        try:
            with socket.create_connection(listener.getsockname(), timeout=10) as raw:
                with client_ctx.wrap_socket(raw, server_hostname=server_hostname) as tls:
                    tls.sendall(b"world")
                    return tls.recv(64)
        finally:
            thread.join(timeout=10)


def test_tls_handshake_verifies_against_the_ca_with_the_service_name(written):
    assert _handshake(written, f"{SERVICE}.{NAMESPACE}.svc") == b"hello world"


def test_tls_handshake_rejects_a_name_not_in_the_certificate(written):
    with pytest.raises(ssl.SSLCertVerificationError, match="match|mismatch"):
        _handshake(written, f"{SERVICE}.other-namespace.svc")


def test_tls_handshake_rejects_a_different_ca(written, tmp_path):
    other = tmp_path / "other"
    assert run_certs(other) == 0
    (written / "ca.crt").write_bytes((other / "ca.crt").read_bytes())
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(written, f"{SERVICE}.{NAMESPACE}.svc")


# --- the pure API the in-cluster self-management builds on --------------------------------

def test_bundle_round_trips_through_pem_and_reports_expiry():
    now = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
    ca = certs.make_ca(days=100, now=now)
    serving = certs.issue_serving_cert(ca, certs.service_dns_names("s", "n"), days=10, now=now)
    bundle = certs.TLSBundle.from_pairs(ca, serving)
    again = certs.TLSBundle.from_pem(bundle.ca_pem, bundle.cert_pem, bundle.key_pem)
    assert again.serving_cert() == serving.cert
    assert certs.seconds_until_expiry(serving.cert, now) == 10 * 86400
    assert not certs.expires_within(serving.cert, dt.timedelta(days=9), now)
    assert certs.expires_within(serving.cert, dt.timedelta(days=10), now)
    assert certs.expires_within(serving.cert, dt.timedelta(0), now + dt.timedelta(days=11))


def test_ca_rotation_bundle_trusts_both_cas():
    old, new = certs.make_ca(), certs.make_ca()
    serving = certs.issue_serving_cert(new, ["a"])
    bundle = certs.TLSBundle.from_pairs(new, serving, extra_cas=[old.cert])
    assert bundle.ca_certs() == [new.cert, old.cert]
    assert certs.is_signed_by(serving.cert, new.cert)
    assert not certs.is_signed_by(serving.cert, old.cert)


def test_mismatched_key_and_garbage_pem_are_clear_errors():
    ca = certs.make_ca()
    one, two = (certs.issue_serving_cert(ca, ["a"]) for _ in range(2))
    with pytest.raises(certs.CertificateError, match="does not belong"):
        certs.TLSBundle.from_pem(certs.cert_to_pem(ca.cert), certs.cert_to_pem(one.cert), certs.key_to_pem(two.key))
    with pytest.raises(certs.CertificateError, match="tls.crt"):
        certs.TLSBundle.from_pem(b"x", b"not pem", b"y")


def test_read_bundle_reads_what_write_bundle_wrote(tmp_path):
    bundle = certs.generate_service_bundle("s", "n")
    certs.write_bundle(bundle, str(tmp_path))
    assert certs.read_bundle(str(tmp_path)) == bundle
    with pytest.raises(certs.CertificateError, match="cannot read"):
        certs.read_bundle(str(tmp_path / "missing"))


def test_secret_data_round_trip_and_clear_errors():
    bundle = certs.generate_service_bundle("s", "n")
    data = bundle.secret_data()
    assert set(data) == {"ca.crt", "tls.crt", "tls.key"}
    assert certs.TLSBundle.from_secret_data(data) == bundle
    assert base64.b64decode(bundle.ca_bundle_base64()) == bundle.ca_pem
    with pytest.raises(certs.CertificateError, match=r"guard/tls: data.tls.key is missing"):
        certs.TLSBundle.from_secret_data({**data, "tls.key": ""}, secret="guard/tls")
    with pytest.raises(certs.CertificateError, match=r"data.ca.crt is not base64"):
        certs.TLSBundle.from_secret_data({**data, "ca.crt": "%%%"})
    with pytest.raises(certs.CertificateError, match="missing"):
        certs.TLSBundle.from_secret_data(None)


def test_rotation_bundle_keeps_valid_previous_cas_once_and_drops_expired_ones():
    now = dt.datetime(2030, 6, 1, tzinfo=dt.timezone.utc)
    expired = certs.make_ca(days=1, now=now - dt.timedelta(days=10))
    old = certs.make_ca(days=365, now=now - dt.timedelta(days=300))
    new = certs.make_ca(now=now)
    bundle = certs.rotation_ca_bundle(new.cert, [old.cert, expired.cert, old.cert, new.cert], now=now)
    assert bundle == [new.cert, old.cert]


def test_a_client_trusting_the_rotation_bundle_accepts_old_and_new_certificates(tmp_path):
    old, new = certs.make_ca(), certs.make_ca()
    names = certs.service_dns_names(SERVICE, NAMESPACE)
    ca_pem = certs.certs_to_pem(certs.rotation_ca_bundle(new.cert, [old.cert]))
    for i, ca in enumerate((old, new)):
        directory = tmp_path / str(i)
        bundle = certs.TLSBundle.from_pairs(ca, certs.issue_serving_cert(ca, names))
        certs.write_bundle(certs.TLSBundle(ca_pem, bundle.cert_pem, bundle.key_pem), str(directory))
        assert _handshake(directory, f"{SERVICE}.{NAMESPACE}.svc") == b"hello world"
