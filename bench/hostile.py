"""Hostile-input benchmark: what refusing bad files costs, and what the checks cost on
good ones.

`python -m bench hostile [--pods N] [--runs N]`

1. Each hostile file (billion laughs, a self-referencing alias, a 5,000-digit integer,
   JSON nested 100,000 deep, /dev/zero) through `read_file`, the loader of lint,
   simulate and serve --cluster: CPU seconds and Python heap peak (tracemalloc) until
   the InputError. Before webhook/safeload.py the laughs took 4 GB and a minute.
2. A snapshot of N pods (default 20,000, the lint benchmark's pod shape) as YAML and as
   JSON through `parse_text`: CPU seconds, the best of --runs; and what the full alias
   check (`safeload.check_node`, run only for documents that use aliases or tags the
   fast path leaves to PyYAML) would cost on it.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
import tracemalloc
from pathlib import Path

LAUGHS = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: lol}\ndata:\n" + "  a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"  {n}: &{n} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, n in zip("abcdefgh", "bcdefghi"))
HOSTILE = {
    "laughs.yaml": LAUGHS,
    "self-alias.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: &a [*a]\n",
    "huge-int.json": '{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": ' + "9" * 5000 + "}",
    "deep.json": '{"apiVersion": "v1", "kind": "ConfigMap", "data": ' + "[" * 100_000 + "]" * 100_000 + "}",
}


def _refusal(path: str) -> tuple[float, float, str]:
    from webhook.cluster.files import InputError, read_file
    tracemalloc.start()
    started = time.process_time()
    try:
        read_file(path)
        outcome = "read (not refused!)"
    except InputError as exc:
        outcome = exc.message
    cpu = time.process_time() - started
    peak = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    return cpu, peak, outcome


def _best(fn, runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.process_time()
        fn()
        best = min(best, time.process_time() - started)
    return best


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench hostile")
    ap.add_argument("--pods", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)
    from bench.lint import _pod
    from webhook import safeload
    from webhook.cluster.files import parse_text

    with tempfile.TemporaryDirectory() as tmp:
        print("| file | CPU s to refuse | heap peak MB | message |\n|---|---|---|---|")
        for name, text in HOSTILE.items():
            path = Path(tmp) / name
            path.write_text(text)
            cpu, peak, outcome = _refusal(str(path))
            print(f"| {name} ({len(text):,} bytes) | {cpu:.3f} | {peak:.1f} | {outcome[:70]} |")
        cpu, peak, outcome = _refusal("/dev/zero")
        print(f"| /dev/zero | {cpu:.3f} | {peak:.1f} | {outcome} |")

    yaml_text = "".join(_pod(f"ns{i % 200:03d}", "api", i, f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
                        for i in range(args.pods))
    objects = [d.obj for d in parse_text(yaml_text, "pods.yaml")]
    json_text = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    nodes = [node for node, _ in safeload.yaml_nodes(yaml_text)]
    print(f"\n{args.pods:,} pods, best of {args.runs} (CPU s):")
    print(f"- parse_text YAML ({len(yaml_text) / 1e6:.1f} MB): {_best(lambda: parse_text(yaml_text, 'p.yaml'), args.runs):.3f}")
    print(f"- parse_text JSON ({len(json_text) / 1e6:.1f} MB): {_best(lambda: parse_text(json_text, 'p.json'), args.runs):.3f}")
    print(f"- safeload.check_node over the YAML's {len(nodes):,} documents (not run for them: no aliases): "
          f"{_best(lambda: [safeload.check_node(n) for n in nodes], args.runs):.3f}")
    return 0
