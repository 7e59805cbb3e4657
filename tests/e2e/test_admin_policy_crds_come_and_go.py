"""The live cache on a real kube-apiserver whose admin network policy CRDs come and go while it
runs: absent at start (said once, the view ready anyway), installed later (found at the next
discovery, then listed and watched), and deleted again (the kind leaves the view: watches on a
resource that is no longer served end, and discovery says so) - without a loop of failing
requests. A bare control plane of its own: the test installs and deletes CRDs."""
from __future__ import annotations

import logging
import time
from pathlib import Path

from webhook.cluster.live import LiveSource

CRDS = Path(__file__).parent / "crds" / "network-policy-api"
ANP_CRD = CRDS / "adminnetworkpolicies-v0.1.7-standard.yaml"
ANP = """
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: e2e-came-later}
spec:
  priority: 7
  subject: {namespaces: {}}
  ingress:
  - {name: deny-all, action: Deny, from: [{namespaces: {}}]}
"""


def until(what, fn, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout:.0f} s: {what}")


def test_admin_policy_crds_installed_and_removed_while_the_cache_runs(control_plane, caplog):
    source = LiveSource(control_plane.api_client(), rediscover_seconds=1.0, backoff_initial=0.2, backoff_max=2.0)
    with caplog.at_level(logging.INFO, logger="webhook.cluster.live"):
        source.start()
        try:
            assert source.wait_ready(60), source.last_errors()
            assert "AdminNetworkPolicy" in source.not_followed()
            assert "not served by this API server" in source.not_followed()["AdminNetworkPolicy"]

            control_plane.kubectl("apply", "--server-side", "-f", str(ANP_CRD))
            control_plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(ANP_CRD))
            until("the kind followed", lambda: "AdminNetworkPolicy" not in source.not_followed())
            control_plane.kubectl("apply", "-f", "-", input=ANP)
            policy = until("the AdminNetworkPolicy in view", lambda: [
                p for p in source.view.admin_policies() if p.name == "e2e-came-later"])[0]
            assert policy.priority == 7 and source.stats()["adminnetworkpolicies"] == 1
            # still not served: the BaselineAdminNetworkPolicy CRD was not installed
            assert "BaselineAdminNetworkPolicy" in source.not_followed()

            control_plane.kubectl("delete", "-f", str(ANP_CRD), "--wait=true", timeout=120)
            until("the kind dropped with its CRD", lambda: "AdminNetworkPolicy" in source.not_followed()
                  and not source.view.admin_policies(), timeout=90)
            assert source.ready() and source.stats()["adminnetworkpolicies"] == 0
            errors = source.stats()["errors"]
            time.sleep(3.0)  # three rediscovery periods: quiet looks, no failing requests counted
            assert source.stats()["errors"] == errors
        finally:
            source.stop()
    said = [r.getMessage() for r in caplog.records
            if r.getMessage().startswith("live cache: AdminNetworkPolicy not served")]
    assert len(said) == 2, said  # at start, and once after the CRD went - not once per look
    assert any("AdminNetworkPolicy (policy.networking.k8s.io/v1alpha1) is served now" in r.getMessage()
               for r in caplog.records)
