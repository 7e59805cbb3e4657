"""The isolation controller: keeps every labeled namespace's managed policies as desired.

    stop = run_in_background(config, api_client, lease_namespace="netpol-guard", identity="pod-a")
    ...
    stop()

Shape (kube-janitor-sized on purpose):

    Namespaces informer ──┐                        ┌─ plan (reconcile.py, pure)
                          ├─> WorkQueue(namespace) ─┤
    managed-policy informer┘   dedup, backoff       └─ execute: create / update / delete, Events

- Two watches through the kubernetes client: all Namespaces, and NetworkPolicies labeled
  app.kubernetes.io/managed-by=netpol-guard. Decisions are made from these caches, so a
  steady state is two idle watches and no requests; our own write results go into the
  cache at once so the next reconcile does not redo them.
- Every write is guarded: creates never adopt (409 AlreadyExists on someone else's
  policy is reported and left alone); updates and deletes carry the resourceVersion of
  the managed object we decided on (an update as metadata.resourceVersion, a delete as a
  precondition), so the API server itself refuses them if the live object changed - in
  particular if it stopped being ours. 409 -> re-read, decide again, retry (bounded);
  other errors -> the namespace is requeued with exponential backoff.
- With leader election only the leader's workers run, and each write first checks
  is_leader(), which turns false before the Lease could expire.
- Periodic resync (isolation.resyncSeconds): both informers relist (healing a cache that
  missed an event) and every namespace is reconciled; converged namespaces cost no write.
"""
from __future__ import annotations

import json
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from webhook.config import Config
from webhook.isolation.desired import (MANAGED_BY_KEY, MANAGED_BY_VALUE, MANAGED_NAMES, drifted, is_managed,
                                       merged_for_update)
from webhook.isolation.events import EventRecorder
from webhook.isolation.informer import Informer
from webhook.isolation.reconcile import Create, Delete, Plan, Update, is_terminating, plan
from webhook.isolation.workqueue import Backoff, WorkQueue

log = logging.getLogger(__name__)

MANAGED_SELECTOR = f"{MANAGED_BY_KEY}={MANAGED_BY_VALUE}"
DEFAULT_LEASE_NAME = "netpol-guard-isolation"
MAX_CONFLICT_RETRIES = 4


class NotLeader(Exception):
    """We lost (or never had) the Lease: stop writing now."""


class Requeue(Exception):
    """Try this namespace again later (with backoff)."""


@dataclass
class Stats:
    reconciles: int = 0
    writes: int = 0  # successful creates, updates, deletes
    conflicts: int = 0
    errors: int = 0
    by_outcome: dict = field(default_factory=dict)


class Controller:
    def __init__(self, api_client: Any, config: Config, *, workers: int = 4, field_manager: str = "netpol-guard",
                 identity: str = "", resync_seconds: Optional[float] = None, request_timeout: float = 10.0,
                 is_leader: Optional[Callable[[], bool]] = None, backoff: Optional[Backoff] = None):
        """is_leader None: act as the only writer (no election). resync_seconds None: from config."""
        import kubernetes.client

        self.config = config
        self._core = kubernetes.client.CoreV1Api(api_client)
        self._net = kubernetes.client.NetworkingV1Api(api_client)
        self._field_manager = field_manager
        self._timeout = request_timeout
        self._workers_n = max(1, workers)
        self._resync = float(config.isolation.resyncSeconds if resync_seconds is None else resync_seconds)
        self.is_leader: Callable[[], bool] = is_leader or (lambda: True)
        self._active = is_leader is None  # workers run only while active (leading)
        self.queue = WorkQueue()
        self._backoff = backoff or Backoff()
        self.events = EventRecorder(api_client, instance=identity or field_manager, request_timeout=request_timeout,
                                    busy=lambda: len(self.queue) > 0)
        self.stats = Stats()
        self._stats_lock = threading.Lock()
        self._seen: set[tuple[str, str]] = set()  # managed policies we have seen exist (created vs restored)
        self._taken: set[tuple[str, str]] = set()  # names held by policies we do not manage
        self._state_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.namespaces = Informer("namespaces", self._core.list_namespace, _name_key, self._namespace_changed,
                                   request_timeout=request_timeout)
        self.policies = Informer("managed-networkpolicies", self._net.list_network_policy_for_all_namespaces,
                                 _ns_name_key, self._policy_changed, label_selector=MANAGED_SELECTOR,
                                 request_timeout=request_timeout)

    # ---- life cycle ----------------------------------------------------------------------

    def start(self) -> "Controller":
        self.namespaces.start()
        self.policies.start()
        for i in range(self._workers_n):
            self._spawn(self._work, f"isolation-worker-{i}")
        if self._resync > 0:
            self._spawn(self._resync_loop, "isolation-resync")
        return self

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self) -> None:
        """Stop workers (no write is in flight when this returns), then the watches."""
        self._stop.set()
        self._active = False
        self.queue.shutdown()
        for t in self._threads:
            t.join(timeout=self._timeout + 5)
        self.events.stop()
        self.namespaces.stop()
        self.policies.stop()

    def start_leading(self) -> None:
        """Leader election callback: reconcile everything from now on."""
        self._active = True
        self.enqueue_all()

    def stop_leading(self) -> None:
        self._active = False

    def wait_synced(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        return self.namespaces.wait_synced(timeout) and \
            self.policies.wait_synced(max(0.0, deadline - time.monotonic()))

    def enqueue_all(self) -> None:
        for name in self.namespaces.keys():
            self.queue.add(name)

    # ---- informer callbacks (cheap: they only enqueue) -------------------------------------

    def _namespace_changed(self, name: str, old: Optional[dict], new: Optional[dict]) -> None:
        if new is None:
            with self._state_lock:
                self._seen = {k for k in self._seen if k[0] != name}
                self._taken = {k for k in self._taken if k[0] != name}
            self.events.forget_namespace(name)
            return
        key = self.config.isolation.labelKey
        if old is None or _labels(old).get(key) != _labels(new).get(key) \
                or is_terminating(old) != is_terminating(new):
            self.queue.add(name)

    def _policy_changed(self, key: tuple[str, str], old: Optional[dict], new: Optional[dict]) -> None:
        if new is not None and is_managed(new):
            with self._state_lock:
                self._seen.add(key)
        self.queue.add(key[0])

    # ---- workers -----------------------------------------------------------------------------

    def _work(self) -> None:
        while not self._stop.is_set():
            if not self.wait_synced(0.2):
                continue
            name = self.queue.get(timeout=0.2)
            if name is None:
                continue
            try:
                if self._active:
                    self.reconcile(name)
                    self._backoff.forget(name)
            except NotLeader:
                log.info("namespace %s: not the leader any more; leaving it to the new one", name)
            except Exception as exc:  # noqa: BLE001 - never let one namespace stop the controller
                delay = self._backoff.next_delay(name)
                with self._stats_lock:
                    self.stats.errors += 1
                log.warning("namespace %s: %s; retrying in %.2fs", name, _describe(exc), delay)
                self.queue.add_after(name, delay)
            finally:
                self.queue.done(name)

    def _resync_loop(self) -> None:
        while not self._stop.wait(self._resync):
            self.namespaces.relist()
            self.policies.relist()
            if self._active:
                self.enqueue_all()

    # ---- one namespace -------------------------------------------------------------------------

    def reconcile(self, name: str) -> Plan:
        ns = self.namespaces.get(name)
        managed = {n: p for n in MANAGED_NAMES if (p := self.policies.get((name, n))) is not None}
        p = plan(name, ns, managed, self.config)
        with self._stats_lock:
            self.stats.reconciles += 1
        if p.state == "invalid-label":
            for note in p.notes:
                self.events.record(ns, note.type, note.reason, note.message, once=True)
            return p
        self.events.clear(name, "InvalidIsolationLabel")
        if not p.writes:
            return p
        mode_change = any(isinstance(w, Update) and w.mode_changed for w in p.writes) or \
            (p.state == "isolated" and any(isinstance(w, Delete) for w in p.writes))
        with self._state_lock:  # decided before writing: our own watch events add to _seen meanwhile
            seen_before = {n for n in MANAGED_NAMES if (name, n) in self._seen}
        groups: dict[str, list[str]] = {}
        for w in p.writes:
            outcome = self._execute(w)
            if outcome in ("none", "taken"):
                continue
            pname = _name(w)
            verb = outcome
            if p.state == "unlabeled":
                reason = "IsolationRemoved"
            elif mode_change:
                reason = "IsolationUpdated"
            elif outcome == "created" and pname not in seen_before:
                reason = "IsolationCreated"
            else:
                reason, verb = "IsolationRestored", "recreated" if outcome == "created" else "reverted"
            groups.setdefault(reason, []).append(f"{verb} {pname}")
            with self._state_lock:
                if outcome == "deleted":
                    self._seen.discard((name, pname))
                else:
                    self._seen.add((name, pname))
        key = self.config.isolation.labelKey
        for reason, done in groups.items():
            what = ", ".join(done)
            message = {
                "IsolationCreated": f"{what} ({key}={p.mode})",
                "IsolationRestored": f"{what} ({key}={p.mode}): it was deleted or changed by someone else; "
                                     f"to change isolation, change or remove the namespace label {key}",
                "IsolationUpdated": f"isolation is now {key}={p.mode}: {what}",
                "IsolationRemoved": f"{what}, because the namespace label {key} was removed",
            }[reason]
            self.events.record(ns, "Normal", reason, message)
        return p

    def _execute(self, w: Any) -> str:
        """Carry out one write; returns created | updated | deleted | taken | none."""
        if isinstance(w, Create):
            outcome = self._create(w.desired)
        elif isinstance(w, Update):
            outcome = self._update(w.actual, w.desired)
        else:
            outcome = self._delete(w.actual)
        with self._stats_lock:
            self.stats.by_outcome[outcome] = self.stats.by_outcome.get(outcome, 0) + 1
            if outcome in ("created", "updated", "deleted"):
                self.stats.writes += 1
        return outcome

    def _may_write(self) -> None:
        if self._stop.is_set() or not self._active or not self.is_leader():
            raise NotLeader()

    def _get_live(self, ns: str, name: str) -> Optional[dict]:
        from kubernetes.client.exceptions import ApiException

        try:
            resp = self._net.read_namespaced_network_policy(name, ns, _preload_content=False,
                                                            _request_timeout=self._timeout)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return _consume(resp)

    def _name_taken(self, ns: str, name: str, live: dict) -> str:
        with self._state_lock:
            self._taken.add((ns, name))
        nsobj = self.namespaces.get(ns)
        if nsobj is not None:
            self.events.record(
                nsobj, "Warning", "PolicyNameTaken",
                f"NetworkPolicy {ns}/{name} exists but is not managed by netpol-guard (no label "
                f"{MANAGED_SELECTOR}); it was left alone, so isolation of {ns} is incomplete. Delete or "
                f"rename that policy and netpol-guard will create its own.", once=True)
        return "taken"

    def _create(self, desired: dict) -> str:
        from kubernetes.client.exceptions import ApiException

        ns, name = desired["metadata"]["namespace"], desired["metadata"]["name"]
        with self._state_lock:
            known_taken = (ns, name) in self._taken
        if known_taken:  # look (a read) instead of trying to create again every resync
            live = self._get_live(ns, name)
            if live is not None and not is_managed(live):
                return self._name_taken(ns, name, live)
            with self._state_lock:
                self._taken.discard((ns, name))
            nsobj = self.namespaces.get(ns)
            if nsobj is not None:
                self.events.clear(ns, "PolicyNameTaken")
            if live is not None:
                return self._adopt_own(live, desired)
        self._may_write()
        try:
            resp = self._net.create_namespaced_network_policy(ns, desired, field_manager=self._field_manager,
                                                              _preload_content=False, _request_timeout=self._timeout)
        except ApiException as exc:
            if exc.status == 409:
                live = self._get_live(ns, name)
                if live is None:
                    raise Requeue(f"{ns}/{name} existed and then vanished") from None
                if not is_managed(live):
                    return self._name_taken(ns, name, live)
                return self._adopt_own(live, desired)
            if exc.status in (403, 404) and self._namespace_going(ns):
                return "none"
            raise
        self.policies.store(_consume(resp))
        return "created"

    def _adopt_own(self, live: dict, desired: dict) -> str:
        """A managed policy our cache had not seen yet: fix it only if it drifted."""
        self.policies.store(live)
        if drifted(live, desired):
            return self._update(live, desired)
        return "none"

    def _update(self, actual: dict, desired: dict) -> str:
        from kubernetes.client.exceptions import ApiException

        ns, name = desired["metadata"]["namespace"], desired["metadata"]["name"]
        for _ in range(MAX_CONFLICT_RETRIES):
            self._may_write()
            body = merged_for_update(actual, desired)
            try:
                resp = self._net.replace_namespaced_network_policy(
                    name, ns, body, field_manager=self._field_manager, _preload_content=False,
                    _request_timeout=self._timeout)
            except ApiException as exc:
                if exc.status == 404:
                    return self._create(desired)
                if exc.status != 409:
                    raise
                with self._stats_lock:
                    self.stats.conflicts += 1
                live = self._get_live(ns, name)  # someone wrote since we read: look again
                if live is None:
                    return self._create(desired)
                if not is_managed(live):
                    return self._name_taken(ns, name, live)
                self.policies.store(live)
                if not drifted(live, desired):
                    return "none"
                actual = live
                continue
            self.policies.store(_consume(resp))
            return "updated"
        raise Requeue(f"{ns}/{name}: still conflicting after {MAX_CONFLICT_RETRIES} attempts")

    def _delete(self, actual: dict) -> str:
        from kubernetes.client.exceptions import ApiException

        meta = actual["metadata"]
        ns, name = meta["namespace"], meta["name"]
        for _ in range(MAX_CONFLICT_RETRIES):
            self._may_write()
            try:
                resp = self._net.delete_namespaced_network_policy(
                    name, ns, body={"preconditions": {"resourceVersion": actual["metadata"].get("resourceVersion"),
                                                      "uid": actual["metadata"].get("uid")}},
                    _preload_content=False, _request_timeout=self._timeout)
            except ApiException as exc:
                if exc.status == 404:
                    self.policies.forget((ns, name))
                    return "none"
                if exc.status != 409:
                    raise
                with self._stats_lock:
                    self.stats.conflicts += 1
                live = self._get_live(ns, name)
                if live is None:
                    self.policies.forget((ns, name))
                    return "none"
                if not is_managed(live):
                    self.policies.forget((ns, name))
                    return "none"  # no longer ours: leave it
                actual = live
                continue
            _consume(resp)
            self.policies.forget((ns, name))
            return "deleted"
        raise Requeue(f"{ns}/{name}: delete still conflicting after {MAX_CONFLICT_RETRIES} attempts")

    def _namespace_going(self, ns: str) -> bool:
        obj = self.namespaces.get(ns)
        return obj is None or is_terminating(obj)


def _consume(resp: Any) -> dict:
    """Read a raw response and hand its connection back to the pool (an unread or unreleased
    response would keep its connection out of the pool)."""
    try:
        return json.loads(resp.data)
    finally:
        resp.release_conn()


def _name(w: Any) -> str:
    obj = w.desired if isinstance(w, (Create, Update)) else w.actual
    return obj["metadata"]["name"]


def _labels(obj: dict) -> dict:
    return (obj.get("metadata") or {}).get("labels") or {}


def _name_key(obj: dict) -> str:
    return obj["metadata"]["name"]


def _ns_name_key(obj: dict) -> tuple[str, str]:
    return (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])


def _describe(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    if status:
        return f"HTTP {status} {getattr(exc, 'reason', '')}".strip()
    return f"{type(exc).__name__}: {exc}"


# ---- wiring ----------------------------------------------------------------------------------

class Running:
    """A controller running under leader election; call it (or .stop()) to stop."""

    def __init__(self, controller: Controller, elector: Any, owns_elector: bool):
        self.controller, self.elector, self._owns = controller, elector, owns_elector

    def stop(self) -> None:
        self.controller.stop()  # no write is in flight after this...
        if self._owns:
            self.elector.stop(release=True)  # ...so the Lease can be handed over at once
        else:
            self.elector.remove_listener(self.controller.start_leading, self.controller.stop_leading)

    __call__ = stop


def make_elector(config: Config, api_client: Any, *, lease_namespace: Optional[str] = None,
                 lease_name: Optional[str] = None, identity: Optional[str] = None) -> Any:
    """A LeaderElector from config.leaderElection (one Lease per release: the chart's RBAC names it)."""
    from webhook.leader import LeaderElector, default_identity, default_lease_namespace

    le = config.leaderElection
    return LeaderElector(api_client, lease_namespace or default_lease_namespace(), lease_name or le.leaseName,
                         identity or default_identity(), lease_duration=int(le.leaseDurationSeconds),
                         renew_deadline=float(le.renewDeadlineSeconds), retry_period=float(le.retryPeriodSeconds))


def run_in_background(config: Config, api_client: Any, *, elector: Any = None, lease_namespace: Optional[str] = None,
                      lease_name: Optional[str] = None, identity: Optional[str] = None, workers: int = 4,
                      field_manager: str = "netpol-guard", resync_seconds: Optional[float] = None) -> Running:
    """Start the isolation controller in daemon threads; it reconciles only while `elector` leads.

    elector: a started-or-not webhook.leader.LeaderElector to share (e.g. with the certificate
    manager; it is started here if it was not, and left running on stop); None makes one from
    config.leaderElection (lease_namespace/lease_name/identity override it) and owns it.
    Returns a Running: call it to stop (workers first, then the Lease is released).
    Several processes may call this: exactly one reconciles."""
    owns = elector is None
    if owns:
        elector = make_elector(config, api_client, lease_namespace=lease_namespace, lease_name=lease_name,
                               identity=identity)
    controller = Controller(api_client, config, workers=workers, field_manager=field_manager,
                            identity=elector.identity, resync_seconds=resync_seconds,
                            request_timeout=max(1.0, float(elector.lease_duration) - elector.renew_deadline),
                            is_leader=elector.is_leader)
    controller.start()
    elector.add_listener(controller.start_leading, controller.stop_leading)
    if not elector.started:
        elector.start()
    return Running(controller, elector, owns)


def kube_api_client(kubeconfig: Optional[str] = None) -> Any:
    """An ApiClient: the in-cluster configuration in a pod, else the kubeconfig (file or default)."""
    import kubernetes.client
    import kubernetes.config

    configuration = kubernetes.client.Configuration()
    if kubeconfig is None:
        try:
            kubernetes.config.load_incluster_config(client_configuration=configuration)
            return kubernetes.client.ApiClient(configuration)
        except kubernetes.config.ConfigException:
            pass
    from webhook.cluster.kubeconfig import load_kubeconfig
    load_kubeconfig(configuration, kubeconfig)
    return kubernetes.client.ApiClient(configuration)


def wait_for_termination() -> None:
    """Block until SIGTERM or SIGINT (main thread only)."""
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    while not done.wait(1.0):
        pass


def run(options: Any) -> None:
    """The isolation controller alone under leader election until SIGTERM (options: the
    fields of webhook.admission.server.AgentOptions). `serve` runs webhook.agent.run, which
    shares one elector between this controller and the certificate manager; this entry
    is that agent with only the controller role."""
    from dataclasses import replace, is_dataclass
    from webhook.agent import run as run_agent

    if is_dataclass(options) and hasattr(options, "certificates"):
        options = replace(options, controller=True, certificates=False)
    run_agent(options)
