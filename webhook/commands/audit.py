"""`netpol-guard audit`: every NetworkPolicy of a live cluster checked once, as the agent's
background audit does (for cron jobs and CI against a staging cluster)."""
from __future__ import annotations

import argparse
import json
import sys
import textwrap

NAME = "audit"
HELP = "check every NetworkPolicy of a live cluster once (text, JSON, PolicyReports, SARIF, GitHub, JUnit)"
DESCRIPTION = """\
Lists the cluster once (Namespaces, Pods, Services, NetworkPolicies, and the admin network
policies where the API server serves them) and runs every rule on every NetworkPolicy against
it, as the pod agent's background audit does. The rules judge NetworkPolicies alone; admin
policies in the cluster are named in the summary, since they can override a finding. Policies in the
configuration's exemptNamespaces are left out, as the webhook leaves them out.

  --format text          one line per finding, then a summary
  --format json          {"findings": [...], "cluster": [...], "summary": {...}} (lint's shape)
  --format policyreport  a kind: List of wgpolicyk8s.io/v1alpha2 PolicyReports (one per
                         namespace) and a ClusterPolicyReport, as the agent writes them
  --format sarif         SARIF 2.1.0 as `lint --format sarif` writes it; a finding has no file,
                         so its location is the object's API path (for example
                         apis/networking.k8s.io/v1/namespaces/shop/networkpolicies/api) and a
                         logical location shop/NetworkPolicy/api
  --format github        GitHub workflow annotations (::error title=...::), without a file
  --format junit         JUnit XML, one test case per policy (classname: its namespace)

The cluster-level results (isolation-policy-missing, dns-target-missing) are in every format.

exit status: 0 no error-level finding; 1 at least one (or the DNS target selects no pod);
2 unusable input or usage (no kubeconfig, cluster unreachable, bad configuration).

examples:
  netpol-guard audit --kubeconfig ~/.kube/config --context staging
  netpol-guard audit --format policyreport | kubectl apply -f -
  netpol-guard audit --format sarif > netpol-guard-cluster.sarif
  kubectl netpol-guard audit --namespace shop
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kubeconfig", metavar="FILE", help="kubeconfig (default: in-cluster, else ~/.kube/config)")
    p.add_argument("--context", metavar="NAME", help="kubeconfig context (default: the current one)")
    p.add_argument("--namespace", "-n", metavar="NS", help="report only the policies of this namespace")
    p.add_argument("--config", metavar="FILE", help="netpol-guard configuration (YAML)")
    p.add_argument("--format", choices=("text", "json", "policyreport", "sarif", "github", "junit"), default="text",
                   help="text (default); json; policyreport; sarif (SARIF 2.1.0, for code scanning); github "
                        "(workflow annotations); junit (JUnit XML, one test case per policy)")
    p.add_argument("--quiet", "-q", action="store_true", help="text format: print findings only, no summary")


def run(args: argparse.Namespace) -> int:
    from webhook.audit.auditor import (ISOLATION_MISSING_RULE, Auditor, dns_target_problem, isolated_namespaces,
                                       isolation_problems)
    from webhook.bounded_text import shown
    from webhook.cli import EXIT_FINDINGS, EXIT_OK, UsageError
    from webhook.cluster.admin_policies import admin_counts, admin_note
    from webhook.cluster.listing import ListingError, forbidden_notes, list_cluster
    from webhook.config import ConfigError, load

    try:
        config = load(args.config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    try:
        listed = list_cluster(args.kubeconfig, args.context, config)
    except ListingError as exc:
        raise UsageError(str(exc)) from None
    if args.namespace and listed.view.namespace(args.namespace) is None:
        raise UsageError(f"--namespace {shown(args.namespace)}: no such namespace in the cluster")
    auditor = Auditor(listed.view, config)
    auditor.full()
    results = [r for _, r in sorted(auditor.results.items())
               if not args.namespace or r.policy.namespace == args.namespace]
    dns_problem = dns_target_problem(listed.view, config)
    missing = {ns: isolation_problems(listed.view, config, ns) for ns in isolated_namespaces(listed.view, config)
               if not args.namespace or ns == args.namespace}
    missing = {ns: p for ns, p in missing.items() if p}
    findings = [f for r in results for f in r.findings]
    counts = {s: sum(1 for f in findings if f.severity == s) for s in ("error", "warning", "info")}
    counts["error"] += sum(len(p) for p in missing.values())
    summary = {"policies": len(results), "errors": counts["error"], "warnings": counts["warning"],
               "infos": counts["info"], "objects": listed.counts}
    admin = admin_counts(listed.view)
    if admin:  # only then: a NetworkPolicy-only summary stays as it was (lint's keys)
        summary["adminPolicies"] = admin
    notes = [admin_note(admin, "the rules")] if admin else []
    notes += forbidden_notes(listed)
    extra = [{"rule": ISOLATION_MISSING_RULE, "category": "isolation", "severity": "error",
              "policy": f"{ns}/{name}", "file": None, "line": None, "path": "metadata.labels",
              "message": why, "fix": None} for ns, p in sorted(missing.items()) for name, why in p]
    if args.format in ("sarif", "github", "junit"):
        for note in notes:  # stdout stays machine-readable
            print(f"note: {note}", file=sys.stderr)
        _print_ci_format(args.format, findings, extra, dns_problem, config, results, summary, listed)
    elif args.format == "json":
        out = {"findings": [f.to_dict() for f in findings] + extra,
               "cluster": [{"rule": "dns-target-missing", "severity": "error", "message": dns_problem}]
               if dns_problem else [],
               "summary": summary}
        if listed.invalid_policies:
            out["unreadable"] = listed.invalid_policies
        if notes:
            out["notes"] = notes
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif args.format == "policyreport":
        _print_reports(auditor, results, dns_problem, config, missing)
    else:
        _print_text(results, summary, dns_problem, listed, args.quiet, missing, notes)
    return EXIT_FINDINGS if counts["error"] or dns_problem else EXIT_OK


def _print_ci_format(fmt, findings, isolation, dns_problem, config, results, summary, listed) -> None:
    """SARIF, GitHub annotations or JUnit through the renderer lint uses (webhook/formats.py).
    The cluster-level results are findings there too, placed on the Namespace they concern
    (the label that asks for the missing policy; the configured DNS namespace)."""
    from webhook.audit.auditor import CLUSTER_RULES, DNS_TARGET_RULE
    from webhook.formats import render

    rows = [f.to_dict() for f in findings]
    for f in isolation:
        rows.append({**f, "resource": {"apiVersion": "v1", "kind": "Namespace", "name": f["policy"].split("/")[0]}})
    if dns_problem:
        rows.append({"rule": DNS_TARGET_RULE, "category": "dns", "severity": "error",
                     "policy": "netpol-guard/dns-target",  # as the ClusterPolicyReport names it
                     "file": None, "line": None, "path": "dns", "message": dns_problem,
                     "fix": "dns:\n  namespace: <where the DNS pods run>\n"
                            "  podLabels: {<label>: <value the DNS pods carry>}",
                     "resource": {"apiVersion": "v1", "kind": "Namespace", "name": config.dns.namespace}})
    checked = [(r.policy.key, None) for r in results]
    sys.stdout.write(render(fmt, rows, {k: v for k, v in summary.items() if k != "objects"}, checked=checked,
                            tool="netpol-guard audit", extra_rules=CLUSTER_RULES))
    # never on stdout: the report must stay machine-readable
    for key, why in sorted(listed.invalid_policies.items()):
        sys.stderr.write(f"note: {key} is in the cluster but could not be read, so it was not checked: {why}\n")


def _print_reports(auditor, results, dns_problem, config, missing) -> None:
    import yaml

    from webhook.audit import report

    by_ns: dict[str, list] = {ns: [] for ns in missing}
    for r in results:
        by_ns.setdefault(r.policy.namespace, []).append(r)
    items = [rep for ns in sorted(by_ns)
             for rep in report.namespace_reports(ns, by_ns[ns], report.isolation_rows(ns, missing.get(ns, ())))]
    items += report.cluster_report(report.dns_target_rows(dns_problem, config.dns.namespace))
    yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items}, sys.stdout, sort_keys=False)


def _print_text(results, summary, dns_problem, listed, quiet: bool, missing, notes=()) -> None:
    out = sys.stdout
    for ns, problems in sorted(missing.items()):
        for name, why in problems:
            out.write(f"{ns}/{name}: error [isolation-policy-missing] metadata.labels: {why}\n")
    for r in results:
        for f in r.findings:
            out.write(f"{f.policy}: {f.severity} [{f.rule}] {f.path}: {f.message}\n")
            if f.fix:
                out.write("    fix:\n" + textwrap.indent(f.fix, "      ") + "\n")
    if dns_problem:
        out.write(f"cluster: error [dns-target-missing]: {dns_problem}\n")
    if quiet:
        return
    for key, why in sorted(listed.invalid_policies.items()):
        out.write(f"note: {key} is in the cluster but could not be read, so it was not checked: {why}\n")
    for note in notes:
        out.write(f"note: {note}\n")
    objects = ", ".join(f"{n} {k}" for k, n in listed.counts.items())
    out.write(f"\nlisted {objects}\n")
    from webhook.commands.lint import _plural
    out.write(f"audited {_plural(summary['policies'], 'NetworkPolicy', 'NetworkPolicies')}: "
              f"{_plural(summary['errors'], 'error')}, {_plural(summary['warnings'], 'warning')}, "
              f"{_plural(summary['infos'], 'info')}\n")
