"""The agent's audit loop: reports written only when their content changes, Events with the
cause, nothing written while not leading, and a takeover that rewrites nothing already right.

The loop and the real ReportWriter run as in the agent; only the HTTP transport under the
writer is an in-memory store of custom objects (tests/e2e/ drives the same code against a
real kube-apiserver)."""
import copy
import time

import pytest

from tests.test_audit_core import cluster
from webhook.audit.loop import AuditLoop, read_gauges, write_gauges
from webhook.audit.writing import ReportWriter
from webhook.cluster.objects import Namespace
from webhook.config import DEFAULT
from webhook.metrics import Metrics


class NotFound(Exception):
    status = 404


class CustomObjects:
    """The CustomObjectsApi calls ReportWriter makes, over a dict; counts writes."""

    def __init__(self):
        self.store: dict[tuple[str, str, str], dict] = {}  # (plural, namespace, name) -> object
        self.writes = 0
        self._rv = 0

    def _bump(self, obj):
        self._rv += 1
        obj.setdefault("metadata", {})["resourceVersion"] = str(self._rv)
        self.writes += 1

    def list_cluster_custom_object(self, group, version, plural, label_selector=None, _request_timeout=None):
        key, _, value = label_selector.partition("=")
        return {"items": [copy.deepcopy(o) for (p, _, _), o in self.store.items()
                          if p == plural and o["metadata"].get("labels", {}).get(key) == value]}

    def get_namespaced_custom_object(self, group, version, namespace, plural, name, _request_timeout=None):
        if (plural, namespace, name) not in self.store:
            raise NotFound()
        return copy.deepcopy(self.store[(plural, namespace, name)])

    def get_cluster_custom_object(self, group, version, plural, name, _request_timeout=None):
        return self.get_namespaced_custom_object(group, version, "", plural, name)

    def create_namespaced_custom_object(self, group, version, namespace, plural, body, _request_timeout=None):
        assert (plural, namespace, body["metadata"]["name"]) not in self.store
        obj = copy.deepcopy(body)
        self._bump(obj)
        self.store[(plural, namespace, body["metadata"]["name"])] = obj

    def create_cluster_custom_object(self, group, version, plural, body, _request_timeout=None):
        self.create_namespaced_custom_object(group, version, "", plural, body)

    def replace_namespaced_custom_object(self, group, version, namespace, plural, name, body, _request_timeout=None):
        current = self.store[(plural, namespace, name)]
        assert body["metadata"]["resourceVersion"] == current["metadata"]["resourceVersion"]
        obj = copy.deepcopy(body)
        self._bump(obj)
        self.store[(plural, namespace, name)] = obj

    def replace_cluster_custom_object(self, group, version, plural, name, body, _request_timeout=None):
        self.replace_namespaced_custom_object(group, version, "", plural, name, body)

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name, _request_timeout=None):
        if self.store.pop((plural, namespace, name), None) is None:
            raise NotFound()
        self.writes += 1

    def delete_cluster_custom_object(self, group, version, plural, name, _request_timeout=None):
        self.delete_namespaced_custom_object(group, version, "", plural, name)


class Events:
    def __init__(self):
        self.got = []

    def record(self, namespace, name, uid, type_, reason, message):
        self.got.append((f"{namespace}/{name}", type_, reason, message))


@pytest.fixture
def setup(tmp_path):
    view, rec = cluster()
    api = CustomObjects()
    events = Events()
    state = {"leader": True}
    metrics = Metrics(str(tmp_path))
    loop = AuditLoop(view, rec, DEFAULT, ReportWriter(None, api=api), events, is_leader=lambda: state["leader"],
                     ready=lambda: True, metrics=metrics, gauges_dir=str(tmp_path), debounce=0.3, max_delay=2.0)
    return view, rec, api, events, state, loop, tmp_path


def settle(loop, timeout=5.0):
    """Step until the queued changes are audited (past the debounce)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if loop.step().startswith("incremental"):
            return
        time.sleep(0.01)
    raise AssertionError("changes were not audited")


def reports(api):
    return {k: v for k, v in api.store.items() if k[0] == "policyreports"}


def test_first_pass_writes_one_report_per_namespace_and_a_steady_state_writes_nothing(setup):
    view, rec, api, events, state, loop, _ = setup
    assert loop.step() == "full (took over)"
    namespaces = {p.namespace for p in view.policies()}
    assert {k[1] for k in reports(api)} == namespaces
    assert ("clusterpolicyreports", "", "netpol-guard") in api.store
    assert api.writes == len(namespaces) + 1
    assert events.got == []  # the first pass is the baseline, not news
    before = api.writes
    for _ in range(5):
        assert loop.step() == "idle"
    loop.last_full -= loop.full_seconds  # the periodic full pass is due
    assert loop.step() == "full (periodic)"
    assert api.writes == before  # nothing changed: nothing written


def test_a_namespace_relabel_rewrites_only_affected_reports_with_the_cause_and_back(setup):
    view, rec, api, events, state, loop, _ = setup
    loop.step()
    original = copy.deepcopy(reports(api))
    writes = api.writes
    mon = view.namespace("monitoring")
    rec.upsert(Namespace("monitoring", {"kubernetes.io/metadata.name": "monitoring"}))
    assert loop.step() == "debouncing"
    settle(loop)
    changed = {k for k, v in reports(api).items() if v != original[k]}
    assert {k[1] for k in changed} == {f"ns{n}" for n in range(6)}  # each has a from-ns policy
    assert api.writes - writes == len(changed)
    row = next(r for r in api.store[("policyreports", "ns3", "netpol-guard")]["results"]
               if r["policy"] == "ns3/from-ns-3" and r["result"] == "fail")
    assert row["properties"]["cause"] == "Namespace monitoring: label team 'obs' -> (absent)"
    appeared = [e for e in events.got if e[2] == "FindingAppeared"]
    assert {e[0] for e in appeared} == {f"ns{n}/from-ns-{n}" for n in range(6)}
    assert all(e[1] == "Warning" and "(cause: Namespace monitoring: label team 'obs' -> (absent))" in e[3]
               for e in appeared)
    # undone: the same reports go back to their first content; Events say the findings cleared
    rec.upsert(mon)
    settle(loop)
    def without_times(store):  # a result's timestamp says when it last changed: it moved
        return {k: (v["summary"], [{**r, "timestamp": None} for r in v["results"]]) for k, v in store.items()}
    assert without_times(reports(api)) == without_times(original)
    cleared = [e for e in events.got if e[2] == "FindingCleared"]
    assert {e[0] for e in cleared} == {f"ns{n}/from-ns-{n}" for n in range(6)}
    assert "label team (absent) -> 'obs'" in cleared[0][3]


def test_nothing_is_written_while_not_leading_and_a_new_leader_rewrites_nothing_already_right(setup):
    view, rec, api, events, state, loop, _ = setup
    loop.step()
    rec.upsert(Namespace("monitoring", {"kubernetes.io/metadata.name": "monitoring"}))  # findings with a cause
    settle(loop)
    writes = api.writes
    state["leader"] = False
    rec.upsert(Namespace("ns0", {"kubernetes.io/metadata.name": "ns0", "team": "t0", "owner": "x"}))
    time.sleep(0.1)
    assert loop.step() == "not leading" and api.writes == writes
    # another replica takes over (same reports in the cluster, its own writer and memory)
    other = AuditLoop(view, rec, DEFAULT, ReportWriter(None, api=api), Events(), is_leader=lambda: True,
                      ready=lambda: True, debounce=0.05)
    time.sleep(1.1)  # the new leader's clock is past the old one's timestamps
    assert other.step() == "full (took over)"
    assert api.writes == writes  # ns0's new label changed no finding: every report was already right
    # what only the old leader knew - when each finding appeared, and why - is still there
    row = next(r for r in api.store[("policyreports", "ns2", "netpol-guard")]["results"]
               if r["rule"] == "namespace-selector-matches-nothing")
    assert row["properties"]["cause"] == "Namespace monitoring: label team 'obs' -> (absent)"
    assert other.step() == "idle" and api.writes == writes  # and it does not look again


def test_a_new_clean_policy_in_a_new_namespace_gets_a_passing_report(setup):
    from tests.test_audit_core import netpol
    view, rec, api, events, state, loop, _ = setup
    loop.step()
    rec.upsert(Namespace("fresh", {"kubernetes.io/metadata.name": "fresh"}))
    rec.upsert(netpol("fresh", "deny", "  podSelector: {}\n  policyTypes: [Ingress]\n"))
    settle(loop)
    rows = api.store[("policyreports", "fresh", "netpol-guard")]["results"]
    assert [(r["policy"], r["rule"], r["result"]) for r in rows] == [("fresh/deny", "all-rules", "pass")]


def test_deleted_policies_take_their_namespace_report_with_them(setup):
    view, rec, api, events, state, loop, _ = setup
    loop.step()
    assert ("policyreports", "ns4", "netpol-guard") in api.store
    for p in view.policies("ns4"):
        rec.delete("NetworkPolicy", "ns4", p.name)
    settle(loop)
    assert ("policyreports", "ns4", "netpol-guard") not in api.store
    assert ("policyreports", "ns3", "netpol-guard") in api.store


def test_metrics_count_rechecks_per_change_and_gauges_show_findings_by_rule(setup):
    view, rec, api, events, state, loop, tmp = setup
    loop.step()
    rec.upsert(Namespace("monitoring", {"kubernetes.io/metadata.name": "monitoring"}))
    settle(loop)
    gauges = read_gauges(str(tmp))
    assert gauges['netpol_guard_audit_findings{rule="namespace-selector-matches-nothing",severity="error"}'] == 6
    assert gauges["netpol_guard_audit_policies"] == len(view.policies())
    text = loop.metrics.render(gauges)
    assert "netpol_guard_audit_changes_total 1" in text
    assert 'netpol_guard_audit_rechecks_total{kind="incremental"} ' in text
    assert "netpol_guard_audit_lag_seconds_count 1" in text
    assert "# TYPE netpol_guard_audit_findings gauge" in text


def test_gauge_file_is_replaced_whole(tmp_path):
    write_gauges(str(tmp_path), {"a": 1.0})
    write_gauges(str(tmp_path), {"b": 2.0})
    assert read_gauges(str(tmp_path)) == {"b": 2.0}
    assert read_gauges(str(tmp_path / "missing")) == {}


def test_a_namespace_labeled_for_isolation_without_its_managed_policies_is_reported_until_they_exist(setup):
    from tests.test_audit_core import netpol
    view, rec, api, events, state, loop, _ = setup
    loop.step()
    rec.upsert(Namespace("locked", {"kubernetes.io/metadata.name": "locked", "netpol-guard.io/isolate": "ingress"}))
    settle(loop)
    rows = api.store[("policyreports", "locked", "netpol-guard")]["results"]
    assert [(r["policy"], r["rule"], r["result"]) for r in rows] == [
        ("locked/netpol-guard-default-deny", "isolation-policy-missing", "fail")]
    assert "labeled netpol-guard.io/isolate=ingress, but netpol-guard-default-deny is not there" in rows[0]["message"]
    assert rows[0]["properties"]["cause"] == "Namespace locked: label netpol-guard.io/isolate (absent) -> 'ingress'"
    managed = netpol("locked", "netpol-guard-default-deny", "  podSelector: {}\n  policyTypes: [Ingress]\n")
    rec.upsert(managed)
    settle(loop)
    rows = api.store[("policyreports", "locked", "netpol-guard")]["results"]
    assert [r["rule"] for r in rows] == ["all-rules"]
    # deleted again: the cause is now the deletion, not the old label change
    rec.delete("NetworkPolicy", "locked", "netpol-guard-default-deny")
    settle(loop)
    rows = api.store[("policyreports", "locked", "netpol-guard")]["results"]
    assert [(r["rule"], r["properties"].get("cause")) for r in rows] == [
        ("isolation-policy-missing", "NetworkPolicy locked/netpol-guard-default-deny deleted")]


class Rbac:
    """read_cluster_role of RbacAuthorizationV1Api: the chart's ClusterRole, or 404/403."""

    def __init__(self, uid="0a1b2c3d-0000-4000-8000-000000000001", fail=None):
        self.uid, self.fail = uid, fail

    def read_cluster_role(self, name, _request_timeout=None):
        if self.fail:
            raise self.fail
        from types import SimpleNamespace
        return SimpleNamespace(metadata=SimpleNamespace(name=name, uid=self.uid))


def owned_loop(view, rec, api, rbac):
    return AuditLoop(view, rec, DEFAULT, ReportWriter(None, api=api, owner_cluster_role="netpol-guard", rbac_api=rbac),
                     Events(), is_leader=lambda: True, ready=lambda: True, debounce=0.3, max_delay=2.0)


def test_every_report_is_owned_by_the_charts_cluster_role_so_uninstall_deletes_it(setup):
    view, rec, api, _, _, _, _ = setup
    loop = owned_loop(view, rec, api, Rbac())
    loop.step()
    owner = [{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "name": "netpol-guard",
              "uid": "0a1b2c3d-0000-4000-8000-000000000001"}]
    assert api.store and all(r["metadata"]["ownerReferences"] == owner for r in api.store.values())
    assert ("clusterpolicyreports", "", "netpol-guard") in api.store


def test_reports_written_before_they_had_an_owner_are_rewritten_once_with_it(setup):
    view, rec, api, _, _, loop, _ = setup
    loop.step()  # an agent without an owner configured (the version before)
    assert not any("ownerReferences" in r["metadata"] for r in api.store.values())
    before = api.writes
    new = owned_loop(view, rec, api, Rbac())
    new.step()
    assert api.writes - before == len(api.store)  # each once
    assert all(r["metadata"]["ownerReferences"][0]["kind"] == "ClusterRole" for r in api.store.values())
    again = owned_loop(view, rec, api, Rbac())
    again.step()
    assert api.writes - before == len(api.store)  # a takeover rewrites nothing


def test_an_owner_that_cannot_be_read_leaves_the_reports_unowned_not_unwritten(setup, caplog):
    view, rec, api, _, _, _, _ = setup
    err = NotFound()
    err.status = 403
    loop = owned_loop(view, rec, api, Rbac(fail=err))
    loop.step()
    assert api.store and not any("ownerReferences" in r["metadata"] for r in api.store.values())
    assert "written without an owner: ClusterRole netpol-guard could not be read (403)" in caplog.text


def test_the_lag_histogram_has_buckets_up_to_minutes_and_request_latency_keeps_its_own(tmp_path):
    metrics = Metrics(str(tmp_path))
    for lag in (0.3, 1.2, 4.0, 45.0, 90.0, 400.0):  # debounce, maxDelay, a burst behind a full re-check
        metrics.observe("netpol_guard_audit_lag_seconds", {}, lag)
    metrics.record_decision("validate", "CREATE", "allow", 0.004)
    text = metrics.render({})

    def bucket(name, le, labels=""):
        prefix = f'{name}_bucket{{{labels}le="{le}"}} '
        [line] = [ln for ln in text.splitlines() if ln.startswith(prefix)]
        return float(line[len(prefix):])

    lag = "netpol_guard_audit_lag_seconds"
    assert [bucket(lag, le) for le in ("0.5", "2.5", "5.0", "60.0", "120.0", "600.0", "+Inf")] == [1, 2, 3, 4, 5, 6, 6]
    assert f'{lag}_bucket{{le="0.001"}}' not in text
    req = "netpol_guard_request_duration_seconds"
    assert bucket(req, "0.005", 'endpoint="validate",') == 1 and bucket(req, "2.5", 'endpoint="validate",') == 1
    assert f'{req}_bucket{{endpoint="validate",le="600.0"}}' not in text
