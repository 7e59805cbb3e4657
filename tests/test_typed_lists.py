"""Typed lists (`kind: PodList`, `NetworkPolicyList`, any `*List` with items) as the API returns
them: items without kind/apiVersion take the list's; an item with a kind of its own keeps it.
Real API output is checked in tests/e2e/test_api_lists.py; these cover the corners."""
from __future__ import annotations

import pytest

from webhook.cluster.files import InputError, parse_text

MIXED = """\
apiVersion: v1
kind: PodList
items:
- metadata: {name: a, namespace: shop, labels: {app: a}}
- apiVersion: v1
  kind: Service
  metadata: {name: s, namespace: shop}
"""

POLICIES = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicyList
metadata: {resourceVersion: "7"}
items:
- metadata: {name: p, namespace: shop}
  spec:
    podSelector: {}
    policyTypes: [Egress]
"""


def test_kind_less_items_take_the_lists_type_and_items_with_a_kind_keep_it():
    docs = parse_text(MIXED, "pods.yaml")
    assert [(d.kind, d.obj["apiVersion"], d.obj["metadata"]["name"]) for d in docs] == \
        [("Pod", "v1", "a"), ("Service", "v1", "s")]
    assert [d.line for d in docs] == [4, 5]


def test_network_policies_of_a_list_keep_their_group_and_field_lines():
    (doc,) = parse_text(POLICIES, "policies.yaml")
    assert doc.kind == "NetworkPolicy" and doc.obj["apiVersion"] == "networking.k8s.io/v1"
    assert doc.line == 5 and doc.origin().line_of("spec.policyTypes") == 8


def test_a_plain_list_names_no_type_so_kind_less_items_stay_an_error():
    with pytest.raises(InputError, match=r"list.yaml:4: object has no kind"):
        parse_text("apiVersion: v1\nkind: List\nitems:\n- metadata: {name: a}\n", "list.yaml")
