"""TLS for the webhook: TLS 1.2 minimum, certificate hot reload, optional client certificates.

gunicorn asks its ``ssl_context`` hook for a context on every accepted connection;
``ReloadingContext.context()`` answers with a cached SSLContext and, at most once per
``check_interval`` seconds, looks at the files' identity (inode, size, mtime of what the
paths resolve to). When they changed it builds a new context; connections already open
keep the one they were accepted with, new connections get the new certificate. Nothing
restarts, so no request is dropped.

A Kubernetes Secret volume (the kubelet's atomic writer) updates its files by writing a
new hidden ``..<timestamp>`` directory and renaming a ``..data`` symlink onto it; our
paths (``tls.crt -> ..data/tls.crt``) then resolve to new inodes, so the identity check
sees the swap. If the swap happens between reading the certificate and the key (or the
files change while we load), the identity is read again after the load and the load
repeated, so we never keep a pair that mixes two versions. A pair that still fails to
load (half-written by hand, cert rotated before key) keeps the old context, is logged,
shown on /readyz, and retried at the next check.

Waiting for the first certificate (``placeholder``): with self-managed certificates the
pods start before the Secret exists. The server then listens with a throwaway
self-signed certificate (``write_placeholder``) that nobody trusts, so the kubelet's
HTTPS probes reach /healthz (200) and /readyz (503, saying what it waits for); the pod
stays out of the Service's endpoints, so the API server never sends a review to it.
The first real certificate replaces the placeholder for good. While waiting, the files
are looked at on every connection (not once per ``check_interval``), so when one worker
has loaded them and the pod turns ready, every worker serves them from its next
connection on.
"""
from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from typing import Optional

log = logging.getLogger(__name__)

PLACEHOLDER_CERT = "placeholder.crt"
PLACEHOLDER_KEY = "placeholder.key"
PLACEHOLDER_NAME = "netpol-guard-waiting-for-certificate.invalid"
MAX_LOAD_ATTEMPTS = 3  # a load that raced a symlink swap is repeated at once


def build_context(cert: str, key: str, client_ca: Optional[str] = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # A client that half-closes TCP without a TLS close_notify (its request cut off) can
    # still read the 400 that says so: OpenSSL 3 otherwise makes the missing close_notify a
    # fatal error and the answer is lost. No truncation risk: HTTP requests are framed by
    # Content-Length or chunked encoding, and a body that ends early is refused as such.
    ctx.options |= getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
    # No TLS 1.3 session tickets: the API server keeps its connections alive instead of
    # resuming sessions, and issuing the two default tickets was a third of the server's
    # CPU per handshake (~580 -> ~380 us, in-process with memory BIOs) - CPU that every new
    # connection, a stalled one included, costs the worker's I/O loop.
    ctx.num_tickets = 0
    ctx.load_cert_chain(certfile=cert, keyfile=key)
    if client_ca:
        ctx.load_verify_locations(cafile=client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def write_placeholder(directory: str) -> tuple[str, str]:
    """A self-signed certificate for a name nobody dials (1 day), written as
    placeholder.crt/.key into `directory`; served only until the real certificate loads."""
    from webhook import certs

    ca = certs.make_ca(common_name="netpol-guard placeholder (not trusted)", days=2)
    pair = certs.issue_serving_cert(ca, [PLACEHOLDER_NAME], days=1)
    cert_path, key_path = os.path.join(directory, PLACEHOLDER_CERT), os.path.join(directory, PLACEHOLDER_KEY)
    with open(cert_path, "wb") as fh:
        fh.write(certs.cert_to_pem(pair.cert))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(certs.key_to_pem(pair.key))
    return cert_path, key_path


class ReloadingContext:
    def __init__(self, cert: str, key: str, client_ca: Optional[str] = None, check_interval: float = 1.0,
                 placeholder: Optional[tuple[str, str]] = None, waiting_for: str = ""):
        """placeholder: (cert, key) to serve until the real pair first loads; waiting_for: what
        /readyz says meanwhile (e.g. which Secret the leader creates)."""
        self.cert, self.key, self.client_ca = cert, key, client_ca
        self.check_interval = check_interval
        self.placeholder, self.waiting_for = placeholder, waiting_for
        self._placeholder_ctx: Optional[ssl.SSLContext] = None
        self._lock = threading.Lock()
        self._ctx: Optional[ssl.SSLContext] = None
        self._identity: tuple = ()
        self._checked = float("-inf")
        self._failed_identity: Optional[tuple] = None  # the last identity that failed (logged once)
        self.error: Optional[str] = None
        self.loads = 0
        self.not_after = None  # the loaded certificate's notAfter (for the expiry metric)

    def _files(self) -> tuple[str, ...]:
        return (self.cert, self.key) + ((self.client_ca,) if self.client_ca else ())

    def _current_identity(self) -> tuple:
        out = []
        for path in self._files():
            try:
                st = os.stat(path)  # follows the ..data symlink: a swap gives new inodes
                out.append((st.st_ino, st.st_size, st.st_mtime_ns))
            except OSError:
                out.append(None)
        return tuple(out)

    def context(self) -> ssl.SSLContext:
        now = time.monotonic()
        # Until the first certificate is loaded, look at the files on every connection (a few
        # stat calls): once one worker has loaded them and answered /readyz 200, no other
        # worker may still hand the placeholder to the API server for a check_interval.
        if self._ctx is None or now - self._checked >= self.check_interval:
            with self._lock:
                if self._ctx is None or now - self._checked >= self.check_interval:
                    self._checked = now
                    identity = self._current_identity()
                    if identity != self._identity or self._ctx is None:
                        self._reload(identity)
        if self._ctx is not None:
            return self._ctx
        if self.placeholder is not None:
            return self._placeholder()
        raise ssl.SSLError(f"no usable certificate: {self.error}")

    def _placeholder(self) -> ssl.SSLContext:
        if self._placeholder_ctx is None:
            with self._lock:
                if self._placeholder_ctx is None:
                    self._placeholder_ctx = build_context(*self.placeholder)  # no client CA: probes have none
        return self._placeholder_ctx

    def _reload(self, identity: tuple) -> None:
        if self._ctx is None and identity == self._failed_identity:
            return  # still waiting on the same (missing or unusable) files: nothing new to try
        for _ in range(MAX_LOAD_ATTEMPTS):
            try:
                ctx = build_context(self.cert, self.key, self.client_ca)
                error = None
            except (OSError, ssl.SSLError, ValueError) as exc:
                ctx, error = None, f"cannot load {self.cert} / {self.key}: {exc}"
            after = self._current_identity()
            if after == identity:
                break
            identity = after  # the files changed while we read them (a symlink swap): read again
        if ctx is None:
            self.error = error
            if identity != self._failed_identity:
                self._failed_identity = identity
                if self._ctx is not None:
                    log.error("TLS reload failed, keeping the previous certificate: %s", error)
                elif self.placeholder is not None:
                    log.warning("waiting for the TLS certificate (%s)%s", error,
                                f"; {self.waiting_for}" if self.waiting_for else "")
                else:
                    log.error("TLS certificate not loaded: %s", error)
            return
        log.info("TLS certificate %s from %s", "reloaded" if self._ctx is not None else "loaded", self.cert)
        self._ctx, self._identity, self.error, self._failed_identity = ctx, identity, None, None
        self.not_after = _not_after(self.cert)
        self.loads += 1

    def seconds_until_expiry(self) -> Optional[float]:
        if self.not_after is None:
            return None
        import datetime as dt
        return (self.not_after - dt.datetime.now(dt.timezone.utc)).total_seconds()

    def ready(self) -> tuple[bool, str]:
        """(loaded, reason). Loads if nothing was loaded yet."""
        try:
            self.context()
        except ssl.SSLError:
            pass
        if self._ctx is None:
            why = self.error or "certificate not loaded"
            if self.placeholder is not None:
                why = f"waiting for the certificate: {why}" + (f"; {self.waiting_for}" if self.waiting_for else "")
            return False, why
        if self.error:
            # serving the previous certificate is still serving: ready, but say so
            return True, f"serving the previous certificate; {self.error}"
        return True, "certificate loaded"


def _not_after(cert_path: str):
    from webhook.certs import CertificateError, load_cert_pem
    try:
        with open(cert_path, "rb") as fh:
            return load_cert_pem(fh.read()).not_valid_after_utc
    except (OSError, CertificateError):
        return None


_current: Optional[ReloadingContext] = None
_current_lock = threading.Lock()


def current(cert: Optional[str] = None, key: Optional[str] = None, client_ca: Optional[str] = None,
            check_interval: float = 1.0) -> Optional[ReloadingContext]:
    """This process's reloader (one per worker), created on first use."""
    global _current
    if _current is None and cert and key:
        with _current_lock:
            if _current is None:
                _current = ReloadingContext(cert, key, client_ca, check_interval)
    return _current


def gunicorn_ssl_context(conf, default_ssl_context_factory) -> ssl.SSLContext:
    """gunicorn's ``ssl_context`` hook: called for every accepted connection."""
    reloader = current(conf.certfile, conf.keyfile, conf.ca_certs)
    assert reloader is not None
    return reloader.context()
