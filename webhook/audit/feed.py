"""Applying changes to a ClusterView while remembering them for the audit.

The audit needs each change as (old, new); the view only holds the new state once a change
is applied. A Recorder looks up the old object, applies the change, and queues a Change;
the audit loop takes the queue (all changes since the last take) after its debounce. The
live cache calls it from its watch threads; tests and benchmarks call it directly.
"""
from __future__ import annotations

import threading
import time
from typing import Optional

from webhook.audit.deps import Change
from webhook.cluster.objects import Namespace, Pod, Service
from webhook.cluster.view import ClusterView
from webhook.policy.model import NetworkPolicy


def current(view: ClusterView, kind: str, namespace: str, name: str, pod_kind: str = "Pod") -> object:
    """The object the view holds now (None when it holds none)."""
    with view.lock:
        if kind == "Namespace":
            return view.namespace(name)
        if kind == "Pod":
            pid = view._pod_ids.get((pod_kind, namespace, name))
            return view._pods.get(pid) if pid is not None else None
        if kind == "Service":
            return view._services.get((namespace, name))
        if kind == "NetworkPolicy":
            return view.policy(namespace, name)
    raise ValueError(f"unknown kind {kind!r}")


def kind_of(obj: object) -> str:
    for cls, kind in ((Namespace, "Namespace"), (Pod, "Pod"), (Service, "Service"), (NetworkPolicy, "NetworkPolicy")):
        if isinstance(obj, cls):
            return kind
    raise TypeError(f"not a view object: {type(obj).__name__}")


class Recorder:
    """A front for a view's mutations that queues one Change per applied change."""

    def __init__(self, view: ClusterView):
        self.view = view
        self._lock = threading.Lock()
        self._changes: list[Change] = []
        self.first_at: Optional[float] = None  # monotonic time of the oldest queued change
        self.last_at: Optional[float] = None

    def _queue(self, change: Change) -> None:
        with self._lock:
            now = time.monotonic()
            if not self._changes:
                self.first_at = now
            self.last_at = now
            self._changes.append(change)

    def upsert(self, obj: object) -> None:
        kind = kind_of(obj)
        ns = "" if kind == "Namespace" else obj.namespace  # type: ignore[attr-defined]
        with self.view.lock:
            old = current(self.view, kind, ns, obj.name, getattr(obj, "kind", "Pod"))  # type: ignore[attr-defined]
            if kind == "Namespace":
                self.view.upsert_namespace(obj)  # type: ignore[arg-type]
            elif kind == "Pod":
                self.view.upsert_pod(obj)  # type: ignore[arg-type]
            elif kind == "Service":
                self.view.upsert_service(obj)  # type: ignore[arg-type]
            else:
                self.view.upsert_policy(obj)  # type: ignore[arg-type]
        if not _same(old, obj):
            self._queue(Change(kind, old, obj))

    def delete(self, kind: str, namespace: str, name: str, pod_kind: str = "Pod") -> None:
        with self.view.lock:
            old = current(self.view, kind, namespace, name, pod_kind)
            if old is None:
                return
            if kind == "Namespace":
                self.view.delete_namespace(name)
            elif kind == "Pod":
                self.view.delete_pod(namespace, name, pod_kind)
            elif kind == "Service":
                self.view.delete_service(namespace, name)
            else:
                self.view.delete_policy(namespace, name)
        self._queue(Change(kind, old, None))

    def pending(self) -> int:
        with self._lock:
            return len(self._changes)

    def take(self) -> list[Change]:
        with self._lock:
            out, self._changes = self._changes, []
            self.first_at = self.last_at = None
            return out


def _same(old: object, new: object) -> bool:
    """Whether an update changed nothing the audit reads (a status-only pod update, a resync)."""
    if old is None:
        return False
    if isinstance(new, Pod):
        return (old.labels == new.labels and old.ports == new.ports and old.ips == new.ips)  # type: ignore[attr-defined]
    if isinstance(new, Namespace):
        return old.labels == new.labels and old.terminating == new.terminating  # type: ignore[attr-defined]
    if isinstance(new, Service):
        return old == new
    return old == new  # NetworkPolicy: same key and same raw object
