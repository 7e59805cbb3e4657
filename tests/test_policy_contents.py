"""NetworkPolicy.contents answers the rules' preconditions (Rule.applies) from one pass over
the written rules. Each field must agree with its plain definition, or the runner would skip
a check that has something to find."""
import itertools

from webhook.cluster.files import parse_text
from webhook.policy.parse import parse_policy
from webhook.rules.base import REGISTRY
from webhook.rules.selectors import _or_pair


def plain(policy) -> dict:
    rules = policy.ingress + policy.egress
    peers = [p for r in rules for p in r.peers]
    return {
        "ip_block": any(p.ip_block is not None for p in peers),
        "named_port": any(isinstance(s.port, str) for r in rules for s in r.ports),
        "namespace_selector": any(p.namespace_selector is not None and not p.namespace_selector.is_empty
                                  for p in peers),
        "rule_without_peers": any(r.all_peers for r in rules),
        "peers_written_empty": any(r.peers_written_empty for r in rules),
        "namespace_and_pod_peers": any(_or_pair(r) is not None for r in rules),
    }


def example_policies():
    for rule in REGISTRY:
        for example in itertools.chain(rule.bad, rule.good):
            for doc in parse_text(example.manifest, "example.yaml"):
                if doc.kind == "NetworkPolicy":
                    policy = parse_policy(doc.obj).policy
                    if policy is not None:
                        yield policy


def spec(**spec) -> object:
    return parse_policy({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                         "metadata": {"name": "p", "namespace": "shop"}, "spec": spec}).policy


SHAPES = [
    spec(podSelector={}, ingress=[{}]),
    spec(podSelector={}, policyTypes=["Egress"], egress=[{"to": []}]),
    spec(podSelector={}, ingress=[{"from": [{"namespaceSelector": {}}, {"podSelector": {"matchLabels": {"a": "b"}}}]}]),
    spec(podSelector={}, ingress=[{"from": [{"namespaceSelector": {"matchLabels": {"a": "b"}}},
                                            {"podSelector": {}}]}]),
    spec(podSelector={}, policyTypes=["Ingress"],  # an egress rule policyTypes ignores still counts
         egress=[{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"port": "http"}]}]),
    spec(podSelector={}, ingress=[{"from": [{"namespaceSelector": {"matchLabels": {"a": "b"}},
                                             "podSelector": {"matchLabels": {"c": "d"}}}]}]),
]


def test_contents_agree_with_the_plain_definitions():
    policies = list(example_policies()) + SHAPES
    assert len(policies) > 30
    for policy in policies:
        assert vars(policy.contents) == plain(policy), policy.key
    # Every field is seen both ways, so none of them is trivially constant here.
    for field in plain(SHAPES[0]):
        assert {plain(p)[field] for p in policies} == {True, False}, field


def test_contents_are_computed_once_per_policy_object():
    policy = SHAPES[0]
    assert policy.contents is policy.contents
    assert policy == spec(podSelector={}, ingress=[{}])  # a cached attribute is not part of equality
