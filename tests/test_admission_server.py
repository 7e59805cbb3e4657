"""The real `netpol-guard serve` (gunicorn, 2 workers, TLS on 127.0.0.1) answering
AdmissionReviews shaped exactly as the API server sends them."""
from __future__ import annotations

import base64
import copy
import json
from pathlib import Path

import pytest

from tests.server_fixture import module_server_factory  # noqa: F401 (fixture)
from webhook.admission import jsonpatch

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples" / "admission"
LIMIT = 64 * 1024


def example(name: str) -> dict:
    return json.loads((EXAMPLES / name).read_text())


@pytest.fixture(scope="module")
def server(module_server_factory):  # noqa: F811
    return module_server_factory(["--cluster", "examples/cluster", "--workers", "2", "--threads", "2"],
                                 env={"NETPOL_GUARD_SERVER_MAXREQUESTBYTES": str(LIMIT)})


@pytest.fixture(scope="module")
def lenient_server(module_server_factory):  # noqa: F811
    """mode: warn, every mutation on, one exempt user - all from the environment."""
    return module_server_factory(["--cluster", "examples/cluster", "--workers", "1"], env={
        "NETPOL_GUARD_MODE": "warn",
        "NETPOL_GUARD_MUTATIONS_ADDDNSEGRESS": "true",
        "NETPOL_GUARD_MUTATIONS_EXPLICITPOLICYTYPES": "true",
        "NETPOL_GUARD_MUTATIONS_EXCEPTMETADATAADDRESS": "true",
        "NETPOL_GUARD_EXEMPTUSERS": "system:serviceaccount:ci:deployer",
    })


# --- every example review, with the answer it must get ---------------------------------------

EXPECTED = {
    # file: (endpoint, allowed, rule ids that must appear in the denial message or warnings)
    "create-denied.json": ("/validate", False, {"dns-egress-missing"}),
    "create-denied-dryrun.json": ("/validate", False, {"dns-egress-missing"}),
    "create-warning.json": ("/validate", True, {"dns-tcp-missing"}),
    "create-allowed.json": ("/validate", True, set()),
    "update-preexisting-error.json": ("/validate", True, {"dns-egress-missing"}),
    "update-introduces-error.json": ("/validate", False, {"dns-egress-missing"}),
    "delete.json": ("/validate", True, set()),
    "mutate-create.json": ("/mutate", True, set()),
}


def test_every_example_review_has_an_expected_answer():
    assert sorted(p.name for p in EXAMPLES.glob("*.json")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_review_gets_the_expected_answer(server, name):
    endpoint, allowed, rules = EXPECTED[name]
    review = example(name)
    status, body = server.post_json(endpoint, review)
    assert status == 200
    resp = body["response"]
    assert body["apiVersion"] == "admission.k8s.io/v1" and body["kind"] == "AdmissionReview"
    assert resp["uid"] == review["request"]["uid"]
    assert resp["allowed"] is allowed
    text = resp.get("status", {}).get("message", "") + "\n".join(resp.get("warnings", []))
    for rule in rules:
        assert f"[{rule}]" in text
    if not allowed:
        assert resp["status"]["code"] == 403
        assert resp["status"]["message"].startswith("NetworkPolicy monitoring/prometheus-egress has 1 error:")
        assert "fix:" in resp["status"]["message"]
    if name == "update-preexisting-error.json":
        assert resp["warnings"][0].startswith("[dns-egress-missing] spec.egress: (pre-existing)")


def test_a_well_formed_but_invalid_networkpolicy_is_denied_with_reasons_not_a_400(server):
    review = example("create-allowed.json")
    review["request"]["object"]["spec"]["egress"][0]["ports"] = [{"port": 80800, "protocol": "tcp"}]
    status, body = server.post_json("/validate", review)
    assert status == 200 and body["response"]["allowed"] is False
    msg = body["response"]["status"]["message"]
    assert "[invalid-spec] spec.egress[0].ports[0].port" in msg
    assert "[invalid-spec] spec.egress[0].ports[0].protocol" in msg


def test_other_kinds_are_allowed_with_no_opinion(server):
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "ns-1", "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
        "resource": {"group": "", "version": "v1", "resource": "configmaps"}, "operation": "CREATE",
        "namespace": "shop", "name": "c", "userInfo": {"username": "jane"},
        "object": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "shop"}},
        "oldObject": None, "dryRun": False}}
    status, body = server.post_json("/validate", review)
    assert status == 200 and body["response"] == {"uid": "ns-1", "allowed": True}


# --- bad input: 400 with a reason, and the server keeps serving ------------------------------

def _bad(server, path, raw: bytes, content_type="application/json"):
    status, headers, data = server.request("POST", path, raw, {"Content-Type": content_type})
    return status, json.loads(data)


@pytest.mark.parametrize("raw,reason", [
    (b"{not json", "not-json"),
    (b"", "empty-body"),
    (b"[]", "not-admission-review"),
    (json.dumps({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {}}).encode(),
     "wrong-api-version"),
    (json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).encode(), "missing-request"),
    (json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"operation": "CREATE"}}).encode(),
     "missing-uid"),
])
def test_malformed_bodies_get_400_with_the_reason(server, raw, reason):
    status, body = _bad(server, "/validate", raw)
    assert status == 400 and body["error"]["reason"] == reason and body["error"]["message"]


def test_a_missing_object_gets_400_and_the_uid_is_echoed(server):
    review = example("create-denied.json")
    del review["request"]["object"]
    status, body = server.post_json("/validate", review)
    assert status == 400 and body["error"]["reason"] == "missing-object"
    assert body["response"]["uid"] == review["request"]["uid"]


def test_a_networkpolicy_shape_the_api_server_never_sends_gets_400(server):
    review = example("create-denied.json")
    review["request"]["object"]["spec"] = "podSelector: {}"
    status, body = server.post_json("/mutate", review)
    assert status == 400 and body["error"]["reason"] == "bad-object" and "spec must be an object" in \
        body["error"]["message"]


def test_wrong_content_type_gets_400(server):
    status, body = _bad(server, "/validate", json.dumps(example("create-denied.json")).encode(), "text/plain")
    assert status == 400 and body["error"]["reason"] == "wrong-content-type"


def test_a_body_over_the_configured_limit_gets_400_and_the_connection_stays_usable(server):
    review = example("create-denied.json")
    review["request"]["object"]["metadata"]["annotations"]["padding"] = "x" * (LIMIT + 10)
    client = server.client()
    status, headers, data = client.request("POST", "/validate", json.dumps(review).encode(),
                                           {"Content-Type": "application/json"})
    assert status == 400 and json.loads(data)["error"]["reason"] == "body-too-large"
    assert client.post_json("/validate", example("create-allowed.json"))[0] == 200


def test_get_on_a_post_endpoint_is_405_and_unknown_paths_404(server):
    status, headers, data = server.request("GET", "/validate")
    assert status == 405 and headers["allow"] == "POST" and json.loads(data)["error"]["reason"] == "method-not-allowed"
    status, _, data = server.request("GET", "/nope")
    assert status == 404 and json.loads(data)["error"]["reason"] == "not-found"


def test_after_bad_input_the_server_still_answers(server):
    _bad(server, "/validate", b"\xff\xfe garbage")
    status, body = server.post_json("/validate", example("create-allowed.json"))
    assert status == 200 and body["response"]["allowed"] is True


# --- health, readiness, metrics, audit ---------------------------------------------------------

def test_healthz_and_readyz(server):
    assert server.get("/healthz") == (200, '{"status":"ok"}')
    status, text = server.get("/readyz")
    body = json.loads(text)
    assert status == 200 and body["checks"]["certificate"]["ok"] and body["checks"]["clusterView"]["objects"] > 0


def _counter(text: str, sample: str) -> float:
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_every_request_whichever_worker_served_it_or_the_scrape(server):
    deny = 'netpol_guard_requests_total{endpoint="validate",operation="CREATE",decision="deny"}'
    before = _counter(server.client().get("/metrics")[1], deny)
    clients = [server.client() for _ in range(6)]  # separate connections: spread over both workers
    for i in range(24):
        status, body = clients[i % 6].post_json("/validate", example("create-denied.json"))
        assert body["response"]["allowed"] is False
    for c in clients:
        c.close()
    scrapes = [server.client().get("/metrics")[1] for _ in range(6)]
    assert {_counter(s, deny) - before for s in scrapes} == {24}
    text = scrapes[0]
    assert _counter(text, 'netpol_guard_findings_total{rule="dns-egress-missing",severity="error"}') >= 24
    assert _counter(text, 'netpol_guard_request_duration_seconds_count{endpoint="validate"}') >= 24
    assert _counter(text, "netpol_guard_cache_objects") > 0
    assert _counter(text, "netpol_guard_cache_synced") == 1
    assert "# TYPE netpol_guard_request_duration_seconds histogram" in text
    assert 300 * 86400 < _counter(text, "netpol_guard_certificate_expiry_seconds") <= 365 * 86400


def test_one_audit_line_per_decision_without_object_bodies(server):
    review = example("create-denied-dryrun.json")
    review["request"]["uid"] = "audit-check-1"
    server.post_json("/validate", review)
    lines = [a for a in _wait_for_audit(server, "audit-check-1")]
    assert len(lines) == 1
    line = lines[0]
    assert line["object"] == "monitoring/prometheus-egress" and line["user"] == "jane@example.com"
    assert line["decision"] == "deny" and line["rules"] == ["dns-egress-missing"] and line["dryRun"] is True
    assert line["operation"] == "CREATE" and line["kind"] == "NetworkPolicy"
    log = server.log_text()
    assert "Prometheus scrapes" not in log and "kube-dns" not in log  # no annotation text, no spec


def _wait_for_audit(server, uid, timeout=5.0):
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [a for a in server.audit_lines() if a.get("uid") == uid]
        if found:
            return found
        time.sleep(0.05)
    return []


# --- configuration from the environment: warn mode, mutations, exemptions --------------------

def test_warn_mode_allows_with_the_denial_as_warnings(lenient_server):
    status, body = lenient_server.post_json("/validate", example("create-denied.json"))
    resp = body["response"]
    assert resp["allowed"] is True and "status" not in resp
    assert resp["warnings"][0].startswith("[dns-egress-missing] spec.egress: (would deny)")


def test_mutate_returns_a_patch_that_yields_a_policy_the_validator_accepts(lenient_server, server):
    review = example("mutate-create.json")
    status, body = lenient_server.post_json("/mutate", review)
    resp = body["response"]
    assert resp["allowed"] is True and resp["patchType"] == "JSONPatch"
    patched = jsonpatch.apply(review["request"]["object"], json.loads(base64.b64decode(resp["patch"])))
    assert patched["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert patched["spec"]["egress"][0]["to"][0]["ipBlock"]["except"] == ["169.254.169.254/32"]
    check = copy.deepcopy(review)
    check["request"]["object"] = patched
    status, body = server.post_json("/validate", check)  # the enforcing server
    assert body["response"]["allowed"] is True


def test_an_exempt_user_is_allowed_without_findings(lenient_server):
    review = example("create-denied.json")
    review["request"]["userInfo"]["username"] = "system:serviceaccount:ci:deployer"
    status, body = lenient_server.post_json("/validate", review)
    assert body["response"] == {"uid": review["request"]["uid"], "allowed": True}


def test_a_replaced_worker_keeps_the_counters_and_the_server_keeps_answering(server):
    """Runs last: stops one of this server's workers (by pid); gunicorn replaces it."""
    import os
    import signal
    import time

    deny = 'netpol_guard_requests_total{endpoint="validate",operation="CREATE",decision="deny"}'
    for _ in range(4):
        server.client().post_json("/validate", example("create-denied.json"))
    before = _counter(server.client().get("/metrics")[1], deny)
    workers = server.worker_pids()
    assert len(workers) == 2
    victim = sorted(workers)[0]
    os.kill(victim, signal.SIGTERM)  # a graceful worker exit: it leaves through serve.run()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        now = server.worker_pids()
        if len(now) == 2 and victim not in now:
            break
        time.sleep(0.1)
    assert victim not in server.worker_pids() and len(server.worker_pids()) == 2
    scrapes = [_counter(server.client().get("/metrics")[1], deny) for _ in range(4)]
    assert min(scrapes) >= before
    status, body = server.client().post_json("/validate", example("create-denied.json"))
    assert status == 200 and body["response"]["allowed"] is False
