"""Fixtures of the e2e tier. One real control plane with netpol-guard serves the whole session
(starting one takes ~10 s); tests that need a cluster of their own start a `control_plane`."""
from __future__ import annotations

import uuid

import pytest

from tests.e2e.cluster import GuardedCluster
from tests.e2e.controlplane import ControlPlane


@pytest.fixture(scope="session")
def guarded_cluster(tmp_path_factory):
    """etcd + kube-apiserver + kube-controller-manager, the chart's RBAC and webhook
    configurations, `netpol-guard serve --controller` in live mode, and examples/cluster loaded."""
    cluster = GuardedCluster(tmp_path_factory.mktemp("guarded-cluster")).up()
    try:
        yield cluster
    finally:
        cluster.down()


@pytest.fixture(scope="module")
def control_plane(tmp_path_factory):
    """A bare control plane (no netpol-guard), for tests that install things themselves."""
    cp = ControlPlane(tmp_path_factory.mktemp("control-plane")).start()
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture
def namespace(guarded_cluster):
    """A fresh namespace in the guarded cluster, deleted (without waiting) after the test."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    guarded_cluster.kubectl("create", "namespace", name)
    yield name
    guarded_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
