"""Isolation on a real API server: the controller keeps the managed policies, the webhook guards
them, and a real Lease makes exactly one of two controller replicas the writer.

The cluster is this module's own (the tests kill a controller): the chart's webhook
configurations and RBAC, `netpol-guard serve` as the webhook only, and two
`netpol-guard controller` processes - the controller's own entry point, as two replicas of the
chart would run it - with distinct identities (POD_NAME / --identity), the chart's
ServiceAccount token and configuration, on the chart's Lease `netpol-guard/netpol-guard-leader`.
Tests run in file order and share that state: the first leader is killed last.
"""
from __future__ import annotations

import json
import os
import sys
import uuid

import pytest

from tests.e2e.cluster import NAMESPACE, GuardedCluster
from tests.e2e.controlplane import REPO, Process
from tests.e2e.verdicts import until

LABEL = "netpol-guard.io/isolate"
MANAGED = {"netpol-guard-default-deny", "netpol-guard-allow-dns"}
LEASE = "netpol-guard-leader"
REACT = 15.0  # a watch event, a reconcile and a write, on a busy machine
FIRST, SECOND = "netpol-guard-ctl-a", "netpol-guard-ctl-b"


class Isolated:
    def __init__(self, cluster: GuardedCluster):
        self.cluster = cluster
        self.controllers: dict[str, Process] = {}
        self.config = yaml_config(cluster)

    def start_controller(self, identity: str) -> Process:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NETPOL_GUARD_") and k != "KUBECONFIG"}
        env.update({"POD_NAMESPACE": NAMESPACE, "POD_NAME": identity,
                    "PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", "")})
        state = self.cluster.state
        proc = Process(identity, [sys.executable, "-m", "webhook", "controller", "--config", str(state / "config.yaml"),
                                  "--kubeconfig", str(state / "netpol-guard.kubeconfig"), "--identity", identity],
                       state, env=env)
        proc.start()
        self.controllers[identity] = proc
        return proc

    def holder(self) -> str:
        res = self.cluster.kubectl("get", "lease", LEASE, "-n", NAMESPACE, "-o", "json", check=False)
        return json.loads(res.stdout)["spec"].get("holderIdentity") or "" if res.returncode == 0 else ""

    def logs(self) -> str:
        return "\n".join(f"--- {name} ---\n{p.log_tail(1500)}" for name, p in self.controllers.items())

    def stop(self) -> None:
        for proc in self.controllers.values():
            proc.stop()


def yaml_config(cluster) -> dict:
    import yaml
    return yaml.safe_load((cluster.state / "config.yaml").read_text())


@pytest.fixture(scope="module")
def iso(tmp_path_factory):
    cluster = GuardedCluster(tmp_path_factory.mktemp("isolation"), examples=False, controller=False).up()
    iso = Isolated(cluster)
    try:
        iso.start_controller(FIRST)
        until(lambda: iso.holder() == FIRST, 60.0, f"{FIRST} leads", describe=iso.logs)
        iso.start_controller(SECOND)  # the standby
        yield iso
    finally:
        iso.stop()
        cluster.down()


@pytest.fixture
def ns(iso):
    name = f"iso-{uuid.uuid4().hex[:6]}"
    iso.cluster.kubectl("create", "namespace", name)
    yield name
    iso.cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def managed(iso, ns: str) -> dict[str, dict]:
    out = iso.cluster.kubectl("get", "networkpolicies", "-n", ns, "-l", "app.kubernetes.io/managed-by=netpol-guard",
                              "-o", "json", "--show-managed-fields").stdout
    return {p["metadata"]["name"]: p for p in json.loads(out)["items"]}


def has_both(iso, ns: str):
    found = managed(iso, ns)
    return found if set(found) == MANAGED else None


def reporters(iso, ns: str) -> set[str]:
    """Who wrote the Events about the namespace (the recorder names its replica). They live in
    `default`: the real API server refuses an Event about a Namespace anywhere else (422)."""
    out = iso.cluster.kubectl("get", "events", "-n", "default", "--field-selector",
                              f"involvedObject.kind=Namespace,involvedObject.name={ns}", "-o", "json").stdout
    return {e.get("reportingInstance") for e in json.loads(out)["items"]}


def test_labeling_a_namespace_creates_both_managed_policies_and_only_the_leader_writes(iso, ns):
    assert iso.holder() == FIRST
    iso.cluster.kubectl("label", "namespace", ns, f"{LABEL}=all")
    found = until(lambda: has_both(iso, ns), REACT, "both managed policies exist", describe=iso.logs)
    deny = found["netpol-guard-default-deny"]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    # one writer: the field manager is the controller's, the Events name the leader only
    for policy in found.values():
        managers = {m["manager"] for m in policy["metadata"]["managedFields"]}
        assert managers == {"netpol-guard"}, managers
    until(lambda: reporters(iso, ns) == {FIRST}, REACT, "the leader reports what it did",
          describe=lambda: f"reporters: {reporters(iso, ns)}\n{iso.logs()}")
    assert ns not in iso.controllers[SECOND].log_tail(20000), "the standby acted on the namespace"


def test_a_managed_policy_deleted_by_hand_is_denied_and_one_deleted_anyway_is_healed(iso, ns):
    iso.cluster.kubectl("label", "namespace", ns, f"{LABEL}=all")
    before = until(lambda: has_both(iso, ns), REACT, "both managed policies exist", describe=iso.logs)
    res = iso.cluster.kubectl("delete", "networkpolicy", "netpol-guard-allow-dns", "-n", ns, check=False)
    assert res.returncode != 0 and "denied the request" in res.stderr, res.stderr
    assert "cannot be deleted by hand" in res.stderr
    # the one identity the webhook lets through (the controller's own) deletes it anyway,
    # as a stray script with the chart's token would: the controller puts it back
    controller_kc = iso.cluster.state / "netpol-guard.kubeconfig"
    iso.cluster.kubectl("delete", "networkpolicy", "netpol-guard-allow-dns", "-n", ns, kubeconfig=controller_kc)
    healed = until(lambda: (found := has_both(iso, ns)) and found["netpol-guard-allow-dns"]["metadata"]["uid"]
                   != before["netpol-guard-allow-dns"]["metadata"]["uid"] and found,
                   REACT, "the deleted policy is created again", describe=iso.logs)
    assert healed["netpol-guard-allow-dns"]["spec"] == before["netpol-guard-allow-dns"]["spec"]


def test_a_hand_edit_of_a_managed_policy_is_denied_by_the_webhook(iso, ns):
    iso.cluster.kubectl("label", "namespace", ns, f"{LABEL}=all")
    until(lambda: has_both(iso, ns), REACT, "both managed policies exist", describe=iso.logs)
    opened = json.dumps({"spec": {"ingress": [{}]}})
    res = iso.cluster.kubectl("patch", "networkpolicy", "netpol-guard-default-deny", "-n", ns, "--type=merge",
                              "-p", opened, check=False)
    assert res.returncode != 0, res.stdout
    assert 'admission webhook "networkpolicies.netpol-guard.io" denied the request' in res.stderr
    assert f"{LABEL}=all" in res.stderr and "cannot be changed by hand" in res.stderr
    assert "ingress" not in managed(iso, ns)["netpol-guard-default-deny"]["spec"]
    # a label of someone else's (a GitOps tool's) on the managed object is no edit of ours
    iso.cluster.kubectl("label", "networkpolicy", "netpol-guard-default-deny", "-n", ns, "team=platform")


def test_removing_the_label_removes_the_managed_policies(iso, ns):
    iso.cluster.kubectl("label", "namespace", ns, f"{LABEL}=all")
    until(lambda: has_both(iso, ns), REACT, "both managed policies exist", describe=iso.logs)
    res = iso.cluster.kubectl("label", "namespace", ns, f"{LABEL}-")
    until(lambda: not managed(iso, ns), REACT, "the managed policies are gone", describe=iso.logs)
    assert res.returncode == 0


def test_the_standby_takes_over_within_the_lease_duration_when_the_leader_is_killed(iso, ns):
    le = iso.config.get("leaderElection") or {}
    duration, retry = le.get("leaseDurationSeconds", 15), le.get("retryPeriodSeconds", 2)
    assert iso.holder() == FIRST
    iso.controllers[FIRST].kill()  # SIGKILL by pid: no chance to release the Lease
    # The standby counts the lease duration on its own clock from the round in which it first
    # saw the last renewal. That renewal came at most one retry period before the kill and the
    # standby saw it at most one retry period later, so it may see it up to one retry period
    # *after* the kill; it then takes the Lease at its first round after the duration has run
    # out, up to one more retry period later (plus that round's two requests):
    # duration + 2 x retry after the kill. (Bounded by duration + retry, the test failed in CI
    # with the standby 17 s in and its takeover still due.)
    until(lambda: iso.holder() == SECOND, duration + 2 * retry + 2, f"{SECOND} holds the Lease",
          describe=iso.logs)
    lease = json.loads(iso.cluster.kubectl("get", "lease", LEASE, "-n", NAMESPACE, "-o", "json").stdout)
    assert lease["spec"]["leaseTransitions"] >= 1, lease["spec"]
    iso.cluster.kubectl("label", "namespace", ns, f"{LABEL}=ingress")
    found = until(lambda: managed(iso, ns) or None, REACT, "the new leader creates the baseline",
                  describe=iso.logs)
    assert set(found) == {"netpol-guard-default-deny"}  # ingress only: no DNS allowance needed
    until(lambda: reporters(iso, ns) == {SECOND}, REACT, "the new leader reports it",
          describe=lambda: f"reporters: {reporters(iso, ns)}\n{iso.logs()}")
