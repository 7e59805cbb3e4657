"""`netpol-guard simulate`: may A reach B, the whole matrix, and what a change opens or closes."""
from __future__ import annotations

import argparse
import ipaddress
import json
import sys

from webhook.bounded_text import MESSAGE_MAX_CHARS, escaped, quoted, shown, shown_path

NAME = "simulate"
HELP = "answer whether traffic is allowed and which policies decide it; matrix and diff"
DESCRIPTION = """\
Evaluates NetworkPolicies over a cluster described by manifests (--cluster; files or
directories, may be repeated): Namespaces, Pods, workloads, Services and NetworkPolicies,
and, where given, AdminNetworkPolicies, the BaselineAdminNetworkPolicy and ClusterNetworkPolicies
(policy.networking.k8s.io): admin tier by priority, then NetworkPolicies, then the baseline.
With --kubeconfig/--context the live cluster is read instead (listed once), its admin network
policies too where the API server serves them (a cluster without those CRDs has none).

  --from NS/NAME --to NS/NAME   one flow: allowed or denied, and the policies and rules
                                that decide each side (the source's egress, the
                                destination's ingress)
  only --from, only --to        one row / one column of the matrix
  neither                       the pod-by-pod matrix
  --diff OLD NEW                which flows a change opens and which it closes

NS/NAME names a Pod, or a workload (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job,
CronJob) by its own name, standing for its template's pods. An IP address stands for an
endpoint outside the cluster, or the pod that has it; --to a Service's ClusterIP checks
each backing pod on the Service's targetPort, as policies see the traffic.
--port PORT[/PROTO]: 8080/TCP, 53/UDP, 8080 (TCP), or a port name resolved against each
destination's container ports. Without --port, the matrix covers every declared container
port of each destination.

exit status: 0 answered (allowed or denied, changes or none); 2 unusable input or usage.

examples:
  netpol-guard simulate --cluster examples/cluster --from shop/frontend --to shop/api --port 8080
  netpol-guard simulate --cluster examples/cluster --port 53/UDP --explain
  netpol-guard simulate --cluster examples/cluster --from shop/api --format json
  netpol-guard simulate --cluster base/ --diff old-policies/ new-policies/
"""


def say(text: str) -> None:
    """A line of text output: names come from the files (pods, policies, namespaces), so
    anything not printable is escaped - no terminal escapes, no forged extra lines."""
    print(escaped(text))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cluster", action="append", default=[], metavar="PATH",
                   help="manifests describing the cluster, policies included; may be repeated")
    p.add_argument("--from", dest="source", metavar="NS/NAME|IP", help="source pod, workload or IP")
    p.add_argument("--to", dest="destination", metavar="NS/NAME|IP", help="destination pod, workload or IP")
    p.add_argument("--port", metavar="PORT[/PROTO]", help="e.g. 8080/TCP, 53/UDP, http (protocol defaults to TCP)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--explain", action="store_true", help="matrix: name the policy and rule deciding each flow")
    p.add_argument("--dot", metavar="FILE", help="matrix: also write a Graphviz digraph of allowed flows")
    p.add_argument("--diff", nargs=2, metavar=("OLD", "NEW"),
                   help="two manifest sets (files or directories); print the flows the change opens and closes")
    p.add_argument("--config", metavar="FILE", help="netpol-guard configuration (cluster.ipBlockMatchesPods)")
    p.add_argument("--kubeconfig", metavar="FILE", help="read the live cluster (listed once) with this kubeconfig")
    p.add_argument("--context", metavar="NAME", help="kubeconfig context of the live cluster")
    p.add_argument("--namespace", "-n", metavar="NS", help="matrix: only the pods of this namespace")
    p.add_argument("--ip-block-matches-pods", action="store_true", default=None,
                   help="let ipBlocks match pod IPs (CNI-dependent; off by default)")
    p.add_argument("--strict", action="store_true",
                   help="a file in a --cluster directory that holds no Kubernetes object is unusable input "
                        "(exit 2) instead of skipped with a note on stderr")


def run(args: argparse.Namespace) -> int:
    from webhook.cli import UsageError
    from webhook.cluster.files import InputError
    from webhook.config import ConfigError, load
    from webhook.policy.matrix import parse_port

    try:
        config = load(args.config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    matches_pods = (args.ip_block_matches_pods if args.ip_block_matches_pods is not None
                    else config.cluster.ipBlockMatchesPods)
    query = None
    if args.port:
        try:
            query = parse_port(args.port)
        except ValueError as exc:
            raise UsageError(f"--port {exc}") from None
    try:
        if args.diff:
            if args.source or args.destination or args.port or args.dot:
                raise UsageError("--diff compares every pod and declared port; "
                                 "it takes no --from, --to, --port or --dot")
            return _run_diff(args, matches_pods)
        live = bool(args.kubeconfig or args.context)
        if not args.cluster and not live:
            raise UsageError("no --cluster PATH given (manifests with Namespaces, workloads and policies), "
                             "and no --kubeconfig or --context to read a live cluster")
        engine = build_engine([], args.cluster, matches_pods, view=_list_live(args, config) if live else None,
                              strict=args.strict)
    except InputError as exc:
        raise UsageError(str(exc)) from None
    src = resolve_endpoint(engine, args.source, "--from") if args.source else None
    dst = resolve_endpoint(engine, args.destination, "--to") if args.destination else None
    if isinstance(dst, ServiceTarget):
        if src is None:
            raise UsageError(f"--to {args.destination} is a Service IP: give --from (and --port) to check a "
                             "flow to it, or name its pods with --to for a column")
        return _run_service_flow(args, engine, src, dst, query)
    if src is not None and dst is not None:
        if args.dot:
            raise UsageError("--dot draws a matrix: leave out --from or --to")
        return _run_flow(args, engine, src, dst, query)
    return _run_matrix(args, engine, src, dst, query)


# --- loading ------------------------------------------------------------------------------

def _list_live(args, config):
    from webhook.cli import UsageError
    from webhook.cluster.listing import ListingError, list_cluster
    try:
        listed = list_cluster(args.kubeconfig, args.context, config)
    except ListingError as exc:
        raise UsageError(str(exc)) from None
    from webhook.cluster.listing import forbidden_notes
    for note in forbidden_notes(listed):  # stderr: stdout stays the answer (and valid JSON)
        sys.stderr.write(f"note: {note}\n")
    return listed.view


def build_engine(paths, cluster_paths, ip_block_matches_pods: bool, view=None, strict: bool = False):
    """An Engine over the view of `paths` + `cluster_paths` (added to `view`, the live cluster,
    when given), every policy parsed and in view. Files in a directory that hold no Kubernetes
    object are skipped with a note on stderr (unusable input with `strict`).

    A policy the API server would refuse is unusable input (exit 2): simulating a cluster
    that cannot exist answers nothing.
    """
    from webhook.cluster.admin_policies import add_admin_policies
    from webhook.cluster.files import InputError, load_snapshot, skipped_note
    from webhook.policy.engine import Engine
    from webhook.policy.limits import TOO_LARGE
    from webhook.policy.parse import parse_policy

    snap = load_snapshot(paths, cluster_paths, view=view, strict=strict)
    for file, why in snap.skipped:
        sys.stderr.write(skipped_note(file, why) + "\n")
    for doc in snap.context_policy_docs + snap.policy_docs:
        result = parse_policy(doc.obj, origin=doc.origin())
        if not result.ok:
            err = result.errors[0]
            origin = doc.origin()
            path = str(getattr(err, "path", ""))
            line = origin.line_of(path) if path else doc.line
            name = (doc.obj.get("metadata") or {}).get("name") if isinstance(doc.obj.get("metadata"), dict) else None
            why = ("is too large for netpol-guard" if err.kind == TOO_LARGE
                   else "is invalid (the API server would refuse it)")
            raise InputError(doc.file, f"NetworkPolicy {shown(name or '?')} {why}: "
                                       f"{shown(err, MESSAGE_MAX_CHARS)}; `netpol-guard lint` lists every problem",
                             line)
        snap.view.upsert_policy(result.policy)
    add_admin_policies(snap.view, snap.admin_policy_docs)
    return Engine(snap.view, ip_block_matches_pods)


def admin_summary(engine) -> list[str]:
    """Lines naming the admin policies the answers account for, and the kinds they do not;
    none for a view of NetworkPolicies only (whose output stays as it always was)."""
    lines = []
    admins = engine.admin_policies()
    if admins:
        tiers = [p.describe() for p in admins if p.tier == "admin"] + ["NetworkPolicies"]
        tiers += [p.describe() for p in admins if p.tier == "baseline"]
        lines.append("evaluated in this order: " + ", ".join(tiers))
    for kind, n in sorted(engine.view.not_evaluated.items()):
        lines.append(f"note: {n} {kind} object{'s' if n != 1 else ''} in view NOT evaluated (another network "
                     f"plugin's policy kind): the answers below ignore {'them' if n != 1 else 'it'}")
    return lines


def admin_summary_json(engine) -> dict:
    """JSON keys for the same, only when there is something to say."""
    out: dict = {}
    admins = engine.admin_policies()
    if admins:
        out["adminPolicies"] = [{"kind": p.kind, "name": p.name, **({"priority": p.priority}
                                                                    if p.priority is not None else {})}
                                for p in admins]
    if engine.view.not_evaluated:
        out["notEvaluated"] = dict(sorted(engine.view.not_evaluated.items()))
    return out


def resolve_endpoint(engine, text: str, flag: str):
    """NS/NAME (a pod or a workload) or an IP address (the pod with that IP, if any)."""
    from webhook.cli import UsageError
    from webhook.policy.engine import Endpoint

    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        ip = None
    if ip is not None:
        for pod in engine.view.pods():
            if str(ip) in pod.ips:
                return Endpoint.of_pod(pod)
        svc = service_with_ip(engine.view, str(ip))
        if svc is not None:
            if flag != "--to":
                raise UsageError(f"{flag} {shown(text)} is the ClusterIP of Service {svc.key}; traffic never "
                                 "comes from a Service: name a pod or workload")
            return ServiceTarget(svc, backends(engine.view, svc))
        return Endpoint.of_ip(ip)
    ns, sep, name = text.partition("/")
    if sep and name.isascii() and name.isdigit():
        try:
            ipaddress.ip_network(text, strict=False)
            raise UsageError(f"{flag} {shown(text)}: give one address, not a CIDR (e.g. {shown(ns)})")
        except ValueError:
            pass
    if not sep or not ns or not name or "/" in name:
        raise UsageError(f"{flag} {quoted(text)}: expected NAMESPACE/NAME (a pod or workload) or an IP address")
    pod = engine.view.find_pod(ns, name)
    if pod is None:
        known = sorted(p.name for p in engine.view.pods(ns))
        hint = (f"; known in {shown(ns)}: {', '.join(shown(k) for k in known[:12])}"
                f"{' ...' if len(known) > 12 else ''}" if known
                else f"; the cluster has no pods or workloads in namespace {quoted(ns)}")
        raise UsageError(f"{flag} {shown(text)}: no such pod or workload{hint}")
    return Endpoint.of_pod(pod)


class ServiceTarget:
    """`--to <ClusterIP>`: policies never see the Service. kube-proxy (or the CNI) translates
    the address to one of its pods and the port to the targetPort first, so a flow to a
    Service is a flow to each backing pod on the translated port."""

    def __init__(self, service, pods):
        self.service, self.pods = service, pods

    def describe(self) -> str:
        return f"service {self.service.key}"

    def translate(self, query, pod) -> tuple[int, str] | None:
        """(pod port, protocol) for a Service port, or None when the Service has no such port."""
        for sp in self.service.ports:
            if sp.protocol.upper() != query.protocol:
                continue
            if sp.port == query.port or (isinstance(query.port, str) and sp.name == query.port):
                if isinstance(sp.target_port, int):
                    return sp.target_port, query.protocol
                number = pod.named_port(sp.target_port, query.protocol)
                return (number, query.protocol) if number is not None else None
        return None


def service_with_ip(view, ip: str):
    for svc in view.services():
        if ip in svc.cluster_ips:
            return svc
    return None


def backends(view, svc) -> list:
    from webhook.policy.engine import Endpoint
    from webhook.policy.selectors import LabelSelector

    if not svc.selector:
        return []
    sel = LabelSelector(tuple(sorted(svc.selector.items())))
    return [Endpoint.of_pod(p) for p in sorted(view.select_pods(svc.namespace, sel), key=lambda p: p.ref)]


def _run_service_flow(args, engine, src, target: "ServiceTarget", query) -> int:
    from webhook.cli import UsageError

    if query is None:
        raise UsageError("--to a Service IP needs --port (the Service's port, e.g. --port 80)")
    if not target.pods:
        raise UsageError(f"--to {args.destination}: Service {target.service.key} selects no pod or "
                         "workload in the manifests")
    verdicts = []
    for pod in target.pods:
        translated = target.translate(query, pod.pod)
        if translated is None:
            ports = ", ".join(f"{p.port}/{p.protocol}" for p in target.service.ports) or "none"
            raise UsageError(f"--port {query.describe()}: Service {target.service.key} has no such port "
                             f"(its ports: {ports}) or its targetPort is not declared by {pod.describe()}")
        verdicts.append(engine.evaluate(src, pod, *translated))
    allowed = all(v.allowed for v in verdicts)
    if args.format == "json":
        print(json.dumps({"allowed": allowed, "service": target.service.key,
                          "servicePort": query.describe(), "backends": [v.to_dict() for v in verdicts],
                          **admin_summary_json(engine)},
                         indent=2))
        return 0
    for line in admin_summary(engine):
        say(line)
    say(f"{src.describe()} -> service {target.service.key} {query.describe()}: "
        f"{'allowed' if allowed else 'denied'} (policies see the backing pods and the targetPort)")
    for v in verdicts:
        say(f"  {v.destination} {v.port}/{v.protocol}: {'allowed' if v.allowed else 'denied'}")
        say("    " + v.egress.explain())
        say("    " + v.ingress.explain())
    return 0


# --- one flow -----------------------------------------------------------------------------

def _run_flow(args, engine, src, dst, query) -> int:
    from webhook.cli import UsageError
    from webhook.policy.matrix import resolve_port

    if query is None:
        raise UsageError("--from and --to need --port (e.g. --port 8080/TCP); "
                         "leave out --to to see every port of every destination")
    number = resolve_port(query, dst)
    if number is None:
        declared = ", ".join(f"{p.name}={p.port}/{p.protocol}" for p in (dst.pod.ports if dst.pod else ()) if p.name)
        raise UsageError(f"--port {query.describe()}: {dst.describe()} declares no {query.protocol} port named "
                         f"{query.port!r}" + (f" (named ports: {declared})" if declared else ""))
    verdict = engine.evaluate(src, dst, number, query.protocol)
    if args.format == "json":
        print(json.dumps({**verdict.to_dict(), **admin_summary_json(engine)}, indent=2))
    else:
        for line in admin_summary(engine):
            say(line)
        word = "allowed" if verdict.allowed else "denied"
        say(f"{verdict.source} -> {verdict.destination} {number}/{query.protocol}: {word}")
        say("  " + verdict.egress.explain())
        say("  " + verdict.ingress.explain())
    return 0


# --- matrix -------------------------------------------------------------------------------

def _run_matrix(args, engine, src, dst, query) -> int:
    from webhook.cli import UsageError
    from webhook.policy.matrix import compute, pods_of

    pods = pods_of(engine)
    if getattr(args, "namespace", None):
        pods = [p for p in pods if p.pod is not None and p.pod.namespace == args.namespace]
    if not pods:
        raise UsageError("the cluster has no pods or workloads" + (f" in namespace {shown(args.namespace)}"
                         if getattr(args, "namespace", None) else "") + ": nothing to simulate")
    if dst is not None and dst.pod is None and query is None:
        raise UsageError(f"--to {dst.describe()} is outside the cluster and declares no ports: give --port")
    sources = [src] if src is not None else pods
    destinations = [dst] if dst is not None else pods
    matrix = compute(engine, sources, destinations, query)
    if args.dot:
        from webhook.safewrite import write_output
        try:  # as generate --out: a symlink planted at FILE is replaced, never written through
            write_output(args.dot, render_dot(matrix).encode("utf-8"), 0o644)
        except OSError as exc:
            raise UsageError(f"--dot {shown_path(args.dot)}: cannot write: {exc.strerror}") from None
    if args.format == "json":
        print(json.dumps({**matrix.to_dict(args.explain), **admin_summary_json(engine)}, indent=2))
    else:
        for line in admin_summary(engine):
            say(line)
        sys.stdout.write(render_matrix(matrix, args.explain))
    return 0


def _cell_mark(cells) -> str:
    if not cells:
        return "-"
    allowed = sum(1 for c in cells if c.allowed)
    return "Y" if allowed == len(cells) else "." if allowed == 0 else "~"


def render_matrix(m, explain: bool = False) -> str:
    """A grid for many pods (Y all allowed, . all denied, ~ some ports, - no port applies),
    a list for one row or one column."""
    what = (f"port {m.query.describe()}" if m.query else "every declared container port of each destination")
    out = [f"connectivity on {what}"]
    single = len(m.sources) == 1 or len(m.destinations) == 1
    if single:
        out.append("")
        for s in m.sources:
            for d in m.destinations:
                cells = m.cells_for(s, d)
                if not cells:
                    out.append(f"  {s} -> {d}: no {m.query.describe() if m.query else 'declared'} port")
                for c in cells:
                    word = "allowed" if c.allowed else "denied "
                    line = f"  {word} {s} -> {d} {c.port_label}"
                    if explain:
                        line += f"  ({c.verdict.reason()})"
                    out.append(line)
    else:
        out.append("  Y allowed   . denied   ~ some ports allowed   - no such port on the destination")
        out.append("")
        width = max(len(s) for s in m.sources)
        num_w = len(str(len(m.destinations)))
        col_w = max(num_w, 1) + 1
        out.append(" " * (width + 2) + "".join(f"{i + 1:>{col_w}}" for i in range(len(m.destinations))))
        for s in m.sources:
            marks = "".join(f"{_cell_mark(m.cells_for(s, d)):>{col_w}}" for d in m.destinations)
            out.append(f"{s:<{width}}  {marks}")
        out.append("")
        out.append("destinations:")
        dst_ports: dict[str, set[str]] = {}
        for c in m.cells:
            dst_ports.setdefault(c.destination, set()).add(c.port_label)
        for i, d in enumerate(m.destinations):
            ports = sorted(dst_ports.get(d, ()), key=_port_order)
            if m.query is not None and isinstance(m.query.port, int):
                out.append(f"{i + 1:>{num_w + 2}}  {d}")  # the one port, said in the heading
            else:
                out.append(f"{i + 1:>{num_w + 2}}  {d}  {' '.join(ports) if ports else '(no port)'}")
        partial = [(s, d) for s in m.sources for d in m.destinations if _cell_mark(m.cells_for(s, d)) == "~"]
        if partial and not explain:
            out.append("")
            out.append("some ports allowed:")
            for s, d in partial:
                ok = [c.port_label for c in m.cells_for(s, d) if c.allowed]
                no = [c.port_label for c in m.cells_for(s, d) if not c.allowed]
                out.append(f"  {s} -> {d}: allowed {' '.join(ok)}; denied {' '.join(no)}")
        if explain:
            out.append("")
            out.append("flows:")
            for c in m.cells:
                word = "allowed" if c.allowed else "denied "
                out.append(f"  {word} {c.source} -> {c.destination} {c.port_label}  ({c.verdict.reason()})")
    s = m.summary()
    out.append("")
    out.append(f"{s['flows']} flows: {s['allowed']} allowed, {s['denied']} denied")
    return "\n".join(escaped(line) for line in out) + "\n"  # names come from the files: see say()


def _port_order(label: str):
    port, _, proto = label.partition("/")
    return (int(port), proto)


def render_dot(m) -> str:
    """Allowed flows as edges (labelled with their ports); every endpoint as a node, grouped
    by namespace."""
    def q(s: str) -> str:
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = ["digraph connectivity {", "  rankdir=LR;", "  node [shape=box, fontname=Helvetica];"]
    nodes = list(dict.fromkeys(m.sources + m.destinations))
    by_ns: dict[str, list[str]] = {}
    for n in nodes:
        by_ns.setdefault(n.split("/", 1)[0] if "/" in n else "external", []).append(n)
    for i, (ns, members) in enumerate(sorted(by_ns.items())):
        lines.append(f"  subgraph cluster_{i} {{")
        lines.append(f"    label={q(ns)};")
        for n in members:
            lines.append(f"    {q(n)};")
        lines.append("  }")
    edges: dict[tuple[str, str], list[str]] = {}
    for c in m.cells:
        if c.allowed:
            edges.setdefault((c.source, c.destination), []).append(c.port_label)
    for (s, d), ports in edges.items():
        lines.append(f"  {q(s)} -> {q(d)} [label={q(', '.join(ports))}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


# --- diff ---------------------------------------------------------------------------------

def _run_diff(args, matches_pods: bool) -> int:
    from webhook.policy.matrix import diff

    old_path, new_path = args.diff
    old = build_engine([old_path], args.cluster, matches_pods, strict=args.strict)
    new = build_engine([new_path], args.cluster, matches_pods, strict=args.strict)
    d = diff(old, new)
    if args.format == "json":
        print(json.dumps(d.to_dict(), indent=2))
    else:
        sys.stdout.write(render_diff(d, old_path, new_path))
    return 0


def render_diff(d, old_path: str, new_path: str) -> str:
    out = [f"flows from {old_path} to {new_path} (every pod, every declared port)"]
    for title, changes, mark in (("opened", d.opened, "+"), ("closed", d.closed, "-")):
        out.append("")
        out.append(f"{title} ({len(changes)}):")
        if not changes:
            out.append("  none")
        for ch in changes:
            c = ch.cell
            why = f"now {c.verdict.reason()}"
            if mark == "-":  # a reviewer asks what used to allow it
                why += f"; was {ch.before.reason()}"
            out.append(f"  {mark} {c.source} -> {c.destination} {c.port_label}  ({why})")
    if d.added:
        out.append("")
        out.append("only in NEW (their flows are not compared): " + ", ".join(d.added))
    if d.removed:
        out.append("")
        out.append("only in OLD (their flows are not compared): " + ", ".join(d.removed))
    out.append("")
    out.append(f"{d.flows_compared} flows compared: {len(d.opened)} opened, {len(d.closed)} closed")
    return "\n".join(escaped(line) for line in out) + "\n"  # names come from the files: see say()
