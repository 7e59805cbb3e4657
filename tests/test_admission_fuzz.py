"""Property: no input makes the running server answer 5xx, errors out a handler, or kills a
worker. Hypothesis drives bytes, arbitrary JSON, and AdmissionReviews whose NetworkPolicy
is mangled at every level, against the real `netpol-guard serve` over TLS."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.server_fixture import module_server_factory  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parent.parent
BASE = json.loads((REPO / "examples" / "admission" / "create-warning.json").read_text())
UPDATE = json.loads((REPO / "examples" / "admission" / "update-preexisting-error.json").read_text())
FUZZ = settings(max_examples=120, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False),
                    st.text(max_size=20), st.sampled_from(["TCP", "tcp", "0.0.0.0/0", "::/0", "10.0.0.0/33",
                                                           "Ingress", "Egress", "In", "NotIn", "Exists", "", "53"]))
keys = st.one_of(st.text(max_size=12), st.sampled_from([
    "podSelector", "namespaceSelector", "ipBlock", "cidr", "except", "ports", "port", "endPort", "protocol",
    "from", "to", "ingress", "egress", "policyTypes", "matchLabels", "matchExpressions", "key", "operator",
    "values", "name", "namespace", "labels", "annotations", "netpol-guard.io/skip-rules"]))
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                             st.dictionaries(keys, inner, max_size=4)),
                           max_leaves=25)


def _set_path(doc, path, value):
    node = doc
    for step in path[:-1]:
        if isinstance(node, dict) and step in node:
            node = node[step]
        elif isinstance(node, list) and isinstance(step, int) and step < len(node):
            node = node[step]
        else:
            return doc
    if isinstance(node, dict):
        node[path[-1]] = value
    elif isinstance(node, list) and isinstance(path[-1], int) and path[-1] < len(node):
        node[path[-1]] = value
    return doc


PATHS = [("request", "object", "spec"), ("request", "object", "spec", "egress"),
         ("request", "object", "spec", "egress", 0), ("request", "object", "spec", "egress", 0, "to", 0),
         ("request", "object", "spec", "egress", 0, "ports", 0, "port"),
         ("request", "object", "spec", "egress", 1, "to", 0, "podSelector"),
         ("request", "object", "spec", "podSelector", "matchLabels"), ("request", "object", "metadata"),
         ("request", "object", "metadata", "annotations"), ("request", "object", "spec", "policyTypes"),
         ("request", "userInfo"), ("request", "kind"), ("request", "operation"), ("request", "dryRun"),
         ("request", "uid"), ("request", "oldObject"), ("request",), ("request", "namespace")]


@pytest.fixture(scope="module")
def server(module_server_factory):  # noqa: F811
    s = module_server_factory(["--cluster", "examples/cluster", "--workers", "2", "--threads", "2"],
                              env={"NETPOL_GUARD_MUTATIONS_ADDDNSEGRESS": "true",
                                   "NETPOL_GUARD_MUTATIONS_EXPLICITPOLICYTYPES": "true",
                                   "NETPOL_GUARD_MUTATIONS_EXCEPTMETADATAADDRESS": "true"})
    s.initial_workers = s.worker_pids()
    return s


def check(server, path: str, raw: bytes, content_type: str = "application/json") -> None:
    status, _, data = server.request("POST", path, raw, {"Content-Type": content_type})
    assert status in (200, 400), (status, data[:300])
    body = json.loads(data)
    if status == 200:
        assert body["response"]["allowed"] in (True, False)
        assert body["response"].get("status", {}).get("code", 403) == 403, body  # never an "errored" answer
    else:
        assert body["error"]["reason"]


@FUZZ
@given(raw=st.binary(max_size=300), path=st.sampled_from(["/validate", "/mutate"]))
def test_arbitrary_bytes_never_get_a_5xx(server, raw, path):
    check(server, path, raw)


@FUZZ
@given(value=json_values, path=st.sampled_from(["/validate", "/mutate"]))
def test_arbitrary_json_never_gets_a_5xx(server, value, path):
    check(server, path, json.dumps(value).encode())


@FUZZ
@given(base=st.sampled_from([BASE, UPDATE]), where=st.lists(st.sampled_from(PATHS), min_size=1, max_size=3),
       values=st.lists(json_values, min_size=3, max_size=3), path=st.sampled_from(["/validate", "/mutate"]))
def test_mangled_admission_reviews_never_get_a_5xx(server, base, where, values, path):
    review = copy.deepcopy(base)
    for p, v in zip(where, values):
        _set_path(review, p, v)
    check(server, path, json.dumps(review).encode())


def test_no_worker_died_during_the_fuzzing(server):
    # runs last in this module (pytest keeps file order)
    assert server.alive()
    assert server.worker_pids() == server.initial_workers
    assert server.get("/healthz")[0] == 200
    assert '"level":"error"' not in server.log_text()
