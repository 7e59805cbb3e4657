"""Structured logs: one JSON object per line on stderr, and the audit trail.

The audit logger (``netpol_guard.audit``) writes exactly one line per admission
decision with the request's uid, namespace/name, kind, operation, user, decision,
rule ids and dryRun. Object bodies, patches and messages are never logged: a
NetworkPolicy may carry annotations with anything in them, and the audit line must
be safe to ship to any log store.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Iterable

AUDIT_LOGGER = "netpol_guard.audit"
_audit_log = logging.getLogger(AUDIT_LOGGER)
# One encoder, built once: json.dumps() with any non-default argument builds a new
# encoder on every call, and the webhook writes a line per admission decision.
_ENCODE = json.JSONEncoder(separators=(",", ":"), default=str).encode


class JSONFormatter(logging.Formatter):
    _stamp: tuple[int, str] = (-1, "")

    def _time(self, created: float) -> str:
        # strftime once per second, not once per line (the audit line is on the request path);
        # (second, text) is replaced as one tuple, so threads never mix two seconds' halves.
        second = int(created)
        cached, text = self._stamp
        if cached != second:
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._stamp = (second, text)
        return f"{text}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self._time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        else:
            entry["message"] = record.getMessage()
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return _ENCODE(entry)


def configure(level: str = "INFO") -> None:
    """JSON lines on stderr for our loggers and gunicorn's error log; idempotent."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter())
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_netpol_guard", False):
            root.removeHandler(h)
    handler._netpol_guard = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)


def audit(uid: str, obj: str, kind: str, operation: str, user: str, decision: str,
          rules: Iterable[str], dry_run: bool, endpoint: str, warnings: int = 0) -> None:
    if not _audit_log.isEnabledFor(logging.INFO):
        return
    fields = {
        "event": "admission", "endpoint": endpoint, "uid": uid, "object": obj, "kind": kind,
        "operation": operation, "user": user, "decision": decision,
        "rules": sorted(set(rules)), "warnings": warnings, "dryRun": dry_run,
    }
    sink = _direct_sink()
    if sink is None:
        _audit_log.info("decision", extra={"fields": fields})
        return
    # What logging would write, without building a LogRecord: on the request path, the
    # logging machinery cost ~30 us per review, the line itself ~5 (python -m bench webhook).
    now = time.time()
    line = _ENCODE({"time": sink.formatter._time(now), "level": "info", "logger": AUDIT_LOGGER, **fields})
    sink.acquire()
    try:
        sink.stream.write(line + sink.terminator)
        sink.flush()
    except Exception:  # noqa: BLE001 - as Handler.emit: a failing log write must not fail the review
        sink.handleError(logging.makeLogRecord({"msg": "audit line", "name": AUDIT_LOGGER}))
    finally:
        sink.release()


def _direct_sink() -> logging.StreamHandler | None:
    """The handler an audit line reaches, when writing to it directly does exactly what logging
    would: a single JSON StreamHandler, no filters, nothing else on the way up the hierarchy.
    Anything else (tests capturing logs, a user's own configuration) takes the logging path."""
    found = None
    logger: logging.Logger | None = _audit_log
    while logger is not None:
        if logger.filters:
            return None
        for h in logger.handlers:
            if found is not None or h.filters or type(h) is not logging.StreamHandler \
                    or not isinstance(h.formatter, JSONFormatter) or h.level > logging.INFO:
                return None
            found = h
        logger = logger.parent if logger.propagate else None
    return found
