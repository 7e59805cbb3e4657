"""Benchmark: the admission webhook over TLS against the framework ceiling, on this machine.

    python -m bench webhook [--runs 5] [--duration 10] [--warmup 3] [--rate 300]
                            [--workers 2] [--threads 4] [--quick] [--json FILE]

What it does (see /work/shared/benchmarking.md for why each step is there):

1. Starts two servers with the SAME gunicorn settings, certificate and pinning
   (``taskset -c 1``; the load generators run on CPU 0):
   - webhook: the real app (webhook.admission.server.WebhookServer) with a cluster
     view of 2,000 namespaces, 50,000 pods and 10,000 policies built in the server
     process through the ClusterView API (no files, no API server);
   - ceiling: the same WebhookServer with a Flask app that parses the AdmissionReview
     and answers "allowed" - what the framework costs before any rule runs.
2. Paired and alternating (A B A B), for each run: throughput with wrk at 16 and then 64
   kept-alive connections, each on the webhook and right after on the ceiling (a realistic
   mix of reviews: good policies and each kind of mistake), then latency at a fixed offered
   rate on both (open loop, latency counted from the scheduled send time, so queueing is not
   hidden). Ratios are reported as ratio of medians and as the median of per-pair ratios.
3. Server CPU per review from /proc (master + workers), which is steadier than req/s,
   and the workers' resident memory.

Reports medians (min-max) and webhook / ceiling ratios; writes the raw numbers as JSON.
Requires wrk (Debian/Ubuntu: ``apt-get install -y wrk``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import re
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SERVER_CPU, CLIENT_CPU = "1", "0"
NAMESPACES, PODS, POLICIES = 2000, 50000, 10000
WORKLOADS = ("web", "api", "worker", "cache", "db")
NO_DNS_EVERY = 10  # every 10th namespace has no DNS allowance (where dns-egress-missing fires)

# --- the synthetic cluster, built through the ClusterView API ------------------------------------

DNS_RULE = {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
            "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}


def ns_name(i: int) -> str:
    return f"ns-{i:04d}"


def _policy(ns: int, name: str, spec: dict) -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": ns_name(ns), "annotations": {"description": f"{name} policy"}},
            "spec": spec}


def namespace_policies(ns: int) -> list[dict]:
    """Five policies per namespace: a baseline like the ones teams really write."""
    out = [_policy(ns, "default-deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})]
    if ns % NO_DNS_EVERY:
        out.append(_policy(ns, "allow-dns", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [DNS_RULE]}))
    else:
        out.append(_policy(ns, "metrics-scrape", {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {
            "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}], "ports": [{"port": "metrics"}]}]}))
    out.append(_policy(ns, "web-ingress", {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"from": [{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}],
        "ports": [{"port": "http"}]}]}))
    out.append(_policy(ns, "api-from-web", {"podSelector": {"matchLabels": {"app": "api"}}, "ingress": [{"from": [{
        "podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": 8080, "protocol": "TCP"}]}]}))
    out.append(_policy(ns, "db-from-api", {"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"from": [{
        "podSelector": {"matchLabels": {"app": "api"}}}], "ports": [{"port": 5432, "protocol": "TCP"}]}]}))
    return out


def build_view(namespaces: int = NAMESPACES, pods: int = PODS, policies: int = POLICIES):
    from webhook.cluster.objects import NAME_LABEL, ContainerPort, Namespace, Pod
    from webhook.cluster.view import ClusterView
    from webhook.policy.parse import parse_policy

    view = ClusterView()
    for name, labels in (("kube-system", {}), ("monitoring", {"team": "observability"}), ("ingress-nginx", {})):
        view.upsert_namespace(Namespace(name, {NAME_LABEL: name, **labels}))
    dns_labels = {"k8s-app": "kube-dns"}
    dns_ports = (ContainerPort(53, "UDP", "dns"), ContainerPort(53, "TCP", "dns-tcp"))
    for r in range(2):
        view.upsert_pod(Pod("kube-system", f"coredns-{r}", dns_labels, dns_ports, (f"10.0.0.{10 + r}",)))
    ports = {"web": (ContainerPort(8080, "TCP", "http"), ContainerPort(9090, "TCP", "metrics")),
             "api": (ContainerPort(8080, "TCP", "http"), ContainerPort(9090, "TCP", "metrics")),
             "worker": (ContainerPort(9090, "TCP", "metrics"),),
             "cache": (ContainerPort(6379, "TCP", "redis"),),
             "db": (ContainerPort(5432, "TCP", "postgres"), ContainerPort(9187, "TCP", "metrics"))}
    per_ns = pods // namespaces
    seq = 0
    policy_budget = policies
    for i in range(namespaces):
        ns = ns_name(i)
        view.upsert_namespace(Namespace(ns, {NAME_LABEL: ns, "team": f"team-{i % 97:02d}",
                                             "env": ("prod", "staging", "dev")[i % 3]}))
        # pods of one workload share one label dict, as the live cache interns them
        labels = {w: {"app": w, "tier": ("frontend", "backend", "backend", "data", "data")[k]}
                  for k, w in enumerate(WORKLOADS)}
        for r in range(per_ns):
            w = WORKLOADS[r % len(WORKLOADS)]
            seq += 1
            view.upsert_pod(Pod(ns, f"{w}-{r:03d}", labels[w], ports[w],
                                (f"10.{(seq >> 16) & 255}.{(seq >> 8) & 255}.{seq & 255}",)))
        for obj in namespace_policies(i)[: max(0, min(5, policy_budget))]:
            result = parse_policy(obj)
            view.upsert_policy(result.policy)
            policy_budget -= 1
    return view


def SyntheticSource():
    """A ViewSource over the synthetic view (built once, in the gunicorn master)."""
    from webhook.cluster.source import StaticSource
    return StaticSource(build_view())


# --- the review mix ----------------------------------------------------------------------------

USER = {"username": "system:serviceaccount:argocd:argocd-application-controller", "uid": "a1",
        "groups": ["system:serviceaccounts", "system:serviceaccounts:argocd", "system:authenticated"]}


def _review(uid: str, op: str, obj: dict, old: dict | None = None) -> dict:
    gvk = {"group": "networking.k8s.io", "version": "v1", "kind": "NetworkPolicy"}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": uid, "kind": gvk, "resource": {"group": "networking.k8s.io", "version": "v1",
                                              "resource": "networkpolicies"},
        "requestKind": gvk, "name": obj["metadata"]["name"], "namespace": obj["metadata"]["namespace"],
        "operation": op, "userInfo": USER, "object": obj, "oldObject": old, "dryRun": False,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": f"{op.title()}Options", "fieldManager": "argocd"}}}


def review_mix() -> list[tuple[str, dict]]:
    """(label, AdmissionReview): good policies and each kind of mistake, ~2 KB each."""
    a, b = 42, 1230  # ns-0042 has DNS, ns-1230 (a multiple of 10) has none
    api_egress = {"podSelector": {"matchLabels": {"app": "api"}}, "policyTypes": ["Egress"],
                  "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "db"}}}],
                              "ports": [{"port": 5432, "protocol": "TCP"}]}, DNS_RULE]}
    good_ingress = _policy(a, "cache-from-api", {"podSelector": {"matchLabels": {"app": "cache"}}, "ingress": [{
        "from": [{"podSelector": {"matchLabels": {"app": "api"}}}], "ports": [{"port": 6379, "protocol": "TCP"}]}]})
    good_egress = _policy(a, "api-egress", api_egress)
    no_dns = _policy(b, "api-egress", {**api_egress, "egress": api_egress["egress"][:1]})
    invalid = _policy(a, "bad-protocol", {"podSelector": {"matchLabels": {"app": "api"}}, "ingress": [{
        "ports": [{"port": 8080, "protocol": "tcp"}, {"port": 80800}]}]})
    typo = _policy(a, "db-from-worker", {"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"from": [{
        "podSelector": {"matchLabels": {"app": "wroker"}}}], "ports": [{"port": 5432, "protocol": "TCP"}]}]})
    wrong_ns_label = _policy(a, "from-monitoring", {"podSelector": {}, "ingress": [{"from": [{
        "namespaceSelector": {"matchLabels": {"name": "monitoring"}}}], "ports": [{"port": "metrics"}]}]})
    anywhere = _policy(a, "api-external", {"podSelector": {"matchLabels": {"app": "api"}}, "policyTypes": ["Egress"],
                                           "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}, DNS_RULE]})
    udp_only = _policy(b, "worker-egress", {"podSelector": {"matchLabels": {"app": "worker"}},
                                            "policyTypes": ["Egress"], "egress": [{**DNS_RULE, "ports": [
                                                {"port": 53, "protocol": "UDP"}]}]})
    stored = _policy(a, "api-from-web", namespace_policies(a)[3]["spec"])
    stored["metadata"].update(resourceVersion="81723", generation=1)
    edited = json.loads(json.dumps(stored))
    edited["spec"]["ingress"][0]["ports"].append({"port": 9090, "protocol": "TCP"})
    mix = [("good ingress", _review("b-1", "CREATE", good_ingress)),
           ("good egress with DNS", _review("b-2", "CREATE", good_egress)),
           ("update, good", _review("b-3", "UPDATE", edited, stored)),
           ("no DNS allowance", _review("b-4", "CREATE", no_dns)),
           ("invalid spec", _review("b-5", "CREATE", invalid)),
           ("selector typo", _review("b-6", "CREATE", typo)),
           ("namespace label not set", _review("b-7", "CREATE", wrong_ns_label)),
           ("egress to 0.0.0.0/0", _review("b-8", "CREATE", anywhere)),
           ("DNS over UDP only", _review("b-9", "CREATE", udp_only))]
    return mix


def describe_mix(view) -> list[dict]:
    """What the webhook answers for each review in the mix (computed in-process, printed)."""
    from webhook.admission import mutations, networkpolicy  # noqa: F401 (registers handlers)
    from webhook.admission.handlers import HandlerContext, dispatch
    from webhook.admission.review import parse_review
    from webhook.config import DEFAULT

    class _Src:
        def __init__(self, v):
            self.view = v

    ctx = HandlerContext(DEFAULT, _Src(view))
    out = []
    for label, review in review_mix():
        d = dispatch("validate", parse_review(review), ctx)
        out.append({"review": label, "decision": d.label, "rules": sorted({f.rule for f in d.findings}),
                    "bytes": len(json.dumps(review))})
    return out


# --- the servers ---------------------------------------------------------------------------------

def ceiling_app():
    from flask import Flask, Response, request

    app = Flask("ceiling")

    @app.post("/validate")
    def validate():
        review = json.loads(request.get_data())
        body = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "response": {"uid": review["request"]["uid"], "allowed": True}}
        return Response(json.dumps(body), mimetype="application/json")

    @app.get("/readyz")
    def readyz():
        return Response('{"status":"ready"}', mimetype="application/json")

    return app


def serve(kind: str, port: int, cert: str, key: str, workers: int | None, threads: int, audit: bool) -> None:
    """Runs in the (pinned) server process."""
    from webhook.admission.server import ServeOptions, WebhookServer
    from webhook.cluster.source import EmptySource
    from webhook.config import DEFAULT

    source = SyntheticSource() if kind == "webhook" else EmptySource()
    options = ServeOptions(config=DEFAULT, source=source, cert=cert, key=key, bind=f"127.0.0.1:{port}",
                           workers=workers, threads=threads, metrics_dir=tempfile.mkdtemp(prefix="bench-metrics-"),
                           )

    class Ceiling(WebhookServer):
        def load(self):
            return ceiling_app()

    import logging
    from webhook.logging_setup import configure
    configure()  # as `serve` does: JSON lines on stderr (here: the server's log file)
    if not audit:
        logging.getLogger("netpol_guard.audit").setLevel(logging.WARNING)
    (Ceiling if kind == "ceiling" else WebhookServer)(options).run()


class Server:
    def __init__(self, kind: str, port: int, certs, workers: int | None, threads: int, log_dir: str, audit: bool):
        self.kind, self.port = kind, port
        self.log = open(os.path.join(log_dir, f"{kind}.log"), "wb")
        cmd = ["taskset", "-c", SERVER_CPU, sys.executable, "-m", "bench.webhook", "--serve", kind,
               "--port", str(port), "--cert", certs.cert, "--key", certs.key, "--threads", str(threads)]
        if workers:  # else serve's own default on the pinned CPU (gunicorn_conf.default_workers)
            cmd += ["--workers", str(workers)]
        if not audit:
            cmd.append("--no-audit")
        self.process = subprocess.Popen(cmd, cwd=str(REPO), stdout=self.log, stderr=subprocess.STDOUT,
                                        env={**os.environ, "PYTHONPATH": str(REPO)})
        self.ca = certs.ca

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.kind} server exited: {Path(self.log.name).read_text()[-2000:]}")
            try:
                status, _ = request_once(self.port, self.ca, "GET", "/readyz", None)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{self.kind} server not ready after {timeout}s")

    def pids(self) -> list[int]:
        out = [self.process.pid]
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == self.process.pid:
                    out.append(int(entry))
        return out

    def cpu_seconds(self) -> float:
        tick = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime + stime
        return total / tick

    def worker_rss_mb(self) -> list[float]:
        out = []
        for pid in self.pids()[1:]:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        out.append(int(line.split()[1]) / 1024)
            except OSError:
                pass
        return out

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self.log.close()


# --- load generators -------------------------------------------------------------------------------

def _tls_context(ca: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca)
    ctx.check_hostname = False
    return ctx


def request_once(port: int, ca: str, method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
    import http.client
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=_tls_context(ca), timeout=10)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wrk_script(bodies: list[bytes], path: str) -> str:
    entries = ",\n".join(f"wrk.format('POST', '{path}', {{['Content-Type']='application/json'}}, [==[{b.decode()}]==])"
                         for b in bodies)
    return f"""
local requests = {{
{entries}
}}
local i = 0
request = function()
  i = i + 1
  return requests[(i % #requests) + 1]
end
"""


def run_wrk(port: int, script: str, connections: int, duration: float) -> dict:
    cmd = ["taskset", "-c", CLIENT_CPU, "wrk", "-t", "1", "-c", str(connections), "-d", f"{duration:g}s",
           "--latency", "-s", script, f"https://127.0.0.1:{port}/validate"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "requests": total, "non2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": errors.group(1) if errors else ""}


def open_loop(port: int, ca: str, bodies: list[bytes], rate: float, duration: float, connections: int = 16) -> dict:
    """Send at a fixed rate; latency counts from the scheduled time (no coordinated omission)."""
    import http.client

    os.sched_setaffinity(0, {int(CLIENT_CPU)})
    schedule: queue.Queue = queue.Queue()
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=_tls_context(ca), timeout=10)
        while True:
            item = schedule.get()
            if item is None:
                break
            due, body = item
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            try:
                conn.request("POST", "/validate", body=body, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                ok = resp.status == 200
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                conn = http.client.HTTPSConnection("127.0.0.1", port, context=_tls_context(ca), timeout=10)
                ok, resp = False, exc
            done = time.perf_counter()
            with lock:
                if ok:
                    latencies.append(done - due)
                else:
                    errors.append(repr(resp))
        conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(connections)]
    for t in threads:
        t.start()
    start = time.perf_counter() + 0.2
    n = int(rate * duration)
    for k in range(n):
        schedule.put((start + k / rate, bodies[k % len(bodies)]))
    for _ in threads:
        schedule.put(None)
    for t in threads:
        t.join(duration + 60)
    lat = sorted(latencies)

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")

    return {"sent": n, "ok": len(lat), "errors": len(errors), "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "max_ms": lat[-1] * 1000 if lat else float("nan")}


# --- the run -----------------------------------------------------------------------------------------

def in_process_breakdown(view, repeat: int = 5, rounds: int = 30) -> dict:
    """Per-review cost without sockets, TLS or gunicorn (best of `repeat`, in microseconds):
    the ceiling app, the webhook app, and the webhook's decision alone (parse + rules).
    Steadier than the server numbers on a shared machine; where the time goes."""
    import logging
    from webhook.admission import mutations, networkpolicy  # noqa: F401
    from webhook.admission.app import create_app
    from webhook.admission.handlers import HandlerContext, dispatch
    from webhook.admission.review import decode, parse_review
    from webhook.config import DEFAULT
    from webhook.metrics import Metrics

    class _Src:
        def __init__(self, v):
            self.view = v

        def ready(self):
            return True

        def stats(self):
            return {"objects": 0, "age_seconds": 0.0, "synced": True}

    bodies = [json.dumps(r, separators=(",", ":")).encode() for _, r in review_mix()]
    audit = logging.getLogger("netpol_guard.audit")
    # the audit line is left out here (~17 us with JSON formatting; measured by the server runs)
    audit.propagate, audit.handlers = False, [logging.NullHandler()]

    def best(fn) -> float:
        # CPU time of this process: other processes on a shared machine do not count
        times = []
        for _ in range(repeat):
            t = time.process_time()
            for _ in range(rounds):
                for b in bodies:
                    fn(b)
            times.append((time.process_time() - t) / (rounds * len(bodies)) * 1e6)
        return min(times)

    ctx = HandlerContext(DEFAULT, _Src(view))
    ceiling = ceiling_app().test_client()
    webhook = create_app(DEFAULT, _Src(view), Metrics(tempfile.mkdtemp(prefix="bench-metrics-"))).test_client()
    return {
        "ceiling_app_us": best(lambda b: ceiling.post("/validate", data=b, content_type="application/json")),
        "webhook_app_us": best(lambda b: webhook.post("/validate", data=b, content_type="application/json")),
        "decision_only_us": best(lambda b: dispatch("validate", parse_review(decode(b)), ctx)),
    }


def _median(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"{statistics.median(values):,.1f} ({min(values):,.1f}-{max(values):,.1f})"


def machine() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import flask
    import gunicorn
    return {"cpus": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "flask": flask.__version__ if hasattr(flask, "__version__") else "", "gunicorn": gunicorn.__version__,
            "openssl": ssl.OPENSSL_VERSION, "kernel": platform.release()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench webhook", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--rate", type=float, default=300.0, help="offered reviews/s for the latency runs")
    p.add_argument("--workers", type=int, default=None,
                   help="gunicorn workers of both servers (default: what serve picks on the one pinned CPU, 1)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--connections", default="16,64", help="wrk connection counts")
    p.add_argument("--no-audit", dest="audit", action="store_false",
                   help="turn the webhook's audit line off (it is on, as in production, by default)")
    p.add_argument("--quick", action="store_true", help="1 run of 3 s: a smoke test of the benchmark itself")
    p.add_argument("--json", metavar="FILE", help="write raw results here (default bench/results/webhook-*.json)")
    # internal: the pinned server process
    p.add_argument("--serve", choices=("webhook", "ceiling"), help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--cert", help=argparse.SUPPRESS)
    p.add_argument("--key", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    from webhook import gunicorn_conf
    workers = args.workers  # None: serve's default where the server runs (pinned: one CPU)
    threads = args.threads or gunicorn_conf.THREADS
    if args.serve:
        serve(args.serve, args.port, args.cert, args.key, workers, threads, args.audit)
        return 0

    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            print(f"bench webhook: `{tool}` is not installed; on Debian/Ubuntu: "
                  f"apt-get install -y {'wrk' if tool == 'wrk' else 'util-linux'}", file=sys.stderr)
            return 2
    if args.quick:
        args.runs, args.duration, args.warmup = 1, 3.0, 1.0
    conns = [int(c) for c in args.connections.split(",")]

    sys.path.insert(0, str(REPO))
    from tests.server_fixture import free_port, make_certs

    work = tempfile.mkdtemp(prefix="bench-webhook-")
    certs = make_certs(os.path.join(work, "certs"))
    t0 = time.perf_counter()
    view = build_view()
    build_seconds = time.perf_counter() - t0
    mix = describe_mix(view)
    stats = view.stats()
    breakdown = in_process_breakdown(view)
    del view
    bodies = [json.dumps(r, separators=(",", ":")).encode() for _, r in review_mix()]
    script = os.path.join(work, "mix.lua")
    Path(script).write_text(wrk_script(bodies, "/validate"))

    print(f"machine: {machine()}")
    print(f"cluster view: {stats} (built in {build_seconds:.1f} s)")
    print("review mix (answers of the webhook):")
    for m in mix:
        print(f"  {m['review']:<26} {m['decision']:<5} {', '.join(m['rules']) or '-'}  ({m['bytes']} bytes)")
    print("in-process CPU per review (best of 5; no sockets, TLS or gunicorn): "
          + ", ".join(f"{k[:-3].replace('_', ' ')} {v:.0f} us" for k, v in breakdown.items()))

    servers = {k: Server(k, free_port(), certs, workers, threads, work, args.audit) for k in ("webhook", "ceiling")}
    results: dict = {k: {"throughput": {c: [] for c in conns}, "cpu_us": {c: [] for c in conns},
                         "latency": []} for k in servers}
    try:
        for s in servers.values():
            s.wait_ready()
        workers = len(servers["webhook"].pids()) - 1  # as started (the master's children)
        print(f"gunicorn: gthread, {workers} workers x {threads} threads, server pinned to CPU {SERVER_CPU}, "
              f"load generators on CPU {CLIENT_CPU}")
        memory = {k: s.worker_rss_mb() for k, s in servers.items()}
        for kind, s in servers.items():  # warm-up: imports, caches, connection set-up
            run_wrk(s.port, script, conns[0], args.warmup)
        for run in range(args.runs):
            # Paired and interleaved: each load (c16, c64, the fixed rate) runs on the webhook and
            # then at once on the ceiling, so both see the same machine; a shared VM drifts by
            # +-20% over minutes, far more than two neighbouring 10 s runs differ.
            for c in conns:
                for kind, s in servers.items():
                    cpu0 = s.cpu_seconds()
                    r = run_wrk(s.port, script, c, args.duration)
                    cpu = s.cpu_seconds() - cpu0
                    if r["non2xx"] or r["socket_errors"]:
                        print(f"  warning: {kind} c{c}: {r['non2xx']} non-2xx, socket errors {r['socket_errors']}")
                    results[kind]["throughput"][c].append(r["rps"])
                    results[kind]["cpu_us"][c].append(cpu / max(1, r["requests"]) * 1e6)
            for kind, s in servers.items():
                results[kind]["latency"].append(open_loop(s.port, certs.ca, bodies, args.rate, args.duration))
            for kind in servers:
                lat = results[kind]["latency"][-1]
                print(f"  run {run + 1} {kind:<8} " + "  ".join(
                    f"c{c}: {results[kind]['throughput'][c][-1]:,.0f} req/s {results[kind]['cpu_us'][c][-1]:.0f} us"
                    for c in conns) + f"  @{args.rate:g}/s p50 {lat['p50_ms']:.2f} p99 {lat['p99_ms']:.2f} ms"
                    f" errors {lat['errors']}", flush=True)
    finally:
        for s in servers.values():
            s.stop()

    print("\nresults: median (min-max) over", args.runs, "runs")
    summary: dict = {}
    for kind in servers:
        r = results[kind]
        summary[kind] = {
            **{f"rps_c{c}": statistics.median(r["throughput"][c]) for c in conns},
            **{f"cpu_us_c{c}": statistics.median(r["cpu_us"][c]) for c in conns},
            "p50_ms": statistics.median(x["p50_ms"] for x in r["latency"]),
            "p99_ms": statistics.median(x["p99_ms"] for x in r["latency"]),
            "latency_errors": sum(x["errors"] for x in r["latency"]),
            "worker_rss_mb": memory[kind],
        }
        print(f"  {kind}:")
        for c in conns:
            print(f"    throughput c{c}: {_median(r['throughput'][c])} req/s; "
                  f"server CPU {_median(r['cpu_us'][c])} us/review")
        print(f"    at {args.rate:g} reviews/s offered: p50 {_median([x['p50_ms'] for x in r['latency']])} ms, "
              f"p99 {_median([x['p99_ms'] for x in r['latency']])} ms")
        print(f"    worker RSS: {', '.join(f'{m:.0f} MB' for m in memory[kind])}")
    w, c0 = summary["webhook"], summary["ceiling"]
    ratios = {f"throughput_c{c}": w[f"rps_c{c}"] / c0[f"rps_c{c}"] for c in conns}
    ratios.update({f"cpu_c{c}": w[f"cpu_us_c{c}"] / c0[f"cpu_us_c{c}"] for c in conns})
    ratios["p99"] = w["p99_ms"] / c0["p99_ms"]
    print("  webhook / ceiling (ratio of medians): " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    # The same ratio taken pair by pair (each webhook run against the ceiling run right after it)
    paired = {c: [a / b for a, b in zip(results["webhook"]["throughput"][c], results["ceiling"]["throughput"][c])]
              for c in conns}
    for c in conns:
        ratios[f"paired_throughput_c{c}"] = statistics.median(paired[c])
    print("  webhook / ceiling throughput, paired runs: " + "; ".join(
        f"c{c} median {statistics.median(paired[c]):.2f} (min {min(paired[c]):.2f}, max {max(paired[c]):.2f})"
        for c in conns))
    out = args.json or str(REPO / "bench" / "results" / f"webhook-{time.strftime('%Y%m%dT%H%M%S')}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    Path(out).write_text(json.dumps({"machine": machine(), "view": stats, "mix": mix, "in_process": breakdown,
                                     "loadavg": Path("/proc/loadavg").read_text().split()[:3], "workers": workers,
                                     "threads": threads, "rate": args.rate, "runs": args.runs,
                                     "duration": args.duration, "raw": results, "summary": summary,
                                     "ratios": ratios}, indent=2, default=str))
    print(f"raw results: {out}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
