"""A real Kubernetes control plane on 127.0.0.1: etcd, kube-apiserver, kube-controller-manager.

The binaries are built from their Go modules by scripts/controlplane/build.sh (pinned in
scripts/controlplane/versions.env, cached outside the checkout). They are started the way
controller-runtime's envtest starts them: on free loopback ports, with a private CA, the
API server serving TLS and trusting client certificates signed by that CA; an admin client
certificate in the group system:masters; no scheduler and no kubelet, so pods are API
objects that stay Pending (tests patch their status). kube-controller-manager runs only the
namespace and garbage-collector controllers, so deleting a namespace deletes its contents and
objects with ownerReferences are collected, and each namespace gets its `default`
ServiceAccount, as on a real cluster.

    cp = ControlPlane(workdir)           # or the `control_plane` pytest fixture (one per session)
    cp.start()
    cp.kubectl("get", "ns")              # the real kubectl, with cp.kubeconfig
    cp.stop()

Every process is started in its own session and stopped by its pid (SIGTERM, then SIGKILL);
pid files are written so that `make cluster-down` can stop what `make cluster` started.
"""
from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "scripts" / "controlplane" / "build.sh"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
SERVICE_CIDR = "10.96.0.0/16"
ADMIN_USER = "netpol-guard-e2e-admin"


class ControlPlaneError(RuntimeError):
    """The control plane could not be built or started; the message says which part and why."""


def binaries() -> Path:
    """The directory holding etcd, kube-apiserver, kube-controller-manager and kubectl,
    built by scripts/controlplane/build.sh if this machine has not built them yet."""
    try:
        out = subprocess.run([str(BUILD_SCRIPT)], check=True, capture_output=True, text=True,
                             stdin=subprocess.DEVNULL, timeout=3600)
    except subprocess.CalledProcessError as exc:
        raise ControlPlaneError(f"building the control plane failed (exit {exc.returncode}):\n{exc.stderr[-4000:]}") from None
    return Path(out.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- PKI ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: object


def _name(cn: str, orgs: Sequence[str] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    return x509.Name(attrs + [x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(cn: str) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return Issued(cert, key)


def issue(ca: Issued, cn: str, *, dns: Iterable[str] = (), ips: Iterable[str] = (),
          orgs: Sequence[str] = (), client: bool = False) -> Issued:
    """A leaf certificate signed by `ca`: serving (with DNS and IP SANs) or client (CN = user,
    O = groups, as the API server's x509 authenticator reads them)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(cn, orgs)).issuer_name(ca.cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=30))
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH if client
                                                     else ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))
    sans = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return Issued(builder.sign(ca.key, hashes.SHA256()), key)


def write_pair(directory: Path, stem: str, issued: Issued) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    crt, key = directory / f"{stem}.crt", directory / f"{stem}.key"
    crt.write_bytes(issued.cert.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(issued.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))
    key.chmod(0o600)
    return crt, key


def pem_b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


# --- processes ---------------------------------------------------------------------------

class Process:
    """One program we started: its own session, output to a log file, a pid file beside it."""

    def __init__(self, name: str, argv: list[str], workdir: Path, env: Optional[dict] = None):
        self.name, self.argv, self.workdir, self.env = name, argv, workdir, env
        self.log_path = workdir / f"{name}.log"
        self.pid_path = workdir / f"{name}.pid"
        self.popen: Optional[subprocess.Popen] = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          cwd=str(self.workdir), env=self.env, start_new_session=True)
        self.pid_path.write_text(f"{self.popen.pid}\n")

    @property
    def pid(self) -> Optional[int]:
        return self.popen.pid if self.popen else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = STOP_TIMEOUT, sig: int = signal.SIGTERM) -> None:
        if self.popen is None:
            return
        if self.popen.poll() is None:
            os.kill(self.popen.pid, sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        self.pid_path.unlink(missing_ok=True)

    def kill(self) -> None:
        self.stop(sig=signal.SIGKILL)


def stop_pid_file(pid_file: Path, timeout: float = STOP_TIMEOUT) -> Optional[int]:
    """Stop the process a pid file names (for a later `cluster-down`, which did not start it)
    - only if that pid still runs a program of ours (its cmdline names the state directory or
    one of our binaries), so a reused pid is never signalled. Returns the pid stopped, if any."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        pid_file.unlink(missing_ok=True)
        return None
    expected = pid_file.with_suffix(".cmd")
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        pid_file.unlink(missing_ok=True)
        return None
    if expected.exists() and expected.read_text().strip() not in cmdline:
        pid_file.unlink(missing_ok=True)
        return None
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pid_file.unlink(missing_ok=True)
        return None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        if _is_zombie(pid):
            break
        time.sleep(0.1)
    if Path(f"/proc/{pid}").exists() and not _is_zombie(pid):
        os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return pid


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


# --- the control plane -------------------------------------------------------------------

def kubeconfig_text(server: str, ca: Path, *, cert: Optional[Path] = None, key: Optional[Path] = None,
                    token: Optional[str] = None, user: str = "admin", namespace: str = "default") -> str:
    auth: dict = {}
    if cert is not None:
        auth = {"client-certificate": str(cert), "client-key": str(key)}
    if token is not None:
        auth = {"token": token}
    doc = {
        "apiVersion": "v1", "kind": "Config", "current-context": "e2e", "preferences": {},
        "clusters": [{"name": "e2e", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": auth}],
        "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": user, "namespace": namespace}}],
    }
    return json.dumps(doc, indent=2) + "\n"


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager on free 127.0.0.1 ports under `workdir`."""

    def __init__(self, workdir: os.PathLike | str, bin_dir: Optional[Path] = None):
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.bin_dir = Path(bin_dir) if bin_dir else None
        self.pki = self.workdir / "pki"
        self.etcd_port = self.etcd_peer_port = self.api_port = self.kcm_port = 0
        self.etcd: Optional[Process] = None
        self.apiserver: Optional[Process] = None
        self.kcm: Optional[Process] = None
        self.kubeconfig = self.workdir / "kubeconfig"

    # --- paths and addresses ---
    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.etcd_port}"

    @property
    def ca_file(self) -> Path:
        return self.pki / "ca.crt"

    def bin(self, name: str) -> str:
        return str(self.bin_dir / name)

    # --- lifecycle ---
    def start(self) -> "ControlPlane":
        if self.bin_dir is None:
            self.bin_dir = binaries()
        self._write_pki()
        self.etcd_port, self.etcd_peer_port = free_port(), free_port()
        self.api_port, self.kcm_port = free_port(), free_port()
        try:
            self._start_etcd()
            self._start_apiserver()
            self.kubeconfig.write_text(kubeconfig_text(self.url, self.ca_file, cert=self.pki / "admin.crt",
                                                       key=self.pki / "admin.key", user=ADMIN_USER))
            self._start_kcm()
            self.wait_for_default_namespace()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for proc in (self.kcm, self.apiserver, self.etcd):
            if proc is not None:
                proc.stop()

    def __enter__(self) -> "ControlPlane":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _write_pki(self) -> None:
        if (self.pki / "ca.crt").exists():
            return  # a restart keeps the identities clients already trust
        ca = make_ca("netpol-guard-e2e-ca")
        write_pair(self.pki, "ca", ca)
        write_pair(self.pki, "apiserver", issue(ca, "kube-apiserver", dns=("localhost", "kubernetes",
                                                                              "kubernetes.default.svc"),
                                                ips=("127.0.0.1", "10.96.0.1")))
        write_pair(self.pki, "admin", issue(ca, ADMIN_USER, orgs=("system:masters",), client=True))
        # in system:masters: with one identity for all its controllers (no per-controller service
        # accounts), the namespace controller must be able to delete every kind of object
        write_pair(self.pki, "kcm", issue(ca, "system:kube-controller-manager", orgs=("system:masters",), client=True))
        sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        (self.pki / "sa.key").write_bytes(sa.private_bytes(serialization.Encoding.PEM,
                                                           serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
        (self.pki / "sa.key").chmod(0o600)
        (self.pki / "sa.pub").write_bytes(sa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))

    def _start_etcd(self) -> None:
        data = self.workdir / "etcd-data"
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        self.etcd = Process("etcd", [
            self.bin("etcd"), "--name", "e2e", "--data-dir", str(data),
            "--listen-client-urls", self.etcd_url, "--advertise-client-urls", self.etcd_url,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"e2e={peer}", "--initial-cluster-state", "new",
            "--unsafe-no-fsync",  # as envtest: a test cluster need not survive a power cut
            "--log-level", "warn",
        ], self.workdir)
        (self.workdir / "etcd.cmd").write_text(self.bin("etcd"))
        self.etcd.start()
        self._wait("etcd", self.etcd, lambda: _http_ok(f"{self.etcd_url}/health"))

    def apiserver_argv(self) -> list[str]:
        p = self.pki
        return [
            self.bin("kube-apiserver"),
            "--etcd-servers", self.etcd_url,
            "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
            "--secure-port", str(self.api_port),
            "--tls-cert-file", str(p / "apiserver.crt"), "--tls-private-key-file", str(p / "apiserver.key"),
            "--client-ca-file", str(p / "ca.crt"),
            "--service-cluster-ip-range", SERVICE_CIDR,
            "--service-account-issuer", f"https://127.0.0.1:{self.api_port}",
            "--service-account-key-file", str(p / "sa.pub"),
            "--service-account-signing-key-file", str(p / "sa.key"),
            "--authorization-mode", "RBAC",
            "--allow-privileged=true",
            # no service-account token controller runs: pods need not name an existing SA
            "--disable-admission-plugins", "ServiceAccount",
            "--cert-dir", str(self.workdir / "apiserver-certs"),
            "--profiling=false",
            "--v", "1",
        ]

    def _start_apiserver(self) -> None:
        self.apiserver = Process("kube-apiserver", self.apiserver_argv(), self.workdir)
        (self.workdir / "kube-apiserver.cmd").write_text(self.bin("kube-apiserver"))
        self.apiserver.start()
        self._wait("kube-apiserver", self.apiserver, lambda: self.get_ok("/readyz"))

    def _start_kcm(self) -> None:
        kc = self.workdir / "kcm.kubeconfig"
        kc.write_text(kubeconfig_text(self.url, self.ca_file, cert=self.pki / "kcm.crt", key=self.pki / "kcm.key",
                                      user="system:kube-controller-manager"))
        self.kcm = Process("kube-controller-manager", [
            self.bin("kube-controller-manager"),
            "--kubeconfig", str(kc), "--authentication-kubeconfig", str(kc), "--authorization-kubeconfig", str(kc),
            "--controllers", "namespace-controller,garbage-collector-controller,serviceaccount-controller",
            "--leader-elect=false",
            "--bind-address", "127.0.0.1", "--secure-port", str(self.kcm_port),
            "--cert-dir", str(self.workdir / "kcm-certs"),
            "--v", "1",
        ], self.workdir)
        (self.workdir / "kube-controller-manager.cmd").write_text(self.bin("kube-controller-manager"))
        self.kcm.start()
        time.sleep(0.2)
        if not self.kcm.alive():
            raise ControlPlaneError(f"kube-controller-manager exited at once:\n{self.kcm.log_tail()}")

    def _wait(self, what: str, proc: Process, ready, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not proc.alive():
                raise ControlPlaneError(f"{what} exited with {proc.popen.returncode}:\n{proc.log_tail()}")
            if ready():
                return
            time.sleep(0.1)
        raise ControlPlaneError(f"{what} not ready after {timeout:.0f} s:\n{proc.log_tail()}")

    def wait_for_default_namespace(self, timeout: float = START_TIMEOUT) -> None:
        """The API server creates `default` and the `kubernetes` Service shortly after /readyz."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.get_ok("/api/v1/namespaces/default"):
                return
            time.sleep(0.1)
        raise ControlPlaneError("namespace default never appeared")

    def restart_apiserver(self) -> None:
        """Stop kube-apiserver and start it again on the same port (clients keep their kubeconfig)."""
        assert self.apiserver is not None
        self.apiserver.stop()
        self._start_apiserver()

    # --- talking to it ---
    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return ctx

    def request(self, method: str, path: str, body=None, content_type: str = "application/json",
                timeout: float = 10.0) -> tuple[int, dict | str]:
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": content_type, "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, context=self.ssl_context(), timeout=timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def get_ok(self, path: str) -> bool:
        try:
            return self.request("GET", path, timeout=2.0)[0] == 200
        except OSError:
            return False

    def kubectl(self, *args: str, input: Optional[str] = None, check: bool = True, timeout: float = 60.0,
                kubeconfig: Optional[Path] = None) -> subprocess.CompletedProcess:
        """The real kubectl against this control plane; output as text."""
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        env["KUBECONFIG"] = str(kubeconfig or self.kubeconfig)
        res = subprocess.run([self.bin("kubectl"), *args], input=input, capture_output=True, text=True,
                             timeout=timeout, env=env, stdin=None if input is not None else subprocess.DEVNULL)
        if check and res.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({res.returncode}):\n{res.stderr}{res.stdout}")
        return res

    def api_client(self, kubeconfig: Optional[Path] = None):
        """A kubernetes Python client ApiClient for this control plane."""
        from kubernetes import config as kconfig
        return kconfig.new_client_from_config(config_file=str(kubeconfig or self.kubeconfig))

    def service_account_kubeconfig(self, namespace: str, name: str, path: Path, hours: int = 24) -> Path:
        """A kubeconfig that authenticates as a ServiceAccount with a token from the TokenRequest
        API (as a pod's projected token), so the chart's RBAC is what the holder may do."""
        token = self.kubectl("create", "token", name, "-n", namespace, f"--duration={hours}h").stdout.strip()
        path.write_text(kubeconfig_text(self.url, self.ca_file, token=token,
                                        user=f"system:serviceaccount:{namespace}:{name}", namespace=namespace))
        path.chmod(0o600)
        return path

    # --- etcd ---
    def etcd_revision(self) -> int:
        status, body = _etcd_post(self.etcd_url, "/v3/kv/range", {"key": base64.b64encode(b"/").decode()})
        return int(body["header"]["revision"])

    def compact_etcd(self) -> int:
        """Compact etcd at its current revision (physical): every watch from an older
        resourceVersion now ends in 410 Gone once the API server's watch cache has moved on."""
        rev = self.etcd_revision()
        _etcd_post(self.etcd_url, "/v3/kv/compaction", {"revision": str(rev), "physical": True})
        return rev


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as resp:
            return resp.status == 200
    except (OSError, ValueError):
        return False


def _etcd_post(base: str, path: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10.0) as resp:
        return resp.status, json.loads(resp.read())
