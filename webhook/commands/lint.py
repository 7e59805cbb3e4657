"""`netpol-guard lint`: the checks, offline, for CI and pre-commit."""
from __future__ import annotations

import argparse
import json
import sys
import textwrap

NAME = "lint"
HELP = "check NetworkPolicy manifests (files or directories) against the rules"
DESCRIPTION = """\
Checks every NetworkPolicy found in PATH (files or directories; YAML or JSON; multi-document;
kind: List, and typed lists as the API returns them - kind: PodList from `kubectl get --raw`,
whose items name no kind). Every other object in PATH and in --cluster (Namespaces, Pods,
workloads, Services, other NetworkPolicies) forms the cluster view the checks see. AdminNetworkPolicies,
BaselineAdminNetworkPolicies and ClusterNetworkPolicies are read too (one the API server would
refuse is unusable input) and named in the summary; the checks look at NetworkPolicies alone.

With --kubeconfig/--context, the live cluster (listed once) is the cluster view (its admin
network policies too, where it serves them; a cluster without those CRDs simply has none), and the
files add to it (a policy in PATH replaces the cluster's policy of the same name); with no
PATH, the cluster's own NetworkPolicies are checked. --namespace narrows what is checked.

PATH `-` reads stdin (`helm template ... | netpol-guard lint -`).

When PATH holds no NetworkPolicy at all, lint says so and exits 2: a CI job pointed at
the wrong folder must not stay green. --allow-empty makes that exit 0.

In a directory (PATH or --cluster), files that hold no Kubernetes object - a Helm
Chart.yaml or values file, a kustomization.yaml, a communication map, other tools'
YAML - are skipped, each named in a note on stderr; --strict makes them unusable input.
A file named on the command line is always read as manifests, and broken YAML is never
skipped. Walking a directory, symlinked directories are followed (each real directory
once), hidden ones (.git, .github) are left out, and a FIFO, socket or device is skipped
with a note (docs/ci.md).

exit status: 0 no error-level finding; 1 at least one; 2 unusable input or usage.

examples:
  netpol-guard lint manifests/
  netpol-guard lint --kubeconfig ~/.kube/config --context staging --namespace shop
  netpol-guard lint --cluster snapshot/ --format json policies/
  netpol-guard lint --format sarif manifests/ > netpol-guard.sarif
  helm template charts/app | netpol-guard lint -
  netpol-guard lint --exclude 'charts/*' --exclude '*.values.yaml' manifests/
  netpol-guard lint --explain dns-egress-missing
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="*", metavar="PATH", help="files or directories with NetworkPolicies")
    p.add_argument("--cluster", action="append", default=[], metavar="PATH",
                   help="manifests that describe the cluster (Namespaces, Pods, workloads, Services, "
                        "policies); may be given more than once")
    p.add_argument("--config", metavar="FILE", help="netpol-guard configuration (YAML)")
    p.add_argument("--format", choices=("text", "json", "sarif", "github", "junit"), default="text",
                   help="text (default); json; sarif (SARIF 2.1.0, for code scanning); github (workflow "
                        "annotations); junit (JUnit XML, one test case per policy)")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                   help="leave out files whose path, path below the PATH given, or file name matches "
                        "GLOB (shell-style; may be given more than once)")
    p.add_argument("--allow-empty", action="store_true",
                   help="exit 0 when PATH holds no NetworkPolicy (by default that is exit 2)")
    p.add_argument("--strict", action="store_true",
                   help="a file in a directory that holds no Kubernetes object is unusable input (exit 2) "
                        "instead of skipped with a note")
    p.add_argument("--explain", metavar="RULE", help="print what a rule checks and why, with examples, and exit")
    p.add_argument("--quiet", "-q", action="store_true", help="text format: print findings only, no summary")
    p.add_argument("--kubeconfig", metavar="FILE", help="read the live cluster with this kubeconfig")
    p.add_argument("--context", metavar="NAME", help="kubeconfig context of the live cluster")
    p.add_argument("--namespace", "-n", metavar="NS", help="check only the policies of this namespace")


def run(args: argparse.Namespace) -> int:
    from webhook.bounded_text import bounded_finding, quoted, shown_path
    from webhook.cli import EXIT_FINDINGS, EXIT_OK, UsageError
    from webhook.cluster.admin_policies import add_admin_policies
    from webhook.cluster.files import InputError, load_snapshot, skipped_note
    from webhook.config import ConfigError, load
    from webhook.rules.base import REGISTRY
    from webhook.rules.batch import check_all

    if args.explain:
        from webhook.rules.docs import explain
        if args.explain not in REGISTRY:
            raise UsageError(f"no rule {quoted(args.explain)}; `netpol-guard rules` lists them")
        print(explain(REGISTRY.get(args.explain)))
        return EXIT_OK
    live = bool(args.kubeconfig or args.context)
    if not args.paths and not live:
        raise UsageError("no PATH given (files or directories with NetworkPolicies), and no --kubeconfig "
                         "or --context to check a live cluster's own")
    try:
        config = load(args.config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    listed = _list_live(args, config) if live else None
    try:
        files, walked = _select_files(args.paths, args.exclude) if args.paths else ([], set())
        snap = load_snapshot(files, args.cluster, view=listed.view if listed else None, walked=walked,
                             strict=args.strict)
        add_admin_policies(snap.view, snap.admin_policy_docs)
    except InputError as exc:
        raise UsageError(str(exc)) from None
    for file, why in snap.skipped:  # stderr in every format: stdout stays machine-readable
        sys.stderr.write(skipped_note(file, why) + "\n")
    subjects = [(d.obj, d.origin()) for d in snap.policy_docs]
    if listed and not args.paths:  # the cluster's own policies are the subjects
        subjects = [(p.raw, None) for p in sorted(listed.view.policies(), key=lambda p: p.key)]
    if args.namespace:
        subjects = [(obj, o) for obj, o in subjects
                    if ((obj.get("metadata") or {}).get("namespace") or "default") == args.namespace]
    if not subjects and not args.allow_empty:
        where = " ".join(shown_path(p) for p in args.paths) if args.paths else "the cluster"
        raise UsageError(
            f"no NetworkPolicy found in {where}"
            + (f" ({_plural(len(files), 'manifest file')}"
               + (f", {len(snap.skipped)} of them skipped as not Kubernetes objects" if snap.skipped else "")
               + ")" if args.paths else "")
            + "; nothing was checked. If that is expected, pass "
            "--allow-empty; otherwise check the PATH (a CI job pointed at the wrong folder "
            "would pass silently)")
    reports = check_all(snap.view, config, subjects, [(d.obj, d.origin()) for d in snap.context_policy_docs])
    findings = [bounded_finding(f) for r in reports for f in r.findings]  # each message/fix clipped
    counts = {s: sum(1 for f in findings if f.severity == s) for s in ("error", "warning", "info")}
    summary = {"policies": len(reports), "errors": counts["error"], "warnings": counts["warning"],
               "infos": counts["info"]}
    if args.format in ("sarif", "github", "junit"):
        from webhook.formats import render
        checked = [(_policy_key(d.obj), d.file) for d in snap.policy_docs]
        sys.stdout.write(render(args.format, [f.to_dict() for f in findings], summary, checked=checked))
    elif args.format == "json":
        summary["objects"] = dict(sorted(snap.kinds.items()))
        summary["files"] = snap.files
        admin = _admin_counts(snap.view)
        if admin:  # only then: a NetworkPolicy-only summary stays as it was
            summary["adminPolicies"] = admin
        if snap.view.not_evaluated:
            summary["notEvaluated"] = dict(sorted(snap.view.not_evaluated.items()))
        json.dump({"findings": [_file_shown(f.to_dict()) for f in findings], "summary": summary}, sys.stdout,
                  indent=2)
        sys.stdout.write("\n")
    else:
        _print_text(findings, summary, snap, args.quiet, listed)
        if listed and not args.quiet:
            sys.stdout.write("listed the live cluster: " + ", ".join(f"{n} {k}" for k, n in listed.counts.items())
                             + "\n")
    return EXIT_FINDINGS if counts["error"] else EXIT_OK


def _list_live(args: argparse.Namespace, config):
    from webhook.cli import UsageError
    from webhook.cluster.listing import ListingError, list_cluster
    try:
        return list_cluster(args.kubeconfig, args.context, config)
    except ListingError as exc:
        raise UsageError(str(exc)) from None


def _print_text(findings, summary, snap, quiet: bool, listed=None) -> None:
    from webhook.bounded_text import MESSAGE_MAX_CHARS, NAME_MAX_CHARS, escaped, shown, shown_path
    from webhook.cluster.admin_policies import admin_note
    from webhook.cluster.listing import forbidden_notes

    out = sys.stdout
    for f in findings:  # a terminal or a CI log: what came from the input is escaped (ESC, newlines)
        where = f"{shown_path(f.file)}:{f.line}" if f.line else (shown_path(f.file) if f.file else "<input>")
        out.write(f"{where}: {f.severity} [{f.rule}] {shown(f.policy, NAME_MAX_CHARS)} {shown(f.path, NAME_MAX_CHARS)}: "
                  f"{shown(f.message, MESSAGE_MAX_CHARS)}\n")
        if f.fix:
            out.write("    fix:\n" + textwrap.indent(escaped(f.fix, keep="\n"), "      ") + "\n")
    if quiet:
        return
    kinds = ", ".join(f"{n} {shown(k)}" for k, n in sorted(snap.kinds.items())) or "no objects"
    skipped = (f"; skipped {_plural(len(snap.skipped), 'file')} that hold no Kubernetes object (named on stderr)"
               if snap.skipped else "")
    out.write(f"\nread {_plural(sum(snap.kinds.values()), 'object')} from "
              f"{_plural(snap.files, 'file')} ({kinds}){skipped}\n")
    notes = []
    if not snap.view.namespaces_known:
        notes.append("no Namespace objects in view: namespace selectors were not checked against "
                     "namespace labels (add them to PATH or pass --cluster)")
    if not snap.view.pods_known:
        notes.append("no Pods or workloads in view: pod selectors were not checked for matches "
                     "(add them to PATH or pass --cluster)")
    admin = _admin_counts(snap.view)
    if admin:
        notes.append(admin_note(admin))
    if listed is not None:
        notes += forbidden_notes(listed)
    for kind, n in sorted(snap.view.not_evaluated.items()):
        notes.append(f"{n} {kind} object{'s' if n != 1 else ''} in view, not evaluated "
                     "(another network plugin's policy kind)")
    for n in notes:
        out.write(f"note: {n}\n")
    out.write(f"checked {_plural(summary['policies'], 'NetworkPolicy', 'NetworkPolicies')}: "
              f"{_plural(summary['errors'], 'error')}, {_plural(summary['warnings'], 'warning')}, "
              f"{_plural(summary['infos'], 'info')}\n")





def _file_shown(finding: dict) -> dict:
    """The finding with its file name as the text format shows it: a name that is not UTF-8
    (surrogate-escaped) would be a lone surrogate in JSON, which most readers refuse or
    mangle; \\xff says which byte it was."""
    if finding.get("file"):
        from webhook.bounded_text import shown_path
        finding["file"] = shown_path(finding["file"])
    return finding


def _admin_counts(view) -> dict[str, int]:
    from webhook.cluster.admin_policies import admin_counts
    return admin_counts(view)


def _policy_key(obj) -> str:
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    return f"{meta.get('namespace') or 'default'}/{meta.get('name') or '?'}"


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def _select_files(paths: list[str], exclude: list[str]) -> tuple[list[str], set[str]]:
    """The manifest files under PATH, less those --exclude names, and which of them were
    found in a directory (those may be skipped as not Kubernetes objects). A file is left
    out when a glob matches its path as found, its path below the PATH argument it came
    from, or its name, so `--exclude 'charts/*'` works whichever folder lint was pointed at."""
    import fnmatch
    import os

    from webhook.cluster.files import walk

    out: list[str] = []
    walked: set[str] = set()
    named = {p for p in paths if not os.path.isdir(p)}  # named on the command line: never skipped
    for root in paths:
        if root == "-":
            out.append(root)
            continue
        for f, in_dir in walk([root]):
            rel = os.path.relpath(f, root) if os.path.isdir(root) else os.path.basename(f)
            candidates = (f, rel, os.path.basename(f))
            if any(fnmatch.fnmatch(c, g) for g in exclude for c in candidates):
                continue
            out.append(f)
            if in_dir and f not in named:
                walked.add(f)
    return out, walked
