"""Benchmark: `netpol-guard generate` (parse, generate, proof, script) on a large map.

    python -m bench.generate [--workloads 200] [--flows 1000] [--repeat 3]
    python -m bench            # every benchmark, this one included

Builds a deterministic map (10 namespaces; every workload declares a named http port and
a metrics port; flows pick random source/destination pairs with a fixed seed; a few
external egress and ingress entries), runs the real command end to end into a temporary
directory, and prints the wall time of each phase (best of --repeat).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import subprocess
import sys
import tempfile
import time

import yaml


def build_map(workloads: int = 200, flows: int = 1000, namespaces: int = 10, seed: int = 42) -> str:
    rng = random.Random(seed)
    ns_names = [f"team-{i:02d}" for i in range(namespaces)]
    wls = []
    for i in range(workloads):
        ns = ns_names[i % namespaces]
        wls.append({"name": f"svc-{i:03d}", "namespace": ns, "labels": {"app": f"svc-{i:03d}", "tier": "backend"},
                    "ports": [{"name": "http", "port": 8080}, {"name": "metrics", "port": 9090},
                              {"name": "grpc", "port": 9000 + i % 7}]})
    keys = [f"{w['namespace']}/{w['name']}" for w in wls]
    pairs: set[tuple[int, int]] = set()
    while len(pairs) < min(flows, workloads * (workloads - 1)):
        a, b = rng.randrange(workloads), rng.randrange(workloads)
        if a != b:
            pairs.add((a, b))
    flow_list = []
    for a, b in sorted(pairs):
        port = rng.choice(["http", 8080, "grpc"])
        flow_list.append({"from": keys[a], "to": keys[b], "ports": [port]})
    endpoints = [{"name": f"partner-{i}", "cidrs": [f"198.51.{100 + i}.0/24"]} for i in range(5)]
    egress = [{"from": keys[rng.randrange(workloads)], "to": [f"partner-{i % 5}"], "ports": [443]}
              for i in range(20)]
    egress.append({"from": keys[0], "to": ["0.0.0.0/0"], "ports": [443]})
    ingress = [{"from": ["203.0.113.0/24"], "to": keys[i * 17], "ports": ["http"]} for i in range(5)]
    return yaml.safe_dump({"namespaces": ns_names, "workloads": wls, "endpoints": endpoints,
                           "flows": flow_list, "egress": egress, "ingress": ingress}, sort_keys=False)


def _best(fn, repeat: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def main(argv: list[str] | None = None) -> int:
    from webhook.cli import main as cli_main
    from webhook.config import Config
    from webhook.generate.mapparse import parse_map
    from webhook.generate.policies import generate
    from webhook.generate.proof import prove
    from webhook.generate.script import render

    ap = argparse.ArgumentParser(prog="python -m bench.generate")
    ap.add_argument("--workloads", type=int, default=200)
    ap.add_argument("--flows", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)

    text = build_map(args.workloads, args.flows)
    config = Config()
    t_parse, cmap = _best(lambda: parse_map(text, "bench-map.yaml"), args.repeat)
    t_gen, policies = _best(lambda: generate(cmap, config.dns), args.repeat)
    t_proof, report = _best(lambda: prove(cmap, [p.obj for p in policies], config), args.repeat)
    t_script, _ = _best(lambda: render(cmap), args.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/map.yaml"
        with open(path, "w") as fh:
            fh.write(text)

        def command() -> int:
            with contextlib.redirect_stdout(io.StringIO()):  # the command's own summary
                return cli_main(["generate", "--map", path, "--out", f"{tmp}/out"])
        t_cmd, rc = _best(command, args.repeat)
        # What a user waits for: a fresh process, interpreter start-up and imports included.
        argv = [sys.executable, "-m", "webhook", "generate", "--map", path, "--out", f"{tmp}/fresh"]
        t_proc, proc_rc = _best(lambda: subprocess.run(argv, stdout=subprocess.DEVNULL, timeout=600,
                                                      cwd=os.getcwd()).returncode, args.repeat)
    print(f"generate benchmark: {args.workloads} workloads, {len(cmap.flows)} flows, "
          f"{len(cmap.egress)} external egress, {len(cmap.ingress)} external ingress entries")
    print(f"  policies generated: {len(policies)}; {report.summary()}")
    print(f"  parse map      {t_parse * 1000:8.1f} ms")
    print(f"  generate       {t_gen * 1000:8.1f} ms")
    print(f"  proof          {t_proof * 1000:8.1f} ms")
    print(f"  script         {t_script * 1000:8.1f} ms")
    print(f"  whole command  {t_cmd * 1000:8.1f} ms (in process, writing {len(policies) + 2} files; exit {rc})")
    print(f"  fresh process  {t_proc * 1000:8.1f} ms (python -m webhook generate --map ... --out ...; exit {proc_rc})")
    print(f"  (best of {args.repeat} runs each)")
    return 0 if report.ok and rc == 0 and proc_rc == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
