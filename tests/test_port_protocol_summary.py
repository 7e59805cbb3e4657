"""The view's per-port protocol summary (port_declared_with_other_protocol) lets
port-protocol-mismatch skip ports declared with one protocol only. It is kept current on
every pod change, so a pod added, replaced or deleted reaches the next review."""
from webhook.cluster.objects import ContainerPort, Namespace, Pod
from webhook.cluster.view import ClusterView, port_declared_with_other_protocol
from webhook.config import DEFAULT
from webhook.policy.parse import parse_policy
from webhook.rules.context import Context
from webhook.rules.runner import check_policy

RULE = "port-protocol-mismatch"


def view_with_syslog(protocol: str) -> ClusterView:
    view = ClusterView()
    view.upsert_namespace(Namespace("shop", {"kubernetes.io/metadata.name": "shop"}))
    view.upsert_pod(Pod("shop", "syslog-0", {"app": "syslog"}, (ContainerPort(514, protocol, "syslog"),)))
    return view


def ingress_on_514() -> object:
    return parse_policy({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "syslog-in", "namespace": "shop", "annotations": {"description": "test"}},
        "spec": {"podSelector": {"matchLabels": {"app": "syslog"}},
                 "ingress": [{"ports": [{"port": 514}]}]}}).policy


def mismatches(view: ClusterView) -> list:
    return [f for f in check_policy(ingress_on_514(), Context(view, DEFAULT)) if f.rule == RULE]


def test_summary_follows_upserts_and_deletes():
    view = view_with_syslog("TCP")
    assert not port_declared_with_other_protocol(view, 514, "TCP")
    assert port_declared_with_other_protocol(view, 514, "UDP")
    assert not port_declared_with_other_protocol(view, 9999, "TCP")  # declared by nobody
    view.upsert_pod(Pod("shop", "syslog-1", {"app": "syslog"}, (ContainerPort(514, "UDP"),)))
    assert port_declared_with_other_protocol(view, 514, "TCP")
    view.delete_pod("shop", "syslog-1")
    assert not port_declared_with_other_protocol(view, 514, "TCP")
    view.delete_pod("shop", "syslog-0")
    assert not port_declared_with_other_protocol(view, 514, "UDP")


def test_replacing_a_pod_changes_the_finding():
    view = view_with_syslog("TCP")
    assert mismatches(view) == []
    # The same pod redeployed with UDP: the review after the change must see it.
    view.upsert_pod(Pod("shop", "syslog-0", {"app": "syslog"}, (ContainerPort(514, "UDP", "syslog"),)))
    found = mismatches(view)
    assert len(found) == 1 and "declares port 514 as UDP" in found[0].message
    view.upsert_pod(Pod("shop", "syslog-0", {"app": "syslog"}, (ContainerPort(514, "TCP", "syslog"),)))
    assert mismatches(view) == []


def test_a_second_protocol_elsewhere_does_not_hide_or_invent_a_finding():
    # Another namespace declaring 514/TCP makes the port a suspect everywhere; the pod
    # lookups still decide, so the UDP-only destination here is still reported.
    view = view_with_syslog("UDP")
    view.upsert_pod(Pod("other", "tcp-syslog", {"app": "syslog"}, (ContainerPort(514, "TCP"),)))
    assert len(mismatches(view)) == 1
