"""The guarded cluster itself: a real API server calls netpol-guard over TLS and denies."""
from __future__ import annotations

import json

from tests.e2e.cluster import DENIAL_PROBE


def test_a_bad_policy_is_denied_by_the_real_api_server_through_the_webhook(guarded_cluster):
    res = guarded_cluster.kubectl("apply", "-f", str(DENIAL_PROBE), check=False)
    assert res.returncode == 1, res.stdout
    assert 'admission webhook "networkpolicies.netpol-guard.io" denied the request' in res.stderr
    assert "[dns-egress-missing]" in res.stderr
    stored = guarded_cluster.kubectl("get", "networkpolicies", "-A", "-o", "json").stdout
    names = {i["metadata"]["name"] for i in json.loads(stored)["items"]}
    assert "prometheus-scrape-only" not in names


def test_the_api_server_reports_the_pinned_kubernetes_version(guarded_cluster):
    version = json.loads(guarded_cluster.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == version["clientVersion"]["gitVersion"]
    assert version["serverVersion"]["gitVersion"].startswith("v1.")
