"""The connectivity engine against a written truth table.

One realistic cluster (below) and a table of flows, each with the answer Kubernetes gives
and the semantics rule from design.md it exercises. Every rule of "NetworkPolicy semantics
the core must get right" has at least one row; the expected values were worked out by hand
from the policies, not by running the engine.

Pods (all real Pod objects with IPs):
  kube-system  coredns   k8s-app=kube-dns           10.244.0.10  dns=53/UDP dns-tcp=53/TCP
  prod         web       app=web,tier=frontend      10.244.1.1   http=8080
  (env=prod,   api       app=api,tier=backend       10.244.1.2   http=9000 metrics=9090 grpc=50051
   team=       db        app=db,tier=data           10.244.1.3   pg=5432
   payments)   signal    app=signal,tier=backend    10.244.1.4   diameter=3868/SCTP
               batch     app=batch (no tier)        10.244.1.5
               open      app=open                   10.244.1.6   8000
               legacy    app=legacy                 10.244.1.7   8080
  staging      web       app=web                    10.244.2.1   http=8080
  (env=staging,tool      app=tool                   10.244.2.2
   team=       scanner   app=scanner                10.244.2.3
   payments)
  monitoring   prometheus app=prometheus            10.244.3.1   web=9090
  (team=observability)
Note `http` is 8080 on web and 9000 on api: named ports resolve per destination pod.
"""
from __future__ import annotations

import pytest

from webhook.cluster.files import add_to_view, parse_text
from webhook.cluster.view import ClusterView
from webhook.policy.engine import Endpoint, Engine
from webhook.policy.parse import parse_policy

CLUSTER = """
apiVersion: v1
kind: Namespace
metadata: {name: kube-system}
---
apiVersion: v1
kind: Namespace
metadata: {name: prod, labels: {env: prod, team: payments}}
---
apiVersion: v1
kind: Namespace
metadata: {name: staging, labels: {env: staging, team: payments}}
---
apiVersion: v1
kind: Namespace
metadata: {name: monitoring, labels: {team: observability}}
---
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Pod, metadata: {name: coredns, namespace: kube-system, labels: {k8s-app: kube-dns}},
   spec: {containers: [{name: c, ports: [{name: dns, containerPort: 53, protocol: UDP},
                                         {name: dns-tcp, containerPort: 53, protocol: TCP}]}]},
   status: {podIP: 10.244.0.10}}
- {apiVersion: v1, kind: Pod, metadata: {name: web, namespace: prod, labels: {app: web, tier: frontend}},
   spec: {containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}, status: {podIP: 10.244.1.1}}
- {apiVersion: v1, kind: Pod, metadata: {name: api, namespace: prod, labels: {app: api, tier: backend}},
   spec: {containers: [{name: c, ports: [{name: http, containerPort: 9000}, {name: metrics, containerPort: 9090},
                                         {name: grpc, containerPort: 50051}]}]}, status: {podIP: 10.244.1.2}}
- {apiVersion: v1, kind: Pod, metadata: {name: db, namespace: prod, labels: {app: db, tier: data}},
   spec: {containers: [{name: c, ports: [{name: pg, containerPort: 5432}]}]}, status: {podIP: 10.244.1.3}}
- {apiVersion: v1, kind: Pod, metadata: {name: signal, namespace: prod, labels: {app: signal, tier: backend}},
   spec: {containers: [{name: c, ports: [{name: diameter, containerPort: 3868, protocol: SCTP}]}]},
   status: {podIP: 10.244.1.4}}
- {apiVersion: v1, kind: Pod, metadata: {name: batch, namespace: prod, labels: {app: batch}},
   spec: {containers: [{name: c}]}, status: {podIP: 10.244.1.5}}
- {apiVersion: v1, kind: Pod, metadata: {name: open, namespace: prod, labels: {app: open}},
   spec: {containers: [{name: c, ports: [{containerPort: 8000}]}]}, status: {podIP: 10.244.1.6}}
- {apiVersion: v1, kind: Pod, metadata: {name: legacy, namespace: prod, labels: {app: legacy}},
   spec: {containers: [{name: c, ports: [{containerPort: 8080}]}]}, status: {podIP: 10.244.1.7}}
- {apiVersion: v1, kind: Pod, metadata: {name: web, namespace: staging, labels: {app: web}},
   spec: {containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}, status: {podIP: 10.244.2.1}}
- {apiVersion: v1, kind: Pod, metadata: {name: tool, namespace: staging, labels: {app: tool}},
   spec: {containers: [{name: c}]}, status: {podIP: 10.244.2.2}}
- {apiVersion: v1, kind: Pod, metadata: {name: scanner, namespace: staging, labels: {app: scanner}},
   spec: {containers: [{name: c}]}, status: {podIP: 10.244.2.3}}
- {apiVersion: v1, kind: Pod, metadata: {name: prometheus, namespace: monitoring, labels: {app: prometheus}},
   spec: {containers: [{name: c, ports: [{name: web, containerPort: 9090}]}]}, status: {podIP: 10.244.3.1}}
"""

POLICIES = """
# api: two policies select it; the union of their rules applies.
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-from-web, namespace: prod}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: web}}}]   # podSelector only: prod pods only
    ports: [{port: http}]                               # api's http = 9000, TCP by default
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-from-monitoring, namespace: prod}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {team: observability}}}]  # every pod there
    ports: [{port: metrics}]
---
# policyTypes omitted + egress present => [Ingress, Egress]
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-egress, namespace: prod}
spec:
  podSelector: {matchLabels: {app: api}}
  egress:
  - to: [{podSelector: {matchLabels: {app: db}}}]
    ports: [{port: pg}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-ingress, namespace: prod}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from:
    - podSelector: {matchLabels: {app: api}}                      # OR
    - namespaceSelector: {matchLabels: {env: staging}}            # this peer: AND
      podSelector: {matchLabels: {app: tool}}
    ports: [{port: 5432}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-no-egress, namespace: prod}
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Egress]                                           # no egress rules: deny all
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-ingress-all, namespace: prod}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{}]                                                   # no from, no ports: everything
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: signal-ingress, namespace: prod}
spec:
  podSelector: {matchLabels: {app: signal}}
  ingress:
  - from: []                                                      # empty list: every peer
    ports: [{port: 3868, protocol: SCTP}]
  - from: [{podSelector: {matchLabels: {app: open}}}]
    ports: []                                                     # empty list: every port
---
# batch: policyTypes omitted, egress present => Ingress too, and no ingress rules: deny all in.
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: batch, namespace: prod}
spec:
  podSelector: {matchLabels: {app: batch}}
  egress:
  - to: [{ipBlock: {cidr: 203.0.113.0/24, except: [203.0.113.99/32]}}]
    ports: [{port: 443}]
  - to: [{namespaceSelector: {}, podSelector: {matchLabels: {k8s-app: kube-dns}}}]
    ports: [{port: dns, protocol: UDP}]                           # named, resolved per protocol
  - to: [{podSelector: {}}]
    ports: [{port: 5000, endPort: 8100}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: legacy, namespace: prod}
spec:
  podSelector:
    matchExpressions: [{key: app, operator: In, values: [legacy, old]}]
  ingress:
  - from:
    - podSelector:
        matchExpressions:
        - {key: tier, operator: NotIn, values: [frontend]}        # a missing key satisfies NotIn
        - {key: app, operator: Exists}
  - from: [{namespaceSelector: {matchExpressions: [{key: env, operator: DoesNotExist}]}}]
    ports: [{port: 8080}]
  - from: [{ipBlock: {cidr: 198.51.100.0/24}}]
---
# staging/web: policyTypes [Ingress] with an egress section: the egress rules are ignored.
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-ingress-only, namespace: staging}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress]
  ingress: [{}]
  egress:
  - to: [{podSelector: {matchLabels: {app: nothing-has-this}}}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: scanner-egress, namespace: staging}
spec:
  podSelector: {matchLabels: {app: scanner}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 10.244.1.0/24}}]                        # prod's pod range
  - to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}}]
    ports: [{port: dns}]                                          # TCP by default; dns is UDP
---
# `ingress: []` with policyTypes omitted: Ingress only, and nothing is allowed in.
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny-ingress, namespace: monitoring}
spec:
  podSelector: {}
  ingress: []
"""

EXT = "203.0.113.10"

# (source, destination, port, protocol, expected, semantics rule, ipBlock-matches-pods switch)
FLOWS = [
    # isolation is per direction
    ("prod/batch", "prod/open", 8000, "TCP", True, "isolation per direction: open is selected by no policy", False),
    (EXT, "prod/open", 8000, "TCP", True, "external endpoint to a pod no policy isolates", False),
    ("prod/web", "prod/db", 5432, "TCP", False, "isolation per direction: web egress free, db ingress isolated", False),
    ("prod/web", "8.8.8.8", 443, "TCP", True, "isolation per direction: web is isolated for ingress only", False),
    # union of policies
    ("prod/web", "prod/api", 9000, "TCP", True, "union: api-from-web allows web on api's http", False),
    ("monitoring/prometheus", "prod/api", 9090, "TCP", True, "union: api-from-monitoring adds metrics", False),
    ("monitoring/prometheus", "prod/api", 9000, "TCP", False, "union: no policy of api's allows prometheus on 9000", False),
    ("prod/web", "prod/api", 50051, "TCP", False, "union: no policy allows grpc", False),
    # both ends needed
    ("prod/api", "prod/db", 5432, "TCP", True, "both ends: api egress and db ingress allow", False),
    ("prod/api", "prod/signal", 3868, "SCTP", False, "both ends: signal ingress allows, api egress does not", False),
    ("prod/batch", "prod/db", 5432, "TCP", False, "both ends: batch egress allows (range), db ingress does not", False),
    # peers: AND within one, OR across; podSelector-only = own namespace; namespaceSelector-only
    ("staging/tool", "prod/db", 5432, "TCP", True, "AND within a peer: staging namespace and app=tool", False),
    ("staging/web", "prod/db", 5432, "TCP", False, "AND within a peer: staging but not app=tool", False),
    ("staging/web", "prod/api", 9000, "TCP", False, "podSelector-only peer means the policy's own namespace", False),
    ("monitoring/prometheus", "prod/db", 5432, "TCP", False, "OR across peers: matches neither peer", False),
    ("staging/tool", "prod/api", 9090, "TCP", False, "namespaceSelector-only: staging lacks team=observability", False),
    # {} selectors
    ("prod/batch", "kube-system/coredns", 53, "UDP", True, "namespaceSelector {} selects every namespace", False),
    ("prod/batch", "prod/legacy", 8080, "TCP", True, "podSelector {} peer: every pod of the own namespace", False),
    ("prod/batch", "staging/web", 8080, "TCP", False, "podSelector {} peer stays in the own namespace", False),
    ("staging/tool", "monitoring/prometheus", 9090, "TCP", False, "spec.podSelector {} isolates every pod", False),
    # empty vs absent from/ports
    (EXT, "prod/web", 8080, "TCP", True, "rule without from/ports matches every peer and port", False),
    ("staging/tool", "prod/web", 1234, "UDP", True, "rule without ports matches every port and protocol", False),
    ("staging/tool", "prod/signal", 3868, "SCTP", True, "from: [] matches every peer", False),
    ("prod/open", "prod/signal", 9999, "TCP", True, "ports: [] matches every port", False),
    ("staging/tool", "prod/signal", 9999, "TCP", False, "ports: [] applies only to its own rule's peers", False),
    # ingress: [] / absent ingress denies all
    ("monitoring/prometheus", "monitoring/prometheus", 9090, "TCP", False, "ingress: [] denies all ingress", False),
    ("prod/open", "prod/batch", 8000, "TCP", False, "absent ingress (types defaulted) denies all ingress", False),
    # policyTypes defaulting
    ("monitoring/prometheus", "8.8.8.8", 443, "TCP", True, "policyTypes omitted, no egress: Ingress only", False),
    ("prod/api", "8.8.8.8", 443, "TCP", False, "policyTypes omitted, egress present: Egress too", False),
    ("prod/db", "kube-system/coredns", 53, "UDP", False, "policyTypes [Egress] without rules denies all egress", False),
    ("staging/web", "8.8.8.8", 443, "TCP", True, "policyTypes [Ingress]: the egress rules are ignored", False),
    ("staging/web", "prod/open", 8000, "TCP", True, "policyTypes [Ingress]: ignored egress isolates nothing", False),
    # protocol: TCP default, SCTP
    ("prod/web", "prod/api", 9000, "UDP", False, "port protocol defaults to TCP", False),
    ("prod/api", "prod/db", 5432, "UDP", False, "port protocol defaults to TCP (5432/UDP not allowed)", False),
    ("staging/tool", "prod/signal", 3868, "TCP", False, "SCTP rule does not allow TCP", False),
    ("prod/open", "prod/signal", 3868, "SCTP", True, "SCTP through an all-ports rule", False),
    # endPort ranges
    ("prod/batch", "prod/open", 8100, "TCP", True, "endPort: upper bound included", False),
    ("prod/batch", "prod/open", 5000, "TCP", True, "endPort: lower bound included", False),
    ("prod/batch", "prod/open", 8101, "TCP", False, "endPort: beyond the range", False),
    ("prod/batch", "prod/open", 4999, "TCP", False, "endPort: below the range", False),
    # named ports: per destination pod and protocol
    ("prod/web", "prod/api", 8080, "TCP", False, "named port http is 9000 on api (8080 is web's http)", False),
    ("prod/api", "prod/db", 5433, "TCP", False, "named port pg resolves to exactly 5432 on db", False),
    ("prod/batch", "kube-system/coredns", 53, "TCP", False, "named port dns/UDP does not match 53/TCP", False),
    ("staging/scanner", "kube-system/coredns", 53, "UDP", False, "port: dns defaults to TCP; coredns dns is UDP", False),
    ("staging/scanner", "kube-system/coredns", 53, "TCP", False, "no TCP port named dns on coredns", False),
    # ipBlock with except
    ("prod/batch", EXT, 443, "TCP", True, "ipBlock contains the address", False),
    ("prod/batch", "203.0.113.99", 443, "TCP", False, "ipBlock except removes the address", False),
    ("prod/batch", "198.51.100.1", 443, "TCP", False, "address outside the ipBlock", False),
    ("prod/batch", EXT, 80, "TCP", False, "ipBlock rule restricted to port 443", False),
    # ipBlock vs pod IPs
    ("staging/scanner", "prod/open", 8000, "TCP", False, "ipBlock does not match pod IPs by default", False),
    ("staging/scanner", "prod/open", 8000, "TCP", True, "ipBlock matches pod IPs with the switch on", True),
    ("staging/scanner", "10.244.1.77", 8000, "TCP", True, "ipBlock matches a non-pod address in its range", False),
    ("staging/scanner", "monitoring/prometheus", 9090, "TCP", False, "pod IP outside the block, switch on", True),
    # external endpoints into the cluster
    ("198.51.100.7", "prod/legacy", 8080, "TCP", True, "ingress ipBlock admits an external address", False),
    (EXT, "prod/legacy", 8080, "TCP", False, "external address outside every ipBlock", False),
    (EXT, "prod/api", 9000, "TCP", False, "selectors never match external addresses", False),
    # matchExpressions operators
    ("prod/open", "prod/legacy", 9999, "TCP", True, "NotIn matches a pod that lacks the key (and In selects legacy)", False),
    ("prod/signal", "prod/legacy", 9999, "TCP", True, "NotIn: key present with another value", False),
    ("prod/web", "prod/legacy", 9999, "TCP", False, "NotIn: key present with a listed value", False),
    ("monitoring/prometheus", "prod/legacy", 8080, "TCP", True, "DoesNotExist on a namespace label", False),
    ("staging/tool", "prod/legacy", 8080, "TCP", False, "DoesNotExist: staging carries env", False),
]


def _build() -> ClusterView:
    view = ClusterView()
    for doc in parse_text(CLUSTER, "cluster.yaml"):
        add_to_view(view, doc)
    for doc in parse_text(POLICIES, "policies.yaml"):
        result = parse_policy(doc.obj)
        assert result.ok, result.errors
        view.upsert_policy(result.policy)
    return view


VIEW = _build()
ENGINES = {False: Engine(VIEW), True: Engine(VIEW, ip_block_matches_pods=True)}


def _endpoint(text: str) -> Endpoint:
    if "/" in text:
        ns, name = text.split("/")
        pod = VIEW.find_pod(ns, name)
        assert pod is not None, text
        return Endpoint.of_pod(pod)
    return Endpoint.of_ip(text)


@pytest.mark.parametrize("src,dst,port,proto,expected,rule,switch", FLOWS,
                         ids=[f"{f[0]}->{f[1]}:{f[2]}/{f[3]}{'+switch' if f[6] else ''}" for f in FLOWS])
def test_flow(src, dst, port, proto, expected, rule, switch):
    verdict = ENGINES[switch].evaluate(_endpoint(src), _endpoint(dst), port, proto)
    assert verdict.allowed is expected, f"{rule}\n{verdict.explain()}"


def test_table_is_large_enough_and_unique():
    assert len(FLOWS) >= 30
    keys = [(f[0], f[1], f[2], f[3], f[6]) for f in FLOWS]
    assert len(keys) == len(set(keys))


def test_verdict_names_the_deciding_rules():
    v = ENGINES[False].evaluate(_endpoint("prod/api"), _endpoint("prod/db"), 5432, "TCP")
    assert [r.describe() for r in v.egress.allowed_by] == ["prod/api-egress spec.egress[0].to[0]"]
    assert [r.describe() for r in v.ingress.allowed_by] == ["prod/db-ingress spec.ingress[0].from[0]"]
    d = v.to_dict()
    assert d["allowed"] is True and d["ingress"]["allowedBy"][0]["path"] == "spec.ingress[0].from[0]"


def test_denied_verdict_names_isolating_policies():
    v = ENGINES[False].evaluate(_endpoint("prod/web"), _endpoint("prod/db"), 5432, "TCP")
    assert not v.egress.isolated
    assert v.ingress.selecting == ("prod/db-ingress",)  # db-no-egress isolates egress only
    assert "denied: isolated by prod/db-ingress" in v.ingress.explain()


def test_protocol_is_case_insensitive():
    v = ENGINES[False].evaluate(_endpoint("prod/web"), _endpoint("prod/api"), 9000, "tcp")
    assert v.allowed and v.protocol == "TCP"


def test_overlay_replaces_policy_by_key():
    opened = parse_policy({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                           "metadata": {"name": "db-ingress", "namespace": "prod"},
                           "spec": {"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{}]}}).policy
    eng = ENGINES[False].with_overlay([opened])
    assert eng.evaluate(_endpoint("prod/web"), _endpoint("prod/db"), 5432).allowed
    assert not ENGINES[False].evaluate(_endpoint("prod/web"), _endpoint("prod/db"), 5432).allowed
    gone = ENGINES[False].with_overlay([], removed=["prod/db-ingress"])
    assert gone.evaluate(_endpoint("prod/web"), _endpoint("prod/db"), 5432).allowed
