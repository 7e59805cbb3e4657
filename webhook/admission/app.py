"""The Flask app: views only move bytes between HTTP and the pure core.

    create_app(config, source, metrics=None, tls=None) -> flask.Flask

POST /validate and /mutate take and return admission.k8s.io/v1 AdmissionReview;
GET /healthz, /readyz, /metrics. Anything malformed is a 400 with a JSON body naming
the problem (405 for a wrong method, 404 for an unknown path); no input produces a 500.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any, Optional

from flask import Flask, Response, request
from gunicorn.http.errors import NoMoreData, ParseException

# Importing these registers the NetworkPolicy handlers and the Namespace label guard.
from webhook.admission import mutations as _mutations  # noqa: F401
from webhook.admission import namespacelabels as _namespacelabels  # noqa: F401
from webhook.admission import networkpolicy as _networkpolicy  # noqa: F401
from webhook.admission.handlers import HandlerContext, dispatch
from webhook.admission.response import build_response
from webhook.admission.review import BadReview, check_content_type, decode, parse_review
from webhook.admission.tls import ReloadingContext
from webhook.cluster.source import ViewSource
from webhook.config import Config
from webhook.logging_setup import audit
from webhook.metrics import Metrics

log = logging.getLogger(__name__)
JSON = "application/json"
# Built once: json.dumps() with separators= builds a new encoder on every call.
_encode = json.JSONEncoder(separators=(",", ":")).encode


def _json(body: Any, status: int = 200) -> Response:
    return Response(_encode(body), status=status, mimetype=JSON)


def _read_body(environ: dict, limit: int) -> bytes:
    raw_length = environ.get("CONTENT_LENGTH")
    if raw_length and raw_length.isascii() and raw_length.isdigit() and "HTTP_TRANSFER_ENCODING" not in environ:
        # What the API server sends: a Content-Length of ASCII digits (isdigit() alone would
        # pass '²', which int() refuses). Read straight from the WSGI input: werkzeug's
        # content_length and stream wrappers cost ~25 us per request for the same bytes.
        length = int(raw_length)
        stream = environ["wsgi.input"]
    else:  # anything else (chunked, no length): werkzeug knows whether the input is bounded
        length = request.content_length
        stream = request.stream
    if length is not None and length > limit:
        raise BadReview("body-too-large", f"the body is {length} bytes; the limit is {limit} "
                                          "(server.maxRequestBytes)")
    # Read exactly Content-Length when it is known (a read of limit+1 bytes would have the
    # stream allocate a buffer of the whole limit for every request).
    try:
        body = stream.read(length if length is not None else limit + 1)
    except (NoMoreData, ParseException, OSError) as exc:
        # The client closed mid-body, or its chunked framing is broken (gunicorn's reader
        # raises these while the app reads): the client's doing, so a 400, not a 500.
        raise BadReview("incomplete-body", f"the request body could not be read to its end: "
                                           f"{exc or type(exc).__name__}") from None
    if length is not None and len(body) < length:
        raise BadReview("incomplete-body", f"the body ended after {len(body)} of the {length} bytes "
                                           "its Content-Length announced")
    if len(body) > limit:
        raise BadReview("body-too-large", f"the body is over the limit of {limit} bytes (server.maxRequestBytes)")
    return body


def register_extra_handlers() -> None:
    """Handlers that live with their feature: the isolation guards (Namespaces, Pods,
    managed policies) register themselves through their module's idempotent register()."""
    import importlib.util
    if importlib.util.find_spec("webhook.isolation.admission") is not None:
        from webhook.isolation.admission import register
        register()


def create_app(config: Config, source: ViewSource, metrics: Optional[Metrics] = None,
               tls: Optional[ReloadingContext] = None) -> Flask:
    register_extra_handlers()
    app = Flask("netpol-guard")
    metrics = metrics or Metrics()
    ctx = HandlerContext(config, source)
    limit = config.server.maxRequestBytes

    def review(endpoint: str) -> Response:
        started = time.perf_counter()
        environ = request.environ
        try:
            check_content_type(environ.get("CONTENT_TYPE"))
            req = parse_review(decode(_read_body(environ, limit)))
        except BadReview as bad:
            metrics.inc("netpol_guard_bad_requests_total", {"endpoint": endpoint, "reason": bad.reason})
            # (an oversized body is not read; gunicorn discards the rest before the next
            # request on the connection - the API server never sends more than a few MiB)
            return _json(bad.body(), bad.status)
        decision = dispatch(endpoint, req, ctx)
        response = _json(build_response(req, decision))
        metrics.record_decision(endpoint, req.operation, decision.label, time.perf_counter() - started,
                                ((f.rule, f.severity) for f in decision.findings))
        # The audit line is written once the answer has been sent (the server closes the
        # response after the last byte, also when the client went away): the API server does
        # not wait for the log write, and the write's system call does not hand the GIL to
        # another thread in the middle of a review.
        response.call_on_close(lambda: audit(
            uid=req.uid, obj=req.object_ref, kind=req.kind.kind, operation=req.operation,
            user=req.user.username, decision=decision.label, rules=[f.rule for f in decision.findings],
            dry_run=req.dry_run, endpoint=endpoint, warnings=len(decision.warnings)))
        return response

    # No route answers OPTIONS (Flask would add a 200 with an Allow header to each): it is
    # a 405 like any other method a route does not take.
    @app.post("/validate", provide_automatic_options=False)
    def validate() -> Response:
        return review("validate")

    @app.post("/mutate", provide_automatic_options=False)
    def mutate() -> Response:
        return review("mutate")

    @app.get("/healthz", provide_automatic_options=False)
    def healthz() -> Response:
        return _json({"status": "ok"})

    @app.get("/readyz", provide_automatic_options=False)
    def readyz() -> Response:
        checks = {}
        if tls is not None:
            ok, why = tls.ready()
            checks["certificate"] = {"ok": ok, "detail": why}
        ready = source.ready()
        stats = source.stats()
        view = {"ok": ready, "detail": "synced" if ready else "first sync not complete",
                "objects": stats.get("objects", 0)}
        behind = source.behind() if ready and hasattr(source, "behind") else {}
        if behind:
            # Still ready on purpose: the last good view keeps judging (every replica relists
            # at once after an API server restart; unready pods would leave the API server no
            # endpoint at all). But verdicts may be on a stale view, and we say so.
            view["detail"] = ("synced, but not following the API server for " + ", ".join(sorted(behind))
                              + ": verdicts use the last good view of those kinds")
            view["behind"] = behind
        checks["clusterView"] = view
        all_ok = all(c["ok"] for c in checks.values())
        return _json({"status": "ready" if all_ok else "not ready", "checks": checks}, 200 if all_ok else 503)

    @app.get("/metrics", provide_automatic_options=False)
    def metrics_view() -> Response:
        stats = source.stats()
        gauges = {
            "netpol_guard_cache_objects": float(stats.get("objects", 0)),
            "netpol_guard_cache_age_seconds": float(stats.get("age_seconds", 0.0)),
            "netpol_guard_cache_synced": 1.0 if stats.get("synced") else 0.0,
        }
        expiry = tls.seconds_until_expiry() if tls is not None else None
        if expiry is not None:
            gauges["netpol_guard_certificate_expiry_seconds"] = expiry
        for kind in ("namespaces", "pods", "services", "networkpolicies", "adminnetworkpolicies",
                     "baselineadminnetworkpolicies", "clusternetworkpolicies"):
            if kind in stats:
                gauges[f'netpol_guard_cache_objects{{kind="{kind}"}}'] = float(stats[kind])
            if f"{kind}_age_seconds" in stats:  # the live cache reports each watch
                gauges[f'netpol_guard_cache_age_seconds{{kind="{kind}"}}'] = float(stats[f"{kind}_age_seconds"])
            if f"{kind}_synced" in stats:
                gauges[f'netpol_guard_cache_synced{{kind="{kind}"}}'] = 1.0 if stats[f"{kind}_synced"] else 0.0
        for key in ("relists", "reconnects", "errors"):
            if key in stats:  # cumulative in this worker since it started: its share of the counter
                metrics.raise_to(f"netpol_guard_cache_{key}_total", float(stats[key]))
        if "invalid_policies" in stats:
            gauges["netpol_guard_cache_invalid_policies"] = float(stats["invalid_policies"])
        from webhook.audit.loop import read_gauges
        gauges.update(read_gauges(metrics.directory))  # the pod agent's audit, when it runs
        return Response(metrics.render(gauges), mimetype="text/plain; version=0.0.4")

    @app.errorhandler(404)
    def not_found(_exc) -> Response:
        return _json({"error": {"reason": "not-found", "message": f"no endpoint {request.path}; "
                                "POST /validate or /mutate, GET /healthz, /readyz, /metrics"}}, 404)

    @app.errorhandler(405)
    def wrong_method(_exc) -> Response:
        allowed = "POST" if request.path in ("/validate", "/mutate") else "GET"
        resp = _json({"error": {"reason": "method-not-allowed",
                                "message": f"{request.method} is not allowed on {request.path}; use {allowed}"}}, 405)
        resp.headers["Allow"] = allowed
        return resp

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        # Werkzeug HTTP errors (400 from a malformed request line, 413, ...) keep their code;
        # anything else is our bug: log it, answer without a 500 page.
        code = getattr(exc, "code", None)
        if isinstance(code, int) and 400 <= code < 500:
            return _json({"error": {"reason": "bad-request", "message": str(exc)}}, code)
        log.exception("unexpected error on %s %s", request.method, request.path)
        return _json({"error": {"reason": "internal", "message": "internal error; see the webhook's log"}}, 500)

    return app
