"""Audit benchmark: the background audit at issue 14's size, in-process.

    python -m bench audit [--namespaces 2000] [--pods 50000] [--policies 10000] [--changes 20]

The cluster is bench/webhook.py's synthetic view (2,003 namespaces, 50,002 pods, 10,000
NetworkPolicies: default-deny, a DNS allowance, three app policies per namespace; one
namespace in ten without DNS), built through the ClusterView API. Measured:

1. full audit: every rule on every policy plus the dependency index (wall and CPU time);
   then, in a second full audit under tracemalloc, the memory the audit adds on top of the
   view (retained and peak; the agent holds its own live view besides, see bench cache_memory);
2. a pod label change: one workload's pods in ns-0001 relabeled app=api -> app=api-v2 (one
   debounced batch of pod events; its policies now select nothing), and back: time from the
   changes being in the view to the findings updated and the affected reports rendered and
   compared (ready to write; the API call is not counted), the policies re-checked, and the
   namespaces whose PolicyReport would be rewritten (only when its rendered content changes);
3. namespace label changes: the benchmark replaces one policy in fifty with "from-team" (admits
   the namespaces of one team) and one in fifty with "from-monitoring" (admits namespaces with
   team=observability). ns-0007 losing team=team-07 re-checks the policies that name it (other
   namespaces of team-07 remain, so no finding appears); monitoring losing team=observability
   breaks every from-monitoring policy (a finding appears in each of their namespaces);
4. the DNS pods relabeled (every egress-isolated namespace is affected: thousands by nature).

Each change is applied and undone `--changes` times; p50/p99 of the update time are reported.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import sys
import time
import tracemalloc


def _pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def _rewrites(auditor, delta, rendered: dict) -> int:
    """Namespaces whose report content changed (what the agent would write), updating `rendered`."""
    from webhook.audit import report
    n = 0
    for ns in sorted(delta.namespaces):
        body = [report.content(r) for r in report.namespace_reports(ns, auditor.in_namespace(ns))]
        if rendered.get(ns) != body:
            rendered[ns] = body
            n += 1
    return n


def _scenario(name, auditor, rec, make, undo, rounds: int, rendered: dict) -> dict:
    times, cpus, rechecks, writes, appeared = [], [], [], [], []
    for i in range(rounds):
        for step in (make, undo):
            step()
            t0, c0 = time.perf_counter(), time.process_time()
            delta = auditor.apply(rec.take())
            writes.append(_rewrites(auditor, delta, rendered))  # rendered and compared: ready to write
            times.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
            rechecks.append(delta.rechecked)
            appeared.append(sum(len(d.appeared) for d in delta.policies))
    return {"scenario": name, "updates": len(times), "p50_ms": round(_pct(times, 50) * 1000, 2),
            "p99_ms": round(_pct(times, 99) * 1000, 2), "max_ms": round(max(times) * 1000, 2),
            "cpu_p50_ms": round(_pct(cpus, 50) * 1000, 2), "cpu_p99_ms": round(_pct(cpus, 99) * 1000, 2),
            "rechecked": sorted(set(rechecks)), "report_writes": sorted(set(writes)),
            "findings_appeared_or_back": sorted(set(appeared))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench audit", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--namespaces", type=int, default=2000)
    ap.add_argument("--pods", type=int, default=50000)
    ap.add_argument("--policies", type=int, default=10000)
    ap.add_argument("--changes", type=int, default=20, help="times each change is applied and undone")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ap.add_argument("--no-memory", action="store_true", help="skip the tracemalloc pass (memory figures 0)")
    args = ap.parse_args(argv)

    from bench.webhook import build_view, ns_name
    from webhook.audit import report
    from webhook.audit.auditor import Auditor
    from webhook.audit.feed import Recorder
    from webhook.cluster.objects import Namespace, Pod
    from webhook.config import DEFAULT

    t0 = time.perf_counter()
    teams = args.policies // 50
    view = build_view(args.namespaces, args.pods, args.policies - 2 * teams)
    from webhook.policy.parse import parse_policy
    for k in range(teams):
        for name, team, where in (("from-team", f"team-{k % 97:02d}", 3), ("from-monitoring", "observability", 5)):
            view.upsert_policy(parse_policy({
                "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": name, "namespace": ns_name((k * 10 + where) % args.namespaces),
                             "annotations": {"description": "team access"}},
                "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"from": [{
                    "namespaceSelector": {"matchLabels": {"team": team}}}], "ports": [{"port": 8080}]}]}}).policy)
    built = time.perf_counter() - t0
    gc.collect()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024

    auditor = Auditor(view, DEFAULT)
    c0, w0 = time.process_time(), time.perf_counter()
    auditor.full()
    full_wall, full_cpu = time.perf_counter() - w0, time.process_time() - c0
    retained = peak = base = 0
    if not args.no_memory:
        # A second, separate full audit under tracemalloc (which slows Python 2-3x, so it is not
        # the timed one): what the audit's results and index add to the view, and its peak.
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        probe = Auditor(view, DEFAULT)
        probe.full()
        gc.collect()
        retained, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        del probe
    findings = sum(len(r.findings) for r in auditor.results.values())
    by_sev = {s: sum(1 for r in auditor.results.values() for f in r.findings if f.severity == s)
              for s in ("error", "warning", "info")}

    # Rendering every namespace's report once, as the agent does after the first full audit.
    r0 = time.perf_counter()
    rendered = {ns: [report.content(r) for r in report.namespace_reports(ns, auditor.in_namespace(ns))]
                for ns in auditor.namespaces()}
    render_all = time.perf_counter() - r0
    biggest = max(len(json.dumps(r)) for ns in auditor.namespaces()
                  for r in report.namespace_reports(ns, auditor.in_namespace(ns)))

    rec = Recorder(view)
    ns1 = ns_name(1)
    api_pods = [p for p in view.pods(ns1) if p.labels.get("app") == "api"]
    relabeled = [Pod(p.namespace, p.name, {**p.labels, "app": "api-v2"}, p.ports, p.ips) for p in api_pods]
    team_ns = view.namespace(ns_name(7))
    mon = view.namespace("monitoring")
    dns = view.find_pod("kube-system", "coredns-0")
    dns2 = view.find_pod("kube-system", "coredns-1")
    scenarios = [
        _scenario(f"pod labels ({len(api_pods)} pods of ns-0001 app=api -> api-v2)", auditor, rec,
                  lambda: [rec.upsert(p) for p in relabeled], lambda: [rec.upsert(p) for p in api_pods],
                  args.changes, rendered),
        _scenario("namespace label (ns-0007 loses team=team-07)", auditor, rec,
                  lambda: rec.upsert(Namespace(team_ns.name, {k: v for k, v in team_ns.labels.items() if k != "team"})),
                  lambda: rec.upsert(team_ns), args.changes, rendered),
        _scenario("namespace label (monitoring loses team=observability)", auditor, rec,
                  lambda: rec.upsert(Namespace("monitoring", {k: v for k, v in mon.labels.items() if k != "team"})),
                  lambda: rec.upsert(mon), max(1, args.changes // 4), rendered),
        _scenario("DNS pods relabeled (k8s-app=kube-dns -> coredns)", auditor, rec,
                  lambda: (rec.upsert(Pod(dns.namespace, dns.name, {"k8s-app": "coredns"}, dns.ports, dns.ips)),
                           rec.upsert(Pod(dns2.namespace, dns2.name, {"k8s-app": "coredns"}, dns2.ports, dns2.ips))),
                  lambda: (rec.upsert(dns), rec.upsert(dns2)), max(1, args.changes // 10), rendered),
    ]
    out = {
        "cluster": view.stats(), "build_view_s": round(built, 2),
        "full_audit": {"wall_s": round(full_wall, 2), "cpu_s": round(full_cpu, 2),
                       "us_per_policy": round(full_wall / max(1, len(auditor.results)) * 1e6),
                       "policies": len(auditor.results), "findings": findings, **by_sev,
                       "index_tokens": len(auditor.index.by_token),
                       "added_mb_retained": round((retained - base) / 2**20, 1),
                       "added_mb_peak": round((peak - base) / 2**20, 1),
                       "rss_mb_before_audit": rss_before,
                       "rss_mb_max": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024},
        "render_all_reports_s": round(render_all, 2), "largest_report_bytes": biggest,
        "changes": scenarios, "load_average": os.getloadavg()[0],
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    fa = out["full_audit"]
    print(f"cluster: {out['cluster']} (view built in {out['build_view_s']} s, not counted)")
    print(f"full audit: {fa['wall_s']} s wall, {fa['cpu_s']} s CPU ({fa['us_per_policy']} us/policy), "
          f"{fa['policies']} policies, {fa['findings']} findings ({fa['error']} errors, {fa['warning']} warnings, "
          f"{fa['info']} infos), {fa['index_tokens']} index tokens")
    print(f"memory the audit adds (tracemalloc): {fa['added_mb_retained']} MB retained, "
          f"{fa['added_mb_peak']} MB peak; process max RSS {fa['rss_mb_before_audit']} -> {fa['rss_mb_max']} MB")
    print(f"rendering every namespace's PolicyReport: {out['render_all_reports_s']} s; "
          f"largest report {out['largest_report_bytes']} bytes")
    print("| change | updates | p50 ms | p99 ms | max ms | CPU p50 / p99 ms | policies re-checked | reports rewritten |")
    print("|---|---|---|---|---|---|---|---|")
    for s in scenarios:
        print(f"| {s['scenario']} | {s['updates']} | {s['p50_ms']} | {s['p99_ms']} | {s['max_ms']} | "
              f"{s['cpu_p50_ms']} / {s['cpu_p99_ms']} | "
              f"{', '.join(map(str, s['rechecked']))} | {', '.join(map(str, s['report_writes']))} |")
    print(f"load average at the end: {out['load_average']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
