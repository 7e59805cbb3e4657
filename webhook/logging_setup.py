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


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
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
        return json.dumps(entry, separators=(",", ":"), default=str)


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
    logging.getLogger(AUDIT_LOGGER).info("decision", extra={"fields": {
        "event": "admission", "endpoint": endpoint, "uid": uid, "object": obj, "kind": kind,
        "operation": operation, "user": user, "decision": decision,
        "rules": sorted(set(rules)), "warnings": warnings, "dryRun": dry_run,
    }})
