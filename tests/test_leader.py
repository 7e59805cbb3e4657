"""Lease-based leader election against the API stand-in, through the real kubernetes client."""
from __future__ import annotations

import threading
import time

import pytest

from webhook.leader import LeaderElector
from tests.waiting import wait_until

NS, LEASE = "netpol-guard", "netpol-guard-leader"




class FakeClock:
    """Monotonic time we can move forward, to show what happens when renewals stop arriving."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


@pytest.fixture
def electors(kube_api):
    kube_api.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    made = []

    def make(identity: str, **kw) -> LeaderElector:
        client = kube_api.api_client()
        kw = {"lease_duration": 2, "renew_deadline": 1.0, "retry_period": 0.1, **kw}
        e = LeaderElector(client, NS, LEASE, identity, **kw)
        made.append((e, client))
        return e

    yield make
    for e, client in made:
        e.stop(release=False)
        client.close()


def lease(api) -> dict:
    return api.get_object("Lease", NS, LEASE)


def test_a_single_candidate_creates_the_lease_and_leads(kube_api, electors):
    started = threading.Event()
    e = electors("pod-a", on_started_leading=started.set).start()
    assert e.wait_for_leadership(10)
    assert started.is_set() and e.is_leader()
    spec = lease(kube_api)["spec"]
    assert spec["holderIdentity"] == "pod-a"
    assert spec["leaseDurationSeconds"] == 2
    assert spec["leaseTransitions"] == 0
    assert spec["acquireTime"] and spec["renewTime"]
    first_renew = spec["renewTime"]
    wait_until(lambda: lease(kube_api)["spec"]["renewTime"] != first_renew, "a renewal")
    assert lease(kube_api)["spec"]["acquireTime"] == spec["acquireTime"]  # renewing is not re-acquiring


def test_of_several_candidates_exactly_one_leads_at_any_time(kube_api, electors):
    es = [electors(f"pod-{i}") for i in range(3)]
    for e in es:
        e.start()
    wait_until(lambda: any(e.is_leader() for e in es), "a leader")
    for _ in range(100):  # sample for a while: never two
        assert sum(e.is_leader() for e in es) <= 1
        time.sleep(0.01)
    leader = next(e for e in es if e.is_leader())
    assert lease(kube_api)["spec"]["holderIdentity"] == leader.identity


def test_a_stopped_leader_releases_and_a_standby_takes_over(kube_api, electors):
    a = electors("pod-a").start()
    assert a.wait_for_leadership(10)
    b = electors("pod-b").start()
    a_lost = threading.Event()
    a.add_listener(on_stopped_leading=a_lost.set)
    a.stop(release=True)
    assert a_lost.is_set() and not a.is_leader()
    assert b.wait_for_leadership(10)
    spec = lease(kube_api)["spec"]
    assert spec["holderIdentity"] == "pod-b" and spec["leaseTransitions"] == 1


def test_a_leader_that_vanishes_is_replaced_after_the_lease_expires(kube_api, electors):
    # A lease long enough that a loaded CI machine cannot make pod-a miss it by accident.
    a = electors("pod-a", lease_duration=4, renew_deadline=2.5).start()
    assert a.wait_for_leadership(10)
    b = electors("pod-b", lease_duration=4, renew_deadline=2.5).start()
    time.sleep(0.3)  # b is campaigning against a live lease
    assert not b.is_leader()
    a.stop(release=False)  # like a crash: the lease is not handed back
    assert lease(kube_api)["spec"]["holderIdentity"] == "pod-a"
    assert b.wait_for_leadership(10)
    assert lease(kube_api)["spec"]["holderIdentity"] == "pod-b"


def test_a_leader_that_cannot_renew_stops_acting_before_its_lease_can_expire(kube_api, electors):
    clock = FakeClock()
    lost = threading.Event()
    a = electors("pod-a", lease_duration=5, renew_deadline=3.0, retry_period=0.1, clock=clock,
                 on_stopped_leading=lost.set).start()
    assert a.wait_for_leadership(10)
    kube_api.inject_failure("PUT", "/leases/", status=500, count=10_000)
    renewals = len(kube_api.requests("PUT", "/leases/"))
    wait_until(lambda: len(kube_api.requests("PUT", "/leases/")) > renewals, "a failed renewal")
    # 3 s (renew_deadline) after the last good renewal, and still 2 s before anyone else may
    # take the lease (lease_duration 5 s), is_leader() answers False on its own...
    clock.offset += 3.0
    assert not a.is_leader()
    # ...and the elector loop steps down (callback) on its next round.
    assert lost.wait(5)


def test_a_conflicting_write_to_the_lease_is_not_leadership(kube_api, electors):
    kube_api.inject_failure("PUT", "/leases/", status=409, count=3)
    a = electors("pod-a")
    kube_api.put_object({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                         "metadata": {"name": LEASE, "namespace": NS},
                         "spec": {"holderIdentity": "", "leaseDurationSeconds": 2}})
    a.start()
    assert a.wait_for_leadership(10)  # after the three 409s, a re-read and a clean write
    assert len(kube_api.requests("PUT", "/leases/")) >= 4


@pytest.mark.parametrize("kw, message", [
    ({"lease_duration": 0}, "lease_duration"),
    ({"lease_duration": 2, "renew_deadline": 2.0}, "renew_deadline"),
    ({"lease_duration": 5, "renew_deadline": 2.0, "retry_period": 2.0}, "retry_period"),
])
def test_inconsistent_durations_are_refused(kube_api, kw, message):
    with pytest.raises(ValueError, match=message):
        LeaderElector(kube_api.api_client(), NS, LEASE, "pod-a", **kw)
