"""The stand-in's state: objects, the global resourceVersion counter and the event history.

Everything here runs under one lock; `changed` (a Condition on that lock) wakes watchers.
Errors are raised as ApiError carrying the same Status object the real server sends.
"""

from __future__ import annotations

import base64
import copy
import random
import threading
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Iterable

from .patching import PatchError, json_patch, merge_patch
from .resources import NAMESPACE, ResourceType, lookup_by_kind

NAME_LABEL = "kubernetes.io/metadata.name"
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the alphabet generateName uses


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_object(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    status = {"kind": "Status", "apiVersion": "v1", "metadata": {},
              "status": "Success" if code < 400 else "Failure", "message": message,
              "reason": reason, "code": code}
    if details is not None:
        status["details"] = details
    return status


class ApiError(Exception):
    """An error response: HTTP status `code` with a Status body."""

    def __init__(self, code: int, reason: str, message: str, details: dict | None = None):
        super().__init__(f"{code} {reason}: {message}")
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> dict:
        return status_object(self.code, self.reason, self.message, self.details)


def _qualified(rt: ResourceType) -> str:
    return f"{rt.plural}.{rt.group}" if rt.group else rt.plural


def _details(rt: ResourceType, name: str) -> dict:
    details = {"name": name, "kind": rt.plural}
    if rt.group:
        details["group"] = rt.group
    return details


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{_qualified(rt)} "{name}" not found', _details(rt, name))


def conflict(rt: ResourceType, name: str, why: str) -> ApiError:
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {_qualified(rt)} "{name}": {why}',
                    _details(rt, name))


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def invalid(rt: ResourceType, name: str, message: str) -> ApiError:
    return ApiError(422, "Invalid", f'{rt.kind} "{name}" is invalid: {message}', _details(rt, name))


def _check_event_namespace(rt: ResourceType, obj: dict) -> None:
    """The real server's namespace rule for Events, both APIs (pkg/apis/core/validation/events.go):
    an Event about a cluster-scoped object (involvedObject without a namespace) may live only in
    `default` (or, with eventTime set, `kube-system`); one about a namespaced object only in that
    object's namespace (without eventTime). Found by the e2e tier: the stand-in used to accept
    Events about a Namespace stored in that namespace, which a real API server refuses."""
    meta = obj["metadata"]
    involved = obj.get("involvedObject") or obj.get("regarding") or {}  # core/v1 | events.k8s.io/v1
    ns, involved_ns = meta.get("namespace", ""), involved.get("namespace") or ""
    allowed = {"default", "kube-system"} if obj.get("eventTime") else {"default"}
    if (not involved_ns and ns not in allowed) or (involved_ns and not obj.get("eventTime") and ns != involved_ns):
        raise invalid(rt, meta.get("name", ""), f"involvedObject.namespace: Invalid value: \"{involved_ns}\": "
                                                "does not match event.namespace")


@dataclass(frozen=True)
class Event:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    rtype: ResourceType
    obj: dict  # the object after the change (for DELETED: as deleted, with the delete's RV)
    old: dict | None  # the object before the change (None for ADDED)


class Store:
    def __init__(self, history_size: int = 1000, namespace_delete_delay: float = 0.2):
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.namespace_delete_delay = namespace_delete_delay
        self._objects: dict[ResourceType, dict[tuple[str, str], dict]] = {}
        self._rv = 0
        self._history: deque[Event] = deque(maxlen=max(1, history_size))
        self._history_start = 0  # every event with rv > this is still in _history
        self._timers: list[threading.Timer] = []
        self._service_ips = 0
        self.closed = False

    # ---- bookkeeping -------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        with self.lock:
            return self._rv

    def _table(self, rt: ResourceType) -> dict[tuple[str, str], dict]:
        return self._objects.setdefault(rt, {})

    def _commit(self, rt: ResourceType, etype: str, obj: dict, old: dict | None) -> dict:
        """Record a change: new RV, store or drop the object, append to history, wake watchers."""
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        if etype == "DELETED":
            self._table(rt).pop(key, None)
        else:
            self._table(rt)[key] = obj
        if len(self._history) == self._history.maxlen:
            self._history_start = self._history[0].rv
        self._history.append(Event(self._rv, etype, rt, obj, old))
        self.changed.notify_all()
        return copy.deepcopy(obj)

    def compact(self) -> int:
        """Forget all history, like etcd compaction: older watches get 410 Gone."""
        with self.lock:
            self._history.clear()
            self._history_start = self._rv
            self.changed.notify_all()
            return self._rv

    def resize_history(self, size: int) -> None:
        with self.lock:
            events = list(self._history)[-size:]
            if len(events) < len(self._history):
                self._history_start = events[0].rv - 1 if events else self._rv
            self._history = deque(events, maxlen=max(1, size))

    def close(self) -> None:
        with self.lock:
            self.closed = True
            timers, self._timers = self._timers, []
            self.changed.notify_all()
        for t in timers:
            t.cancel()
            if t is not threading.current_thread():
                t.join()

    # ---- reads -------------------------------------------------------------------

    def get(self, rt: ResourceType, ns: str | None, name: str) -> dict:
        with self.lock:
            obj = self._table(rt).get((ns or "", name))
            if obj is None:
                raise not_found(rt, name)
            return copy.deepcopy(obj)

    def list(self, rt: ResourceType, ns: str | None = None,
             match: Callable[[dict], bool] = lambda o: True, copies: bool = True) -> tuple[list[dict], int]:
        """Matching objects sorted by (namespace, name), and the RV they were read at.

        copies=False returns the stored objects themselves, for a caller that copies only
        what it keeps (one page of a paged list): stored objects are replaced on every
        write, never changed in place, so they stay as read. Copying the whole collection
        for every page made a list of N objects in pages cost O(N^2) copies."""
        with self.lock:
            items = [copy.deepcopy(o) if copies else o for (ons, _), o in sorted(self._table(rt).items())
                     if (ns is None or ons == ns) and match(o)]
            return items, self._rv

    def events_after(self, rt: ResourceType, rv: int) -> list[Event]:
        """History events of this type newer than rv; 410 Gone when some were already forgotten."""
        if rv < self._history_start:
            raise ApiError(410, "Expired",
                           f"too old resource version: {rv} ({self._history_start + 1})")
        found = []
        for ev in reversed(self._history):
            if ev.rv <= rv:
                break
            if ev.rtype is rt:
                found.append(ev)
        found.reverse()
        return found

    # ---- writes ------------------------------------------------------------------

    def _check_namespace_writable(self, rt: ResourceType, ns: str, name: str) -> None:
        nsobj = self._table(NAMESPACE).get(("", ns))
        if nsobj is None:
            raise ApiError(404, "NotFound", f'namespaces "{ns}" not found',
                           {"name": ns, "kind": "namespaces"})
        if nsobj["metadata"].get("deletionTimestamp"):
            raise ApiError(403, "Forbidden",
                           f'{_qualified(rt)} "{name}" is forbidden: unable to create new content in '
                           f"namespace {ns} because it is being terminated",
                           {**_details(rt, name), "causes": [{"reason": "NamespaceTerminating",
                                                              "message": f"namespace {ns} is being terminated",
                                                              "field": "metadata.namespace"}]})

    def _normalise(self, rt: ResourceType, obj: dict, ns: str | None) -> dict:
        if not isinstance(obj, dict):
            raise bad_request(f"the body of a {rt.kind} request must be a JSON object")
        obj = copy.deepcopy(obj)
        if obj.get("kind") not in (None, "", rt.kind):
            raise bad_request(f"the kind of the provided object ({obj['kind']}) does not match "
                              f"the resource type {rt.kind}")
        obj["kind"], obj["apiVersion"] = rt.kind, rt.api_version
        meta = obj.get("metadata")
        if meta is None:
            meta = obj["metadata"] = {}
        if not isinstance(meta, dict):
            raise bad_request(f"{rt.kind} metadata must be an object")
        if rt.namespaced:
            if meta.get("namespace") and ns and meta["namespace"] != ns:
                raise bad_request("the namespace of the provided object does not match the "
                                  "namespace sent on the request")
            meta["namespace"] = ns or meta.get("namespace") or "default"
        else:
            meta.pop("namespace", None)
        if rt is NAMESPACE:
            # The real server always keeps this label equal to the name.
            meta["labels"] = {**(meta.get("labels") or {}), NAME_LABEL: meta.get("name", "")}
        if rt.kind == "Secret" and rt.group == "":
            # Like the real server: stringData is write-only, folded into base64 data.
            string_data = obj.pop("stringData", None) or {}
            if string_data:
                obj["data"] = {**(obj.get("data") or {}),
                               **{k: base64.b64encode(str(v).encode()).decode() for k, v in string_data.items()}}
            obj.setdefault("type", "Opaque")
        return obj

    def create(self, rt: ResourceType, ns: str | None, body: dict, dry_run: bool = False) -> dict:
        obj = self._normalise(rt, body, ns)
        meta = obj["metadata"]
        with self.lock:
            if not meta.get("name"):
                if not meta.get("generateName"):
                    raise invalid(rt, "", "metadata.name: Required value: name or generateName is required")
                table = self._table(rt)
                while True:
                    meta["name"] = meta["generateName"] + "".join(random.choices(_SUFFIX_ALPHABET, k=5))
                    if (meta.get("namespace", ""), meta["name"]) not in table:
                        break
                if rt is NAMESPACE:
                    meta["labels"][NAME_LABEL] = meta["name"]
            name = meta["name"]
            if rt.namespaced:
                self._check_namespace_writable(rt, meta["namespace"], name)
            if (meta.get("namespace", ""), name) in self._table(rt):
                raise ApiError(409, "AlreadyExists", f'{_qualified(rt)} "{name}" already exists',
                               _details(rt, name))
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_rfc3339()
            meta["generation"] = 1
            for transient in ("resourceVersion", "deletionTimestamp", "selfLink"):
                meta.pop(transient, None)
            if rt is NAMESPACE:
                obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
                obj["status"] = {"phase": "Active"}
            if rt.kind == "Service":
                self._default_service(obj)
            if rt.kind == "Event":
                _check_event_namespace(rt, obj)
            if dry_run:
                return obj
            return self._commit(rt, "ADDED", obj, None)

    def _default_service(self, obj: dict) -> None:
        """Service type and a cluster IP, as the real server allocates them."""
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            spec = obj["spec"] = {}
        spec.setdefault("type", "ClusterIP")
        if spec["type"] != "ExternalName" and not spec.get("clusterIP"):
            self._service_ips += 1
            n = self._service_ips
            spec["clusterIP"] = f"10.96.{n // 250}.{n % 250 + 1}"
            spec["clusterIPs"] = [spec["clusterIP"]]

    def update(self, rt: ResourceType, ns: str | None, name: str, body: dict,
               subresource: str | None = None, dry_run: bool = False) -> dict:
        new = self._normalise(rt, body, ns)
        if new["metadata"].get("name") not in (None, "", name):
            raise bad_request(f"the name of the object ({new['metadata']['name']}) does not match "
                              f"the name on the URL ({name})")
        new["metadata"]["name"] = name
        with self.lock:
            current = self._table(rt).get((ns or "", name))
            if current is None:
                raise not_found(rt, name)
            given = new["metadata"].get("resourceVersion")
            if given and given != current["metadata"]["resourceVersion"]:
                raise conflict(rt, name, "the object has been modified; please apply your changes "
                                         "to the latest version and try again")
            return self._replace(rt, current, new, self._status_mode(rt, subresource), dry_run)

    @staticmethod
    def _status_mode(rt: ResourceType, subresource: str | None) -> str:
        if subresource == "status":
            return "only"  # PUT/PATCH .../status changes nothing but status
        return "keep" if rt.has_status else "take"  # main resource ignores status if it has /status

    def _replace(self, rt: ResourceType, current: dict, new: dict, status_mode: str,
                 dry_run: bool) -> dict:
        if status_mode == "only":
            merged = copy.deepcopy(current)
            merged["status"] = new.get("status")
            new = merged
        elif status_mode == "keep":
            if "status" in current:
                new["status"] = copy.deepcopy(current["status"])
            else:
                new.pop("status", None)
        meta, old_meta = new["metadata"], current["metadata"]
        for fixed in ("uid", "creationTimestamp", "deletionTimestamp", "generation", "namespace"):
            if fixed in old_meta:
                meta[fixed] = old_meta[fixed]
            else:
                meta.pop(fixed, None)
        meta["resourceVersion"] = old_meta["resourceVersion"]
        if rt.kind == "Service" and isinstance(new.get("spec"), dict):
            for allocated in ("clusterIP", "clusterIPs"):  # immutable once allocated
                if allocated in (current.get("spec") or {}):
                    new["spec"].setdefault(allocated, current["spec"][allocated])
        if rt is NAMESPACE:
            meta["labels"] = {**(meta.get("labels") or {}), NAME_LABEL: meta["name"]}

        def body_of(o: dict) -> dict:
            return {k: v for k, v in o.items() if k not in ("metadata", "status", "kind", "apiVersion")}

        if body_of(new) != body_of(current):
            meta["generation"] = old_meta.get("generation", 0) + 1
        if new == current:
            return copy.deepcopy(current)  # a no-op write does not bump the resourceVersion
        if dry_run:
            return new
        if meta.get("deletionTimestamp") and not meta.get("finalizers") and rt is not NAMESPACE:
            return self._commit(rt, "DELETED", new, current)  # last finalizer removed
        return self._commit(rt, "MODIFIED", new, current)

    def patch(self, rt: ResourceType, ns: str | None, name: str, content_type: str, patch,
              subresource: str | None = None, dry_run: bool = False) -> dict:
        with self.lock:
            current = self._table(rt).get((ns or "", name))
            if current is None:
                raise not_found(rt, name)
            try:
                if content_type == "application/json-patch+json":
                    patched = json_patch(current, patch)
                elif content_type in ("application/merge-patch+json",
                                      "application/strategic-merge-patch+json"):
                    if not isinstance(patch, dict):
                        raise PatchError("a merge patch must be a JSON object")
                    patched = merge_patch(current, patch)
                else:
                    raise ApiError(415, "UnsupportedMediaType",
                                   f"the body of the request was in an unknown format - accepted media "
                                   f"types include: application/json-patch+json, application/merge-patch+json, "
                                   f"application/strategic-merge-patch+json (got {content_type!r})")
            except PatchError as exc:
                raise invalid(rt, name, str(exc)) from None
            if not isinstance(patched, dict):
                raise invalid(rt, name, "the patched object is not a JSON object")
            patched = self._normalise(rt, patched, ns)
            meta = patched["metadata"]
            if meta.get("name") != name:
                raise invalid(rt, name, "metadata.name: Invalid value: field is immutable")
            # A resourceVersion written by the patch is a precondition, as on the real server.
            given = meta.get("resourceVersion")
            if given and given != current["metadata"]["resourceVersion"]:
                raise conflict(rt, name, "the object has been modified; please apply your changes "
                                         "to the latest version and try again")
            return self._replace(rt, current, patched, self._status_mode(rt, subresource), dry_run)

    def delete(self, rt: ResourceType, ns: str | None, name: str, options: dict | None = None,
               dry_run: bool = False) -> tuple[dict, bool]:
        """Delete (or start deleting) an object; returns (object, gone_now)."""
        preconditions = (options or {}).get("preconditions") or {}
        with self.lock:
            current = self._table(rt).get((ns or "", name))
            if current is None:
                raise not_found(rt, name)
            meta = current["metadata"]
            for field, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
                want = preconditions.get(field)
                if want and want != meta.get(field):
                    raise conflict(rt, name, f"Precondition failed: {label} in precondition: {want}, "
                                             f"{label} in object meta: {meta.get(field)}")
            if dry_run:
                return copy.deepcopy(current), False
            if rt is NAMESPACE:
                return self._start_namespace_deletion(current), False
            if meta.get("finalizers"):
                if meta.get("deletionTimestamp"):
                    return copy.deepcopy(current), False
                new = copy.deepcopy(current)
                new["metadata"]["deletionTimestamp"] = now_rfc3339()
                return self._commit(rt, "MODIFIED", new, current), False
            gone = copy.deepcopy(current)
            return self._commit(rt, "DELETED", gone, current), True

    def _start_namespace_deletion(self, current: dict) -> dict:
        if current["metadata"].get("deletionTimestamp"):
            return copy.deepcopy(current)
        new = copy.deepcopy(current)
        new["metadata"]["deletionTimestamp"] = now_rfc3339()
        new["status"] = {**(new.get("status") or {}), "phase": "Terminating"}
        result = self._commit(NAMESPACE, "MODIFIED", new, current)
        name = new["metadata"]["name"]
        timer = threading.Timer(self.namespace_delete_delay, self._finish_namespace_deletion, (name,))
        timer.name = f"kubeapi-ns-reaper-{name}"
        timer.daemon = True
        self._timers.append(timer)
        timer.start()
        return result

    def _finish_namespace_deletion(self, name: str) -> None:
        """What the namespace controller does: delete everything inside, then the namespace."""
        with self.lock:
            self._timers = [t for t in self._timers if t is not threading.current_thread()]
            if self.closed:
                return
            for rt, table in self._objects.items():
                if rt.namespaced:
                    for key in sorted(k for k in table if k[0] == name):
                        obj = table[key]
                        self._commit(rt, "DELETED", copy.deepcopy(obj), obj)
            current = self._table(NAMESPACE).get(("", name))
            if current is not None and current["metadata"].get("deletionTimestamp"):
                self._commit(NAMESPACE, "DELETED", copy.deepcopy(current), current)

    def delete_collection(self, rt: ResourceType, ns: str | None, match: Callable[[dict], bool],
                          options: dict | None = None, dry_run: bool = False) -> list[dict]:
        with self.lock:
            names = [(o["metadata"].get("namespace"), o["metadata"]["name"])
                     for o in self.list(rt, ns, match)[0]]
            return [self.delete(rt, ons, oname, options, dry_run)[0] for ons, oname in names]

    # ---- direct access for test setup ----------------------------------------------

    def put(self, obj: dict) -> dict:
        """Create or replace an object as given, status included, creating its namespace if needed.

        No resourceVersion precondition applies; watchers see ADDED or MODIFIED as usual.
        """
        if not isinstance(obj, dict):
            raise TypeError("put_object needs a dict with apiVersion, kind and metadata")
        rt = lookup_by_kind(obj.get("kind", ""), obj.get("apiVersion"))
        body = copy.deepcopy(obj)
        meta = body.setdefault("metadata", {})
        ns = (meta.get("namespace") or "default") if rt.namespaced else None
        with self.lock:
            if rt.namespaced and ("", ns) not in self._table(NAMESPACE):
                self.create(NAMESPACE, None, {"metadata": {"name": ns}})
            current = self._table(rt).get((ns or "", meta.get("name") or ""))
            if current is None:
                return self.create(rt, ns, body)
            meta.pop("resourceVersion", None)
            return self._replace(rt, current, self._normalise(rt, body, ns), "take", False)

    def all_events(self) -> Iterable[Event]:
        with self.lock:
            return list(self._history)
