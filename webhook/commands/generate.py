"""`netpol-guard generate`: least-privilege policies from a communication map, proven first."""
from __future__ import annotations

import argparse
import os
import sys

from webhook.cli import whole_number

NAME = "generate"
HELP = "write default-deny, allow-list, DNS and external-egress policies from a communication map"
DESCRIPTION = """\
Reads a communication map (YAML: namespaces, workloads with labels and ports, flows,
ingress from and egress to outside the cluster; see docs/generate.md) and writes, per
managed namespace: allow-dns, one allow-ingress-W per destination workload, one
allow-egress-W (and allow-external-egress-W) per source, and default-deny.

Before anything is written the set is proven against the map: every flow allowed, every
other flow among the map's workloads denied on each side, DNS working for every pod,
external egress exactly as listed (never the cloud metadata address), and `lint` finding
nothing above info. If the proof fails nothing is written.

Without --out the policies are printed as one YAML stream in apply order. With --out DIR
each policy is a file named so that the allowances are applied before the default-deny,
plus kustomization.yaml (apply the set with `kubectl apply -k DIR`) and
connectivity-tests.sh (run it against the cluster after applying). Files a previous run generated in DIR are replaced.

exit status: 0 written; 1 the proof failed (nothing written); 2 unusable map or usage.

examples:
  netpol-guard generate --map examples/maps/three-tier.yaml
  netpol-guard generate --map map.yaml --out policies/ && kubectl apply -k policies/
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--map", required=True, metavar="FILE", help="the communication map (YAML)")
    p.add_argument("--out", metavar="DIR", help="write one file per policy, kustomization.yaml and "
                                                "connectivity-tests.sh into DIR (created if missing)")
    p.add_argument("--config", metavar="FILE", help="netpol-guard configuration (YAML): DNS target, rule severities")
    p.add_argument("--denied-sample", type=whole_number, default=50, metavar="N",
                   help="how many flows the map does not allow connectivity-tests.sh probes (default 50)")


def run(args: argparse.Namespace) -> int:
    from webhook.cli import EXIT_FINDINGS, EXIT_OK, UsageError
    from webhook.config import ConfigError, load
    from webhook.generate.mapparse import MapError, parse_map, read_map
    from webhook.generate.policies import generate
    from webhook.generate.proof import prove
    from webhook.generate.render import files, stream
    from webhook.generate.script import render

    try:
        config = load(args.config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    if args.denied_sample < 0:
        raise UsageError("--denied-sample must be 0 or more")
    try:
        text = read_map(args.map)
    except MapError as exc:
        raise UsageError(str(exc)) from None
    try:
        cmap = parse_map(text, args.map)
        policies = generate(cmap, config.dns)
    except MapError as exc:
        raise UsageError(f"the map has {len(exc.problems)} problem(s):\n" + str(exc)) from None

    report = prove(cmap, [p.obj for p in policies], config)
    if not report.ok:
        err = sys.stderr
        err.write(f"netpol-guard generate: the generated policies do not match the map; nothing written.\n")
        for f in report.failures[:50]:
            err.write(f"  {f}\n")
        if len(report.failures) > 50:
            err.write(f"  ... and {len(report.failures) - 50} more\n")
        err.write(report.summary() + "\n")
        return EXIT_FINDINGS

    if not args.out:
        sys.stdout.write(stream(policies, args.map))
        sys.stderr.write(f"{len(policies)} policies; {report.summary()}\n")
        return EXIT_OK
    content = files(policies, args.map, render(cmap, args.map, args.denied_sample))
    _write(args.out, content)
    print(f"wrote {len(policies)} policies, kustomization.yaml and connectivity-tests.sh to {args.out}")
    print(report.summary())
    # DIR holds kustomization.yaml, which `kubectl apply -f DIR` would try to apply as an object
    print(f"next: kubectl apply -k {args.out} && {os.path.join(args.out, 'connectivity-tests.sh')}")
    return EXIT_OK


# Generated files are small; one bigger than this in DIR is not ours and is left alone.
_GENERATED_MAX_BYTES = 4 * 1024 * 1024


def _write(out: str, content: dict[str, str]) -> None:
    """Write the files into DIR without following a symlink anyone planted there (at a
    file's name or at a temporary name): webhook.safewrite."""
    from webhook.bounded_text import shown_path
    from webhook.cli import UsageError
    from webhook.generate.policies import MANAGED_BY_VALUE
    from webhook.generate.render import KUSTOMIZATION, SCRIPT
    from webhook.safewrite import read_own_file, replace_file

    marker = MANAGED_BY_VALUE.encode()
    try:
        os.makedirs(out, exist_ok=True)
        # Files an earlier run generated but this one does not would still be applied by
        # `kubectl apply -f DIR`: remove them. Anything else in DIR is left alone, and so is
        # whatever is not a regular file (a symlink is not ours to read or remove).
        for name in sorted(os.listdir(out)):
            path = os.path.join(out, name)
            if name in content or name == KUSTOMIZATION or not name.endswith((".yaml", ".yml")):
                continue
            data = read_own_file(path, _GENERATED_MAX_BYTES + 1)
            if data is not None and len(data) <= _GENERATED_MAX_BYTES and marker in data:
                os.remove(path)
        for name, text in content.items():
            replace_file(os.path.join(out, name), text.encode("utf-8"), 0o755 if name == SCRIPT else 0o644)
    except OSError as exc:
        raise UsageError(f"{shown_path(out)}: cannot write: {exc.strerror}") from None
