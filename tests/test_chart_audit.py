"""The chart and the background audit: PolicyReport CRDs when enabled (unless skipped), and
RBAC for exactly what the audit writes."""
from tests.test_chart import FULLNAME, objects, one, render


def crds(docs):
    return {d["metadata"]["name"]: d for d in objects(docs, "CustomResourceDefinition")}


def report_rules(docs):
    role = one(docs, "ClusterRole", FULLNAME)
    return [r for r in role["rules"] if "wgpolicyk8s.io" in r["apiGroups"]]


def test_audit_enabled_installs_the_report_crds_kept_on_uninstall():
    docs = render({"config": {"audit": {"enabled": True}}})
    got = crds(docs)
    assert set(got) == {"policyreports.wgpolicyk8s.io", "clusterpolicyreports.wgpolicyk8s.io"}
    pr = got["policyreports.wgpolicyk8s.io"]
    assert pr["spec"]["scope"] == "Namespaced" and got["clusterpolicyreports.wgpolicyk8s.io"]["spec"]["scope"] == "Cluster"
    [version] = pr["spec"]["versions"]
    assert version["name"] == "v1alpha2" and version["served"] and version["storage"]
    result = version["schema"]["openAPIV3Schema"]["properties"]["results"]["items"]["properties"]
    # what netpol-guard writes must pass the schema's enums
    assert {"fail", "warn", "pass", "skip"} <= set(result["result"]["enum"])
    assert {"high", "medium", "low"} <= set(result["severity"]["enum"])
    assert all(d["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep" for d in got.values())


def test_crds_can_be_left_to_kyverno_or_policy_reporter():
    assert crds(render({"config": {"audit": {"enabled": True}}, "policyReports": {"installCRDs": False}})) == {}
    assert crds(render({})) == {}  # audit off by default: nothing


def test_audit_rbac_is_limited_to_the_reports():
    assert report_rules(render({})) == []
    rules = report_rules(render({"config": {"audit": {"enabled": True}}}))
    assert all("*" not in r["verbs"] and "*" not in r["resources"] for r in rules)
    by = {(tuple(r["resources"]), tuple(r.get("resourceNames", ()))): set(r["verbs"]) for r in rules}
    assert by[(("policyreports",), ())] == {"get", "list", "create", "update", "delete"}
    assert by[(("clusterpolicyreports",), ())] == {"list", "create"}
    assert by[(("clusterpolicyreports",), ("netpol-guard",))] == {"get", "update", "delete"}
    # the audit elects a leader: the Lease Role is there even without the controller
    docs = render({"config": {"audit": {"enabled": True}}, "controller": {"enabled": False},
                   "certificates": {"mode": "certManager"}})
    assert one(docs, "Role", FULLNAME)["rules"][0]["resources"] == ["leases"]


def test_admin_network_policies_are_only_read_and_only_those_three_resources():
    for values in ({}, {"controller": {"enabled": False}}, {"config": {"audit": {"enabled": True}}}):
        role = one(render(values), "ClusterRole", FULLNAME)
        admin = [r for r in role["rules"] if "policy.networking.k8s.io" in r["apiGroups"]]
        assert admin == [{"apiGroups": ["policy.networking.k8s.io"],
                          "resources": ["adminnetworkpolicies", "baselineadminnetworkpolicies",
                                        "clusternetworkpolicies"],
                          "verbs": ["get", "list", "watch"]}]


def test_the_reports_owner_is_the_charts_cluster_role_and_the_agent_may_read_only_that_one():
    import yaml
    docs = render({"config": {"audit": {"enabled": True}}})
    config = yaml.safe_load(one(docs, "ConfigMap")["data"]["config.yaml"])
    assert config["audit"]["ownerClusterRole"] == FULLNAME
    assert one(docs, "ClusterRole", FULLNAME)["metadata"]["name"] == FULLNAME
    role = one(docs, "ClusterRole", FULLNAME)
    rbac = [r for r in role["rules"] if "rbac.authorization.k8s.io" in r["apiGroups"]]
    assert rbac == [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"],
                     "resourceNames": [FULLNAME], "verbs": ["get"]}]
    off = one(render({}), "ClusterRole", FULLNAME)
    assert not [r for r in off["rules"] if "rbac.authorization.k8s.io" in r["apiGroups"]]


def test_the_owning_cluster_role_is_an_ordinary_release_object_that_uninstall_deletes():
    role = one(render({"config": {"audit": {"enabled": True}}}), "ClusterRole", FULLNAME)
    annotations = role["metadata"].get("annotations") or {}
    assert "helm.sh/hook" not in annotations and "helm.sh/resource-policy" not in annotations


def test_the_audit_lag_alert_is_rendered_with_the_audit_and_its_expression_parses_over_real_buckets():
    from tests.test_chart import CHART, NAMESPACE, RELEASE, helm
    from tests.test_chart_extras import _check_promql
    from webhook.metrics import buckets_of

    def alerts(values):
        rules = [d for d in render(values) if d["kind"] == "PrometheusRule"]
        return {r["alert"]: r for d in rules for g in d["spec"]["groups"] for r in g["rules"]}

    assert "NetpolGuardAuditLagging" not in alerts({"prometheusRule": {"enabled": True}})  # no audit, no metric
    got = alerts({"prometheusRule": {"enabled": True, "auditLagSeconds": 120}, "config": {"audit": {"enabled": True}}})
    lag = got["NetpolGuardAuditLagging"]
    _check_promql(lag["expr"])  # syntax, and only metrics netpol-guard exports
    assert f'netpol_guard_audit_lag_seconds_bucket{{namespace="{NAMESPACE}"}}' in lag["expr"]
    assert float(lag["expr"].rsplit(">", 1)[1]) == 120.0
    assert lag["for"] == "15m" and lag["labels"]["severity"] == "warning"
    assert "{{ $value | humanizeDuration }}" in lag["annotations"]["description"]
    # histogram_quantile never answers more than the top finite bucket: a threshold at or past it
    # could never fire, so the chart refuses one
    assert max(buckets_of("netpol_guard_audit_lag_seconds")) == 600.0
    bad = helm("template", RELEASE, str(CHART), "--set", "prometheusRule.enabled=true",
               "--set", "config.audit.enabled=true", "--set", "prometheusRule.auditLagSeconds=600")
    assert bad.returncode != 0 and "auditLagSeconds" in bad.stderr
