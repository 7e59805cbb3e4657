"""The HTTP edge of the stand-in: routes Kubernetes REST calls onto the Store."""

from __future__ import annotations

import copy
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from .faults import RequestRecord, reason_for
from .resources import ResourceType, Route, parse_path
from .selectors import SelectorError, field_selector, label_selector
from .store import ApiError, bad_request, status_object

if TYPE_CHECKING:
    from .server import KubeAPI

_TRUE = ("true", "1")


class StandInServer(ThreadingHTTPServer):
    """Joins its connection threads on close, so nothing outlives stop()."""

    daemon_threads = False
    block_on_close = True
    request_queue_size = 128  # benchmarks open many connections at once; the default is 5

    def __init__(self, address, api: "KubeAPI"):
        self.api = api
        super().__init__(address, RequestHandler)

    def process_request_thread(self, request, client_address):
        threading.current_thread().name = "kubeapi-connection"
        super().process_request_thread(request, client_address)


def _selector(query: dict, ns: str | None):
    try:
        by_label = label_selector(query.get("labelSelector"))
        by_field = field_selector(query.get("fieldSelector"))
    except SelectorError as exc:
        raise bad_request(str(exc)) from None

    def match(obj: dict) -> bool:
        if ns is not None and (obj.get("metadata") or {}).get("namespace") != ns:
            return False
        return by_label(obj) and by_field(obj)

    return match


class RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive for ordinary calls, chunked streams for watches
    server_version = "kubeapi-stand-in"
    server: StandInServer
    streaming = False  # True once a watch stream has sent its headers

    # ---- connection bookkeeping --------------------------------------------------

    def setup(self):
        super().setup()
        # Headers and body go out as separate writes; without NODELAY, Nagle plus the client's
        # delayed ACK adds ~40 ms to every response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.api._track_connection(self.connection, True)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.api._track_connection(self.connection, False)

    def log_message(self, format, *args):  # the request log replaces stderr noise
        pass

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = lambda self: self._handle()

    # ---- responses -----------------------------------------------------------------

    def _send_json(self, code: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        self._log(code)
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise bad_request(f"the request body is not valid JSON: {exc}") from None

    # ---- dispatch ------------------------------------------------------------------

    def _handle(self) -> None:
        api = self.server.api
        self._started, self._t0 = time.time(), time.monotonic()
        url = urlsplit(self.path)
        path = url.path
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        route = parse_path(path)
        self._request = (path, query, route.namespace if route else None)
        self.streaming = False
        self._logged = False
        is_watch = self.is_watch = self.command == "GET" and query.get("watch", "").lower() in _TRUE
        try:
            body = self._read_body() if self.command in ("POST", "PUT", "PATCH", "DELETE") else None
            delay, fault = api._faults.take(self.command, path)
            if delay:
                api._interruptible_sleep(delay)
            if fault is not None:
                headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
                message = fault.message or f"injected {fault.status} for {self.command} {path}"
                raise _HeaderedError(fault.status, reason_for(fault.status), message, headers)
            self._dispatch(route, path, query, body, is_watch)
        except _HeaderedError as exc:
            self._send_json(exc.code, exc.status(), exc.headers)
        except ApiError as exc:
            self._send_json(exc.code, exc.status())
        except OSError:
            self.close_connection = True
            self._log(499)  # the client (or a dropped connection) went away mid-response
        except Exception as exc:  # a stand-in bug: answer like the real server's 500, keep serving
            self.close_connection = True
            if not self.streaming:
                self._send_json(500, status_object(500, "InternalError",
                                                   f"kube stand-in failed: {type(exc).__name__}: {exc}"))
            else:
                raise
        finally:
            self._log(500)  # only if nothing was logged yet

    def _log(self, status: int) -> None:
        """Record the request once, before its response is written, so a client that has its
        answer can already see it in the log. Watches are logged when their stream opens."""
        if self._logged:
            return
        self._logged = True
        path, query, namespace = self._request
        self.server.api._log.add(RequestRecord(self.command, path, query, status, self._started,
                                               time.monotonic() - self._t0, namespace, self.is_watch))

    def _dispatch(self, route: Route | None, path: str, query: dict, body, is_watch: bool) -> int:
        api = self.server.api
        if route is None:
            return self._non_resource(path)
        store, rt = api._store, route.rtype
        dry_run = query.get("dryRun") == "All"
        method = self.command
        if route.name is None:
            if method == "GET":
                match = _selector(query, route.namespace)
                if is_watch:
                    return api._serve_watch(self, rt, route.namespace, match, query)
                return self._list(rt, route.namespace, match, query)
            if method == "POST" and (route.namespace is not None or not rt.namespaced):
                if body is None:
                    raise bad_request(f"a {rt.kind} create needs a JSON body")
                obj = store.create(rt, route.namespace, body, dry_run)
                self._send_json(201, obj)
                return 201
            if method == "DELETE":
                deleted = store.delete_collection(rt, route.namespace, _selector(query, route.namespace),
                                                  body, dry_run)
                self._send_json(200, {"kind": rt.list_kind, "apiVersion": rt.api_version,
                                      "metadata": {"resourceVersion": str(store.resource_version)},
                                      "items": deleted})
                return 200
            raise ApiError(405, "MethodNotAllowed", f"the server does not allow this method on {path}")
        if method == "GET":
            self._send_json(200, store.get(rt, route.namespace, route.name))
            return 200
        if method == "PUT":
            if body is None:
                raise bad_request(f"a {rt.kind} update needs a JSON body")
            self._send_json(200, store.update(rt, route.namespace, route.name, body, route.subresource, dry_run))
            return 200
        if method == "PATCH":
            if body is None:
                raise bad_request(f"a {rt.kind} patch needs a JSON body")
            content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            self._send_json(200, store.patch(rt, route.namespace, route.name, content_type, body,
                                             route.subresource, dry_run))
            return 200
        if method == "DELETE" and route.subresource is None:
            obj, gone = store.delete(rt, route.namespace, route.name, body, dry_run)
            if gone and rt.plural != "pods":
                details = {"name": route.name, "kind": rt.plural, "uid": obj["metadata"].get("uid")}
                if rt.group:
                    details["group"] = rt.group
                self._send_json(200, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                      "status": "Success", "details": details})
            else:
                self._send_json(200, obj)  # namespaces/pods, and objects waiting on finalizers
            return 200
        raise ApiError(405, "MethodNotAllowed", f"the server does not allow this method on {path}")

    def _list(self, rt: ResourceType, ns: str | None, match, query: dict) -> int:
        items, rv = self.server.api._store.list(rt, ns, match, copies=False)
        meta: dict = {"resourceVersion": str(rv)}
        start = query.get("continue") or ""
        if start:
            items = [o for o in items if _sort_key(o) > tuple(json.loads(start))]
        limit = int(query.get("limit") or 0) if (query.get("limit") or "0").isdigit() else 0
        if limit and len(items) > limit:
            meta["continue"] = json.dumps(list(_sort_key(items[limit - 1])))
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        items = [copy.deepcopy(o) for o in items]  # the page only (the store handed out its own objects)
        for item in items:  # like the real server, list items carry no kind/apiVersion
            item.pop("kind", None)
            item.pop("apiVersion", None)
        self._send_json(200, {"kind": rt.list_kind, "apiVersion": rt.api_version,
                              "metadata": meta, "items": items})
        return 200

    def _non_resource(self, path: str) -> int:
        if path in ("/healthz", "/readyz", "/livez"):
            data = b"ok"
            self._log(200)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return 200
        if path == "/version":
            self._send_json(200, {"major": "1", "minor": "31", "gitVersion": "v1.31.0-kubeapi-stand-in",
                                  "platform": "linux/amd64"})
            return 200
        if path == "/api":
            self._send_json(200, {"kind": "APIVersions", "versions": ["v1"]})
            return 200
        raise ApiError(404, "NotFound", "the server could not find the requested resource", {})

    # ---- watch stream primitives (used by KubeAPI._serve_watch) -----------------------

    def start_stream(self) -> None:
        self.streaming = True
        self._log(200)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def write_event(self, etype: str, obj: dict) -> None:
        line = json.dumps({"type": etype, "object": obj}, separators=(",", ":")).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))

    def end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")


def _sort_key(obj: dict) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (meta.get("namespace") or "", meta.get("name") or "")


class _HeaderedError(ApiError):
    def __init__(self, code, reason, message, headers):
        super().__init__(code, reason, message)
        self.headers = headers


def watch_event_type(ev_type: str, old_ok: bool, new_ok: bool) -> str | None:
    """How a change looks through a selector: objects entering it are ADDED, leaving it DELETED."""
    if ev_type == "ADDED":
        return "ADDED" if new_ok else None
    if ev_type == "DELETED":
        return "DELETED" if old_ok else None
    if old_ok and new_ok:
        return "MODIFIED"
    if new_ok:
        return "ADDED"
    if old_ok:
        return "DELETED"
    return None


__all__ = ["StandInServer", "RequestHandler", "watch_event_type"]
