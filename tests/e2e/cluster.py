"""netpol-guard on a real control plane: what `make cluster` starts and the e2e tier runs on.

    python -m tests.e2e.cluster up   [--state DIR] [--no-examples]   # make cluster
    python -m tests.e2e.cluster down [--state DIR]                   # make cluster-down

`up` starts etcd, kube-apiserver and kube-controller-manager (tests/e2e/controlplane.py),
then installs what the chart would, minus what needs a kubelet:

- `helm template` renders the chart itself (certificates.mode=existingSecret, so the
  webhook configurations carry a caBundle). Applied as rendered: the release Namespace,
  the ServiceAccount, every RBAC object, the ConfigMap. The two webhook configurations are
  applied with ONLY `clientConfig.service` replaced by a `url:` on 127.0.0.1 - rules,
  selectors, failurePolicy, timeouts, matchConditions exactly as shipped. Not applied: the
  Deployment, Service, PodDisruptionBudget, NetworkPolicy and hooks (no pod can run here).
- `netpol-guard serve --controller` runs as a local process in live mode with the chart's
  configuration (from the rendered ConfigMap) and the chart's identity: a ServiceAccount
  token from the TokenRequest API, so the chart's RBAC is exactly what it may do.
- With examples (the default): the objects of examples/cluster, and one Pending Pod per
  workload with a pod IP in its status (no controllers create pods here).

It returns once a `kubectl apply --dry-run=server` of a bad example really comes back
denied, and prints `export KUBECONFIG=...`. Everything runs in the background; the pid
files in the state directory let `down` stop exactly what `up` started.
"""
from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterable, Optional

import yaml

from tests.e2e.controlplane import (REPO, ControlPlane, ControlPlaneError, Process, free_port, issue, make_ca,
                                    stop_pid_file, write_pair)

RELEASE = "netpol-guard"
NAMESPACE = "netpol-guard"
DEFAULT_STATE = REPO / ".cluster"
DENIAL_PROBE = REPO / "examples" / "policies" / "bad" / "egress-without-dns.yaml"
# the order `down` stops things in: the webhook first (it watches the API server), etcd last
PROCESSES = ("netpol-guard", "kube-controller-manager", "kube-apiserver", "etcd")
# what the chart renders that needs a kubelet, a Service in front of pods, or a release hook
NOT_APPLIED = {"Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor", "Job", "Pod"}
WEBHOOK_KINDS = {"ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"}


def helm() -> str:
    found = shutil.which("helm") or (str(REPO / ".tools" / "bin" / "helm")
                                     if (REPO / ".tools" / "bin" / "helm").exists() else None)
    if not found:
        raise ControlPlaneError("helm not found: run `make tools` (installs it into .tools/bin)")
    return found


def render_chart(ca_bundle_b64: str, values: Iterable[str] = (), kube_version: str = "") -> list[dict]:
    """The chart's objects as `helm template` renders them for this cluster (kube_version: the
    API server's, so version-dependent parts such as matchConditions render as `helm install`
    would render them against it)."""
    args = [helm(), "template", RELEASE, str(REPO / "charts" / "netpol-guard"), "--namespace", NAMESPACE,
            *(("--kube-version", kube_version) if kube_version else ()),
            "--set", "certificates.mode=existingSecret",
            "--set", f"certificates.existingSecret.name={RELEASE}-tls",
            "--set", f"certificates.existingSecret.caBundle={ca_bundle_b64}"]
    for v in values:
        args += ["--set", v]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return [d for d in yaml.safe_load_all(out) if isinstance(d, dict) and d.get("kind")]


def webhooks_by_url(doc: dict, port: int) -> dict:
    """A webhook configuration with each webhook's clientConfig.service swapped for a url on
    127.0.0.1:port (same path); nothing else changes."""
    doc = copy.deepcopy(doc)
    for hook in doc.get("webhooks") or []:
        cc = hook["clientConfig"]
        service = cc.pop("service")
        cc["url"] = f"https://127.0.0.1:{port}{service.get('path') or '/'}"
    return doc


def pods_for_workloads(objects: Iterable[dict], ip_base: str = "10.244.0.") -> list[tuple[dict, str]]:
    """One Pod per workload (the template's labels and containers), with the pod IP its status
    will be patched to: nothing else would create pods on a control plane without controllers."""
    out = []
    n = 10
    for obj in objects:
        if obj.get("kind") not in WORKLOAD_KINDS:
            continue
        spec = obj.get("spec") or {}
        template = (spec.get("jobTemplate") or {}).get("spec", {}).get("template") if obj["kind"] == "CronJob" \
            else spec.get("template")
        if not template:
            continue
        meta = obj["metadata"]
        ns = meta.get("namespace", "default")
        # named as its controller would name it: <statefulset>-0, else <workload>-<hash>-<id>
        digest = hashlib.sha256(f"{ns}/{meta['name']}".encode()).hexdigest()
        suffix = "0" if obj["kind"] == "StatefulSet" else f"{digest[:9]}-{digest[9:14]}"
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": f"{meta['name']}-{suffix}", "namespace": ns,
                            "labels": dict((template.get("metadata") or {}).get("labels") or {})},
               "spec": {"containers": [{"name": c["name"], "image": c.get("image", "example.invalid/app"),
                                        **({"ports": c["ports"]} if c.get("ports") else {})}
                                       for c in template["spec"]["containers"]]}}
        out.append((pod, f"{ip_base}{n}"))
        n += 1
    return out


class GuardedCluster:
    """A ControlPlane with netpol-guard installed from the chart and serving locally."""

    def __init__(self, state: os.PathLike | str = DEFAULT_STATE, *, examples: bool = True,
                 chart_values: Iterable[str] = (), extra_config: Optional[dict] = None,
                 denial_probe: Path = DENIAL_PROBE, controller: bool = True,
                 apiserver_args: Iterable[str] = (), crds: Iterable[Path] = ()):
        """denial_probe: a policy the configured webhook denies (with mutations.addDnsEgress on,
        the default probe is repaired rather than denied); controller: run `serve --controller`
        (False: the webhook only, for tests that run controller processes of their own);
        apiserver_args: extra kube-apiserver flags; crds: CustomResourceDefinition manifests applied
        (and waited for until established) before netpol-guard starts, as a cluster that had them."""
        self.state = Path(state).resolve()
        self.denial_probe = Path(denial_probe)
        self.examples, self.chart_values, self.extra_config = examples, tuple(chart_values), extra_config
        self.controller = controller
        self.crds = tuple(Path(c) for c in crds)
        self.cp = ControlPlane(self.state, apiserver_args=tuple(apiserver_args))
        self.serve: Optional[Process] = None
        self.serve_port = 0
        self.objects: list[dict] = []

    @property
    def kubeconfig(self) -> Path:
        return self.cp.kubeconfig

    def kubectl(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return self.cp.kubectl(*args, **kwargs)

    def apply_objects(self, docs: list[dict]) -> None:
        if docs:
            self.kubectl("apply", "--server-side", "--field-manager=netpol-guard-e2e", "-f", "-",
                         input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))

    # --- lifecycle ---
    def up(self) -> "GuardedCluster":
        self.state.mkdir(parents=True, exist_ok=True)
        self.cp.start()
        try:
            self._install()
        except BaseException:
            self.down()
            raise
        return self

    def _install(self) -> None:
        webhook_pki = self.state / "webhook-pki"
        ca = make_ca("netpol-guard-e2e-webhook-ca")
        ca_crt, _ = write_pair(webhook_pki, "ca", ca)
        self.tls_cert, self.tls_key = write_pair(webhook_pki, "tls", issue(ca, "netpol-guard", dns=("localhost",),
                                                                          ips=("127.0.0.1",)))
        self.ca_bundle = base64.b64encode(ca_crt.read_bytes()).decode()
        server = json.loads(self.kubectl("version", "-o", "json").stdout)["serverVersion"]["gitVersion"]
        self.objects = render_chart(self.ca_bundle, self.chart_values, kube_version=server)
        if self.crds:
            self.install_crds(self.crds)
        self.kubectl("create", "namespace", NAMESPACE)
        self.apply_objects([d for d in self.objects if d["kind"] not in NOT_APPLIED | WEBHOOK_KINDS])
        config_map = next(d for d in self.objects if d["kind"] == "ConfigMap")
        config = yaml.safe_load(config_map["data"]["config.yaml"]) or {}
        if self.extra_config:
            _merge(config, self.extra_config)
        config_path = self.state / "config.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        sa = next(d for d in self.objects if d["kind"] == "ServiceAccount")["metadata"]["name"]
        sa_kubeconfig = self.cp.service_account_kubeconfig(NAMESPACE, sa, self.state / "netpol-guard.kubeconfig")
        self.start_serve(config_path, sa_kubeconfig)
        if self.examples:
            self.load_examples()
        else:  # the denial probe's namespace (examples/cluster would have brought it)
            probe_ns = yaml.safe_load(self.denial_probe.read_text())["metadata"]["namespace"]
            self.apply_objects([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": probe_ns}}])
        self.apply_objects([webhooks_by_url(d, self.serve_port) for d in self.objects if d["kind"] in WEBHOOK_KINDS])
        self.wait_for_denial()

    def install_crds(self, paths: Iterable[Path]) -> None:
        """Create CRDs and wait until the API server serves them."""
        for path in paths:
            self.kubectl("apply", "--server-side", "-f", str(path))
        for path in paths:
            self.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(path))

    def start_serve(self, config_path: Path, kubeconfig: Path) -> None:
        self.serve_port = self.serve_port or free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("NETPOL_GUARD_") and k != "KUBECONFIG"}
        env.update({"POD_NAMESPACE": NAMESPACE, "POD_NAME": "netpol-guard-local-0",
                    "PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", "")})
        self.serve = Process("netpol-guard", [
            sys.executable, "-m", "webhook", "serve", "--config", str(config_path), "--kubeconfig", str(kubeconfig),
            "--bind", f"127.0.0.1:{self.serve_port}", "--cert", str(self.tls_cert), "--key", str(self.tls_key),
            *(["--controller"] if self.controller else []),
        ], self.state, env=env)
        (self.state / "netpol-guard.cmd").write_text(str(config_path))
        self.serve.start()
        self._wait_serve_ready()

    def _wait_serve_ready(self, timeout: float = 60.0) -> None:
        import ssl
        import urllib.request
        ctx = ssl.create_default_context(cafile=str(self.state / "webhook-pki" / "ca.crt"))
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if not self.serve.alive():
                raise ControlPlaneError(f"netpol-guard serve exited:\n{self.serve.log_tail()}")
            try:
                with urllib.request.urlopen(f"https://127.0.0.1:{self.serve_port}/readyz", context=ctx,
                                            timeout=2.0) as resp:
                    if resp.status == 200:
                        return
            except Exception as exc:  # noqa: BLE001 - not up yet; say the last reason on timeout
                last = repr(exc)
            time.sleep(0.2)
        raise ControlPlaneError(f"netpol-guard serve not ready after {timeout:.0f} s ({last}):\n"
                                f"{self.serve.log_tail()}")

    def load_examples(self) -> None:
        docs = []
        for path in sorted((REPO / "examples" / "cluster").glob("*.yaml")):
            docs += [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict) and d.get("kind")]
        namespaces = [d for d in docs if d["kind"] == "Namespace"]
        self.apply_objects(namespaces)
        self.apply_objects([d for d in docs if d["kind"] != "Namespace"])
        for pod, ip in pods_for_workloads(docs):
            self.create_pod(pod, ip)

    def create_pod(self, pod: dict, ip: str) -> None:
        """Create a Pod and give it the status a kubelet would: Running, with a pod IP."""
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        self.apply_objects([pod])
        status = {"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}
        self.kubectl("patch", "pod", name, "-n", ns, "--subresource=status", "--type=merge", "-p", json.dumps(status))

    def wait_for_denial(self, timeout: float = 60.0) -> str:
        """Until the API server really denies a bad policy through our webhook (the webhook
        configuration and the live view both take a moment)."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            res = self.kubectl("apply", "--dry-run=server", "-f", str(self.denial_probe), check=False)
            last = res.stderr + res.stdout
            if res.returncode != 0 and "denied the request" in last:
                return last
            time.sleep(0.3)
        raise ControlPlaneError(f"no denial from the webhook after {timeout:.0f} s; last answer:\n{last}\n"
                                f"serve log:\n{self.serve.log_tail() if self.serve else ''}")

    def down(self) -> None:
        if self.serve is not None:
            self.serve.stop(timeout=30)
        self.cp.stop()


def _merge(into: dict, extra: dict) -> None:
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v


def down(state: Path) -> list[str]:
    """Stop what `up` started in `state`, by its pid files; returns what was stopped."""
    stopped = []
    for name in PROCESSES:
        pid = stop_pid_file(state / f"{name}.pid", timeout=30)
        if pid is not None:
            stopped.append(f"{name} (pid {pid})")
    return stopped


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.e2e.cluster",
                                     description="A local real control plane with netpol-guard (make cluster).")
    parser.add_argument("action", choices=("up", "down"))
    parser.add_argument("--state", default=str(DEFAULT_STATE), help="state directory (default: .cluster/)")
    parser.add_argument("--no-examples", action="store_true", help="do not load examples/cluster")
    args = parser.parse_args(argv)
    state = Path(args.state).resolve()
    if args.action == "down":
        stopped = down(state)
        print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
        return 0
    if any((state / f"{name}.pid").exists() for name in PROCESSES):
        stale = down(state)
        if stale:
            print(f"stopped a previous cluster first: {', '.join(stale)}", file=sys.stderr)
    if state.exists():
        shutil.rmtree(state)
    print("starting etcd, kube-apiserver, kube-controller-manager and netpol-guard "
          "(the first run builds the control plane: 10-20 minutes)...", file=sys.stderr)
    try:
        cluster = GuardedCluster(state, examples=not args.no_examples).up()
    except (ControlPlaneError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or ""
        print(f"make cluster: {exc}\n{detail}", file=sys.stderr)
        return 1
    # leave the processes running: forget our handles without stopping them. kubectl goes beside
    # helm in .tools/bin, so one PATH line gives a newcomer both.
    tools = REPO / ".tools" / "bin"
    tools.mkdir(parents=True, exist_ok=True)
    link = tools / "kubectl"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(Path(cluster.cp.bin("kubectl")))
    print(f"kube-apiserver {cluster.cp.url}; netpol-guard on https://127.0.0.1:{cluster.serve_port}; "
          f"logs and pid files in {state}/", file=sys.stderr)
    print("try: kubectl apply -f examples/policies/bad/egress-without-dns.yaml   (denied)", file=sys.stderr)
    print("stop everything with: make cluster-down", file=sys.stderr)
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    print(f"export PATH={tools}:$PATH")
    return 0


if __name__ == "__main__":
    sys.exit(main())
