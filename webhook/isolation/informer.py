"""List-then-watch one collection into a local cache, calling back with what changed.

The controller decides from these caches, never from a fresh GET per event: a steady
state costs one open watch per collection and no other requests. Failure handling:

- a watch that ends (server timeout, dropped connection) is reopened from the last
  resourceVersion seen, so nothing is missed;
- 410 Gone (history compacted) and any other error mean relist: the new list is
  diffed against the cache and only real differences are reported;
- errors back off exponentially (with jitter, capped) so an outage is not a busy loop;
- relist() (the periodic resync) forces a fresh list, which heals a cache that missed
  an event for any reason;
- our own writes go into the cache at once (store/forget). A list answered before such a
  write but applied after it would undo it - the controller would then see its new policy
  gone and create it again (a 409 each time). So what we wrote while a list was in flight is
  kept unless the list shows a newer state of that object (compared by resourceVersion as
  an integer, as client-go's MutationCache does; when either is not an integer the list
  wins, as before). The watch that follows the list brings the write's own event anyway.
"""
from __future__ import annotations

import json
import logging
import random
import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional

from webhook.cluster.watching import ResourceKind, WatchGone, WatchStream

log = logging.getLogger(__name__)

Key = Any
OnChange = Callable[[Key, Optional[dict], Optional[dict]], None]  # (key, old, new)


class Informer:
    def __init__(self, name: str, list_call: Callable[..., Any], key_of: Callable[[dict], Key],
                 on_change: OnChange, *, label_selector: str = "", watch_timeout: int = 300,
                 backoff_base: float = 0.1, backoff_cap: float = 5.0, request_timeout: float = 10.0):
        """list_call: a kubernetes client list method (e.g. CoreV1Api.list_namespace)."""
        self.name = name
        self._list_call = list_call
        self._key_of = key_of
        self._on_change = on_change
        self._selector = label_selector
        self._watch_timeout = watch_timeout
        self._backoff_base, self._backoff_cap = backoff_base, backoff_cap
        self._request_timeout = request_timeout
        self._kind = ResourceKind(name, "", "")
        self._lock = threading.Lock()
        self._cache: dict[Key, dict] = {}
        self._stop = threading.Event()
        self._relist = threading.Event()
        self._synced = threading.Event()
        self._stream: Optional[WatchStream] = None
        self._thread: Optional[threading.Thread] = None
        self.relists = 0
        self.errors = 0
        # key -> what we wrote while a list was in flight (None: not listing); see the module doc
        self._written_while_listing: Optional[dict[Key, _Write]] = None

    # ---- cache access ------------------------------------------------------------------

    def get(self, key: Key) -> Optional[dict]:
        with self._lock:
            return self._cache.get(key)

    def items(self) -> list[dict]:
        with self._lock:
            return list(self._cache.values())

    def keys(self) -> list[Key]:
        with self._lock:
            return list(self._cache)

    def store(self, obj: dict) -> None:
        """Record the result of our own write at once, so the next reconcile does not act on
        the state before it (the watch event that follows carries the same object)."""
        key = self._key_of(obj)
        with self._lock:
            self._cache[key] = obj
            if self._written_while_listing is not None:
                self._written_while_listing[key] = _Write(obj, _int_rv(obj))

    def forget(self, key: Key) -> None:
        """Record that we deleted `key` (the object as our cache last had it is what we deleted)."""
        with self._lock:
            gone = self._cache.pop(key, None)
            if self._written_while_listing is not None:
                self._written_while_listing[key] = _Write(None, _int_rv(gone))

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    def wait_synced(self, timeout: float) -> bool:
        return self._synced.wait(timeout)

    # ---- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"informer-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._interrupt()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def relist(self) -> None:
        """Ask for a fresh list (the periodic resync)."""
        self._relist.set()
        self._interrupt()

    def _interrupt(self) -> None:
        stream = self._stream
        if stream is not None:
            stream.interrupt()

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                rv = self._list()
                failures = 0
                self._watch_from(rv)
            except WatchGone:
                log.info("%s: watch history expired; relisting", self.name)
            except Exception as exc:  # noqa: BLE001 - every failure means: back off, relist
                if self._stop.is_set():
                    break
                if self._relist.is_set():
                    continue  # we interrupted ourselves to relist
                self.errors += 1
                failures += 1
                delay = min(self._backoff_cap, self._backoff_base * 2 ** min(failures - 1, 20))
                delay = delay / 2 + random.random() * delay / 2
                log.warning("%s: %s; retrying in %.2fs", self.name, _describe(exc), delay)
                self._stop.wait(delay)

    def _list(self) -> str:
        self._relist.clear()
        with self._lock:
            self._written_while_listing = {}
        try:
            items, rv = self._list_pages()
        except BaseException:
            with self._lock:
                self._written_while_listing = None
            raise
        with self._lock:
            written, self._written_while_listing = self._written_while_listing or {}, None
            # in one critical section with the swap: no write of ours slips in between
            fresh = _keep_newer_writes({self._key_of(o): o for o in items}, written, _int(rv))
            old, self._cache = self._cache, fresh
        self.relists += 1
        for key in set(old) | set(fresh):
            before, after = old.get(key), fresh.get(key)
            if _rv(before) != _rv(after):
                self._on_change(key, before, after)
        self._synced.set()
        return rv

    def _list_pages(self) -> tuple[list[dict], str]:
        """All pages of one list: (items, the list's resourceVersion)."""
        items: list[dict] = []
        token = None
        while True:
            kwargs: dict[str, Any] = {"limit": 500}
            if token:
                kwargs["_continue"] = token
            if self._selector:
                kwargs["label_selector"] = self._selector
            resp = self._list_call(_preload_content=False, _request_timeout=self._request_timeout, **kwargs)
            try:
                body = json.loads(resp.data)
            finally:
                resp.release_conn()
            items.extend(body.get("items") or [])
            token = (body.get("metadata") or {}).get("continue")
            if not token:
                return items, (body.get("metadata") or {}).get("resourceVersion") or ""

    def _watch_from(self, rv: str) -> None:
        while not self._stop.is_set() and not self._relist.is_set():
            kwargs: dict[str, Any] = {"watch": True, "resource_version": rv, "allow_watch_bookmarks": True,
                                      "timeout_seconds": self._watch_timeout}
            if self._selector:
                kwargs["label_selector"] = self._selector
            resp = self._list_call(_preload_content=False,
                                   _request_timeout=(self._request_timeout, self._watch_timeout + 30), **kwargs)
            stream = WatchStream(self._kind, resp)
            self._stream = stream
            try:
                if self._stop.is_set() or self._relist.is_set():
                    return
                for event in stream.events():
                    obj = event["object"]
                    rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                    if event.get("type") == "BOOKMARK":
                        continue
                    key = self._key_of(obj)
                    with self._lock:
                        before = self._cache.get(key)
                        if event.get("type") == "DELETED":
                            self._cache.pop(key, None)
                            after = None
                        else:
                            self._cache[key] = obj
                            after = obj
                    self._on_change(key, before, after)
            finally:
                self._stream = None
                stream.close()


@dataclass(frozen=True)
class _Write:
    obj: Optional[dict]  # what we stored; None: we deleted it
    rv: Optional[int]  # the stored object's resourceVersion, or that of the object we deleted


def _keep_newer_writes(listed: dict, written: dict, list_rv: Optional[int]) -> dict:
    """The listed objects, with our writes made while the list was in flight put back where the
    list predates them. Without integer resourceVersions to compare, the list wins."""
    for key, w in written.items():
        seen = listed.get(key)
        if w.obj is not None:
            # created or updated: ours unless the list shows this object at a later version
            # (or, not showing it, was taken after our write: deleted since by someone else)
            newer_than = _int_rv(seen) if seen is not None else list_rv
            if w.rv is not None and newer_than is not None and w.rv > newer_than:
                listed[key] = w.obj
        elif seen is not None:
            # deleted: the list shows it still there - the version we deleted, or an older one
            seen_rv = _int_rv(seen)
            if w.rv is not None and seen_rv is not None and seen_rv <= w.rv:
                del listed[key]
    return listed


def _int(value: Optional[str]) -> Optional[int]:
    try:
        return int(value) if value else None
    except ValueError:
        return None


def _int_rv(obj: Optional[dict]) -> Optional[int]:
    return _int(_rv(obj))


def _rv(obj: Optional[dict]) -> Optional[str]:
    return None if obj is None else (obj.get("metadata") or {}).get("resourceVersion")


def _describe(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    if status:
        return f"HTTP {status} {getattr(exc, 'reason', '')}".strip()
    return f"{type(exc).__name__}: {exc}"
