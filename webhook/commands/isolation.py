"""`netpol-guard isolation render`: the managed policies the controller keeps in a namespace."""
from __future__ import annotations

import argparse
import sys

NAME = "isolation"
HELP = "show the default-deny and DNS policies the isolation controller manages"
DESCRIPTION = """\
A namespace labeled netpol-guard.io/isolate=all|ingress|egress gets a default-deny policy for
those directions, plus netpol-guard-allow-dns whenever egress is denied. `render` prints them.

example:
  netpol-guard isolation render --namespace shop --mode all | kubectl apply --dry-run=server -f -
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="isolation_command", metavar="SUBCOMMAND", required=True)
    r = sub.add_parser("render", help="print the managed policies for a namespace as YAML")
    r.add_argument("--namespace", "-n", required=True, help="the namespace")
    r.add_argument("--mode", choices=("all", "ingress", "egress"), default="all",
                   help="the value of the isolate label (default: all)")
    r.add_argument("--config", metavar="FILE", help="netpol-guard configuration (DNS target, label key)")


def run(args: argparse.Namespace) -> int:
    import yaml

    from webhook.cli import UsageError
    from webhook.config import ConfigError, load
    from webhook.isolation.desired import desired_policies
    from webhook.policy.selectors import dns_label_problem

    problem = dns_label_problem(args.namespace)
    if problem:
        raise UsageError(f"--namespace: {problem}")
    try:
        config = load(args.config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    yaml.safe_dump_all(desired_policies(args.namespace, args.mode, config), sys.stdout, sort_keys=False)
    return 0
