"""The isolation controller in-process against the Kubernetes API stand-in, through the real
kubernetes client: what needs an injected fault (500s, 409s, dropped watches, compaction, a lost
event), the stand-in's request log (the order and number of writes; none in a steady state), or
the controller's own counters (resyncs that change nothing), plus the pure plan and work queue.
What the cluster shows with none of these runs on the real API server (tests/e2e/test_isolation.py).
Waits are bounded polls on observable state, never sleeps."""
from __future__ import annotations


import kubernetes.client
import pytest

from webhook.config import from_dict
from webhook.isolation.controller import Controller
from webhook.isolation.desired import ALLOW_DNS, DEFAULT_DENY, MANAGED_BY_KEY, desired_policies
from tests.waiting import wait_until

LABEL = "netpol-guard.io/isolate"
NP = "/apis/networking.k8s.io/v1/namespaces/[^/]+/networkpolicies"
ALL_NP = "^/apis/networking.k8s.io/v1/networkpolicies$"


def make_config(**isolation):
    return from_dict({"isolation": isolation} if isolation else {})


def namespace(name: str, mode: str | None = None, **extra_labels) -> dict:
    labels = dict(extra_labels)
    if mode is not None:
        labels[LABEL] = mode
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def policies(api, ns: str) -> dict[str, dict]:
    return {p["metadata"]["name"]: p for p in api.list_objects("NetworkPolicy", ns)}


def events(api, ns: str, reason: str | None = None) -> list[dict]:
    """The Events about namespace `ns` (they live in `default`, as on a real API server)."""
    return [e for e in api.list_objects("Event", "default")
            if e["involvedObject"]["name"] == ns and (reason is None or e["reason"] == reason)]


def has_policies(api, ns: str, *names: str):
    return lambda: set(policies(api, ns)) == set(names)


def settle(api, ctrl: Controller, resyncs: int = 2) -> None:
    """Wait until the controller has relisted `resyncs` more times and has nothing left to do."""
    start = ctrl.namespaces.relists
    wait_until(lambda: ctrl.namespaces.relists >= start + resyncs and ctrl.policies.relists >= start + resyncs,
               f"{resyncs} resyncs")
    wait_until(ctrl.queue.idle, "an idle work queue")
    wait_until(ctrl.events.idle, "Events sent")  # sent off the reconcile path: still writes


@pytest.fixture
def start_controller(kube_api):
    started = []

    def start(config=None, **kw) -> Controller:
        kw.setdefault("resync_seconds", 0.5)
        # a real cluster always has `default`, where the Events about Namespaces go
        if not any(n["metadata"]["name"] == "default" for n in kube_api.list_objects("Namespace")):
            kube_api.put_object(namespace("default"))
        client = kube_api.api_client()
        ctrl = Controller(client, config or make_config(), **kw).start()
        started.append((ctrl, client))
        assert ctrl.wait_synced(10), "controller caches did not sync"
        return ctrl

    yield start
    for ctrl, client in started:
        ctrl.stop()
        client.close()


@pytest.fixture
def core(kube_api):
    client = kube_api.api_client()
    yield kubernetes.client.CoreV1Api(client)
    client.close()


@pytest.fixture
def net(kube_api):
    client = kube_api.api_client()
    yield kubernetes.client.NetworkingV1Api(client)
    client.close()


def label(core, ns: str, value: str | None) -> None:
    core.patch_namespace(ns, {"metadata": {"labels": {LABEL: value}}})


# --- the pure parts: plan and work queue -------------------------------------------------------

def test_plan_for_a_new_label_creates_the_allowance_first():
    from webhook.isolation.reconcile import Create, plan

    p = plan("shop", namespace("shop", "all"), {}, make_config())
    assert [type(w) for w in p.writes] == [Create, Create]
    assert [w.desired["metadata"]["name"] for w in p.writes] == [ALLOW_DNS, DEFAULT_DENY]


def test_plan_for_all_to_ingress_updates_default_deny_before_deleting_the_allowance():
    from webhook.isolation.reconcile import Delete, Update, plan

    live = {p["metadata"]["name"]: p for p in desired_policies("shop", "all", make_config())}
    p = plan("shop", namespace("shop", "ingress"), live, make_config())
    assert [type(w) for w in p.writes] == [Update, Delete]
    assert p.writes[0].mode_changed and p.writes[1].actual["metadata"]["name"] == ALLOW_DNS


def test_plan_of_a_converged_namespace_writes_nothing_whatever_labels_others_added():
    from webhook.isolation.reconcile import plan

    live = {p["metadata"]["name"]: p for p in desired_policies("shop", "egress", make_config())}
    for p in live.values():
        p["metadata"]["labels"]["argocd.argoproj.io/instance"] = "x"
        p["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] = "{}"
    assert plan("shop", namespace("shop", "egress"), live, make_config()).converged


def test_plan_never_deletes_or_creates_for_an_unknown_value_or_a_terminating_namespace():
    from webhook.isolation.reconcile import plan

    live = {p["metadata"]["name"]: p for p in desired_policies("shop", "all", make_config())}
    bad = plan("shop", namespace("shop", "yes"), live, make_config())
    assert bad.state == "invalid-label" and bad.converged and bad.notes[0].type == "Warning"
    leaving = namespace("shop", None)
    leaving["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert plan("shop", leaving, live, make_config()).converged
    assert plan("shop", namespace("shop", None), live, make_config(onLabelRemoved="keep")).converged


def test_the_work_queue_coalesces_bursts_and_never_hands_one_key_to_two_workers():
    from webhook.isolation.workqueue import WorkQueue

    q = WorkQueue()
    for _ in range(50):
        q.add("shop")
    q.add("web")
    assert len(q) == 2
    key = q.get(timeout=1)
    assert key == "shop"
    q.add("shop")  # re-added while processing: held back, not handed to another worker
    assert q.get(timeout=1) == "web"
    assert q.get(timeout=0.05) is None
    q.done("shop")  # ...and queued again once the first worker is done
    assert q.get(timeout=1) == "shop"


def test_backoff_grows_per_key_and_is_bounded():
    from webhook.isolation.workqueue import Backoff

    b = Backoff(base=0.05, cap=2.0)
    delays = [b.next_delay("shop") for _ in range(12)]
    assert delays[0] <= 0.05 and delays[-1] <= 2.0 and delays[-1] >= 1.0
    assert b.next_delay("web") <= 0.05  # other keys are unaffected
    b.forget("shop")
    assert b.next_delay("shop") <= 0.05


# --- converging ---------------------------------------------------------------------------

def test_labeling_a_namespace_creates_the_dns_allowance_before_the_default_deny(kube_api, start_controller, core):
    kube_api.put_object(namespace("shop"))
    start_controller()
    label(core, "shop", "all")
    wait_until(has_policies(kube_api, "shop", ALLOW_DNS, DEFAULT_DENY), "both managed policies")

    got = policies(kube_api, "shop")
    for want in desired_policies("shop", "all", make_config()):
        have = got[want["metadata"]["name"]]
        assert have["spec"] == want["spec"]
        assert have["metadata"]["labels"][MANAGED_BY_KEY] == "netpol-guard"
    # The allowance was written first: resourceVersions are global and increasing.
    assert int(got[ALLOW_DNS]["metadata"]["resourceVersion"]) < int(got[DEFAULT_DENY]["metadata"]["resourceVersion"])
    creates = kube_api.requests("POST", NP + "$")
    assert [r.status for r in creates] == [201, 201]

    created = wait_until(lambda: events(kube_api, "shop", "IsolationCreated"), "an IsolationCreated event")
    assert created[0]["involvedObject"]["kind"] == "Namespace"
    assert created[0]["involvedObject"]["name"] == "shop"
    assert created[0]["type"] == "Normal"
    assert ALLOW_DNS in created[0]["message"] and DEFAULT_DENY in created[0]["message"]


def test_a_relist_answered_before_our_writes_does_not_make_the_controller_write_again(kube_api, start_controller,
                                                                                     core):
    """The periodic relist of the managed policies can be answered (the server's snapshot taken)
    just before the controller creates them, and reach the cache just after. Under load this
    happened in the test above: the stale list emptied the cache of what had just been created,
    the namespace was reconciled again and both creates were sent a second time (409s). Here the
    list response is held until both creates are done, so that order is certain."""
    import threading

    kube_api.put_object(namespace("shop"))
    ctrl = start_controller(resync_seconds=0)  # only the relist below
    informer = ctrl.policies
    real_list = informer._list_call  # noqa: SLF001 - the one way to hold a list response back
    answered, written = threading.Event(), threading.Event()

    def held_list(**kwargs):
        resp = real_list(**kwargs)
        if not kwargs.get("watch") and not answered.is_set():
            answered.set()
            written.wait(30)  # the server's answer (taken before the writes) reaches the cache after them
        return resp

    informer._list_call = held_list  # noqa: SLF001
    informer.relist()
    wait_until(answered.is_set, "the relist answered")
    label(core, "shop", "all")
    wait_until(has_policies(kube_api, "shop", ALLOW_DNS, DEFAULT_DENY), "both managed policies")
    wait_until(lambda: all(informer.get(("shop", n)) for n in (ALLOW_DNS, DEFAULT_DENY)), "both in the cache")
    watches = len(kube_api.requests("GET", ALL_NP, watch=True))
    written.set()
    # The informer applies the list (a namespace it reports changed is queued right then) and
    # only then watches again: once that watch is open, any reconcile the list caused is queued.
    wait_until(lambda: len(kube_api.requests("GET", ALL_NP, watch=True)) > watches, "the watch reopened")
    wait_until(ctrl.queue.idle, "an idle work queue")
    wait_until(ctrl.events.idle, "Events sent")
    assert [r.status for r in kube_api.requests("POST", NP + "$")] == [201, 201]
    assert all(informer.get(("shop", n)) for n in (ALLOW_DNS, DEFAULT_DENY))


def test_with_on_label_removed_keep_the_policies_stay(kube_api, start_controller, core):
    kube_api.put_object(namespace("shop", "all"))
    ctrl = start_controller(make_config(onLabelRemoved="keep"))
    wait_until(has_policies(kube_api, "shop", ALLOW_DNS, DEFAULT_DENY), "policies")
    label(core, "shop", None)
    wait_until(lambda: LABEL not in (ctrl.namespaces.get("shop")["metadata"].get("labels") or {}),
               "the controller saw the label go")
    settle(kube_api, ctrl)
    assert set(policies(kube_api, "shop")) == {ALLOW_DNS, DEFAULT_DENY}
    assert kube_api.requests("DELETE", NP) == []


# --- never touching what is not ours ----------------------------------------------------------

def test_an_unmanaged_policy_with_the_managed_name_is_left_alone(kube_api, start_controller):
    theirs = kube_api.put_object({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                                  "metadata": {"name": DEFAULT_DENY, "namespace": "shop"},
                                  "spec": {"podSelector": {"matchLabels": {"app": "x"}}, "policyTypes": ["Ingress"]}})
    kube_api.put_object(namespace("shop", "all"))
    ctrl = start_controller()
    wait_until(lambda: ALLOW_DNS in policies(kube_api, "shop"), "the DNS allowance")
    taken = wait_until(lambda: events(kube_api, "shop", "PolicyNameTaken"), "a PolicyNameTaken event")
    assert taken[0]["type"] == "Warning" and "not managed" in taken[0]["message"]
    settle(kube_api, ctrl)
    kube_api.reset_log()
    settle(kube_api, ctrl)
    assert policies(kube_api, "shop")[DEFAULT_DENY] == theirs  # same object, same resourceVersion
    assert kube_api.writes() == 0, "resyncs must not retry the create or repeat the event"
    assert len(events(kube_api, "shop", "PolicyNameTaken")) == 1


def test_an_unknown_label_value_is_reported_and_nothing_is_created(kube_api, start_controller):
    kube_api.put_object(namespace("shop", "everything"))
    ctrl = start_controller()
    warned = wait_until(lambda: events(kube_api, "shop", "InvalidIsolationLabel"), "an InvalidIsolationLabel event")
    assert warned[0]["type"] == "Warning"
    assert "all, ingress, egress" in warned[0]["message"]
    settle(kube_api, ctrl)
    assert policies(kube_api, "shop") == {}
    assert len(events(kube_api, "shop")) == 1  # reported once, not every resync


def test_a_terminating_namespace_is_left_alone(kube_api, start_controller):
    kube_api.namespace_delete_delay = 60  # stays Terminating for the whole test
    kube_api.put_object(namespace("leaving", "all"))
    kube_api.delete_object("Namespace", None, "leaving")
    assert kube_api.get_object("Namespace", None, "leaving")["status"]["phase"] == "Terminating"
    kube_api.put_object(namespace("witness", "all"))
    ctrl = start_controller()
    wait_until(has_policies(kube_api, "witness", ALLOW_DNS, DEFAULT_DENY), "the witness converged")
    settle(kube_api, ctrl)
    assert policies(kube_api, "leaving") == {}
    assert kube_api.writes("leaving") == 0


# --- steady state ------------------------------------------------------------------------------

def test_a_steady_state_makes_no_writes_even_when_someone_reapplies_the_same_objects(kube_api, start_controller):
    for i in range(5):
        kube_api.put_object(namespace(f"team-{i}", ("all", "ingress", "egress")[i % 3]))
    ctrl = start_controller()
    for i in range(5):
        wait_until(lambda: DEFAULT_DENY in policies(kube_api, f"team-{i}"), f"team-{i} converged")
    settle(kube_api, ctrl)
    kube_api.reset_log()
    settle(kube_api, ctrl, resyncs=3)
    assert kube_api.writes() == 0

    # A GitOps tool re-applies identical copies, then copies with its own tracking label.
    for i in range(5):
        for p in policies(kube_api, f"team-{i}").values():
            kube_api.put_object(p)
            tracked = {**p, "metadata": {**p["metadata"],
                                         "labels": {**p["metadata"]["labels"], "argocd.argoproj.io/instance": "x"}}}
            kube_api.put_object(tracked)
    wait_until(lambda: all("argocd.argoproj.io/instance" in (ctrl.policies.get((f"team-{i}", DEFAULT_DENY))
                                                             ["metadata"]["labels"]) for i in range(5)),
               "the controller saw the re-applied objects")
    settle(kube_api, ctrl)
    assert kube_api.writes() == 0, [(r.method, r.path) for r in kube_api.requests() if r.is_write]


# --- API failures ------------------------------------------------------------------------------

def test_server_errors_on_create_are_retried_until_converged(kube_api, start_controller):
    fault = kube_api.inject_failure("POST", NP + "$", status=500, count=3)
    start_controller()
    kube_api.put_object(namespace("shop", "all"))
    wait_until(has_policies(kube_api, "shop", ALLOW_DNS, DEFAULT_DENY), "policies despite 500s")
    assert fault.hits == 3


def test_a_conflict_on_update_is_reread_and_retried(kube_api, start_controller, net):
    kube_api.put_object(namespace("shop", "all"))
    ctrl = start_controller()
    wait_until(has_policies(kube_api, "shop", ALLOW_DNS, DEFAULT_DENY), "policies")
    fault = kube_api.inject_failure("PUT", NP + "/" + DEFAULT_DENY, status=409, count=1)
    edited = policies(kube_api, "shop")[DEFAULT_DENY]
    edited["spec"]["policyTypes"] = ["Ingress"]
    kube_api.put_object(edited)  # the hand edit (direct, so the injected 409 is the controller's)
    wait_until(lambda: policies(kube_api, "shop")[DEFAULT_DENY]["spec"]["policyTypes"] == ["Ingress", "Egress"],
               "reverted after a conflict")
    assert fault.hits == 1 and ctrl.stats.conflicts >= 1


def test_dropped_watches_an_outage_and_compaction_still_converge(kube_api, start_controller):
    kube_api.put_object(namespace("one", "all"))
    start_controller()
    wait_until(has_policies(kube_api, "one", ALLOW_DNS, DEFAULT_DENY), "first namespace")

    kube_api.drop_watches(abrupt=True)
    kube_api.put_object(namespace("two", "ingress"))
    wait_until(has_policies(kube_api, "two", DEFAULT_DENY), "after dropped watches")

    with kube_api.outage():
        kube_api.put_object(namespace("three", "egress"))  # missed by every watch
        kube_api.delete_object("NetworkPolicy", "one", DEFAULT_DENY)
        kube_api.compact()  # and the history is gone: the controller must relist
    wait_until(has_policies(kube_api, "three", ALLOW_DNS, DEFAULT_DENY), "after the outage")
    wait_until(has_policies(kube_api, "one", ALLOW_DNS, DEFAULT_DENY), "the deletion during the outage healed")


def test_a_missed_event_is_healed_by_the_periodic_resync(kube_api, start_controller):
    kube_api.put_object(namespace("shop", "all"))
    ctrl = start_controller()
    wait_until(has_policies(kube_api, "shop", ALLOW_DNS, DEFAULT_DENY), "policies")
    before = policies(kube_api, "shop")[DEFAULT_DENY]["metadata"]["uid"]
    # Make the watch deliver nothing: the deletion below reaches the controller only by resync.
    ctrl.policies._on_change = lambda *a: None  # noqa: SLF001 - stands in for a lost event
    try:
        kube_api.delete_object("NetworkPolicy", "shop", DEFAULT_DENY)
        wait_until(lambda: (policies(kube_api, "shop").get(DEFAULT_DENY) or {}).get("metadata", {}).get("uid")
                   not in (None, before), "default-deny recreated by the resync")
    finally:
        ctrl.policies._on_change = ctrl._policy_changed  # noqa: SLF001


# --- on the real API server instead ----------------------------------------------------------------

# What needs no injected fault, request log or in-process controller runs on the real API server,
# tests/e2e/test_isolation.py: a namespace created with the label, a mode change (all -> ingress),
# a deleted or hand-edited managed policy restored with an IsolationRestored Event, unlabeling
# (the team's own policy kept, an IsolationRemoved Event), two `netpol-guard controller` processes
# on one Lease (one writer; the standby takes over after a SIGKILL; SIGTERM hands the Lease back).


# --- leadership lost ------------------------------------------------------------------------------

def test_a_controller_that_is_no_longer_leader_makes_no_write(kube_api, start_controller):
    leading = [True]
    ctrl = start_controller(is_leader=lambda: leading[0])
    ctrl.start_leading()
    kube_api.put_object(namespace("shop", "all"))
    wait_until(has_policies(kube_api, "shop", ALLOW_DNS, DEFAULT_DENY), "policies while leading")
    settle(kube_api, ctrl)  # the leader's own last writes (its Events) land before the log is reset
    leading[0] = False  # e.g. renewals failing past the renew deadline
    kube_api.reset_log()
    kube_api.delete_object("NetworkPolicy", "shop", DEFAULT_DENY)
    kube_api.put_object(namespace("web", "ingress"))
    settle(kube_api, ctrl)
    assert kube_api.writes() == 0
    assert set(policies(kube_api, "shop")) == {ALLOW_DNS} and policies(kube_api, "web") == {}


# `serve --controller` reconciling in the webhook pod under the pod's identity, and its pod agent
# killed and restarted, run on the real API server: tests/e2e/test_agent_restart.py.
