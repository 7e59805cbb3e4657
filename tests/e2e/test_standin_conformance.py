"""The stand-in (tests/kubeapi) and the real kube-apiserver answer the same API interactions alike.

The unit tier runs the live cache, the isolation controller, leader election and the certificate
manager against tests/kubeapi, because only a stand-in can inject faults on demand (a 500 in the
middle of a list, a dropped watch, a slow answer). Those tests are only worth what the stand-in's
semantics are worth: every test here runs the same raw HTTP interaction against both servers and
asserts the same outcome, so the stand-in cannot drift from the real server unnoticed.

Covered: optimistic concurrency (409 Conflict on a stale resourceVersion, 409 AlreadyExists),
label selectors on lists, watches replaying ADDED/MODIFIED/DELETED from a resourceVersion, a
selector watch turning objects that enter/leave the selector into ADDED/DELETED, 410 Expired for
a watch from a resourceVersion the server no longer holds, and the namespace rule for Events.

How each server is made to forget a resourceVersion differs (the interaction then does not):
the stand-in's compact() drops its history; the real server's watch cache keeps serving old
resourceVersions after an etcd compaction, and only forgets them when it restarts (its window
then begins at the current revision) - see tests/e2e/test_live_cache.py.
"""
from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
import uuid
from typing import Callable, Optional

import pytest

from tests.kubeapi import KubeAPI

CM = "/api/v1/namespaces/{ns}/configmaps"


class Server:
    """One API server, spoken to over raw HTTP(S) the same way for both."""

    def __init__(self, name: str, url: str, context: Optional[ssl.SSLContext], forget: Callable[[], None]):
        self.name, self.url, self.context, self._forget = name, url, context, forget

    def request(self, method: str, path: str, body=None, content_type: str = "application/json") -> tuple[int, dict]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": content_type, "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, context=self.context, timeout=30) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def watch(self, path: str, resource_version: str, selector: str = "", seconds: int = 2) -> list[dict]:
        """A watch from `resource_version`, ended by the server after `seconds`: every event line."""
        query = f"?watch=1&resourceVersion={resource_version}&timeoutSeconds={seconds}"
        if selector:
            query += f"&labelSelector={urllib.request.quote(selector)}"
        req = urllib.request.Request(self.url + path + query, headers={"Accept": "application/json"})
        with urllib.request.urlopen(req, context=self.context, timeout=seconds + 30) as resp:
            assert resp.status == 200
            return [json.loads(line) for line in resp.read().splitlines() if line.strip()]

    def forget_history(self) -> None:
        """Make every resourceVersion before now unservable for watches."""
        self._forget()

    def namespace(self) -> str:
        name = f"conf-{uuid.uuid4().hex[:8]}"
        status, body = self.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
        assert status == 201, body
        return name


@pytest.fixture(scope="module", params=["real", "stand-in"])
def server(request):
    if request.param == "real":
        cp = request.getfixturevalue("control_plane")

        def forget():
            cp.compact_etcd()
            cp.restart_apiserver()
        yield Server("real", cp.url, cp.ssl_context(), forget)
    else:
        api = KubeAPI().start()
        try:
            api.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}})
            yield Server("stand-in", api.url, None, api.compact)
        finally:
            api.stop()


def configmap(name: str, labels: Optional[dict] = None, value: str = "1") -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels or {}},
            "data": {"v": value}}


def test_an_update_carrying_a_stale_resource_version_is_a_409_conflict(server):
    ns = server.namespace()
    status, created = server.request("POST", CM.format(ns=ns), configmap("c"))
    assert status == 201
    stale = created["metadata"]["resourceVersion"]
    status, updated = server.request("PUT", CM.format(ns=ns) + "/c", {**created, "data": {"v": "2"}})
    assert status == 200 and int(updated["metadata"]["resourceVersion"]) > int(stale)
    status, body = server.request("PUT", CM.format(ns=ns) + "/c", {**created, "data": {"v": "3"}})
    assert status == 409, body
    assert (body["kind"], body["reason"], body["code"]) == ("Status", "Conflict", 409)
    assert "the object has been modified" in body["message"]
    status, body = server.request("POST", CM.format(ns=ns), configmap("c"))
    assert (status, body["reason"]) == (409, "AlreadyExists")
    assert body["details"] == {"name": "c", "kind": "configmaps"}


def test_label_selectors_select_the_same_objects(server):
    ns = server.namespace()
    for name, labels in (("a", {"app": "web", "env": "prod"}), ("b", {"app": "web", "env": "dev"}),
                         ("c", {"app": "db"}), ("d", {})):
        assert server.request("POST", CM.format(ns=ns), configmap(name, labels))[0] == 201
    expected = {"app=web": ["a", "b"], "app!=web": ["c", "d"], "app in (web,db)": ["a", "b", "c"],
                "!app": ["d"], "app": ["a", "b", "c"], "env notin (prod)": ["b", "c", "d"],
                "app=web,env=dev": ["b"], "": ["a", "b", "c", "d"]}
    for selector, names in expected.items():
        status, body = server.request("GET", CM.format(ns=ns) + f"?labelSelector={urllib.request.quote(selector)}")
        assert status == 200
        got = sorted(i["metadata"]["name"] for i in body["items"] if i["metadata"]["name"] != "kube-root-ca.crt")
        assert got == names, f"{server.name}: {selector!r}"
    status, body = server.request("GET", CM.format(ns=ns) + "?labelSelector=" + urllib.request.quote("app in (web"))
    assert status == 400 and body["reason"] == "BadRequest", body


def test_a_watch_from_a_resource_version_replays_added_modified_deleted(server):
    ns = server.namespace()
    status, listed = server.request("GET", CM.format(ns=ns))
    start = listed["metadata"]["resourceVersion"]
    server.request("POST", CM.format(ns=ns), configmap("w"))
    server.request("PATCH", CM.format(ns=ns) + "/w", {"data": {"v": "2"}}, "application/merge-patch+json")
    assert server.request("DELETE", CM.format(ns=ns) + "/w")[0] == 200
    events = [e for e in server.watch(CM.format(ns=ns), start) if e["object"]["metadata"]["name"] == "w"]
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"], events
    versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert versions == sorted(versions) and len(set(versions)) == 3
    assert events[1]["object"]["data"] == {"v": "2"}
    assert all(e["object"]["kind"] == "ConfigMap" for e in events)


def test_a_selector_watch_sees_objects_entering_and_leaving_it_as_added_and_deleted(server):
    ns = server.namespace()
    status, listed = server.request("GET", CM.format(ns=ns))
    start = listed["metadata"]["resourceVersion"]
    merge = "application/merge-patch+json"
    server.request("POST", CM.format(ns=ns), configmap("s", {"app": "other"}))
    server.request("PATCH", CM.format(ns=ns) + "/s", {"metadata": {"labels": {"app": "web"}}}, merge)
    server.request("PATCH", CM.format(ns=ns) + "/s", {"data": {"v": "2"}}, merge)
    server.request("PATCH", CM.format(ns=ns) + "/s", {"metadata": {"labels": {"app": "gone"}}}, merge)
    events = server.watch(CM.format(ns=ns), start, selector="app=web")
    # leaving the selector: DELETED carries the object as it last matched, at the change's version
    assert [(e["type"], e["object"]["metadata"]["labels"]["app"], e["object"]["data"]["v"]) for e in events] == [
        ("ADDED", "web", "1"), ("MODIFIED", "web", "2"), ("DELETED", "web", "2")], events
    versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert versions == sorted(versions) and len(set(versions)) == 3, versions
    status, now = server.request("GET", CM.format(ns=ns) + "/s")
    assert now["metadata"]["resourceVersion"] == events[-1]["object"]["metadata"]["resourceVersion"]


def test_a_watch_from_a_resource_version_the_server_no_longer_holds_gets_410_expired(server):
    ns = server.namespace()
    status, listed = server.request("GET", CM.format(ns=ns))
    old = listed["metadata"]["resourceVersion"]
    server.request("POST", CM.format(ns=ns), configmap("x"))
    server.forget_history()
    events = server.watch(CM.format(ns=ns), old)
    assert len(events) == 1, events
    error = events[0]
    assert error["type"] == "ERROR"
    assert (error["object"]["kind"], error["object"]["code"], error["object"]["reason"]) == ("Status", 410, "Expired")
    assert error["object"]["message"].startswith("too old resource version: ")
    # and a list gives the version to start again from
    status, listed = server.request("GET", CM.format(ns=ns))
    assert status == 200 and [i["metadata"]["name"] for i in listed["items"]
                              if i["metadata"]["name"] != "kube-root-ca.crt"] == ["x"]
    assert server.watch(CM.format(ns=ns), listed["metadata"]["resourceVersion"], seconds=1) == []


def test_an_event_about_a_namespace_is_refused_outside_default(server):
    ns = server.namespace()
    event = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": f"{ns}.1"},
             "involvedObject": {"apiVersion": "v1", "kind": "Namespace", "name": ns},
             "reason": "IsolationCreated", "message": "m", "type": "Normal",
             "reportingComponent": "netpol-guard", "reportingInstance": "pod-a", "action": "IsolationCreated",
             "eventTime": "2026-01-01T00:00:00.000000Z"}
    status, body = server.request("POST", f"/api/v1/namespaces/{ns}/events", event)
    assert (status, body["reason"]) == (422, "Invalid"), body
    assert "does not match event.namespace" in body["message"]
    status, body = server.request("POST", "/api/v1/namespaces/default/events", event)
    assert status == 201, body


def test_a_delete_with_a_stale_resource_version_precondition_is_a_409_conflict(server):
    ns = server.namespace()
    status, created = server.request("POST", CM.format(ns=ns), configmap("p"))
    stale = created["metadata"]["resourceVersion"]
    server.request("PATCH", CM.format(ns=ns) + "/p", {"data": {"v": "2"}}, "application/merge-patch+json")
    status, body = server.request("DELETE", CM.format(ns=ns) + "/p",
                                  {"kind": "DeleteOptions", "apiVersion": "v1",
                                   "preconditions": {"resourceVersion": stale}})
    assert (status, body["reason"]) == (409, "Conflict"), body
    assert server.request("GET", CM.format(ns=ns) + "/p")[0] == 200


def test_a_dry_run_create_answers_the_object_and_stores_nothing(server):
    ns = server.namespace()
    status, body = server.request("POST", CM.format(ns=ns) + "?dryRun=All", configmap("dry"))
    assert status == 201 and body["metadata"]["name"] == "dry" and body["metadata"].get("uid"), body
    assert server.request("GET", CM.format(ns=ns) + "/dry")[0] == 404


def test_list_items_carry_no_kind_but_watch_objects_do_and_namespaces_get_their_name_label(server):
    ns = server.namespace()
    server.request("POST", CM.format(ns=ns), configmap("k"))
    status, listed = server.request("GET", CM.format(ns=ns))
    item = next(i for i in listed["items"] if i["metadata"]["name"] == "k")
    assert "kind" not in item and "apiVersion" not in item
    assert (listed["kind"], listed["apiVersion"]) == ("ConfigMapList", "v1")
    status, namespace = server.request("GET", f"/api/v1/namespaces/{ns}")
    assert namespace["metadata"]["labels"]["kubernetes.io/metadata.name"] == ns
    assert namespace["status"]["phase"] == "Active" and namespace["spec"]["finalizers"] == ["kubernetes"]
