"""CPU per review for NetworkPolicies at netpol-guard's size limits (webhook/policy/limits.py).

`python -m bench review_cost [--runs N] [--over] [--namespaces N]`

Each shape is an AdmissionReview (CREATE, namespace monitoring, the examples/cluster view)
whose policy sits exactly at one limit - or at every limit at once (`all-limits`) - built
to be expensive: selectors that almost match (the did-you-mean search runs), named ports,
`0.0.0.0/0` egress without policyTypes or DNS (every /mutate repair applies). Each is sent
to the app in-process (and `all-limits UPDATE`, the same from its rules in reverse order) (Flask test client: the review path without TLS and sockets) on
/validate and on /mutate with every mutation on (examples/config/mutations.yaml); printed:
body size, CPU (best of --runs, process time), answer size and decision. `--over` adds
each shape one item past its limit: it must be refused at once (policy-too-large).
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import tempfile
import time
from pathlib import Path

from webhook.policy import limits

REPO = Path(__file__).resolve().parent.parent
BASE = json.loads((REPO / "examples" / "admission" / "create-denied.json").read_text())


def _ns_peer(i: int) -> dict:  # near-miss namespace and pod labels: two selector terms
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": f"sho{i}"}},
            "podSelector": {"matchLabels": {"app": f"frontend{i}"}}}


def _cidr_peer(i: int, excepts: int = 0) -> dict:
    block = {"cidr": "0.0.0.0/0"} if excepts else {"cidr": f"10.{(i >> 8) & 255}.{i & 255}.0/24"}
    if excepts:
        block["except"] = [f"{1 + (j >> 16) & 255}.{(j >> 8) & 255}.{j & 255}.0/24" for j in range(excepts)]
    return {"ipBlock": block}


def _rules(count: int, peers: int, ports: int, terms: int, excepts: int, direction: str) -> list[dict]:
    """`count` rules sharing out the given numbers of peers, ports, selector terms and except entries."""
    rules: list[dict] = [{} for _ in range(count)]
    key = "from" if direction == "ingress" else "to"
    selector_peers = terms // 2
    for i in range(peers):
        rule = rules[i % count]
        if i < selector_peers:
            peer = _ns_peer(i)
        else:
            peer = _cidr_peer(i, excepts if i == selector_peers else 0)
        rule.setdefault(key, []).append(peer)
    for i in range(ports):
        rules[i % count].setdefault("ports", []).append({"port": f"metric{i}"} if i % 2 else {"port": 1000 + i, "endPort": 2000 + i})
    return rules


def shapes(over: int = 0) -> dict[str, dict]:
    """name -> NetworkPolicy spec at one limit (plus `over` items)."""
    r, p, q, e, t = limits.RULES, limits.PEERS, limits.PORTS, limits.EXCEPTS, limits.SELECTOR_TERMS
    return {
        "rules": {"podSelector": {}, "ingress": _rules(r + over, r, r, 2 * (r // 2), 0, "ingress")},
        "peers-selectors": {"podSelector": {}, "ingress": _rules(1, p + over, 0, min(t, 2 * p), 0, "ingress")},
        "peers-ipblock": {"podSelector": {}, "egress": _rules(1, p + over, 0, 0, 0, "egress")},
        "ports": {"podSelector": {}, "ingress": _rules(1, 0, q + over, 0, 0, "ingress")},
        "except": {"podSelector": {}, "egress": _rules(1, 1, 0, 0, e + over, "egress")},
        "selector-terms": {"podSelector": {"matchExpressions": [
            {"key": "app", "operator": "In", "values": [f"promethe{i}" for i in range(t - 1 + over)]}]},
            "ingress": [{}]},
        # every limit at once: half the rules each way, egress to 0.0.0.0/0 with every except entry
        "all-limits": {"podSelector": {},
                       "ingress": _rules(r // 2 + over, p // 2, q // 2, t // 2, 0, "ingress"),
                       "egress": _rules(r // 2, p // 2, q // 2, t // 2, e, "egress")},
    }


def review(spec: dict, update: bool = False) -> bytes:
    """A CREATE of `spec`; with `update`, an UPDATE from the same spec with its rules in reverse
    order (the new object has errors, so the old one is judged too: the costliest UPDATE)."""
    body = copy.deepcopy(BASE)
    body["request"]["object"] = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                                 "metadata": {"name": "big", "namespace": "monitoring"}, "spec": spec}
    body["request"]["namespace"] = "monitoring"
    if update:
        old = copy.deepcopy(body["request"]["object"])
        for direction in ("ingress", "egress"):
            old["spec"].get(direction, []).reverse()
        body["request"]["operation"], body["request"]["oldObject"] = "UPDATE", old
    return json.dumps(body).encode()


def _client(cluster: list[str]):
    from webhook.admission.app import create_app
    from webhook.cluster.source import SnapshotSource
    from webhook.config import load

    logging.disable(logging.CRITICAL)  # the audit line is not what is measured here
    config = load(str(REPO / "examples" / "config" / "mutations.yaml"))
    return create_app(config, SnapshotSource(cluster)).test_client()


def measure(client, endpoint: str, body: bytes, runs: int) -> tuple[float, int, str]:
    best, answer = float("inf"), None
    for _ in range(runs):
        started = time.process_time()
        answer = client.post(f"/{endpoint}", data=body, content_type="application/json")
        best = min(best, time.process_time() - started)
    response = answer.get_json()["response"]
    decision = "patch" if response.get("patch") else "allow" if response["allowed"] else "deny"
    return best, len(answer.data), decision


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench review_cost", description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--over", action="store_true", help="also each shape one item past its limit")
    ap.add_argument("--namespaces", type=int, default=0,
                    help="judge against a generated cluster of N namespaces (10 pods each, bench lint's "
                         "shape) instead of examples/cluster: the selector checks look at every namespace")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        cluster = [str(REPO / "examples" / "cluster")]
        if args.namespaces:
            from bench.lint import write_repo
            write_repo(Path(tmp), args.namespaces, 10 * args.namespaces, 0)
            cluster = [str(Path(tmp) / "cluster")]
        client = _client(cluster)
    # The first review builds the view's lazy indexes (seconds for 50,000 pods): not a review's cost.
    measure(client, "validate", review(shapes()["all-limits"]), 1)
    print(f"cluster: {'examples/cluster' if not args.namespaces else f'{args.namespaces} namespaces'}")
    print(f"limits: rules {limits.RULES}, peers {limits.PEERS}, ports {limits.PORTS}, "
          f"except {limits.EXCEPTS}, selector terms {limits.SELECTOR_TERMS}")
    print(f"{'shape':<22} {'body':>9}  {'/validate':>10} {'answer':>7} {'':5}  {'/mutate':>10} {'answer':>7}")
    for over in ((0, 1) if args.over else (0,)):
        cases = [(name, review(spec)) for name, spec in shapes(over).items()]
        cases.append(("all-limits UPDATE", review(shapes(over)["all-limits"], update=True)))
        for name, body in cases:
            v_cpu, v_len, v_dec = measure(client, "validate", body, args.runs)
            m_cpu, m_len, m_dec = measure(client, "mutate", body, args.runs)
            label = name + (" +1" if over else "")
            print(f"{label:<22} {len(body):>9,}  {v_cpu * 1000:>7.1f} ms {v_len:>7,} {v_dec:5}  "
                  f"{m_cpu * 1000:>7.1f} ms {m_len:>7,} {m_dec}", flush=True)
    return 0
