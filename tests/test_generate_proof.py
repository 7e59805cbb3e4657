"""The proof: the generated sets pass it, and every kind of mistake in a policy set fails it."""
from __future__ import annotations

import copy
import os
import re

import pytest

from webhook.config import Config, from_dict
from webhook.generate.mapparse import parse_map
from webhook.generate.policies import generate
from webhook.generate.proof import _MemoEngine, _World, prove
from webhook.policy.engine import Endpoint
from webhook.policy.parse import parse_policy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAPS = os.path.join(ROOT, "examples", "maps")
EXAMPLES = ("three-tier", "api-egress", "ingress-monitoring")

OUTSIDE_MAP = """\
namespaces: [edge]
workloads:
  - {name: web, namespace: edge, labels: {app: web}, ports: [{name: https, port: 443}, {name: admin, port: 8443}]}
  - {name: batch, namespace: edge, labels: {app: batch}, ports: [9000]}
ingress:
  - {from: [198.51.100.0/24, "2001:db8:1::/48"], to: web, ports: [https]}
egress:
  - {from: batch, to: [203.0.113.0/24], ports: [443, 8443]}
"""


def load(name: str):
    path = os.path.join(MAPS, f"{name}.yaml")
    with open(path) as fh:
        cmap = parse_map(fh.read(), path)
    return cmap, [p.obj for p in generate(cmap, Config().dns)]


def find(objs, namespace, name):
    return next(o for o in objs if o["metadata"]["namespace"] == namespace and o["metadata"]["name"] == name)


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_example_passes_the_proof(name):
    cmap, objs = load(name)
    report = prove(cmap, objs, Config())
    assert report.ok, report.failures
    assert report.checks["allowed flows"] >= len(cmap.flows)
    assert report.checks["denied flows"] > 0 and report.checks["DNS checks"] > 0
    assert report.checks["linted policies"] == len(objs)
    assert report.summary().startswith("proof passed: checked ")


def test_map_with_outside_traffic_passes():
    cmap = parse_map(OUTSIDE_MAP, "edge.yaml")
    report = prove(cmap, [p.obj for p in generate(cmap, Config().dns)], Config())
    assert report.ok, report.failures
    assert report.checks["external ingress checks"] > 0 and report.checks["external egress checks"] > 0


# --- mutations: each is a mistake a person could make by hand; the proof must catch it -----------

def drop_rule(objs):
    del find(objs, "data", "allow-ingress-database")["spec"]["ingress"][0]


def widen_peer_selector(objs):
    find(objs, "data", "allow-ingress-database")["spec"]["ingress"][0]["from"][0]["podSelector"] = {}


def widen_policy_selector(objs):
    find(objs, "shop", "allow-egress-api")["spec"]["podSelector"] = {}


def widen_namespace_selector(objs):
    find(objs, "data", "allow-ingress-cache")["spec"]["ingress"][0]["from"][0]["namespaceSelector"] = {}


def change_namespace_selector(objs):
    rule = find(objs, "shop", "allow-egress-api")["spec"]["egress"][1]
    rule["to"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] = "shop"


def change_port(objs):
    find(objs, "shop", "allow-ingress-api")["spec"]["ingress"][0]["ports"][0]["port"] = 8081


def change_protocol(objs):
    find(objs, "shop", "allow-ingress-api")["spec"]["ingress"][0]["ports"][0]["protocol"] = "UDP"


def misspell_named_port(objs):
    find(objs, "shop", "allow-egress-api")["spec"]["egress"][1]["ports"][0]["port"] = "postgre"


def remove_dns_policy(objs):
    objs.remove(find(objs, "shop", "allow-dns"))


def drop_dns_tcp_port(objs):
    find(objs, "data", "allow-dns")["spec"]["egress"][0]["ports"].pop(1)


def remove_default_deny(objs):
    objs.remove(find(objs, "shop", "default-deny"))


def add_allow_all_ingress(objs):
    find(objs, "data", "allow-ingress-cache")["spec"]["ingress"].append({})


def drop_policy_types_ingress(objs):
    find(objs, "shop", "default-deny")["spec"]["policyTypes"] = ["Egress"]


THREE_TIER_MUTATIONS = {
    drop_rule: "flow shop/api -> data/database 5432/TCP (map line 40) is denied, but the map allows it",
    widen_peer_selector: "shop/frontend -> data/database 5432/TCP, which the map does not allow, passes the ingress side",
    widen_policy_selector: "shop/frontend -> data/cache 6379/TCP, which the map does not allow, passes the egress side",
    widen_namespace_selector: ("netpol-guard-proof-elsewhere/<lookalike of shop/api> -> data/cache 6379/TCP, which the map "
                               "does not allow, passes the ingress side"),
    change_namespace_selector: "flow shop/api -> data/database 5432/TCP (map line 40) is denied",
    change_port: "flow shop/frontend -> shop/api 8080/TCP (map line 36) is denied",
    change_protocol: "flow shop/frontend -> shop/api 8080/TCP (map line 36) is denied",
    misspell_named_port: "flow shop/api -> data/database 5432/TCP (map line 40) is denied",
    remove_dns_policy: "DNS from shop/frontend to kube-system/deployment/cluster-dns 53/UDP is denied",
    drop_dns_tcp_port: "DNS from data/database to kube-system/deployment/cluster-dns 53/TCP is denied",
    remove_default_deny: "shop/api -> shop/<unlisted> 8080/TCP, which the map does not allow, passes the ingress side",
    add_allow_all_ingress: "data/database -> data/cache 6379/TCP, which the map does not allow, passes the ingress side",
    drop_policy_types_ingress: "data/database -> shop/<unlisted> 8080/TCP, which the map does not allow, passes the ingress side",
}


@pytest.mark.parametrize("mutate", list(THREE_TIER_MUTATIONS), ids=lambda f: f.__name__)
def test_proof_catches_each_mutation(mutate):
    cmap, objs = load("three-tier")
    broken = copy.deepcopy(objs)
    mutate(broken)
    report = prove(cmap, broken, Config())
    assert not report.ok
    expected = THREE_TIER_MUTATIONS[mutate]
    assert any(f.startswith(expected) for f in report.failures), report.failures


def test_proof_catches_metadata_reachable():
    cmap, objs = load("api-egress")
    rule = find(objs, "payments", "allow-external-egress-api")["spec"]["egress"][0]
    for peer in rule["to"]:
        peer["ipBlock"].pop("except", None)
    report = prove(cmap, objs, Config())
    assert any("egress from payments/api to 169.254.169.254 (the cloud metadata address) 443/TCP is allowed, "
               "but the map does not allow it" in f for f in report.failures), report.failures
    assert any("fd00:ec2::254 (the cloud metadata address)" in f for f in report.failures)


def test_proof_catches_external_egress_to_unlisted_port_and_wider_block():
    cmap = parse_map(OUTSIDE_MAP, "edge.yaml")
    objs = [p.obj for p in generate(cmap, Config().dns)]
    rule = find(objs, "edge", "allow-external-egress-batch")["spec"]["egress"][0]
    rule["to"][0]["ipBlock"]["cidr"] = "203.0.112.0/23"
    rule["ports"].append({"port": 8444, "protocol": "TCP"})
    failures = prove(cmap, objs, Config()).failures
    assert any(f.startswith("egress from edge/batch to 203.0.112.255 443/TCP is allowed, but the map does not")
               for f in failures), failures
    assert any(f.startswith("egress from edge/batch to 203.0.113.1 8444/TCP is allowed") for f in failures)


def test_proof_catches_external_ingress_widened_and_dropped():
    cmap = parse_map(OUTSIDE_MAP, "edge.yaml")
    objs = [p.obj for p in generate(cmap, Config().dns)]
    ingress = find(objs, "edge", "allow-ingress-web")["spec"]["ingress"]
    ingress[0]["from"] = [{"ipBlock": {"cidr": "0.0.0.0/0"}}]  # IPv6 dropped, IPv4 widened
    failures = prove(cmap, objs, Config()).failures
    assert any(f.startswith("ingress from outside 198.51.99.255 to edge/web 443/TCP is allowed") for f in failures)
    assert any(f.startswith("ingress from outside 2001:db8:1::1 to edge/web 443/TCP is denied, but the map allows")
               for f in failures), failures


def test_proof_runs_lint_with_the_configuration():
    """External egress into the pod network passes every flow check but is a lint warning."""
    cmap = parse_map("""\
namespaces: [a]
workloads: [{name: w, namespace: a, labels: {app: w}}]
egress: [{from: w, to: [10.0.0.0/8], ports: [443]}]
""", "m.yaml")
    objs = [p.obj for p in generate(cmap, Config().dns)]
    assert prove(cmap, objs, Config()).ok
    config = from_dict({"cluster": {"podCIDRs": ["10.244.0.0/16"]}})
    failures = prove(cmap, objs, config).failures
    assert failures and all(f.startswith("lint: warning [ipblock-targets-cluster] a/allow-external-egress-w")
                            for f in failures), failures


def test_proof_reports_invalid_policies():
    cmap, objs = load("three-tier")
    find(objs, "shop", "allow-ingress-api")["spec"]["ingress"][0]["ports"][0]["port"] = 0
    failures = prove(cmap, objs, Config()).failures
    assert any(f.startswith("policy allow-ingress-api is not valid") for f in failures), failures


# --- the side-by-side shortcut agrees with Engine.evaluate, flow by flow ----------------------------

def _brute_force_side_failures(cmap, objs) -> set[tuple[str, str, str]]:
    """What the proof's pod-to-pod check must find, computed the slow way: evaluate every flow."""
    world = _World(cmap, Config())
    view = world.view(with_probes=True)
    for o in objs:
        p = parse_policy(o).policy
        if p:
            view.upsert_policy(p)
    engine = _MemoEngine(view, False)
    expected = set()
    for f in cmap.flows:
        dst = world.workload_pods[f.destination.key]
        for src in world.senders(f.source.namespace, f.source.workload):
            expected |= {(src.key, dst.key, p.number, p.protocol) for p in f.ports}
    out = set()
    for s in world.sources():
        for d in world.destinations():
            for c in d.ports:
                if (s.key, d.key, c.port, c.protocol) in expected:
                    continue
                v = engine.evaluate(Endpoint.of_pod(s), Endpoint.of_pod(d), c.port, c.protocol)
                flow = f"{s.key} -> {d.key} {c.port}/{c.protocol}"
                if world.managed(d) and v.ingress.allowed:
                    out.add((flow, "ingress", v.ingress.explain()))
                if world.managed(s) and v.egress.allowed:
                    out.add((flow, "egress", v.egress.explain()))
    return out


_SIDE = re.compile(r"^(.*), which the map does not allow, passes the (ingress|egress) side: (.*)$")


@pytest.mark.parametrize("mutate", [None, *THREE_TIER_MUTATIONS], ids=lambda f: f.__name__ if f else "as-generated")
def test_side_shortcut_agrees_with_engine_evaluate(mutate):
    cmap, objs = load("three-tier")
    if mutate:
        mutate(objs)
    found = {m.groups() for f in prove(cmap, objs, Config()).failures if (m := _SIDE.match(f))}
    assert found == _brute_force_side_failures(cmap, objs)


@pytest.mark.parametrize("name", EXAMPLES)
def test_side_shortcut_agrees_on_widened_examples(name):
    cmap, objs = load(name)
    for o in objs:  # widen every policy and every peer: the most disagreement possible
        o["spec"]["podSelector"] = {}
        for rule in o["spec"].get("ingress", []) + o["spec"].get("egress", []):
            for peer in rule.get("from", []) + rule.get("to", []):
                if "namespaceSelector" in peer:
                    peer["namespaceSelector"] = {}
    found = {m.groups() for f in prove(cmap, objs, Config()).failures if (m := _SIDE.match(f))}
    assert found and found == _brute_force_side_failures(cmap, objs)


def test_dns_target_override_is_used_by_the_policy_and_the_proof():
    cmap = parse_map("""\
namespaces: [a]
workloads: [{name: w, namespace: a, labels: {app: w}}]
dns: {namespace: dns-system, podLabels: {app: coredns}, nodeLocalAddresses: [169.254.20.10]}
""", "m.yaml")
    objs = [p.obj for p in generate(cmap, Config().dns)]
    rule = find(objs, "a", "allow-dns")["spec"]["egress"][0]
    assert rule["to"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "dns-system"}},
         "podSelector": {"matchLabels": {"app": "coredns"}}},
        {"ipBlock": {"cidr": "169.254.20.10/32"}}]
    report = prove(cmap, objs, Config())
    assert report.ok, report.failures
    # the same policies checked against the default DNS target do not give DNS
    default_dns = parse_map("namespaces: [a]\nworkloads: [{name: w, namespace: a, labels: {app: w}}]\n", "m.yaml")
    failures = prove(default_dns, objs, Config()).failures
    assert any(f.startswith("DNS from a/w to kube-system/deployment/cluster-dns 53/UDP is denied") for f in failures)
