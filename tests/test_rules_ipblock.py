"""The ipBlock rules over the realistic inventory (CoreDNS, the shop workloads, Pods with IPs,
Services with ClusterIPs), with and without the cluster network configuration."""
import yaml

from webhook.config import DEFAULT, from_dict
from webhook.rules.base import Example
from webhook.rules.examples import run_example
from webhook.rules.inventory import CLUSTER, DNS_EGRESS
from webhook.rules.ipblock import canonical_cidr


def policy(egress="", ingress=None, types="[Egress]", name="api-egress"):
    text = f"""
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: {name}, namespace: shop, annotations: {{description: "test"}}}}
spec:
  podSelector: {{matchLabels: {{app: api}}}}
  policyTypes: {types}
  egress:{egress}{DNS_EGRESS}
"""
    if ingress is not None:
        text += "  ingress:" + ingress + "\n"
    return text


def findings(manifest, rule, config=DEFAULT):
    return [f for f in run_example(Example("t", manifest), config) if f.rule == rule]


DB_POD = """
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: shop, labels: {app: db, tier: data}}
spec:
  containers: [{name: postgres, image: "postgres:16", ports: [{name: postgres, containerPort: 5432}]}]
status: {podIP: 10.244.1.17, podIPs: [{ip: 10.244.1.17}, {ip: "fd00:10:244:1::17"}]}
"""


# --- ipblock-host-bits --------------------------------------------------------------------------------

def test_canonical_cidr():
    assert canonical_cidr("10.0.0.1/8") == "10.0.0.0/8"
    assert canonical_cidr("2001:db8::1/32") == "2001:db8::/32"
    assert canonical_cidr("10.0.0.0/8") is None
    assert canonical_cidr("10.0.0.1/32") is None
    assert canonical_cidr("not-a-cidr") is None


def test_cidrs_parse_the_same_on_every_ask():
    # parse_cidr remembers what it parsed (the same few CIDRs recur policy after policy)
    from webhook.policy.parse import parse_cidr
    for _ in range(2):
        assert str(parse_cidr("10.0.0.1/8")) == "10.0.0.0/8"
        assert parse_cidr("10.0.0.0/33") is None and parse_cidr("10.0.0.0") is None
        assert parse_cidr(["10.0.0.0/8"]) is None and parse_cidr(None) is None
        assert canonical_cidr("10.0.0.1/8") == "10.0.0.0/8" and canonical_cidr("10.0.0.0/8") is None


def test_host_bits_in_cidr_and_except_with_canonical_fix():
    p = policy("""
  - to: [{ipBlock: {cidr: 10.0.0.1/8, except: [10.1.2.3/16, 10.2.0.0/16]}}]
    ports: [{port: 443}]""")
    found = findings(p + CLUSTER, "ipblock-host-bits")
    by_path = {f.path: f for f in found}
    assert set(by_path) == {"spec.egress[0].to[0].ipBlock.cidr", "spec.egress[0].to[0].ipBlock.except[0]"}
    cidr = by_path["spec.egress[0].to[0].ipBlock.cidr"]
    assert cidr.severity == "warning"
    assert "means 10.0.0.0/8" in cidr.message and "10.0.0.1/32" in cidr.message
    assert yaml.safe_load(cidr.fix) == {"cidr": "10.0.0.0/8"}
    assert yaml.safe_load(by_path["spec.egress[0].to[0].ipBlock.except[0]"].fix) == {
        "except": ["10.1.0.0/16", "10.2.0.0/16"]}


def test_host_bits_in_ingress_and_ipv6():
    p = policy(ingress="\n  - from: [{ipBlock: {cidr: \"2001:db8::1/64\"}}]", types="[Ingress, Egress]")
    found = findings(p + CLUSTER, "ipblock-host-bits")
    assert [f.path for f in found] == ["spec.ingress[0].from[0].ipBlock.cidr"]
    assert yaml.safe_load(found[0].fix) == {"cidr": "2001:db8::/64"}


def test_canonical_blocks_are_clean():
    p = policy("""
  - to: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}, {ipBlock: {cidr: 203.0.113.7/32}}]""")
    assert findings(p + CLUSTER, "ipblock-host-bits") == []


# --- ipblock-metadata-reachable -----------------------------------------------------------------------

def test_internet_without_except_reaches_metadata_and_fix_adds_the_except():
    p = policy("\n  - to: [{ipBlock: {cidr: 0.0.0.0/0, except: [10.0.0.0/8]}}]")
    found = findings(p + CLUSTER, "ipblock-metadata-reachable")
    assert [f.path for f in found] == ["spec.egress[0].to[0].ipBlock"]
    assert "169.254.169.254" in found[0].message and "every port" in found[0].message
    assert yaml.safe_load(found[0].fix) == {
        "ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8", "169.254.169.254/32"]}}


def test_metadata_port_80_and_ranges_count_other_ports_do_not():
    on_80 = policy("\n  - to: [{ipBlock: {cidr: 169.254.0.0/15}}]\n    ports: [{port: 80}]")
    assert "on port 80" in findings(on_80 + CLUSTER, "ipblock-metadata-reachable")[0].message
    full_range = policy("\n  - to: [{ipBlock: {cidr: 0.0.0.0/0}}]\n    ports: [{port: 1, endPort: 65535}]")
    assert len(findings(full_range + CLUSTER, "ipblock-metadata-reachable")) == 1
    https = policy("\n  - to: [{ipBlock: {cidr: 0.0.0.0/0}}]\n    ports: [{port: 443}]")
    assert findings(https + CLUSTER, "ipblock-metadata-reachable") == []
    udp_80 = policy("\n  - to: [{ipBlock: {cidr: 0.0.0.0/0}}]\n    ports: [{port: 80, protocol: UDP}]")
    assert findings(udp_80 + CLUSTER, "ipblock-metadata-reachable") == []


def test_metadata_ipv6_and_excepted_blocks():
    v6 = policy("\n  - to: [{ipBlock: {cidr: \"::/0\"}}]")
    found = findings(v6 + CLUSTER, "ipblock-metadata-reachable")
    assert yaml.safe_load(found[0].fix) == {"ipBlock": {"cidr": "::/0", "except": ["fd00:ec2::254/128"]}}
    excepted = policy("""
  - to:
    - ipBlock: {cidr: 0.0.0.0/0, except: [169.254.0.0/16]}
    - ipBlock: {cidr: "::/0", except: ["fd00:ec2::/64"]}""")
    assert findings(excepted + CLUSTER, "ipblock-metadata-reachable") == []


def test_allow_all_egress_reaches_metadata():
    found = findings(policy("\n  - {}") + CLUSTER, "ipblock-metadata-reachable")
    assert [f.path for f in found] == ["spec.egress[0]"]
    fix = yaml.safe_load(found[0].fix)
    assert {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]}} in fix["to"]


def test_deliberate_metadata_grant_and_ignored_egress_are_not_reported():
    deliberate = policy("\n  - to: [{ipBlock: {cidr: 169.254.169.254/32}}]\n    ports: [{port: 80}]")
    assert findings(deliberate + CLUSTER, "ipblock-metadata-reachable") == []
    # policyTypes [Ingress]: the egress rules have no effect (another rule's finding).
    ignored = policy("\n  - to: [{ipBlock: {cidr: 0.0.0.0/0}}]", types="[Ingress]")
    assert findings(ignored + CLUSTER, "ipblock-metadata-reachable") == []


# --- ipblock-targets-cluster --------------------------------------------------------------------------

def test_block_naming_a_pod_ip_suggests_selecting_the_pod():
    p = policy("\n  - to: [{ipBlock: {cidr: 10.244.1.17/32}}]\n    ports: [{port: 5432}]")
    found = findings(p + CLUSTER + DB_POD, "ipblock-targets-cluster")
    assert [f.path for f in found] == ["spec.egress[0].to[0].ipBlock"]
    assert "shop/db-0 (10.244.1.17)" in found[0].message
    assert yaml.safe_load(found[0].fix) == {"to": [{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "shop"}},
        "podSelector": {"matchLabels": {"app": "db", "tier": "data"}}}]}
    # An except that carves the pod out leaves nothing to report.
    carved = policy("\n  - to: [{ipBlock: {cidr: 10.244.1.0/24, except: [10.244.1.16/28]}}]")
    assert findings(carved + CLUSTER + DB_POD, "ipblock-targets-cluster") == []


def test_ingress_from_a_pod_ipv6_address():
    p = policy(ingress="\n  - from: [{ipBlock: {cidr: \"fd00:10:244:1::/64\"}}]", types="[Ingress, Egress]")
    found = findings(p + CLUSTER + DB_POD, "ipblock-targets-cluster")
    assert [f.path for f in found] == ["spec.ingress[0].from[0].ipBlock"]
    assert found[0].fix.startswith("from:")


def test_configured_pod_and_service_networks():
    cfg = from_dict({"cluster": {"podCIDRs": ["10.244.0.0/16"], "serviceCIDRs": ["10.96.0.0/12"]}})
    inside_pods = policy("\n  - to: [{ipBlock: {cidr: 10.244.3.0/24}}]")
    found = findings(inside_pods + CLUSTER, "ipblock-targets-cluster", cfg)
    assert len(found) == 1 and "inside the pod network 10.244.0.0/16" in found[0].message
    inside_services = policy("\n  - to: [{ipBlock: {cidr: 10.96.0.10/32}}]\n    ports: [{port: 53, protocol: UDP}]")
    found = findings(inside_services + CLUSTER, "ipblock-targets-cluster", cfg)
    assert len(found) == 1 and "service network 10.96.0.0/12" in found[0].message
    # Without the configuration nothing tells these addresses apart from external ones.
    assert findings(inside_pods + CLUSTER, "ipblock-targets-cluster") == []


def test_block_containing_the_whole_pod_network_gets_an_except_fix():
    cfg = from_dict({"cluster": {"podCIDRs": ["10.244.0.0/16"]}})
    corporate = policy("\n  - to: [{ipBlock: {cidr: 10.0.0.0/8}}]\n    ports: [{port: 443}]")
    found = findings(corporate + CLUSTER, "ipblock-targets-cluster", cfg)
    assert yaml.safe_load(found[0].fix) == {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.244.0.0/16"]}}
    excepted = policy("\n  - to: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.244.0.0/16]}}]\n    ports: [{port: 443}]")
    assert findings(excepted + CLUSTER, "ipblock-targets-cluster", cfg) == []


def test_service_cluster_ip_suggests_the_services_pods():
    svc = """
---
apiVersion: v1
kind: Service
metadata: {name: api-internal, namespace: shop}
spec:
  selector: {app: api}
  clusterIP: 10.96.12.40
  ports: [{port: 80, targetPort: 8080}]
"""
    p = policy("\n  - to: [{ipBlock: {cidr: 10.96.12.40/32}}]\n    ports: [{port: 80}]")
    found = findings(p + CLUSTER + svc, "ipblock-targets-cluster")
    assert "Service shop/api-internal" in found[0].message
    assert yaml.safe_load(found[0].fix)["to"][0]["podSelector"] == {"matchLabels": {"app": "api"}}


def test_anywhere_and_external_blocks_are_not_cluster_targets():
    cfg = from_dict({"cluster": {"podCIDRs": ["10.244.0.0/16"]}})
    p = policy("\n  - to: [{ipBlock: {cidr: 0.0.0.0/0}}, {ipBlock: {cidr: \"::/0\"}}, {ipBlock: {cidr: 203.0.113.0/24}}]")
    assert findings(p + CLUSTER + DB_POD, "ipblock-targets-cluster", cfg) == []


# --- ipblock-single-family ----------------------------------------------------------------------------

def test_ipv4_anywhere_without_ipv6_per_rule():
    p = policy("""
  - to: [{ipBlock: {cidr: 0.0.0.0/0, except: [169.254.169.254/32]}}]
    ports: [{port: 443}]""")
    found = findings(p + CLUSTER, "ipblock-single-family")
    assert [f.path for f in found] == ["spec.egress[0].to[0].ipBlock"] and found[0].severity == "info"
    assert yaml.safe_load(found[0].fix) == [{"ipBlock": {"cidr": "::/0", "except": ["fd00:ec2::254/128"]}}]
    # The families in different rules with different ports do not complete each other.
    split = policy("""
  - to: [{ipBlock: {cidr: 0.0.0.0/0}}]
    ports: [{port: 443}]
  - to: [{ipBlock: {cidr: "::/0"}}]
    ports: [{port: 22}]""")
    assert sorted(f.path for f in findings(split + CLUSTER, "ipblock-single-family")) == [
        "spec.egress[0].to[0].ipBlock", "spec.egress[1].to[0].ipBlock"]


def test_ipv6_only_ingress_and_both_families_clean():
    v6 = policy(ingress="\n  - from: [{ipBlock: {cidr: \"::/0\"}}]", types="[Ingress, Egress]")
    found = findings(v6 + CLUSTER, "ipblock-single-family")
    assert [f.path for f in found] == ["spec.ingress[0].from[0].ipBlock"]
    assert yaml.safe_load(found[0].fix) == [{"ipBlock": {"cidr": "0.0.0.0/0"}}]
    both = policy("\n  - to: [{ipBlock: {cidr: 0.0.0.0/0}}, {ipBlock: {cidr: \"::/0\"}}]\n    ports: [{port: 443}]")
    assert findings(both + CLUSTER, "ipblock-single-family") == []


def test_only_short_cidr_texts_are_kept():
    from webhook.policy.parse import _parse_cidr, parse_cidr
    held = _parse_cidr.cache_info().currsize
    assert parse_cidr("10.0.0.0/8" + " " * 1_000_000) is None  # not a CIDR, and not kept
    assert _parse_cidr.cache_info().currsize == held
