"""`netpol-guard controller`: the isolation controller on its own, with leader election."""
from __future__ import annotations

import argparse
import sys

from webhook.cli import whole_number

NAME = "controller"
HELP = "run the isolation controller (default-deny in labeled namespaces) with leader election"
DESCRIPTION = """\
Keeps netpol-guard-default-deny (and netpol-guard-allow-dns when egress is denied) in every
namespace labeled netpol-guard.io/isolate=all|ingress|egress: creates them, restores them
when deleted or edited by hand, removes them when the label goes (isolation.onLabelRemoved).
Several replicas may run: a coordination.k8s.io/v1 Lease makes exactly one of them the writer.
Runs until SIGTERM or SIGINT, then hands the Lease back.

examples:
  netpol-guard controller --config /etc/netpol-guard/config.yaml
  netpol-guard controller --kubeconfig ~/.kube/config --lease-namespace netpol-guard --identity dev-laptop
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="netpol-guard configuration (YAML)")
    p.add_argument("--kubeconfig", metavar="FILE",
                   help="kubeconfig to use (default: in-cluster configuration, else ~/.kube/config)")
    p.add_argument("--lease-namespace", metavar="NS",
                   help="namespace of the Lease (default: POD_NAMESPACE, else the service account's, "
                        "else netpol-guard)")
    p.add_argument("--lease-name", metavar="N", help="name of the Lease (default: leaderElection.leaseName)")
    p.add_argument("--identity", metavar="ID", help="this replica's name in the Lease (default: POD_NAME, "
                                                     "else hostname_pid)")
    p.add_argument("--workers", type=whole_number, default=4, metavar="N", help="namespaces reconciled in parallel (default 4)")


def run(args: argparse.Namespace) -> int:
    from webhook.cli import UsageError
    from webhook.config import ConfigError, load
    from webhook.policy.selectors import dns_label_problem, dns_subdomain_problem

    try:
        config = load(args.config)
    except ConfigError as exc:
        raise UsageError(f"bad configuration:\n{exc}") from None
    if args.lease_namespace and dns_label_problem(args.lease_namespace):
        raise UsageError(f"--lease-namespace: {dns_label_problem(args.lease_namespace)}")
    if args.lease_name and dns_subdomain_problem(args.lease_name):
        raise UsageError(f"--lease-name: {dns_subdomain_problem(args.lease_name)}")
    if args.identity is not None and not args.identity.strip():
        raise UsageError("--identity must not be empty")
    if args.workers < 1:
        raise UsageError("--workers must be at least 1")

    from webhook.isolation.controller import kube_api_client, run_in_background, wait_for_termination
    from webhook.logging_setup import configure

    try:
        api_client = kube_api_client(args.kubeconfig)
    except Exception as exc:  # noqa: BLE001 - missing or unreadable kubeconfig
        raise UsageError(f"no cluster to talk to: not in a pod and no usable kubeconfig "
                         f"({args.kubeconfig or '~/.kube/config'}): {exc}") from None
    configure()
    running = run_in_background(config, api_client, lease_namespace=args.lease_namespace,
                                lease_name=args.lease_name, identity=args.identity, workers=args.workers)
    e = running.elector
    print(f"netpol-guard controller: campaigning for Lease {e.namespace}/{e.name} as {e.identity}", file=sys.stderr)
    try:
        wait_for_termination()
    finally:
        running.stop()
        api_client.close()
    return 0
