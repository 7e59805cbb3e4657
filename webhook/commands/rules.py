"""`netpol-guard rules`: list the rules, explain one, or render the reference page."""
from __future__ import annotations

import argparse
import json
import sys

NAME = "rules"
HELP = "list the rules, explain one (--explain ID), or print docs/rules.md (--format markdown)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("text", "json", "markdown"), default="text")
    p.add_argument("--explain", metavar="RULE", help="what the rule checks and why, with examples")


def run(args: argparse.Namespace) -> int:
    from webhook.bounded_text import quoted
    from webhook.cli import UsageError
    from webhook.rules import registry
    from webhook.rules.docs import explain, markdown

    if args.explain:
        if args.explain not in registry:
            raise UsageError(f"no rule {quoted(args.explain)}; `netpol-guard rules` lists them")
        sys.stdout.write(explain(registry.get(args.explain)))
    elif args.format == "markdown":
        sys.stdout.write(markdown())
    elif args.format == "json":
        json.dump([{"id": r.id, "category": r.category, "severity": r.severity, "summary": r.summary}
                   for r in registry], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        width = max(len(r.id) for r in registry)
        for r in registry:
            sys.stdout.write(f"{r.id:<{width}}  {r.category:<9}  {r.severity:<7}  {r.summary}\n")
    return 0
