"""Benchmark: the isolation controller converging 500 namespaces labeled at once.

    python -m bench isolation [--namespaces 500] [--runs 3] [--workers 4] [--mode all] [--json FILE]

Setup, per run (fresh state each time):

1. The Kubernetes API stand-in (tests/kubeapi) runs in its own process, pinned to CPU 1;
   this process talks to it over a pipe for setup and for its request log.
2. This process (pinned to CPU 0) runs the real controller with leader election
   (webhook.isolation.controller.run_in_background, through the kubernetes client over
   HTTP), waits until it leads and its caches are synced over N unlabeled namespaces.
3. The stand-in labels all N namespaces in one burst (direct state changes: the watch
   sees N events in a row), noting when each label landed.
4. Converged = the namespace's last managed policy was created; its time is taken from
   the stand-in's request log (arrival + service time of that POST), minus its label time.
5. Then two resync periods pass, and the writes made in them are counted (must be 0;
   the Lease renewals, one PUT per retry period, are the elector's heartbeat and not counted).

Reports p50 / p99 / max convergence time and API requests and writes per namespace
(medians over runs, with min-max), and writes the raw numbers as JSON.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SERVER_CPU, CONTROLLER_CPU = 1, 0
LABEL = "netpol-guard.io/isolate"
NP_POST = "/networkpolicies"


def _pin(cpu: int) -> None:
    try:
        if len(os.sched_getaffinity(0)) > 1:
            os.sched_setaffinity(0, {cpu})
    except (AttributeError, OSError):
        pass


# --- the stand-in process -------------------------------------------------------------------------

def _server_main(conn, namespaces: int) -> None:
    sys.path.insert(0, str(REPO))
    _pin(SERVER_CPU)
    from tests.kubeapi import KubeAPI

    api = KubeAPI(history_size=100_000).start()
    names = [f"team-{i:04d}" for i in range(namespaces)]
    api.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "netpol-guard"}})
    # as on a real cluster: `default` exists, and the Events about Namespaces go there
    api.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}})
    for n in names:
        api.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n, "labels": {"team": n}}})
    conn.send(api.url)
    labeled: dict[str, float] = {}
    while True:
        cmd, arg = conn.recv()
        if cmd == "cpu":
            conn.send(time.process_time())
        elif cmd == "label":
            api.reset_log()
            for n in names:
                obj = api.get_object("Namespace", None, n)
                obj["metadata"]["labels"][LABEL] = arg
                api.put_object(obj)
                labeled[n] = time.time()
            conn.send(True)
        elif cmd == "converged":  # how many namespaces have every managed policy
            want = 2 if arg == "all" or arg == "egress" else 1
            done = sum(1 for n in names if len(api.list_objects("NetworkPolicy", n)) == want)
            conn.send(done)
        elif cmd == "report":
            records = api.requests()
            per_ns_requests = {n: 0 for n in names}
            per_ns_writes = {n: 0 for n in names}
            last_create: dict[str, float] = {}
            shared = 0
            for r in records:
                if r.namespace in per_ns_requests:
                    per_ns_requests[r.namespace] += 1
                    if r.is_write:
                        per_ns_writes[r.namespace] += 1
                    if r.method == "POST" and r.path.endswith(NP_POST) and r.status == 201:
                        done_at = r.started + r.duration
                        last_create[r.namespace] = max(last_create.get(r.namespace, 0.0), done_at)
                else:
                    shared += 1  # watches, lists, the Lease
            conn.send({
                "latency": {n: last_create[n] - labeled[n] for n in names if n in last_create},
                "requests": per_ns_requests, "writes": per_ns_writes, "shared_requests": shared,
                "errors": sum(1 for r in records if r.status >= 400),
                "error_samples": [(r.method, r.path, r.status, round(r.duration, 3)) for r in records
                                  if r.status >= 400][:10],
            })
        elif cmd == "writes":  # Lease renewals are the elector's heartbeat, not reconciling
            conn.send(sum(1 for r in api.requests() if r.is_write and "/leases" not in r.path))
        elif cmd == "reset":
            api.reset_log()
            conn.send(True)
        elif cmd == "stop":
            api.stop()
            conn.send(True)
            return


# --- one run ------------------------------------------------------------------------------------------

def _percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = max(0, min(len(s) - 1, int(round(q * (len(s) - 1)))))
    return s[k]


def run_once(namespaces: int, workers: int, mode: str, resync: float) -> dict:
    import kubernetes.client

    from webhook.config import from_dict
    from webhook.isolation.controller import run_in_background
    from webhook.leader import LeaderElector

    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_server_main, args=(child, namespaces), name="kubeapi-standin")
    proc.start()

    def call(cmd, arg=None):
        parent.send((cmd, arg))
        return parent.recv()

    try:
        url = parent.recv()
        cfg = kubernetes.client.Configuration()
        cfg.host = url
        client = kubernetes.client.ApiClient(cfg)
        config = from_dict({})
        elector = LeaderElector(client, "netpol-guard", "netpol-guard-leader", "bench", lease_duration=15,
                                renew_deadline=10.0, retry_period=2.0)
        running = run_in_background(config, client, elector=elector, workers=workers, resync_seconds=resync)
        try:
            if not elector.wait_for_leadership(30) or not running.controller.wait_synced(30):
                raise RuntimeError("controller did not lead and sync within 30 s")
            deadline = time.monotonic() + 30
            while not running.controller.queue.idle() and time.monotonic() < deadline:
                time.sleep(0.05)
            server_cpu0, cpu0 = call("cpu"), time.process_time()
            started = time.time()
            call("label", mode)
            deadline = time.monotonic() + 120
            while call("converged", mode) < namespaces:
                if time.monotonic() > deadline:
                    raise RuntimeError("not converged within 120 s")
                time.sleep(0.05)
            wall = time.time() - started
            while not (running.controller.queue.idle() and running.controller.events.idle()):
                time.sleep(0.05)
            controller_cpu, server_cpu = time.process_time() - cpu0, call("cpu") - server_cpu0
            report = call("report")
            call("reset")
            relists = running.controller.namespaces.relists
            while running.controller.namespaces.relists < relists + 2 or not running.controller.queue.idle():
                time.sleep(0.05)
            steady_writes = call("writes")
        finally:
            running.stop()
            elector.stop()
            client.close()
    finally:
        try:
            call("stop")
        except (EOFError, OSError):
            pass
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    lat = list(report["latency"].values())
    return {
        "namespaces": namespaces, "converged": len(lat), "wall_s": wall,
        "p50_s": _percentile(lat, 0.50), "p99_s": _percentile(lat, 0.99), "max_s": max(lat) if lat else None,
        "requests_per_ns": statistics.mean(report["requests"].values()),
        "requests_per_ns_incl_shared": statistics.mean(report["requests"].values()) + report["shared_requests"] / namespaces,
        "writes_per_ns_mean": statistics.mean(report["writes"].values()),
        "writes_per_ns_max": max(report["writes"].values()),
        "error_responses": report["errors"], "error_samples": report["error_samples"],
        "controller_errors": running.controller.stats.errors, "steady_state_writes": steady_writes,
        "controller_cpu_ms_per_ns": controller_cpu * 1000 / namespaces,
        "standin_cpu_ms_per_ns": server_cpu * 1000 / namespaces,
    }


def _fmt(values: list[float], unit: str = "", digits: int = 2) -> str:
    med = statistics.median(values)
    return f"{med:.{digits}f}{unit} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench isolation", description=__doc__.split("\n\n")[0])
    p.add_argument("--namespaces", type=int, default=500)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--workers", type=int, default=4, help="controller workers (default 4)")
    p.add_argument("--mode", choices=("all", "ingress", "egress"), default="all")
    p.add_argument("--resync", type=float, default=1.0, help="resync seconds during the run (default 1)")
    p.add_argument("--json", metavar="FILE", help="write raw results here (default bench/results/isolation-*.json)")
    args = p.parse_args(argv)
    _pin(CONTROLLER_CPU)
    import logging
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("webhook.isolation.controller").setLevel(logging.WARNING)

    runs = []
    for i in range(args.runs):
        r = run_once(args.namespaces, args.workers, args.mode, args.resync)
        runs.append(r)
        print(f"run {i + 1}: {r['converged']}/{r['namespaces']} converged, p50 {r['p50_s']:.2f}s "
              f"p99 {r['p99_s']:.2f}s max {r['max_s']:.2f}s, {r['requests_per_ns']:.2f} requests/ns "
              f"({r['requests_per_ns_incl_shared']:.2f} incl. watches/lists/Lease), writes/ns mean "
              f"{r['writes_per_ns_mean']:.2f} max {r['writes_per_ns_max']}, steady-state writes "
              f"{r['steady_state_writes']}; CPU per namespace: controller {r['controller_cpu_ms_per_ns']:.2f} ms, "
              f"stand-in {r['standin_cpu_ms_per_ns']:.2f} ms", flush=True)
    summary = {
        "p50_s": _fmt([r["p50_s"] for r in runs], " s"), "p99_s": _fmt([r["p99_s"] for r in runs], " s"),
        "max_s": _fmt([r["max_s"] for r in runs], " s"),
        "requests_per_ns": _fmt([r["requests_per_ns"] for r in runs]),
        "writes_per_ns_max": max(r["writes_per_ns_max"] for r in runs),
        "controller_cpu_ms_per_ns": _fmt([r["controller_cpu_ms_per_ns"] for r in runs]),
        "standin_cpu_ms_per_ns": _fmt([r["standin_cpu_ms_per_ns"] for r in runs]),
        "load_average_at_end": os.getloadavg()[0],
        "steady_state_writes": sum(r["steady_state_writes"] for r in runs),
    }
    print("median (min-max) over runs:", json.dumps(summary, indent=1))
    ok = all(r["converged"] == r["namespaces"] and r["max_s"] <= 5.0 and r["writes_per_ns_max"] <= 3
             and r["steady_state_writes"] == 0 for r in runs)
    print("target (all converged within 5 s, <= 3 writes per namespace, no steady-state writes):",
          "met" if ok else "NOT met")
    out = Path(args.json) if args.json else REPO / "bench" / "results" / f"isolation-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                               "runs": runs, "summary": summary, "target_met": ok}, indent=1))
    print(f"raw results: {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
