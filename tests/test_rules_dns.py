"""The DNS rules over realistic clusters: CoreDNS with its named ports in kube-system, a shop
namespace with workloads, other policies of the same input, node-local DNS and config
overrides. Each test runs the same path `lint` does (manifest stream -> view -> rules)."""
import yaml

from webhook.cluster.files import add_to_view, parse_text
from webhook.cluster.view import ClusterView
from webhook.config import DEFAULT, from_dict
from webhook.policy.parse import parse_policy
from webhook.rules.base import Example
from webhook.rules.context import Context
from webhook.rules.dns import dns_allowed, dns_fix_rule, dns_status, hypothetical_pod
from webhook.rules.examples import run_example
from webhook.rules.inventory import CLUSTER, DNS_EGRESS


def policy(name="api-egress", selector="{matchLabels: {app: api}}", types="[Egress]", egress=None,
           namespace="shop"):
    text = f"""
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: {name}, namespace: {namespace}, annotations: {{description: "test"}}}}
spec:
  podSelector: {selector}
  policyTypes: {types}
"""
    if egress is not None:
        text += "  egress:" + egress + "\n"
    return text


def dns_findings(manifest, config=DEFAULT, rule=None):
    found = [f for f in run_example(Example("t", manifest), config) if f.category == "dns"]
    return [f for f in found if rule is None or f.rule == rule]


def rules_of(found):
    return sorted(f.rule for f in found)


TO_COREDNS = """
  - to:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}
      podSelector: {matchLabels: {k8s-app: kube-dns}}
"""


# --- dns-egress-missing ----------------------------------------------------------------------

def test_egress_to_db_only_is_an_error_naming_pod_policy_and_exact_fix():
    found = dns_findings(policy(egress="""
  - to: [{podSelector: {matchLabels: {app: db}}}]
    ports: [{port: 5432}]""") + CLUSTER)
    assert rules_of(found) == ["dns-egress-missing"]
    f = found[0]
    assert f.severity == "error" and f.path == "spec.egress" and f.policy == "shop/api-egress"
    assert "shop/deployment/api" in f.message and "shop/api-egress" in f.message
    assert "UDP 53" in f.message and "kube-system" in f.message
    # The fix is the exact rule to append to spec.egress.
    assert yaml.safe_load(f.fix) == [dns_egress_rule_default()]


def dns_egress_rule_default():
    return {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
            "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}


def test_the_fix_snippet_actually_fixes_the_policy():
    found = dns_findings(policy(egress="""
  - to: [{podSelector: {matchLabels: {app: db}}}]
    ports: [{port: 5432}]""") + CLUSTER)
    fixed = yaml.safe_load(policy(egress="""
  - to: [{podSelector: {matchLabels: {app: db}}}]
    ports: [{port: 5432}]"""))
    fixed["spec"]["egress"] += yaml.safe_load(found[0].fix)
    assert dns_findings(yaml.safe_dump(fixed) + CLUSTER) == []


def test_policy_isolating_egress_with_no_rules_names_every_workload():
    found = dns_findings(policy(name="default-deny", selector="{}") + CLUSTER)
    assert rules_of(found) == ["dns-egress-missing"]
    for ref in ("shop/deployment/frontend", "shop/deployment/api", "shop/statefulset/db"):
        assert ref in found[0].message


def test_port_53_without_protocol_is_tcp_only():
    found = dns_findings(policy(egress=TO_COREDNS + "    ports: [{port: 53}]") + CLUSTER)
    assert rules_of(found) == ["dns-egress-missing"]
    assert "without `protocol` is TCP" in found[0].message


def test_named_coredns_ports_resolve_against_the_dns_pods():
    good = policy(egress=TO_COREDNS + "    ports: [{port: dns, protocol: UDP}, {port: dns-tcp, protocol: TCP}]")
    assert dns_findings(good + CLUSTER) == []
    # `dns` is the UDP port's name; there is no TCP port named `dns`, so TCP stays closed.
    udp_only = policy(egress=TO_COREDNS + "    ports: [{port: dns, protocol: UDP}, {port: dns, protocol: TCP}]")
    assert rules_of(dns_findings(udp_only + CLUSTER)) == ["dns-tcp-missing"]
    # A name the DNS pods do not declare reaches nothing.
    unknown = policy(egress=TO_COREDNS + "    ports: [{port: domain, protocol: UDP}]")
    assert rules_of(dns_findings(unknown + CLUSTER)) == ["dns-egress-missing"]


def test_port_ranges_count():
    full = policy(egress=TO_COREDNS + "    ports: [{port: 1, endPort: 65535, protocol: UDP},"
                                      " {port: 1, endPort: 65535, protocol: TCP}]")
    assert rules_of(dns_findings(full + CLUSTER, rule="dns-egress-missing")) == []
    assert rules_of(dns_findings(full + CLUSTER, rule="dns-tcp-missing")) == []
    below = policy(egress=TO_COREDNS + "    ports: [{port: 1, endPort: 52, protocol: UDP}]")
    assert rules_of(dns_findings(below + CLUSTER)) == ["dns-egress-missing"]


def test_allow_all_egress_rule_counts():
    assert dns_findings(policy(egress="\n  - {}") + CLUSTER) == []
    # Every port to every pod of every namespace counts too (the DNS pods are among them).
    all_pods = policy(egress="\n  - to: [{namespaceSelector: {}}]")
    assert rules_of(dns_findings(all_pods + CLUSTER, rule="dns-egress-missing")) == []


def test_a_second_policy_selecting_the_same_pods_provides_dns():
    other = policy(name="api-dns", egress=DNS_EGRESS)
    subject = policy(egress="""
  - to: [{podSelector: {matchLabels: {app: db}}}]
    ports: [{port: 5432}]""")
    assert dns_findings(subject + CLUSTER + "---" + other) == []
    # A DNS policy for other pods does not help the api pods.
    elsewhere = policy(name="frontend-dns", selector="{matchLabels: {app: frontend}}", egress=DNS_EGRESS)
    assert rules_of(dns_findings(subject + CLUSTER + "---" + elsewhere)) == ["dns-egress-missing"]


def test_union_udp_from_one_policy_tcp_from_another():
    udp = policy(name="dns-udp", selector="{}", egress=TO_COREDNS + "    ports: [{port: 53, protocol: UDP}]")
    tcp = policy(egress=TO_COREDNS + "    ports: [{port: 53, protocol: TCP}]")
    assert dns_findings(tcp + CLUSTER + "---" + udp) == []
    # Alone, the TCP-only policy is an error (UDP is what resolvers use first).
    assert rules_of(dns_findings(tcp + CLUSTER)) == ["dns-egress-missing"]


def test_ingress_only_policies_are_not_judged():
    ingress_only = policy(types="[Ingress]")
    assert dns_findings(ingress_only + CLUSTER) == []
    # Even when another policy isolates the same pods' egress without DNS: the fix belongs there.
    deny = policy(name="deny-egress", selector="{}")
    assert dns_findings(ingress_only + CLUSTER + "---" + deny) == []


def test_node_local_dns_address_counts_only_when_configured():
    node_local = policy(egress="""
  - to: [{ipBlock: {cidr: 169.254.20.10/32}}]
    ports: [{port: 53, protocol: UDP}, {port: 53, protocol: TCP}]""")
    assert rules_of(dns_findings(node_local + CLUSTER)) == ["dns-egress-missing"]
    cfg = from_dict({"dns": {"nodeLocalAddresses": ["169.254.20.10"]}})
    assert dns_findings(node_local + CLUSTER, cfg) == []
    # The fix offered under that configuration includes the node-local address.
    found = dns_findings(policy(egress="\n  - to: [{podSelector: {}}]\n    ports: [{port: 443}]") + CLUSTER, cfg)
    fix = yaml.safe_load(found[0].fix)[0]
    assert {"ipBlock": {"cidr": "169.254.20.10/32"}} in fix["to"]
    assert "node-local DNS 169.254.20.10" in found[0].message


def test_ipblock_to_the_internet_is_not_cluster_dns():
    internet = policy(egress="""
  - to: [{ipBlock: {cidr: 0.0.0.0/0}}]
    ports: [{port: 53, protocol: UDP}, {port: 53, protocol: TCP}]""")
    assert rules_of(dns_findings(internet + CLUSTER, rule="dns-egress-missing")) == ["dns-egress-missing"]


DNS_PODS_WITH_IPS = """
---
apiVersion: v1
kind: Pod
metadata: {name: coredns-7db6d8ff4d-x2x9q, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  containers:
  - name: coredns
    image: registry.k8s.io/coredns/coredns:v1.11.3
    ports: [{name: dns, containerPort: 53, protocol: UDP}, {name: dns-tcp, containerPort: 53, protocol: TCP}]
status: {podIP: 10.244.0.3}
"""


def test_ipblock_with_dns_pod_ip_counts_only_with_ip_block_matches_pods():
    by_ip = policy(egress="""
  - to: [{ipBlock: {cidr: 10.244.0.0/24}}]
    ports: [{port: 53, protocol: UDP}, {port: 53, protocol: TCP}]""")
    manifest = by_ip + CLUSTER + DNS_PODS_WITH_IPS
    assert rules_of(dns_findings(manifest, rule="dns-egress-missing")) == ["dns-egress-missing"]
    cfg = from_dict({"cluster": {"ipBlockMatchesPods": True}})
    # A workload template has no IP: with the CoreDNS Deployment in view beside its Pod, the
    # Service could balance to an address the block does not name, so it is still missing.
    assert rules_of(dns_findings(manifest, cfg, rule="dns-egress-missing")) == ["dns-egress-missing"]
    only_pod = manifest.replace("kind: Deployment\nmetadata: {name: coredns", "kind: ConfigMap\nmetadata: {name: coredns")
    assert only_pod != manifest
    assert dns_findings(only_pod, cfg, rule="dns-egress-missing") == []
    assert rules_of(dns_findings(only_pod, rule="dns-egress-missing")) == ["dns-egress-missing"]


def test_configured_dns_target_overrides_kube_system():
    cfg = from_dict({"dns": {"namespace": "dns-system", "podLabels": {"app": "unbound"}}})
    unbound = """
---
apiVersion: v1
kind: Namespace
metadata: {name: dns-system}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: unbound, namespace: dns-system}
spec:
  selector: {matchLabels: {app: unbound}}
  template:
    metadata: {labels: {app: unbound}}
    spec:
      containers:
      - {name: unbound, image: "mvance/unbound:1.20", ports: [{containerPort: 53, protocol: UDP}, {containerPort: 53}]}
"""
    to_coredns = policy(egress=DNS_EGRESS)
    found = dns_findings(to_coredns + CLUSTER + unbound, cfg)
    assert rules_of(found) == ["dns-egress-missing"]
    assert "dns-system" in found[0].message
    assert yaml.safe_load(found[0].fix)[0]["to"][0]["podSelector"] == {"matchLabels": {"app": "unbound"}}
    to_unbound = policy(egress="""
  - to:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: dns-system}}
      podSelector: {matchLabels: {app: unbound}}
    ports: [{port: 53, protocol: UDP}, {port: 53, protocol: TCP}]""")
    assert dns_findings(to_unbound + CLUSTER + unbound, cfg) == []


def test_dns_pods_not_in_view_use_the_standard_coredns_stand_in():
    # Only the subject and its namespace: no kube-system in view at all.
    ns = "\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n"
    named = policy(egress=TO_COREDNS + "    ports: [{port: dns, protocol: UDP}, {port: dns-tcp, protocol: TCP}]")
    assert dns_findings(named + ns) == []
    assert rules_of(dns_findings(policy(egress="\n  - to: [{podSelector: {}}]") + ns)) == ["dns-egress-missing"]


# --- no selected pods in view: the hypothetical pod ------------------------------------------------

def test_hypothetical_pod_when_no_pods_are_known():
    # A repository of policies only: nothing says which pods exist.
    subject = policy(selector="{matchLabels: {app: payments}}", egress="\n  - to: [{podSelector: {}}]")
    found = dns_findings(subject)
    assert rules_of(found) == ["dns-egress-missing"]
    assert "pods labeled app=payments in shop (none in view)" in found[0].message
    # A namespace-wide DNS policy in the same input covers every pod, existing or future.
    allow_dns = policy(name="allow-dns", selector="{}", egress=DNS_EGRESS)
    assert dns_findings(subject + "---" + allow_dns) == []
    # A DNS policy that needs more labels than the subject requires is not certain to apply.
    narrower = policy(name="payments-dns", selector="{matchLabels: {app: payments, tier: web}}", egress=DNS_EGRESS)
    assert rules_of(dns_findings(subject + "---" + narrower)) == ["dns-egress-missing"]


def test_hypothetical_pod_when_the_selector_matches_no_pod_in_view():
    subject = policy(selector="{matchLabels: {app: payments}}", egress="\n  - to: [{podSelector: {}}]")
    found = dns_findings(subject + CLUSTER)
    assert rules_of(found) == ["dns-egress-missing"]
    assert "(none in view)" in found[0].message


def test_hypothetical_pod_takes_the_labels_the_selector_requires():
    pol = parse_policy(yaml.safe_load(policy(selector="""
    matchLabels: {app: api}
    matchExpressions:
    - {key: track, operator: In, values: [stable, canary]}
    - {key: team, operator: Exists}
    - {key: legacy, operator: DoesNotExist}"""))).policy
    pod = hypothetical_pod(pol)
    assert pod.labels == {"app": "api", "track": "canary", "team": ""}
    assert pol.pod_selector.matches(pod.labels)


# --- dns-tcp-missing ------------------------------------------------------------------------------

def test_udp_only_is_a_warning_pointing_at_the_rule_to_extend():
    found = dns_findings(policy(egress=TO_COREDNS + "    ports: [{port: 53, protocol: UDP}]") + CLUSTER)
    assert rules_of(found) == ["dns-tcp-missing"]
    f = found[0]
    assert f.severity == "warning" and f.path == "spec.egress[0].ports"
    assert yaml.safe_load(f.fix) == [{"port": 53, "protocol": "TCP"}]


def test_udp_from_another_policy_tcp_missing_everywhere_offers_the_whole_rule():
    udp = policy(name="dns-udp", selector="{}", egress=TO_COREDNS + "    ports: [{port: 53, protocol: UDP}]")
    subject = policy(egress="\n  - to: [{podSelector: {matchLabels: {app: db}}}]\n    ports: [{port: 5432}]")
    found = dns_findings(subject + CLUSTER + "---" + udp)
    assert rules_of(found) == ["dns-tcp-missing"]
    assert found[0].path == "spec.egress"
    assert yaml.safe_load(found[0].fix) == [dns_egress_rule_default()]


# --- dns-scope-too-broad --------------------------------------------------------------------------

def test_namespace_only_peer_is_too_broad_and_fix_names_the_dns_pods():
    broad = policy(egress="""
  - to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}}]
    ports: [{port: 53, protocol: UDP}, {port: 53, protocol: TCP}]""")
    found = dns_findings(broad + CLUSTER)
    assert rules_of(found) == ["dns-scope-too-broad"]
    assert found[0].severity == "info" and found[0].path == "spec.egress[0].to[0]"
    assert yaml.safe_load(found[0].fix) == dns_egress_rule_default()["to"][0]


def test_empty_pod_selector_and_wider_namespace_selectors_are_too_broad():
    empty_pods = policy(egress="""
  - to:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}
      podSelector: {}
    ports: [{port: dns, protocol: UDP}, {port: dns-tcp, protocol: TCP}]""")
    found = dns_findings(empty_pods + CLUSTER)
    assert rules_of(found) == ["dns-scope-too-broad"] and "every pod of kube-system" in found[0].message
    everywhere = policy(egress="""
  - to: [{namespaceSelector: {}}]
    ports: [{port: 53, protocol: UDP}, {port: 53, protocol: TCP}]""")
    assert "every pod of every namespace" in dns_findings(everywhere + CLUSTER)[0].message


def test_rules_that_are_not_about_dns_are_not_dns_scope_findings():
    # All ports to every pod of the cluster: broad, but not a DNS rule.
    all_pods = policy(egress="\n  - to: [{namespaceSelector: {}}]")
    assert dns_findings(all_pods + CLUSTER) == []
    # A wide range without `to` is allow-all-peers' business, not a DNS rule.
    wide = policy(egress="\n  - ports: [{port: 1, endPort: 65535, protocol: UDP}, {port: 1, endPort: 65535}]")
    assert rules_of(dns_findings(wide + CLUSTER)) == []


def test_port_53_to_every_destination_is_too_broad():
    found = dns_findings(policy(egress="\n  - ports: [{port: 53, protocol: UDP}, {port: 53, protocol: TCP}]")
                         + CLUSTER)
    assert rules_of(found) == ["dns-scope-too-broad"]
    assert found[0].path == "spec.egress[0]" and "every destination" in found[0].message


def test_precise_dns_rule_and_unrelated_broad_rules_are_not_dns_scope_findings():
    assert dns_findings(policy(egress=DNS_EGRESS) + CLUSTER) == []
    # A namespace-wide peer to monitoring on 9090 has nothing to do with DNS.
    other = policy(egress=DNS_EGRESS + """
  - to: [{namespaceSelector: {matchLabels: {team: observability}}}]
    ports: [{port: 9090}]""")
    assert dns_findings(other + CLUSTER) == []


# --- the API the mutation reuses ------------------------------------------------------------------

def _context(manifest, config=DEFAULT):
    view = ClusterView()
    for d in parse_text(manifest, "cluster.yaml"):
        if d.kind == "NetworkPolicy":
            view.upsert_policy(parse_policy(d.obj).policy)
        else:
            add_to_view(view, d)
    return Context(view, config)


def test_dns_status_judges_a_candidate_that_is_not_stored_yet():
    allow_dns = policy(name="allow-dns", selector="{}", egress=DNS_EGRESS)
    ctx = _context(CLUSTER + "---" + allow_dns)
    candidate = parse_policy(yaml.safe_load(policy(egress="\n  - to: [{podSelector: {}}]"))).policy
    status = dns_status(candidate, ctx)
    assert status.isolates_egress and not status.needs_udp and not status.needs_tcp
    # Without the namespace-wide policy the same candidate needs the DNS rule.
    bare = _context(CLUSTER)
    status = dns_status(candidate, bare)
    assert status.needs_udp and status.needs_tcp
    assert [p.pod.ref for p in status.udp_gaps] == ["shop/deployment/api"]
    assert status.udp_gaps[0].isolating == ("shop/api-egress",)
    # Adding the rule dns_fix_rule returns makes it whole.
    obj = yaml.safe_load(policy(egress="\n  - to: [{podSelector: {}}]"))
    obj["spec"]["egress"].append(dns_fix_rule(bare))
    assert not dns_status(parse_policy(obj).policy, bare).needs_udp


def test_dns_status_candidate_replaces_the_stored_version_of_the_same_name():
    stored = policy(name="allow-dns", selector="{}", egress=DNS_EGRESS)
    ctx = _context(CLUSTER + "---" + stored)
    # An update of allow-dns that drops DNS: the old version must not vouch for it.
    update = parse_policy(yaml.safe_load(policy(name="allow-dns", selector="{}",
                                                egress="\n  - to: [{podSelector: {}}]"))).policy
    status = dns_status(update, ctx)
    assert status.needs_udp
    assert {p.pod.ref for p in status.udp_gaps} == {
        "shop/deployment/frontend", "shop/deployment/api", "shop/statefulset/db"}


def test_dns_status_of_an_ingress_only_policy_and_dns_allowed_union():
    ctx = _context(CLUSTER)
    ingress = parse_policy(yaml.safe_load(policy(types="[Ingress]"))).policy
    assert dns_status(ingress, ctx).isolates_egress is False
    udp = parse_policy(yaml.safe_load(policy(name="u", egress=TO_COREDNS + "    ports: [{port: 53, protocol: UDP}]"))).policy
    tcp = parse_policy(yaml.safe_load(policy(name="t", egress=TO_COREDNS + "    ports: [{port: 53, protocol: TCP}]"))).policy
    assert dns_allowed([udp], ctx) == (True, False)
    assert dns_allowed([tcp], ctx) == (False, True)
    assert dns_allowed([udp, tcp], ctx) == (True, True)
