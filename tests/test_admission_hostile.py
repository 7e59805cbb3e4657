"""Hostile AdmissionReviews against the real server over TLS: numbers past Python's
digit limit and deep nesting get HTTP 400 with the documented JSON body (never 500), and
what the server says back stays small however big the input it quotes."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from tests.server_fixture import module_server_factory  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parent.parent
DENIED = json.loads((REPO / "examples" / "admission" / "create-denied.json").read_text())
UID = DENIED["request"]["uid"]
MEGABYTE = "a" * 1_000_000


@pytest.fixture(scope="module")
def server(module_server_factory):  # noqa: F811
    return module_server_factory(["--cluster", "examples/cluster"])


def post(server, body: bytes) -> tuple[int, dict, int]:
    status, _, data = server.request("POST", "/validate", body, {"Content-Type": "application/json"})
    return status, json.loads(data), len(data)


def assert_bad_request(status: int, body: dict, reason: str) -> None:
    assert status == 400, (status, body)
    assert body["error"]["reason"] == reason, body
    assert body["response"]["allowed"] is False and body["response"]["status"]["code"] == 400


def test_an_integer_of_5000_digits_is_a_400_not_a_500(server):
    text = json.dumps(DENIED).replace('"port": "metrics"', '"port": ' + "9" * 5000, 1)
    assert "9" * 5000 in text
    status, body, _ = post(server, text.encode())
    assert_bad_request(status, body, "unreadable-json")
    assert "4300 digits" in body["error"]["message"]


def test_a_body_nested_100000_deep_is_a_400(server):
    status, body, _ = post(server, b"[" * 100_000 + b"]" * 100_000)
    assert_bad_request(status, body, "unreadable-json")
    assert "nested too deeply" in body["error"]["message"]


@pytest.mark.parametrize("where", ["spec", "labels", "annotations"])
def test_deep_nesting_the_parser_accepts_never_gets_a_5xx(server, where):
    review = copy.deepcopy(DENIED)
    deep: object = "x"
    for _ in range(900):
        deep = [deep]
    obj = review["request"]["object"]
    if where == "spec":
        obj["spec"]["ingress"] = [{"from": [{"podSelector": {"matchLabels": {"app": deep}}}]}]
    else:
        obj["metadata"][where] = {"k": deep}
    status, body, _ = post(server, json.dumps(review).encode())
    assert status in (200, 400), (status, body)


def test_a_denial_quoting_megabyte_labels_stays_small(server):
    review = copy.deepcopy(DENIED)
    spec = review["request"]["object"]["spec"]
    spec["podSelector"] = {"matchLabels": {"app": MEGABYTE}}
    spec["egress"] = [{"to": [{"podSelector": {"matchLabels": {"app": MEGABYTE}}}], "ports": [{"port": 9090}]}]
    status, body, size = post(server, json.dumps(review).encode())
    assert status == 200 and body["response"]["allowed"] is False, body
    message = body["response"]["status"]["message"]
    assert len(message) < 30_000 and size < 40_000, len(message)
    assert "more characters)" in message
    assert all(len(w) <= 120 for w in body["response"].get("warnings", []))


def test_a_400_quotes_a_megabyte_kind_by_its_start_only(server):
    review = copy.deepcopy(DENIED)
    review["kind"] = MEGABYTE
    status, body, size = post(server, json.dumps(review).encode())
    assert_bad_request(status, body, "wrong-kind")
    assert body["response"]["uid"] == UID
    assert size < 2_000 and "more characters" in body["error"]["message"]


def test_the_server_logged_no_error(server):
    assert server.alive() and server.get("/healthz")[0] == 200
    assert '"level":"error"' not in server.log_text()
