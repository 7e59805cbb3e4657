"""KubeAPI: a stateful Kubernetes API server stand-in for tests and benchmarks.

It speaks the REST dialect the real `kubernetes` Python client uses (get, list, watch, create,
update, patch, delete on the resource types in resources.py) over plain HTTP on 127.0.0.1.
Plain HTTP is deliberate: the stand-in exercises API semantics, not TLS; point a client at it
with `api.client_configuration()`.

    with KubeAPI() as api:
        core = kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(api.client_configuration()))
        core.create_namespace({"metadata": {"name": "shop"}})

Where it knowingly differs from a real cluster: no authentication or admission, no defaulting
beyond metadata, strategic merge patch is a plain merge patch, core/v1 and events.k8s.io/v1
Events are stored separately, and pods are deleted at once (no kubelet, no grace period).
"""

from __future__ import annotations

import contextlib
import copy
import re
import select
import socket
import threading
import time
from typing import Callable, Iterator

from .faults import Fault, FaultPlan, RequestLog, RequestRecord
from .handler import RequestHandler, StandInServer, watch_event_type
from .resources import ResourceType, lookup_by_kind
from .selectors import label_selector as compile_label_selector
from .store import ApiError, Store, status_object


class KubeAPI:
    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, history_size: int = 1000,
                 namespace_delete_delay: float = 0.2, bookmark_interval: float = 1.0):
        """history_size: watch events kept (older resourceVersions get 410 Gone);
        namespace_delete_delay: seconds a deleted namespace stays Terminating;
        bookmark_interval: seconds between BOOKMARK events on watches that allow them."""
        self.host = host
        self._port = port
        self.bookmark_interval = bookmark_interval
        self._store = Store(history_size, namespace_delete_delay)
        self._faults = FaultPlan()
        self._log = RequestLog()
        self._server: StandInServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._watching: set[socket.socket] = set()  # connections currently streaming a watch
        self._conn_lock = threading.Lock()
        self._watch_epoch = 0  # bumped to end every open watch
        self._open_watches = 0
        self._started = False

    # ---- lifecycle -------------------------------------------------------------------

    def start(self) -> "KubeAPI":
        if self._started:
            raise RuntimeError("KubeAPI is already started")
        if self._store.closed:
            raise RuntimeError("a stopped KubeAPI cannot be restarted; create a new one "
                               "(use stop_accepting()/start_accepting() to simulate an outage)")
        self._started = True
        self._listen()
        return self

    def stop(self) -> None:
        """Stop serving: ends every watch and connection and joins every thread it started."""
        if not self._started:
            return
        self._started = False
        self._unlisten()
        self._store.close()

    def __enter__(self) -> "KubeAPI":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _listen(self) -> None:
        self._server = StandInServer((self.host, self._port), self)
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="kubeapi-server", daemon=True)
        self._thread.start()

    def _unlisten(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()  # no new connections are accepted after this
        self._thread.join()
        self._thread = None
        self.drop_watches()
        # Let watch handlers finish their streams cleanly before the sockets go away.
        deadline = time.monotonic() + 2.0
        with self._store.changed:
            while self._open_watches and time.monotonic() < deadline:
                self._store.changed.wait(0.05)
        with self._conn_lock:
            conns = list(self._connections)
        for conn in conns:  # wake handlers idling on keep-alive connections
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        server.server_close()  # closes the listener and joins connection threads

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._port}"

    def client_configuration(self):
        """A kubernetes.client.Configuration pointing at this stand-in (plain HTTP, no auth)."""
        import kubernetes.client

        config = kubernetes.client.Configuration()
        config.host = self.url
        return config

    def api_client(self):
        """A kubernetes.client.ApiClient for this stand-in; close it when done."""
        import kubernetes.client

        return kubernetes.client.ApiClient(self.client_configuration())

    # ---- direct state access (no HTTP, not logged, not subject to faults) -------------

    def put_object(self, obj: dict) -> dict:
        """Create or replace `obj` (needs apiVersion, kind, metadata.name); returns the stored copy.

        Its namespace is created when missing; status is kept as given; watchers see the change."""
        return self._store.put(obj)

    def get_object(self, kind: str, namespace: str | None, name: str,
                   api_version: str | None = None) -> dict | None:
        """The stored object, or None. `kind` like "Pod"; "Event" is core/v1 unless api_version says otherwise."""
        rt = lookup_by_kind(kind, api_version)
        try:
            return self._store.get(rt, namespace if rt.namespaced else None, name)
        except ApiError:
            return None

    def list_objects(self, kind: str, namespace: str | None = None, *, label_selector: str | None = None,
                     api_version: str | None = None) -> list[dict]:
        """Stored objects of a kind (all namespaces when namespace is None), sorted by namespace/name."""
        rt = lookup_by_kind(kind, api_version)
        by_label = compile_label_selector(label_selector)
        items, _ = self._store.list(rt, namespace if rt.namespaced else None, by_label)
        return items

    def delete_object(self, kind: str, namespace: str | None, name: str,
                      api_version: str | None = None) -> bool:
        """Delete like an API DELETE (namespaces go through Terminating); False when it was missing."""
        rt = lookup_by_kind(kind, api_version)
        try:
            self._store.delete(rt, namespace if rt.namespaced else None, name)
            return True
        except ApiError:
            return False

    @property
    def resource_version(self) -> int:
        """The current global resourceVersion (as an int; the API serves it as a string)."""
        return self._store.resource_version

    @property
    def namespace_delete_delay(self) -> float:
        return self._store.namespace_delete_delay

    @namespace_delete_delay.setter
    def namespace_delete_delay(self, seconds: float) -> None:
        self._store.namespace_delete_delay = seconds

    def set_history_size(self, size: int) -> None:
        """Keep only the last `size` events for watches (older starting points get 410 Gone)."""
        self._store.resize_history(size)

    # ---- fault injection ---------------------------------------------------------------

    def inject_failure(self, method: str = "*", path_regex: str = "", status: int = 500, count: int = 1,
                       *, message: str | None = None, retry_after: int | None = None) -> Fault:
        """The next `count` requests matching method ("*" = any) and re.search(path_regex, path)
        get `status` with a Status body. retry_after adds a Retry-After header (note: urllib3 then
        retries GET/PUT/DELETE on 429/503 by itself). Returns a Fault (hits, remaining, cancel())."""
        return self._faults.add(Fault(method.upper(), re.compile(path_regex), count, status=status,
                                      message=message or "", retry_after=retry_after))

    def add_latency(self, seconds: float, method: str = "*", path_regex: str = "",
                    count: int | None = None) -> Fault:
        """Delay matching requests by `seconds` before serving them (count None = until cancelled)."""
        return self._faults.add(Fault(method.upper(), re.compile(path_regex), count, delay=seconds))

    def clear_faults(self) -> None:
        self._faults.clear()

    def drop_watches(self, abrupt: bool = False) -> int:
        """End every open watch stream now; returns how many were open.

        abrupt=False ends each stream cleanly (like a server-side timeout); abrupt=True also
        shuts the sockets down (like a network failure)."""
        with self._store.changed:
            count = self._open_watches
            self._watch_epoch += 1
            self._store.changed.notify_all()
        if abrupt:
            with self._conn_lock:
                conns = list(self._watching)
            for conn in conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        return count

    def stop_accepting(self) -> None:
        """Simulate an API outage: close the listener and all connections; state is kept."""
        self._unlisten()

    def start_accepting(self) -> None:
        """End an outage: listen again on the same port."""
        if self._server is None and self._started:
            self._listen()

    @property
    def accepting(self) -> bool:
        return self._server is not None

    @contextlib.contextmanager
    def outage(self) -> Iterator[None]:
        self.stop_accepting()
        try:
            yield
        finally:
            self.start_accepting()

    def compact(self) -> int:
        """Drop the watch history: a watch from any older resourceVersion gets 410 Gone.
        Returns the resourceVersion from which watching still works."""
        return self._store.compact()

    # ---- observability -------------------------------------------------------------------

    def requests(self, method: str | None = None, path_regex: str | None = None,
                 watch: bool | None = None) -> list[RequestRecord]:
        """Logged requests, oldest first. A request is logged just before its response is
        written (a watch: when its stream opens, with duration up to that point)."""
        pattern = re.compile(path_regex) if path_regex else None
        return [r for r in self._log.records()
                if (method is None or r.method == method.upper())
                and (pattern is None or pattern.search(r.path))
                and (watch is None or r.watch == watch)]

    def writes(self, namespace: str | None = None) -> int:
        """How many POST/PUT/PATCH/DELETE requests were served (to objects in `namespace`, if given)."""
        return sum(1 for r in self._log.records()
                   if r.is_write and (namespace is None or r.namespace == namespace))

    def reset_log(self) -> None:
        self._log.reset()

    @property
    def open_watches(self) -> int:
        with self._store.lock:
            return self._open_watches

    def wait_for_watches(self, count: int = 1, timeout: float = 5.0) -> bool:
        """Block until at least `count` watch streams are open (so a test knows its watcher
        is listening before it makes changes); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._store.changed:
            while self._open_watches < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._store.changed.wait(remaining)
            return True

    # ---- internals used by the handler ---------------------------------------------------

    def _track_connection(self, conn: socket.socket, add: bool) -> None:
        with self._conn_lock:
            (self._connections.add if add else self._connections.discard)(conn)

    def _interruptible_sleep(self, seconds: float) -> None:
        """Sleep for injected latency, but wake early when the server stops or watches are dropped."""
        deadline = time.monotonic() + seconds
        with self._store.changed:
            epoch = self._watch_epoch
            while self._watch_epoch == epoch and not self._store.closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._store.changed.wait(remaining)

    def _serve_watch(self, handler: RequestHandler, rt: ResourceType, ns: str | None,
                     match: Callable[[dict], bool], query: dict) -> int:
        store = self._store
        rv_text = query.get("resourceVersion", "")
        try:
            timeout = float(query["timeoutSeconds"]) if query.get("timeoutSeconds") else None
            since = int(rv_text) if rv_text not in ("", "0") else None
        except ValueError:
            raise ApiError(400, "BadRequest", f"invalid resourceVersion or timeoutSeconds in {query}") from None
        bookmarks = query.get("allowWatchBookmarks", "").lower() in ("true", "1")
        deadline = time.monotonic() + timeout if timeout else None

        # Like the real server: without a resourceVersion (or "0") the watch first replays
        # the current state as synthetic ADDED events, then follows changes from there.
        initial: list[dict] = []
        with store.lock:
            epoch = self._watch_epoch
            if since is None:
                initial, since = store.list(rt, ns, match)
            self._open_watches += 1
            store.changed.notify_all()
        with self._conn_lock:
            self._watching.add(handler.connection)
        try:
            handler.start_stream()
            for obj in initial:
                handler.write_event("ADDED", obj)
            last_bookmark = time.monotonic()
            while True:
                events, gone, bookmark_rv, finished = [], None, None, False
                with store.changed:
                    while True:
                        if store.closed or self._watch_epoch != epoch:
                            finished = True
                            break
                        try:
                            events = store.events_after(rt, since)
                        except ApiError as exc:
                            gone = exc
                            break
                        since = max(since, store.resource_version)
                        if events:
                            break
                        now = time.monotonic()
                        if deadline is not None and now >= deadline:
                            finished = True
                            break
                        if bookmarks and now - last_bookmark >= self.bookmark_interval:
                            bookmark_rv = since
                            break
                        if _client_gone(handler.connection):
                            finished = True  # nobody is listening; free the thread now
                            break
                        waits = [0.25]
                        if deadline is not None:
                            waits.append(deadline - now)
                        if bookmarks:
                            waits.append(self.bookmark_interval - (now - last_bookmark))
                        store.changed.wait(max(0.001, min(waits)))
                if gone is not None:
                    handler.write_event("ERROR", status_object(gone.code, gone.reason, gone.message))
                    break
                for ev in events:
                    etype = watch_event_type(ev.type, ev.old is not None and match(ev.old)
                                             or (ev.type == "DELETED" and match(ev.obj)), match(ev.obj))
                    if etype == "DELETED" and ev.type == "MODIFIED":
                        # left the selector: like the real server's watch cache, the object as it
                        # was when it last matched, at the change's resourceVersion
                        left = copy.deepcopy(ev.old)
                        left["metadata"]["resourceVersion"] = ev.obj["metadata"]["resourceVersion"]
                        handler.write_event(etype, left)
                    elif etype is not None:
                        handler.write_event(etype, ev.obj)
                if bookmark_rv is not None:
                    handler.write_event("BOOKMARK", {"kind": rt.kind, "apiVersion": rt.api_version,
                                                     "metadata": {"resourceVersion": str(bookmark_rv)}})
                    last_bookmark = time.monotonic()
                if finished:
                    break
            handler.end_stream()
        finally:
            with self._conn_lock:
                self._watching.discard(handler.connection)
            with store.changed:
                self._open_watches -= 1
                store.changed.notify_all()
        return 200


def _client_gone(sock: socket.socket) -> bool:
    """True when the watching client has closed its end (a readable socket with nothing to read)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except (OSError, ValueError):
        return True
