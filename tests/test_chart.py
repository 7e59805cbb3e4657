"""The Helm chart, rendered by the real helm binary and checked against Kubernetes schemas.

helm comes from PATH or .tools/bin (scripts/install-helm.sh puts it there; `make test`
runs that first). Without it these tests fail rather than skip: a chart nobody rendered
is a chart nobody tested.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from webhook import config as server_config

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "netpol-guard"
RELEASE, NAMESPACE = "guard", "guard-system"
FULLNAME = "guard-netpol-guard"
# The Kubernetes versions the chart supports (Chart.yaml kubeVersion): oldest and newest.
K8S_VERSIONS = ("1.28.0", "1.35.0")
# Custom resources: kubernetes-validate has no schemas for these; checked by assertions below.
CRD_GROUPS = ("cert-manager.io/", "monitoring.coreos.com/")

SCENARIOS = {
    "default": {},
    "cert-manager": {"certificates": {"mode": "certManager"}},
    "cert-manager-issuer": {"certificates": {"mode": "certManager",
                                             "certManager": {"issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}}}},
    "existing-secret": {"certificates": {"mode": "existingSecret",
                                         "existingSecret": {"name": "my-tls", "caBundle": "LS0tLS1CRUdJTg=="}}},
    "gate-on": {"config": {"isolation": {"gatePods": True}}},
    "autoscaling": {"autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 8,
                                    "targetCPUUtilizationPercentage": 60}},
    "exemptions": {"config": {"exemptUsers": ["ci-bot", "system:serviceaccount:argocd:argocd-application-controller"],
                              "exemptGroups": ["platform"], "isolation": {"gatePods": True},
                              "mutations": {"addDnsEgress": True},
                              "namespaceLabels": {"allowedGroups": ["platform"], "breakGlassGroup": "emergency"}}},
    "audit-on": {"config": {"audit": {"enabled": True}}, "controller": {"enabled": False}},
    "mutations-on": {"config": {"mutations": {"addDnsEgress": True, "explicitPolicyTypes": True,
                                              "exceptMetadataAddress": True}}},
    "everything": {
        "priorityClassName": "system-cluster-critical",
        "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
        "networkPolicy": {"ingressFrom": [{"ipBlock": {"cidr": "10.0.0.0/8"}}],
                          "apiServer": {"cidrs": ["172.20.0.10/32"], "ports": [6443]}},
        "webhook": {"failurePolicy": "Ignore", "timeoutSeconds": 10, "excludeNamespaces": ["monitoring"]},
        "controller": {"enabled": False},
        "config": {"mode": "warn", "dns": {"nodeLocalAddresses": ["169.254.20.10"]},
                   "isolation": {"gatePods": True, "controllerUsers": ["system:serviceaccount:x:y"]},
                   "mutations": {"addDnsEgress": True}},
    },
}


# --- helm ---------------------------------------------------------------------------------

HELM_MISSING = ("helm not found on PATH or in .tools/bin: run `scripts/install-helm.sh .venv/bin/python` "
                "(or `make test`, which does it)")


def find_helm(path: str | None, tools_bin: Path) -> str | None:
    local = tools_bin / "helm"
    return shutil.which("helm", path=path) or (str(local) if os.access(local, os.X_OK) else None)


@functools.lru_cache(maxsize=None)
def helm_binary() -> str:
    found = find_helm(os.environ.get("PATH"), ROOT / ".tools" / "bin")
    if not found:
        pytest.fail(HELM_MISSING, pytrace=False)
    return found


def helm(*args: str, values: dict | None = None, tmp: Path | None = None) -> subprocess.CompletedProcess:
    cmd = [helm_binary(), *args]
    if values is not None:
        values_file = (tmp or Path("/tmp")) / f"values-{os.getpid()}-{abs(hash(json.dumps(values, sort_keys=True)))}.yaml"
        values_file.write_text(yaml.safe_dump(values))
        cmd += ["--values", str(values_file)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@functools.lru_cache(maxsize=None)
def _render(values_json: str, kube_version: str | None) -> tuple:
    values = json.loads(values_json)
    extra = ("--kube-version", kube_version) if kube_version else ()
    result = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *extra, values=values)
    assert result.returncode == 0, f"helm template failed for {values}:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def render(values: dict | None = None, kube_version: str | None = None) -> list[dict]:
    """The rendered objects (fresh copies: tests may change them)."""
    return [json.loads(json.dumps(d)) for d in _render(json.dumps(values or {}, sort_keys=True), kube_version)]


def objects(docs, kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs, kind: str, name: str | None = None) -> dict:
    found = [d for d in objects(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[d['metadata']['name'] for d in found]}"
    return found[0]


def rendered_config(docs) -> dict:
    return yaml.safe_load(one(docs, "ConfigMap")["data"]["config.yaml"])


def deployment_pod(docs) -> dict:
    return one(docs, "Deployment")["spec"]["template"]["spec"]


# --- kubernetes schema validation -----------------------------------------------------

class KubernetesSchemas:
    """kubernetes-validate's strict schemas for one version, each validator built once.

    (kubernetes_validate.validate() re-reads the schema files on every call, which makes
    validating a few dozen objects take many seconds.)
    """

    def __init__(self, version: str):
        import importlib.resources

        from referencing import Registry, Resource

        base = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"
        self._dir = base / f"v{version}-local-strict"
        assert self._dir.is_dir(), f"kubernetes-validate has no schemas for {version}"
        definitions = json.loads((self._dir / "_definitions.json").read_text())
        self._registry = Resource.from_contents(definitions) @ Registry()
        self._validators: dict[tuple[str, str], object] = {}

    def _validator(self, api_version: str, kind: str):
        import jsonschema
        from referencing import Resource

        # Same file naming as kubernetes_validate: rbac.authorization.k8s.io/v1 -> rbac-v1.
        api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
        schema = json.loads((self._dir / f"{kind.lower()}-{api}.json").read_text())
        registry = self._registry.with_resource("", Resource.from_contents(schema))
        return jsonschema.Draft202012Validator(schema, registry=registry)

    def validate(self, obj: dict) -> None:
        key = (obj["apiVersion"], obj["kind"])
        if key not in self._validators:
            self._validators[key] = self._validator(*key)
        errors = sorted(self._validators[key].iter_errors(obj), key=lambda e: list(e.path))
        assert not errors, f"{obj['kind']}/{obj['metadata']['name']}: " + "; ".join(
            f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors[:5])


@functools.lru_cache(maxsize=None)
def schemas(version: str) -> KubernetesSchemas:
    return KubernetesSchemas(version)


# --- tests: helm itself -----------------------------------------------------------------

@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_helm_lint_is_clean(scenario, tmp_path):
    result = helm("lint", "--strict", str(CHART), "--namespace", NAMESPACE, values=SCENARIOS[scenario], tmp=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_rendered_object_is_valid_for_the_supported_kubernetes_versions(scenario, version):
    docs = render(SCENARIOS[scenario], kube_version=version)
    assert docs
    checked = 0
    for doc in docs:
        if doc["apiVersion"].startswith(CRD_GROUPS):
            continue
        schemas(version).validate(doc)
        checked += 1
    assert checked >= 14


def test_chart_refuses_kubernetes_older_than_supported():
    result = helm("template", RELEASE, str(CHART), "--kube-version", "1.27.0")
    assert result.returncode != 0 and "kubeVersion" in result.stderr


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_schema_validator_really_rejects_a_bad_object(version):
    # Guard against a validator that accepts everything (e.g. a wrong schema directory):
    # a misspelt field deep inside the Deployment must be caught.
    deployment = one(render(), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFS"] = True
    with pytest.raises(AssertionError, match="readOnlyRootFS"):
        schemas(version).validate(deployment)


# --- tests: configuration ---------------------------------------------------------------

@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_rendered_config_is_accepted_by_the_server(scenario):
    cfg = server_config.from_dict(rendered_config(render(SCENARIOS[scenario])), source="chart config.yaml")
    assert isinstance(cfg, server_config.Config)


def test_values_config_has_the_same_keys_and_defaults_as_the_server():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["config"] == server_config.Config().to_dict()


def test_schema_config_section_mirrors_the_config_dataclasses():
    schema = json.loads((CHART / "values.schema.json").read_text())

    def check(cls, node, where):
        assert node.get("additionalProperties") is False, where
        fields = {f.name: f for f in dataclasses.fields(cls)}
        assert set(node["properties"]) == set(fields), where
        for name in fields:
            default = getattr(cls(), name)
            if dataclasses.is_dataclass(default):
                check(type(default), node["properties"][name], f"{where}.{name}")

    check(server_config.Config, schema["properties"]["config"], "config")


# Free-form maps and Kubernetes structures passed through as given (the rendered objects
# are validated against the Kubernetes schemas instead).
OPEN_OBJECTS = {
    "serviceAccount.annotations", "commonLabels", "podAnnotations", "podLabels", "nodeSelector",
    "tolerations[]", "affinity", "networkPolicy.ingressFrom[]", "serviceMonitor.labels",
    "config.rules", "config.dns.podLabels", "prometheusRule.labels", "grafanaDashboard.labels",
}


def test_schema_closes_every_object_except_free_form_maps():
    schema = json.loads((CHART / "values.schema.json").read_text())
    open_found = set()

    def walk(node: dict, where: str) -> None:
        for sub in node.get("allOf", []) + node.get("anyOf", []):
            walk(sub, where)
        if node.get("type") == "array":
            walk(node["items"], where + "[]")
        if node.get("type") != "object":
            return
        if node.get("additionalProperties") is False:
            for key, child in node.get("properties", {}).items():
                walk(child, f"{where}.{key}" if where else key)
        else:
            open_found.add(where)

    walk(schema, "")
    assert open_found == OPEN_OBJECTS


def test_controller_users_default_to_the_release_service_account():
    cfg = rendered_config(render())
    assert cfg["isolation"]["controllerUsers"] == [f"system:serviceaccount:{NAMESPACE}:{FULLNAME}"]
    sa = one(render(), "ServiceAccount", FULLNAME)
    assert deployment_pod(render())["serviceAccountName"] == sa["metadata"]["name"]

    renamed = render({"serviceAccount": {"name": "guard-sa"}})
    assert rendered_config(renamed)["isolation"]["controllerUsers"] == [f"system:serviceaccount:{NAMESPACE}:guard-sa"]


def test_controller_users_set_by_the_user_are_kept():
    cfg = rendered_config(render(SCENARIOS["everything"]))
    assert cfg["isolation"]["controllerUsers"] == ["system:serviceaccount:x:y"]
    assert cfg["mode"] == "warn"


def test_config_change_rolls_the_pods():
    annotations = lambda docs: one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations(render())["checksum/config"] != annotations(render({"config": {"mode": "warn"}}))["checksum/config"]


# Keys of config the chart sets itself (from the release and certificates.mode); every
# other key of the rendered config.yaml is exactly what values.config says.
CHART_COMPUTED = {
    ("isolation", "controllerUsers"), ("certificates", "selfManaged"), ("certificates", "secretName"),
    ("certificates", "serviceName"), ("certificates", "webhookConfigName"), ("leaderElection", "leaseName"),
    ("audit", "ownerClusterRole"),
}


def flatten(tree: dict, prefix: tuple = ()) -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value and key not in ("rules", "podLabels"):
            out.update(flatten(value, prefix + (key,)))
        else:
            out[prefix + (key,)] = value
    return out


def test_rendered_config_differs_from_the_defaults_only_in_chart_computed_keys():
    defaults = flatten(server_config.Config().to_dict())
    rendered = flatten(rendered_config(render()))
    assert set(rendered) == set(defaults)
    assert {k for k in defaults if rendered[k] != defaults[k]} == CHART_COMPUTED


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_config_names_the_objects_the_chart_creates(scenario):
    docs = render(SCENARIOS[scenario])
    cfg = rendered_config(docs)
    certificates, lease = cfg["certificates"], cfg["leaderElection"]["leaseName"]
    mode = SCENARIOS[scenario].get("certificates", {}).get("mode", "selfManaged")
    assert certificates["selfManaged"] is (mode == "selfManaged")
    assert certificates["secretName"] == tls_volume(docs)["secretName"]
    assert certificates["serviceName"] == one(docs, "Service")["metadata"]["name"]
    assert certificates["webhookConfigName"] == one(docs, "ValidatingWebhookConfiguration")["metadata"]["name"]
    for mutating in objects(docs, "MutatingWebhookConfiguration"):
        assert mutating["metadata"]["name"] == certificates["webhookConfigName"]
    assert lease == f"{FULLNAME}-leader"
    for role in objects(docs, "Role"):
        named = {name for rule in role["rules"] for name in rule.get("resourceNames", [])}
        assert lease in named
        if mode == "selfManaged":
            assert certificates["secretName"] in named


@pytest.mark.parametrize("key", ["certificates.selfManaged", "certificates.secretName", "certificates.serviceName",
                                 "certificates.webhookConfigName", "leaderElection.leaseName"])
def test_chart_computed_config_keys_cannot_be_set_by_hand(key, tmp_path):
    section, field = key.split(".")
    value = True if field == "selfManaged" else "by-hand"
    result = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE,
                  values={"config": {section: {field: value}}}, tmp=tmp_path)
    assert result.returncode != 0 and f"config.{key} is set by the chart" in result.stderr, result.stderr


def test_certificate_validity_settings_pass_through():
    cfg = rendered_config(render({"config": {"certificates": {"validityDays": 90, "renewBeforeDays": 10},
                                             "leaderElection": {"leaseDurationSeconds": 30}}}))
    assert (cfg["certificates"]["validityDays"], cfg["certificates"]["renewBeforeDays"]) == (90, 10)
    assert cfg["leaderElection"]["leaseDurationSeconds"] == 30


# --- tests: the Deployment --------------------------------------------------------------

def test_pods_run_restricted():
    for docs in (render(), render(SCENARIOS["everything"])):
        pod_specs = [deployment_pod(docs)] + [j["spec"]["template"]["spec"] for j in objects(docs, "Job")]
        assert len(pod_specs) == 2
        for pod in pod_specs:
            psc = pod["securityContext"]
            assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 65532
            assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
            assert not pod.get("hostNetwork") and not pod.get("hostPID")
            for container in pod["containers"]:
                sc = container["securityContext"]
                assert sc["allowPrivilegeEscalation"] is False
                assert sc["readOnlyRootFilesystem"] is True
                assert sc["runAsNonRoot"] is True and isinstance(sc["runAsUser"], int) and sc["runAsUser"] > 0
                assert sc["capabilities"] == {"drop": ["ALL"]}
                assert "privileged" not in sc
                assert container["resources"]["requests"] and container["resources"]["limits"]


def test_deployment_is_highly_available_and_probed():
    docs = render()
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = deployment_pod(docs)
    spread = pod["topologySpreadConstraints"][0]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]
    container = pod["containers"][0]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "https", "scheme": "HTTPS"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "https", "scheme": "HTTPS"}
    assert "priorityClassName" not in pod
    assert deployment_pod(render(SCENARIOS["everything"]))["priorityClassName"] == "system-cluster-critical"


def test_pod_disruption_budget_must_leave_room_to_drain_a_node():
    result = helm("template", RELEASE, str(CHART), "--set", "replicaCount=1")
    assert result.returncode != 0 and "must be below replicaCount" in result.stderr
    single = render({"replicaCount": 1, "podDisruptionBudget": {"enabled": False}})
    assert objects(single, "PodDisruptionBudget") == [] and one(single, "Deployment")["spec"]["replicas"] == 1


def test_only_webhook_pods_are_selected_by_the_deployment_service_and_budget():
    docs = render()
    webhook_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    hook_labels = one(docs, "Job")["spec"]["template"]["metadata"]["labels"]

    def selects(selector: dict, labels: dict) -> bool:
        return all(labels.get(k) == v for k, v in selector.items())

    for selector in (one(docs, "Deployment")["spec"]["selector"]["matchLabels"],
                     one(docs, "Service")["spec"]["selector"],
                     one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"]):
        assert selects(selector, webhook_labels) and not selects(selector, hook_labels)
    # Our own NetworkPolicy covers both, so the hook can reach the API server under it.
    policy_selector = one(docs, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"]
    assert selects(policy_selector, webhook_labels) and selects(policy_selector, hook_labels)


def test_server_is_started_with_the_agreed_command_line():
    container = deployment_pod(render())["containers"][0]
    assert container["args"] == ["serve", "--config", "/etc/netpol-guard/config.yaml", "--bind", "0.0.0.0:8443",
                                 "--cert", "/tls/tls.crt", "--key", "/tls/tls.key", "--controller"]
    assert "--controller" not in deployment_pod(render(SCENARIOS["everything"]))["containers"][0]["args"]
    assert container["ports"] == [{"name": "https", "containerPort": 8443, "protocol": "TCP"}]
    assert container["image"] == f"ghcr.io/netpol-guard/netpol-guard:{chart_meta()['appVersion']}"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts == {"/etc/netpol-guard": "config", "/tls": "tls", "/tmp": "tmp"}
    volumes = {v["name"]: v for v in deployment_pod(render())["volumes"]}
    assert "emptyDir" in volumes["tmp"]
    assert volumes["config"]["configMap"]["name"] == one(render(), "ConfigMap")["metadata"]["name"]


def test_service_maps_443_to_the_webhook_port():
    service = one(render(), "Service")
    assert service["spec"]["ports"] == [{"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"}]
    assert service["spec"]["selector"] == one(render(), "Deployment")["spec"]["selector"]["matchLabels"]


# --- tests: RBAC ------------------------------------------------------------------------

def all_rules(docs):
    for role in objects(docs, "ClusterRole") + objects(docs, "Role"):
        for rule in role["rules"]:
            yield role, rule


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_rbac_has_no_wildcards_and_no_cluster_wide_secrets(scenario):
    docs = render(SCENARIOS[scenario])
    for role, rule in all_rules(docs):
        for field in ("apiGroups", "resources", "verbs", "resourceNames"):
            assert "*" not in rule.get(field, []), f"{role['kind']} {role['metadata']['name']}: wildcard in {field}"
            assert not any("*" in item or "/" in item for item in rule.get(field, []) if field == "resources"), rule
        if role["kind"] == "ClusterRole":
            assert "secrets" not in rule["resources"], f"cluster-wide Secret access in {role['metadata']['name']}"
        else:
            assert role["metadata"]["namespace"] == NAMESPACE
    for binding in objects(docs, "ClusterRoleBinding") + objects(docs, "RoleBinding"):
        if binding["metadata"]["name"] == f"{FULLNAME}-break-glass":
            continue  # a group nobody is in (test_the_break_glass_group_may_only_label_namespaces)
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": binding["subjects"][0]["name"],
                                        "namespace": NAMESPACE}]
        assert binding["roleRef"]["kind"] in ("ClusterRole", "Role")


def test_rbac_names_the_objects_it_may_change():
    docs = render()
    cluster_role, role = one(docs, "ClusterRole", FULLNAME), one(docs, "Role", FULLNAME)

    def verbs_for(rules, resource, **match):
        return [r for r in rules if resource in r["resources"] and all(r.get(k) == v for k, v in match.items())]

    reads = {res: set().union(*(r["verbs"] for r in verbs_for(cluster_role["rules"], res)))
             for res in ("namespaces", "pods", "services", "networkpolicies")}
    assert all({"list", "watch"} <= verbs for verbs in reads.values())
    assert {"create", "update", "patch", "delete"} <= reads["networkpolicies"]
    assert not ({"create", "update", "patch", "delete"} & (reads["namespaces"] | reads["pods"] | reads["services"]))

    [webhooks] = verbs_for(cluster_role["rules"], "validatingwebhookconfigurations")
    assert webhooks["resources"] == ["validatingwebhookconfigurations", "mutatingwebhookconfigurations"]
    assert webhooks["resourceNames"] == [FULLNAME] and set(webhooks["verbs"]) == {"get", "update", "patch"}

    secrets = verbs_for(role["rules"], "secrets")
    named = [r for r in secrets if "resourceNames" in r]
    assert [(r["resourceNames"], sorted(r["verbs"])) for r in named] == [([f"{FULLNAME}-tls"], ["get", "patch", "update"])]
    assert [r["verbs"] for r in secrets if "resourceNames" not in r] == [["create"]]
    leases = verbs_for(role["rules"], "leases")
    assert [(r.get("resourceNames"), sorted(r["verbs"])) for r in leases] == [
        ([f"{FULLNAME}-leader"], ["get", "update"]), (None, ["create"])]
    # Everything that changes an existing object by name is limited to named objects,
    # except the NetworkPolicies the controller manages and events.
    for role, rule in all_rules(docs):
        if role["metadata"]["name"] == f"{FULLNAME}-break-glass":
            continue  # not the server's: the break-glass group's (test_the_break_glass_group_may_only_label_namespaces)
        if {"update", "patch", "delete"} & set(rule["verbs"]) and not {"networkpolicies", "events"} & set(rule["resources"]):
            assert rule.get("resourceNames"), rule


def test_the_break_glass_group_may_only_label_namespaces():
    docs = render()
    role = one(docs, "ClusterRole", f"{FULLNAME}-break-glass")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "patch", "update"]}]
    binding = one(docs, "ClusterRoleBinding", f"{FULLNAME}-break-glass")
    assert binding["roleRef"]["name"] == f"{FULLNAME}-break-glass"
    assert binding["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                                    "name": "netpol-guard:break-glass"}]
    # bound to nobody else, and gone with the group
    none = render({"config": {"namespaceLabels": {"breakGlassGroup": ""}}})
    assert not [d for d in none if d["metadata"]["name"] == f"{FULLNAME}-break-glass"]


def test_autoscaling_replaces_the_fixed_replica_count():
    assert objects(render(), "HorizontalPodAutoscaler") == []
    assert one(render(), "Deployment")["spec"]["replicas"] == 2
    docs = render(SCENARIOS["autoscaling"])
    hpa = one(docs, "HorizontalPodAutoscaler", FULLNAME)
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": FULLNAME}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 8)
    assert hpa["spec"]["metrics"][0]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 60}
    # helm must not reset the autoscaler's replica count on every upgrade
    assert "replicas" not in one(docs, "Deployment")["spec"]
    result = helm("template", RELEASE, str(CHART), "--set", "autoscaling.enabled=true",
                  "--set", "autoscaling.minReplicas=5", "--set", "autoscaling.maxReplicas=4")
    assert result.returncode != 0 and "minReplicas must not be more than" in result.stderr


def test_without_the_controller_networkpolicies_are_read_only():
    docs = render({"controller": {"enabled": False}, "certificates": SCENARIOS["cert-manager"]["certificates"]})
    cluster_role = one(docs, "ClusterRole", FULLNAME)
    [netpol] = [r for r in cluster_role["rules"] if "networkpolicies" in r["resources"]]
    assert sorted(netpol["verbs"]) == ["get", "list", "watch"]
    # No leader election needed either: no Lease access.
    assert objects(docs, "Role") == [] and objects(docs, "RoleBinding") == []


@pytest.mark.parametrize("scenario", ["cert-manager", "existing-secret"])
def test_without_self_managed_certificates_there_is_no_secret_or_webhook_write_access(scenario):
    docs = render(SCENARIOS[scenario])
    for role, rule in all_rules(docs):
        if role["metadata"]["name"] != FULLNAME:
            continue  # the uninstall hook's own role is checked separately
        assert "secrets" not in rule["resources"]
        assert "validatingwebhookconfigurations" not in rule["resources"]


# --- tests: webhook configurations ------------------------------------------------------

def validating_webhooks(docs) -> dict[str, dict]:
    return {w["name"]: w for w in one(docs, "ValidatingWebhookConfiguration")["webhooks"]}


# The Namespace label guards: they must see the ignore label being added, so ignore=true
# namespaces are not left out of them.
NAMESPACE_HOOKS = {"namespaces.netpol-guard.io", "ignored-namespaces.netpol-guard.io"}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_webhooks_never_see_kube_system_the_release_namespace_or_ignored_namespaces(scenario):
    docs = render(SCENARIOS[scenario])
    configs = objects(docs, "ValidatingWebhookConfiguration") + objects(docs, "MutatingWebhookConfiguration")
    for webhook in (w for c in configs for w in c["webhooks"]):
        expressions = webhook["namespaceSelector"]["matchExpressions"]
        by_key = {e["key"]: e for e in expressions}
        assert by_key["kubernetes.io/metadata.name"]["operator"] == "NotIn"
        assert {"kube-system", NAMESPACE} <= set(by_key["kubernetes.io/metadata.name"]["values"])
        if webhook["name"] in NAMESPACE_HOOKS:
            assert "netpol-guard.io/ignore" not in by_key, webhook["name"]
        else:
            assert by_key["netpol-guard.io/ignore"] == {"key": "netpol-guard.io/ignore", "operator": "NotIn",
                                                         "values": ["true"]}
        assert webhook["admissionReviewVersions"] == ["v1"]
        assert webhook["sideEffects"] == "None"
        assert webhook["matchPolicy"] == "Equivalent"
        service = webhook["clientConfig"]["service"]
        assert (service["name"], service["namespace"], service["port"]) == (FULLNAME, NAMESPACE, 443)
        assert service["path"] in ("/validate", "/mutate")
    excluded = validating_webhooks(render(SCENARIOS["everything"]))["networkpolicies.netpol-guard.io"]
    assert "monitoring" in excluded["namespaceSelector"]["matchExpressions"][0]["values"]


def test_validating_webhook_defaults():
    hooks = validating_webhooks(render())
    assert set(hooks) == {"networkpolicies.netpol-guard.io", "managed-networkpolicies.netpol-guard.io"} | NAMESPACE_HOOKS
    assert all(h["clientConfig"]["service"]["path"] == "/validate" for h in hooks.values())
    assert all(h["failurePolicy"] == "Fail" and h["timeoutSeconds"] == 3 for h in hooks.values())
    netpol = hooks["networkpolicies.netpol-guard.io"]
    assert netpol["rules"] == [{"apiGroups": ["networking.k8s.io"], "apiVersions": ["v1"],
                                "resources": ["networkpolicies"], "operations": ["CREATE", "UPDATE"],
                                "scope": "Namespaced"}]
    assert "objectSelector" not in netpol
    for name, key in (("namespaces.netpol-guard.io", "netpol-guard.io/isolate"),
                      ("ignored-namespaces.netpol-guard.io", "netpol-guard.io/ignore")):
        namespaces = hooks[name]
        assert namespaces["objectSelector"] == {"matchExpressions": [{"key": key, "operator": "Exists"}]}
        assert namespaces["rules"][0]["resources"] == ["namespaces"]
        assert namespaces["rules"][0]["operations"] == ["CREATE", "UPDATE"]


def test_only_deleting_a_managed_policy_in_an_isolated_namespace_waits_for_the_webhook():
    hooks = validating_webhooks(render())
    delete = [h for h in hooks.values() if "DELETE" in h["rules"][0]["operations"]]
    assert [h["name"] for h in delete] == ["managed-networkpolicies.netpol-guard.io"]
    [managed] = delete
    assert managed["rules"] == [{"apiGroups": ["networking.k8s.io"], "apiVersions": ["v1"],
                                 "resources": ["networkpolicies"], "operations": ["DELETE"], "scope": "Namespaced"}]
    # objectSelector is matched against the old object on DELETE: the policies the controller labels
    assert managed["objectSelector"] == {"matchLabels": {"app.kubernetes.io/managed-by": "netpol-guard"}}
    assert {"key": "netpol-guard.io/isolate", "operator": "Exists"} in managed["namespaceSelector"]["matchExpressions"]
    custom = validating_webhooks(render({"config": {"isolation": {"labelKey": "example.com/lockdown"}}}))
    assert {"key": "example.com/lockdown", "operator": "Exists"} in \
        custom["managed-networkpolicies.netpol-guard.io"]["namespaceSelector"]["matchExpressions"]


def test_failure_policy_and_timeout_are_values_for_every_webhook():
    hooks = validating_webhooks(render(SCENARIOS["everything"]))
    assert hooks["networkpolicies.netpol-guard.io"]["timeoutSeconds"] == 10
    assert {h["failurePolicy"] for h in hooks.values()} == {"Ignore"}
    custom_label = validating_webhooks(render({"config": {"isolation": {"labelKey": "example.com/lockdown"}}}))
    assert custom_label["namespaces.netpol-guard.io"]["objectSelector"]["matchExpressions"][0]["key"] == "example.com/lockdown"


def all_webhooks(docs) -> dict[str, dict]:
    return {f"{c['kind']}/{w['name']}": w for c in objects(docs, "ValidatingWebhookConfiguration")
            + objects(docs, "MutatingWebhookConfiguration") for w in c["webhooks"]}


EXEMPT_CEL = ('!(request.userInfo.username in ["ci-bot","system:serviceaccount:argocd:argocd-application-controller"]'
              ' || request.userInfo.groups.exists(g, g in ["platform"]))')


@pytest.mark.parametrize("version", ["1.30.0", "1.35.0"])
def test_exempt_requests_never_leave_the_api_server_where_it_has_match_conditions(version):
    hooks = all_webhooks(render(SCENARIOS["exemptions"], kube_version=version))
    managed_update = ('(request.operation == "UPDATE" && has(oldObject.metadata.labels) && '
                      '"app.kubernetes.io/managed-by" in oldObject.metadata.labels && '
                      'oldObject.metadata.labels["app.kubernetes.io/managed-by"] == "netpol-guard")')
    # updates of managed policies still reach the managed-policy guard, which ignores exemptions
    assert hooks["ValidatingWebhookConfiguration/networkpolicies.netpol-guard.io"]["matchConditions"] == [
        {"name": "not-exempt", "expression": f"{EXEMPT_CEL} || {managed_update}"}]
    for name in ("ValidatingWebhookConfiguration/pods.netpol-guard.io",
                 "MutatingWebhookConfiguration/networkpolicies.netpol-guard.io"):
        assert hooks[name]["matchConditions"] == [{"name": "not-exempt", "expression": EXEMPT_CEL}], name
    # the guards that ignore exemptions get none: exempt users may not delete managed policies or
    # exempt namespaces; the break-glass group skips the Namespace label guards
    assert "matchConditions" not in hooks["ValidatingWebhookConfiguration/managed-networkpolicies.netpol-guard.io"]
    for name in NAMESPACE_HOOKS:
        assert hooks[f"ValidatingWebhookConfiguration/{name}"]["matchConditions"] == [
            {"name": "not-break-glass", "expression": '!("emergency" in request.userInfo.groups)'}]


@pytest.mark.parametrize("version", ["1.28.0", "1.29.9"])
def test_older_api_servers_get_no_match_conditions_and_rely_on_the_in_process_checks(version):
    docs = render(SCENARIOS["exemptions"], kube_version=version)
    assert all("matchConditions" not in h for h in all_webhooks(docs).values())
    # the server still knows whom to exempt and who may break glass
    cfg = server_config.from_dict(rendered_config(docs))
    assert cfg.exemptUsers[0] == "ci-bot" and cfg.namespaceLabels.breakGlassGroup == "emergency"


def test_without_exemptions_or_break_glass_group_there_are_no_match_conditions():
    docs = render({"config": {"namespaceLabels": {"breakGlassGroup": ""}, "isolation": {"gatePods": True}}},
                  kube_version="1.35.0")
    assert all("matchConditions" not in h for h in all_webhooks(docs).values())


def test_match_condition_strings_are_cel_literals_whatever_the_name():
    hooks = validating_webhooks(render({"config": {"exemptUsers": ['it\'s "odd"\\']}}, kube_version="1.35.0"))
    expression = hooks["networkpolicies.netpol-guard.io"]["matchConditions"][0]["expression"]
    # a JSON string literal is a CEL string literal: quotes and backslashes escaped
    assert expression.startswith('!(request.userInfo.username in ["it\'s \\"odd\\"\\\\"])')


def test_pod_rule_only_when_the_gate_is_on():
    assert "pods.netpol-guard.io" not in validating_webhooks(render())
    pods = validating_webhooks(render(SCENARIOS["gate-on"]))["pods.netpol-guard.io"]
    assert pods["rules"][0]["resources"] == ["pods"] and pods["rules"][0]["operations"] == ["CREATE"]
    assert pods["failurePolicy"] == "Fail"
    # Only isolated namespaces: a webhook outage never stops pods anywhere else.
    assert {"key": "netpol-guard.io/isolate", "operator": "Exists"} in pods["namespaceSelector"]["matchExpressions"]


@pytest.mark.parametrize("mutation", ["addDnsEgress", "explicitPolicyTypes", "exceptMetadataAddress"])
def test_mutating_webhook_exists_only_when_a_mutation_is_on(mutation):
    assert objects(render(), "MutatingWebhookConfiguration") == []
    docs = render({"config": {"mutations": {mutation: True}}})
    mutating = one(docs, "MutatingWebhookConfiguration", FULLNAME)
    [hook] = mutating["webhooks"]
    assert hook["clientConfig"]["service"]["path"] == "/mutate"
    assert hook["rules"][0]["resources"] == ["networkpolicies"]
    assert hook["rules"][0]["operations"] == ["CREATE", "UPDATE"]


# --- tests: certificate modes -----------------------------------------------------------

def tls_volume(docs) -> dict:
    return next(v for v in deployment_pod(docs)["volumes"] if v["name"] == "tls")["secret"]


def test_self_managed_mode_mounts_the_secret_the_leader_creates():
    docs = render()
    assert tls_volume(docs)["secretName"] == f"{FULLNAME}-tls"
    assert tls_volume(docs)["optional"] is True  # the pod starts before the Secret exists
    assert tls_volume(docs)["defaultMode"] == 0o440
    # The files serve gets as --cert/--key are in the mount; the CA's key is not.
    assert tls_volume(docs)["items"] == [{"key": "tls.crt", "path": "tls.crt"}, {"key": "tls.key", "path": "tls.key"},
                                         {"key": "ca.crt", "path": "ca.crt"}]
    container = deployment_pod(docs)["containers"][0]
    [mount] = [m for m in container["volumeMounts"] if m["name"] == "tls"]
    args = container["args"]
    assert args[args.index("--cert") + 1] == f"{mount['mountPath']}/tls.crt"
    assert args[args.index("--key") + 1] == f"{mount['mountPath']}/tls.key"
    # Readiness waits for the certificate: /readyz is not ready until it is loaded.
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for scenario in ("cert-manager", "existing-secret"):
        assert "items" not in tls_volume(render(SCENARIOS[scenario]))
    assert "caBundle" not in validating_webhooks(docs)["networkpolicies.netpol-guard.io"]["clientConfig"]
    assert not [d for d in docs if d["apiVersion"].startswith("cert-manager.io/")]


@pytest.mark.parametrize("scenario", ["cert-manager", "cert-manager-issuer"])
def test_cert_manager_mode_issues_a_certificate_and_injects_the_ca(scenario):
    docs = render({**SCENARIOS[scenario], "config": {"mutations": {"addDnsEgress": True}}})
    certificate = one(docs, "Certificate", FULLNAME)
    assert certificate["spec"]["secretName"] == tls_volume(docs)["secretName"] == f"{FULLNAME}-tls"
    assert certificate["spec"]["dnsNames"] == [FULLNAME, f"{FULLNAME}.{NAMESPACE}", f"{FULLNAME}.{NAMESPACE}.svc",
                                               f"{FULLNAME}.{NAMESPACE}.svc.cluster.local"]
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        config = one(docs, kind)
        assert config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == f"{NAMESPACE}/{FULLNAME}"
        assert all("caBundle" not in w["clientConfig"] for w in config["webhooks"])
    issuers = objects(docs, "Issuer")
    if scenario == "cert-manager-issuer":
        assert issuers == [] and certificate["spec"]["issuerRef"] == {"name": "corp-ca", "kind": "ClusterIssuer"}
    else:
        ca_issuer = one(docs, "Issuer", f"{FULLNAME}-ca")
        assert certificate["spec"]["issuerRef"]["name"] == ca_issuer["metadata"]["name"]
        assert one(docs, "Certificate", f"{FULLNAME}-ca")["spec"]["isCA"] is True
    for crd_object in (d for d in docs if d["apiVersion"].startswith(CRD_GROUPS)):
        assert crd_object["metadata"]["namespace"] == NAMESPACE


def test_existing_secret_mode_uses_the_given_secret_and_ca_bundle():
    docs = render(SCENARIOS["existing-secret"])
    assert tls_volume(docs)["secretName"] == "my-tls"
    assert "optional" not in tls_volume(docs)
    for hook in validating_webhooks(docs).values():
        assert hook["clientConfig"]["caBundle"] == "LS0tLS1CRUdJTg=="
    assert not [d for d in docs if d["apiVersion"].startswith("cert-manager.io/")]


# --- tests: the chart's own NetworkPolicies ---------------------------------------------

def test_own_network_policy_allows_only_the_webhook_port_dns_and_the_api_server():
    docs = render()
    policy = one(docs, "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["ingress"] == [{"ports": [{"port": 8443, "protocol": "TCP"}]}]
    dns, peers, api = policy["spec"]["egress"]
    # Self-managed certificates: the leader dials its peers' webhook port during a CA rotation.
    assert peers == {"to": [{"podSelector": {"matchLabels": one(docs, "Deployment")["spec"]["selector"]["matchLabels"]}}],
                     "ports": [{"port": 8443, "protocol": "TCP"}]}
    assert dns["to"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                          "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]
    assert sorted((p["port"], p["protocol"]) for p in dns["ports"]) == [(53, "TCP"), (53, "UDP")]
    assert {p["port"] for p in api["ports"]} == {443, 6443}

    custom = one(render(SCENARIOS["everything"]), "NetworkPolicy")["spec"]
    assert custom["ingress"][0]["from"] == [{"ipBlock": {"cidr": "10.0.0.0/8"}}]
    # Narrowed ingress still lets the leader reach its peers.
    assert custom["ingress"][1] == {"from": peers["to"], "ports": [{"port": 8443, "protocol": "TCP"}]}
    assert {"ipBlock": {"cidr": "169.254.20.10/32"}} in custom["egress"][0]["to"]
    assert custom["egress"][1] == peers
    assert custom["egress"][2] == {"to": [{"ipBlock": {"cidr": "172.20.0.10/32"}}],
                                   "ports": [{"port": 6443, "protocol": "TCP"}]}
    for scenario in ("cert-manager", "existing-secret"):
        other = one(render(SCENARIOS[scenario]), "NetworkPolicy")["spec"]
        assert len(other["egress"]) == 2 and peers not in other["egress"]
    assert objects(render({"networkPolicy": {"enabled": False}}), "NetworkPolicy") == []


def test_service_monitor_is_optional_and_verifies_tls():
    assert objects(render(), "ServiceMonitor") == []
    monitor = one(render(SCENARIOS["everything"]), "ServiceMonitor")
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "https" and endpoint["path"] == "/metrics" and endpoint["scheme"] == "https"
    assert endpoint["tlsConfig"]["serverName"] == f"{FULLNAME}.{NAMESPACE}.svc"
    assert monitor["metadata"]["labels"]["release"] == "prom"


# --- tests: uninstall order -------------------------------------------------------------

def test_uninstall_hook_removes_the_webhook_configurations_before_the_pods():
    docs = render()
    job = one(docs, "Job")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-delete"
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == deployment_pod(docs)["containers"][0]["image"]
    assert container["command"] == ["python", "-c"]
    script, name, timeout = container["args"]
    compile(script, "uninstall-hook", "exec")  # the embedded script is valid Python
    assert name == FULLNAME and int(timeout) > 0
    assert "delete_validating_webhook_configuration" in script and "delete_mutating_webhook_configuration" in script
    # Its RBAC exists before it runs, and allows nothing beyond those two objects.
    hook_role = one(docs, "ClusterRole", f"{FULLNAME}-uninstall")
    assert hook_role["metadata"]["annotations"]["helm.sh/hook"] == "pre-delete"
    assert int(hook_role["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(annotations["helm.sh/hook-weight"])
    assert hook_role["rules"] == [{"apiGroups": ["admissionregistration.k8s.io"],
                                   "resources": ["validatingwebhookconfigurations", "mutatingwebhookconfigurations"],
                                   "resourceNames": [FULLNAME], "verbs": ["get", "delete"]}]
    assert pod["serviceAccountName"] == f"{FULLNAME}-uninstall"
    # The webhook configurations themselves are ordinary release objects, not hooks.
    assert "helm.sh/hook" not in (one(docs, "ValidatingWebhookConfiguration")["metadata"].get("annotations") or {})


# --- tests: values.schema.json ----------------------------------------------------------

@pytest.mark.parametrize("values, message", [
    ({"replicas": 3}, "replicas"),
    ({"config": {"isolation": {"gatepods": True}}}, "gatepods"),
    ({"replicaCount": "two"}, "replicaCount"),
    ({"webhook": {"failurePolicy": "Maybe"}}, "failurePolicy"),
    ({"webhook": {"timeoutSeconds": 60}}, "timeoutSeconds"),
    ({"config": {"mode": "audit"}}, "mode"),
    ({"certificates": {"mode": "existingSecret", "existingSecret": {"name": "my-tls"}}}, "caBundle"),
    ({"certificates": {"mode": "existingSecret", "existingSecret": {"caBundle": "QUJD"}}}, "name"),
    ({"certificates": {"mode": "vault"}}, "mode"),
    ({"config": {"certificates": {"validityDays": 0}}}, "validityDays"),
    ({"config": {"certificates": {"renewBefore": 3}}}, "renewBefore"),
    ({"config": {"leaderElection": {"leaseDurationSeconds": "15s"}}}, "leaseDurationSeconds"),
])
def test_values_schema_rejects_unknown_and_wrong_values(values, message, tmp_path):
    result = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, values=values, tmp=tmp_path)
    assert result.returncode != 0, f"helm accepted {values}"
    assert "schema" in result.stderr and message in result.stderr, result.stderr


# --- tests: NOTES, metadata, docs -------------------------------------------------------

def chart_meta() -> dict:
    return yaml.safe_load((CHART / "Chart.yaml").read_text())


def test_notes_explain_how_to_check_it_works():
    result = helm("install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client")
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "kubectl apply --dry-run=server" in notes and "name: monitoring" in notes
    assert "denied the request" in notes
    assert "netpol-guard.io/ignore=true" in notes


def test_the_notes_example_really_is_refused(tmp_path, capsys):
    # The policy NOTES.txt tells users to apply, checked by the same rules the webhook runs,
    # against a cluster whose namespaces carry only the labels Kubernetes sets itself.
    import textwrap

    from webhook.cli import main

    notes = helm("install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client").stdout
    example = textwrap.dedent(notes.split("-f -\n", 1)[1].split("     YAML\n", 1)[0])
    policy = yaml.safe_load(example)
    policy["metadata"]["namespace"] = "default"
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(policy))
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump_all([
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}}}
        for ns in ("default", "monitoring")]))
    code = main(["lint", "--format", "json", "--cluster", str(tmp_path / "cluster.yaml"), str(tmp_path / "policy.yaml")])
    report = json.loads(capsys.readouterr().out)
    assert code == 1
    errors = [f for f in report["findings"] if f["severity"] == "error"]
    assert [(f["rule"], f["path"]) for f in errors] == [
        ("namespace-selector-matches-nothing", "spec.ingress[0].from[0].namespaceSelector")]
    assert "[namespace-selector-matches-nothing]" in notes


def test_chart_app_version_is_the_package_version():
    import tomllib

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert chart_meta()["appVersion"] == version


def test_values_doc_is_up_to_date():
    result = subprocess.run([sys.executable, str(ROOT / "scripts/gen-values-doc.py"), "--check"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# --- the uninstall hook's script, run for real against the API stand-in -----------------

def hook_script_and_args(docs) -> list[str]:
    container = one(docs, "Job")["spec"]["template"]["spec"]["containers"][0]
    return container["args"]


def run_hook(kube_api, tmp_path, args: list[str]) -> subprocess.CompletedProcess:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "standin",
        "clusters": [{"name": "standin", "cluster": {"server": kube_api.url}}],
        "users": [{"name": "standin", "user": {}}],
        "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "standin"}}],
    }))
    script, *rest = args
    env = {"KUBECONFIG": str(kubeconfig), "PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
    return subprocess.run([sys.executable, "-c", script, *rest], capture_output=True, text=True, timeout=60, env=env)


def webhook_configurations(kube_api) -> list[str]:
    return [f"{kind}/{obj['metadata']['name']}"
            for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")
            for obj in kube_api.list_objects(kind)]


def test_uninstall_hook_deletes_both_webhook_configurations(kube_api, tmp_path):
    docs = render(SCENARIOS["mutations-on"])
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        kube_api.put_object(one(docs, kind))
    kube_api.put_object({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
                         "metadata": {"name": "someone-else"}, "webhooks": []})
    result = run_hook(kube_api, tmp_path, hook_script_and_args(docs))
    assert result.returncode == 0, result.stderr
    assert "webhook configurations are gone" in result.stdout
    assert webhook_configurations(kube_api) == ["ValidatingWebhookConfiguration/someone-else"]

    # Running again (a retried Job) when they are already gone also succeeds.
    again = run_hook(kube_api, tmp_path, hook_script_and_args(docs))
    assert again.returncode == 0, again.stderr


def test_uninstall_hook_fails_and_says_why_when_it_cannot_delete(kube_api, tmp_path):
    docs = render()
    kube_api.put_object(one(docs, "ValidatingWebhookConfiguration"))
    kube_api.inject_failure("DELETE", "validatingwebhookconfigurations", status=403, count=1)
    result = run_hook(kube_api, tmp_path, hook_script_and_args(docs))
    assert result.returncode != 0
    assert f"cannot delete ValidatingWebhookConfiguration {FULLNAME}: 403" in result.stderr
    # A failed hook stops `helm uninstall`: the webhook configuration and the pods stay together.
    assert webhook_configurations(kube_api) == [f"ValidatingWebhookConfiguration/{FULLNAME}"]


# --- getting helm -------------------------------------------------------------------------

def test_helm_is_found_in_tools_bin_when_not_on_path(tmp_path):
    tools = tmp_path / ".tools" / "bin"
    assert find_helm(str(tmp_path), tools) is None
    tools.mkdir(parents=True)
    (tools / "helm").write_text("#!/bin/sh\n")
    (tools / "helm").chmod(0o755)
    assert find_helm(str(tmp_path), tools) == str(tools / "helm")


def test_install_helm_does_nothing_when_helm_is_already_there(tmp_path):
    # A copy of the script in a scratch checkout that already has .tools/bin/helm: it must
    # return at once, without calling the (deliberately broken) Python or the network.
    (tmp_path / "scripts").mkdir()
    script = tmp_path / "scripts" / "install-helm.sh"
    shutil.copy(ROOT / "scripts" / "install-helm.sh", script)
    tools = tmp_path / ".tools" / "bin"
    tools.mkdir(parents=True)
    (tools / "helm").write_text("#!/bin/sh\necho fake\n")
    (tools / "helm").chmod(0o755)
    result = subprocess.run(["bash", str(script), "/nonexistent/python"], capture_output=True, text=True,
                            timeout=30, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert (tools / "helm").read_text() == "#!/bin/sh\necho fake\n"


# --- the chart's objects and config drive the certificate manager ----------------------

def request_allowed(docs, method: str, path: str) -> bool:
    """Whether the chart's Role/ClusterRole (not the uninstall hook's) allow one request."""
    parts = [p for p in path.split("/") if p]
    group, rest = ("", parts[2:]) if parts[0] == "api" else (parts[1], parts[3:])
    namespace = None
    if rest[0] == "namespaces" and len(rest) > 2:
        namespace, rest = rest[1], rest[2:]
    resource, name = rest[0], (rest[1] if len(rest) > 1 else None)
    verb = {"GET": "get" if name else "list", "POST": "create", "PUT": "update", "PATCH": "patch",
            "DELETE": "delete"}[method]
    for role in objects(docs, "ClusterRole") + objects(docs, "Role"):
        if role["metadata"]["name"] != FULLNAME:
            continue
        if role["kind"] == "Role" and role["metadata"]["namespace"] != namespace:
            continue
        for rule in role["rules"]:
            if group in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"]:
                names = rule.get("resourceNames")
                if names is None or (name is not None and name in names):
                    return True
    return False


def test_certificate_manager_converges_on_the_charts_objects_within_its_rbac(kube_api):
    import base64
    import datetime as dt

    from webhook.tls.manager import CertificateManager

    docs = render(SCENARIOS["mutations-on"])
    cfg = server_config.from_dict(rendered_config(docs), source="chart config.yaml")
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration", "Service"):
        kube_api.put_object(one(docs, kind))
    now = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)
    with kube_api.api_client() as client:
        manager = CertificateManager(client, cfg, NAMESPACE)
        manager.reconcile(now)  # creates the Secret, writes both caBundles
        manager.reconcile(now + dt.timedelta(days=cfg.certificates.caValidityDays - 10))  # CA rotation
        waiting = manager.reconcile(now + dt.timedelta(days=cfg.certificates.caValidityDays - 10))
    assert waiting.waiting == "no ready replica to check"  # it looked for replicas: Service and Pods read

    secret = kube_api.get_object("Secret", NAMESPACE, tls_volume(docs)["secretName"])
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        for hook in kube_api.get_object(kind, None, FULLNAME)["webhooks"]:
            assert hook["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]
    assert len(base64.b64decode(secret["data"]["ca.crt"]).split(b"-----END CERTIFICATE-----")) == 3  # two CAs
    paths = {(r.method, r.path) for r in kube_api.requests()}
    assert ("GET", f"/api/v1/namespaces/{NAMESPACE}/pods") in paths
    for method, path in sorted(paths):
        assert request_allowed(docs, method, path), f"the chart's RBAC does not allow {method} {path}"
    # ...and the check is not a rubber stamp:
    assert not request_allowed(docs, "GET", f"/api/v1/namespaces/{NAMESPACE}/secrets/other")
    assert not request_allowed(docs, "PUT", "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/other")
    assert not request_allowed(docs, "GET", f"/api/v1/namespaces/{NAMESPACE}/secrets")
