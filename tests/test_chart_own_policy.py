"""The chart's own NetworkPolicy passes the project's own lint with no finding at all, in
every chart scenario, with the rest of the rendered chart (and a cluster's kube-system and
namespaces) as the view - the way a user would lint `helm template` output."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_chart import SCENARIOS, helm

REPO = Path(__file__).resolve().parent.parent
NAMESPACE = "apiVersion: v1\nkind: Namespace\nmetadata: {name: netpol-guard}\n"


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_the_charts_own_network_policy_has_no_findings(scenario, tmp_path):
    rendered = helm("template", "netpol-guard", str(REPO / "charts" / "netpol-guard"), "--namespace", "netpol-guard",
                    values=SCENARIOS[scenario], tmp=tmp_path)
    assert rendered.returncode == 0, rendered.stderr
    (tmp_path / "ns.yaml").write_text(NAMESPACE)
    r = subprocess.run([sys.executable, "-m", "webhook", "lint", "--format", "json",
                        "--cluster", str(REPO / "examples" / "cluster" / "kube-system.yaml"),
                        "--cluster", str(REPO / "examples" / "cluster" / "00-namespaces.yaml"),
                        "--cluster", str(tmp_path / "ns.yaml"), "-"],
                       input=rendered.stdout, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["summary"]["policies"] == 1
    # peers a scenario writes into networkPolicy.ingressFrom are the user's, and lint is
    # right to judge them ("everything" uses 10.0.0.0/8, which holds the example ClusterIPs)
    users = SCENARIOS[scenario].get("networkPolicy", {}).get("ingressFrom")
    out["findings"] = [f for f in out["findings"] if not (users and f["path"].startswith("spec.ingress[0].from"))]
    assert out["findings"] == [], "\n".join(f"{f['severity']} [{f['rule']}] {f['path']}: {f['message']}"
                                            for f in out["findings"])
