"""The Namespace label guard: only config.namespaceLabels may add, change or remove
netpol-guard.io/ignore and the isolate label. Pure checks first, then through the Flask app
(every handler registered for Namespaces runs there, as on a real review)."""
from __future__ import annotations

import json

import pytest

from webhook.admission.namespacelabels import check_namespace_labels
from webhook.admission.review import parse_review
from webhook.cluster.source import EmptySource
from webhook.config import ConfigError, from_dict

IGNORE, ISOLATE = "netpol-guard.io/ignore", "netpol-guard.io/isolate"


def ns(labels: dict | None = None, name: str = "shop") -> dict:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name, **(labels or {})}}}


def review(operation: str, new: dict, old: dict | None = None, user: str = "dev@example.com",
           groups: tuple[str, ...] = ("system:authenticated",)) -> dict:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Namespace"},
        "resource": {"group": "", "version": "v1", "resource": "namespaces"},
        "operation": operation, "name": new["metadata"]["name"], "namespace": "",
        "userInfo": {"username": user, "groups": list(groups)}, "object": new, "oldObject": old, "dryRun": False}}


def check(body: dict, config=None):
    return check_namespace_labels(parse_review(body), config or from_dict({}))


@pytest.mark.parametrize("old, new", [
    ({}, {IGNORE: "true"}),                      # exempting a namespace from every check
    ({IGNORE: "true"}, {}),
    ({IGNORE: "false"}, {IGNORE: "true"}),
    ({ISOLATE: "all"}, {}),                      # dropping its default-deny
    ({ISOLATE: "all"}, {ISOLATE: "ingress"}),
    ({}, {ISOLATE: "all"}),
])
def test_an_ordinary_user_may_not_change_the_guarded_labels(old, new):
    d = check(review("UPDATE", ns(new), ns(old)))
    assert not d.allowed
    assert "dev@example.com may not" in d.message
    assert "groups system:masters" in d.message and "--as-group=netpol-guard:break-glass" in d.message


def test_creating_a_namespace_with_the_ignore_label_is_adding_it():
    d = check(review("CREATE", ns({IGNORE: "true"})))
    assert not d.allowed and f"add {IGNORE}=true" in d.message


def test_other_edits_of_a_labeled_namespace_are_anyones():
    labeled = {IGNORE: "true", ISOLATE: "all"}
    assert check(review("UPDATE", ns({**labeled, "team": "shop"}), ns(labeled))).allowed
    assert check(review("CREATE", ns({"team": "shop"}))).allowed


@pytest.mark.parametrize("user, groups", [
    ("root", ("system:authenticated", "system:masters")),          # default allowed group
    ("oncall", ("system:authenticated", "netpol-guard:break-glass")),  # the break-glass group
    ("alice", ("system:authenticated",)),                          # allowedUsers below
    ("bob", ("platform",)),                                        # allowedGroups below
])
def test_allowed_identities_and_the_break_glass_group_may_change_them(user, groups):
    config = from_dict({"namespaceLabels": {"allowedUsers": ["alice"], "allowedGroups": ["platform", "system:masters"]}})
    assert check(review("UPDATE", ns({IGNORE: "true"}), ns(), user=user, groups=groups), config).allowed


def test_exempt_users_are_not_thereby_allowed_to_exempt_namespaces():
    config = from_dict({"exemptUsers": ["dev@example.com"]})
    assert not check(review("UPDATE", ns({IGNORE: "true"}), ns()), config).allowed


def test_an_empty_break_glass_group_allows_nobody_extra():
    config = from_dict({"namespaceLabels": {"breakGlassGroup": ""}})
    d = check(review("UPDATE", ns({IGNORE: "true"}), ns(), groups=("",)), config)
    assert not d.allowed and "break-glass" not in d.message


def test_a_custom_isolate_label_key_is_the_one_guarded():
    config = from_dict({"isolation": {"labelKey": "example.com/lockdown"}})
    assert not check(review("UPDATE", ns(), ns({"example.com/lockdown": "all"})), config).allowed
    assert check(review("UPDATE", ns(), ns({ISOLATE: "all"})), config).allowed


def test_the_config_section_rejects_wrong_types():
    with pytest.raises(ConfigError, match="namespaceLabels.allowedGroups: must be a list of strings"):
        from_dict({"namespaceLabels": {"allowedGroups": "platform"}})


def test_the_validate_endpoint_denies_labeling_a_namespace_ignored():
    from webhook.admission.app import create_app

    client = create_app(from_dict({}), EmptySource()).test_client()

    def post(body):
        resp = client.post("/validate", data=json.dumps(body), content_type="application/json")
        assert resp.status_code == 200
        return resp.get_json()["response"]

    denied = post(review("UPDATE", ns({IGNORE: "true"}), ns()))
    assert denied["allowed"] is False and denied["status"]["code"] == 403
    assert f"add {IGNORE}=true" in denied["status"]["message"]
    assert post(review("UPDATE", ns({IGNORE: "true"}), ns(), groups=("system:masters",)))["allowed"] is True
