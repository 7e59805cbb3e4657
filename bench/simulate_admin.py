"""Benchmark: the simulate matrix with AdminNetworkPolicies and a baseline, beside the same
cluster with NetworkPolicies only.

    python -m bench simulate_admin [--workloads 300] [--namespaces 10] [--anps 20] [--repeat 3]

Builds a deterministic cluster in memory (workloads with an `app` label and http/metrics
ports; per namespace a default-deny and an allow-list; --anps AdminNetworkPolicies of
distinct priorities with Allow/Deny/Pass rules over namespaces and pods, and a baseline),
then times the whole pod-by-pod matrix on port 8080/TCP. With admin policies the matrix
evaluates each (source class, destination class) pair in order, tier by tier, instead of
the NetworkPolicy-only set unions, so it is slower; this says by how much. CPU seconds
(process time), best of --repeat, both variants in the same run.
"""
from __future__ import annotations

import argparse
import time

from webhook.cluster.objects import ContainerPort, Namespace, Pod
from webhook.cluster.view import build_view
from webhook.policy.engine import Engine
from webhook.policy.matrix import PortQuery, compute, pods_of
from webhook.policy.parse import parse_policy
from webhook.policy.parse_admin import parse_admin_policy

API = "policy.networking.k8s.io/v1alpha1"


def build(workloads: int, namespaces: int, anps: int, with_admin: bool) -> Engine:
    ns_names = [f"team-{i:02d}" for i in range(namespaces)]
    nss = [Namespace(n, {"kubernetes.io/metadata.name": n, "tier": "prod" if i % 2 else "dev"})
           for i, n in enumerate(ns_names)]
    pods = [Pod(ns_names[i % namespaces], f"svc-{i:03d}", {"app": f"svc-{i % 50:02d}", "role": ("web", "api", "db")[i % 3]},
                (ContainerPort(8080, "TCP", "http"), ContainerPort(9090, "TCP", "metrics")), kind="Deployment")
            for i in range(workloads)]
    policies = []
    for n in ns_names:
        for obj in ({"metadata": {"name": "default-deny", "namespace": n},
                     "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}},
                    {"metadata": {"name": "web-to-api", "namespace": n},
                     "spec": {"podSelector": {"matchLabels": {"role": "api"}},
                              "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "web"}}}],
                                           "ports": [{"port": "http"}]}]}},
                    {"metadata": {"name": "egress-in-namespace", "namespace": n},
                     "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"podSelector": {}}]}]}}):
            policies.append(parse_policy({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", **obj}).policy)
    view = build_view(nss, pods, (), policies)
    if with_admin:
        actions = ("Allow", "Deny", "Pass")
        for i in range(anps):
            spec = {"priority": i, "subject": {"namespaces": {"matchLabels": {"tier": ("prod", "dev")[i % 2]}}},
                    "ingress": [{"action": actions[i % 3], "from": [{"pods": {
                        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns_names[i % namespaces]}},
                        "podSelector": {"matchLabels": {"app": f"svc-{i % 50:02d}"}}}}],
                        "ports": [{"portNumber": {"port": 8080}}]}],
                    "egress": [{"action": actions[(i + 1) % 3], "to": [{"namespaces": {"matchLabels": {
                        "kubernetes.io/metadata.name": ns_names[(i + 3) % namespaces]}}}]}]}
            view.upsert_admin_policy(parse_admin_policy({"apiVersion": API, "kind": "AdminNetworkPolicy",
                                                         "metadata": {"name": f"anp-{i:02d}"}, "spec": spec}).policy)
        view.upsert_admin_policy(parse_admin_policy({
            "apiVersion": API, "kind": "BaselineAdminNetworkPolicy", "metadata": {"name": "default"},
            "spec": {"subject": {"namespaces": {}}, "ingress": [{"action": "Deny", "from": [{"namespaces": {}}]}]}}).policy)
    return Engine(view)


def measure(engine: Engine, repeat: int) -> tuple[float, int]:
    best, flows = float("inf"), 0
    for _ in range(repeat):
        engine._selecting_cache.clear()
        pods = pods_of(engine)
        t = time.process_time()
        m = compute(engine, pods, pods, PortQuery(8080, "TCP"))
        best = min(best, time.process_time() - t)
        flows = len(m.cells)
    return best, flows


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench simulate_admin")
    ap.add_argument("--workloads", type=int, default=300)
    ap.add_argument("--namespaces", type=int, default=10)
    ap.add_argument("--anps", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    for label, with_admin in (("NetworkPolicies only", False), (f"+ {args.anps} ANPs and a baseline", True)):
        engine = build(args.workloads, args.namespaces, args.anps, with_admin)
        cpu, flows = measure(engine, args.repeat)
        print(f"{label:<34} {flows:>7} flows  {cpu:7.2f} s CPU  {cpu / flows * 1e6:6.1f} us/flow")
    return 0
