"""Admission guards for isolation: managed policies protected, bad label values refused,
pods gated until the namespace is protected. Pure handlers first, then through the Flask app."""
from __future__ import annotations

import copy
import json

import pytest

from webhook.admission.handlers import _REGISTRY, HandlerContext, dispatch
from webhook.admission.review import parse_review
from webhook.cluster.objects import Namespace
from webhook.cluster.source import EmptySource
from webhook.config import from_dict
from webhook.isolation.admission import check_managed_policy, check_namespace, check_pod, register
from webhook.isolation.desired import ALLOW_DNS, DEFAULT_DENY, desired_policies
from webhook.policy.parse import parse_policy

LABEL = "netpol-guard.io/isolate"
CONTROLLER = "system:serviceaccount:netpol-guard:netpol-guard"


@pytest.fixture
def registered():
    """The guards registered for one test only: other test files see the registry as they left it."""
    before = list(_REGISTRY)
    register()
    register()  # idempotent
    yield
    _REGISTRY[:] = before


def config(**isolation):
    return from_dict({"isolation": isolation} if isolation else {})


def view_with(namespaces: dict[str, dict], policies=()) -> EmptySource:
    source = EmptySource()
    for name, labels in namespaces.items():
        source.view.upsert_namespace(Namespace(name, {"kubernetes.io/metadata.name": name, **labels}))
    for obj in policies:
        source.view.upsert_policy(parse_policy(obj).policy)
    return source


def review(kind: tuple[str, str, str], operation: str, name: str, namespace: str = "", obj=None, old=None,
           user: str = "jane@example.com") -> dict:
    group, version, k = kind
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "u-1", "kind": {"group": group, "version": version, "kind": k},
        "resource": {"group": group, "version": version, "resource": k.lower() + "s"},
        "operation": operation, "name": name, "namespace": namespace,
        "userInfo": {"username": user, "groups": ["system:authenticated"]},
        "object": obj, "oldObject": old, "dryRun": False}}


NP = ("networking.k8s.io", "v1", "NetworkPolicy")
NS = ("", "v1", "Namespace")
POD = ("", "v1", "Pod")


def managed(name=DEFAULT_DENY, ns="shop", mode="all") -> dict:
    return next(p for p in desired_policies(ns, mode, config()) if p["metadata"]["name"] == name)


def ns_obj(name: str, value: str | None) -> dict:
    labels = {"kubernetes.io/metadata.name": name}
    if value is not None:
        labels[LABEL] = value
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def pod(ns="shop") -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-1", "namespace": ns},
            "spec": {"containers": [{"name": "web", "image": "nginx"}]}}


ISOLATED = view_with({"shop": {LABEL: "all"}, "open": {}})


# --- managed policies ---------------------------------------------------------------------------

def test_deleting_a_managed_policy_in_an_isolated_namespace_is_denied_with_how_to_change_isolation():
    req = parse_review(review(NP, "DELETE", DEFAULT_DENY, "shop", old=managed()))
    d = check_managed_policy(req, ISOLATED.view, config())
    assert not d.allowed
    assert "shop/netpol-guard-default-deny is managed by netpol-guard" in d.message
    assert f"kubectl label namespace shop {LABEL}-" in d.message
    assert "--overwrite" in d.message


def test_a_managed_policy_in_a_namespace_being_deleted_may_be_deleted():
    # the namespace controller empties the namespace; refused, the namespace stays Terminating
    source = EmptySource()
    source.view.upsert_namespace(Namespace("shop", {"kubernetes.io/metadata.name": "shop", LABEL: "all"},
                                           terminating=True))
    req = parse_review(review(NP, "DELETE", DEFAULT_DENY, "shop", old=managed(),
                              user="system:serviceaccount:kube-system:namespace-controller"))
    assert check_managed_policy(req, source.view, config()).allowed


def test_editing_the_spec_of_a_managed_policy_is_denied():
    new = copy.deepcopy(managed())
    new["spec"]["policyTypes"] = ["Ingress"]
    req = parse_review(review(NP, "UPDATE", DEFAULT_DENY, "shop", obj=new, old=managed()))
    d = check_managed_policy(req, ISOLATED.view, config())
    assert not d.allowed and "cannot be changed by hand" in d.message


def test_removing_the_managed_by_label_is_denied_too():
    new = copy.deepcopy(managed())
    del new["metadata"]["labels"]["app.kubernetes.io/managed-by"]
    req = parse_review(review(NP, "UPDATE", DEFAULT_DENY, "shop", obj=new, old=managed()))
    assert not check_managed_policy(req, ISOLATED.view, config()).allowed


def test_an_update_that_only_adds_a_tracking_label_is_allowed():
    new = copy.deepcopy(managed())
    new["metadata"]["labels"]["argocd.argoproj.io/instance"] = "platform"
    req = parse_review(review(NP, "UPDATE", DEFAULT_DENY, "shop", obj=new, old=managed()))
    assert check_managed_policy(req, ISOLATED.view, config()).allowed


def test_the_controller_may_change_managed_policies():
    req = parse_review(review(NP, "DELETE", ALLOW_DNS, "shop", old=managed(ALLOW_DNS), user=CONTROLLER))
    assert check_managed_policy(req, ISOLATED.view, config()).allowed


def test_once_the_label_is_removed_the_policies_may_be_deleted_by_anyone():
    req = parse_review(review(NP, "DELETE", DEFAULT_DENY, "open", old=managed(ns="open")))
    assert check_managed_policy(req, ISOLATED.view, config()).allowed


def test_policies_not_managed_by_netpol_guard_are_not_guarded():
    theirs = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
              "metadata": {"name": "team", "namespace": "shop"}, "spec": {"podSelector": {}}}
    req = parse_review(review(NP, "DELETE", "team", "shop", old=theirs))
    assert check_managed_policy(req, ISOLATED.view, config()).allowed


def test_the_guard_holds_even_for_exempt_users(registered):
    req = parse_review(review(NP, "DELETE", DEFAULT_DENY, "shop", old=managed(), user="admin"))
    ctx = HandlerContext(from_dict({"exemptUsers": ["admin"]}), ISOLATED)
    assert not dispatch("validate", req, ctx).allowed


# --- namespaces -----------------------------------------------------------------------------------

def test_a_namespace_with_an_unknown_isolate_value_is_denied_with_the_allowed_values():
    req = parse_review(review(NS, "CREATE", "shop", obj=ns_obj("shop", "everything")))
    d = check_namespace(req, ISOLATED.view, config())
    assert not d.allowed
    assert "'everything'" in d.message and "all, ingress, egress" in d.message


@pytest.mark.parametrize("value", ["all", "ingress", "egress"])
def test_each_known_mode_is_allowed(value):
    req = parse_review(review(NS, "UPDATE", "shop", obj=ns_obj("shop", value), old=ns_obj("shop", None)))
    d = check_namespace(req, ISOLATED.view, config())
    assert d.allowed and not d.warnings


def test_removing_the_label_is_allowed_with_a_warning_saying_what_follows():
    req = parse_review(review(NS, "UPDATE", "shop", obj=ns_obj("shop", None), old=ns_obj("shop", "all")))
    d = check_namespace(req, ISOLATED.view, config())
    assert d.allowed and len(d.warnings) == 1
    assert "deletes its default-deny" in d.warnings[0]
    kept = check_namespace(req, ISOLATED.view, config(onLabelRemoved="keep"))
    assert kept.allowed and "no longer maintained" in kept.warnings[0]


def test_an_unrelated_edit_of_a_namespace_with_a_preexisting_bad_value_is_allowed():
    old = ns_obj("shop", "everything")
    new = copy.deepcopy(old)
    new["metadata"]["labels"]["team"] = "payments"
    req = parse_review(review(NS, "UPDATE", "shop", obj=new, old=old))
    assert check_namespace(req, ISOLATED.view, config()).allowed


# --- pod gate ----------------------------------------------------------------------------------------

def test_pods_are_not_gated_unless_configured():
    req = parse_review(review(POD, "CREATE", "web-1", "shop", obj=pod()))
    assert check_pod(req, ISOLATED.view, config()).allowed


def test_a_pod_in_a_labeled_namespace_without_its_default_deny_is_denied_with_a_retryable_message():
    req = parse_review(review(POD, "CREATE", "web-1", "shop", obj=pod()))
    d = check_pod(req, ISOLATED.view, config(gatePods=True))
    assert not d.allowed
    assert "does not exist yet" in d.message and "retry" in d.message


def test_a_pod_is_admitted_once_the_managed_default_deny_is_in_the_view():
    source = view_with({"shop": {LABEL: "all"}}, desired_policies("shop", "all", config()))
    req = parse_review(review(POD, "CREATE", "web-1", "shop", obj=pod()))
    assert check_pod(req, source.view, config(gatePods=True)).allowed


def test_a_same_named_policy_not_managed_by_netpol_guard_does_not_open_the_gate():
    impostor = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": DEFAULT_DENY, "namespace": "shop"}, "spec": {"podSelector": {}}}
    source = view_with({"shop": {LABEL: "all"}}, [impostor])
    req = parse_review(review(POD, "CREATE", "web-1", "shop", obj=pod()))
    assert not check_pod(req, source.view, config(gatePods=True)).allowed


def test_pods_in_unlabeled_namespaces_are_never_gated():
    req = parse_review(review(POD, "CREATE", "web-1", "open", obj=pod("open")))
    assert check_pod(req, ISOLATED.view, config(gatePods=True)).allowed


def test_a_pod_in_a_namespace_the_view_does_not_know_yet_waits():
    req = parse_review(review(POD, "CREATE", "web-1", "brand-new", obj=pod("brand-new")))
    d = check_pod(req, ISOLATED.view, config(gatePods=True))
    assert not d.allowed and "not yet known" in d.message


# --- through the Flask app, as the API server calls it -------------------------------------------------

@pytest.fixture
def client(registered):
    from webhook.admission.app import create_app

    source = view_with({"shop": {LABEL: "all"}}, desired_policies("shop", "all", config()))
    # jane may change the isolate label (the Namespace label guard: tests/test_namespace_labels.py)
    app = create_app(from_dict({"isolation": {"gatePods": True},
                                "namespaceLabels": {"allowedUsers": ["jane@example.com"]}}), source)
    return app.test_client()


def post(client, body: dict) -> dict:
    resp = client.post("/validate", data=json.dumps(body), content_type="application/json")
    assert resp.status_code == 200
    return resp.get_json()["response"]


def test_the_validate_endpoint_denies_deleting_a_managed_policy(client):
    out = post(client, review(NP, "DELETE", DEFAULT_DENY, "shop", old=managed()))
    assert out["allowed"] is False and out["status"]["code"] == 403
    assert "managed by netpol-guard" in out["status"]["message"]


def test_the_validate_endpoint_refuses_a_bad_label_and_warns_on_removal(client):
    bad = post(client, review(NS, "UPDATE", "shop", obj=ns_obj("shop", "al"), old=ns_obj("shop", "all")))
    assert bad["allowed"] is False and "all, ingress, egress" in bad["status"]["message"]
    removed = post(client, review(NS, "UPDATE", "shop", obj=ns_obj("shop", None), old=ns_obj("shop", "all")))
    assert removed["allowed"] is True and removed["warnings"]


def test_the_validate_endpoint_admits_pods_once_the_namespace_is_protected(client):
    assert post(client, review(POD, "CREATE", "web-1", "shop", obj=pod()))["allowed"] is True
    gated = post(client, review(POD, "CREATE", "web-1", "fresh", obj=pod("fresh")))
    assert gated["allowed"] is False and "retry" in gated["status"]["message"]


def test_registering_twice_registers_each_guard_once(registered):
    from webhook.isolation.admission import gate_pod, guard_managed_policy, guard_namespace

    for fn in (guard_managed_policy, guard_namespace, gate_pod):
        assert sum(r.fn is fn for r in _REGISTRY) == 1
