"""Benchmark: admission reviews while clients hold stalled connections open (issue 13).

    python -m bench stall [--stalled 1000] [--duration 20] [--rate 20] [--workers N]
                          [--threads N] [--json FILE]
    python -m bench stall --side-by-side REV [--rounds 6] [--seconds 10]

1. Starts `netpol-guard serve --cluster examples/cluster` (TLS, the gunicorn settings of
   webhook/gunicorn_conf.py) pinned to CPU 1; this process and the prober run on CPU 0.
2. Baseline: valid reviews (examples/admission/create-allowed.json), each on a FRESH TLS
   connection, sent open-loop at --rate per second for --duration seconds; latency counts
   from the scheduled send time, so a stalled server is not hidden by a waiting client.
3. Attack: opens --stalled connections, the --kinds in turn (default: the five of KINDS
   below, those of issue 13; ALL_KINDS adds unread-answers), and keeps
   that many open: every connection the server closes is replaced by a new one of the
   same kind. Meanwhile the prober sends valid reviews as in 2.
4. Reports: connections held during the attack (min and median of 1 s samples), p50 /
   p99 / max latency and failures of the valid reviews before and during the attack,
   how long the server took to close each stalled connection (from its last byte sent;
   median, p99, max, and how many were still open 15 s after the attack stopped), and
   the server's resident memory (master + workers) before, during and after.

--side-by-side REV compares the serving model of this checkout with the one of git
revision REV (exported with `git archive` into a temporary directory): the webhook
server of bench/webhook.py (its synthetic 50,000-pod view and review mix) from each tree,
both pinned to CPU 1 and loaded AT ONCE by two wrk processes (c16, then c64, --seconds
each, --rounds times), so the machine's drift hits both alike; server CPU per review and
req/s per tree and round, and their ratios; then p50/p99 at 300 reviews/s, each tree in
turn. Needs wrk.

Every loop is bounded in count and time; the server is started and stopped by its pid.
The stalled sockets need file descriptors: the soft limit is raised to the hard limit.
"""
from __future__ import annotations

import argparse
import errno
import json
import multiprocessing
import os
import resource
import selectors
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SERVER_CPU, CLIENT_CPU = "1", "0"
KINDS = ("handshake-byte", "tls-silent", "partial-headers", "partial-body", "short-body")
# unread-answers: whole requests pipelined (GET /metrics, a few KB of answer each for 43
# bytes asked) on a connection with a small receive buffer that never reads: the answers
# fill every buffer on the way, and the server's writes would wait on the client. Not in
# the default mix: to hold such a connection the server renders answers until the
# buffers are full (~40 here), so holding many of them is a request flood as much as a
# stall - measured on its own (--kinds unread-answers).
UNREAD = "unread-answers"
ALL_KINDS = KINDS + (UNREAD,)
UNREAD_REQUESTS = 1000
UNREAD_RCVBUF = 4096
REVIEW = REPO / "examples" / "admission" / "create-allowed.json"
CLOSE_WAIT_AFTER = 15.0
# The attacker's own TLS work shares CPU 0 with the prober; in a cluster the attacker and
# the API server run on other machines. A lower priority for the attacker keeps the
# prober's latency the server's, not that of a client starved by its neighbour.
ATTACKER_NICE = 10  # how long to keep watching the stalled connections after the attack


def review_request(body: bytes, host: str = "localhost") -> bytes:
    return (f"POST /validate HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def open_stalled(kind: str, port: int, ctx: ssl.SSLContext, body: bytes, timeout: float = 10.0) -> socket.socket:
    """One connection to 127.0.0.1:port that stops part-way, as `kind` says; returned
    non-blocking (an SSLSocket once the handshake was done)."""
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if kind == UNREAD:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UNREAD_RCVBUF)  # before connect
    raw.settimeout(timeout)
    raw.connect(("127.0.0.1", port))
    if kind == "handshake-byte":
        raw.sendall(b"\x16")  # the first byte of a TLS record (handshake), then nothing
        raw.setblocking(False)
        return raw
    tls = ctx.wrap_socket(raw, server_hostname="localhost")
    request = review_request(body)
    head_end = request.index(b"\r\n\r\n") + 4
    if kind == "partial-headers":
        tls.sendall(request[:head_end - 30])
    elif kind == "partial-body":
        tls.sendall(request[:head_end + len(body) // 2])
    elif kind == "short-body":  # a complete JSON body, but Content-Length promises 100 bytes more
        tls.sendall(request.replace(b"Content-Length: %d" % len(body), b"Content-Length: %d" % (len(body) + 100)))
    elif kind == UNREAD:
        tls.sendall(stall_payload(kind, body))
    elif kind != "tls-silent":
        raise ValueError(f"unknown stall kind {kind!r}")
    tls.setblocking(False)
    return tls


TCP_CLOSED_STATES = (7, 8)  # TCP_CLOSE (after a reset), TCP_CLOSE_WAIT (after a FIN): linux/tcp_states.h


def closed_without_reading(sock: socket.socket) -> bool:
    """Has the server closed (or reset) a connection whose answers we must not read?"""
    try:
        return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] in TCP_CLOSED_STATES
    except OSError:
        return True


def closed_by_peer(sock: socket.socket) -> bool:
    """After the socket turned readable: has the server closed it? (An error answer such
    as a 408 may come first; it is read and dropped.)"""
    for _ in range(16):
        try:
            data = sock.recv(65536)
        except (ssl.SSLWantReadError, BlockingIOError, InterruptedError):
            return False
        except (ssl.SSLError, OSError):
            return True
        if not data:
            return True
    return False


def client_context(ca: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca)


def valid_review(port: int, ctx: ssl.SSLContext, body: bytes, timeout: float, phases: list | None = None) -> int:
    """POST one review on a new connection; the HTTP status (raises on failure). `phases`
    gets the seconds spent connecting, in the TLS handshake and waiting for the answer."""
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout) as raw:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t1 = time.monotonic()
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            t2 = time.monotonic()
            tls.sendall(review_request(body))
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = tls.recv(65536)
                if not chunk:
                    raise ConnectionError("closed before an answer")
                data += chunk
            head, _, rest = data.partition(b"\r\n\r\n")
            length = int([line.split(b":", 1)[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")][0])
            while len(rest) < length:
                chunk = tls.recv(65536)
                if not chunk:
                    raise ConnectionError("closed mid-answer")
                rest += chunk
            status = int(head.split(b" ", 2)[1])
            if b'"allowed":true' not in rest.replace(b" ", b""):
                raise AssertionError(f"unexpected answer {status}: {rest[:200]!r}")
            if phases is not None:
                phases.append((t1 - t0, t2 - t1, time.monotonic() - t2))
            return status


def _probe(port: int, ca: str, rate: float, duration: float, out: str) -> None:  # spawned process
    os.sched_setaffinity(0, {int(CLIENT_CPU)})
    try:
        os.nice(-os.nice(0))  # back to the default priority (the attacker runs at ATTACKER_NICE)
    except OSError:
        pass
    ctx = client_context(ca)
    body = REVIEW.read_bytes()
    latencies, failures, phases, late = [], [], [], []
    start = time.monotonic()
    n = int(rate * duration)
    for i in range(n):
        scheduled = start + i / rate
        delay = scheduled - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        late.append(time.monotonic() - scheduled)  # the prober itself, before it sends
        try:
            valid_review(port, ctx, body, timeout=10.0, phases=phases)
            latencies.append(time.monotonic() - scheduled)
        except Exception as exc:  # noqa: BLE001 - counted and reported
            failures.append(repr(exc)[:200])
        if time.monotonic() - start > duration + 30:
            failures.append(f"gave up: {n - i - 1} reviews not sent")
            break
    Path(out).write_text(json.dumps({"latencies": latencies, "failures": failures, "phases": phases, "late": late}))


def probe(port: int, ca: str, rate: float, duration: float) -> dict:
    out = tempfile.mktemp(prefix="stall-probe-", suffix=".json")
    proc = multiprocessing.get_context("spawn").Process(target=_probe, args=(port, ca, rate, duration, out))
    proc.start()
    return {"process": proc, "out": out}


def probe_result(p: dict) -> dict:
    p["process"].join(120)
    if p["process"].is_alive():
        p["process"].kill()
        return {"latencies": [], "failures": ["prober did not finish"]}
    try:
        return json.loads(Path(p["out"]).read_text())
    finally:
        Path(p["out"]).unlink(missing_ok=True)


def summarize(result: dict) -> dict:
    lat = sorted(result["latencies"])

    def pct(q: float) -> float | None:
        return round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 1) if lat else None
    phases = result.get("phases") or []
    slowest = max(phases, key=sum, default=None)
    return {"answered": len(lat), "failed": len(result["failures"]), "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "max_ms": round(lat[-1] * 1000, 1) if lat else None, "failures": result["failures"][:5],
            # where the slowest review spent its time: connect, TLS handshake, answer (ms)
            "slowest_phases_ms": [round(x * 1000, 1) for x in slowest] if slowest else None,
            # how late the prober started its latest send (its own CPU share, not the server)
            "prober_late_max_ms": round(max(result.get("late") or [0]) * 1000, 1)}


def stall_payload(kind: str, body: bytes) -> bytes:
    """What a connection of `kind` sends after its TLS handshake before it stops."""
    request = review_request(body)
    head_end = request.index(b"\r\n\r\n") + 4
    return {"tls-silent": b"", "partial-headers": request[:head_end - 30],
            "partial-body": request[:head_end + len(body) // 2],
            "short-body": request.replace(b"Content-Length: %d" % len(body),
                                          b"Content-Length: %d" % (len(body) + 100)),
            UNREAD: b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n" * UNREAD_REQUESTS}[kind]


class Attack:
    """Holds `n` stalled connections, kinds in turn; replaces each one the server closes.

    Connections are opened without blocking (connect and TLS handshake driven by a
    selector, up to IN_FLIGHT at once), so the attacker keeps up with a server that closes
    stalled connections after a few seconds."""

    IN_FLIGHT = 64
    OPEN_TIMEOUT = 10.0

    def __init__(self, port: int, ca: str, n: int, kinds=KINDS):
        self.port, self.n, self.kinds = port, n, kinds
        self.ctx = client_context(ca)
        self.body = REVIEW.read_bytes()
        self.payloads = {k: stall_payload(k, self.body) for k in kinds if k != "handshake-byte"}
        self.sel = selectors.DefaultSelector()
        self.open: dict[socket.socket, tuple[str, float]] = {}  # stalled: kind, since
        self.unread: set[socket.socket] = set()  # stalled UNREAD ones: polled, never read
        self.opening: dict[socket.socket, tuple[str, float]] = {}  # connecting or in the handshake
        self.closed: list[tuple[str, float]] = []  # (kind, seconds from stall to close)
        self.open_errors = 0
        self.opened = 0

    def top_up(self, budget: float = 0.0) -> None:
        while len(self.open) + len(self.opening) < self.n and len(self.opening) < self.IN_FLIGHT:
            kind = self.kinds[self.opened % len(self.kinds)]
            self.opened += 1
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            if kind == UNREAD:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UNREAD_RCVBUF)  # before connect
            sock.setblocking(False)
            err = sock.connect_ex(("127.0.0.1", self.port))
            if err not in (0, errno.EINPROGRESS):
                sock.close()
                self.open_errors += 1
                continue
            self.opening[sock] = (kind, time.monotonic())
            self.sel.register(sock, selectors.EVENT_WRITE, "connecting")

    def _failed(self, sock: socket.socket) -> None:
        self.opening.pop(sock, None)
        self.sel.unregister(sock)
        sock.close()
        self.open_errors += 1

    def _stalled(self, sock: socket.socket, kind: str) -> None:
        self.opening.pop(sock, None)
        self.open[sock] = (kind, time.monotonic())
        if kind == UNREAD:
            self.unread.add(sock)  # its answers keep it readable: watched by its TCP state
        else:
            self.sel.register(sock, selectors.EVENT_READ, "stalled")

    def _gone(self, sock: socket.socket) -> None:
        kind, since = self.open.pop(sock)
        self.closed.append((kind, time.monotonic() - since))
        if kind == UNREAD:
            self.unread.discard(sock)
        else:
            self.sel.unregister(sock)
        sock.close()

    def _handshake(self, sock: ssl.SSLSocket, kind: str) -> None:
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self.sel.modify(sock, selectors.EVENT_READ, "handshake")
            return
        except ssl.SSLWantWriteError:
            self.sel.modify(sock, selectors.EVENT_WRITE, "handshake")
            return
        except (ssl.SSLError, OSError):
            self._failed(sock)
            return
        self.sel.unregister(sock)
        try:
            payload = self.payloads[kind]
            if payload and sock.send(payload) != len(payload):
                raise OSError("partial send")
        except (ssl.SSLError, OSError):
            self.opening.pop(sock, None)
            sock.close()
            self.open_errors += 1
            return
        self._stalled(sock, kind)

    def watch(self, timeout: float) -> None:
        for key, _ in self.sel.select(timeout):
            sock, what = key.fileobj, key.data
            if what == "stalled":
                if closed_by_peer(sock):
                    self._gone(sock)
            elif what == "connecting":
                kind = self.opening[sock][0]
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    self._failed(sock)
                    continue
                self.sel.unregister(sock)
                if kind == "handshake-byte":
                    try:
                        sock.send(b"\x16")  # the first byte of a TLS record (handshake), then nothing
                    except OSError:
                        self.opening.pop(sock, None)
                        sock.close()
                        self.open_errors += 1
                        continue
                    self._stalled(sock, kind)
                    continue
                since = self.opening.pop(sock)[1]
                tls = self.ctx.wrap_socket(sock, server_hostname="localhost", do_handshake_on_connect=False)
                self.opening[tls] = (kind, since)
                self.sel.register(tls, selectors.EVENT_WRITE, "handshake")
                self._handshake(tls, kind)
            elif what == "handshake":
                self._handshake(sock, self.opening[sock][0])
        for sock in [s for s in self.unread if closed_without_reading(s)]:
            self._gone(sock)
        now = time.monotonic()
        for sock, (_, since) in list(self.opening.items()):
            if now - since > self.OPEN_TIMEOUT:
                self._failed(sock)

    def run(self, duration: float, reopen: bool = True, samples: list | None = None) -> None:
        end = time.monotonic() + duration
        next_sample = time.monotonic()
        while time.monotonic() < end:
            if reopen:
                self.top_up()
            self.watch(0.02)
            if samples is not None and time.monotonic() >= next_sample:
                samples.append(len(self.open))
                next_sample += 1.0
            if not reopen and not self.open and not self.opening:
                return

    def close_all(self) -> None:
        for sock in list(self.open) + list(self.opening):
            try:
                self.sel.unregister(sock)
            except (KeyError, ValueError):
                pass
            sock.close()
        self.open.clear()
        self.opening.clear()
        self.unread.clear()


def rss_mb(pid: int) -> float:
    """Resident memory of pid and its children (the gunicorn master and workers), MB."""
    total = 0
    pids = [pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                pids.append(int(entry))
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return round(total / 1024, 1)


def cpu_seconds(pid: int) -> float:
    """utime + stime of pid and its children so far (the gunicorn master and workers)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(entry) == pid or int(fields[1]) == pid:
                total += int(fields[11]) + int(fields[12])
    return total / ticks


def start_server(workdir: str, workers: int | None, threads: int | None):
    from webhook import certs as certlib
    ca = certlib.make_ca()
    bundle = certlib.TLSBundle.from_pairs(ca, certlib.issue_serving_cert(ca, ["localhost"]))
    paths = certlib.write_bundle(bundle, workdir, force=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = ["taskset", "-c", SERVER_CPU, sys.executable, "-m", "webhook", "serve", "--cluster", "examples/cluster",
           "--bind", f"127.0.0.1:{port}", "--cert", paths[certlib.CERT_FILE], "--key", paths[certlib.KEY_FILE]]
    if workers:
        cmd += ["--workers", str(workers)]
    if threads:
        cmd += ["--threads", str(threads)]
    log = open(os.path.join(workdir, "serve.log"), "wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETPOL_GUARD_")}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.Popen(cmd, cwd=str(REPO), env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    ctx = client_context(paths[certlib.CA_FILE])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited: {Path(workdir, 'serve.log').read_text()[-2000:]}")
        try:
            valid_review(port, ctx, REVIEW.read_bytes(), timeout=5)
            return proc, port, paths[certlib.CA_FILE]
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("serve did not answer within 60 s")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)


def raise_fd_limit(needed: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed and (hard == resource.RLIM_INFINITY or hard > soft):
        soft = needed if hard == resource.RLIM_INFINITY else min(hard, max(needed, soft))
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


def _bench_server(tree: str, port: int, cert: str, key: str, log_path: str) -> subprocess.Popen:
    cmd = ["taskset", "-c", SERVER_CPU, sys.executable, "-m", "bench.webhook", "--serve", "webhook",
           "--port", str(port), "--cert", cert, "--key", key, "--threads", "2"]
    return subprocess.Popen(cmd, cwd=tree, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": tree})


def side_by_side(rev: str, rounds: int, seconds: float) -> dict:
    """CPU per review and throughput of this tree's serving model against REV's, loaded at once."""
    import threading
    from bench import webhook as wb
    from webhook import certs as certlib

    work = tempfile.mkdtemp(prefix="bench-side-")
    old_tree = os.path.join(work, "old")
    os.makedirs(old_tree)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", old_tree], input=archive, check=True)
    ca = certlib.make_ca()
    paths = certlib.write_bundle(certlib.TLSBundle.from_pairs(ca, certlib.issue_serving_cert(ca, ["localhost"])),
                                 work, force=True)
    cert, key, ca_path = paths[certlib.CERT_FILE], paths[certlib.KEY_FILE], paths[certlib.CA_FILE]
    trees = {"new": str(REPO), "old": old_tree}
    ports, procs = {}, {}
    for name, tree in trees.items():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports[name] = s.getsockname()[1]
        procs[name] = _bench_server(tree, ports[name], cert, key, os.path.join(work, f"{name}.log"))
    bodies = [json.dumps(review, separators=(",", ":")).encode() for _, review in wb.review_mix()]
    script = os.path.join(work, "mix.lua")
    Path(script).write_text(wb.wrk_script(bodies, "/validate"))
    out: dict = {"rev": rev, "rounds": [], "latency": {"new": [], "old": []}}
    try:
        for name in trees:
            deadline = time.monotonic() + 300
            while True:
                if procs[name].poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{name} server did not start: "
                                       f"{Path(work, name + '.log').read_text()[-2000:]}")
                try:
                    if wb.request_once(ports[name], ca_path, "GET", "/readyz", None)[0] == 200:
                        break
                except OSError:
                    pass
                time.sleep(0.5)
        for name in trees:  # warm-up
            wb.run_wrk(ports[name], script, 16, 2)
        for r in range(rounds):
            row = {}
            for c in (16, 64):
                cpu0 = {n: cpu_seconds(procs[n].pid) for n in trees}
                res: dict = {}
                threads = [threading.Thread(target=lambda n=n: res.__setitem__(n, wb.run_wrk(ports[n], script, c,
                                                                                              seconds)))
                           for n in trees]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(seconds + 90)
                for n in trees:
                    cpu = cpu_seconds(procs[n].pid) - cpu0[n]
                    row[f"{n}_rps_c{c}"] = res[n]["rps"]
                    row[f"{n}_cpu_us_c{c}"] = round(cpu / max(1, res[n]["requests"]) * 1e6, 1)
                    row[f"{n}_errors_c{c}"] = res[n]["non2xx"] or res[n]["socket_errors"] or 0
                row[f"cpu_ratio_c{c}"] = round(row[f"new_cpu_us_c{c}"] / row[f"old_cpu_us_c{c}"], 3)
                row[f"rps_ratio_c{c}"] = round(row[f"new_rps_c{c}"] / row[f"old_rps_c{c}"], 3)
            out["rounds"].append(row)
            print(f"  round {r + 1}: " + "  ".join(
                f"c{c}: new {row[f'new_rps_c{c}']:,.0f} req/s {row[f'new_cpu_us_c{c}']:.0f} us, "
                f"old {row[f'old_rps_c{c}']:,.0f} req/s {row[f'old_cpu_us_c{c}']:.0f} us, "
                f"CPU new/old {row[f'cpu_ratio_c{c}']:.3f}" for c in (16, 64)), flush=True)
            for n in (("new", "old") if r % 2 == 0 else ("old", "new")):
                lat = wb.open_loop(ports[n], ca_path, bodies, 300.0, seconds)
                out["latency"][n].append({k: round(v, 2) for k, v in lat.items() if k.endswith("_ms")})
            os.sched_setaffinity(0, {int(CLIENT_CPU)})
    finally:
        for proc in procs.values():
            stop_server(proc)
    for c in (16, 64):
        for k in (f"cpu_ratio_c{c}", f"rps_ratio_c{c}"):
            vals = [row[k] for row in out["rounds"]]
            out[k] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}
    for n in ("new", "old"):
        out[f"{n}_p50_ms"] = statistics.median(x["p50_ms"] for x in out["latency"][n])
        out[f"{n}_p99_ms"] = statistics.median(x["p99_ms"] for x in out["latency"][n])
    out["loadavg"] = Path("/proc/loadavg").read_text().split()[:3]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench stall", description=__doc__.split("\n\n")[0])
    p.add_argument("--stalled", type=int, default=1000, help="stalled connections to hold")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of valid reviews, before and during")
    p.add_argument("--rate", type=float, default=20.0, help="valid reviews per second (fresh connections)")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--kinds", default=",".join(KINDS),
                   help=f"comma-separated stall kinds, in turn (of: {', '.join(ALL_KINDS)})")
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--side-by-side", metavar="REV", help="compare throughput and CPU per review with git REV")
    p.add_argument("--rounds", type=int, default=6, help="--side-by-side: rounds of concurrent load")
    p.add_argument("--seconds", type=float, default=10.0, help="--side-by-side: seconds per load")
    args = p.parse_args(argv)
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    unknown = [k for k in kinds if k not in ALL_KINDS]
    if unknown or not kinds:
        p.error(f"--kinds: unknown kind(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(ALL_KINDS)}")
    if args.side_by_side:
        result = side_by_side(args.side_by_side, args.rounds, args.seconds)
        summary = {k: v for k, v in result.items() if k not in ("rounds", "latency")}
        print(json.dumps(summary, indent=2))
        path = args.json or str(REPO / "bench" / "results" / f"stall-side-{time.strftime('%Y%m%d-%H%M%S')}.json")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Path(path).write_text(json.dumps(result, indent=2))
        return 0

    fds = raise_fd_limit(args.stalled + 256)
    if fds < args.stalled + 64:
        print(f"file-descriptor limit {fds} is too low for {args.stalled} connections (ulimit -n)", file=sys.stderr)
        return 2
    os.sched_setaffinity(0, {int(CLIENT_CPU)})
    workdir = tempfile.mkdtemp(prefix="bench-stall-")
    proc, port, ca = start_server(workdir, args.workers, args.threads)
    out: dict = {"stalled_target": args.stalled, "rate": args.rate, "duration": args.duration,
                 "kinds": list(kinds), "fd_limit": fds}
    try:
        time.sleep(1.0)
        out["rss_mb_before"] = rss_mb(proc.pid)
        out["baseline"] = summarize(probe_result(probe(port, ca, args.rate, args.duration)))

        attack = Attack(port, ca, args.stalled, kinds)
        os.nice(ATTACKER_NICE)  # after the server and the baseline prober were started
        t0 = time.monotonic()
        while len(attack.open) < args.stalled and time.monotonic() - t0 < 120:
            attack.top_up()
            attack.watch(0.02)
        out["seconds_to_open"] = round(time.monotonic() - t0, 1)
        samples: list[int] = []
        cpu0, t1, opened0 = cpu_seconds(proc.pid), time.monotonic(), attack.opened
        prober = probe(port, ca, args.rate, args.duration)
        attack.run(args.duration + 1.0, reopen=True, samples=samples)
        elapsed = time.monotonic() - t1
        out["server_cpu_during"] = round((cpu_seconds(proc.pid) - cpu0) / elapsed, 2)  # cores busy
        out["stalled_opened_per_s"] = round((attack.opened - opened0) / elapsed, 1)
        out["rss_mb_during"] = rss_mb(proc.pid)
        out["during"] = summarize(probe_result(prober))
        out["held"] = {"min": min(samples) if samples else 0,
                       "median": statistics.median(samples) if samples else 0}
        still_open_at_stop = len(attack.open)
        attack.run(CLOSE_WAIT_AFTER, reopen=False)
        closes = sorted(t for _, t in attack.closed)
        out["stalled_closed"] = {
            "count": len(closes), "open_at_stop": still_open_at_stop,
            "never_closed": len(attack.open),
            "median_s": round(statistics.median(closes), 2) if closes else None,
            "p99_s": round(closes[min(len(closes) - 1, int(0.99 * len(closes)))], 2) if closes else None,
            "max_s": round(closes[-1], 2) if closes else None,
            "by_kind_max_s": {k: round(max((t for kk, t in attack.closed if kk == k), default=0), 2) for k in kinds},
            "open_errors": attack.open_errors,
        }
        attack.close_all()
        time.sleep(2.0)
        out["rss_mb_after"] = rss_mb(proc.pid)
    finally:
        stop_server(proc)
    print(json.dumps(out, indent=2))
    target = out["during"]["p99_ms"] is not None and out["during"]["p99_ms"] <= 50 and not out["during"]["failed"] \
        and out["stalled_closed"]["never_closed"] == 0 and (out["stalled_closed"]["max_s"] or 0) <= 10
    print(f"targets (p99 <= 50 ms during the attack, no failures, every stalled connection closed "
          f"within 10 s): {'met' if target else 'NOT met'}")
    path = args.json or str(REPO / "bench" / "results" / f"stall-{time.strftime('%Y%m%d-%H%M%S')}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Path(path).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
