"""What the self-managed certificate Secret and the webhooks' caBundle should hold: pure.

Input: the Secret's ``data`` as read (or None when there is none), the settings, the
time, and (for a CA rotation in progress) what the replicas serve. Output: a Plan,
the Secret data to write (or None: leave it) and the CA bundle every webhook must
carry. No I/O, so every case (missing, corrupt, near expiry, wrong names, rotation)
is tested with plain values and an injected ``now``.

The Secret (type kubernetes.io/tls) holds:

    ca.crt   the trusted CAs, PEM: the active CA first, then older CAs still trusted
             while a CA rotation rolls out (this is also the webhooks' caBundle)
    ca.key   the active CA's key (not mounted into the pods by the chart)
    tls.crt  the serving certificate, signed by the active CA
    tls.key  its key

Order of a CA rotation (one pass creates the new CA and the serving certificate it
signs; the API layer writes the webhooks' caBundle before the Secret, so the API
server trusts the new CA before any replica can serve the new certificate):

    1. trust = [new, old]; serving cert signed by new
    2. replicas pick up the Secret (kubelet volume update, hot reload); until every
       ready replica is seen serving a certificate signed by new, trust stays [new, old]
    3. trust = [new]
"""
from __future__ import annotations

import base64
import binascii
import datetime as dt
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from webhook import certs
from webhook.certs import CA_FILE, CA_KEY_FILE, CERT_FILE, KEY_FILE, CertificateError, KeyPair

SECRET_KEYS = (CA_FILE, CA_KEY_FILE, CERT_FILE, KEY_FILE)
ONE_DAY = dt.timedelta(days=1)


@dataclass(frozen=True)
class Settings:
    """certificates.* of the configuration, plus where we run."""

    service: str
    namespace: str
    validity_days: int = certs.DEFAULT_SERVING_DAYS
    ca_validity_days: int = certs.DEFAULT_CA_DAYS
    renew_before_days: int = 30

    @classmethod
    def from_config(cls, config, namespace: str) -> "Settings":
        c = config.certificates
        return cls(service=c.serviceName, namespace=namespace, validity_days=c.validityDays,
                   ca_validity_days=c.caValidityDays, renew_before_days=c.renewBeforeDays)

    @property
    def dns_names(self) -> list[str]:
        return certs.service_dns_names(self.service, self.namespace)

    @property
    def renew_window(self) -> dt.timedelta:
        return dt.timedelta(days=self.renew_before_days)


@dataclass(frozen=True)
class Served:
    """What one ready replica presented in a TLS handshake (cert None: could not tell)."""

    replica: str
    cert: Optional[x509.Certificate] = None
    error: str = ""


@dataclass(frozen=True)
class Plan:
    secret_data: Optional[dict[str, str]]  # base64 data to write; None: the Secret is right
    trust: tuple[x509.Certificate, ...]  # active CA first
    active_ca: x509.Certificate
    serving_cert: x509.Certificate
    reasons: tuple[str, ...] = ()  # why something changes, one log line each
    problems: tuple[str, ...] = ()  # what was wrong with the Secret as found

    @property
    def ca_bundle_pem(self) -> bytes:
        return certs.certs_to_pem(self.trust)

    @property
    def ca_bundle_base64(self) -> str:
        """The value for every webhook's clientConfig.caBundle."""
        return base64.b64encode(self.ca_bundle_pem).decode("ascii")

    @property
    def rotation_in_progress(self) -> bool:
        """Older CAs are still trusted: the replicas must be checked before dropping them."""
        return len(self.trust) > 1


# --- reading the Secret, part by part ---------------------------------------------------

@dataclass
class _Found:
    trust: list[x509.Certificate] = field(default_factory=list)
    ca_key: Optional[ec.EllipticCurvePrivateKey] = None
    cert: Optional[x509.Certificate] = None
    key: Optional[ec.EllipticCurvePrivateKey] = None
    problems: list[str] = field(default_factory=list)


def _decode(data: Mapping[str, str], name: str, where: str, problems: list[str]) -> Optional[bytes]:
    value = data.get(name)
    if not value:
        problems.append(f"{where}: data.{name} is missing")
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError, TypeError):
        problems.append(f"{where}: data.{name} is not base64")
        return None


def _read_secret(data: Mapping[str, str], where: str) -> _Found:
    """Every part that is usable, and a problem line for every part that is not: a Secret
    with a good CA but a garbled tls.crt keeps its CA."""
    found = _Found()
    raw = {name: _decode(data, name, where, found.problems) for name in SECRET_KEYS}

    def attempt(fn, blob: Optional[bytes], name: str):
        if blob is None:
            return None
        try:
            return fn(blob, what=f"{where}: data.{name}")
        except CertificateError as exc:
            found.problems.append(str(exc))
            return None

    found.trust = attempt(certs.load_certs_pem, raw[CA_FILE], CA_FILE) or []
    found.ca_key = attempt(certs.load_key_pem, raw[CA_KEY_FILE], CA_KEY_FILE)
    found.cert = attempt(certs.load_cert_pem, raw[CERT_FILE], CERT_FILE)
    found.key = attempt(certs.load_key_pem, raw[KEY_FILE], KEY_FILE)
    return found


def _active_ca(found: _Found, where: str) -> Optional[KeyPair]:
    """The trusted CA whose key we hold (it signs serving certificates)."""
    if found.ca_key is None or not found.trust:
        return None
    for ca in found.trust:
        if certs.public_keys_match(ca, found.ca_key):
            return KeyPair(cert=ca, key=found.ca_key)
    found.problems.append(f"{where}: data.{CA_KEY_FILE} belongs to none of the CAs in data.{CA_FILE}")
    return None


def _serving_problem(found: _Found, ca: x509.Certificate, settings: Settings, now: dt.datetime) -> Optional[str]:
    """Why the serving certificate must be re-issued, or None when it is fine."""
    if found.cert is None or found.key is None:
        return "the serving certificate or its key is missing or unreadable"
    if not certs.public_keys_match(found.cert, found.key):
        return "tls.key does not belong to tls.crt"
    if not certs.is_signed_by(found.cert, ca):
        return "tls.crt is not signed by the active CA"
    if sorted(certs.dns_names(found.cert)) != sorted(settings.dns_names):
        return (f"tls.crt names {certs.dns_names(found.cert)}, the service needs {settings.dns_names}")
    if certs.expires_within(found.cert, settings.renew_window, now):
        return (f"tls.crt expires {found.cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}, "
                f"within renewBeforeDays ({settings.renew_before_days})")
    return None


def _issue(ca: KeyPair, settings: Settings, now: dt.datetime) -> KeyPair:
    # Never outlive the CA: cap the validity at the CA's remaining whole days. The CA is
    # rotated (below) before its remaining life drops under a day, so this stays >= 1.
    remaining_days = int((ca.cert.not_valid_after_utc - now) / ONE_DAY)
    days = max(1, min(settings.validity_days, remaining_days))
    return certs.issue_serving_cert(ca, settings.dns_names, days=days, now=now)


def _secret_data(trust: Sequence[x509.Certificate], ca: KeyPair, serving: KeyPair) -> dict[str, str]:
    pems = {
        CA_FILE: certs.certs_to_pem(trust),
        CA_KEY_FILE: certs.key_to_pem(ca.key),
        CERT_FILE: certs.cert_to_pem(serving.cert),
        KEY_FILE: certs.key_to_pem(serving.key),
    }
    return {name: base64.b64encode(pem).decode("ascii") for name, pem in pems.items()}


def _same_data(current: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    def decoded(value):
        try:
            return base64.b64decode(value or "", validate=True)
        except (binascii.Error, ValueError, TypeError):
            return None
    return all(decoded(current.get(k)) == decoded(v) for k, v in wanted.items())


# --- the decision -----------------------------------------------------------------------

def plan_certificates(secret_data: Optional[Mapping[str, str]], settings: Settings, now: dt.datetime, *,
                      webhook_cas: Sequence[x509.Certificate] = (),
                      secret_name: str = "Secret") -> Plan:
    """The Secret's next content and the CA bundle, from the Secret as found.

    secret_data None: no Secret. webhook_cas: the CAs the webhooks trust now; when the
    Secret is missing or its CA unusable they stay trusted next to the new CA until the
    replicas serve the new certificate (a replica may still serve one they signed).
    """
    if now.tzinfo is None:
        raise CertificateError("now must be timezone-aware")
    where = f"Secret {settings.namespace}/{secret_name}"
    reasons: list[str] = []
    found = _read_secret(secret_data, where) if secret_data is not None else _Found()
    ca = _active_ca(found, where) if secret_data is not None else None
    previous = list(found.trust)

    if secret_data is None:
        reasons.append(f"{where} does not exist: creating a CA and a serving certificate")
        previous += list(webhook_cas)
    elif ca is None:
        details = "; ".join(p.removeprefix(f"{where}: ") for p in found.problems) or "unknown"
        reasons.append(f"{where} has no usable CA ({details}): "
                       "replacing it with a new CA and serving certificate")
        previous += list(webhook_cas)
    elif certs.expires_within(ca.cert, max(settings.renew_window, ONE_DAY), now):
        reasons.append(f"{where}: the CA expires {ca.cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}, within "
                       f"renewBeforeDays ({settings.renew_before_days}): rotating the CA "
                       "(old and new trusted until every replica serves the new certificate)")

    if ca is None or reasons:
        ca = certs.make_ca(days=settings.ca_validity_days, now=now)
        serving = _issue(ca, settings, now)
        trust = certs.rotation_ca_bundle(ca.cert, previous, now)
    else:
        trust = certs.rotation_ca_bundle(ca.cert, previous, now)  # active first, expired CAs dropped
        problem = _serving_problem(found, ca.cert, settings, now)
        if problem:
            reasons.append(f"{where}: {problem}: issuing a new serving certificate from the same CA")
            serving = _issue(ca, settings, now)
        else:
            serving = KeyPair(cert=found.cert, key=found.key)

    wanted = _secret_data(trust, ca, serving)
    changed = secret_data is None or not _same_data(secret_data, wanted)
    if changed and not reasons:
        reasons.append(f"{where}: normalizing its data (CA order, expired CAs dropped, PEM form)")
    return Plan(secret_data=wanted if changed else None, trust=tuple(trust), active_ca=ca.cert,
                serving_cert=serving.cert, reasons=tuple(reasons), problems=tuple(found.problems))


def replicas_confirm(active_ca: x509.Certificate, served: Sequence[Served]) -> tuple[bool, str]:
    """Whether every ready replica serves a certificate signed by the active CA, and why not."""
    if not served:
        return False, "no ready replica to check"
    lagging = []
    for s in served:
        if s.cert is None:
            lagging.append(f"{s.replica} ({s.error or 'no certificate'})")
        elif not certs.is_signed_by(s.cert, active_ca):
            lagging.append(f"{s.replica} (serves {certs.fingerprint(s.cert)[:16]}, from an older CA)")
    if lagging:
        return False, "still waiting for " + ", ".join(lagging)
    return True, f"all {len(served)} ready replicas serve a certificate from the new CA"


def needs_replica_check(plan: Plan, secret_data: Optional[Mapping[str, str]]) -> bool:
    """Older CAs are trusted and the serving certificate in the Secret is the one the plan
    keeps: only then can the replicas' answer end the rotation."""
    if not plan.rotation_in_progress or secret_data is None:
        return False
    serving_b64 = base64.b64encode(certs.cert_to_pem(plan.serving_cert)).decode("ascii")
    return _same_data(secret_data, {CERT_FILE: serving_b64})


def finish_rotation(plan: Plan, secret_data: Optional[Mapping[str, str]], served: Sequence[Served]) -> tuple[Plan, str]:
    """Drop the older CAs once the replicas confirm; otherwise the plan unchanged.

    Only for a plan that issued nothing new in this pass: a certificate written just now
    cannot be served yet, and the check would only confirm what was there before.
    """
    if not needs_replica_check(plan, secret_data):
        return plan, ("" if not plan.rotation_in_progress else "the serving certificate changed in this pass")
    confirmed, why = replicas_confirm(plan.active_ca, served)
    if not confirmed:
        return plan, why
    base = dict(plan.secret_data or secret_data or {})
    base[CA_FILE] = base64.b64encode(certs.cert_to_pem(plan.active_ca)).decode("ascii")
    return Plan(secret_data={k: base[k] for k in SECRET_KEYS}, trust=(plan.active_ca,), active_ca=plan.active_ca,
                serving_cert=plan.serving_cert, reasons=plan.reasons + (f"CA rotation finished: {why}; "
                                                                       "trusting only the new CA",),
                problems=plan.problems), why


def cas_from_bundle(ca_bundle: Optional[str]) -> list[x509.Certificate]:
    """The certificates in a webhook's base64 caBundle; [] when empty or unreadable."""
    if not ca_bundle:
        return []
    try:
        return certs.load_certs_pem(base64.b64decode(ca_bundle, validate=True))
    except (binascii.Error, ValueError, CertificateError):
        return []
