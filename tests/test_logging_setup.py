"""The JSON log lines and the audit trail (webhook/logging_setup.py)."""
from __future__ import annotations

import io
import json
import logging

import pytest

from webhook.logging_setup import AUDIT_LOGGER, configure, audit


@pytest.fixture
def stream():
    """configure() as `serve` does, writing into a buffer; the root logger restored afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    configure()
    buf = io.StringIO()
    for h in root.handlers:
        if getattr(h, "_netpol_guard", False):
            h.stream = buf
    yield buf
    root.handlers[:], root.level = saved[0], saved[1]
    logging.getLogger(AUDIT_LOGGER).filters.clear()


def _decide(uid: str) -> None:
    audit(uid=uid, obj="shop/api-egress", kind="NetworkPolicy", operation="CREATE",
          user="system:serviceaccount:argocd:argocd-application-controller", decision="deny",
          rules=["dns-egress-missing", "dns-egress-missing", "dns-tcp-missing"], dry_run=True,
          endpoint="validate", warnings=2)


def test_an_audit_line_is_one_json_object_with_the_decision_and_no_body(stream):
    _decide("u-1")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry.pop("time").endswith("Z")
    assert entry == {"level": "info", "logger": AUDIT_LOGGER, "event": "admission", "endpoint": "validate",
                     "uid": "u-1", "object": "shop/api-egress", "kind": "NetworkPolicy", "operation": "CREATE",
                     "user": "system:serviceaccount:argocd:argocd-application-controller", "decision": "deny",
                     "rules": ["dns-egress-missing", "dns-tcp-missing"], "warnings": 2, "dryRun": True}


def test_the_direct_write_and_the_logging_path_write_the_same_line(stream):
    # The audit line skips building a LogRecord when only our JSON handler would see it; a
    # filter (or any other handler) on the way sends it through logging. Both must agree.
    _decide("u-2")
    seen = []
    logging.getLogger(AUDIT_LOGGER).addFilter(lambda record: seen.append(record) or True)
    _decide("u-2")
    direct, logged = (json.loads(line) for line in stream.getvalue().splitlines())
    assert len(seen) == 1, "with a filter present the line must go through logging"
    direct.pop("time"), logged.pop("time")
    assert direct == logged


def test_the_audit_logger_level_turns_the_trail_off(stream):
    logger = logging.getLogger(AUDIT_LOGGER)
    logger.setLevel(logging.WARNING)
    try:
        _decide("u-3")
    finally:
        logger.setLevel(logging.NOTSET)
    assert stream.getvalue() == ""


def test_the_webhook_writes_one_audit_line_once_the_answer_is_sent(stream):
    # The line follows the response: the API server does not wait for the log write. A WSGI
    # server closes every response after its last byte (PEP 3333); the test client on close().
    from pathlib import Path
    from webhook.admission.app import create_app
    from webhook.cluster.source import EmptySource
    from webhook.config import DEFAULT
    review = json.loads((Path(__file__).parent.parent / "examples/admission/create-denied.json").read_text())
    client = create_app(DEFAULT, EmptySource()).test_client()
    response = client.post("/validate", json=review)
    assert response.get_json()["response"]["allowed"] is False
    assert stream.getvalue() == ""
    response.close()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(a["uid"], a["decision"]) for a in lines] == [(review["request"]["uid"], "deny")]
