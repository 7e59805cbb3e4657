"""AdminNetworkPolicy and BaselineAdminNetworkPolicy precedence, against a written truth table.

One small cluster, NetworkPolicies, admin policies, and a table of flows with the answer a
network plugin implementing policy.networking.k8s.io/v1alpha1 gives, the tier and rule that
decide it, and the precedence rule each row exercises. Expected values were worked out by hand
from the manifests below, following the API's documentation (priorities: lower number first;
rules in written order; Allow and Deny final; Pass to NetworkPolicies; the baseline only for
pods no NetworkPolicy isolates), not by running the engine.

Pods (all with IPs):
  prod     (env=prod)      web  app=web   10.0.1.1  http=8080
                           api  app=api   10.0.1.2  http=9000 metrics=9090 dns-ish=5353/UDP
                           db   app=db    10.0.1.3  pg=5432
  staging  (env=staging)   tool app=tool  10.0.2.1
                           box  app=box   10.0.2.2  9000
  monitor  (team=obs)      prom app=prom  10.0.3.1
  prod has NetworkPolicies; staging and monitor have none.
"""
from __future__ import annotations

import pytest

from webhook.cluster.files import add_to_view, parse_text
from webhook.cluster.objects import Pod
from webhook.cluster.view import ClusterView
from webhook.policy.engine import Endpoint, Engine
from webhook.policy.parse import parse_policy
from webhook.policy.parse_admin import parse_admin_policy

CLUSTER = """
apiVersion: v1
kind: Namespace
metadata: {name: prod, labels: {env: prod}}
---
apiVersion: v1
kind: Namespace
metadata: {name: staging, labels: {env: staging}}
---
apiVersion: v1
kind: Namespace
metadata: {name: monitor, labels: {team: obs}}
---
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Pod, metadata: {name: web, namespace: prod, labels: {app: web}},
   spec: {containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}, status: {podIP: 10.0.1.1}}
- {apiVersion: v1, kind: Pod, metadata: {name: api, namespace: prod, labels: {app: api}},
   spec: {containers: [{name: c, ports: [{name: http, containerPort: 9000}, {name: metrics, containerPort: 9090},
                                         {name: dns-ish, containerPort: 5353, protocol: UDP}]}]},
   status: {podIP: 10.0.1.2}}
- {apiVersion: v1, kind: Pod, metadata: {name: db, namespace: prod, labels: {app: db}},
   spec: {containers: [{name: c, ports: [{name: pg, containerPort: 5432}]}]}, status: {podIP: 10.0.1.3}}
- {apiVersion: v1, kind: Pod, metadata: {name: tool, namespace: staging, labels: {app: tool}},
   spec: {containers: [{name: c}]}, status: {podIP: 10.0.2.1}}
- {apiVersion: v1, kind: Pod, metadata: {name: box, namespace: staging, labels: {app: box}},
   spec: {containers: [{name: c, ports: [{containerPort: 9000}]}]}, status: {podIP: 10.0.2.2}}
- {apiVersion: v1, kind: Pod, metadata: {name: prom, namespace: monitor, labels: {app: prom}},
   spec: {containers: [{name: c}]}, status: {podIP: 10.0.3.1}}
"""

NETWORK_POLICIES = """
# prod: every pod isolated both ways; web -> api 9000 and api -> db 5432 allowed.
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny, namespace: prod}
spec: {podSelector: {}, policyTypes: [Ingress, Egress]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-to-api, namespace: prod}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress: [{to: [{podSelector: {matchLabels: {app: api}}}], ports: [{port: 9000}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-from-web, namespace: prod}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress: [{from: [{podSelector: {matchLabels: {app: web}}}], ports: [{port: 9000}]}]
  egress: [{to: [{podSelector: {matchLabels: {app: db}}}], ports: [{port: 5432}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-api, namespace: prod}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress: [{from: [{podSelector: {matchLabels: {app: api}}}], ports: [{port: 5432}]}]
"""

ADMIN = """
# Written out of priority order (and with names that sort against it) on purpose.
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: a-late-allow-staging}
spec:
  priority: 50
  subject: {namespaces: {matchLabels: {env: prod}}}
  ingress:
  - {name: allow-staging-to-prod, action: Allow, from: [{namespaces: {matchLabels: {env: staging}}}]}
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: z-early-deny-tool}
spec:
  priority: 10
  subject: {pods: {namespaceSelector: {matchLabels: {env: prod}}, podSelector: {matchLabels: {app: db}}}}
  ingress:
  - name: deny-tool-to-db
    action: Deny
    from: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: tool}}}}]
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: monitoring}
spec:
  priority: 20
  subject: {namespaces: {}}
  ingress:
  # rule order: the metrics Allow comes before the blanket Deny from monitor
  - {name: allow-metrics, action: Allow, from: [{namespaces: {matchLabels: {team: obs}}}], ports: [{namedPort: metrics}]}
  - {name: deny-rest, action: Deny, from: [{namespaces: {matchLabels: {team: obs}}}]}
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: prod-internal}
spec:
  priority: 30
  subject: {namespaces: {matchLabels: {env: prod}}}
  ingress:
  # web -> api is the app team's decision; web -> db too (and their policies deny it)
  - {name: pass-web, action: Pass, from: [{pods: {namespaceSelector: {matchLabels: {env: prod}}, podSelector: {matchLabels: {app: web}}}}]}
  # everything else inside prod on the api's ports: denied, whatever a NetworkPolicy says
  - name: deny-api-ports
    action: Deny
    from: [{namespaces: {matchLabels: {env: prod}}}]
    ports: [{portNumber: {port: 9000}}, {portRange: {protocol: UDP, start: 5000, end: 5353}}]
  egress:
  # prod may reach the staging box on 9000 only (TCP), though prod's NetworkPolicies deny all egress
  - {name: allow-box, action: Allow, to: [{pods: {namespaceSelector: {matchLabels: {env: staging}}, podSelector: {matchLabels: {app: box}}}}],
     ports: [{portNumber: {protocol: TCP, port: 9000}}]}
  # no prod pod reaches the metadata service or the documentation range
  - {name: deny-external, action: Deny, to: [{networks: [169.254.169.254/32, 203.0.113.0/24]}]}
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: staging-pass}
spec:
  priority: 40
  subject: {namespaces: {matchLabels: {env: staging}}}
  ingress:
  - {name: pass-from-staging, action: Pass, from: [{namespaces: {matchLabels: {env: staging}}}]}
  egress:
  - {name: deny-to-prod-network, action: Deny, to: [{networks: [10.0.1.0/24]}], ports: [{portNumber: {protocol: UDP, port: 8080}}]}
  - {name: maybe-a-node, action: Deny, to: [{nodes: {matchLabels: {role: infra}}}]}
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: BaselineAdminNetworkPolicy
metadata: {name: default}
spec:
  subject: {namespaces: {matchExpressions: [{key: env, operator: In, values: [staging, prod]}]}}
  ingress:
  - {name: allow-from-monitor, action: Allow, from: [{namespaces: {matchLabels: {team: obs}}}]}
  - {name: deny-cluster, action: Deny, from: [{namespaces: {}}]}
"""


def _docs(text: str):
    return parse_text(text, "<table>")


@pytest.fixture(scope="module")
def engine() -> Engine:
    view = ClusterView()
    for doc in _docs(CLUSTER):
        add_to_view(view, doc)
    for doc in _docs(NETWORK_POLICIES):
        result = parse_policy(doc.obj)
        assert result.ok, result.errors
        view.upsert_policy(result.policy)
    for doc in _docs(ADMIN):
        result = parse_admin_policy(doc.obj)
        assert result.ok, result.errors
        view.upsert_admin_policy(result.policy)
    return Engine(view)


def endpoint(engine: Engine, ref: str) -> Endpoint:
    if "/" not in ref:
        return Endpoint.of_ip(ref)
    ns, name = ref.split("/")
    pod = engine.view.find_pod(ns, name)
    assert pod is not None, ref
    return Endpoint.of_pod(pod)


# (from, to, port, protocol, allowed, side whose explanation names the decider ("" = either),
#  what decides it, precedence rule exercised)
TABLE = [
    # --- admin Allow and Deny are final; priorities; rule order ----------------------------
    ("staging/tool", "prod/web", 8080, "TCP", True, "ingress", "allowed by AdminNetworkPolicy a-late-allow-staging",
     "ANP Allow beats NetworkPolicy deny (prod/web is isolated, no rule of prod's admits staging)"),
    ("staging/tool", "prod/db", 5432, "TCP", False, "ingress", "denied by AdminNetworkPolicy z-early-deny-tool",
     "priority 10 Deny beats priority 50 Allow: lower number first, whatever the names' order"),
    ("staging/box", "prod/db", 5432, "TCP", True, "ingress", "allowed by AdminNetworkPolicy a-late-allow-staging",
     "the priority-10 Deny names only tool (subject and peer are pods selectors); priority 50 then decides"),
    ("prod/db", "prod/api", 9000, "TCP", False, "ingress", "denied by AdminNetworkPolicy prod-internal",
     "rule order: the Pass names web, not db; the next rule (Deny on 9000) matches"),
    ("monitor/prom", "prod/api", 9000, "TCP", False, "ingress", "denied by AdminNetworkPolicy monitoring",
     "ANP Deny: rule 0 (Allow, named port metrics) does not match 9000, rule 1 (Deny) does"),
    ("monitor/prom", "prod/api", 9090, "TCP", True, "ingress", "allowed by AdminNetworkPolicy monitoring",
     "rule order + named port: metrics is 9090 on api; the Allow comes before the Deny and beats default-deny"),
    ("monitor/prom", "prod/web", 9090, "TCP", False, "ingress", "denied by AdminNetworkPolicy monitoring",
     "a named port resolves per destination: web declares no metrics port, so rule 1 (Deny) decides"),
    # --- Pass hands over to NetworkPolicies -----------------------------------------------
    ("prod/web", "prod/api", 9000, "TCP", True, "ingress", "prod/api-from-web spec.ingress[0]",
     "Pass, then the NetworkPolicies allow (the Deny on 9000 after the Pass is skipped)"),
    ("prod/web", "prod/api", 5353, "UDP", False, "ingress", "passed by AdminNetworkPolicy prod-internal",
     "Pass, then the NetworkPolicies deny (they allow 9000/TCP only)"),
    ("prod/web", "prod/db", 5432, "TCP", False, "egress", "prod/default-deny",
     "ingress passed to NetworkPolicies; prod's egress NetworkPolicies deny web -> db"),
    ("prod/api", "prod/db", 5432, "TCP", True, "ingress", "allowed by prod/db-from-api spec.ingress[0]",
     "no admin rule matches; a NetworkPolicy isolates db and allows api, so the baseline's Deny is not consulted"),
    # --- ports ----------------------------------------------------------------------------
    ("prod/db", "prod/api", 5353, "UDP", False, "ingress", "denied by AdminNetworkPolicy prod-internal",
     "portRange end is inclusive (5353/UDP)"),
    ("prod/db", "prod/api", 5000, "UDP", False, "ingress", "denied by AdminNetworkPolicy prod-internal",
     "portRange start is inclusive"),
    ("prod/db", "prod/api", 5354, "UDP", False, "ingress", "isolated by prod/api-from-web",
     "past the range: no admin rule matches; prod's NetworkPolicies deny db -> api"),
    ("prod/db", "prod/api", 5353, "TCP", False, "ingress", "isolated by prod/api-from-web",
     "the range is UDP: 5353/TCP is not in it; NetworkPolicies deny"),
    ("prod/web", "staging/box", 9000, "TCP", False, "egress", "allowed by AdminNetworkPolicy prod-internal",
     "egress ANP Allow beats prod's default-deny egress, yet the destination's side (baseline Deny) still applies"),
    ("prod/web", "staging/box", 9000, "UDP", False, "egress", "prod/default-deny",
     "portNumber's protocol (TCP) must match: 9000/UDP falls to prod's NetworkPolicies"),
    # --- the baseline, for pods no NetworkPolicy isolates -----------------------------------
    ("staging/tool", "staging/box", 9000, "TCP", False, "ingress", "denied by BaselineAdminNetworkPolicy default",
     "Pass with no NetworkPolicy isolating staging/box: the baseline's deny-cluster decides"),
    ("monitor/prom", "staging/box", 9000, "TCP", False, "ingress", "denied by AdminNetworkPolicy monitoring",
     "the admin tier (Deny, priority 20) comes before the baseline's Allow for monitor"),
    ("prod/api", "monitor/prom", 80, "TCP", False, "egress", "prod/default-deny",
     "prod's egress is isolated; monitor is no baseline subject and has no NetworkPolicy (ingress allowed)"),
    ("192.0.2.7", "staging/box", 9000, "TCP", True, "ingress", "no admin or baseline rule matches",
     "`namespaces: {}` selects every pod, not addresses outside the cluster: the baseline does not match"),
    # --- networks match pod IPs too; what the view cannot decide ---------------------------
    ("staging/tool", "prod/web", 8080, "UDP", False, "egress", "denied by AdminNetworkPolicy staging-pass",
     "a networks peer (10.0.1.0/24) matches the pod IP of prod/web: pod-to-pod traffic is checked against it"),
    ("prod/web", "169.254.169.254", 80, "TCP", False, "egress", "denied by AdminNetworkPolicy prod-internal",
     "networks Deny to an address outside the cluster; the admin tier decides before NetworkPolicies"),
    ("staging/tool", "192.0.2.7", 443, "TCP", True, "egress", "nodes, Deny) may match",
     "a nodes peer against an address outside the cluster: the view holds no Nodes - allowed, with a caveat"),
]


@pytest.mark.parametrize("src,dst,port,proto,allowed,side,decider,why", TABLE,
                         ids=[f"{r[0]}->{r[1]}:{r[2]}/{r[3]}" for r in TABLE])
def test_admin_precedence(engine, src, dst, port, proto, allowed, side, decider, why):
    v = engine.evaluate(endpoint(engine, src), endpoint(engine, dst), port, proto)
    assert v.allowed == allowed, f"{why}\n{v.explain()}"
    text = v.explain() if not side else (v.egress if side == "egress" else v.ingress).explain()
    assert decider in text, f"{why}: expected {decider!r} in\n{text}"


def test_a_side_names_its_tier_and_rule_in_json(engine):
    v = engine.evaluate(endpoint(engine, "monitor/prom"), endpoint(engine, "prod/api"), 9090, "TCP").to_dict()
    assert v["allowed"] is True
    assert v["ingress"]["tier"] == "admin"
    assert v["ingress"]["adminRule"] == {"kind": "AdminNetworkPolicy", "name": "monitoring", "tier": "admin",
                                         "action": "Allow", "rule": 0, "ruleName": "allow-metrics",
                                         "path": "spec.ingress[0].from[0]", "priority": 20}
    assert v["egress"]["tier"] == "default" and v["egress"]["caveats"] == []
    passed = engine.evaluate(endpoint(engine, "staging/tool"), endpoint(engine, "staging/box"), 9000).to_dict()
    assert passed["ingress"]["tier"] == "baseline"
    assert passed["ingress"]["passedBy"]["name"] == "staging-pass"
    assert passed["ingress"]["baselineRule"]["ruleName"] == "deny-cluster"


def _engine_of(*texts: str) -> Engine:
    view = ClusterView()
    for doc in _docs(CLUSTER):
        add_to_view(view, doc)
    for text in texts:
        for doc in _docs(text):
            admin = doc.kind != "NetworkPolicy"
            result = parse_admin_policy(doc.obj) if admin else parse_policy(doc.obj)
            assert result.ok, result.errors
            (view.upsert_admin_policy if admin else view.upsert_policy)(result.policy)
    return Engine(view)


def _anp(name: str, priority: int, action: str, ports: str = "") -> str:
    return f"""
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {{name: {name}}}
spec:
  priority: {priority}
  subject: {{namespaces: {{matchLabels: {{env: staging}}}}}}
  ingress:
  - {{action: {action}, from: [{{namespaces: {{}}}}]{ports}}}
"""


def test_equal_priorities_that_disagree_are_called_out():
    e = _engine_of(_anp("b-deny", 7, "Deny") + "---" + _anp("a-allow", 7, "Allow"))
    v = e.evaluate(endpoint(e, "prod/web"), endpoint(e, "staging/box"), 9000)
    # by name, a-allow comes first; the plugin may pick either, and the answer says so
    assert v.allowed and "AdminNetworkPolicy a-allow" in v.ingress.explain()
    assert any("b-deny" in c and "equal priority" in c for c in v.ingress.caveats), v.ingress.caveats
    agree = _engine_of(_anp("b-deny", 7, "Allow") + "---" + _anp("a-allow", 7, "Allow"))
    assert agree.evaluate(endpoint(agree, "prod/web"), endpoint(agree, "staging/box"), 9000).ingress.caveats == ()


def test_priority_order_is_numeric_not_textual():
    # "9" sorts after "10" as text; as numbers 9 comes first
    e = _engine_of(_anp("x", 9, "Deny") + "---" + _anp("y", 10, "Allow"))
    assert not e.evaluate(endpoint(e, "prod/web"), endpoint(e, "staging/box"), 9000).allowed
    e = _engine_of(_anp("x", 11, "Deny") + "---" + _anp("y", 10, "Allow"))
    assert e.evaluate(endpoint(e, "prod/web"), endpoint(e, "staging/box"), 9000).allowed


def test_a_networks_peer_against_a_pod_of_unknown_ip_is_a_caveat_not_a_guess():
    deny_all = """
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: deny-ipv4}
spec:
  priority: 1
  subject: {namespaces: {}}
  egress:
  - {name: everything-v4, action: Deny, to: [{networks: [0.0.0.0/0]}]}
"""
    e = _engine_of(deny_all)
    template = Endpoint.of_pod(Pod("staging", "worker", {"app": "worker"}, kind="Deployment"))
    v = e.evaluate(endpoint(e, "staging/tool"), template, 80)
    assert v.allowed  # assumed not to match ...
    assert any("deny-ipv4" in c and "is not known" in c for c in v.egress.caveats), v.egress.caveats  # ... said
    # with the pod's IP known, it matches: pod-to-pod traffic is checked against networks
    assert not e.evaluate(endpoint(e, "staging/tool"), endpoint(e, "staging/box"), 80).allowed


def test_ports_restrict_an_admin_rule_and_their_absence_matches_every_port():
    e = _engine_of(_anp("deny-80", 5, "Deny", ", ports: [{portNumber: {port: 80}}]"))
    assert not e.evaluate(endpoint(e, "prod/web"), endpoint(e, "staging/box"), 80).allowed
    assert e.evaluate(endpoint(e, "prod/web"), endpoint(e, "staging/box"), 81).allowed
    e = _engine_of(_anp("deny-all-ports", 5, "Deny"))
    assert not any(e.evaluate(endpoint(e, "prod/web"), endpoint(e, "staging/box"), p, proto).allowed
                   for p, proto in ((1, "TCP"), (53, "UDP"), (3868, "SCTP")))


def test_a_policy_without_rules_for_a_direction_leaves_it_alone():
    only_egress = """
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: egress-only}
spec:
  priority: 1
  subject: {namespaces: {}}
  egress:
  - {action: Pass, to: [{namespaces: {}}]}
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: BaselineAdminNetworkPolicy
metadata: {name: default}
spec:
  subject: {namespaces: {}}
  ingress:
  - {action: Deny, from: [{namespaces: {}}]}
"""
    e = _engine_of(only_egress)
    v = e.evaluate(endpoint(e, "staging/tool"), endpoint(e, "staging/box"), 9000)
    assert v.egress.passed is not None and v.egress.tier == "default"
    assert v.ingress.passed is None and v.ingress.tier == "baseline" and not v.allowed


CLUSTER_NETWORK_POLICIES = """
# v1alpha2: one kind for both tiers; Accept for Allow; baseline-tier policies have priorities
# and may Pass (to the default: allowed).
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: admin-accept-obs}
spec:
  tier: Admin
  priority: 3
  subject: {namespaces: {matchLabels: {env: prod}}}
  ingress:
  - {name: obs-metrics, action: Accept, from: [{namespaces: {matchLabels: {team: obs}}}],
     protocols: [{tcp: {destinationPort: {number: 9090}}}]}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: baseline-late}
spec:
  tier: Baseline
  priority: 20
  subject: {namespaces: {matchLabels: {env: staging}}}
  ingress:
  - {name: deny-all, action: Deny, from: [{namespaces: {}}]}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: baseline-early}
spec:
  tier: Baseline
  priority: 10
  subject: {pods: {podSelector: {matchLabels: {app: box}}}}
  ingress:
  - {name: pass-prod, action: Pass, from: [{namespaces: {matchLabels: {env: prod}}}]}
  - {name: accept-udp-range, action: Accept, from: [{namespaces: {}}],
     protocols: [{udp: {destinationPort: {range: {start: 9000, end: 9001}}}}]}
"""


CNP_TABLE = [
    ("monitor/prom", "prod/api", 9090, "TCP", True, "allowed by ClusterNetworkPolicy admin-accept-obs (admin tier, priority 3)",
     "Accept in the admin tier is final, like Allow: prod's default-deny is not consulted"),
    ("monitor/prom", "prod/api", 9091, "TCP", False, "isolated by prod/api-from-web",
     "protocols restrict the Accept to 9090/TCP; NetworkPolicies decide the rest"),
    ("staging/tool", "staging/box", 9000, "TCP", False, "denied by ClusterNetworkPolicy baseline-late (baseline tier, priority 20)",
     "baseline tier by priority: priority 10 has no match (UDP range, peer prod), priority 20 denies"),
    ("staging/tool", "staging/box", 9001, "UDP", True, "allowed by ClusterNetworkPolicy baseline-early (baseline tier, priority 10)",
     "the range is inclusive, and priority 10 comes before priority 20 in the baseline tier"),
]


def test_cluster_network_policy_tiers():
    e = _engine_of(NETWORK_POLICIES, CLUSTER_NETWORK_POLICIES)
    for src, dst, port, proto, allowed, decider, why in CNP_TABLE:
        v = e.evaluate(endpoint(e, src), endpoint(e, dst), port, proto)
        assert v.allowed == allowed, f"{why}\n{v.explain()}"
        assert decider in v.ingress.explain(), f"{why}: {decider!r} not in\n{v.ingress.explain()}"
    # a baseline-tier Pass ends the baseline tier: the default applies (allowed), though a
    # later baseline policy (baseline-late) would deny
    v = e.evaluate(endpoint(e, "prod/web"), endpoint(e, "staging/box"), 9000)
    assert v.ingress.allowed and v.ingress.baseline.action == "Pass", v.ingress.explain()
    assert "passed by ClusterNetworkPolicy baseline-early (baseline tier, priority 10)" in v.ingress.explain()
    assert not v.allowed and v.egress.tier == "networkpolicy"  # prod/web's own egress policies deny it
