"""The pure core of the admission edge: wire parsing, decisions, responses, JSONPatch,
handler dispatch, mutations, metrics. No HTTP here (see test_admission_server.py)."""
from __future__ import annotations

import base64
import copy
import json
import os
from pathlib import Path

import pytest

from webhook.admission import jsonpatch
from webhook.admission import mutations as mutations_mod  # noqa: F401 (registers /mutate)
from webhook.admission import networkpolicy as networkpolicy_mod  # noqa: F401 (registers /validate)
from webhook.admission.handlers import HandlerContext, dispatch, register_handler, _REGISTRY
from webhook.admission.mutations import mutated
from webhook.admission.networkpolicy import introduced_errors, judge
from webhook.admission.response import (WARNING_MAX_CHARS, WARNING_MAX_COUNT, Decision, build_response,
                                        decision_from_findings, deny, kubectl_denial)
from webhook.admission.review import BadReview, GroupVersionKind, decode, parse_review, check_content_type
from webhook.cluster.source import EmptySource, SnapshotSource
from webhook.config import from_dict
from webhook.metrics import Metrics, read_dir
from webhook.rules.base import Finding

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples" / "admission"


def example(name: str) -> dict:
    return json.loads((EXAMPLES / name).read_text())


@pytest.fixture(scope="module")
def cluster():
    return SnapshotSource([str(REPO / "examples" / "cluster")])


def ctx(cluster, **config) -> HandlerContext:
    return HandlerContext(from_dict(config), cluster)


def finding(rule="dns-egress-missing", path="spec.egress", message="no DNS", severity="error", fix=None):
    return Finding(rule=rule, category="dns", severity=severity, policy="ns/p", path=path, message=message, fix=fix)


# --- parsing: every kind of bad input has its own reason -----------------------------------

def bad_reason(data) -> str:
    with pytest.raises(BadReview) as exc:
        parse_review(data)
    return exc.value.reason


def test_a_body_that_is_not_json_is_rejected_with_the_parse_position():
    with pytest.raises(BadReview) as exc:
        decode(b'{"apiVersion": ')
    assert exc.value.reason == "not-json" and "line 1" in exc.value.message


def test_an_empty_body_is_rejected():
    with pytest.raises(BadReview, match="empty"):
        decode(b"")


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_a_content_type_other_than_json_is_rejected(content_type):
    with pytest.raises(BadReview) as exc:
        check_content_type(content_type)
    assert exc.value.reason == "wrong-content-type"


def test_json_with_a_charset_is_accepted():
    check_content_type("application/json; charset=utf-8")


def test_each_malformed_review_gets_its_own_reason():
    good = example("create-denied.json")
    assert bad_reason([1, 2]) == "not-admission-review"
    assert bad_reason({"hello": "world"}) == "not-admission-review"
    assert bad_reason({**good, "kind": "AdmissionResponse"}) == "wrong-kind"
    assert bad_reason({**good, "apiVersion": "admission.k8s.io/v1beta1"}) == "wrong-api-version"
    assert bad_reason({k: v for k, v in good.items() if k != "request"}) == "missing-request"
    no_uid = copy.deepcopy(good)
    del no_uid["request"]["uid"]
    assert bad_reason(no_uid) == "missing-uid"
    for value, reason in ((None, "missing-object"), ("text", "missing-object"), ([], "missing-object")):
        r = copy.deepcopy(good)
        r["request"]["object"] = value
        assert bad_reason(r) == reason


def test_an_object_whose_kind_differs_from_the_request_kind_is_a_bad_request():
    r = example("create-denied.json")
    r["request"]["object"]["kind"] = "Pod"
    assert bad_reason(r) == "object-kind-mismatch"


@pytest.mark.parametrize("mutate", [
    lambda o: o.__setitem__("spec", ["not", "a", "mapping"]),
    lambda o: o["spec"].__setitem__("egress", {"to": []}),
    lambda o: o.__setitem__("metadata", "shop/x"),
    lambda o: o["spec"].__setitem__("podSelector", "app=x"),
])
def test_a_networkpolicy_of_a_shape_the_api_server_never_sends_is_a_bad_request(mutate):
    r = example("create-denied.json")
    mutate(r["request"]["object"])
    assert bad_reason(r) == "bad-object"


def test_the_uid_is_echoed_even_when_the_review_is_rejected():
    r = example("create-denied.json")
    r["request"]["object"] = None
    with pytest.raises(BadReview) as exc:
        parse_review(r)
    assert exc.value.body()["response"]["uid"] == r["request"]["uid"]


def test_update_without_old_object_is_rejected():
    r = example("update-preexisting-error.json")
    r["request"]["oldObject"] = None
    assert bad_reason(r) == "missing-old-object"


def test_a_review_as_the_api_server_sends_it_parses_into_typed_fields():
    req = parse_review(example("create-denied-dryrun.json"))
    assert req.kind == GroupVersionKind("networking.k8s.io", "v1", "NetworkPolicy")
    assert req.operation == "CREATE" and req.dry_run is True
    assert req.user.username == "jane@example.com" and "system:authenticated" in req.user.groups
    assert req.object_ref == "monitoring/prometheus-egress"


# --- decisions and the response ---------------------------------------------------------

def test_a_denial_lists_every_error_with_rule_path_and_fix_and_reads_well_after_kubectls_prefix():
    errors = [finding(fix="egress:\n- ports: [{port: 53, protocol: UDP}]"),
              finding(rule="invalid-spec", path="spec.ingress[0].ports[0].port", message="Invalid value: 80800")]
    d = decision_from_findings("shop/api", errors)
    assert not d.allowed
    assert d.message.splitlines()[0] == "NetworkPolicy shop/api has 2 errors:"
    assert "- [dns-egress-missing] spec.egress: no DNS" in d.message
    assert "- [invalid-spec] spec.ingress[0].ports[0].port: Invalid value: 80800" in d.message
    assert "    - ports: [{port: 53, protocol: UDP}]" in d.message
    printed = kubectl_denial(d)
    assert printed.startswith('Error from server (Forbidden): error when creating "policy.yaml": admission '
                              'webhook "networkpolicies.netpol-guard.io" denied the request: NetworkPolicy shop/api')


def test_build_response_echoes_uid_and_version_and_uses_403_for_a_denial():
    req = parse_review(example("create-denied.json"))
    body = build_response(req, deny("no"))
    assert body["apiVersion"] == "admission.k8s.io/v1" and body["kind"] == "AdmissionReview"
    assert body["response"] == {"uid": req.uid, "allowed": False,
                                "status": {"code": 403, "reason": "Forbidden", "message": "no"}}


def test_warnings_are_one_per_finding_prefixed_with_the_rule_and_short():
    warns = [finding(severity="warning", rule="dns-tcp-missing", message="x" * 500),
             finding(severity="warning", rule="missing-description", path="metadata", message="say why")]
    d = decision_from_findings("ns/p", warns)
    assert d.allowed
    assert [w.split("]")[0] + "]" for w in d.warnings] == ["[dns-tcp-missing]", "[missing-description]"]
    assert all(len(w) <= WARNING_MAX_CHARS and "\n" not in w for w in d.warnings)
    assert d.warnings[0].endswith("...")


def test_the_number_of_warnings_is_bounded_and_the_last_says_how_many_more():
    warns = [finding(severity="warning", path=f"spec.ingress[{i}]") for i in range(30)]
    d = decision_from_findings("ns/p", warns)
    assert len(d.warnings) == WARNING_MAX_COUNT
    assert "21 more" in d.warnings[-1]


def test_mode_warn_turns_a_denial_into_warnings():
    d = decision_from_findings("ns/p", [finding()], mode="warn")
    assert d.allowed and d.warnings == ("[dns-egress-missing] spec.egress: (would deny) no DNS",)


def test_a_patch_is_sent_base64_encoded_as_jsonpatch():
    req = parse_review(example("mutate-create.json"))
    ops = [{"op": "add", "path": "/spec/policyTypes", "value": ["Ingress"]}]
    body = build_response(req, Decision(patch=tuple(ops)))["response"]
    assert body["patchType"] == "JSONPatch" and json.loads(base64.b64decode(body["patch"])) == ops


# --- UPDATE: only what the change introduces denies -----------------------------------------

def test_an_error_the_old_object_already_had_is_kept_not_introduced():
    old = [finding(message="3 pods lack DNS")]
    new = [finding(message="4 pods lack DNS")]
    introduced, kept = introduced_errors(new, old)
    assert introduced == [] and kept == new


def test_a_new_error_is_introduced():
    introduced, kept = introduced_errors([finding(), finding(rule="invalid-spec", path="spec.x")], [finding()])
    assert [f.rule for f in introduced] == ["invalid-spec"] and [f.rule for f in kept] == ["dns-egress-missing"]


def test_more_errors_of_the_same_rule_than_before_means_the_change_made_it_worse():
    old = [finding(path="spec.egress[0]")]
    new = [finding(path="spec.egress[0]"), finding(path="spec.egress[1]")]
    introduced, kept = introduced_errors(new, old)
    assert [f.path for f in introduced] == ["spec.egress[1]"] and [f.path for f in kept] == ["spec.egress[0]"]


def test_update_keeping_a_pre_existing_error_is_allowed_with_a_warning(cluster):
    req = parse_review(example("update-preexisting-error.json"))
    d = dispatch("validate", req, ctx(cluster))
    assert d.allowed
    assert any(w.startswith("[dns-egress-missing] spec.egress: (pre-existing)") for w in d.warnings)


def test_update_that_breaks_dns_is_denied(cluster):
    d = dispatch("validate", parse_review(example("update-introduces-error.json")), ctx(cluster))
    assert not d.allowed and "[dns-egress-missing]" in d.message


def test_the_candidate_replaces_the_stored_version_of_itself(cluster):
    """shop/allow-dns is the shop's only DNS allowance. An update that turns it into an
    HTTPS-only rule must be judged without the stored copy still allowing DNS."""
    stored = cluster.view.policy("shop", "allow-dns")
    assert stored is not None
    obj = copy.deepcopy(stored.raw)
    obj["spec"]["egress"] = [{"ports": [{"port": 443, "protocol": "TCP"}]}]
    _, findings = judge(obj, "shop", ctx(cluster))
    assert "dns-egress-missing" in {f.rule for f in findings}
    _, unchanged = judge(stored.raw, "shop", ctx(cluster))
    assert "dns-egress-missing" not in {f.rule for f in unchanged}


# --- the handler registry ------------------------------------------------------------------

# A kind of our own: the isolation guards register handlers for Namespaces and Pods, and
# these tests must not depend on whether they were registered earlier in the session.
NAMESPACE = GroupVersionKind("example.netpol-guard.io", "v1", "Widget")


def namespace_review(op="CREATE", user="jane", ns_name="team-a"):
    obj = {"apiVersion": "example.netpol-guard.io/v1", "kind": "Widget", "metadata": {"name": ns_name}}
    return parse_review({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                         "request": {"uid": "u", "kind": {"group": "example.netpol-guard.io", "version": "v1",
                                                          "kind": "Widget"},
                                     "operation": op, "name": ns_name, "object": obj,
                                     "oldObject": obj if op == "UPDATE" else None,
                                     "userInfo": {"username": user, "groups": ["system:authenticated"]}}})


@pytest.fixture
def scratch_registry():
    before = list(_REGISTRY)
    yield
    _REGISTRY[:] = before


def test_a_kind_nobody_handles_is_allowed_with_no_opinion(scratch_registry):
    d = dispatch("validate", namespace_review(), HandlerContext(from_dict({}), EmptySource()))
    assert d.allowed and d.label == "no-opinion"


def test_a_registered_handler_is_dispatched_by_kind_and_operation_only(scratch_registry):
    calls = []

    def gate(request, hctx):
        calls.append(request.operation)
        return deny(f"namespace {request.name} needs a team label")

    register_handler(NAMESPACE, ("CREATE",), gate)
    hctx = HandlerContext(from_dict({}), EmptySource())
    assert not dispatch("validate", namespace_review("CREATE"), hctx).allowed
    assert dispatch("validate", namespace_review("UPDATE"), hctx).allowed
    assert dispatch("mutate", namespace_review("CREATE"), hctx).allowed
    assert calls == ["CREATE"]


def test_handler_lookup_follows_registrations_and_in_place_restores(scratch_registry):
    # handlers_for() answers from an index; it must see a handler registered after the
    # index was built, and forget it when the registry is restored in place.
    hctx = HandlerContext(from_dict({}), EmptySource())
    assert dispatch("validate", namespace_review(), hctx).label == "no-opinion"  # index built
    before = list(_REGISTRY)
    register_handler(NAMESPACE, ("CREATE", "UPDATE"), lambda r, c: deny("gated"))
    assert dispatch("validate", namespace_review("CREATE"), hctx).message == "gated"
    assert dispatch("validate", namespace_review("UPDATE"), hctx).message == "gated"
    _REGISTRY[:] = before
    assert dispatch("validate", namespace_review(), hctx).label == "no-opinion"


def test_two_handlers_on_one_kind_deny_if_either_denies_and_keep_all_warnings(scratch_registry):
    register_handler(NAMESPACE, ("CREATE",), lambda r, c: Decision(warnings=("[a] one",)))
    register_handler(NAMESPACE, ("CREATE",), lambda r, c: deny("no", warnings=("[b] two",)))
    d = dispatch("validate", namespace_review(), HandlerContext(from_dict({}), EmptySource()))
    assert not d.allowed and d.message == "no" and d.warnings == ("[a] one", "[b] two")


def test_exempt_users_groups_and_namespaces_skip_handlers_that_honour_exemptions(scratch_registry):
    register_handler(NAMESPACE, ("CREATE",), lambda r, c: deny("no"))
    hctx = HandlerContext(from_dict({"exemptUsers": ["system:serviceaccount:netpol-guard:netpol-guard"],
                                     "exemptGroups": ["system:masters"]}), EmptySource())
    d = dispatch("validate", namespace_review(user="system:serviceaccount:netpol-guard:netpol-guard"), hctx)
    assert d.allowed and d.label == "exempt"
    register_handler(NAMESPACE, ("CREATE",), lambda r, c: deny("guarded"), exemptions=False)
    d = dispatch("validate", namespace_review(user="system:serviceaccount:netpol-guard:netpol-guard"), hctx)
    assert not d.allowed and d.message == "guarded"


def test_a_handler_that_raises_is_answered_as_an_error_not_a_crash(scratch_registry):
    def broken(request, hctx):
        raise KeyError("boom")

    register_handler(NAMESPACE, ("CREATE",), broken)
    d = dispatch("validate", namespace_review(), HandlerContext(from_dict({}), EmptySource()))
    assert not d.allowed and d.label == "error" and "internal error in broken" in d.message


def test_register_handler_refuses_unknown_operations_and_endpoints(scratch_registry):
    with pytest.raises(ValueError):
        register_handler(NAMESPACE, ("PATCH",), lambda r, c: deny("x"))
    with pytest.raises(ValueError):
        register_handler(NAMESPACE, ("CREATE",), lambda r, c: deny("x"), endpoint="audit")  # type: ignore[arg-type]


# --- JSONPatch ------------------------------------------------------------------------------

def test_paths_escape_tilde_and_slash():
    old = {"metadata": {"annotations": {"a/b": "1", "c~d": "2"}}}
    new = {"metadata": {"annotations": {"a/b": "9", "c~d": "2", "e~/f": "3"}}}
    ops = jsonpatch.diff(old, new)
    assert ops == [{"op": "replace", "path": "/metadata/annotations/a~1b", "value": "9"},
                   {"op": "add", "path": "/metadata/annotations/e~0~1f", "value": "3"}]
    assert jsonpatch.apply(old, ops) == new


@pytest.mark.parametrize("old,new", [
    ({"a": [1, 2]}, {"a": [1, 2, 3, 4]}),
    ({"a": [1, 2, 3]}, {"a": [1]}),
    ({"a": [{"x": 1}]}, {"a": [{"x": 2, "y": [1]}]}),
    ({"a": 1, "b": 2}, {"b": 3}),
    ({"a": {"b": 1}}, {"a": [1]}),
])
def test_applying_the_diff_gives_exactly_the_new_value(old, new):
    assert jsonpatch.apply(old, jsonpatch.diff(old, new)) == new


# --- mutations ------------------------------------------------------------------------------

ALL_MUTATIONS = {"mutations": {"addDnsEgress": True, "explicitPolicyTypes": True, "exceptMetadataAddress": True}}


def test_mutations_are_off_unless_enabled(cluster):
    d = dispatch("mutate", parse_review(example("mutate-create.json")), ctx(cluster))
    assert d.allowed and not d.patch


def test_the_patch_yields_exactly_the_intended_object_and_it_then_passes_validation(cluster):
    req = parse_review(example("mutate-create.json"))
    hctx = ctx(cluster, **ALL_MUTATIONS)
    d = dispatch("mutate", req, hctx)
    result = jsonpatch.apply(req.object, list(d.patch))
    intended = copy.deepcopy(req.object)
    intended["spec"]["egress"][0]["to"][0]["ipBlock"]["except"] = ["169.254.169.254/32"]
    intended["spec"]["egress"].append({
        "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
        "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]})
    intended["spec"]["policyTypes"] = ["Ingress", "Egress"]
    assert result == intended
    # no op rewrites what the user wrote: only adds below existing paths
    assert all(op["op"] == "add" for op in d.patch)
    _, findings = judge(result, "monitoring", hctx)
    assert not [f for f in findings if f.severity == "error"]
    assert "dns-egress-missing" not in {f.rule for f in findings}


def test_add_dns_egress_follows_the_configured_dns_target(cluster):
    hctx = ctx(cluster, mutations={"addDnsEgress": True},
               dns={"namespace": "kube-system", "podLabels": {"k8s-app": "kube-dns"},
                    "nodeLocalAddresses": ["169.254.20.10"]})
    new = mutated(example("create-denied.json")["request"]["object"], "monitoring", hctx)
    added = new["spec"]["egress"][-1]
    assert {"ipBlock": {"cidr": "169.254.20.10/32"}} in added["to"]


def test_a_policy_that_already_allows_dns_is_not_mutated(cluster):
    obj = example("create-allowed.json")["request"]["object"]
    assert mutated(obj, "monitoring", ctx(cluster, mutations={"addDnsEgress": True})) == obj


def test_ipv6_anywhere_gets_the_ipv6_metadata_address_and_an_existing_except_is_respected(cluster):
    obj = example("mutate-create.json")["request"]["object"]
    obj["spec"]["egress"][0]["to"] = [{"ipBlock": {"cidr": "::/0"}},
                                      {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.0.0/16"]}}]
    new = mutated(obj, "monitoring", ctx(cluster, mutations={"exceptMetadataAddress": True}))
    assert new["spec"]["egress"][0]["to"] == [{"ipBlock": {"cidr": "::/0", "except": ["fd00:ec2::254/128"]}},
                                              {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.0.0/16"]}}]


def test_an_invalid_policy_is_not_mutated(cluster):
    obj = example("mutate-create.json")["request"]["object"]
    obj["spec"]["egress"][0]["ports"][0]["protocol"] = "tcp"
    assert mutated(obj, "monitoring", ctx(cluster, **ALL_MUTATIONS)) == obj


# --- metrics --------------------------------------------------------------------------------

def test_metrics_from_several_processes_are_summed(tmp_path):
    a = Metrics(str(tmp_path))
    a.record_decision("validate", "CREATE", "deny", 0.003, [("dns-egress-missing", "error")])
    # a second "worker": same directory, its own file
    pid = os.fork()
    if pid == 0:
        try:
            Metrics(str(tmp_path)).record_decision("validate", "CREATE", "deny", 0.02, [])
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    totals, files = read_dir(str(tmp_path))
    assert files == 2
    key = 'netpol_guard_requests_total{endpoint="validate",operation="CREATE",decision="deny"}'
    assert totals[key] == 2
    text = a.render({"netpol_guard_cache_objects": 5})
    assert f"{key} 2" in text
    assert 'netpol_guard_request_duration_seconds_bucket{endpoint="validate",le="0.005"} 1' in text
    assert 'netpol_guard_request_duration_seconds_bucket{endpoint="validate",le="+Inf"} 2' in text
    assert "# TYPE netpol_guard_request_duration_seconds histogram" in text
    assert "netpol_guard_cache_objects 5" in text


def test_a_metrics_file_grows_past_its_first_chunk(tmp_path):
    m = Metrics(str(tmp_path))
    for i in range(3000):
        m.inc("netpol_guard_findings_total", {"rule": f"rule-{i}", "severity": "error"})
    totals, _ = read_dir(str(tmp_path))
    assert len(totals) == 3000 and totals['netpol_guard_findings_total{rule="rule-2999",severity="error"}'] == 1
