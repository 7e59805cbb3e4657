"""Ports rules over realistic clusters: named ports, Service ports vs target ports, protocols."""
import textwrap

import yaml

from webhook.cluster.objects import ContainerPort, Namespace, Pod
from webhook.cluster.view import ClusterView, namespaces_declaring_port, services_in
from webhook.config import DEFAULT
from webhook.policy.parse import parse_policy
from webhook.rules.base import Example
from webhook.rules.context import Context
from webhook.rules.examples import run_example
from webhook.rules.inventory import CLUSTER, DNS_EGRESS
from webhook.rules.runner import check_policy

NAMED = "named-port-unknown"
SVC = "service-port-not-target-port"
PROTO = "port-protocol-mismatch"


def policy(spec: str, namespace: str = "shop") -> str:
    return (f"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
            f"metadata: {{name: p, namespace: {namespace}, annotations: {{description: test}}}}\n"
            f"spec:\n{textwrap.indent(textwrap.dedent(spec).strip(), '  ')}\n")


def egress(rule: str, selector: str = "{matchLabels: {app: api}}", namespace: str = "shop") -> str:
    """A policy whose egress is `rule` (one YAML list item) plus the DNS allowance."""
    body = textwrap.indent(textwrap.dedent(rule).strip(), "  ")
    return (f"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
            f"metadata: {{name: p, namespace: {namespace}, annotations: {{description: test}}}}\n"
            f"spec:\n  podSelector: {selector}\n  policyTypes: [Egress]\n  egress:\n{body}{DNS_EGRESS}\n")


def run(manifest: str, rule_id: str):
    return [f for f in run_example(Example("test", manifest)) if f.rule == rule_id]


# --- named-port-unknown --------------------------------------------------------------------

def test_ingress_named_port_typo_names_the_pods_and_suggests():
    found = run(policy("""
        podSelector: {matchLabels: {app: api}}
        ingress:
        - ports: [{port: 8080}, {port: metrix}]
    """) + CLUSTER, NAMED)
    assert len(found) == 1
    f = found[0]
    assert f.path == "spec.ingress[0].ports[1].port"
    assert "shop/deployment/api" in f.message and "did you mean `metrics`?" in f.message
    assert yaml.safe_load(f.fix) == [{"port": "metrics", "protocol": "TCP"}]


def test_named_port_with_the_wrong_protocol_says_which_protocol_is_declared():
    # CoreDNS declares `dns` as UDP only; `port: dns` defaults to TCP.
    found = run(egress("""
        - to:
          - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}
            podSelector: {matchLabels: {k8s-app: kube-dns}}
          ports: [{port: dns}]
    """) + CLUSTER, NAMED)
    assert len(found) == 1
    assert "declared as UDP by kube-system/deployment/coredns" in found[0].message
    assert yaml.safe_load(found[0].fix) == [{"port": "dns", "protocol": "UDP"}]


def test_egress_named_port_resolves_in_the_peers_namespaces():
    ok = run(egress("""
        - to:
          - namespaceSelector: {matchLabels: {team: observability}}
          ports: [{port: web}]
    """) + CLUSTER, NAMED)
    assert ok == []
    bad = run(egress("""
        - to:
          - namespaceSelector: {matchLabels: {team: observability}}
          ports: [{port: http}]
    """) + CLUSTER, NAMED)
    assert len(bad) == 1
    assert "monitoring/deployment/prometheus" in bad[0].message
    assert "they declare web" in bad[0].message


def test_egress_to_everyone_checks_every_namespace_through_the_port_index():
    declared_somewhere = run(egress("- ports: [{port: postgres}]") + CLUSTER, NAMED)
    assert declared_somewhere == []
    declared_nowhere = run(egress("- ports: [{port: postgress}]") + CLUSTER, NAMED)
    assert len(declared_nowhere) == 1


def test_named_port_toward_ip_blocks_only_cannot_match_external_addresses():
    found = run(egress("""
        - to: [{ipBlock: {cidr: 0.0.0.0/0, except: [10.0.0.0/8]}}]
          ports: [{port: https}]
    """) + CLUSTER, NAMED)
    assert len(found) == 1
    assert "can't match external addresses" in found[0].message
    assert yaml.safe_load(found[0].fix) == [{"port": 443, "protocol": "TCP"}]


def test_ip_block_message_needs_no_inventory_but_pod_checks_do():
    no_inventory = run(egress("""
        - to: [{ipBlock: {cidr: 203.0.113.0/24}}]
          ports: [{port: https}]
        - to: [{podSelector: {matchLabels: {app: db}}}]
          ports: [{port: postgress}]
    """), NAMED)
    assert [f.path for f in no_inventory] == ["spec.egress[0].ports[0].port"]


def test_mixed_ip_block_and_pod_peers_resolve_against_the_pods():
    found = run(egress("""
        - to:
          - ipBlock: {cidr: 203.0.113.0/24}
          - podSelector: {matchLabels: {app: db}}
          ports: [{port: postgres}]
    """) + CLUSTER, NAMED)
    assert found == []


def test_quiet_when_the_destination_selects_no_pod():
    found = run(policy("""
        podSelector: {matchLabels: {app: not-deployed-yet}}
        ingress:
        - ports: [{port: http}]
    """) + CLUSTER, NAMED)
    assert found == []


# --- service-port-not-target-port ----------------------------------------------------------

def test_service_port_instead_of_target_port():
    found = run(policy("""
        podSelector: {matchLabels: {app: api}}
        ingress:
        - from: [{podSelector: {matchLabels: {app: frontend}}}]
          ports: [{port: 80}]
    """) + CLUSTER, SVC)
    assert len(found) == 1
    f = found[0]
    assert f.path == "spec.ingress[0].ports[0]"
    assert "Service shop/api" in f.message and "targetPort 8080" in f.message
    assert yaml.safe_load(f.fix) == [{"port": 8080, "protocol": "TCP"}]


def test_quiet_when_the_rule_also_allows_the_target_port():
    found = run(policy("""
        podSelector: {matchLabels: {app: api}}
        ingress:
        - ports: [{port: 80}, {port: 8000, endPort: 8100}]
    """) + CLUSTER, SVC)
    assert found == []


def test_quiet_when_the_pods_also_listen_on_the_service_port():
    extra = """
---
apiVersion: v1
kind: Pod
metadata: {name: legacy, namespace: shop, labels: {app: legacy}}
spec:
  containers: [{name: c, image: nginx, ports: [{containerPort: 80}, {containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: legacy, namespace: shop}
spec:
  selector: {app: legacy}
  ports: [{port: 80, targetPort: 8080}]
"""
    found = run(policy("""
        podSelector: {matchLabels: {app: legacy}}
        ingress:
        - ports: [{port: 80}]
    """) + CLUSTER + extra, SVC)
    assert found == []


def test_named_target_port_is_resolved_against_the_pods_and_selectorless_services_are_ignored():
    extra = """
---
apiVersion: v1
kind: Service
metadata: {name: frontend, namespace: shop}
spec:
  selector: {app: frontend}
  ports: [{name: web, port: 443, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: external-db, namespace: shop}
spec:
  ports: [{port: 5432, targetPort: 15432}]
"""
    found = run(policy("""
        podSelector: {matchLabels: {tier: web}}
        ingress:
        - ports: [{port: 443}]
    """) + CLUSTER + extra, SVC)
    assert len(found) == 1
    assert "targetPort http = 8080 on shop/deployment/frontend" in found[0].message
    db = run(policy("""
        podSelector: {matchLabels: {app: db}}
        ingress:
        - ports: [{port: 5432}]
    """) + CLUSTER + extra, SVC)
    assert db == []


def test_egress_to_a_service_port_in_another_namespace():
    found = run(egress("""
        - to:
          - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: shop}}
            podSelector: {matchLabels: {app: api}}
          ports: [{port: 80}]
    """, selector="{matchLabels: {app: prometheus}}", namespace="monitoring") + CLUSTER, SVC)
    assert len(found) == 1
    assert found[0].path == "spec.egress[0].ports[0]"


# --- port-protocol-mismatch ----------------------------------------------------------------

SYSLOG = """
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: syslog, namespace: monitoring}
spec:
  selector: {matchLabels: {app: syslog}}
  template:
    metadata: {labels: {app: syslog}}
    spec:
      containers: [{name: rsyslog, image: rsyslog, ports: [{containerPort: 514, protocol: UDP}]}]
"""


def test_default_tcp_toward_a_udp_only_port():
    found = run(egress("""
        - to:
          - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}
            podSelector: {matchLabels: {app: syslog}}
          ports: [{port: 514}]
    """) + CLUSTER + SYSLOG, PROTO)
    assert len(found) == 1
    assert "monitoring/daemonset/syslog declares port 514 as UDP" in found[0].message
    assert yaml.safe_load(found[0].fix) == [{"port": 514, "protocol": "UDP"}]


def test_protocol_mismatch_quiet_when_both_protocols_listed_or_port_undeclared():
    both = run(egress("""
        - to:
          - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}
            podSelector: {matchLabels: {app: syslog}}
          ports: [{port: 514}, {port: 514, protocol: UDP}]
    """) + CLUSTER + SYSLOG, PROTO)
    assert both == []
    undeclared = run(egress("""
        - to: [{podSelector: {matchLabels: {app: db}}}]
          ports: [{port: 6432}]
    """) + CLUSTER, PROTO)
    assert undeclared == []


def test_protocol_mismatch_quiet_when_the_destination_may_be_outside_the_cluster():
    # Egress to everyone on 514 may be a TCP syslog server on the internet.
    found = run(egress("- ports: [{port: 514}]") + CLUSTER + SYSLOG, PROTO)
    assert found == []
    with_ip_block = run(egress("""
        - to:
          - ipBlock: {cidr: 198.51.100.0/24}
          - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}
            podSelector: {matchLabels: {app: syslog}}
          ports: [{port: 514}]
    """) + CLUSTER + SYSLOG, PROTO)
    assert with_ip_block == []


def test_ingress_protocol_mismatch_on_the_selected_pods():
    found = run(policy("""
        podSelector: {matchLabels: {app: syslog}}
        ingress:
        - from: [{ipBlock: {cidr: 10.0.0.0/8}}]
          ports: [{port: 514}]
    """, namespace="monitoring") + CLUSTER + SYSLOG, PROTO)
    assert len(found) == 1 and found[0].path == "spec.ingress[0].ports[0]"


def test_service_port_quiet_when_another_selected_pod_listens_on_it():
    extra = """
---
apiVersion: v1
kind: Pod
metadata: {name: sidecar-proxy, namespace: shop, labels: {app: api-proxy, tier: backend}}
spec:
  containers: [{name: envoy, image: envoyproxy/envoy, ports: [{containerPort: 80}]}]
"""
    found = run(policy("""
        podSelector: {matchLabels: {tier: backend}}
        ingress:
        - ports: [{port: 80}]
    """) + CLUSTER + extra, SVC)
    assert found == []


# --- scale: per-policy work follows the scope, not the cluster -----------------------------

class CountingView(ClusterView):
    classes = 0

    def pod_label_classes(self, namespace, sel):
        CountingView.classes += 1
        return super().pod_label_classes(namespace, sel)


def test_named_port_check_with_2000_namespaces_visits_only_declaring_namespaces():
    view = CountingView()
    for i in range(2000):
        name = f"team-{i:04d}"
        view.upsert_namespace(Namespace(name, {"kubernetes.io/metadata.name": name}))
        view.upsert_pod(Pod(name, "web", {"app": "web"}, (ContainerPort(8080, "TCP", "http"),), kind="Deployment"))
    view.upsert_pod(Pod("team-1999", "grpc", {"app": "grpc"}, (ContainerPort(9000, "TCP", "grpc"),),
                        kind="Deployment"))
    assert namespaces_declaring_port(view, "grpc") == {"team-1999"}
    assert services_in(view, "team-0001") == []
    text = egress("""
        - to: [{namespaceSelector: {}}]
          ports: [{port: grpc}, {port: grpcc}]
    """, selector="{matchLabels: {app: web}}", namespace="team-0000")
    pol = parse_policy(yaml.safe_load(text)).policy
    view.upsert_policy(pol)
    CountingView.classes = 0
    found = [f for f in check_policy(pol, Context(view, DEFAULT)) if f.rule == NAMED]
    assert [f.path for f in found] == ["spec.egress[0].ports[1].port"]
    assert CountingView.classes < 50


def test_port_summaries_follow_the_view_after_changes():
    view = ClusterView()
    view.upsert_pod(Pod("a", "web", {"app": "web"}, (ContainerPort(8080, "TCP", "http"),), kind="Deployment"))
    assert set(namespaces_declaring_port(view, "http")) == {"a"}
    view.upsert_pod(Pod("b", "web", {"app": "web"}, (ContainerPort(8080, "TCP", "http"),), kind="Deployment"))
    assert set(namespaces_declaring_port(view, "http")) == {"a", "b"}
    view.delete_pod("a", "web", kind="Deployment")
    assert set(namespaces_declaring_port(view, 8080)) == {"b"}
