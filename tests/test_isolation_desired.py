"""The managed policies are correct by our own standards, for every mode."""
import subprocess
import sys

import pytest
import yaml

from webhook.cluster.files import add_to_view, parse_text
from webhook.cluster.view import ClusterView
from webhook.config import DEFAULT, from_dict
from webhook.isolation.desired import (ALLOW_DNS, DEFAULT_DENY, MODES, UnknownMode, desired_policies, drifted,
                                       merged_for_update, mode_of)
from webhook.policy.engine import Endpoint, Engine
from webhook.policy.parse import parse_policy
from webhook.rules.batch import check_all
from webhook.rules.inventory import CLUSTER


def _view_with(mode: str) -> ClusterView:
    view = ClusterView()
    for d in parse_text(CLUSTER, "cluster.yaml"):
        add_to_view(view, d)
    for obj in desired_policies("shop", mode, DEFAULT):
        view.upsert_policy(parse_policy(obj).policy)
    return view


@pytest.mark.parametrize("mode", MODES)
def test_managed_policies_lint_with_nothing_above_info(mode):
    view = ClusterView()
    for d in parse_text(CLUSTER, "cluster.yaml"):
        add_to_view(view, d)
    reports = check_all(view, DEFAULT, [(o, None) for o in desired_policies("shop", mode, DEFAULT)])
    assert all(r.policy is not None for r in reports)
    loud = [f"{f.rule}: {f.message}" for r in reports for f in r.findings if f.severity != "info"]
    assert loud == []


@pytest.mark.parametrize("mode", MODES)
def test_pods_reach_dns_and_nothing_else_in_the_denied_directions(mode):
    view = _view_with(mode)
    engine = Engine(view)
    api, db = view.find_pod("shop", "api"), view.find_pod("shop", "db")
    coredns = view.find_pod("kube-system", "coredns")
    for proto in ("UDP", "TCP"):
        assert engine.evaluate(Endpoint.of_pod(api), Endpoint.of_pod(coredns), 53, proto).allowed
    verdict = engine.evaluate(Endpoint.of_pod(api), Endpoint.of_pod(db), 5432)
    assert not verdict.allowed
    assert verdict.egress.allowed == (mode == "ingress")
    assert verdict.ingress.allowed == (mode == "egress")
    outside = engine.evaluate(Endpoint.of_pod(api), Endpoint.of_ip("203.0.113.7"), 443)
    assert outside.allowed == (mode == "ingress")


def test_dns_allowance_only_when_egress_is_denied():
    names = {m: [p["metadata"]["name"] for p in desired_policies("ns1", m, DEFAULT)] for m in MODES}
    assert names == {"all": [ALLOW_DNS, DEFAULT_DENY], "egress": [ALLOW_DNS, DEFAULT_DENY],
                     "ingress": [DEFAULT_DENY]}


def test_configured_dns_target_and_node_local_address_are_used():
    cfg = from_dict({"dns": {"namespace": "dns-system", "podLabels": {"app": "coredns"},
                             "nodeLocalAddresses": ["169.254.20.10"]}})
    dns = desired_policies("ns1", "egress", cfg)[0]
    peers = dns["spec"]["egress"][0]["to"]
    assert peers[0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "dns-system"}
    assert peers[0]["podSelector"]["matchLabels"] == {"app": "coredns"}
    assert peers[1] == {"ipBlock": {"cidr": "169.254.20.10/32"}}


def test_unknown_mode_names_the_allowed_values():
    with pytest.raises(UnknownMode, match="all, ingress, egress"):
        mode_of({"netpol-guard.io/isolate": "everything"}, DEFAULT)
    assert mode_of({}, DEFAULT) is None


def test_labels_added_by_others_are_not_drift_but_spec_edits_are():
    want = desired_policies("ns1", "all", DEFAULT)[1]
    live = merged_for_update({"metadata": {"labels": {"argocd.argoproj.io/instance": "x"},
                                           "resourceVersion": "7"}}, want)
    assert live["metadata"]["labels"]["argocd.argoproj.io/instance"] == "x"
    assert live["metadata"]["resourceVersion"] == "7"
    assert not drifted(live, want)
    edited = yaml.safe_load(yaml.safe_dump(live))
    edited["spec"]["policyTypes"] = ["Ingress"]
    assert drifted(edited, want)


def test_render_command_prints_both_policies_as_yaml():
    out = subprocess.run([sys.executable, "-m", "webhook", "isolation", "render", "--namespace", "shop"],
                         capture_output=True, text=True, check=True).stdout
    docs = list(yaml.safe_load_all(out))
    assert [d["metadata"]["name"] for d in docs] == [ALLOW_DNS, DEFAULT_DENY]


def test_render_refuses_an_invalid_namespace_name():
    r = subprocess.run([sys.executable, "-m", "webhook", "isolation", "render", "--namespace", "Shop_1"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "--namespace" in r.stderr and "Traceback" not in r.stderr
