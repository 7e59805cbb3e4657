"""Facts of the view and configuration alone (the DNS pods, the address index) are kept on the
view and shared by the contexts of later reviews; a change to the view must still reach the
next review, and nothing a review's candidate adds may leak into another review."""
from webhook.cluster.files import add_to_view, parse_text
from webhook.cluster.objects import ContainerPort, Pod
from webhook.cluster.view import ClusterView
from webhook.config import DEFAULT
from webhook.policy.parse import parse_policy
from webhook.rules.context import Context
from webhook.rules.dns import dns_status
from webhook.rules.inventory import CLUSTER
from webhook.rules.runner import check_policy


def cluster_view() -> ClusterView:
    view = ClusterView()
    for doc in parse_text(CLUSTER, "cluster.yaml"):
        add_to_view(view, doc)
    return view


def candidate(name: str, egress: list, pod_selector: dict | None = None) -> object:
    obj = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
           "metadata": {"name": name, "namespace": "shop", "annotations": {"description": "test"}},
           "spec": {"podSelector": {"matchLabels": {"app": "api"}} if pod_selector is None else pod_selector,
                    "policyTypes": ["Egress"], "egress": egress}}
    return parse_policy(obj).policy


def review_context(view: ClusterView, policy) -> Context:
    """What the webhook builds per review: a new context with the candidate overlaid."""
    ctx = Context(view, DEFAULT)
    return ctx.with_engine(ctx.engine.with_overlay([policy]))


NAMED_DNS_PORTS = [{"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                    "ports": [{"port": "dns", "protocol": "UDP"}, {"port": "dns-tcp", "protocol": "TCP"}]}]


def test_a_new_dns_pod_reaches_the_next_review():
    view = cluster_view()
    policy = candidate("api-egress", NAMED_DNS_PORTS)
    assert not dns_status(policy, review_context(view, policy)).needs_udp
    # A DNS pod that does not declare the port names: the named ports no longer reach every DNS pod.
    view.upsert_pod(Pod("kube-system", "coredns-extra", {"k8s-app": "kube-dns"},
                        (ContainerPort(53, "UDP", None), ContainerPort(53, "TCP", None))))
    assert dns_status(policy, review_context(view, policy)).needs_udp


def test_a_candidate_does_not_leak_into_the_next_review():
    view = cluster_view()
    # A namespace-wide DNS policy under review would cover every pod of shop - had it been stored.
    allow_dns = candidate("allow-dns", NAMED_DNS_PORTS, pod_selector={})
    no_dns = candidate("api-egress", [{"to": [{"podSelector": {"matchLabels": {"app": "db"}}}]}])
    assert not dns_status(allow_dns, review_context(view, allow_dns)).needs_udp
    assert dns_status(no_dns, review_context(view, no_dns)).needs_udp


def test_a_new_pod_ip_reaches_the_next_reviews_ipblock_check():
    view = cluster_view()
    policy = candidate("api-egress", [{"to": [{"ipBlock": {"cidr": "192.0.2.0/24"}}],
                                       "ports": [{"port": 443, "protocol": "TCP"}]}])
    rules = lambda: {f.rule for f in check_policy(policy, review_context(view, policy))}  # noqa: E731
    assert "ipblock-targets-cluster" not in rules()
    view.upsert_pod(Pod("shop", "legacy", {"app": "legacy"}, ips=("192.0.2.7",)))
    assert "ipblock-targets-cluster" in rules()
