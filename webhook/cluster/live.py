"""LiveSource: a watch-based cache of the cluster that the admission edge reads.

One daemon thread per kind (Namespaces, Pods, Services, NetworkPolicies) lists the kind
(paged), then watches from the list's resourceVersion and applies each event to the shared
ClusterView. The admin network policies (AdminNetworkPolicy, BaselineAdminNetworkPolicy,
ClusterNetworkPolicy of policy.networking.k8s.io) are CRDs most clusters do not have: their
threads first ask discovery whether the API server serves them; when it does not (or our
RBAC may not list them), the log says so once, the kind counts as synced (empty), and
discovery is asked again only every `rediscover_seconds` - never a loop of 404s. The request path only ever reads the view: admission latency never depends on
the API server.

Failure handling, per kind:
- a watch that ends (server timeout, dropped connection) is reopened from the last
  resourceVersion seen (an event or a BOOKMARK), so nothing is missed;
- 410 Gone (history compacted) means relist: the new list is compared with what the cache
  holds and only the difference is applied, so readers never see a half-empty view;
- any other failure (500s, refused connections, an outage) is retried with exponential
  backoff and jitter, bounded by `backoff_max`; meanwhile the view keeps serving the
  last good state and ready() stays true once the first sync is done.

Memory: the cache keeps only what rules read (see objects.py). Label dicts are shared
between pods with the same label set and their strings interned; container port tuples are
shared too. Policies are stored without managedFields and the last-applied annotation.
"""
from __future__ import annotations

import logging
import random
import sys
import threading
import time
import weakref
from typing import Any, Callable, Mapping

from webhook.cluster import watching
from webhook.cluster.heap import Refreezer, freeze_view
from webhook.cluster.objects import ContainerPort, Pod, namespace_from, pod_from, service_from
from webhook.cluster.view import ClusterView
from webhook.config import DEFAULT, Config
from webhook.policy.parse import parse_policy
from webhook.policy.parse_admin import parse_admin_policy

log = logging.getLogger(__name__)

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


# --- memory: share what pods have in common ----------------------------------------------

class _Labels(dict):
    """A label dict that can be shared between pods (and weakly referenced by the interner).
    Shared, so nobody may mutate it; the view and rules only read labels."""

    __slots__ = ("__weakref__",)


class _Interner:
    """Canonical label dicts and port tuples. Pods of one workload carry identical labels and
    ports; 50,000 private copies of the same few strings would dominate the cache's memory."""

    _MAX_PORT_SETS = 20_000  # a plain cache; cleared when it grows past this (only costs sharing)

    def __init__(self) -> None:
        self._labels: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
        self._ports: dict[tuple[ContainerPort, ...], tuple[ContainerPort, ...]] = {}
        self._empty = _Labels()

    def labels(self, labels: Mapping[str, str]) -> Mapping[str, str]:
        if not labels:
            return self._empty
        flat: list[str] = []
        for k in sorted(labels):
            flat.append(sys.intern(k))
            flat.append(sys.intern(labels[k]))
        key = tuple(flat)
        found = self._labels.get(key)
        if found is None:
            found = _Labels(zip(key[0::2], key[1::2]))
            self._labels[key] = found
        return found

    def ports(self, ports: tuple[ContainerPort, ...]) -> tuple[ContainerPort, ...]:
        if not ports:
            return ()
        found = self._ports.get(ports)
        if found is None:
            if len(self._ports) >= self._MAX_PORT_SETS:
                self._ports.clear()
            found = self._ports[ports] = ports
        return found


# --- how each kind maps onto the view ------------------------------------------------------

class _KindAdapter:
    """Parse one API object into the view's model and put it in / take it out of the view."""

    def __init__(self, name: str, key: Callable[[dict], Any], parse: Callable[[dict], tuple[Any, str | None]],
                 upsert: Callable[[ClusterView, Any], None], delete: Callable[[ClusterView, Any], None]):
        self.name, self.key, self.parse, self.upsert, self.delete = name, key, parse, upsert, delete


def _meta(obj: dict) -> dict:
    m = obj.get("metadata")
    return m if isinstance(m, dict) else {}


def _cluster_key(obj: dict) -> str:
    return str(_meta(obj).get("name") or "")


def _namespaced_key(obj: dict) -> tuple[str, str]:
    m = _meta(obj)
    return (sys.intern(str(m.get("namespace") or "")), str(m.get("name") or ""))


def _slim_policy(obj: dict) -> dict:
    """The policy as the rules need it, which is also what the model keeps in `raw`: no status,
    no managedFields, no last-applied copy of the whole object (often larger than the policy
    itself), no server bookkeeping (timestamps, resourceVersion, generation)."""
    meta = _meta(obj)
    # uid: the audit's Events name the policy by it (kubectl describe finds events by uid)
    slim_meta = {k: meta[k] for k in ("name", "namespace", "uid", "labels", "annotations") if k in meta}
    annotations = slim_meta.get("annotations")
    if isinstance(annotations, dict) and LAST_APPLIED in annotations:
        slim_meta["annotations"] = {k: v for k, v in annotations.items() if k != LAST_APPLIED}
    # List items come without kind/apiVersion; the parser wants them as a manifest has them.
    return {"apiVersion": obj.get("apiVersion") or "networking.k8s.io/v1",
            "kind": obj.get("kind") or "NetworkPolicy", "metadata": slim_meta, "spec": obj.get("spec")}


def _slim_admin_policy(obj: dict, kind: watching.ResourceKind) -> dict:
    """An admin policy as parse_admin_policy reads it, without status and server bookkeeping."""
    meta = _meta(obj)
    slim_meta = {k: meta[k] for k in ("name", "uid", "labels", "annotations") if k in meta}
    return {"apiVersion": obj.get("apiVersion") or f"{kind.group}/{kind.version}",
            "kind": obj.get("kind") or kind.kind, "metadata": slim_meta, "spec": obj.get("spec")}


def _admin_adapter(kind: watching.ResourceKind) -> _KindAdapter:
    def parse(obj: dict):
        result = parse_admin_policy(_slim_admin_policy(obj, kind))
        if result.policy is None:
            return None, "; ".join(str(e) for e in result.errors) or f"not a valid {kind.kind}"
        return result.policy, None

    return _KindAdapter(kind.name, _cluster_key, parse, lambda v, pol: v.upsert_admin_policy(pol),
                        lambda v, key: v.delete_admin_policy(kind.kind, key))


def _adapters(interner: _Interner) -> dict[str, _KindAdapter]:
    def parse_pod(obj: dict):
        pod = pod_from(obj)
        return Pod(namespace=sys.intern(pod.namespace), name=pod.name, labels=interner.labels(pod.labels),
                   ports=interner.ports(pod.ports), ips=pod.ips), None

    def parse_policy_obj(obj: dict):
        result = parse_policy(_slim_policy(obj))
        if result.policy is None:
            return None, "; ".join(str(e) for e in result.errors) or "not a valid NetworkPolicy"
        return result.policy, None

    return {
        "namespaces": _KindAdapter("namespaces", _cluster_key, lambda o: (namespace_from(o), None),
                                   lambda v, ns: v.upsert_namespace(ns), lambda v, key: v.delete_namespace(key)),
        "pods": _KindAdapter("pods", _namespaced_key, parse_pod,
                             lambda v, pod: v.upsert_pod(pod), lambda v, key: v.delete_pod(*key)),
        "services": _KindAdapter("services", _namespaced_key, lambda o: (service_from(o), None),
                                 lambda v, svc: v.upsert_service(svc), lambda v, key: v.delete_service(*key)),
        "networkpolicies": _KindAdapter("networkpolicies", _namespaced_key, parse_policy_obj,
                                        lambda v, pol: v.upsert_policy(pol), lambda v, key: v.delete_policy(*key)),
        **{kind.name: _admin_adapter(kind) for kind in watching.ADMIN_POLICY_KINDS},
    }


_KIND_OF = {"namespaces": "Namespace", "pods": "Pod", "services": "Service", "networkpolicies": "NetworkPolicy"}


# --- retry timing ------------------------------------------------------------------------------

class Backoff:
    """Exponential backoff with jitter: the n-th consecutive failure waits a random time in
    [c/2, c] where c = min(cap, initial * 2**n). Jitter keeps many webhook replicas from
    hammering a recovering API server in lockstep; the lower half-bound keeps the retry rate
    bounded (no zero waits)."""

    def __init__(self, initial: float, cap: float, rng: random.Random | None = None):
        self.initial, self.cap = initial, cap
        self.failures = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.initial * (2 ** min(self.failures, 30)))
        self.failures += 1
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.failures = 0


# --- one kind's list/watch loop ----------------------------------------------------------------

class _KindCache:
    """Keeps one kind of object in the view current. Runs in its own daemon thread."""

    def __init__(self, source: "LiveSource", kind: watching.ResourceKind, adapter: _KindAdapter):
        self.source = source
        self.kind = kind
        self.adapter = adapter
        self.view = source.view
        # key -> resourceVersion of what the view holds (for invalid policies: of what we saw);
        # lets a relist apply only the difference and skip replayed events.
        self.versions: dict[Any, str] = {}
        self.invalid: dict[Any, str] = {}  # key -> why it was not stored
        self.synced = threading.Event()
        self.resource_version: str | None = None
        self.last_contact: float | None = None  # monotonic time of the last list, event or bookmark
        self.last_list: float | None = None
        self.lists = 0
        self.relists = 0  # completed lists after the first (410 Gone, expired continue, periodic)
        self.reconnects = 0
        self.errors = 0
        self.last_error: str | None = None
        self.stream: watching.WatchStream | None = None
        self.thread: threading.Thread | None = None
        self.backoff = Backoff(source.backoff_initial, source.backoff_max)
        self.gone_streak = 0  # 410s since a watch last delivered something
        # Why this kind is not following the API server right now (None: it is - listed, and
        # watching or about to reopen a watch that ended normally). Set while the first list
        # runs, while relisting after 410 Gone, and while retrying after an error: the view of
        # this kind is then the last good state, not the current one, and /readyz says so.
        self.behind: str | None = "not listed yet"
        self.behind_since: float | None = None
        # A CRD kind only: why it is not followed (not served, not permitted), None while it is.
        self.absent: str | None = None
        self.optional = kind.api == "custom"

    # ---- applying changes -------------------------------------------------------------

    def _apply(self, key: Any, rv: str, parsed: tuple[Any, str | None] | None) -> None:
        """Bring `key` to a new state: parsed is (item, None), (None, why it is invalid), or
        None for deleted. Caller holds view.lock."""
        a = self.adapter
        if parsed is None:
            if key in self.versions:
                del self.versions[key]
                if self.invalid.pop(key, None) is None:
                    self._delete(key)
            return
        item, problem = parsed
        if item is not None:
            self.invalid.pop(key, None)
            recorder = self.source.recorder
            if recorder is None or self.optional:  # the audit's rules read NetworkPolicies only
                a.upsert(self.view, item)
            else:
                recorder.upsert(item)  # the audit learns (old, new)
        else:
            if key in self.versions and key not in self.invalid:
                self._delete(key)  # it was valid before this change
            if self.invalid.get(key) != problem:
                log.warning("live cache: %s %s is not valid and is left out of the view: %s",
                            self.kind.name, _show(key), problem)
            self.invalid[key] = problem or "invalid"
        self.versions[key] = rv

    def _delete(self, key: Any) -> None:
        recorder = self.source.recorder
        if recorder is None or self.optional:
            self.adapter.delete(self.view, key)
        elif isinstance(key, tuple):
            recorder.delete(_KIND_OF[self.adapter.name], key[0], key[1])
        else:
            recorder.delete(_KIND_OF[self.adapter.name], "", key)

    def held(self) -> int:
        """Objects of this kind in the view (a policy the parser refused is known, not held)."""
        return len(self.versions) - len(self.invalid)

    def _parse(self, obj: dict) -> tuple[Any, str | None]:
        try:
            return self.adapter.parse(obj)
        except Exception as exc:  # noqa: BLE001 - one odd object must not stop the cache
            return None, f"could not be read: {type(exc).__name__}: {exc}"

    def apply_event(self, event: dict) -> None:
        etype, obj = event.get("type"), event["object"]
        rv = str(_meta(obj).get("resourceVersion") or "")
        if etype == "BOOKMARK":
            if rv:
                self.resource_version = rv
            return
        if etype not in ("ADDED", "MODIFIED", "DELETED"):
            raise watching.WatchFailed(f"watching {self.kind.name}: unknown event type {etype!r}")
        key = self.adapter.key(obj)
        changed = True
        if etype == "DELETED":
            with self.view.lock:
                self._apply(key, rv, None)
        elif self.versions.get(key) != rv:  # a replayed event we already hold is skipped
            parsed = self._parse(obj)  # outside the lock: readers wait only for the update
            with self.view.lock:
                self._apply(key, rv, parsed)
        else:
            changed = False
        if rv:
            self.resource_version = rv
        if changed and self.source.ready():
            # new objects are walked by the collector until the next freeze (cluster/heap.py)
            self.source.refreezer.changed_one(self.source.view_size)

    def list_and_replace(self) -> None:
        """A full (paged) list, then apply only the difference with what the view holds."""
        stop = self.source._stopping
        seen: dict[Any, tuple[str, tuple | None]] = {}
        token: str | None = None
        list_rv: str | None = None
        while True:
            page = self.source.lister.list_page(self.kind, self.source.page_size, token)
            meta = page.get("metadata") or {}
            if list_rv is None:
                # The first page's version: a consistent snapshot's version on a real server, and
                # never later than any page's contents - watching from it can only replay, not miss.
                list_rv = str(meta.get("resourceVersion") or "")
            items = page.pop("items", None) or []
            token = meta.get("continue") or None
            del page
            while items:
                # Consume the page as it is parsed: each raw object (kilobytes of JSON we do not
                # keep) is freed at once, so the peak is one page, not one page plus its parse.
                obj = items.pop()
                if not isinstance(obj, dict):
                    continue
                key = self.adapter.key(obj)
                rv = str(_meta(obj).get("resourceVersion") or "")
                if self.versions.get(key) == rv and rv:
                    seen[key] = (rv, None)  # unchanged: nothing to parse or apply
                else:
                    seen[key] = (rv, self._parse(obj))
            if not token or stop.is_set():
                break
        if stop.is_set():
            return
        changes = [(key, "", None) for key in self.versions if key not in seen]  # deleted meanwhile
        changes += [(key, rv, parsed) for key, (rv, parsed) in seen.items() if parsed is not None]
        # Apply in slices under the view's lock: each reader sees every object either before or
        # after the relist, never an emptied kind, and no reader waits for all 50,000 pods.
        for start in range(0, len(changes), 2000):
            with self.view.lock:
                for key, rv, parsed in changes[start:start + 2000]:
                    self._apply(key, rv, parsed)
        self.resource_version = list_rv or self.resource_version
        # A complete list is a complete inventory, even an empty one: "no pod matches" is then
        # a fact, not a gap in what was shown (checks that need an inventory may speak).
        if self.kind.name == "pods":
            self.view.pods_known = True
        elif self.kind.name == "namespaces":
            self.view.namespaces_known = True
        if self.lists:
            self.relists += 1
        self.lists += 1
        self.last_list = self.last_contact = time.monotonic()
        self.behind = self.behind_since = None
        self.synced.set()
        if self.source.ready():
            # every kind listed: this is a complete view, and a long-lived one (cluster/heap.py)
            self.source.refreezer.reset()
            freeze_view(f"{self.kind.name} listed")

    # ---- the loop ----------------------------------------------------------------------

    def run(self) -> None:
        src = self.source
        stop = src._stopping
        need_list = True
        watched_since_list = False
        while not stop.is_set():
            try:
                relist_every = src.config.server.relistSeconds
                if (not need_list and relist_every and self.last_list is not None
                        and time.monotonic() - self.last_list >= relist_every):
                    need_list = True
                if need_list:
                    if self.optional and not self._served():
                        stop.wait(src.rediscover_seconds)
                        continue
                    self.list_and_replace()
                    need_list, watched_since_list = False, False
                    self.backoff.reset()
                    continue
                if watched_since_list:
                    self.reconnects += 1
                watched_since_list = True
                received = self.watch_once()
                if received:
                    self.backoff.reset()
                    self.gone_streak = 0
                elif not stop.is_set():
                    # The server closed an empty stream quickly: do not spin on it.
                    stop.wait(self.backoff.next_delay())
            except Exception as exc:  # noqa: BLE001 - every failure is retried; the view stays
                if stop.is_set():
                    break
                # 410 Gone: as a watch ERROR event, as the watch's HTTP status, or an expired
                # continue token on a list. The history no longer reaches us: relist.
                status = watching.http_status(exc)
                if self.optional and status in (403, 404):
                    # 404: the CRD went away; 403: the chart's RBAC (or the user's) does not
                    # cover it. Neither is an outage: leave the kind out, and look again later.
                    need_list = True
                    self._set_absent("not followed: the API server answered HTTP 403 Forbidden (no permission "
                                     "to list it)" if status == 403 else "not served by this API server any more")
                    stop.wait(src.rediscover_seconds)
                    continue
                if isinstance(exc, watching.WatchGone) or status == 410:
                    need_list = True
                    self._fall_behind(f"relisting: resourceVersion expired ({_describe(exc)})")
                    log.info("live cache: %s: resourceVersion expired (%s); relisting", self.kind.name,
                             _describe(exc))
                    self.gone_streak += 1
                    if self.gone_streak > 1:  # Gone again right after a relist: back off, do not spin
                        stop.wait(self.backoff.next_delay())
                    continue
                self.errors += 1
                self.last_error = _describe(exc)
                self._fall_behind(f"retrying after {self.last_error}")
                delay = self.backoff.next_delay()
                log.warning("live cache: %s: %s; retrying in %.1fs (view kept, %s)", self.kind.name,
                            self.last_error, delay, "synced" if self.synced.is_set() else "not synced yet")
                stop.wait(delay)
            finally:
                self.stream = None

    # ---- CRD kinds that may not be there --------------------------------------------------

    def _served(self) -> bool:
        """Ask discovery whether the API server serves this kind now (errors propagate: an
        outage is retried like any other failure)."""
        k = self.kind
        resources = self.source.lister.served_resources(k.group, k.version)
        if resources is not None and k.name in resources:
            if self.absent is not None:
                log.info("live cache: %s (%s/%s) is served now; following it", k.kind, k.group, k.version)
                self.absent = None
            return True
        self._set_absent(f"not served by this API server (no {k.name} in {k.group}/{k.version}: the "
                         "kubernetes-sigs/network-policy-api CRDs are not installed)")
        return False

    def _set_absent(self, why: str) -> None:
        """Not followed: the view holds none of this kind; the kind counts as synced (there is
        nothing to wait for) and current. Logged once per reason, not on every look."""
        if self.absent is None or ("403" in self.absent) != ("403" in why):  # once per going away
            log.info("live cache: %s %s; verdicts do not account for them, and discovery is asked "
                     "again every %.0fs", self.kind.kind, why, self.source.rediscover_seconds)
        self.absent = why
        with self.view.lock:
            for key in list(self.versions):
                self._apply(key, "", None)
        self.invalid.clear()
        self.resource_version = None
        self.last_contact = time.monotonic()
        self.behind = self.behind_since = None
        if self.synced.is_set():
            return
        # The last kind to sync freezes the complete view (as list_and_replace does); before
        # ready() turns true when it can, so readers of a ready source find it frozen.
        frozen = all(kc.synced.is_set() for kc in self.source._kinds if kc is not self)
        if frozen:
            self.source.refreezer.reset()
            freeze_view(f"{self.kind.name} not served")
        self.synced.set()
        if not frozen and self.source.ready():  # another kind finished meanwhile
            self.source.refreezer.reset()
            freeze_view(f"{self.kind.name} not served")

    def _fall_behind(self, why: str) -> None:
        if self.behind_since is None:
            self.behind_since = time.monotonic()
        self.behind = why

    def watch_once(self) -> bool:
        """Follow one watch stream until it ends; True if it delivered anything."""
        src = self.source
        timeout = src.rng.randint(*src.watch_timeout)
        relist_every = src.config.server.relistSeconds
        if relist_every and self.last_list is not None:
            left = relist_every - (time.monotonic() - self.last_list)
            timeout = max(1, min(timeout, int(left) + 1))
        stream = src.lister.open_watch(self.kind, self.resource_version or "", timeout,
                                       read_timeout=timeout + src.read_grace)
        self.stream = stream
        if src._stopping.is_set():  # stop() ran between opening and publishing the stream
            stream.close()
            return True
        received = False
        started = self.last_contact = time.monotonic()  # the server answered: we are current
        if self.synced.is_set():
            # the watch continues from our resourceVersion: the server replays what we missed
            self.behind = self.behind_since = None
        try:
            for event in stream.events():
                self.apply_event(event)
                self.last_contact = time.monotonic()
                if not received:
                    received = True
                    self.backoff.reset()
                    self.gone_streak = 0
        finally:
            stream.close()
        self.last_contact = time.monotonic()  # ended cleanly (server-side timeout): still current
        # A stream that stayed open a while was healthy even if the cluster was quiet.
        return received or time.monotonic() - started > 1.0


def _show(key: Any) -> str:
    return "/".join(key) if isinstance(key, tuple) else str(key)


def _describe(exc: BaseException) -> str:
    status = watching.http_status(exc)
    if status is not None:
        reason = getattr(exc, "reason", "") or ""
        return f"HTTP {status} {reason}".strip()
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:300]


# --- the source ----------------------------------------------------------------------------------

class LiveSource:
    """The ViewSource (webhook/cluster/source.py) backed by the API server.

    `api` is a kubernetes.client.Configuration or ApiClient (None: in-cluster config, else
    kubeconfig). Construction opens nothing and starts no thread (gunicorn builds sources in the
    master before forking); start() does, in each worker."""

    def __init__(self, api: Any = None, config: Config = DEFAULT, *, page_size: int = 500,
                 watch_timeout: tuple[int, int] = (240, 360), read_grace: float = 30.0,
                 backoff_initial: float = 0.5, backoff_max: float = 30.0,
                 list_timeout: float = 60.0, stop_timeout: float = 5.0, rediscover_seconds: float = 300.0,
                 admin_policies: bool = True):
        self.view = ClusterView()
        self.config = config
        self._api = api
        self.page_size = page_size
        self.watch_timeout = watch_timeout
        self.read_grace = read_grace
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.list_timeout = list_timeout
        self.stop_timeout = stop_timeout
        self.rediscover_seconds = rediscover_seconds
        self.rng = random.Random()
        self._stopping = threading.Event()
        self._interner = _Interner()
        adapters = _adapters(self._interner)
        # admin_policies=False: a view whose readers judge NetworkPolicies only (the audit's)
        # spares the API server three watches per process
        kinds = watching.KINDS + (watching.ADMIN_POLICY_KINDS if admin_policies else ())
        self._kinds = [_KindCache(self, kind, adapters[kind.name]) for kind in kinds]
        self._api_client: Any = None
        self._owns_client = False
        self.lister: watching.Lister | None = None
        self._started_at: float | None = None
        self._state = "new"
        self.refreezer = Refreezer()
        # Set (before start) by the pod agent's audit: changes then go through it
        # (webhook.audit.feed.Recorder), which applies them to the view and queues (old, new).
        self.recorder: Any = None

    # ---- ViewSource ------------------------------------------------------------------------

    def start(self) -> None:
        if self._state != "new":
            raise RuntimeError(f"LiveSource can be started once (it is {self._state})")
        self._state = "running"
        if self._api is None:
            self._api_client, self._owns_client = watching.default_api_client()
        else:
            self._api_client, self._owns_client = watching.make_api_client(self._api)
        self.lister = watching.Lister(self._api_client, list_timeout=self.list_timeout)
        self._started_at = time.monotonic()
        for kc in self._kinds:
            kc.thread = threading.Thread(target=kc.run, name=f"live-cache-{kc.kind.name}", daemon=True)
            kc.thread.start()

    def stop(self) -> None:
        """End every watch at once (their sockets are shut down) and join the threads."""
        if self._state != "running":
            self._state = "stopped"
            return
        self._state = "stopped"
        self._stopping.set()
        for kc in self._kinds:
            stream = kc.stream
            if stream is not None:
                stream.interrupt()
        deadline = time.monotonic() + self.stop_timeout
        for kc in self._kinds:
            if kc.thread is not None:
                kc.thread.join(max(0.0, deadline - time.monotonic()))
        if self._owns_client and self._api_client is not None:
            try:
                self._api_client.close()
            except Exception:  # noqa: BLE001 - closing at shutdown must not raise
                pass

    def ready(self) -> bool:
        """True once every kind has been listed completely; stays true through outages."""
        return all(kc.synced.is_set() for kc in self._kinds)

    def behind(self) -> dict[str, str]:
        """The kinds not following the API server right now, each with why and for how long
        ({} when every watch is current). The view keeps the last good state of those kinds
        meanwhile (ready() stays true): verdicts go on, and /readyz says they may be stale."""
        now = time.monotonic()
        out = {}
        for kc in self._kinds:
            why = kc.behind
            if why is not None:
                since = kc.behind_since
                out[kc.kind.name] = why if since is None else f"{why}, for {now - since:.0f}s"
        return out

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        for kc in self._kinds:
            if not kc.synced.wait(max(0.0, deadline - time.monotonic())):
                return False
        return True

    def threads_alive(self) -> int:
        return sum(1 for kc in self._kinds if kc.thread is not None and kc.thread.is_alive())

    def view_size(self) -> int:
        """How many objects the view holds (all kinds)."""
        return sum(kc.held() for kc in self._kinds)

    def stats(self) -> dict:
        """Flat numbers for /metrics (kinds: namespaces, pods, services, networkpolicies).

        Per kind: `<kind>` objects held (networkpolicies: the valid ones), `<kind>_age_seconds`
        (since the last list, event, bookmark or successful watch open/close; before the first
        contact: since start()), `<kind>_synced` (first list done).
        Totals: `objects`, `age_seconds` (the stalest kind), `synced` (= ready()), `relists`
        (completed lists after the first: 410 Gone, expired continue, periodic relist),
        `reconnects` (watch re-opens without a relist, attempts included), `errors` (failed
        requests other than 410, incl. refused connections), `invalid_policies` (in the cluster
        but refused by the parser, so not in the view)."""
        now = time.monotonic()
        start = self._started_at if self._started_at is not None else now
        out: dict[str, Any] = {}
        total = 0
        ages = []
        for kc in self._kinds:
            name = kc.kind.name
            count = kc.held()
            total += count
            age = now - (kc.last_contact if kc.last_contact is not None else start)
            ages.append(age)
            out[name] = count
            out[f"{name}_age_seconds"] = round(age, 3)
            out[f"{name}_synced"] = kc.synced.is_set()
        out.update({
            "objects": total,
            "age_seconds": round(max(ages), 3),
            "synced": self.ready(),
            "relists": sum(kc.relists for kc in self._kinds),
            "reconnects": sum(kc.reconnects for kc in self._kinds),
            "errors": sum(kc.errors for kc in self._kinds),
            "invalid_policies": len(self._kind("networkpolicies").invalid),
        })
        return out

    # ---- for diagnostics and tests -----------------------------------------------------------

    def _kind(self, name: str) -> _KindCache:
        for kc in self._kinds:
            if kc.kind.name == name:
                return kc
        raise KeyError(name)

    def invalid_policies(self) -> dict[str, str]:
        """"namespace/name" (admin policies: "Kind/name") -> why the policy was left out of the view."""
        out = {_show(k): why for k, why in self._kind("networkpolicies").invalid.items()}
        for kc in self._kinds:  # admin policies are cluster-scoped: named Kind/name
            if kc.optional:
                out.update({f"{kc.kind.kind}/{k}": why for k, why in kc.invalid.items()})
        return out

    def not_followed(self) -> dict[str, str]:
        """Admin policy kinds left out of the view: kind -> why (not served, not permitted)."""
        return {kc.kind.kind: kc.absent for kc in self._kinds if kc.absent is not None}

    def last_errors(self) -> dict[str, str | None]:
        return {kc.kind.name: kc.last_error for kc in self._kinds}


__all__ = ["LiveSource", "Backoff"]
