"""One NetworkPolicy past netpol-guard's size limits (webhook/policy/limits.py) is refused
before it is parsed - by the real server on /validate (a 200 AdmissionReview denial naming
the field, the count and the limit), left unpatched on /mutate, reported by `lint` as
policy-too-large and refused by `simulate` - while a policy exactly at every limit is judged
as any other. Before the limits, one such review cost seconds of CPU (4 s for 194,874
`except` entries), past the API server's 3 s timeout."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.review_cost import review, shapes
from tests.server_fixture import module_server_factory  # noqa: F401 (fixture)
from webhook.policy import limits
from webhook.policy.parse import parse_policy

# shape -> (what the message counts, its limit)
COUNTED = {
    "rules": ("ingress and egress rules", limits.RULES),
    "peers-selectors": ("peers in all rules", limits.PEERS),
    "peers-ipblock": ("peers in all rules", limits.PEERS),
    "ports": ("ports in all rules", limits.PORTS),
    "except": ("ipBlock except entries in all peers", limits.EXCEPTS),
    "selector-terms": ("label selector terms", limits.SELECTOR_TERMS),
}
AT_LIMITS, OVER = shapes(0), shapes(1)


@pytest.fixture(scope="module")
def server(module_server_factory):  # noqa: F811
    return module_server_factory(["--cluster", "examples/cluster", "--config", "examples/config/mutations.yaml"])


def post(server, endpoint: str, spec: dict) -> dict:
    status, _, data = server.request("POST", f"/{endpoint}", review(spec), {"Content-Type": "application/json"})
    assert status == 200, (status, data[:300])
    return json.loads(data)["response"]


@pytest.mark.parametrize("shape", sorted(COUNTED))
def test_a_policy_one_over_a_limit_is_denied_with_the_field_count_and_limit(server, shape):
    what, limit = COUNTED[shape]
    response = post(server, "validate", OVER[shape])
    assert response["allowed"] is False
    message = response["status"]["message"]
    assert "[policy-too-large] spec" in message, message
    assert f"{limit + 1:,} {what}" in message and f"limit of {limit:,} per policy" in message, message
    assert "split it into several NetworkPolicies" in message
    assert "has 1 error" in message  # nothing else was looked at


def test_the_denial_names_the_list_that_holds_the_most(server):
    message = post(server, "validate", OVER["except"])["status"]["message"]
    assert "spec.egress[0].to[0].ipBlock.except: Too large: 1,001 ipBlock except entries" in message


@pytest.mark.parametrize("shape", sorted(AT_LIMITS))
def test_a_policy_at_the_limits_is_judged_as_any_other(server, shape):
    response = post(server, "validate", AT_LIMITS[shape])
    assert "policy-too-large" not in json.dumps(response)
    if not response["allowed"]:  # denied for what the rules found in it, e.g. selectors matching nothing
        assert "error" in response["status"]["message"]


def test_an_update_of_a_policy_already_over_a_limit_is_denied_too(server):
    body = json.loads(review(OVER["except"]))
    body["request"]["operation"] = "UPDATE"
    body["request"]["oldObject"] = json.loads(json.dumps(body["request"]["object"]))
    body["request"]["object"]["metadata"]["labels"] = {"team": "edge"}
    status, _, data = server.request("POST", "/validate", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    response = json.loads(data)["response"]
    assert status == 200 and response["allowed"] is False, response
    assert "[policy-too-large] spec.egress[0].to[0].ipBlock.except" in response["status"]["message"]


def test_mutate_patches_a_policy_at_the_limits_and_leaves_one_over_them_alone(server):
    assert post(server, "mutate", AT_LIMITS["all-limits"]).get("patch")
    over = post(server, "mutate", OVER["all-limits"])
    assert over["allowed"] is True and "patch" not in over


def test_the_old_object_of_an_update_is_held_to_the_limits_too():
    assert not parse_policy(_policy(AT_LIMITS["all-limits"])).errors
    errors = parse_policy(_policy(OVER["all-limits"])).errors
    assert [e.kind for e in errors] == [limits.TOO_LARGE]


def _policy(spec: dict, name: str = "big") -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": "monitoring"}, "spec": spec}


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "webhook", *map(str, args)], capture_output=True, text=True)


def test_lint_reports_a_policy_over_a_limit_as_an_error_and_checks_nothing_else(tmp_path):
    (tmp_path / "big.json").write_text(json.dumps(_policy(OVER["ports"])))
    r = _cli("lint", "--cluster", "examples/cluster", "--format", "json", tmp_path / "big.json")
    assert r.returncode == 1, r.stderr
    findings = json.loads(r.stdout)["findings"]
    assert [(f["rule"], f["severity"], f["path"]) for f in findings] == [
        ("policy-too-large", "error", "spec.ingress[0].ports")]
    assert findings[0]["file"].endswith("big.json") and findings[0]["policy"] == "monitoring/big"
    assert f"{limits.PORTS + 1:,} ports in all rules" in findings[0]["message"]


def test_lint_judges_a_policy_at_every_limit_normally(tmp_path):
    (tmp_path / "big.json").write_text(json.dumps(_policy(AT_LIMITS["all-limits"])))
    r = _cli("lint", "--cluster", "examples/cluster", "--format", "json", tmp_path / "big.json")
    rules = {f["rule"] for f in json.loads(r.stdout)["findings"]}
    assert rules and "policy-too-large" not in rules, rules


def test_a_skip_annotation_cannot_skip_the_limit(tmp_path):
    policy = _policy(OVER["rules"])
    policy["metadata"]["annotations"] = {"netpol-guard.io/skip-rules": "policy-too-large",
                                         "netpol-guard.io/skip-reason": "big on purpose"}
    (tmp_path / "big.json").write_text(json.dumps(policy))
    r = _cli("lint", "--cluster", "examples/cluster", "--format", "json", tmp_path / "big.json")
    assert r.returncode == 1
    assert [f["rule"] for f in json.loads(r.stdout)["findings"]] == ["policy-too-large"]


def test_simulate_refuses_a_cluster_holding_a_policy_over_a_limit(tmp_path):
    (tmp_path / "big.json").write_text(json.dumps(_policy(OVER["except"])))
    r = _cli("simulate", "--cluster", "examples/cluster", "--cluster", tmp_path / "big.json")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "NetworkPolicy big is too large for netpol-guard" in r.stderr
    assert "spec.egress[0].to[0].ipBlock.except" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("spec", [
    {"ingress": "x", "egress": [None, 3, {"to": "y", "ports": {"a": 1}}]},
    {"ingress": [{"from": [None, {"ipBlock": "z"}, {"ipBlock": {"except": "q"}}, {"podSelector": []}]}]},
    {"podSelector": {"matchLabels": "a", "matchExpressions": [None, {"values": 5}]}},
])
def test_odd_shapes_are_left_to_the_parser_to_explain(spec):
    assert limits.size_problems({"spec": spec}) == ()
