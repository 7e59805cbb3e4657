"""core/v1 Events on a Namespace, so `kubectl get events -n NS` (and describe) explain what the
isolation controller did and why.

Events are writes too, and a steady state must make none: conditions that persist (an
unknown label value, a name taken by someone else's policy) are reported once, and again
only when the message changes or the condition cleared in between (`once`). Events that
accompany a real change (created, restored, removed) are always recorded.
"""
from __future__ import annotations

import datetime as _dt
import logging
import threading
import time
from typing import Any, Mapping

log = logging.getLogger(__name__)

COMPONENT = "netpol-guard"


class EventRecorder:
    def __init__(self, api_client: Any, *, instance: str = "", request_timeout: float = 10.0):
        import kubernetes.client

        self._core = kubernetes.client.CoreV1Api(api_client)
        self._instance = instance
        self._timeout = request_timeout
        self._lock = threading.Lock()
        self._reported: dict[tuple[str, str], str] = {}  # (namespace, reason) -> message
        self.recorded = 0
        self.failed = 0

    def record(self, namespace: Mapping[str, Any], type_: str, reason: str, message: str, *,
               once: bool = False) -> bool:
        """Write one Event about `namespace` (the Namespace object); returns whether one was written.
        Failures are logged, never raised: an Event is an explanation, not the work."""
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
            "metadata": {"name": f"{name}.{time.time_ns():x}", "namespace": name},
            "involvedObject": {"apiVersion": "v1", "kind": "Namespace", "name": name,
                               "uid": meta.get("uid"), "resourceVersion": meta.get("resourceVersion")},
            "reason": reason, "message": message, "type": type_,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT, "reportingInstance": self._instance or COMPONENT,
            "action": reason, "firstTimestamp": stamp, "lastTimestamp": stamp, "eventTime": micro, "count": 1,
        }
        try:
            self._core.create_namespaced_event(name, body, _preload_content=False, _request_timeout=self._timeout)
        except Exception as exc:  # noqa: BLE001
            with self._lock:
                self.failed += 1
                if once:  # let a later reconcile try again
                    self._reported.pop(key, None)
            log.warning("namespace %s: could not record event %s: %s", name, reason,
                        getattr(exc, "status", None) or exc)
            return False
        with self._lock:
            self.recorded += 1
        return True

    def clear(self, namespace: str, reason: str) -> None:
        """The condition behind a `once` event is gone; report it again if it comes back."""
        with self._lock:
            self._reported.pop((namespace, reason), None)

    def forget_namespace(self, namespace: str) -> None:
        with self._lock:
            for key in [k for k in self._reported if k[0] == namespace]:
                del self._reported[key]
