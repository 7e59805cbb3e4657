"""The pod agent of `netpol-guard serve --controller` on a real API server: it reconciles in the
webhook pod under the pod's identity; killed by its pid (a crash, the OOM killer), it is started
again by the gunicorn master and catches up with what changed in the cluster while it was down;
stopping the server stops it for good and hands the Lease back.

The module has its own cluster (the tests kill the agent): the chart's RBAC, configuration and
webhook configurations, and `serve --controller` with the chart ServiceAccount's token. Tests
run in file order and share that state.
"""
from __future__ import annotations

import json
import os
import re
import signal
import ssl
import urllib.request
import uuid

import pytest

from tests.e2e.cluster import NAMESPACE, GuardedCluster
from tests.e2e.verdicts import until

LABEL = "netpol-guard.io/isolate"
DENY, DNS = "netpol-guard-default-deny", "netpol-guard-allow-dns"
LEASE = "netpol-guard-leader"
POD = "netpol-guard-local-0"  # the POD_NAME cluster.py gives serve: the Lease identity
STARTED = re.compile(r"pod agent started in process (\d+)")
REACT = 15.0  # a watch event, a reconcile and a write, on a busy machine
# The master looks at the agent once a second and starts a new one a second after it saw it
# dead (the first back-off); the new process then imports, lists both collections and takes
# the Lease at once (same identity as the holder): ~3 s quiet, 30 s on a loaded 2-core machine.
RESTART = 30.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = GuardedCluster(tmp_path_factory.mktemp("agent"), examples=False).up()
    try:
        yield cluster
    finally:
        cluster.down()


def agent_pids(cluster) -> list[int]:
    return [int(m.group(1)) for m in STARTED.finditer(cluster.serve.log_path.read_text(errors="replace"))]


def managed(cluster, ns: str) -> set[str]:
    res = cluster.kubectl("get", "networkpolicies", "-n", ns, "-l", "app.kubernetes.io/managed-by=netpol-guard",
                          "-o", "json", check=False)
    return {p["metadata"]["name"] for p in json.loads(res.stdout)["items"]} if res.returncode == 0 else set()


def lease_holder(cluster) -> str:
    res = cluster.kubectl("get", "lease", LEASE, "-n", NAMESPACE, "-o", "json", check=False)
    return (json.loads(res.stdout)["spec"].get("holderIdentity") or "") if res.returncode == 0 else ""


def healthz(cluster) -> int:
    ctx = ssl.create_default_context(cafile=str(cluster.state / "webhook-pki" / "ca.crt"))
    with urllib.request.urlopen(f"https://127.0.0.1:{cluster.serve_port}/healthz", context=ctx, timeout=5) as resp:
        return resp.status


def fresh_namespace(cluster, mode: str | None = None) -> str:
    name = f"agent-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", name)
    if mode:
        cluster.kubectl("label", "namespace", name, f"{LABEL}={mode}")
    return name


def test_serve_with_controller_reconciles_in_the_webhook_pod_under_the_pods_identity(cluster):
    ns = fresh_namespace(cluster, "egress")
    until(lambda: managed(cluster, ns) == {DNS, DENY}, REACT, "policies from serve --controller",
          describe=cluster.serve.log_tail)
    assert lease_holder(cluster) == POD
    assert len(agent_pids(cluster)) == 1


def test_a_killed_agent_is_started_again_and_catches_up_with_what_changed_meanwhile(cluster):
    kept = fresh_namespace(cluster, "all")  # isolated before: its policy gets deleted while no agent runs
    dropped = fresh_namespace(cluster, "all")  # isolated before: unlabeled while no agent runs
    until(lambda: managed(cluster, kept) == managed(cluster, dropped) == {DNS, DENY}, REACT,
          "policies from the first agent", describe=cluster.serve.log_tail)
    (first,) = agent_pids(cluster)
    master = cluster.serve.pid

    # The master is held (SIGSTOP) for the few seconds the changes take, so they are certainly
    # made while no agent runs: it cannot start the next one before SIGCONT. Its workers are
    # processes of their own and keep answering the API server meanwhile.
    os.kill(master, signal.SIGSTOP)
    try:
        os.kill(first, signal.SIGKILL)
        joined = fresh_namespace(cluster, "egress")  # labeled while no agent runs
        # only the controller's identity may delete a managed policy (the webhook refuses anyone else)
        cluster.kubectl("delete", "networkpolicy", DENY, "-n", kept,
                        kubeconfig=cluster.state / "netpol-guard.kubeconfig")
        cluster.kubectl("label", "namespace", dropped, f"{LABEL}-")
        assert agent_pids(cluster) == [first]
        assert healthz(cluster) == 200  # the webhook answers without its master
    finally:
        os.kill(master, signal.SIGCONT)

    until(lambda: len(agent_pids(cluster)) == 2, RESTART, "a second agent", describe=cluster.serve.log_tail)
    second = agent_pids(cluster)[1]
    assert second != first
    assert f"the pod agent (process {first}" in cluster.serve.log_tail(20000)  # said why it starts another
    until(lambda: managed(cluster, joined) == {DNS, DENY}, REACT, "policies for the namespace labeled meanwhile",
          describe=cluster.serve.log_tail)
    until(lambda: managed(cluster, kept) == {DNS, DENY}, REACT, "the policy deleted meanwhile recreated",
          describe=cluster.serve.log_tail)
    until(lambda: not managed(cluster, dropped), REACT, "the policies of the namespace unlabeled meanwhile removed",
          describe=cluster.serve.log_tail)
    assert lease_holder(cluster) == POD
    assert healthz(cluster) == 200


def test_stopping_the_server_stops_the_agent_for_good_and_hands_the_lease_back(cluster):
    pids = agent_pids(cluster)
    assert pids, "no agent started"
    cluster.serve.stop(timeout=30)
    assert cluster.serve.popen.returncode == 0, cluster.serve.log_tail()
    assert agent_pids(cluster) == pids  # no new one on the way out
    assert not os.path.exists(f"/proc/{pids[-1]}"), "the agent outlived the server"
    assert lease_holder(cluster) == "", "the Lease was not handed back"
    log = cluster.serve.log_tail(10**7)
    assert "Traceback" not in log, log[-4000:]  # neither the kill nor the stop left one
