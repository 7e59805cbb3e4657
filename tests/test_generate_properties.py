"""For any valid map, the generated set passes the proof, and is the same every time."""
from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from webhook.config import Config
from webhook.generate.mapparse import parse_map
from webhook.generate.policies import generate
from webhook.generate.proof import prove
from webhook.generate.render import stream

PORT_POOL = [(80, "TCP"), (443, "TCP"), (5432, "TCP"), (8080, "TCP"), (9090, "TCP"), (5353, "UDP")]
CIDRS = ["192.0.2.0/24", "198.51.100.0/25", "0.0.0.0/0", "2001:db8::/32", "::/0", "203.0.113.8/29"]


@st.composite
def maps(draw):
    namespaces = ["alpha", "beta", "gamma"][: draw(st.integers(1, 3))]
    unmanaged = draw(st.sampled_from([None, *namespaces])) if len(namespaces) > 1 else None
    workloads = []
    for i in range(draw(st.integers(1, 6))):
        ports = draw(st.lists(st.sampled_from(PORT_POOL), min_size=1, max_size=3, unique=True))
        workloads.append({"name": f"w{i}", "namespace": draw(st.sampled_from(namespaces)),
                          "labels": {"app": f"w{i}"},
                          "ports": [{"name": f"p{n}", "port": n, "protocol": proto} for n, proto in ports]})
    managed = [n for n in namespaces if n != unmanaged]

    def key(w):
        return f"{w['namespace']}/{w['name']}"

    flows = []
    for _ in range(draw(st.integers(0, 8))):
        dst = draw(st.sampled_from(workloads))
        if draw(st.booleans()):
            src_ns = draw(st.sampled_from(namespaces))
            src = {"namespace": src_ns}
        else:
            w = draw(st.sampled_from(workloads))
            src, src_ns = key(w), w["namespace"]
        if src_ns not in managed and dst["namespace"] not in managed:
            continue
        port = draw(st.sampled_from(dst["ports"]))
        ref = draw(st.sampled_from([port["name"], port["port"] if port["protocol"] == "TCP" else
                                    f"{port['port']}/{port['protocol']}"]))
        flows.append({"from": src, "to": key(dst), "ports": [ref]})
    in_managed = [w for w in workloads if w["namespace"] in managed]
    egress, ingress = [], []
    for w in draw(st.lists(st.sampled_from(in_managed), max_size=2)) if in_managed else []:
        egress.append({"from": key(w), "to": draw(st.lists(st.sampled_from(CIDRS), min_size=1, max_size=2,
                                                           unique=True)),
                       "ports": draw(st.lists(st.sampled_from([443, 80, 8443]), min_size=1, max_size=2, unique=True))})
    for w in draw(st.lists(st.sampled_from(in_managed), max_size=2)) if in_managed else []:
        ingress.append({"from": draw(st.lists(st.sampled_from(CIDRS), min_size=1, max_size=2, unique=True)),
                        "to": key(w), "ports": [w["ports"][0]["name"]]})
    ns_entries = [{"name": n, "managed": n != unmanaged} for n in namespaces]
    return yaml.safe_dump({"namespaces": ns_entries, "workloads": workloads, "flows": flows,
                           "egress": egress, "ingress": ingress}, sort_keys=False)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(maps())
def test_generated_sets_always_pass_their_proof(text):
    cmap = parse_map(text, "random.yaml")
    policies = generate(cmap, Config().dns)
    report = prove(cmap, [p.obj for p in policies], Config())
    assert report.ok, report.failures[:10]
    assert stream(generate(parse_map(text, "random.yaml"), Config().dns), "random.yaml") == \
        stream(policies, "random.yaml")
