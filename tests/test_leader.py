"""Lease-based leader election against the API stand-in, through the real kubernetes client: what
needs a fake clock (a leader that cannot renew steps down before its lease can expire) or an
injected conflict, and the refused durations. The elector's normal behaviour runs on the real API
server: tests/e2e/test_leader_election.py."""
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
