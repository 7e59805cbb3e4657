"""TLS for the webhook: TLS 1.2 minimum, certificate hot reload, optional client certificates.

gunicorn asks its ``ssl_context`` hook for a context on every accepted connection;
``ReloadingContext.context()`` answers with a cached SSLContext and, at most once per
``check_interval`` seconds, looks at the files' identity (inode, size, mtime; a
Kubernetes Secret volume swaps a symlink, which changes all three). When they changed
it builds a new context; connections already open keep the one they were accepted
with, new connections get the new certificate. Nothing restarts, so no request is
dropped. A half-written or mismatched pair (cert rotated before key) fails to load:
the old context is kept, the error is logged and shown on /readyz, and the load is
retried at the next check.
"""
from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from typing import Optional

log = logging.getLogger(__name__)


def build_context(cert: str, key: str, client_ca: Optional[str] = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certfile=cert, keyfile=key)
    if client_ca:
        ctx.load_verify_locations(cafile=client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class ReloadingContext:
    def __init__(self, cert: str, key: str, client_ca: Optional[str] = None, check_interval: float = 1.0):
        self.cert, self.key, self.client_ca = cert, key, client_ca
        self.check_interval = check_interval
        self._lock = threading.Lock()
        self._ctx: Optional[ssl.SSLContext] = None
        self._identity: tuple = ()
        self._checked = 0.0
        self.error: Optional[str] = None
        self.loads = 0
        self.not_after = None  # the loaded certificate's notAfter (for the expiry metric)

    def _files(self) -> tuple[str, ...]:
        return (self.cert, self.key) + ((self.client_ca,) if self.client_ca else ())

    def _current_identity(self) -> tuple:
        out = []
        for path in self._files():
            try:
                st = os.stat(path)
                out.append((st.st_ino, st.st_size, st.st_mtime_ns))
            except OSError:
                out.append(None)
        return tuple(out)

    def context(self) -> ssl.SSLContext:
        now = time.monotonic()
        if self._ctx is not None and now - self._checked < self.check_interval:
            return self._ctx
        with self._lock:
            if self._ctx is None or now - self._checked >= self.check_interval:
                self._checked = now
                identity = self._current_identity()
                if identity != self._identity or self._ctx is None:
                    self._reload(identity)
        if self._ctx is None:
            raise ssl.SSLError(f"no usable certificate: {self.error}")
        return self._ctx

    def _reload(self, identity: tuple) -> None:
        try:
            ctx = build_context(self.cert, self.key, self.client_ca)
        except (OSError, ssl.SSLError, ValueError) as exc:
            self.error = f"cannot load {self.cert} / {self.key}: {exc}"
            log.error("TLS reload failed, keeping the previous certificate: %s", self.error)
            return
        if self._ctx is not None:
            log.info("TLS certificate reloaded from %s", self.cert)
        self._ctx, self._identity, self.error = ctx, identity, None
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
            return False, self.error or "certificate not loaded"
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
