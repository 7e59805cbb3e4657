"""Lease-based leader election (webhook/leader.py) in-process on a real API server, through the
real kubernetes client: creating and renewing the Lease, one leader among several candidates,
handing the Lease back on stop, taking it over after a leader vanishes. Short leases (4 s) so
that the tests take seconds; each test campaigns on a Lease in a namespace of its own in the
shared guarded cluster, which nothing else reads. What needs a fake clock or an injected
conflict stays on the stand-in (tests/test_leader.py); two controller processes on the chart's
Lease are tests/e2e/test_isolation.py.
"""
from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from tests.e2e.verdicts import until
from webhook.leader import LeaderElector

LEASE = "netpol-guard-leader"


@pytest.fixture
def cluster(guarded_cluster, namespace):
    """The control plane and the test's own namespace, where its Lease lives."""
    return SimpleNamespace(cp=guarded_cluster.cp, namespace=namespace)


@pytest.fixture
def electors(cluster):
    made = []

    def make(identity: str, **kw) -> LeaderElector:
        client = cluster.cp.api_client()
        # Longer than on the stand-in (2 s / 1 s): a renewal here is a GET and a PUT to a real API
        # server, which on a loaded machine can take a second, and a leader that goes
        # renew_deadline without one stops leading - that would be a flicker, not a test result.
        kw = {"lease_duration": 4, "renew_deadline": 2.5, "retry_period": 0.2, **kw}
        e = LeaderElector(client, cluster.namespace, LEASE, identity, **kw)
        made.append((e, client))
        return e

    yield make
    for e, client in made:
        e.stop(release=False)
        client.close()


def lease(cluster) -> dict:
    status, body = cluster.cp.request("GET", f"/apis/coordination.k8s.io/v1/namespaces/{cluster.namespace}"
                                             f"/leases/{LEASE}")
    assert status == 200, body
    return body


def wait_until(predicate, what: str, timeout: float = 15.0):
    return until(predicate, timeout, what)


def test_a_single_candidate_creates_the_lease_and_leads(cluster, electors):
    started = threading.Event()
    e = electors("pod-a", on_started_leading=started.set).start()
    assert e.wait_for_leadership(10)
    assert started.is_set() and e.is_leader()
    spec = lease(cluster)["spec"]
    assert spec["holderIdentity"] == "pod-a"
    assert spec["leaseDurationSeconds"] == 4
    assert spec["leaseTransitions"] == 0
    assert spec["acquireTime"] and spec["renewTime"]
    first_renew = spec["renewTime"]
    wait_until(lambda: lease(cluster)["spec"]["renewTime"] != first_renew, "a renewal")
    assert lease(cluster)["spec"]["acquireTime"] == spec["acquireTime"]  # renewing is not re-acquiring


def test_of_several_candidates_exactly_one_leads_at_any_time(cluster, electors):
    es = [electors(f"pod-{i}") for i in range(3)]
    for e in es:
        e.start()
    wait_until(lambda: any(e.is_leader() for e in es), "a leader")
    for _ in range(100):  # sample for a while: never two
        assert sum(e.is_leader() for e in es) <= 1
        time.sleep(0.01)
    leader = next(e for e in es if e.is_leader())
    assert lease(cluster)["spec"]["holderIdentity"] == leader.identity


def test_a_stopped_leader_releases_and_a_standby_takes_over(cluster, electors):
    a = electors("pod-a").start()
    assert a.wait_for_leadership(10)
    b = electors("pod-b").start()
    a_lost = threading.Event()
    a.add_listener(on_stopped_leading=a_lost.set)
    a.stop(release=True)
    assert a_lost.is_set() and not a.is_leader()
    assert b.wait_for_leadership(10)
    spec = lease(cluster)["spec"]
    assert spec["holderIdentity"] == "pod-b" and spec["leaseTransitions"] == 1


def test_a_leader_that_vanishes_is_replaced_after_the_lease_expires(cluster, electors):
    a = electors("pod-a").start()
    assert a.wait_for_leadership(10)
    b = electors("pod-b").start()
    time.sleep(0.3)  # b is campaigning against a live lease
    assert not b.is_leader()
    a.stop(release=False)  # like a crash: the lease is not handed back
    assert lease(cluster)["spec"]["holderIdentity"] == "pod-a"
    assert b.wait_for_leadership(10)
    assert lease(cluster)["spec"]["holderIdentity"] == "pod-b"
