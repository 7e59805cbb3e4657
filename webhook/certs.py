"""TLS material for the webhook: a private CA and a serving certificate for a Service.

The core functions are pure (objects and PEM bytes in, objects and PEM bytes out, no
file or network I/O) so the same code serves the `certs` command, `serve --dev`, and
the in-cluster self-management that keeps the bundle in a Secret:

    ca = make_ca()
    serving = issue_serving_cert(ca, service_dns_names("netpol-guard", "netpol-guard"))
    bundle = TLSBundle.from_pairs(ca, serving)        # PEM bytes: ca_pem, cert_pem, key_pem
    secret.data = bundle.secret_data()                 # base64, for a kubernetes.io/tls Secret
    webhook.clientConfig.caBundle = bundle.ca_bundle_base64()
    bundle = TLSBundle.from_secret_data(secret.data)   # back, checked
    if expires_within(bundle.serving_cert(), timedelta(days=30)): ...issue a new one...
    rotation_ca_bundle(new_ca.cert, bundle.ca_certs())  # trust old and new CA while rolling

Only `write_bundle` and `read_bundle` touch the file system.

Keys are ECDSA P-256 (small, fast handshakes, accepted by every API server); the
signature hash is SHA-256.
"""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import ipaddress
import os
import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from webhook import safewrite
from webhook.bounded_text import quoted

CA_FILE, CERT_FILE, KEY_FILE = "ca.crt", "tls.crt", "tls.key"
# The CA's private key, kept only in the self-managed Secret (the chart does not mount it
# into the pods): the elected replica needs it to re-issue the serving certificate.
CA_KEY_FILE = "ca.key"
DEFAULT_CA_COMMON_NAME = "netpol-guard-ca"
DEFAULT_SERVING_DAYS = 365
DEFAULT_CA_DAYS = 3650
# Backdate notBefore a little: a replica or API server whose clock is slightly behind
# the signer's must not see a certificate that is "not yet valid".
CLOCK_SKEW = dt.timedelta(minutes=5)

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class CertificateError(ValueError):
    """Unusable certificate input (names, validity, PEM data), with a message saying which."""


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, as cryptography objects."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class TLSBundle:
    """The three PEM blobs a webhook needs: the CA (for caBundle), the serving cert and its key.

    ``ca_pem`` may hold more than one CA certificate (during a CA rotation the old and
    the new CA are both trusted); the first one is the CA that signed ``cert_pem``.
    """

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes

    @classmethod
    def from_pairs(cls, ca: KeyPair, serving: KeyPair, extra_cas: Sequence[x509.Certificate] = ()) -> "TLSBundle":
        return cls(
            ca_pem=certs_to_pem([ca.cert, *extra_cas]),
            cert_pem=cert_to_pem(serving.cert),
            key_pem=key_to_pem(serving.key),
        )

    @classmethod
    def from_pem(cls, ca_pem: bytes, cert_pem: bytes, key_pem: bytes) -> "TLSBundle":
        """Parse-check PEM data (e.g. read from a Secret); raises CertificateError if unusable."""
        bundle = cls(ca_pem=ca_pem, cert_pem=cert_pem, key_pem=key_pem)
        cert, key = bundle.serving_cert(), bundle.serving_key()
        if not public_keys_match(cert, key):
            raise CertificateError("tls.key does not belong to the certificate in tls.crt")
        bundle.ca_certs()
        return bundle

    # Kubernetes forms: a kubernetes.io/tls Secret's data and a webhook's caBundle.

    def secret_data(self) -> dict[str, str]:
        """The base64 `data` of a kubernetes.io/tls Secret, with ca.crt kept alongside."""
        return {name: base64.b64encode(pem).decode("ascii")
                for name, pem in ((CA_FILE, self.ca_pem), (CERT_FILE, self.cert_pem), (KEY_FILE, self.key_pem))}

    @classmethod
    def from_secret_data(cls, data: Mapping[str, str] | None, secret: str = "Secret") -> "TLSBundle":
        """Back from a Secret's base64 `data`; raises CertificateError naming the missing or bad key."""
        data = data or {}
        pems = {}
        for name in (CA_FILE, CERT_FILE, KEY_FILE):
            if not data.get(name):
                raise CertificateError(f"{secret}: data.{name} is missing")
            try:
                pems[name] = base64.b64decode(data[name], validate=True)
            except (binascii.Error, ValueError):
                raise CertificateError(f"{secret}: data.{name} is not base64") from None
        return cls.from_pem(pems[CA_FILE], pems[CERT_FILE], pems[KEY_FILE])

    def ca_bundle_base64(self) -> str:
        """The value for a webhook configuration's clientConfig.caBundle."""
        return base64.b64encode(self.ca_pem).decode("ascii")

    def ca_certs(self) -> list[x509.Certificate]:
        return load_certs_pem(self.ca_pem, what=CA_FILE)

    def serving_cert(self) -> x509.Certificate:
        return load_cert_pem(self.cert_pem, what=CERT_FILE)

    def serving_key(self) -> ec.EllipticCurvePrivateKey:
        return load_key_pem(self.key_pem, what=KEY_FILE)


# --- names ------------------------------------------------------------------------------

def service_dns_names(service: str, namespace: str) -> list[str]:
    """The names a client may use for a Service; the API server uses NAME.NS.svc."""
    for what, value in (("service", service), ("namespace", namespace)):
        if not isinstance(value, str) or len(value) > 63 or not _DNS_LABEL.match(value):
            raise CertificateError(
                f"{what} name {value!r} is not a valid DNS label "
                "(lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63)"
            )
    return [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    ]


# --- building ---------------------------------------------------------------------------

def _utcnow(now: dt.datetime | None) -> dt.datetime:
    now = now or dt.datetime.now(dt.timezone.utc)
    if now.tzinfo is None:
        raise CertificateError("now must be timezone-aware")
    return now


# 100 years: far past any certificate anyone rotates, and far inside what a date can hold
# (datetime ends at year 9999; timedelta() of a huge count raises OverflowError).
MAX_DAYS = 36_500


def _check_days(days: int, what: str) -> None:
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
        raise CertificateError(f"{what} must be a whole number of days from 1 to {MAX_DAYS:,} (100 years), "
                               f"got {quoted(days)}")


def new_private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def make_ca(common_name: str = DEFAULT_CA_COMMON_NAME, days: int = DEFAULT_CA_DAYS,
            now: dt.datetime | None = None) -> KeyPair:
    """A self-signed CA that may sign serving certificates (and nothing below them)."""
    _check_days(days, "CA validity")
    now = _utcnow(now)
    key = new_private_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert=cert, key=key)


def issue_serving_cert(ca: KeyPair, dns_names: Sequence[str], days: int = DEFAULT_SERVING_DAYS,
                       now: dt.datetime | None = None, ip_addresses: Sequence[str] = ()) -> KeyPair:
    """A TLS server certificate for dns_names, signed by ca.

    Refuses a validity that would outlive the CA: such a certificate stops verifying
    when the CA expires, which is a surprise nobody wants at 3 a.m.
    """
    _check_days(days, "certificate validity")
    if not dns_names:
        raise CertificateError("a serving certificate needs at least one DNS name")
    now = _utcnow(now)
    not_after = now + dt.timedelta(days=days)
    if not_after > ca.cert.not_valid_after_utc:
        raise CertificateError(
            f"certificate validity of {days} days would end after the CA expires "
            f"({ca.cert.not_valid_after_utc:%Y-%m-%d}); use a shorter validity or a longer-lived CA"
        )
    key = new_private_key()
    # Subject CN: the name the API server dials (NAME.NS.svc) when we have it, for humans
    # reading `openssl x509 -text`; verification uses the SANs only.
    common_name = next((n for n in dns_names if n.endswith(".svc")), dns_names[0])
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName(n) for n in dns_names]
            + [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=False, crl_sign=False,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.cert.public_key()), critical=False
        )
        .sign(ca.key, hashes.SHA256())
    )
    return KeyPair(cert=cert, key=key)


def generate_service_bundle(service: str, namespace: str, days: int = DEFAULT_SERVING_DAYS,
                            ca_days: int | None = None, now: dt.datetime | None = None) -> TLSBundle:
    """A fresh CA plus a serving certificate for a Service, as PEM."""
    names = service_dns_names(service, namespace)
    _check_days(days, "certificate validity")  # first: the CA's days default to it
    # one moment for both, whole seconds as X.509 stores them: a CA of as many days as the
    # certificate (--days above the CA's default) must not end a few microseconds before it
    now = _utcnow(now).replace(microsecond=0)
    ca = make_ca(days=ca_days if ca_days is not None else max(DEFAULT_CA_DAYS, days), now=now)
    return TLSBundle.from_pairs(ca, issue_serving_cert(ca, names, days=days, now=now))


# --- inspecting -------------------------------------------------------------------------

def dns_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.DNSName)


def seconds_until_expiry(cert: x509.Certificate, now: dt.datetime | None = None) -> float:
    """Negative once expired; what the expiry metric exports."""
    return (cert.not_valid_after_utc - _utcnow(now)).total_seconds()


def expires_within(cert: x509.Certificate, window: dt.timedelta, now: dt.datetime | None = None) -> bool:
    """True when the certificate is expired or will be within window: time to rotate."""
    return seconds_until_expiry(cert, now) <= window.total_seconds()


def rotation_ca_bundle(new_ca: x509.Certificate, previous: Iterable[x509.Certificate],
                       now: dt.datetime | None = None) -> list[x509.Certificate]:
    """The CAs to trust during a CA rotation: the new CA first, then every previous CA
    that is still valid (so replicas still serving a certificate from the old CA keep
    working until they reload). Duplicates and expired CAs are dropped."""
    now = _utcnow(now)
    bundle, seen = [new_ca], {new_ca.fingerprint(hashes.SHA256())}
    for ca in previous:
        fingerprint = ca.fingerprint(hashes.SHA256())
        if fingerprint not in seen and ca.not_valid_after_utc > now:
            bundle.append(ca)
            seen.add(fingerprint)
    return bundle


def public_keys_match(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> bool:
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return cert.public_key().public_bytes(*fmt) == key.public_key().public_bytes(*fmt)


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint, hex: how logs and the replica check name a certificate."""
    return cert.fingerprint(hashes.SHA256()).hex()


def is_signed_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    """Whether ca_cert's key signed cert (signature check only; no expiry or name checks)."""
    if cert.issuer != ca_cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


# --- PEM --------------------------------------------------------------------------------

def cert_to_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def certs_to_pem(certs: Iterable[x509.Certificate]) -> bytes:
    """Concatenated PEM, the format of a webhook caBundle (after base64) and of ca.crt."""
    return b"".join(cert_to_pem(c) for c in certs)


def key_to_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    # Unencrypted PKCS#8: what Kubernetes TLS Secrets, gunicorn and ssl all read.
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_certs_pem(data: bytes, what: str = "certificate data") -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise CertificateError(f"{what}: not PEM certificate data ({exc})") from None
    if not certs:
        raise CertificateError(f"{what}: no certificate found")
    return certs


def load_cert_pem(data: bytes, what: str = "certificate") -> x509.Certificate:
    return load_certs_pem(data, what)[0]


def load_key_pem(data: bytes, what: str = "private key") -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise CertificateError(f"{what}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertificateError(f"{what}: expected an ECDSA key, got {type(key).__name__}")
    return key


# --- files (the only I/O in this module) ----------------------------------------------

def bundle_paths(out_dir: str) -> dict[str, str]:
    return {name: os.path.join(out_dir, name) for name in (CA_FILE, CERT_FILE, KEY_FILE)}


def _write_new(path: str, data: bytes, mode: int) -> None:
    # O_EXCL | O_NOFOLLOW: fail rather than overwrite or write through a symlink; the mode
    # is applied at creation, so the key is never readable by others.
    safewrite.create_file(path, data, mode)


def _replace(path: str, data: bytes, mode: int) -> None:
    # A temporary file of a random name in the directory, renamed over the target: a
    # server hot-reloading the files never reads a half-written file, and a symlink
    # planted at the target (or at any temporary name) is replaced, not followed.
    safewrite.replace_file(path, data, mode)


def write_bundle(bundle: TLSBundle, out_dir: str, force: bool = False) -> dict[str, str]:
    """Write ca.crt, tls.crt and tls.key (mode 0600) into out_dir; returns the paths.

    Without force, raises FileExistsError naming the first file that already exists,
    before anything is written. The key is written first and the certificate after it,
    so a reloader watching tls.crt sees the matching key already in place.
    """
    paths = bundle_paths(out_dir)
    if not force:
        for path in paths.values():
            if os.path.lexists(path):
                raise FileExistsError(path)
    os.makedirs(out_dir, exist_ok=True)
    write = _replace if force else _write_new
    write(paths[KEY_FILE], bundle.key_pem, 0o600)
    write(paths[CERT_FILE], bundle.cert_pem, 0o644)
    write(paths[CA_FILE], bundle.ca_pem, 0o644)
    return paths


def read_bundle(directory: str) -> TLSBundle:
    """Read and check the three files from a directory (e.g. certs/ or a mounted Secret)."""
    data = {}
    for name, path in bundle_paths(directory).items():
        try:
            with open(path, "rb") as fh:
                data[name] = fh.read()
        except OSError as exc:
            raise CertificateError(f"{path}: cannot read: {exc.strerror}") from None
    return TLSBundle.from_pem(data[CA_FILE], data[CERT_FILE], data[KEY_FILE])


def certificate_file_seconds_remaining(path: str, now: dt.datetime | None = None) -> float | None:
    """Seconds until the (first) certificate in a PEM file expires, negative once expired;
    None when the file is missing or not a certificate.

    For the expiry gauge on /metrics: pass the --cert file the server serves. A scrape
    must never fail because the file is mid-rotation, hence None instead of an error.
    """
    try:
        with open(path, "rb") as fh:
            data = fh.read()
        return seconds_until_expiry(load_cert_pem(data, what=path), now)
    except (OSError, CertificateError):
        return None
