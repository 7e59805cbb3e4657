"""Parsing AdminNetworkPolicy / BaselineAdminNetworkPolicy: the typed model, and the API
server's refusals (the CRDs' schema and CEL rules) as field errors with paths."""
from __future__ import annotations

import copy

import pytest

from webhook.policy.model import ADMIN_KIND, BASELINE_KIND, EGRESS, INGRESS, PEER_NETWORKS, PEER_PODS
from webhook.policy.parse_admin import parse_admin_policy


def anp() -> dict:
    return {
        "apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": "AdminNetworkPolicy",
        "metadata": {"name": "guard"},
        "spec": {
            "priority": 10,
            "subject": {"pods": {"namespaceSelector": {"matchLabels": {"env": "prod"}},
                                 "podSelector": {"matchLabels": {"app": "db"}}}},
            "ingress": [{"name": "from-api", "action": "Allow",
                         "from": [{"namespaces": {"matchLabels": {"team": "api"}}}],
                         "ports": [{"portNumber": {"port": 5432}},
                                   {"portRange": {"protocol": "UDP", "start": 5000, "end": 5100}},
                                   {"namedPort": "metrics"}]}],
            "egress": [{"action": "Deny", "to": [{"networks": ["169.254.169.254/32"]},
                                                 {"pods": {"namespaceSelector": {}, "podSelector": {}}}]}],
        },
    }


def banp() -> dict:
    return {"apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": "BaselineAdminNetworkPolicy",
            "metadata": {"name": "default"},
            "spec": {"subject": {"namespaces": {}},
                     "ingress": [{"action": "Deny", "from": [{"namespaces": {}}]}]}}


def cnp() -> dict:
    return {"apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
            "metadata": {"name": "guard"},
            "spec": {"tier": "Baseline", "priority": 3,
                     "subject": {"pods": {"podSelector": {"matchLabels": {"app": "db"}}}},
                     "ingress": [{"action": "Accept", "from": [{"namespaces": {}}],
                                  "protocols": [{"tcp": {"destinationPort": {"number": 5432}}},
                                                {"udp": {"destinationPort": {"range": {"start": 5000, "end": 5100}}}},
                                                {"destinationNamedPort": "metrics"}]}],
                     "egress": [{"action": "Pass", "to": [{"networks": ["10.0.0.0/8"]}]}]}}


def test_a_cluster_network_policy_parses_with_its_tier_and_protocols():
    result = parse_admin_policy(cnp())
    assert result.ok, result.errors
    p = result.policy
    assert (p.kind, p.tier, p.priority) == ("ClusterNetworkPolicy", "baseline", 3)
    assert p.namespace_selector.is_empty  # v1alpha2: namespaceSelector may be left out (every namespace)
    tcp, udp, named = p.ingress[0].ports
    assert (tcp.protocol, tcp.port, tcp.end_port) == ("TCP", 5432, None)
    assert (udp.protocol, udp.port, udp.end_port) == ("UDP", 5000, 5100)
    assert named.name == "metrics" and p.ingress[0].allows and p.egress[0].action == "Pass"


def test_an_admin_network_policy_parses_into_the_model_with_defaults():
    result = parse_admin_policy(anp())
    assert result.ok, result.errors
    p = result.policy
    assert (p.kind, p.name, p.priority, p.tier, p.key) == (ADMIN_KIND, "guard", 10, "admin",
                                                           "AdminNetworkPolicy/guard")
    assert p.pod_selector.matches({"app": "db"}) and p.namespace_selector.matches({"env": "prod"})
    (rule,) = p.ingress
    assert (rule.direction, rule.action, rule.name, rule.path) == (INGRESS, "Allow", "from-api", "spec.ingress[0]")
    number, port_range, named = rule.ports
    assert (number.protocol, number.port, number.end_port) == ("TCP", 5432, None)  # TCP by default
    assert (port_range.protocol, port_range.port, port_range.end_port) == ("UDP", 5000, 5100)
    assert named.name == "metrics"
    (egress,) = p.egress
    assert egress.direction == EGRESS and egress.ports is None  # no ports: every port
    assert [peer.kind for peer in egress.peers] == [PEER_NETWORKS, PEER_PODS]


def test_the_baseline_parses_without_a_priority():
    result = parse_admin_policy(banp())
    assert result.ok, result.errors
    assert (result.policy.kind, result.policy.priority, result.policy.tier) == (BASELINE_KIND, None, "baseline")


def _set(obj: dict, path: str, value) -> dict:
    """Set (or, with value ..., delete) a field by a dotted path with [i] indexes."""
    obj = copy.deepcopy(obj)
    parts = path.replace("[", ".").replace("]", "").split(".")
    target = obj
    for part in parts[:-1]:
        target = target[int(part)] if part.isdigit() else target[part]
    last = parts[-1]
    if value is ...:
        del target[last]
    elif last.isdigit():
        target[int(last)] = value
    else:
        target[last] = value
    return obj


# (base, field to change, new value (... deletes), error path, error kind, words in the detail)
CASES = [
    (anp, "spec.priority", ..., "spec.priority", "Required value", "0 to 1000"),
    (anp, "spec.priority", 1001, "spec.priority", "Invalid value", "between 0 and 1000"),
    (anp, "spec.priority", "10", "spec.priority", "Invalid value", "got str"),
    (anp, "spec.subject", ..., "spec.subject", "Required value", "namespaces: {}"),
    (anp, "spec.subject.namespaces", {}, "spec.subject", "Forbidden", "exactly one of"),
    (anp, "spec.subject.pods.podSelector", ..., "spec.subject.pods.podSelector", "Required value", "required"),
    (anp, "spec.priorty", 3, "spec.priorty", "Unknown field", "did you mean 'priority'"),
    (anp, "apiVersion", "policy.networking.k8s.io/v1", "apiVersion", "Unsupported value", "v1alpha1"),
    (anp, "spec.ingress[0].action", "allow", "spec.ingress[0].action", "Unsupported value", "case-sensitive"),
    (anp, "spec.ingress[0].action", ..., "spec.ingress[0].action", "Required value", "Pass"),
    (anp, "spec.ingress[0].from", [], "spec.ingress[0].from", "Required value", "at least one peer"),
    (anp, "spec.ingress[0].from[0].networks", ["10.0.0.0/8"], "spec.ingress[0].from[0].networks",
     "Unknown field", "ingress peer"),
    (anp, "spec.egress[0].to[1].namespaces", {}, "spec.egress[0].to[1]", "Forbidden", "exactly one of"),
    (anp, "spec.egress[0].to[0].networks", ["10.0.0.300/8"], "spec.egress[0].to[0].networks[0]",
     "Invalid value", "CIDR"),
    (anp, "spec.egress[0].to[0].networks", [], "spec.egress[0].to[0].networks", "Required value", "empty list"),
    (anp, "spec.ingress[0].ports[0].namedPort", "http", "spec.ingress[0].ports[0]", "Forbidden", "exactly one of"),
    (anp, "spec.ingress[0].ports[1].portRange.end", 5000, "spec.ingress[0].ports[1].portRange.end",
     "Invalid value", "greater than Start"),
    (anp, "spec.ingress[0].ports[0].portNumber.protocol", "tcp", "spec.ingress[0].ports[0].portNumber.protocol",
     "Unsupported value", "upper case"),
    (anp, "spec.ingress[0].ports[0].portNumber.port", 0, "spec.ingress[0].ports[0].portNumber.port",
     "Invalid value", "between 1 and 65535"),
    (anp, "spec.ingress[0].ports", [], "spec.ingress[0].ports", "Required value", "leave `ports` out"),
    (anp, "spec.ingress[0].ports[2].namedPort", "Metrics_", "spec.ingress[0].ports[2].namedPort",
     "Invalid value", "port name"),
    (anp, "spec.egress[0].ports", [{"namedPort": "http"}], "spec.egress[0]", "Invalid value",
     "cannot be set with namedPorts"),
    (anp, "spec.subject.pods.namespaceSelector.matchLabels", {"env": "a b"},
     "spec.subject.pods.namespaceSelector.matchLabels.env", "Invalid value", "label value"),
    (anp, "spec.ingress", [{"action": "Deny", "from": [{"namespaces": {}}]}] * 101, "spec.ingress", "Too many",
     "at most 100"),
    (anp, "spec.ingress[0].name", "x" * 101, "spec.ingress[0].name", "Too long", "100 characters"),
    (anp, "metadata.name", "Guard", "metadata.name", "Invalid value", "not a valid name"),
    (banp, "metadata.name", "baseline", "metadata.name", "Invalid value", "metadata.name=\"default\""),
    (banp, "spec.ingress[0].action", "Pass", "spec.ingress[0].action", "Unsupported value",
     "only in an AdminNetworkPolicy"),
    (banp, "spec.priority", 5, "spec.priority", "Unknown field", "known fields"),
    (banp, "spec.egress", [{"action": "Deny", "to": [{"domainNames": ["example.com"]}]}],
     "spec.egress[0].to[0].domainNames", "Unknown field", "egress peer"),
    (anp, "spec.ingress[0].action", "Accept", "spec.ingress[0].action", "Unsupported value", "v1alpha1 says Allow"),
    (cnp, "spec.tier", ..., "spec.tier", "Required value", "Admin"),
    (cnp, "spec.tier", "admin", "spec.tier", "Unsupported value", "case-sensitive"),
    (cnp, "spec.priority", ..., "spec.priority", "Required value", "0 to 1000"),
    (cnp, "apiVersion", "policy.networking.k8s.io/v1alpha1", "apiVersion", "Unsupported value", "v1alpha2"),
    (cnp, "spec.ingress[0].action", "Allow", "spec.ingress[0].action", "Unsupported value", "calls it Accept"),
    (cnp, "spec.ingress[0].ports", [{"portNumber": {"port": 80}}], "spec.ingress[0].ports", "Unknown field",
     "known fields: action, from, name, protocols"),
    (cnp, "spec.ingress[0].protocols[0].tcp", {}, "spec.ingress[0].protocols[0].tcp.destinationPort",
     "Required value", "needs a destinationPort"),
    (cnp, "spec.ingress[0].protocols[1].udp.destinationPort.range.end", 4000,
     "spec.ingress[0].protocols[1].udp.destinationPort.range", "Invalid value", "Start port must be less than End"),
    (cnp, "spec.ingress[0].protocols[0].tcp.destinationPort.range", {"start": 1, "end": 2},
     "spec.ingress[0].protocols[0].tcp.destinationPort", "Forbidden", "exactly one of"),
    (cnp, "spec.ingress[0].protocols[2].tcp", {"destinationPort": {"number": 80}}, "spec.ingress[0].protocols[2]",
     "Forbidden", "exactly one of"),
    (cnp, "spec.egress[0].protocols", [{"destinationNamedPort": "http"}], "spec.egress[0]", "Invalid value",
     "cannot be set with namedPorts"),
    (cnp, "spec.ingress", [{"action": "Deny", "from": [{"namespaces": {}}]}] * 26, "spec.ingress", "Too many",
     "at most 25"),
]


@pytest.mark.parametrize("base,field,value,path,kind,words", CASES,
                         ids=[f"{c[0].__name__}:{c[1]}={str(c[2])[:20]}" for c in CASES])
def test_the_api_servers_refusals_are_field_errors(base, field, value, path, kind, words):
    result = parse_admin_policy(_set(base(), field, value))
    assert result.policy is None
    found = [e for e in result.errors if str(e.path) == path]
    assert found, f"no error at {path}: {[str(e) for e in result.errors]}"
    assert found[0].kind == kind and words in found[0].detail, str(found[0])


def test_domain_names_are_an_admin_egress_peer():
    obj = _set(anp(), "spec.egress[0].to", [{"domainNames": ["*.example.com", "api.example.org"]}])
    result = parse_admin_policy(obj)
    assert result.ok, result.errors
    assert result.policy.egress[0].peers[0].domain_names == ("*.example.com", "api.example.org")
    bad = parse_admin_policy(_set(anp(), "spec.egress[0].to", [{"domainNames": ["exa mple.com"]}]))
    assert [str(e.path) for e in bad.errors] == ["spec.egress[0].to[0].domainNames[0]"]


def test_not_a_mapping_or_another_kind_is_refused_without_a_traceback():
    assert parse_admin_policy(["a"]).errors[0].kind == "Invalid value"
    assert str(parse_admin_policy({"kind": "NetworkPolicy"}).errors[0].path) == "kind"
    assert parse_admin_policy(_set(anp(), "spec", "x")).errors[0].detail.startswith("must be a mapping")
