"""Chart polish: Artifact Hub metadata, the generated chart README, the `helm test` hook
(its script run for real against a server), the opt-in PrometheusRule and Grafana
dashboard (every PromQL expression parsed by a PromQL parser and naming only metrics the
server exports)."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.server_fixture import make_certs, serve  # noqa: F401 (fixture)
from tests.test_chart import CHART, FULLNAME, K8S_VERSIONS, NAMESPACE, helm, one, render, schemas
from webhook.metrics import HELP

REPO = Path(__file__).resolve().parent.parent
CHART_META = yaml.safe_load((CHART / "Chart.yaml").read_text())
SCRIPT = (CHART / "files" / "webhook-test.py").read_text()


# --- Chart.yaml and README -------------------------------------------------------------------

def test_chart_has_artifact_hub_metadata_maintainers_sources_and_icon():
    assert CHART_META["maintainers"] and all(m.get("name") for m in CHART_META["maintainers"])
    assert CHART_META["sources"] and CHART_META["icon"].endswith("/charts/netpol-guard/icon.svg")
    assert (CHART / "icon.svg").read_text().lstrip().startswith("<svg")
    ann = CHART_META["annotations"]
    assert ann["artifacthub.io/license"] == "Apache-2.0"
    assert ann["artifacthub.io/category"] == "security"
    images = yaml.safe_load(ann["artifacthub.io/images"])
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert images[0]["image"] == f"{values['image']['repository']}:{CHART_META['appVersion']}"
    for key in ("artifacthub.io/links", "artifacthub.io/changes"):
        entries = yaml.safe_load(ann[key])
        assert entries and all(isinstance(e, dict) for e in entries), key
    assert all(c["kind"] in ("added", "changed", "deprecated", "removed", "fixed", "security")
               for c in yaml.safe_load(ann["artifacthub.io/changes"]))


def test_chart_readme_is_generated_from_values_and_shown_by_helm():
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "gen-values-doc.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    readme = (CHART / "README.md").read_text()
    assert "| `prometheusRule.enabled` | bool | `false` |" in readme
    assert "| `helmTest.enabled` | bool | `true` |" in readme
    assert helm("show", "readme", str(CHART)).stdout.rstrip("\n") == readme.rstrip("\n")


def test_a_stale_chart_readme_is_detected(tmp_path):
    import shutil
    copy = tmp_path / "repo"
    shutil.copytree(REPO / "charts", copy / "charts")
    shutil.copytree(REPO / "scripts", copy / "scripts")
    (copy / "docs").mkdir()
    shutil.copy(REPO / "docs" / "values.md", copy / "docs" / "values.md")
    values = copy / "charts" / "netpol-guard" / "values.yaml"
    values.write_text(values.read_text().replace("certificateExpiryDays: 14", "certificateExpiryDays: 21"))
    r = subprocess.run([sys.executable, str(copy / "scripts" / "gen-values-doc.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "charts/netpol-guard/README.md is stale" in r.stderr


# --- helm test -------------------------------------------------------------------------------

def hook_pod(values=None):
    return next(d for d in render(values) if d["metadata"].get("annotations", {}).get("helm.sh/hook") == "test")


def test_helm_test_pod_is_valid_restricted_and_selected_by_nothing_of_the_chart():
    docs = render()
    pod = hook_pod()
    for version in K8S_VERSIONS:
        schemas(version).validate(pod)
    c = pod["spec"]["containers"][0]
    assert c["command"] == ["python3", "-c"] and c["args"] == [SCRIPT]
    assert c["securityContext"]["allowPrivilegeEscalation"] is False and pod["spec"]["securityContext"]["runAsNonRoot"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["WEBHOOK_URL"] == f"https://{FULLNAME}.{NAMESPACE}.svc:443" and env["CA_FILE"] == "/ca/ca.crt"
    labels = pod["metadata"]["labels"]
    for selector in (one(docs, "Service")["spec"]["selector"], one(docs, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"],
                     one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"]):
        assert not all(labels.get(k) == v for k, v in selector.items())
    existing = hook_pod({"certificates": {"mode": "existingSecret",
                                          "existingSecret": {"name": "my-tls", "caBundle": "Q0E="}}})
    assert {e["name"]: e["value"] for e in existing["spec"]["containers"][0]["env"]}["CA_BUNDLE"] == "Q0E="
    assert all(d["kind"] != "Pod" for d in render({"helmTest": {"enabled": False}}))


def run_hook_script(url, **env):
    full = {k: v for k, v in os.environ.items() if k not in ("CA_FILE", "CA_BUNDLE")}
    full.update(WEBHOOK_URL=url, TIMEOUT_SECONDS="10", **env)
    return subprocess.run([sys.executable, "-c", hook_pod()["spec"]["containers"][0]["args"][0]],
                          env=full, capture_output=True, text=True, timeout=60)


def test_helm_test_script_passes_against_a_real_webhook_in_enforce_and_warn_mode(serve, tmp_path):
    import base64
    server = serve(["--cluster", "examples/cluster", "--workers", "1"])
    r = run_hook_script(f"https://localhost:{server.port}", CA_FILE=server.certs.ca)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ok: POST /validate denied a policy without DNS egress" in r.stdout
    warn = serve(["--cluster", "examples/cluster", "--workers", "1"], env={"NETPOL_GUARD_MODE": "warn"})
    bundle = base64.b64encode(Path(warn.certs.ca).read_bytes()).decode()
    r = run_hook_script(f"https://localhost:{warn.port}", CA_BUNDLE=bundle)
    assert r.returncode == 0 and "allowed with a warning" in r.stdout, r.stdout + r.stderr


def test_helm_test_script_fails_clearly_when_the_webhook_does_not_answer_or_is_not_trusted(serve, tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    other_ca = make_certs(tmp_path / "other").ca
    r = run_hook_script(f"https://localhost:{port}", CA_FILE=other_ca)
    assert r.returncode == 1 and r.stdout.startswith("FAIL: cannot reach") and "Traceback" not in r.stderr
    server = serve(["--cluster", "examples/cluster", "--workers", "1"])
    r = run_hook_script(f"https://localhost:{server.port}", CA_FILE=other_ca)
    assert r.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in r.stdout


# --- PrometheusRule and dashboard ------------------------------------------------------------

def _metric_names(expr: str) -> set[str]:
    names = set(re.findall(r"\b(netpol_guard_[a-z_]+)", expr))
    return {re.sub(r"_(bucket|sum|count)$", "", n) if re.sub(r"_(bucket|sum|count)$", "", n) in HELP else n
            for n in names}


def _check_promql(expr: str) -> None:
    import promql_parser
    promql_parser.parse(expr)  # raises on a syntax error
    unknown = _metric_names(expr) - set(HELP)
    assert not unknown, f"{expr}: no such metric {unknown}"


def test_promql_check_really_rejects_bad_expressions():
    with pytest.raises(Exception):
        _check_promql("sum(rate(netpol_guard_requests_total[5m])")
    with pytest.raises(AssertionError):
        _check_promql("netpol_guard_cache_relists > 0")  # the old name


def test_prometheus_rule_is_opt_in_and_its_alerts_parse_and_use_real_metrics():
    assert not [d for d in render() if d["kind"] == "PrometheusRule"]
    docs = render({"prometheusRule": {"enabled": True, "labels": {"release": "prom"}, "certificateExpiryDays": 7,
                                      "denialRatio": 0.25, "cacheStaleSeconds": 900}})
    rule = one(docs, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["metadata"]["labels"]["release"] == "prom"
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    for expected in ("NetpolGuardCertificateExpiresSoon", "NetpolGuardHighDenialRate", "NetpolGuardCacheStale",
                     "NetpolGuardCacheNotSynced", "NetpolGuardErrors"):
        assert expected in alerts
    for a in alerts.values():
        _check_promql(a["expr"])
        assert f'namespace="{NAMESPACE}"' in a["expr"]
        assert a["labels"]["severity"] in ("warning", "critical") and a["annotations"]["summary"]
        assert "{{ $labels" in a["annotations"]["description"] or "{{ $value" in a["annotations"]["description"] \
            or "$" not in a["annotations"]["description"]
    assert alerts["NetpolGuardCertificateExpiresSoon"]["expr"].endswith("< 604800")
    assert alerts["NetpolGuardHighDenialRate"]["expr"].rstrip().endswith("> 0.25")
    assert alerts["NetpolGuardCacheStale"]["expr"].endswith("> 900")


def test_grafana_dashboard_is_opt_in_and_every_panel_queries_real_metrics():
    assert not [d for d in render() if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")]
    cm = next(d for d in render({"grafanaDashboard": {"enabled": True}})
              if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard"))
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dash = json.loads(cm["data"]["netpol-guard.json"])
    assert dash == json.loads((CHART / "dashboards" / "netpol-guard.json").read_text())
    assert dash["uid"] == "netpol-guard" and dash["schemaVersion"] >= 30
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)) >= 8
    used = set()
    for p in dash["panels"]:
        assert p["datasource"]["uid"] == "${datasource}"
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24
        for t in p["targets"]:
            _check_promql(t["expr"].replace("$namespace", "x"))
            used |= _metric_names(t["expr"])
    for metric in ("netpol_guard_requests_total", "netpol_guard_request_duration_seconds",
                   "netpol_guard_certificate_expiry_seconds", "netpol_guard_cache_age_seconds",
                   "netpol_guard_build_info", "netpol_guard_cache_reconnects_total"):
        assert metric in used, metric
