"""The engine with AdminNetworkPolicies and a BaselineAdminNetworkPolicy, against an independent
brute-force reference.

The random clusters and NetworkPolicies of tests/test_engine_properties.py (and its reference
for the NetworkPolicy tier) gain random admin policies as plain API dicts: subjects by
namespaces or pods, Allow/Deny/Pass rules with namespaces, pods and networks peers, and
portNumber / portRange / namedPort ports. The reference below decides every flow straight from
those dicts, tier by tier as the API documents it; it shares no code with the engine. Every pod
has an IP and priorities are distinct, so nothing is left undecided and no verdict may carry a
caveat.

Deterministic: derandomized, no example database.
"""
from __future__ import annotations

import ipaddress

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.test_engine_properties import (
    CIDRS, EXTERNAL, FLOW_PORTS, NAMESPACES, NS_LABELS, POD_LABELS, PORT_NAMES, PORT_NUMBERS, _pod, _policy,
    clusters, engine_for, ref_ns_labels, ref_policy_types, ref_selector_matches, ref_side_allows, selectors,
)
from webhook.cluster.objects import NAME_LABEL
from webhook.policy.engine import Endpoint, Engine
from webhook.policy.matrix import PortQuery, compute
from webhook.policy.parse_admin import parse_admin_policy

API = "policy.networking.k8s.io/v1alpha1"
NS_CHOICES = dict(NS_LABELS, **{NAME_LABEL: NAMESPACES})

# --- generators: plain API dicts -----------------------------------------------------------------


@st.composite
def namespaced_pods(draw) -> dict:
    return {"namespaceSelector": draw(selectors(NS_CHOICES)), "podSelector": draw(selectors(POD_LABELS))}


@st.composite
def admin_peers(draw, egress: bool) -> dict:
    kind = draw(st.sampled_from(("namespaces", "pods", "pods", "networks") if egress else ("namespaces", "pods")))
    if kind == "namespaces":
        return {"namespaces": draw(selectors(NS_CHOICES))}
    if kind == "pods":
        return {"pods": draw(namespaced_pods())}
    return {"networks": draw(st.lists(st.sampled_from(CIDRS), min_size=1, max_size=2, unique=True))}


@st.composite
def admin_ports(draw, named: bool) -> dict:
    kinds = ("number", "number", "range", "name") if named else ("number", "range")
    kind = draw(st.sampled_from(kinds))
    if kind == "name":
        return {"namedPort": draw(st.sampled_from(PORT_NAMES))}
    spec: dict = {}
    proto = draw(st.sampled_from((None, "TCP", "UDP", "SCTP")))
    if proto:
        spec["protocol"] = proto
    if kind == "number":
        spec["port"] = draw(st.sampled_from(PORT_NUMBERS))
        return {"portNumber": spec}
    start = draw(st.sampled_from((50, 80, 8000)))
    spec.update(start=start, end=start + draw(st.sampled_from((1, 3, 100))))
    return {"portRange": spec}


@st.composite
def admin_rules(draw, direction: str, actions: tuple[str, ...]) -> dict:
    egress = direction == "egress"
    peers = draw(st.lists(admin_peers(egress), min_size=1, max_size=2))
    rule = {"action": draw(st.sampled_from(actions)), ("to" if egress else "from"): peers}
    # the CRD forbids named ports beside networks peers
    named = not any("networks" in p for p in peers)
    if draw(st.booleans()):
        rule["ports"] = draw(st.lists(admin_ports(named), min_size=1, max_size=2))
    return rule


@st.composite
def admin_policies(draw, kind: str, name: str, priority: int | None) -> dict:
    actions = ("Allow", "Deny", "Pass") if kind == "AdminNetworkPolicy" else ("Allow", "Deny")
    subject = (draw(st.sampled_from(("namespaces", "pods"))))
    spec: dict = {"subject": {"namespaces": draw(selectors(NS_CHOICES))} if subject == "namespaces"
                  else {"pods": draw(namespaced_pods())}}
    if priority is not None:
        spec["priority"] = priority
    for direction in ("ingress", "egress"):
        rules = draw(st.lists(admin_rules(direction, actions), max_size=3))
        if rules:
            spec[direction] = rules
    return {"apiVersion": API, "kind": kind, "metadata": {"name": name}, "spec": spec}


@st.composite
def admin_sets(draw) -> list[dict]:
    n = draw(st.integers(1, 4))
    priorities = draw(st.lists(st.integers(0, 30), min_size=n, max_size=n, unique=True))
    out = [draw(admin_policies("AdminNetworkPolicy", f"anp{i}", p)) for i, p in enumerate(priorities)]
    if draw(st.booleans()):
        out.append(draw(admin_policies("BaselineAdminNetworkPolicy", "default", None)))
    return out


# --- the reference, tier by tier -----------------------------------------------------------------


def ref_subject_selects(cluster: dict, spec: dict, pod: dict) -> bool:
    subject = spec["subject"]
    ns_labels = ref_ns_labels(cluster, pod["namespace"])
    if "namespaces" in subject:
        return ref_selector_matches(subject["namespaces"], ns_labels)
    pods = subject["pods"]
    return (ref_selector_matches(pods["namespaceSelector"], ns_labels)
            and ref_selector_matches(pods["podSelector"], pod["labels"]))


def ref_admin_peer(cluster: dict, peer: dict, other) -> bool:
    if "networks" in peer:
        ip = ipaddress.ip_address(other if isinstance(other, str) else other["ip"])
        return any(ip.version == ipaddress.ip_network(c).version and ip in ipaddress.ip_network(c)
                   for c in peer["networks"])
    if isinstance(other, str):
        return False  # namespaces and pods peers are cluster pods
    return ref_subject_selects(cluster, {"subject": peer}, other)


def ref_admin_port(spec: dict, port: int, proto: str, dst) -> bool:
    if "namedPort" in spec:
        return not isinstance(dst, str) and any(cp["name"] == spec["namedPort"] and cp["port"] == port
                                                and cp["protocol"] == proto for cp in dst["ports"])
    body = spec.get("portNumber") or spec["portRange"]
    if body.get("protocol", "TCP") != proto:
        return False
    if "portNumber" in spec:
        return body["port"] == port
    return body["start"] <= port <= body["end"]


def ref_first_action(cluster, policies, direction, other, dst, port, proto):
    for pol in policies:
        for rule in pol["spec"].get(direction.lower()) or []:
            peers = rule["from" if direction == "Ingress" else "to"]
            if not any(ref_admin_peer(cluster, pe, other) for pe in peers):
                continue
            if "ports" in rule and not any(ref_admin_port(ps, port, proto, dst) for ps in rule["ports"]):
                continue
            return rule["action"]
    return None


def ref_side(cluster, admin, direction, subject, other, dst, port, proto) -> bool:
    if isinstance(subject, str):
        return True
    applying = [a for a in admin if a["spec"].get(direction.lower()) and ref_subject_selects(cluster, a["spec"], subject)]
    anps = sorted((a for a in applying if a["kind"] == "AdminNetworkPolicy"), key=lambda a: a["spec"]["priority"])
    action = ref_first_action(cluster, anps, direction, other, dst, port, proto)
    if action in ("Allow", "Deny"):
        return action == "Allow"
    isolating = [p for p in cluster["policies"]
                 if p["metadata"]["namespace"] == subject["namespace"] and direction in ref_policy_types(p["spec"])
                 and ref_selector_matches(p["spec"]["podSelector"], subject["labels"])]
    if isolating:
        return ref_side_allows(cluster, direction, subject, other, dst, port, proto, False)
    baseline = [a for a in applying if a["kind"] == "BaselineAdminNetworkPolicy"]
    return ref_first_action(cluster, baseline, direction, other, dst, port, proto) != "Deny"


def ref_allowed(cluster, admin, src, dst, port, proto) -> bool:
    return (ref_side(cluster, admin, "Egress", src, dst, dst, port, proto)
            and ref_side(cluster, admin, "Ingress", dst, src, dst, port, proto))


# --- the properties ------------------------------------------------------------------------------


def with_admin(cluster: dict, admin: list[dict]) -> tuple[Engine, dict]:
    engine, pod_objs = engine_for(cluster, False)
    for obj in admin:
        result = parse_admin_policy(obj)
        assert result.ok, (obj, [str(e) for e in result.errors])
        engine.view.upsert_admin_policy(result.policy)
    return engine, pod_objs


def flows(cluster: dict, pod_objs: dict):
    endpoints = [(p, Endpoint.of_pod(pod_objs[p["name"]])) for p in cluster["pods"]]
    endpoints += [(ip, Endpoint.of_ip(ip)) for ip in EXTERNAL]
    for s_ref, s_ep in endpoints:
        for d_ref, d_ep in endpoints:
            if isinstance(s_ref, str) and isinstance(d_ref, str):
                continue
            for port, proto in FLOW_PORTS:
                yield s_ref, s_ep, d_ref, d_ep, port, proto


def _admin(name, priority, spec):
    kind = "AdminNetworkPolicy" if priority is not None else "BaselineAdminNetworkPolicy"
    return {"apiVersion": API, "kind": kind, "metadata": {"name": name},
            "spec": dict(spec, **({"priority": priority} if priority is not None else {}))}


# Hand-made cases for the classic mistakes, tried before the random ones.
PITFALL_CLUSTER = {
    "namespaces": {"alpha": {"env": "prod"}, "beta": {}},
    "pods": [_pod("pod0", "alpha", {"app": "web"}, "10.1.1.1", [("http", 80, "TCP")]),
             _pod("pod1", "beta", {"app": "db"}, "10.1.0.2", [("http", 8080, "UDP")])],
    "policies": [_policy("p0", "beta", {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]})],
}
PITFALLS = [
    # range bounds are inclusive; a Deny at a higher priority number loses to an Allow at a lower one
    [_admin("late-deny", 9, {"subject": {"namespaces": {}},
                             "ingress": [{"action": "Deny", "from": [{"namespaces": {}}]}]}),
     _admin("early-allow", 3, {"subject": {"namespaces": {}},
                               "ingress": [{"action": "Allow", "from": [{"namespaces": {}}],
                                            "ports": [{"portRange": {"start": 80, "end": 81}},
                                                      {"portRange": {"protocol": "UDP", "start": 50, "end": 53}}]}]})],
    # networks match pod IPs; a named port resolves with the pod's own protocol; Pass reaches
    # the NetworkPolicy (beta) or, for an unisolated pod (alpha), the baseline
    [_admin("nets", 1, {"subject": {"namespaces": {"matchLabels": {"env": "prod"}}},
                        "egress": [{"action": "Deny", "to": [{"networks": ["10.1.0.0/24"]}]}],
                        "ingress": [{"action": "Pass", "from": [{"namespaces": {}}], "ports": [{"namedPort": "http"}]}]}),
     _admin("default", None, {"subject": {"namespaces": {}},
                              "ingress": [{"action": "Deny", "from": [{"pods": {"namespaceSelector": {},
                                                                                 "podSelector": {}}}]}]})],
]

SETTINGS = settings(max_examples=150, derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@SETTINGS
@given(clusters(), admin_sets())
@example(PITFALL_CLUSTER, PITFALLS[0])
@example(PITFALL_CLUSTER, PITFALLS[1])
def test_engine_agrees_with_the_tiered_reference(cluster, admin):
    engine, pod_objs = with_admin(cluster, admin)
    for s_ref, s_ep, d_ref, d_ep, port, proto in flows(cluster, pod_objs):
        expected = ref_allowed(cluster, admin, s_ref, d_ref, port, proto)
        v = engine.evaluate(s_ep, d_ep, port, proto)
        assert v.allowed == expected, (f"{s_ep.describe()} -> {d_ep.describe()} {port}/{proto}: engine "
                                       f"{v.allowed}, reference {expected}\n{v.explain()}")
        for side in (v.egress, v.ingress):
            assert side.caveats == (), side.caveats  # every pod has an IP, priorities are distinct
            if side.admin is not None:  # an admin decision names a rule of that action
                assert side.allowed == (side.admin.action == "Allow")
    # the matrix decides each cell its own way (per endpoint class, ingress only after egress
    # allows): it must agree with the flow verdicts
    endpoints = [Endpoint.of_pod(pod_objs[p["name"]]) for p in cluster["pods"]] + [Endpoint.of_ip(ip) for ip in EXTERNAL]
    for port, proto in FLOW_PORTS[:3]:
        for cell in compute(engine, endpoints, endpoints, PortQuery(port, proto)).cells:
            src = next(e for e in endpoints if e.describe() == cell.source)
            dst = next(e for e in endpoints if e.describe() == cell.destination)
            assert cell.allowed == engine.evaluate(src, dst, port, proto).allowed, (cell.key, cell.verdict.explain())


@SETTINGS
@given(clusters(), admin_sets())
def test_pass_everywhere_and_no_baseline_is_the_networkpolicy_answer(cluster, admin):
    """Metamorphic: admin policies that only Pass, without a baseline, change no verdict."""
    passing = []
    for obj in admin:
        if obj["kind"] != "AdminNetworkPolicy":
            continue
        spec = {**obj["spec"]}
        for direction in ("ingress", "egress"):
            if direction in spec:
                spec[direction] = [{**r, "action": "Pass"} for r in spec[direction]]
        passing.append({**obj, "spec": spec})
    plain, pod_objs = engine_for(cluster, False)
    engine, _ = with_admin(cluster, passing)
    for _s, s_ep, _d, d_ep, port, proto in flows(cluster, pod_objs):
        assert engine.evaluate(s_ep, d_ep, port, proto).allowed == plain.evaluate(s_ep, d_ep, port, proto).allowed
