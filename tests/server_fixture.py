"""Start and stop the real `netpol-guard serve` (gunicorn, TLS) for tests and benchmarks.

    from tests.server_fixture import make_certs, start_server

    certs = make_certs(tmp_path)                      # CA + serving cert for localhost/127.0.0.1
    server = start_server(["--cluster", "examples/cluster"], certs=certs)
    status, body = server.post_json("/validate", review)
    server.stop()

or, as a pytest fixture, ``serve`` (one factory per test, every server it started is
stopped afterwards) and ``module_server_factory`` for one server per module.

The server is a subprocess (`python -m webhook serve ...`) on a free 127.0.0.1 port;
start_server waits for GET /readyz to answer 200 over TLS (bounded), and stop() sends
SIGTERM to that process id only, then SIGKILL if it has not exited in time. Its
stderr (JSON log lines, including the audit trail) is kept in a file: server.log_text()
and server.audit_lines().
"""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

import pytest

from webhook import certs as certlib

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT = 30.0
STOP_TIMEOUT = 25.0


@dataclass(frozen=True)
class CertPaths:
    directory: str
    ca: str
    cert: str
    key: str


def make_certs(directory: str | os.PathLike, names: Iterable[str] = ("localhost",)) -> CertPaths:
    """A fresh CA and a serving certificate for `names` written as ca.crt/tls.crt/tls.key."""
    ca = certlib.make_ca()
    bundle = certlib.TLSBundle.from_pairs(ca, certlib.issue_serving_cert(ca, list(names)))
    paths = certlib.write_bundle(bundle, str(directory), force=True)
    return CertPaths(str(directory), paths[certlib.CA_FILE], paths[certlib.CERT_FILE], paths[certlib.KEY_FILE])


def make_client_cert(directory: str | os.PathLike, name: str = "kube-apiserver") -> CertPaths:
    """A CA and a client certificate signed by it (for --client-ca tests).

    issue_serving_cert marks the certificate for server auth only; OpenSSL checks the
    purpose of client certificates, so one with clientAuth is built here.
    """
    import datetime as dt
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca = certlib.make_ca(common_name=f"{name}-client-ca")
    key = certlib.new_private_key()
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca.key, hashes.SHA256()))
    os.makedirs(directory, exist_ok=True)
    out = CertPaths(str(directory), os.path.join(directory, "client-ca.crt"),
                    os.path.join(directory, "client.crt"), os.path.join(directory, "client.key"))
    Path(out.ca).write_bytes(certlib.cert_to_pem(ca.cert))
    Path(out.cert).write_bytes(certlib.cert_to_pem(cert))
    Path(out.key).write_bytes(certlib.key_to_pem(key))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client_context(ca: str, client: Optional[CertPaths] = None) -> ssl.SSLContext:
    """Verifies the server against `ca`; the certificate is for localhost and we dial
    127.0.0.1, so the name check is done by server_hostname below, not the address."""
    ctx = ssl.create_default_context(cafile=ca)
    if client is not None:
        ctx.load_cert_chain(client.cert, client.key)
    return ctx


class _Connection(http.client.HTTPSConnection):
    """Dials 127.0.0.1 but verifies (and sends SNI for) the name in the certificate."""

    def __init__(self, port: int, context: ssl.SSLContext, server_name: str, timeout: float):
        super().__init__("127.0.0.1", port, context=context, timeout=timeout)
        self._server_name = server_name

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = self._context.wrap_socket(sock, server_hostname=self._server_name)


class Client:
    """One kept-alive HTTPS connection (like the API server's); reconnects when closed."""

    def __init__(self, port: int, ca: str, client: Optional[CertPaths] = None, server_name: str = "localhost",
                 timeout: float = 20.0):
        self.port, self.ca, self.client_cert = port, ca, client
        self.server_name, self.timeout = server_name, timeout
        self._conn: Optional[_Connection] = None
        self._requests = 0

    def _connection(self) -> _Connection:
        if self._conn is None:
            self._conn = _Connection(self.port, client_context(self.ca, self.client_cert), self.server_name,
                                     self.timeout)
        return self._conn

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: Optional[dict] = None) -> tuple[int, dict, bytes]:
        """(status, headers, body). Like the API server's HTTP client, a request on a
        REUSED connection that the server had already closed is retried once on a new one;
        a failure on a fresh connection is raised."""
        for attempt in (0, 1):
            reused = self._conn is not None and self._requests > 0
            conn = self._connection()
            try:
                conn.request(method, path, body=body, headers=headers or {})
                resp = conn.getresponse()
                data = resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if attempt == 0 and reused:
                    continue
                raise
            self._requests += 1
            if resp.getheader("Connection", "").lower() == "close":
                self.close()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        raise AssertionError("unreachable")

    def post_json(self, path: str, body: Any, content_type: str = "application/json") -> tuple[int, Any]:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        status, _, data = self.request("POST", path, raw, {"Content-Type": content_type})
        try:
            return status, json.loads(data)
        except ValueError:
            return status, data.decode(errors="replace")

    def get(self, path: str) -> tuple[int, str]:
        status, _, data = self.request("GET", path)
        return status, data.decode(errors="replace")

    def peer_certificate(self) -> bytes:
        """DER of the certificate the server presents on a NEW connection."""
        with socket.create_connection(("127.0.0.1", self.port), self.timeout) as sock:
            with client_context(self.ca, self.client_cert).wrap_socket(sock, server_hostname=self.server_name) as tls:
                return tls.getpeercert(binary_form=True)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._requests = 0


class RunningServer:
    def __init__(self, process: subprocess.Popen, port: int, certs: CertPaths, log_path: str,
                 client: Optional[CertPaths] = None):
        self.process, self.port, self.certs, self.log_path = process, port, certs, log_path
        self.client_cert = client
        self._local = threading.local()

    @property
    def pid(self) -> int:
        return self.process.pid

    def client(self, **kwargs) -> Client:
        """A new client with its own kept-alive connection."""
        kwargs.setdefault("client", self.client_cert)
        return Client(self.port, self.certs.ca, **kwargs)

    def _shared(self) -> Client:
        c = getattr(self._local, "client", None)
        if c is None:
            c = self._local.client = self.client()
        return c

    def post_json(self, path: str, body: Any, content_type: str = "application/json") -> tuple[int, Any]:
        return self._shared().post_json(path, body, content_type)

    def request(self, method: str, path: str, body: bytes | None = None, headers: Optional[dict] = None):
        return self._shared().request(method, path, body, headers)

    def get(self, path: str) -> tuple[int, str]:
        return self._shared().get(path)

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_text(self) -> str:
        return Path(self.log_path).read_text(errors="replace")

    def log_records(self) -> list[dict]:
        out = []
        for line in self.log_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
        return out

    def audit_lines(self) -> list[dict]:
        return [r for r in self.log_records() if r.get("logger") == "netpol_guard.audit"]

    def worker_pids(self) -> set[int]:
        """The gunicorn workers: children of the server process (from /proc)."""
        out = set()
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                if ppid == self.pid:
                    out.add(int(entry))
        return out

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by the server process and its live children
        (workers, the pod agent): a measure of the work done that does not depend on how
        many other processes share the machine's cores."""
        tick = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in {self.pid} | self.worker_pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # ended meanwhile
            total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
        return total / tick

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"netpol-guard serve exited with {self.process.returncode}:\n{self.log_text()}")
            probe = self.client()
            try:
                status, body = probe.get("/readyz")
                if status == 200:
                    return
                last = f"{status} {body}"
            except (OSError, http.client.HTTPException) as exc:
                last = repr(exc)
            finally:
                probe.close()
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"netpol-guard serve not ready after {timeout}s ({last}):\n{self.log_text()}")

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM to the server's pid (gunicorn finishes in-flight requests), SIGKILL after timeout."""
        shared = getattr(self._local, "client", None)
        if shared is not None:
            shared.close()  # an idle kept-alive connection delays gunicorn's graceful stop
        if self.alive():
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.process.wait(5)
        return self.process.returncode


def start_server(args: Iterable[str] = (), *, certs: Optional[CertPaths] = None, workdir: Optional[str] = None,
                 env: Optional[dict] = None, port: Optional[int] = None, client: Optional[CertPaths] = None,
                 cwd: Optional[str] = None, pass_certs: bool = True, wait: bool = True,
                 timeout: float = START_TIMEOUT, cpus: Optional[set[int]] = None) -> RunningServer:
    """Start `netpol-guard serve ARGS --bind 127.0.0.1:PORT --cert --key` and wait for /readyz.

    certs: the serving certificate (made in a temporary directory when omitted).
    pass_certs=False leaves out --cert/--key (for --dev, which makes its own in
    CWD/certs/; pass certs= with the paths it will use so the client can verify).
    client: a client certificate to present (when the server runs with --client-ca).
    env: extra environment (NETPOL_GUARD_* settings); the test's own NETPOL_GUARD_*
    variables are not inherited. cwd: the server's working directory (default: the repo).
    cpus: the CPUs the server may run on (its affinity mask, as `taskset` would set it).
    """
    workdir = workdir or tempfile.mkdtemp(prefix="npg-serve-")
    if certs is None:
        certs = make_certs(os.path.join(workdir, "certs"))
    port = port or free_port()
    cmd = [sys.executable, "-m", "webhook", "serve", *args, "--bind", f"127.0.0.1:{port}"]
    if pass_certs:
        cmd += ["--cert", certs.cert, "--key", certs.key]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("NETPOL_GUARD_")}
    full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.update(env or {})
    log_path = os.path.join(workdir, "serve.log")
    # The child inherits the affinity of the thread that forks it: narrow this thread's mask
    # around the start (a preexec_fn would run Python between fork and exec, unsafe with threads).
    mask = os.sched_getaffinity(0) if cpus else None
    if cpus:
        os.sched_setaffinity(0, cpus)
    try:
        with open(log_path, "wb") as log:
            process = subprocess.Popen(cmd, cwd=cwd or str(REPO), env=full_env, stdout=log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    finally:
        if mask is not None:
            os.sched_setaffinity(0, mask)
    server = RunningServer(process, port, certs, log_path, client)
    if wait:
        server.wait_ready(timeout)
    return server


def run_serve(args: Iterable[str], *, cwd: Optional[str] = None, env: Optional[dict] = None,
              timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Run `netpol-guard serve ARGS` expecting it to exit (start-up errors); returns the result."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("NETPOL_GUARD_")}
    full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "webhook", "serve", *args], cwd=cwd or str(REPO), env=full_env,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


class ServerFactory:
    def __init__(self, tmp_dir: str):
        self.tmp_dir = tmp_dir
        self.started: list[RunningServer] = []

    def __call__(self, args: Iterable[str] = (), **kwargs) -> RunningServer:
        kwargs.setdefault("workdir", tempfile.mkdtemp(prefix="serve-", dir=self.tmp_dir))
        server = start_server(args, **kwargs)
        self.started.append(server)
        return server

    def stop_all(self) -> None:
        for s in self.started:
            s.stop()


@pytest.fixture
def serve(tmp_path):
    """Factory: serve(args, **start_server kwargs) -> RunningServer; all stopped after the test."""
    factory = ServerFactory(str(tmp_path))
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture(scope="module")
def module_server_factory(tmp_path_factory):
    """Like `serve`, for module-scoped fixtures: one server shared by a module's tests."""
    factory = ServerFactory(str(tmp_path_factory.mktemp("serve")))
    try:
        yield factory
    finally:
        factory.stop_all()


__all__ = ["serve", "module_server_factory"]
