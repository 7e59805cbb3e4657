"""The webhook configuration degrades safely, on the real API server (issue 13, item 4).

- exemptUsers/exemptGroups are matchConditions: an exempt user's request is decided by the
  API server alone (no review reaches the webhook, so none is in its audit log);
- NetworkPolicy DELETE goes to a webhook that matches only managed policies in isolated
  namespaces: with the webhook down, any other policy can still be deleted;
- only allowed identities may add or remove netpol-guard.io/ignore and the isolate label on
  Namespaces; the break-glass group's requests never leave the API server, so they work while
  the webhook is down.

Identities are impersonated with the admin credentials (kubectl --as/--as-group); the API
server authorizes and admits each request as that user. The cluster is this module's own:
one test stops the webhook.
"""
from __future__ import annotations

import json
import time
import uuid

import pytest
import yaml

from tests.e2e.cluster import DENIAL_PROBE, GuardedCluster

EXEMPT = "e2e-exempt"            # config.exemptUsers
PLATFORM = "platform-admins"     # config.namespaceLabels.allowedGroups
BREAK_GLASS = "netpol-guard:break-glass"  # the chart's default break-glass group
IGNORE = "netpol-guard.io/ignore"
ISOLATE = "netpol-guard.io/isolate"
MANAGED = "netpol-guard-default-deny"
# Impersonated users get exactly the RBAC bound to them here: edit NetworkPolicies, label Namespaces.
RBAC = [
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "e2e-editor"},
     "rules": [{"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"],
                "verbs": ["get", "list", "create", "update", "patch", "delete"]},
               {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "update", "patch"]}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "e2e-editor"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "e2e-editor"},
     "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": n}
                  for n in ("alice", "bob", EXEMPT)]},  # carol: only the chart's break-glass binding
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = GuardedCluster(tmp_path_factory.mktemp("webhook-safety"), chart_values=(
        f"config.exemptUsers={{{EXEMPT}}}",
        f"config.namespaceLabels.allowedGroups={{system:masters,{PLATFORM}}}",
    )).up()
    try:
        c.apply_objects(RBAC)
        yield c
    finally:
        c.down()


def kubectl_as(cluster: GuardedCluster, user: str, *args: str, groups: tuple[str, ...] = (), input=None):
    impersonate = [f"--as={user}"] + [f"--as-group={g}" for g in groups]
    return cluster.kubectl(*impersonate, *args, input=input, check=False)


def new_namespace(cluster: GuardedCluster, **labels: str) -> str:
    name = f"safe-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    if labels:
        cluster.kubectl("label", "namespace", name, *(f"{k}={v}" for k, v in labels.items()))
    return name


def bad_policy(namespace: str, name: str) -> str:
    """The denial probe (egress isolated without DNS: an error) moved to another namespace."""
    doc = yaml.safe_load(DENIAL_PROBE.read_text())
    doc["metadata"].update(name=name, namespace=namespace)
    return json.dumps(doc)


def reviews(cluster: GuardedCluster) -> list[dict]:
    """Every admission review the webhook has answered, from its audit log (a Namespace is
    logged as NAME/NAME: the API server sends its name as the request namespace too)."""
    out = []
    for line in cluster.serve.log_path.read_text(errors="replace").splitlines():
        if line.startswith("{") and '"netpol_guard.audit"' in line:
            out.append(json.loads(line))
    return out


def wait_for_review(cluster: GuardedCluster, user: str, obj: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [r for r in reviews(cluster) if r["user"] == user and r["object"] == obj]
        if found:
            return found[-1]
        time.sleep(0.1)
    raise AssertionError(f"no review of {obj} by {user} in the audit log:\n{cluster.serve.log_tail()}")


def namespace_labels(cluster: GuardedCluster, name: str) -> dict:
    return json.loads(cluster.kubectl("get", "namespace", name, "-o", "json").stdout)["metadata"].get("labels", {})


def wait_for_policy(cluster: GuardedCluster, namespace: str, name: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cluster.kubectl("get", "networkpolicy", name, "-n", namespace, check=False).returncode == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"{namespace}/{name} never appeared:\n{cluster.serve.log_tail()}")


# --- exemptions -------------------------------------------------------------------------------

def test_an_exempt_users_request_never_reaches_the_webhook_and_is_allowed(cluster):
    ns = new_namespace(cluster)
    exempt = kubectl_as(cluster, EXEMPT, "apply", "-f", "-", input=bad_policy(ns, "exempt-policy"))
    assert exempt.returncode == 0, exempt.stderr
    # The same mistake from an ordinary user is reviewed and denied: the webhook is up and looking.
    ordinary = kubectl_as(cluster, "alice", "apply", "-f", "-", input=bad_policy(ns, "alice-policy"))
    assert ordinary.returncode != 0 and "[dns-egress-missing]" in ordinary.stderr, ordinary.stderr
    assert wait_for_review(cluster, "alice", f"{ns}/alice-policy")["decision"] == "deny"
    # alice's review is logged after the exempt request returned: an exempt review would be there by now
    assert [r for r in reviews(cluster) if r["user"] == EXEMPT] == []
    cluster.kubectl("get", "networkpolicy", "exempt-policy", "-n", ns)


# --- managed policies -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def isolated(cluster):
    """A namespace labeled isolate=all (by the admin: system:masters may) with its managed policies."""
    ns = new_namespace(cluster, **{ISOLATE: "all"})
    wait_for_policy(cluster, ns, MANAGED)
    return ns


def test_deleting_a_managed_policy_is_refused_while_the_webhook_is_up(cluster, isolated):
    res = cluster.kubectl("delete", "networkpolicy", MANAGED, "-n", isolated, check=False)
    assert res.returncode != 0
    assert 'admission webhook "managed-networkpolicies.netpol-guard.io" denied the request' in res.stderr
    assert "managed by netpol-guard" in res.stderr
    # an exempt user is refused too: the managed-policy guard ignores exemptions
    exempt = kubectl_as(cluster, EXEMPT, "delete", "networkpolicy", MANAGED, "-n", isolated)
    assert exempt.returncode != 0 and "managed by netpol-guard" in exempt.stderr


# --- namespace labels -------------------------------------------------------------------------

def test_labeling_a_namespace_ignored_is_denied_to_an_ordinary_user(cluster):
    ns = new_namespace(cluster)
    res = kubectl_as(cluster, "alice", "label", "namespace", ns, f"{IGNORE}=true")
    assert res.returncode != 0
    assert 'admission webhook "ignored-namespaces.netpol-guard.io" denied the request' in res.stderr
    assert f"alice may not add {IGNORE}=true" in res.stderr
    assert IGNORE not in namespace_labels(cluster, ns)
    # nor may an exempt user, nor may anyone drop another namespace's isolation
    assert kubectl_as(cluster, EXEMPT, "label", "namespace", ns, f"{IGNORE}=true").returncode != 0
    isolated_ns = new_namespace(cluster, **{ISOLATE: "ingress"})
    drop = kubectl_as(cluster, "alice", "label", "namespace", isolated_ns, f"{ISOLATE}-")
    assert drop.returncode != 0 and f"remove {ISOLATE}" in drop.stderr
    # unrelated labels on a labeled namespace stay anyone's
    assert kubectl_as(cluster, "alice", "label", "namespace", isolated_ns, "team=shop").returncode == 0


def test_the_allowed_group_may_add_and_remove_the_ignore_label(cluster):
    ns = new_namespace(cluster)
    added = kubectl_as(cluster, "bob", "label", "namespace", ns, f"{IGNORE}=true", groups=(PLATFORM,))
    assert added.returncode == 0, added.stderr
    assert namespace_labels(cluster, ns)[IGNORE] == "true"
    assert wait_for_review(cluster, "bob", f"{ns}/{ns}")["decision"] == "allow"
    removed = kubectl_as(cluster, "bob", "label", "namespace", ns, f"{IGNORE}-", groups=(PLATFORM,))
    assert removed.returncode == 0, removed.stderr
    assert IGNORE not in namespace_labels(cluster, ns)


def test_the_break_glass_group_changes_the_labels_without_calling_the_webhook(cluster):
    ns = new_namespace(cluster)
    res = kubectl_as(cluster, "carol", "label", "namespace", ns, f"{IGNORE}=true", groups=(BREAK_GLASS,))
    assert res.returncode == 0, res.stderr
    assert namespace_labels(cluster, ns)[IGNORE] == "true"
    kubectl_as(cluster, "alice", "label", "namespace", ns, f"{IGNORE}-")  # denied, but reviewed: a marker
    wait_for_review(cluster, "alice", f"{ns}/{ns}")
    assert [r for r in reviews(cluster) if r["user"] == "carol"] == []


# --- webhook outage ---------------------------------------------------------------------------

def test_with_the_webhook_down_only_managed_policies_and_guarded_labels_wait(cluster, isolated):
    unmanaged = "team-allow"
    assert kubectl_as(cluster, EXEMPT, "apply", "-f", "-", input=bad_policy(isolated, unmanaged)).returncode == 0
    other_ns = new_namespace(cluster)
    assert kubectl_as(cluster, EXEMPT, "apply", "-f", "-", input=bad_policy(other_ns, "anywhere")).returncode == 0
    cluster.serve.stop(timeout=30)
    try:
        # deleting a policy the controller does not manage never calls the webhook
        for ns, name in ((isolated, unmanaged), (other_ns, "anywhere")):
            res = cluster.kubectl("delete", "networkpolicy", name, "-n", ns, check=False)
            assert res.returncode == 0, res.stderr
        # still fail closed: a managed policy, an unchecked new policy, an ordinary user's label
        managed = cluster.kubectl("delete", "networkpolicy", MANAGED, "-n", isolated, check=False)
        assert managed.returncode != 0 and "failed calling webhook" in managed.stderr, managed.stderr
        create = kubectl_as(cluster, "alice", "apply", "-f", "-", input=bad_policy(other_ns, "unchecked"))
        assert create.returncode != 0 and "failed calling webhook" in create.stderr, create.stderr
        label = kubectl_as(cluster, "alice", "label", "namespace", other_ns, f"{IGNORE}=true")
        assert label.returncode != 0 and "failed calling webhook" in label.stderr, label.stderr
        # the way out works without the webhook: break glass, remove the isolate label
        glass = kubectl_as(cluster, "carol", "label", "namespace", isolated, f"{ISOLATE}-", groups=(BREAK_GLASS,))
        assert glass.returncode == 0, glass.stderr
        assert ISOLATE not in namespace_labels(cluster, isolated)
        # ...after which its managed policies are the user's again, deletable with the webhook down
        deadline = time.monotonic() + 15
        while (res := cluster.kubectl("delete", "networkpolicy", MANAGED, "-n", isolated, check=False)).returncode:
            assert time.monotonic() < deadline, res.stderr  # the API server's namespace cache lags a little
            time.sleep(0.3)
    finally:
        cluster.start_serve(cluster.state / "config.yaml", cluster.state / "netpol-guard.kubeconfig")
        cluster.wait_for_denial()


def test_an_isolated_namespace_can_be_deleted(cluster):
    # The namespace controller deletes the managed policies like any user would: the guard must
    # let it, or the namespace stays Terminating for ever (it did before this test).
    ns = new_namespace(cluster, **{ISOLATE: "all"})
    wait_for_policy(cluster, ns, MANAGED)
    cluster.kubectl("delete", "namespace", ns, "--wait=false")
    deadline = time.monotonic() + 60
    while cluster.kubectl("get", "namespace", ns, check=False).returncode == 0:
        if time.monotonic() > deadline:
            status = cluster.kubectl("get", "namespace", ns, "-o", "json").stdout
            raise AssertionError(f"namespace {ns} still there after 60 s:\n{status}")
        time.sleep(0.5)


def test_the_documented_break_glass_command_works_as_written(cluster):
    import os
    import re
    import subprocess

    from tests.e2e.controlplane import REPO

    doc = (REPO / "docs" / "install.md").read_text()
    section = doc[doc.index("**Break glass.**"):]
    script = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    assert "--as-group=netpol-guard:break-glass" in script and "namespace shop" in script
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig),
           "PATH": f"{os.path.dirname(cluster.cp.bin('kubectl'))}{os.pathsep}{os.environ.get('PATH', '')}"}
    res = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=env, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    assert namespace_labels(cluster, "shop")[IGNORE] == "true"
    cluster.kubectl("label", "namespace", "shop", f"{IGNORE}-")  # the admin is in system:masters: allowed
