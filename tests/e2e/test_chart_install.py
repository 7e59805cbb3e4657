"""`helm install`, `helm upgrade` and `helm uninstall` with the real helm into a real API server.

The control plane is bare (no netpol-guard running): what is tested is that the API server
accepts every object the chart makes, webhook configurations included, in each certificate
mode, and that upgrade and uninstall go through.

- No kubelet runs here, so no pod of the chart ever starts. Where the lifecycle needs a
  container to have run - the pre-delete hook Job that removes the webhook configurations
  before the pods go - its container command runs as a local process, with a token of the
  Job's own ServiceAccount (so the hook's RBAC is what it may do), and the Job is then
  marked complete through its status subresource, as the job controller would, so helm
  proceeds. Uninstall is thereby tested for real: the webhook configurations are gone
  because the hook's script deleted them.
- cert-manager's Certificate and Issuer and the Prometheus Operator's ServiceMonitor need
  their CRDs. The upstream CRD files are not reachable offline, so minimal CRDs of our own
  stand in for them: the right group, kind, plural, scope and versions, with an open schema
  (x-kubernetes-preserve-unknown-fields). The server thus checks that these objects are of
  a kind it serves, not their fields.
- The chart's webhook configurations point at its Service, which has no endpoints (no
  pods). With failurePolicy Fail that stops NetworkPolicy writes in every namespace the
  webhook judges - the real behaviour of a chart whose pods never became ready. What must
  hold even then is tested: kube-system and the release namespace stay writable.
"""
from __future__ import annotations

import base64
import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time

import pytest
import yaml

from tests.e2e.cluster import helm
from tests.e2e.controlplane import REPO, ControlPlane, issue, make_ca, write_pair

CHART = REPO / "charts" / "netpol-guard"
MODES = ("selfManaged", "certManager", "existingSecret")
WEBHOOK_KINDS = ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")
HELM_TIMEOUT = "120s"


def crd(group: str, kind: str, plural: str) -> dict:
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {"group": group, "scope": "Namespaced",
                 "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
                 "versions": [{"name": "v1", "served": True, "storage": True,
                               "schema": {"openAPIV3Schema": {"type": "object",
                                                              "x-kubernetes-preserve-unknown-fields": True}}}]},
    }


# minimal stand-ins for the upstream CRDs (see the module docstring)
CRDS = [crd("cert-manager.io", "Certificate", "certificates"), crd("cert-manager.io", "Issuer", "issuers"),
        crd("monitoring.coreos.com", "ServiceMonitor", "servicemonitors")]


@pytest.fixture(scope="module")
def cp(control_plane):
    control_plane.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": CRDS}))
    for c in CRDS:
        control_plane.kubectl("wait", "--for=condition=Established", f"crd/{c['metadata']['name']}", "--timeout=60s")
    return control_plane


def run_helm(cp: ControlPlane, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELM_")}
    env.update({"KUBECONFIG": str(cp.kubeconfig), "HELM_CACHE_HOME": str(cp.workdir / "helm-cache"),
                "HELM_CONFIG_HOME": str(cp.workdir / "helm-config"), "HELM_DATA_HOME": str(cp.workdir / "helm-data")})
    res = subprocess.run([helm(), *args], capture_output=True, text=True, env=env, timeout=300,
                         stdin=subprocess.DEVNULL)
    if check and res.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({res.returncode}):\n{res.stderr}{res.stdout}")
    return res


def mode_values(cp: ControlPlane, mode: str, ns: str, release: str) -> list[str]:
    values = ["--set", f"certificates.mode={mode}", "--set", "serviceMonitor.enabled=true"]
    if mode == "existingSecret":
        # a real kubernetes.io/tls Secret, made before the release as an operator would
        ca = make_ca("e2e-existing-ca")
        pki = cp.workdir / f"pki-{release}"
        ca_crt, _ = write_pair(pki, "ca", ca)
        crt, key = write_pair(pki, "tls", issue(ca, f"{release}-netpol-guard.{ns}.svc",
                                                 dns=(f"{release}-netpol-guard.{ns}.svc",)))
        cp.kubectl("create", "secret", "tls", f"{release}-tls", "-n", ns, f"--cert={crt}", f"--key={key}")
        values += ["--set", f"certificates.existingSecret.name={release}-tls",
                   "--set", f"certificates.existingSecret.caBundle={base64.b64encode(ca_crt.read_bytes()).decode()}"]
    return values


def manifest_objects(cp: ControlPlane, release: str, ns: str) -> list[dict]:
    out = run_helm(cp, "get", "manifest", release, "-n", ns).stdout
    return [d for d in yaml.safe_load_all(out) if isinstance(d, dict) and d.get("kind")]


def get(cp: ControlPlane, obj: dict, ns: str) -> subprocess.CompletedProcess:
    meta = obj["metadata"]
    args = ["get", f"{obj['kind'].lower()}.{obj['apiVersion'].split('/')[0] if '/' in obj['apiVersion'] else ''}",
            meta["name"], "-o", "json"]
    if args[1].endswith("."):
        args[1] = args[1][:-1]
    if obj["kind"] not in ("ClusterRole", "ClusterRoleBinding", *WEBHOOK_KINDS, "Namespace"):
        args += ["-n", meta.get("namespace", ns)]
    return cp.kubectl(*args, check=False)


# --- the pre-delete hook, run as the Job's container would ---------------------------------

def complete_the_hook_job(cp: ControlPlane, ns: str, job_name: str, record: dict, deadline: float) -> None:
    """Wait for helm to create the hook Job; run its container command locally with the Job's
    ServiceAccount token; then mark the Job complete (or failed) through /status."""
    while time.monotonic() < deadline:
        res = cp.kubectl("get", "job", job_name, "-n", ns, "-o", "json", check=False)
        if res.returncode == 0:
            break
        time.sleep(0.2)
    else:
        record["error"] = "the hook Job never appeared"
        return
    job = json.loads(res.stdout)
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    sa_kubeconfig = cp.service_account_kubeconfig(ns, pod["serviceAccountName"], cp.workdir / f"{job_name}.kubeconfig",
                                                  hours=1)
    argv = list(container["command"]) + list(container.get("args", []))
    assert argv[0] == "python"
    argv[0] = sys.executable
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    env["KUBECONFIG"] = str(sa_kubeconfig)
    run = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, stdin=subprocess.DEVNULL)
    record["returncode"], record["output"] = run.returncode, run.stdout + run.stderr
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    if run.returncode == 0:
        conditions = [{"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": now},
                      {"type": "Complete", "status": "True", "lastTransitionTime": now}]
        status = {"startTime": now, "completionTime": now, "succeeded": 1, "conditions": conditions}
    else:
        conditions = [{"type": "FailureTarget", "status": "True", "lastTransitionTime": now,
                       "reason": "BackoffLimitExceeded"},
                      {"type": "Failed", "status": "True", "lastTransitionTime": now, "reason": "BackoffLimitExceeded"}]
        status = {"startTime": now, "failed": 1, "conditions": conditions}
    patched = cp.kubectl("patch", "job", job_name, "-n", ns, "--subresource=status", "--type=merge",
                         "-p", json.dumps({"status": status}), check=False)
    record["patch"] = patched.stderr + patched.stdout


def uninstall_with_hook(cp: ControlPlane, release: str, ns: str) -> dict:
    record: dict = {}
    deadline = time.monotonic() + 120
    worker = threading.Thread(target=complete_the_hook_job,
                              args=(cp, ns, f"{release}-netpol-guard-uninstall", record, deadline), daemon=True)
    worker.start()
    res = run_helm(cp, "uninstall", release, "-n", ns, "--timeout", HELM_TIMEOUT, check=False)
    worker.join(timeout=max(1.0, deadline - time.monotonic()))
    record["helm"] = res
    return record


# --- the lifecycle, per certificate mode -----------------------------------------------------

def policy(ns: str, name: str = "e2e-probe") -> str:
    return yaml.safe_dump({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                           "metadata": {"name": name, "namespace": ns},
                           "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}})


@pytest.mark.parametrize("mode", MODES)
def test_install_upgrade_uninstall_in_each_certificate_mode(cp, mode):
    release, ns = f"npg-{mode.lower()}", f"npg-{mode.lower()}"
    fullname = f"{release}-netpol-guard"
    cp.kubectl("create", "namespace", ns)
    values = mode_values(cp, mode, ns, release)

    # every rendered object passes the server's strict validation (unknown fields are errors)
    rendered = run_helm(cp, "template", release, str(CHART), "-n", ns, *values).stdout
    strict = cp.kubectl("create", "--dry-run=server", "--validate=strict", "-f", "-", input=rendered, check=False)
    assert strict.returncode == 0, strict.stderr

    run_helm(cp, "install", release, str(CHART), "-n", ns, *values, "--timeout", HELM_TIMEOUT)
    objects = manifest_objects(cp, release, ns)
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "Service", "ConfigMap", "ServiceMonitor", "ValidatingWebhookConfiguration"} <= kinds, kinds
    if mode == "certManager":
        assert {"Certificate", "Issuer"} <= kinds
    for obj in objects:
        res = get(cp, obj, ns)
        assert res.returncode == 0, f"{obj['kind']} {obj['metadata']['name']} not on the server: {res.stderr}"

    vwc = json.loads(cp.kubectl("get", "validatingwebhookconfiguration", fullname, "-o", "json").stdout)
    bundles = {bool(h["clientConfig"].get("caBundle")) for h in vwc["webhooks"]}
    assert bundles == {mode == "existingSecret"}, vwc["webhooks"][0]["clientConfig"]
    if mode == "certManager":
        assert vwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == f"{ns}/{fullname}"

    # the webhook has no endpoints (no pods): Fail blocks judged namespaces, never these two
    for exempt in ("kube-system", ns):
        res = cp.kubectl("apply", "-f", "-", input=policy(exempt), check=False)
        assert res.returncode == 0, f"{exempt}: {res.stderr}"
        cp.kubectl("delete", "networkpolicy", "e2e-probe", "-n", exempt)
    judged = cp.kubectl("apply", "-f", "-", input=policy("default"), check=False)
    assert judged.returncode == 1 and 'failed calling webhook "networkpolicies.netpol-guard.io"' in judged.stderr

    # upgrade: a changed value reaches the server
    run_helm(cp, "upgrade", release, str(CHART), "-n", ns, *values, "--set", "webhook.timeoutSeconds=7",
             "--timeout", HELM_TIMEOUT)
    vwc = json.loads(cp.kubectl("get", "validatingwebhookconfiguration", fullname, "-o", "json").stdout)
    assert {h["timeoutSeconds"] for h in vwc["webhooks"]} == {7}
    history = json.loads(run_helm(cp, "history", release, "-n", ns, "-o", "json").stdout)
    assert [(h["revision"], h["status"]) for h in history] == [(1, "superseded"), (2, "deployed")]

    # uninstall: the hook's own script removes the webhook configurations first
    record = uninstall_with_hook(cp, release, ns)
    assert record.get("returncode") == 0, record
    assert f"deleted ValidatingWebhookConfiguration {fullname}" in record["output"]
    assert record["helm"].returncode == 0, record["helm"].stderr
    for kind in WEBHOOK_KINDS:
        assert cp.kubectl("get", kind.lower(), fullname, check=False).returncode == 1
    for obj in objects:
        assert get(cp, obj, ns).returncode == 1, f"{obj['kind']} {obj['metadata']['name']} left behind"
    after = cp.kubectl("apply", "-f", "-", input=policy("default"), check=False)
    assert after.returncode == 0, after.stderr  # writes work again once the release is gone
    cp.kubectl("delete", "networkpolicy", "e2e-probe", "-n", "default")
