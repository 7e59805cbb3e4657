"""Lint benchmark: 10,000 policies over 200 namespaces, against 5,000 and 50,000 pods.

`python -m bench lint [--namespaces N] [--policies N] [--pods N,N] [--runs N]`

Writes a synthetic but realistic repository of manifests (Namespaces with team labels,
Pods of ten apps per namespace with container ports, CoreDNS, and a policy mix: default
deny, DNS allowance, allow-lists by pod and namespace selectors, egress to ipBlocks,
plus the usual mistakes) to a temporary directory, then runs the real `netpol-guard lint`
on it in a child process. Reports wall time, the time to read manifests vs. to check them,
the check cost per policy, and peak RSS (ru_maxrss of the child). The point of two pod
counts: the per-policy check cost must stay flat as the cluster grows tenfold.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

APPS = ("frontend", "api", "worker", "cache", "db", "search", "auth", "billing", "mailer", "reports")
PORTS = {"frontend": 8080, "api": 8080, "worker": 9000, "cache": 6379, "db": 5432, "search": 9200,
         "auth": 8443, "billing": 8080, "mailer": 2525, "reports": 8080}


def _pod(ns: str, app: str, i: int, ip: str) -> str:
    return (f"---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {app}-{i}\n  namespace: {ns}\n"
            f"  labels: {{app: {app}, tier: {'web' if app == 'frontend' else 'backend'}, "
            f"pod-template-hash: h{i % 3}}}\nspec:\n  containers:\n  - name: main\n    image: example/{app}:1\n"
            f"    ports: [{{name: main, containerPort: {PORTS[app]}}}, {{name: metrics, containerPort: 9090}}]\n"
            f"status: {{podIP: {ip}}}\n")


def _policy(ns: str, k: int, namespaces: int) -> str:
    """One of ten shapes; two in ten are mistakes (a `name` label, a typo'd app)."""
    app = APPS[k % len(APPS)]
    other = f"ns{(int(ns[2:]) + 1) % namespaces:03d}"
    head = (f"---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: p{k}\n"
            f"  namespace: {ns}\n  annotations: {{description: 'policy {k}'}}\nspec:\n")
    dns = ("  - to:\n    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}\n"
           "      podSelector: {matchLabels: {k8s-app: kube-dns}}\n"
           "    ports: [{port: 53, protocol: UDP}, {port: 53, protocol: TCP}]\n")
    shape = k % 10
    if shape == 0:
        return head + "  podSelector: {}\n  policyTypes: [Ingress, Egress]\n"
    if shape == 1:
        return head + "  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n" + dns
    if shape == 2:
        return (head + f"  podSelector: {{matchLabels: {{app: {app}}}}}\n  ingress:\n  - from:\n"
                f"    - podSelector: {{matchLabels: {{app: frontend}}}}\n    ports: [{{port: {PORTS[app]}}}]\n")
    if shape == 3:
        return (head + f"  podSelector: {{matchLabels: {{app: {app}}}}}\n  ingress:\n  - from:\n"
                f"    - namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: {other}}}}}\n"
                f"      podSelector: {{matchLabels: {{app: api}}}}\n    ports: [{{port: main}}]\n")
    if shape == 4:
        return (head + f"  podSelector: {{matchLabels: {{app: {app}}}}}\n  policyTypes: [Egress]\n  egress:\n"
                "  - to: [{ipBlock: {cidr: 0.0.0.0/0, except: [169.254.169.254/32, 10.0.0.0/8]}}]\n"
                "    ports: [{port: 443}]\n" + dns)
    if shape == 5:  # mistake: `name` label nobody carries
        return (head + f"  podSelector: {{matchLabels: {{app: {app}}}}}\n  ingress:\n  - from:\n"
                "    - namespaceSelector: {matchLabels: {name: monitoring}}\n    ports: [{port: 9090}]\n")
    if shape == 6:  # mistake: typo in the app label
        return (head + f"  podSelector: {{matchLabels: {{app: {app}x}}}}\n  ingress:\n  - from:\n"
                "    - podSelector: {matchLabels: {app: frontend}}\n")
    if shape == 7:
        return (head + f"  podSelector: {{matchExpressions: [{{key: app, operator: In, values: [{app}, api]}}]}}\n"
                "  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {team: observability}}\n"
                "    ports: [{port: metrics}]\n")
    if shape == 8:
        return (head + f"  podSelector: {{matchLabels: {{app: {app}}}}}\n  policyTypes: [Ingress, Egress]\n"
                f"  ingress:\n  - from: [{{podSelector: {{matchLabels: {{tier: web}}}}}}]\n"
                f"  egress:\n  - to: [{{podSelector: {{matchLabels: {{app: db}}}}}}]\n    ports: [{{port: 5432}}]\n" + dns)
    return (head + f"  podSelector: {{matchLabels: {{app: {app}}}}}\n  ingress:\n  - from:\n"
            "    - namespaceSelector: {matchLabels: {team: observability}}\n    - podSelector: {matchLabels: {app: api}}\n")


def write_repo(root: Path, namespaces: int, pods: int, policies: int) -> None:
    """cluster/ holds namespaces and pods; policies/ holds the policies to check."""
    (root / "cluster").mkdir(parents=True)
    (root / "policies").mkdir()
    per_ns_pods = max(1, pods // namespaces)
    per_ns_pols = max(1, policies // namespaces)
    with open(root / "cluster" / "kube-system.yaml", "w") as fh:
        fh.write("apiVersion: v1\nkind: Namespace\nmetadata: {name: kube-system}\n---\n"
                 "apiVersion: v1\nkind: Namespace\nmetadata: {name: monitoring, labels: {team: observability}}\n")
        for i in range(2):
            fh.write(f"---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: coredns-{i}\n  namespace: kube-system\n"
                     "  labels: {k8s-app: kube-dns}\nspec:\n  containers:\n  - name: coredns\n    image: coredns\n"
                     "    ports: [{name: dns, containerPort: 53, protocol: UDP}, "
                     "{name: dns-tcp, containerPort: 53, protocol: TCP}]\n")
    for n in range(namespaces):
        ns = f"ns{n:03d}"
        with open(root / "cluster" / f"{ns}.yaml", "w") as fh:
            fh.write(f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels: {{team: t{n % 20}}}\n")
            for i in range(per_ns_pods):
                app = APPS[i % len(APPS)]
                fh.write(_pod(ns, app, i, f"10.{n // 256 + 1}.{n % 256}.{i % 250 + 1}"))
        with open(root / "policies" / f"{ns}.yaml", "w") as fh:
            for k in range(per_ns_pols):
                fh.write(_policy(ns, k, namespaces))


CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from webhook.cluster.files import load_snapshot
from webhook.config import DEFAULT
from webhook.rules.batch import check_all
t1 = time.perf_counter()
snap = load_snapshot([sys.argv[1] + "/policies"], [sys.argv[1] + "/cluster"])
t2 = time.perf_counter()
reports = check_all(snap.view, DEFAULT, [(d.obj, d.origin()) for d in snap.policy_docs])
t3 = time.perf_counter()
findings = sum(len(r.findings) for r in reports)
print(json.dumps({"import": t1 - t0, "read": t2 - t1, "check": t3 - t2, "policies": len(reports),
                  "pods": snap.view.pod_count(), "findings": findings}))
"""


def _run_child(args: list[str]) -> tuple[float, int, str]:
    """Run a child, return (wall seconds, peak RSS in MiB, stdout)."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=600)
    wall = time.perf_counter() - start
    # ru_maxrss of RUSAGE_CHILDREN is the max over all children so far; each run is
    # measured in a fresh `python -m bench lint --measure` process, so it is this child's.
    import resource
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
    if proc.returncode not in (0, 1):
        raise SystemExit(f"child failed ({proc.returncode}): {err.strip()[-2000:]}")
    return wall, rss, out


def measure(repo: str, runs: int) -> dict:
    """Median of `runs` in-process phase timings, plus one end-to-end `netpol-guard lint`."""
    phases = []
    for _ in range(runs):
        wall, rss, out = _run_child([sys.executable, "-c", CHILD, repo])
        rec = json.loads(out)
        rec["wall"], rec["rss_mib"] = wall, rss
        phases.append(rec)
    cli = [sys.executable, "-m", "webhook", "lint", "--format", "json",
           "--cluster", f"{repo}/cluster", f"{repo}/policies"]
    cli_wall, _, out = _run_child(cli)
    summary = json.loads(out)["summary"]
    med = {k: statistics.median(p[k] for p in phases) for k in ("read", "check", "wall")}
    return {"policies": phases[0]["policies"], "pods": phases[0]["pods"], "findings": phases[0]["findings"],
            "read_s": med["read"], "check_s": med["check"], "wall_s": med["wall"],
            "check_us_per_policy": med["check"] / max(1, phases[0]["policies"]) * 1e6,
            "peak_rss_mib": max(p["rss_mib"] for p in phases), "cli_wall_s": cli_wall,
            "cli_errors": summary["errors"], "cli_warnings": summary["warnings"]}


def _isolated_measure(repo: str, runs: int) -> dict:
    """Each size in its own process so ru_maxrss (a high-water mark) is per size."""
    out = subprocess.run([sys.executable, "-m", "bench", "lint", "--measure", repo, "--runs", str(runs)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench lint", description=__doc__.splitlines()[0])
    ap.add_argument("--namespaces", type=int, default=200)
    ap.add_argument("--policies", type=int, default=10_000)
    ap.add_argument("--pods", default="5000,50000", help="comma-separated pod counts to compare")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--measure", metavar="REPO", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure, args.runs)))
        return 0
    print(f"machine: {os.cpu_count()} cpus, python {sys.version.split()[0]}")
    print(f"{'pods':>7} {'policies':>8} {'read s':>7} {'check s':>8} {'us/policy':>10} "
          f"{'wall s':>7} {'lint CLI s':>10} {'peak MiB':>9} {'errors':>7} {'warnings':>8}")
    for pods in (int(p) for p in args.pods.split(",")):
        with tempfile.TemporaryDirectory(prefix="npg-bench-lint-") as tmp:
            write_repo(Path(tmp), args.namespaces, pods, args.policies)
            r = _isolated_measure(tmp, args.runs)
        print(f"{r['pods']:>7} {r['policies']:>8} {r['read_s']:>7.2f} {r['check_s']:>8.2f} "
              f"{r['check_us_per_policy']:>10.0f} {r['wall_s']:>7.2f} {r['cli_wall_s']:>10.2f} "
              f"{r['peak_rss_mib']:>9} {r['cli_errors']:>7} {r['cli_warnings']:>8}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
