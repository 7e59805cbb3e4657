"""core/v1 Events on a Namespace, so `kubectl get events` explains what the isolation controller
did and why.

Where they live: in the namespace `default`, like client-go's recorder puts every Event about a
cluster-scoped object. A Namespace is cluster-scoped (its involvedObject has no namespace), and
the API server refuses (422) such an Event anywhere but `default` or `kube-system` - an Event in
the labeled namespace itself is never stored. Find them with
`kubectl -n default get events --field-selector involvedObject.kind=Namespace,involvedObject.name=NS`.

Events are writes too, and a steady state must make none: conditions that persist (an
unknown label value, a name taken by someone else's policy) are reported once, and again
only when the message changes or the condition cleared in between (`once`). Events that
accompany a real change (created, restored, removed) are always recorded.

Events are sent by one background thread, so a reconcile never waits for its
explanation, and while namespaces are waiting in the work queue (a burst of labels)
the sender holds back (up to `max_defer` seconds per event): policies first, then the
Events that explain them.
"""
from __future__ import annotations

import datetime as _dt
import logging
import queue
import threading
import time
from typing import Any, Callable, Mapping, Optional

log = logging.getLogger(__name__)

COMPONENT = "netpol-guard"
EVENT_NAMESPACE = "default"  # see above: the only namespace a real API server accepts (with kube-system)


class EventRecorder:
    def __init__(self, api_client: Any, *, instance: str = "", request_timeout: float = 10.0,
                 busy: Optional[Callable[[], bool]] = None, max_defer: float = 5.0):
        import kubernetes.client

        self._core = kubernetes.client.CoreV1Api(api_client)
        self._instance = instance
        self._timeout = request_timeout
        self._lock = threading.Lock()
        self._reported: dict[tuple[str, str], str] = {}  # (namespace, reason) -> message
        self.recorded = 0
        self.failed = 0
        self._pending: "queue.Queue[Optional[tuple]]" = queue.Queue()
        self._sender: Optional[threading.Thread] = None
        self._closed = False
        self._busy = busy or (lambda: False)
        self._max_defer = max_defer

    def record(self, namespace: Mapping[str, Any], type_: str, reason: str, message: str, *,
               once: bool = False) -> bool:
        """Queue one Event about `namespace` (the Namespace object); returns whether one was queued
        (False: a `once` event already reported). Failures are logged, never raised: an Event
        is an explanation, not the work."""
        meta = namespace.get("metadata") or {}
        name = meta.get("name", "")
        key = (name, reason)
        with self._lock:
            if once and self._reported.get(key) == message:
                return False
            self._reported[key] = message
        (log.warning if type_ == "Warning" else log.info)("namespace %s: %s: %s", name, reason, message)
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        micro = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{name}.{time.time_ns():x}", "namespace": EVENT_NAMESPACE},
            "involvedObject": {"apiVersion": "v1", "kind": "Namespace", "name": name,
                               "uid": meta.get("uid"), "resourceVersion": meta.get("resourceVersion")},
            "reason": reason, "message": message, "type": type_,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT, "reportingInstance": self._instance or COMPONENT,
            "action": reason, "firstTimestamp": stamp, "lastTimestamp": stamp, "eventTime": micro, "count": 1,
        }
        with self._lock:
            if self._closed:
                return False
            if self._sender is None:
                self._sender = threading.Thread(target=self._send_loop, name="isolation-events", daemon=True)
                self._sender.start()
        self._pending.put((name, body, key if once else None))
        return True

    def _send_loop(self) -> None:
        while True:
            item = self._pending.get()
            try:
                if item is None:
                    return
                deadline = time.monotonic() + self._max_defer
                while not self._closed and self._busy() and time.monotonic() < deadline:
                    time.sleep(0.02)
                self._send(*item)
            finally:
                self._pending.task_done()

    def _send(self, name: str, body: dict, once_key: Optional[tuple]) -> None:
        try:
            resp = self._core.create_namespaced_event(EVENT_NAMESPACE, body, _preload_content=False,
                                                      _request_timeout=self._timeout)
            resp.release_conn()  # nothing to read; give the connection back to the pool
        except Exception as exc:  # noqa: BLE001
            with self._lock:
                self.failed += 1
                if once_key is not None:  # let a later reconcile try again
                    self._reported.pop(once_key, None)
            log.warning("namespace %s: could not record event %s: %s", name, body["reason"],
                        getattr(exc, "status", None) or exc)
            return
        with self._lock:
            self.recorded += 1

    def idle(self) -> bool:
        """Nothing queued or being sent."""
        return self._pending.unfinished_tasks == 0

    def stop(self, timeout: float = 5.0) -> None:
        """Send what is queued (up to `timeout`), then stop the sender."""
        with self._lock:
            self._closed = True
            sender = self._sender
        if sender is None:
            return
        self._pending.put(None)
        sender.join(timeout)

    def clear(self, namespace: str, reason: str) -> None:
        """The condition behind a `once` event is gone; report it again if it comes back."""
        with self._lock:
            self._reported.pop((namespace, reason), None)

    def forget_namespace(self, namespace: str) -> None:
        with self._lock:
            for key in [k for k in self._reported if k[0] == namespace]:
                del self._reported[key]
