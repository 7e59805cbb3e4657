"""The communication map: what it accepts, and the errors (with file and line) for what it does not."""
from __future__ import annotations

import glob
import json
import os
import textwrap

import jsonschema
import pytest
import yaml

from webhook.generate import mapparse
from webhook.generate.mapparse import MapError, parse_map

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA = os.path.join(ROOT, "docs", "commmap.schema.json")
EXAMPLES = sorted(glob.glob(os.path.join(ROOT, "examples", "maps", "*.yaml")))

BASE = """\
namespaces: [shop, data]
workloads:
  - name: frontend
    namespace: shop
    labels: {app: frontend}
    ports: [{name: http, port: 8080}]
  - name: api
    namespace: shop
    labels: {app: api}
    ports: [{name: http, port: 8080}, {name: dns-ish, port: 5353, protocol: UDP}]
  - name: db
    namespace: data
    labels: {app: db}
    ports: [{name: postgres, port: 5432}]
"""


def errors_of(text: str) -> list[str]:
    with pytest.raises(MapError) as exc:
        parse_map(textwrap.dedent(text), "map.yaml")
    return exc.value.lines()


def one_error(text: str) -> str:
    lines = errors_of(text)
    assert len(lines) == 1, lines
    return lines[0]


def test_valid_map_resolves_names_numbers_and_namespace_wide_sources():
    cmap = parse_map(BASE + """\
flows:
  - {from: frontend, to: shop/api, ports: [http]}
  - {from: api, to: db, ports: [5432, "5432/TCP"]}
  - {from: {namespace: data}, to: api, ports: [{port: 5353, protocol: udp}]}
""", "map.yaml")
    f1, f2, f3 = cmap.flows
    assert (f1.source.key, f1.destination.key) == ("shop/frontend", "shop/api")
    assert [(p.port, p.number, p.protocol) for p in f1.ports] == [("http", 8080, "TCP")]
    assert [(p.port, p.protocol) for p in f2.ports] == [(5432, "TCP")]  # duplicates merged
    assert f3.source.workload is None and f3.source.key == "data/*"
    assert [(p.number, p.protocol) for p in f3.ports] == [(5353, "UDP")]


def test_star_destination_reaches_each_workload_on_the_ports_it_declares():
    # issue 15: "*" and {namespace: NS} stand for many workloads; one without the port
    # (a port-less CronJob, say) is not a destination, not an error
    cmap = parse_map(BASE + "flows:\n  - {from: {namespace: data}, to: '*', ports: [8080, postgres]}\n", "map.yaml")
    got = {f.destination.key: [p.describe() for p in f.ports] for f in cmap.flows}
    assert got == {"shop/frontend": ["8080/TCP"], "shop/api": ["8080/TCP"], "data/db": ["postgres (5432/TCP)"]}
    cmap = parse_map(BASE + "flows:\n  - {from: {namespace: data}, to: {namespace: shop}, ports: [5353/UDP]}\n",
                     "map.yaml")
    assert [f.destination.key for f in cmap.flows] == ["shop/api"]


def test_star_destination_where_nobody_declares_the_port_is_one_error():
    err = one_error(BASE + "flows:\n  - {from: {namespace: data}, to: '*', ports: [9999]}\n")
    assert err.startswith("map.yaml:16: flows[0].ports: no destination declares any of these ports")
    assert "shop/api" in err


def test_a_named_destination_still_needs_every_port():
    err = one_error(BASE + "flows:\n  - {from: frontend, to: data/db, ports: [5432, 8080]}\n")
    assert "data/db does not declare port 8080/TCP" in err


@pytest.mark.parametrize("flow,line,expected", [
    ("{from: frontnd, to: api, ports: [8080]}", 16, "flows[0].from: no workload 'frontnd' (did you mean frontend?)"),
    ("{from: frontend, to: shop/apii, ports: [8080]}", 16, "flows[0].to: no workload 'shop/apii' (did you mean shop/api?)"),
    ("{from: frontend, to: api, ports: [9090]}", 16,
     "flows[0].ports[0]: shop/api does not declare port 9090/TCP; it declares 8080/TCP (http), 5353/UDP (dns-ish)"),
    ("{from: frontend, to: api, ports: [htp]}", 16,
     "flows[0].ports[0]: shop/api declares no port named 'htp' (did you mean http?)"),
    ("{from: frontend, to: api, ports: [{port: http, protocol: UDP}]}", 16,
     "flows[0].ports[0]: port 'http' of shop/api is TCP, not UDP"),
    ("{from: frontend, to: api, ports: [70000]}", 16, "flows[0].ports[0]: port 70000 is out of range 1-65535"),
    ("{from: frontend, to: api, ports: [8080], protocl: TCP}", 16,
     "flows[0].protocl: unknown key 'protocl'"),
    ("{from: frontend, to: api}", 16, "flows[0]: missing required key 'ports'"),
    ("{from: {namespace: shopp}, to: api, ports: [8080]}", 16,
     "flows[0].from.namespace: namespace 'shopp' is not listed under namespaces (did you mean shop?)"),
])
def test_flow_errors_name_file_line_and_field(flow, line, expected):
    err = one_error(BASE + f"flows:\n  - {flow}\n")
    assert err.startswith(f"map.yaml:{line}: {expected}"), err


def test_ambiguous_short_name_asks_for_namespace():
    err = one_error(BASE + """\
  - name: api
    namespace: data
    labels: {app: api}
    ports: [8080]
flows:
  - {from: frontend, to: api, ports: [8080]}
""")
    assert "flows[0].to: 'api' is ambiguous: data/api, shop/api; write NAMESPACE/NAME" in err


def test_duplicates_are_errors():
    lines = errors_of(BASE + """\
  - name: api
    namespace: shop
    labels: {app: api2}
    ports: [{name: a, port: 1}, {name: a, port: 2}, {port: 1}]
endpoints:
  - {name: x, cidrs: [192.0.2.0/24]}
  - {name: x, cidrs: [192.0.2.0/24]}
""")
    text = "\n".join(lines)
    assert "map.yaml:15: workloads[3].name: duplicate workload shop/api" in text
    assert "map.yaml:21: endpoints[1].name: duplicate endpoint 'x'" in text


def test_duplicate_yaml_keys_and_namespaces():
    text = "\n".join(errors_of("namespaces: [a, a]\nworkloads: []\nworkloads: []\n"))
    assert "map.yaml:3: workloads: duplicate key 'workloads'" in text
    text = "\n".join(errors_of("namespaces: [a, a]\n"))
    assert "map.yaml:1: namespaces[1].name: duplicate namespace 'a'" in text


def test_duplicate_port_names_and_numbers_in_a_workload():
    text = "\n".join(errors_of("""\
namespaces: [a]
workloads:
  - name: w
    namespace: a
    labels: {app: w}
    ports: [{name: http, port: 80}, {name: http, port: 81}, {name: web, port: 80}]
"""))
    assert "map.yaml:6: workloads[0].ports[1].name: duplicate port name 'http'" in text
    assert "map.yaml:6: workloads[0].ports[2]: duplicate port 80/TCP" in text


@pytest.mark.parametrize("cidr,expected", [
    ("10.0.0.1/8", "'10.0.0.1/8' has host bits set; did you mean 10.0.0.0/8?"),
    ("10.0.0.300/32", "'10.0.0.300/32' is not a valid CIDR"),
    ("10.1.2.3", "'10.1.2.3' is not a CIDR: add the prefix length, e.g. 10.1.2.3/32"),
    ("169.254.169.254/32", "169.254.169.254/32 is the cloud metadata address"),
])
def test_bad_cidrs(cidr, expected):
    err = one_error(BASE + f"egress:\n  - from: api\n    to: ['{cidr}']\n    ports: [443]\n")
    assert err.startswith(f"map.yaml:17: egress[0].to[0]: {expected}"), err


def test_unknown_endpoint_and_named_port_outside():
    lines = errors_of(BASE + """\
endpoints:
  - {name: stripe, cidrs: [203.0.113.0/24]}
egress:
  - {from: api, to: [strip], ports: [https]}
""")
    text = "\n".join(lines)
    assert "egress[0].to[0]: no endpoint 'strip' (did you mean stripe?)" in text
    assert "egress[0].ports[0]: ports outside the cluster must be numbers, got the name 'https'" in text


def test_unknown_keys_everywhere_with_suggestions():
    lines = errors_of("""\
namespace: [a]
namespaces:
  - {name: a, manged: false}
workloads:
  - {name: w, namespace: a, label: {app: w}}
""")
    text = "\n".join(lines)
    assert "map.yaml:1: namespace: unknown key 'namespace' (did you mean namespaces?)" in text
    assert "map.yaml:3: namespaces[0].manged: unknown key 'manged' (did you mean managed?)" in text
    assert "map.yaml:5: workloads[0].label: unknown key 'label' (did you mean labels?)" in text
    assert "map.yaml:5: workloads[0]: missing required key 'labels'" in text


def test_workload_labels_that_select_another_workload_are_rejected():
    err = one_error("""\
namespaces: [a]
workloads:
  - {name: web, namespace: a, labels: {app: web}}
  - {name: web-canary, namespace: a, labels: {app: web, track: canary}}
""")
    assert err.startswith("map.yaml:3: workloads[0].labels: the labels of a/web also select the pods of a/web-canary")


def test_workload_in_undeclared_namespace_and_bad_names():
    text = "\n".join(errors_of("""\
namespaces: [shop, Bad_NS]
workloads:
  - {name: w, namespace: shopp, labels: {app: w}}
  - {name: W, namespace: shop, labels: {app: x}}
  - {name: v, namespace: shop, labels: {app: "not ok!"}}
"""))
    assert "map.yaml:1: namespaces[1].name: 'Bad_NS' is not a valid namespace name" in text
    assert "map.yaml:3: workloads[0].namespace: namespace 'shopp' is not listed under namespaces (did you mean shop?)" in text
    assert "map.yaml:4: workloads[1].name: 'W' is not a valid workload name" in text
    assert "map.yaml:5: workloads[2].labels.app: invalid label value 'not ok!'" in text


def test_yaml_syntax_errors_and_empty_and_multi_document():
    assert one_error("namespaces: [a\n").startswith("map.yaml:2: not valid YAML")
    assert one_error("") == "map.yaml: the map is empty"
    assert one_error("namespaces: [a]\n---\nnamespaces: [b]\n").startswith("map.yaml:3: the map must be one YAML")
    assert one_error("- a\n").startswith("map.yaml: must be a mapping with namespaces")


def test_dns_override():
    cmap = parse_map("namespaces: [a]\ndns: {namespace: dns, podLabels: {app: coredns}, "
                     "nodeLocalAddresses: [169.254.20.10]}\n", "m")
    assert cmap.dns.namespace == "dns" and dict(cmap.dns.podLabels) == {"app": "coredns"}
    assert cmap.dns.nodeLocalAddresses == ("169.254.20.10",)
    err = one_error("namespaces: [a]\ndns: {podLabel: {a: b}}\n")
    assert "dns.podLabel: unknown key 'podLabel' (did you mean podLabels?)" in err


# --- the JSON schema mirrors the parser ---------------------------------------------------------

def _schema() -> dict:
    with open(SCHEMA) as fh:
        return json.load(fh)


def test_schema_is_valid_and_accepts_every_example():
    schema = _schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    assert len(EXAMPLES) == 3
    for path in EXAMPLES:
        with open(path) as fh:
            assert list(validator.iter_errors(yaml.safe_load(fh))) == [], path


def test_schema_keys_match_the_parser():
    s = _schema()
    props = s["properties"]
    assert tuple(props) == mapparse.TOP_KEYS
    ns_obj = props["namespaces"]["items"]["oneOf"][1]
    assert set(ns_obj["properties"]) == set(mapparse.NAMESPACE_KEYS)
    assert set(props["workloads"]["items"]["properties"]) == set(mapparse.WORKLOAD_KEYS)
    assert set(props["workloads"]["items"]["properties"]["ports"]["items"]["oneOf"][1]["properties"]) == \
        set(mapparse.PORT_DECL_KEYS)
    assert set(props["endpoints"]["items"]["properties"]) == set(mapparse.ENDPOINT_KEYS)
    assert set(props["flows"]["items"]["properties"]) == set(mapparse.FLOW_KEYS)
    assert set(props["ingress"]["items"]["properties"]) == set(mapparse.INGRESS_KEYS)
    assert set(props["egress"]["items"]["properties"]) == set(mapparse.EGRESS_KEYS)
    assert set(props["dns"]["properties"]) == set(mapparse.DNS_KEYS)
    assert set(s["$defs"]["namespaceRef"]["properties"]) == set(mapparse.PARTY_KEYS)


@pytest.mark.parametrize("bad", [
    {"namespaces": ["a"], "flws": []},
    {"namespaces": [{"name": "a", "manged": False}]},
    {"namespaces": ["a"], "workloads": [{"name": "w", "namespace": "a", "labels": {}}]},
    {"namespaces": ["a"], "flows": [{"from": "x", "to": "y"}]},
])
def test_schema_and_parser_both_reject(bad):
    assert list(jsonschema.Draft202012Validator(_schema()).iter_errors(bad))
    with pytest.raises(MapError):
        parse_map(yaml.safe_dump(bad), "m")


def test_entries_no_generated_policy_would_carry_are_errors():
    text = "\n".join(errors_of("""\
namespaces:
  - {name: edge, managed: false}
  - shop
workloads:
  - {name: lb, namespace: edge, labels: {app: lb}, ports: [443]}
  - {name: lb2, namespace: edge, labels: {app: lb2}, ports: [443]}
  - {name: web, namespace: shop, labels: {app: web}, ports: [443]}
flows:
  - {from: lb, to: lb2, ports: [443]}
ingress:
  - {from: [192.0.2.0/24], to: lb, ports: [443]}
egress:
  - {from: lb, to: [192.0.2.0/24], ports: [443]}
"""))
    assert "map.yaml:9: flows[0]: neither side is in a managed namespace (edge, edge)" in text
    assert "map.yaml:11: ingress[0].to: namespace edge is not managed" in text
    assert "map.yaml:13: egress[0].from: namespace edge is not managed" in text


def test_star_from_an_unmanaged_namespace_covers_only_managed_destinations():
    cmap = parse_map("""\
namespaces: [{name: edge, managed: false}, shop]
workloads:
  - {name: lb, namespace: edge, labels: {app: lb}, ports: [443]}
  - {name: web, namespace: shop, labels: {app: web}, ports: [443]}
flows:
  - {from: {namespace: edge}, to: "*", ports: [443]}
""", "m")
    assert [f.destination.key for f in cmap.flows] == ["shop/web"]


# --- issue 15: ranges and excepts --------------------------------------------------------------

RANGES = BASE + """\
endpoints:
  - name: corp
    cidrs: [{cidr: 10.0.0.0/8, except: [10.96.0.0/12, 10.244.0.0/16]}]
egress:
  - from: api
    to: [corp, {cidr: 0.0.0.0/0, except: [10.0.0.0/8]}]
    ports: [{port: 30000, endPort: 32767}, "5000-5010/UDP", 443]
"""


def test_egress_takes_port_ranges_and_cidrs_with_except_and_the_set_is_proven():
    from webhook.config import DEFAULT
    from webhook.generate.policies import generate
    from webhook.generate.proof import prove
    cmap = parse_map(RANGES, "map.yaml")
    (e,) = cmap.egress
    assert [p.describe() for p in e.ports] == ["443/TCP", "30000-32767/TCP", "5000-5010/UDP"]
    blocks = {t.cidr: t.excepts() for t in e.targets}
    assert blocks == {"10.0.0.0/8": ("10.96.0.0/12", "10.244.0.0/16"),
                      "0.0.0.0/0": ("10.0.0.0/8", "169.254.169.254/32")}
    assert list(jsonschema.Draft202012Validator(_schema()).iter_errors(yaml.safe_load(RANGES))) == []
    policies = generate(cmap, DEFAULT.dns)
    egress = next(p.obj for p in policies if p.obj["metadata"]["name"].startswith("allow-external-egress"))
    rule = egress["spec"]["egress"][0]
    assert {"port": 30000, "endPort": 32767, "protocol": "TCP"} in rule["ports"]
    assert {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.96.0.0/12", "10.244.0.0/16"]}} in rule["to"]
    report = prove(cmap, [p.obj for p in policies], DEFAULT)
    assert report.ok, report.failures


@pytest.mark.parametrize("egress,expected", [
    ("{from: api, to: [{cidr: 10.0.0.0/8, except: [192.168.0.0/16]}], ports: [443]}",
     "egress[0].to[0].except[0]: 192.168.0.0/16 is not a block strictly inside 10.0.0.0/8"),
    ("{from: api, to: [10.0.0.0/8], ports: [{port: 200, endPort: 100}]}",
     "egress[0].ports[0].endPort: endPort 100 is below port 200"),
    ("{from: api, to: [{cidr: 10.0.0.0/8, excpt: []}], ports: [443]}", "unknown key 'excpt'"),
])
def test_bad_ranges_and_excepts_are_named(egress, expected):
    assert expected in "\n".join(errors_of(BASE + f"egress:\n  - {egress}\n"))


def test_except_is_refused_for_ingress_sources():
    err = one_error(BASE + "ingress:\n  - {from: [{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}], to: api, ports: [8080]}\n")
    assert "ingress[0].from[0]: must be a CIDR; `except` is for egress blocks" in err
