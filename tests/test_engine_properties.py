"""The connectivity engine against an independent brute-force reference.

Hypothesis generates small clusters (2-3 namespaces with random labels, a few pods with
random labels, IPs and named ports, a few policies with random selectors, peers, ports and
policyTypes) as plain API dicts. The reference below decides every flow straight from those
dicts, following the semantics section of design.md line by line; it shares no code with the
engine (not even selector matching). The engine sees the same dicts through the parser.

Deterministic: derandomized, no example database.
"""
from __future__ import annotations

import ipaddress

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from webhook.cluster.objects import NAME_LABEL, ContainerPort, Namespace, Pod
from webhook.cluster.view import build_view
from webhook.policy.engine import Endpoint, Engine
from webhook.policy.parse import parse_policy

NAMESPACES = ("alpha", "beta", "gamma")
NS_LABELS = {"env": ("prod", "dev"), "team": ("red", "blue")}
POD_LABELS = {"app": ("web", "api", "db"), "tier": ("front", "back")}
PORT_NAMES = ("http", "metrics")
PORT_NUMBERS = (53, 80, 8080)
PROTOCOLS = ("TCP", "UDP", "SCTP")
EXTERNAL = ("192.0.2.10", "198.51.100.20")
# pod IPs come from 10.1.0.0/16; ipBlocks are drawn from ranges that cover pods, externals, both
CIDRS = ("10.1.0.0/16", "10.1.1.0/24", "192.0.2.0/24", "0.0.0.0/0", "198.51.100.0/24")
EXCEPTS = {"10.1.0.0/16": ("10.1.1.0/24",), "0.0.0.0/0": ("10.0.0.0/8", "192.0.2.10/32"),
           "192.0.2.0/24": ("192.0.2.8/29",)}

# --- generators: plain API dicts -----------------------------------------------------------


def label_maps(choices: dict) -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries({}, optional={k: st.sampled_from(v) for k, v in choices.items()})


@st.composite
def selectors(draw, choices: dict) -> dict:
    # Mostly empty or one label: random wide selectors would rarely match anything, and a
    # property test that never matches proves nothing.
    shape = draw(st.sampled_from(("empty", "one", "one", "any")))
    if shape == "empty":
        return {}
    if shape == "one":
        key = draw(st.sampled_from(sorted(choices)))
        return {"matchLabels": {key: draw(st.sampled_from(choices[key]))}}
    sel: dict = {}
    ml = draw(label_maps(choices))
    if ml:
        sel["matchLabels"] = ml
    exprs = []
    for _ in range(draw(st.integers(0, 2))):
        key = draw(st.sampled_from(sorted(choices)))
        op = draw(st.sampled_from(("In", "NotIn", "Exists", "DoesNotExist")))
        e = {"key": key, "operator": op}
        if op in ("In", "NotIn"):
            e["values"] = draw(st.lists(st.sampled_from(choices[key]), min_size=1, max_size=2, unique=True))
        exprs.append(e)
    if exprs:
        sel["matchExpressions"] = exprs
    return sel


@st.composite
def peers(draw) -> dict:
    kind = draw(st.sampled_from(("pod", "pod", "ns", "both", "ip", "ip")))
    if kind == "ip":
        cidr = draw(st.sampled_from(CIDRS))
        block = {"cidr": cidr}
        if cidr in EXCEPTS and draw(st.booleans()):
            block["except"] = list(EXCEPTS[cidr])
        return {"ipBlock": block}
    out = {}
    if kind in ("pod", "both"):
        out["podSelector"] = draw(selectors(POD_LABELS))
    if kind in ("ns", "both"):
        ns_choices = dict(NS_LABELS, **{NAME_LABEL: NAMESPACES})
        out["namespaceSelector"] = draw(selectors(ns_choices))
    return out


@st.composite
def ports(draw) -> dict:
    spec: dict = {}
    proto = draw(st.sampled_from((None, "TCP", "UDP", "SCTP")))
    if proto:
        spec["protocol"] = proto
    what = draw(st.sampled_from(("none", "number", "range", "name")))
    if what == "number":
        spec["port"] = draw(st.sampled_from(PORT_NUMBERS))
    elif what == "range":
        spec["port"] = draw(st.sampled_from((50, 80, 8000)))
        spec["endPort"] = spec["port"] + draw(st.sampled_from((0, 3, 100)))
    elif what == "name":
        spec["port"] = draw(st.sampled_from(PORT_NAMES))
    return spec


def optional_list(elem: st.SearchStrategy) -> st.SearchStrategy:
    """Absent (None), written empty ([]), or 1-2 entries."""
    return st.one_of(st.none(), st.just([]), st.lists(elem, min_size=1, max_size=2),
                     st.lists(elem, min_size=1, max_size=2))


@st.composite
def rules(draw, peer_key: str) -> dict:
    rule = {}
    p = draw(optional_list(peers()))
    if p is not None:
        rule[peer_key] = p
    q = draw(optional_list(ports()))
    if q is not None:
        rule["ports"] = q
    return rule


@st.composite
def policies(draw, index: int) -> dict:
    spec: dict = {"podSelector": draw(selectors(POD_LABELS))}
    for field, peer_key in (("ingress", "from"), ("egress", "to")):
        rs = draw(optional_list(rules(peer_key)))
        if rs is not None:
            spec[field] = rs
    types = draw(st.sampled_from((None, ["Ingress"], ["Egress"], ["Ingress", "Egress"])))
    if types is not None:
        spec["policyTypes"] = types
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": f"p{index}", "namespace": draw(st.sampled_from(NAMESPACES))},
            "spec": spec}


@st.composite
def pods(draw, index: int) -> dict:
    ports_ = []
    for name in draw(st.lists(st.sampled_from(PORT_NAMES), max_size=2, unique=True)):
        ports_.append({"name": name, "port": draw(st.sampled_from(PORT_NUMBERS)),
                       "protocol": draw(st.sampled_from(PROTOCOLS))})
    labels = draw(label_maps(POD_LABELS))
    labels.setdefault("app", draw(st.sampled_from(POD_LABELS["app"])))
    return {"namespace": draw(st.sampled_from(NAMESPACES)), "name": f"pod{index}",
            "labels": labels, "ports": ports_,
            "ip": f"10.1.{draw(st.sampled_from((0, 1, 2)))}.{index + 1}"}


@st.composite
def clusters(draw) -> dict:
    n_ns = draw(st.integers(2, 3))
    namespaces = {name: draw(label_maps(NS_LABELS)) for name in NAMESPACES[:n_ns]}
    pod_list = [draw(pods(i)) for i in range(draw(st.integers(2, 6)))]
    for p in pod_list:  # pods live in generated namespaces only
        if p["namespace"] not in namespaces:
            p["namespace"] = NAMESPACES[0]
    pols = [draw(policies(i)) for i in range(draw(st.integers(1, 5)))]
    for p in pols:
        # policies matter where pods are: usually put one in the namespace of some pod
        if p["metadata"]["namespace"] not in namespaces or draw(st.booleans()):
            p["metadata"]["namespace"] = draw(st.sampled_from(pod_list))["namespace"]
    return {"namespaces": namespaces, "pods": pod_list, "policies": pols}


# --- the reference, from design.md ----------------------------------------------------------


def ref_selector_matches(sel: dict, labels: dict) -> bool:
    for k, v in (sel.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in sel.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], e.get("values") or []
        has = key in labels
        if op == "In" and not (has and labels[key] in values):
            return False
        if op == "NotIn" and has and labels[key] in values:  # a missing key satisfies NotIn
            return False
        if op == "Exists" and not has:
            return False
        if op == "DoesNotExist" and has:
            return False
    return True


def ref_policy_types(spec: dict) -> set:
    # "policyTypes omitted: Ingress always, plus Egress when egress is present"
    if spec.get("policyTypes"):
        return set(spec["policyTypes"])
    return {"Ingress", "Egress"} if spec.get("egress") else {"Ingress"}


def ref_ns_labels(cluster: dict, ns: str) -> dict:
    return dict(cluster["namespaces"][ns], **{NAME_LABEL: ns})


def ref_in_block(block: dict, ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    net = ipaddress.ip_network(block["cidr"])
    if addr.version != net.version or addr not in net:
        return False
    return not any(addr in ipaddress.ip_network(e) for e in block.get("except") or [])


def ref_peer_matches(cluster: dict, policy_ns: str, peer: dict, other, switch: bool) -> bool:
    if "ipBlock" in peer:
        if isinstance(other, str):
            return ref_in_block(peer["ipBlock"], other)
        # ipBlock is for addresses outside the cluster; pod IPs only with the switch on
        return switch and ref_in_block(peer["ipBlock"], other["ip"])
    if isinstance(other, str):
        return False  # selectors select cluster pods only
    if "namespaceSelector" in peer:
        if not ref_selector_matches(peer["namespaceSelector"], ref_ns_labels(cluster, other["namespace"])):
            return False
    elif other["namespace"] != policy_ns:  # podSelector only: the policy's own namespace
        return False
    return "podSelector" not in peer or ref_selector_matches(peer["podSelector"], other["labels"])


def ref_port_matches(spec: dict, port: int, proto: str, dst) -> bool:
    if spec.get("protocol", "TCP") != proto:
        return False
    p = spec.get("port")
    if p is None:
        return True
    if isinstance(p, str):  # named: a container port of that name and protocol on the destination
        return not isinstance(dst, str) and any(
            cp["name"] == p and cp["protocol"] == proto and cp["port"] == port for cp in dst["ports"])
    end = spec.get("endPort")
    return p <= port <= end if end is not None else p == port


def ref_side_allows(cluster, direction, subject, other, dst, port, proto, switch) -> bool:
    if isinstance(subject, str):
        return True  # addresses outside the cluster have no policies
    selecting = [p for p in cluster["policies"]
                 if p["metadata"]["namespace"] == subject["namespace"]
                 and direction in ref_policy_types(p["spec"])
                 and ref_selector_matches(p["spec"]["podSelector"], subject["labels"])]
    if not selecting:
        return True  # not isolated for this direction
    peer_key = "from" if direction == "Ingress" else "to"
    for pol in selecting:
        for rule in pol["spec"].get(direction.lower()) or []:
            peers_ = rule.get(peer_key) or []  # absent or empty: every peer
            ports_ = rule.get("ports") or []   # absent or empty: every port
            if peers_ and not any(ref_peer_matches(cluster, pol["metadata"]["namespace"], pe, other, switch)
                                  for pe in peers_):
                continue
            if ports_ and not any(ref_port_matches(ps, port, proto, dst) for ps in ports_):
                continue
            return True
    return False


def ref_allowed(cluster, src, dst, port, proto, switch) -> bool:
    return (ref_side_allows(cluster, "Egress", src, dst, dst, port, proto, switch)
            and ref_side_allows(cluster, "Ingress", dst, src, dst, port, proto, switch))


# Ports each flow is tried on: every generated number, and each protocol on some of them.
FLOW_PORTS = ((53, "UDP"), (53, "TCP"), (80, "TCP"), (80, "SCTP"), (8080, "TCP"), (8080, "UDP"))

# --- the property ---------------------------------------------------------------------------


def engine_for(cluster: dict, switch: bool) -> tuple[Engine, dict]:
    parsed = []
    for obj in cluster["policies"]:
        result = parse_policy(obj)
        assert result.ok, (obj, result.errors)
        parsed.append(result.policy)
    pod_objs = {p["name"]: Pod(p["namespace"], p["name"], p["labels"],
                               tuple(ContainerPort(c["port"], c["protocol"], c["name"]) for c in p["ports"]),
                               (p["ip"],))
                for p in cluster["pods"]}
    view = build_view([Namespace(n, ref_ns_labels(cluster, n)) for n in cluster["namespaces"]],
                      pod_objs.values(), (), parsed)
    return Engine(view, ip_block_matches_pods=switch), pod_objs


def _pod(name, ns, labels, ip, ports=()):
    return {"namespace": ns, "name": name, "labels": labels, "ip": ip,
            "ports": [{"name": n, "port": p, "protocol": pr} for n, p, pr in ports]}


def _policy(name, ns, spec):
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


# Hand-made clusters for the classic mistakes, tried before the random ones: each one makes
# a wrong engine disagree with the reference on some flow.
PITFALLS = [
    # a podSelector-only peer is scoped to the policy's namespace
    {"namespaces": {"alpha": {}, "beta": {}},
     "pods": [_pod("pod0", "alpha", {"app": "web"}, "10.1.0.1"), _pod("pod1", "beta", {"app": "web"}, "10.1.0.2")],
     "policies": [_policy("p0", "alpha", {"podSelector": {}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]})]},
    # a named port matches only with its own protocol (TCP when unspecified)
    {"namespaces": {"alpha": {}, "beta": {}},
     "pods": [_pod("pod0", "alpha", {"app": "web"}, "10.1.0.1", [("http", 53, "TCP")]),
              _pod("pod1", "alpha", {"app": "api"}, "10.1.0.2", [("http", 8080, "UDP")])],
     "policies": [_policy("p0", "alpha", {"podSelector": {}, "ingress": [{"ports": [{"port": "http"}]}]})]},
    # ipBlock and pod IPs; except; `ports: []` and `from: []`
    {"namespaces": {"alpha": {"env": "prod"}, "beta": {}},
     "pods": [_pod("pod0", "alpha", {"app": "web"}, "10.1.1.1"), _pod("pod1", "beta", {"app": "db"}, "10.1.0.2")],
     "policies": [_policy("p0", "beta", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
                                         "ingress": [{"from": [{"ipBlock": {"cidr": "10.1.0.0/16", "except": ["10.1.1.0/24"]}},
                                                               {"ipBlock": {"cidr": "192.0.2.0/24"}}], "ports": []}],
                                         "egress": [{"to": [], "ports": [{"port": 80, "endPort": 83}]}]})]},
]


@settings(max_examples=400, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(clusters(), st.booleans())
@example(PITFALLS[0], False)
@example(PITFALLS[1], False)
@example(PITFALLS[2], False)
@example(PITFALLS[2], True)
def test_engine_agrees_with_reference(cluster, switch):
    engine, pod_objs = engine_for(cluster, switch)
    endpoints = [(p, Endpoint.of_pod(pod_objs[p["name"]])) for p in cluster["pods"]]
    endpoints += [(ip, Endpoint.of_ip(ip)) for ip in EXTERNAL]
    for s_ref, s_ep in endpoints:
        for d_ref, d_ep in endpoints:
            if isinstance(s_ref, str) and isinstance(d_ref, str):
                continue  # neither end in the cluster: nothing to decide
            for port, proto in FLOW_PORTS:
                expected = ref_allowed(cluster, s_ref, d_ref, port, proto, switch)
                verdict = engine.evaluate(s_ep, d_ep, port, proto)
                assert verdict.allowed == expected, (
                    f"{s_ep.describe()} -> {d_ep.describe()} {port}/{proto} switch={switch}: "
                    f"engine {verdict.allowed}, reference {expected}\n{verdict.explain()}")
                # a side that allows while isolated must name the rule that does it
                for side in (verdict.egress, verdict.ingress):
                    assert side.allowed == (not side.isolated or bool(side.allowed_by))


def test_reference_selector_semantics_spot_checks():
    # the reference itself, on the cases people get wrong
    assert ref_selector_matches({}, {})
    assert ref_selector_matches({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["x"]}]}, {})
    assert not ref_selector_matches({"matchExpressions": [{"key": "a", "operator": "In", "values": ["x"]}]}, {})
    assert ref_policy_types({"egress": []}) == {"Ingress"}
    assert ref_policy_types({"egress": [{}]}) == {"Ingress", "Egress"}
    assert ref_policy_types({"policyTypes": ["Ingress"], "egress": [{}]}) == {"Ingress"}


@settings(max_examples=40, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(clusters(), st.booleans(), st.sampled_from((None, (80, "TCP"), (53, "UDP"), ("http", "TCP"),
                                                  ("metrics", "UDP"), ("http", "SCTP"))))
def test_matrix_agrees_with_engine(cluster, switch, port):
    """The matrix's set-based shortcut gives engine.evaluate()'s answer for every cell."""
    from webhook.policy.matrix import PortQuery, compute

    engine, pod_objs = engine_for(cluster, switch)
    eps = [Endpoint.of_pod(pod_objs[p["name"]]) for p in cluster["pods"]]
    sources = eps + [Endpoint.of_ip(EXTERNAL[0])]
    matrix = compute(engine, sources, eps, PortQuery(*port) if port else None)
    by_name = {e.describe(): e for e in sources}
    expected_cells = sum(len({(c.port, c.protocol) for c in e.pod.ports}) if port is None else
                         (1 if isinstance(port[0], int) or e.pod.named_port(port[0], port[1]) else 0)
                         for e in eps) * len(sources)
    assert len(matrix.cells) == expected_cells
    for cell in matrix.cells:
        verdict = engine.evaluate(by_name[cell.source], by_name[cell.destination], cell.port, cell.protocol)
        assert cell.allowed == verdict.allowed, (cell.key, verdict.explain())
        assert cell.verdict.allowed == verdict.allowed
