"""Leader election with a coordination.k8s.io/v1 Lease, so that of several replicas exactly
one does the work that must have a single writer (the isolation controller, certificate
rotation).

    elector = LeaderElector(api_client, "netpol-guard", "netpol-guard-isolation", identity="pod-a",
                            on_started_leading=..., on_stopped_leading=...)
    elector.start()
    ...
    if elector.is_leader():   # check right before every write
        ...
    elector.stop()            # releases the Lease so a standby takes over at once

How it stays safe (the same scheme as client-go's leaderelection):

- Every change to the Lease is a PUT carrying the resourceVersion we read, so two
  candidates racing for an expired Lease cannot both win: the loser gets 409.
- Expiry is judged on *our* clock, never by comparing the holder's renewTime with our
  wall clock: a candidate notes when it first saw the current (holder, renewTime) and
  treats the Lease as expired only after leaseDurationSeconds have passed on its own
  monotonic clock without that record changing. Clock skew between nodes cannot make
  two leaders.
- A leader that cannot renew steps down after ``renew_deadline`` (< lease duration),
  counted from the start of its last successful renewal. ``is_leader()`` applies that
  deadline itself, so a writer that checks it before each write stops writing before
  any other candidate could consider the Lease expired, even if the elector thread is
  stuck in a slow request.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import socket
import threading
import time
from typing import Any, Callable, Optional

log = logging.getLogger(__name__)

Callback = Optional[Callable[[], None]]


def default_identity() -> str:
    """Who we are in the Lease: the pod name (POD_NAME, from the downward API) when in a pod.

    Every process of one pod shares that identity on purpose: the chart grants one Lease
    name, and the roles that need a single writer (isolation controller, certificate
    manager) lead together on the elected pod. Outside a pod: hostname_pid."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}_{os.getpid()}"


def default_lease_namespace() -> str:
    """POD_NAMESPACE, else the service account's namespace file, else netpol-guard."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f:
            return f.read().strip() or "netpol-guard"
    except OSError:
        return "netpol-guard"


def _now_micro() -> str:
    """A MicroTime as the API server writes it."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(self, api_client: Any, namespace: str, name: str, identity: str, *,
                 lease_duration: int = 15, renew_deadline: float = 10.0, retry_period: float = 2.0,
                 on_started_leading: Callback = None, on_stopped_leading: Callback = None,
                 clock: Callable[[], float] = time.monotonic):
        """lease_duration: whole seconds (the Lease field is an integer) a standby waits after
        the last observed renewal before taking over; renew_deadline: how long a leader keeps
        acting without a successful renewal (must be < lease_duration); retry_period: how often
        to renew or retry acquiring (must be < renew_deadline)."""
        if not isinstance(lease_duration, int) or lease_duration < 1:
            raise ValueError(f"lease_duration must be a whole number of seconds >= 1, got {lease_duration!r}")
        if not 0 < renew_deadline < lease_duration:
            raise ValueError(f"renew_deadline ({renew_deadline}) must be > 0 and < lease_duration ({lease_duration})")
        if not 0 < retry_period < renew_deadline:
            raise ValueError(f"retry_period ({retry_period}) must be > 0 and < renew_deadline ({renew_deadline})")
        if not identity:
            raise ValueError("identity must be a non-empty string (e.g. the pod name)")
        import kubernetes.client

        self._api = kubernetes.client.CoordinationV1Api(api_client)
        self.namespace, self.name, self.identity = namespace, name, identity
        self.lease_duration, self.renew_deadline, self.retry_period = lease_duration, renew_deadline, retry_period
        self._listeners: list[tuple[Callback, Callback]] = []
        if on_started_leading or on_stopped_leading:
            self._listeners.append((on_started_leading, on_stopped_leading))
        self._clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._leading = False
        self._renewed_at = float("-inf")  # monotonic start of the last successful acquire/renew
        self._observed: Optional[tuple] = None  # (holder, renewTime, duration) last seen
        self._observed_at = 0.0
        self._changed = threading.Condition(self._lock)
        self.transitions = 0  # times this elector became leader (for logs and tests)

    # ---- public ----------------------------------------------------------------------

    def start(self) -> "LeaderElector":
        if self._thread is not None:
            raise RuntimeError("LeaderElector already started")
        self._thread = threading.Thread(target=self._run, name=f"leader-{self.name}", daemon=True)
        self._thread.start()
        return self

    @property
    def started(self) -> bool:
        return self._thread is not None

    def stop(self, release: bool = True) -> None:
        """Stop campaigning. A leader steps down first (callbacks run), then, with release,
        hands the Lease back so a standby need not wait out the lease duration."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.renew_deadline + 5)
        was_leading = self._set_leading(False)
        if release and was_leading:
            self._release()

    def add_listener(self, on_started_leading: Callback = None, on_stopped_leading: Callback = None) -> None:
        """Several roles may share one elector (one Lease per process: the isolation controller
        and the certificate manager). A listener added while leading is started at once."""
        with self._lock:
            self._listeners.append((on_started_leading, on_stopped_leading))
            leading = self._leading
        if leading and on_started_leading:
            on_started_leading()

    def remove_listener(self, on_started_leading: Callback = None, on_stopped_leading: Callback = None) -> None:
        with self._lock:
            if (on_started_leading, on_stopped_leading) in self._listeners:
                self._listeners.remove((on_started_leading, on_stopped_leading))

    def is_leader(self) -> bool:
        """True only while the last successful renewal is younger than renew_deadline."""
        with self._lock:
            return self._leading and self._clock() - self._renewed_at < self.renew_deadline

    def wait_for_leadership(self, timeout: float) -> bool:
        deadline = self._clock() + timeout
        with self._changed:
            while not self._leading:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    return False
                self._changed.wait(min(remaining, 0.1))
            return True

    # ---- the loop ----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            started = self._clock()
            ok = False
            try:
                ok = self._try_acquire_or_renew(started)
            except Exception as exc:  # noqa: BLE001 - any API trouble is "not renewed this round"
                log.warning("lease %s/%s: %s", self.namespace, self.name, _describe(exc))
            if ok and not self._stop.is_set():  # stop() may be waiting for this round
                with self._lock:
                    self._renewed_at = started
                self._set_leading(True)
            elif self._leading and self._clock() - self._renewed_at >= self.renew_deadline:
                log.warning("lease %s/%s: not renewed within %.1fs; stepping down",
                            self.namespace, self.name, self.renew_deadline)
                self._set_leading(False)
            elapsed = self._clock() - started
            self._stop.wait(max(0.0, self.retry_period - elapsed))

    def _set_leading(self, leading: bool) -> bool:
        """Flip the state and run the matching callback; returns the previous state."""
        with self._lock:
            before = self._leading
            self._leading = leading
            if leading and not before:
                self.transitions += 1
            self._changed.notify_all()
        if leading and not before:
            log.info("lease %s/%s: %s is now the leader", self.namespace, self.name, self.identity)
            self._notify(0)
        elif before and not leading:
            log.info("lease %s/%s: %s stopped leading", self.namespace, self.name, self.identity)
            self._notify(1)
        return before

    def _notify(self, which: int) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for pair in listeners:
            fn = pair[which]
            if fn is None:
                continue
            try:
                fn()
            except Exception:  # noqa: BLE001 - one role's bug must not stop the election
                log.exception("lease %s/%s: leadership callback %r failed", self.namespace, self.name, fn)

    def _read(self) -> Optional[dict]:
        from kubernetes.client.exceptions import ApiException

        try:
            resp = self._api.read_namespaced_lease(self.name, self.namespace, _preload_content=False,
                                                   _request_timeout=self._timeout())
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return _consume(resp)

    def _timeout(self) -> tuple[float, float]:
        # A request may never outlive the time we are allowed to act as leader.
        t = max(0.5, self.renew_deadline / 2)
        return (t, t)

    def _try_acquire_or_renew(self, now: float) -> bool:
        # A 409 means someone wrote the Lease since we read it; one immediate re-read settles
        # the common case of two processes of one pod renewing under the same identity.
        for _ in range(2):
            result = self._attempt(now)
            if result is not None:
                return result
        return False

    def _attempt(self, now: float) -> Optional[bool]:
        """True: we hold the Lease; False: someone else does; None: conflict, read again."""
        from kubernetes.client.exceptions import ApiException

        lease = self._read()
        stamp = _now_micro()
        if lease is None:
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": self.lease_duration,
                             "acquireTime": stamp, "renewTime": stamp, "leaseTransitions": 0}}
            try:
                _consume(self._api.create_namespaced_lease(self.namespace, body, _preload_content=False,
                                                           _request_timeout=self._timeout()))
            except ApiException as exc:
                if exc.status == 409:  # someone else created it first
                    return None
                raise
            return True

        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        duration = spec.get("leaseDurationSeconds") or self.lease_duration
        record = (holder, spec.get("renewTime"), duration)
        if record != self._observed:
            self._observed, self._observed_at = record, now
        if holder and holder != self.identity and now < self._observed_at + duration:
            return False  # held by someone else and not expired on our clock

        new_spec = dict(spec)
        new_spec.update(holderIdentity=self.identity, leaseDurationSeconds=self.lease_duration, renewTime=stamp)
        if holder != self.identity:
            new_spec["acquireTime"] = stamp
            new_spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        lease["spec"] = new_spec
        try:
            resp = self._api.replace_namespaced_lease(self.name, self.namespace, lease, _preload_content=False,
                                                      _request_timeout=self._timeout())
        except ApiException as exc:
            if exc.status == 409:  # someone wrote it since we read it
                return None
            raise
        stored = _consume(resp).get("spec") or {}
        self._observed = (stored.get("holderIdentity") or "", stored.get("renewTime"),
                          stored.get("leaseDurationSeconds") or self.lease_duration)
        self._observed_at = now
        return True

    def _release(self) -> None:
        """Give the Lease up (holder cleared) if we still hold it; best effort."""
        try:
            lease = self._read()
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            lease["spec"] = {**lease["spec"], "holderIdentity": None, "leaseDurationSeconds": 1,
                             "renewTime": _now_micro()}
            _consume(self._api.replace_namespaced_lease(self.name, self.namespace, lease, _preload_content=False,
                                                        _request_timeout=self._timeout()))
            log.info("lease %s/%s: released by %s", self.namespace, self.name, self.identity)
        except Exception as exc:  # noqa: BLE001 - the Lease then expires by itself
            log.warning("lease %s/%s: release failed (%s); it expires after %ss",
                        self.namespace, self.name, _describe(exc), self.lease_duration)


def _consume(resp: Any) -> dict:
    """Read a raw response and hand its connection back to the pool."""
    try:
        return json.loads(resp.data)
    finally:
        resp.release_conn()


def _describe(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    if status:
        return f"HTTP {status} {getattr(exc, 'reason', '')}".strip()
    return f"{type(exc).__name__}: {exc}"
