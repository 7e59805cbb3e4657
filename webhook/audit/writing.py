"""The audit's writes: PolicyReports (create, replace, delete) and Events on NetworkPolicies.

Only content changes are written. The writer remembers the content of every report it wrote
or found (listing its own reports, by label, when it starts leading), so a restart or a
leader change rewrites nothing that is already right, and a steady state makes no writes.
"""
from __future__ import annotations

import datetime as _dt
import logging
import time
from typing import Any, Iterable, Optional

from webhook.audit import report as rpt

log = logging.getLogger(__name__)

GROUP, VERSION = "wgpolicyk8s.io", "v1alpha2"
SELECTOR = "app.kubernetes.io/managed-by=netpol-guard"
EVENT_MESSAGE_MAX = 1024  # the API server cuts Event messages at 1 KiB anyway


def _status(exc: BaseException) -> Optional[int]:
    return getattr(exc, "status", None)


class ReportWriter:
    """PolicyReports per namespace and the ClusterPolicyReport, through the API server."""

    def __init__(self, api_client: Any, request_timeout: float = 10.0, api: Any = None,
                 owner_cluster_role: str = "", rbac_api: Any = None):
        """`api`: a CustomObjectsApi (built from api_client when None); `owner_cluster_role`: the
        ClusterRole every report names as its owner (config.audit.ownerClusterRole; "" none),
        read through `rbac_api` (an RbacAuthorizationV1Api, built when None)."""
        import kubernetes.client
        if api is None:
            api = kubernetes.client.CustomObjectsApi(api_client)
        if owner_cluster_role and rbac_api is None:
            rbac_api = kubernetes.client.RbacAuthorizationV1Api(api_client)
        self._api = api
        self._rbac = rbac_api
        self.owner_cluster_role = owner_cluster_role
        # The ownerReference the reports carry (None: no owner configured, or it could not be read)
        self.owner: Optional[dict] = None
        self._timeout = request_timeout
        self.known: dict[tuple[str, str], str] = {}  # (namespace or "", name) -> content written/found
        # (namespace or "", name) -> content as rendered, before what the stored report knew
        # (first-seen times, causes) was carried over: the same rendering needs no new look
        self.rendered: dict[tuple[str, str], str] = {}
        self.writes = 0
        self.errors = 0

    # --- what is there --------------------------------------------------------------------
    def load_existing(self) -> None:
        """Learn the reports netpol-guard wrote before (any replica): they are not rewritten
        when their content is already right, and stale ones are deleted."""
        self.known.clear()
        self.rendered.clear()
        self.owner = self._read_owner()
        got = self._api.list_cluster_custom_object(GROUP, VERSION, "policyreports", label_selector=SELECTOR,
                                                   _request_timeout=self._timeout)
        for item in got.get("items") or []:
            meta = item.get("metadata") or {}
            self.known[(meta.get("namespace") or "", meta.get("name") or "")] = rpt.content(item)
        got = self._api.list_cluster_custom_object(GROUP, VERSION, "clusterpolicyreports", label_selector=SELECTOR,
                                                   _request_timeout=self._timeout)
        for item in got.get("items") or []:
            self.known[("", (item.get("metadata") or {}).get("name") or "")] = rpt.content(item)

    def _read_owner(self) -> Optional[dict]:
        """The owner's ownerReference. Reports owned by the chart's ClusterRole are deleted by the
        garbage collector with it - also the cluster-scoped report no namespace deletion removes.
        Without it (not found, not permitted) reports are written unowned, and the log says why."""
        name = self.owner_cluster_role
        if not name:
            return None
        try:
            role = self._rbac.read_cluster_role(name, _request_timeout=self._timeout)
        except Exception as exc:  # noqa: BLE001 - the reports matter more than their owner
            log.warning("audit: reports are written without an owner: ClusterRole %s could not be read (%s); "
                        "they stay after uninstall", name, _status(exc) or exc)
            return None
        uid = getattr(getattr(role, "metadata", None), "uid", None)
        if not uid:
            return None
        # blockOwnerDeletion stays unset: nothing needs to wait for the reports to go first.
        return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "name": name, "uid": uid}

    def _owned(self, body: dict) -> dict:
        if self.owner is None:
            return body
        return {**body, "metadata": {**body["metadata"], "ownerReferences": [dict(self.owner)]}}

    def namespaces(self) -> set[str]:
        return {ns for ns, _ in set(self.known) | set(self.rendered) if ns}

    # --- writing --------------------------------------------------------------------------
    def sync(self, namespace: str, reports: list[dict]) -> int:
        """Make the namespace's reports exactly `reports` (none: delete them); the writes made."""
        wanted = {r["metadata"]["name"]: r for r in reports}
        writes = 0
        for name, body in wanted.items():
            writes += self._put(namespace, name, body)
        for (ns, name) in [k for k in set(self.known) | set(self.rendered) if k[0] == namespace and k[1] not in wanted]:
            writes += self._delete(ns, name)
        return writes

    def sync_cluster(self, reports: list[dict]) -> int:
        wanted = {r["metadata"]["name"]: r for r in reports}
        writes = sum(self._put("", name, body) for name, body in wanted.items())
        for (ns, name) in [k for k in set(self.known) | set(self.rendered) if k[0] == "" and k[1] not in wanted]:
            writes += self._delete("", name)
        return writes

    def _put(self, namespace: str, name: str, body: dict) -> int:
        body = self._owned(body)
        content = rpt.content(body)
        key = (namespace, name)
        if self.known.get(key) == content or self.rendered.get(key) == content:
            return 0
        rendered = content
        plural = "policyreports" if namespace else "clusterpolicyreports"
        try:
            try:
                current = (self._api.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name,
                                                                  _request_timeout=self._timeout)
                           if namespace else
                           self._api.get_cluster_custom_object(GROUP, VERSION, plural, name,
                                                               _request_timeout=self._timeout))
            except Exception as exc:  # noqa: BLE001
                if _status(exc) != 404:
                    raise
                current = None
            body = rpt.keep_timestamps(body, current)
            content = rpt.content(body)
            if current is not None and rpt.content(current) == content:
                self.known[key] = content  # already right (written before, by us or another leader)
                self.rendered[key] = rendered
                return 0
            if current is None:
                if namespace:
                    self._api.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body,
                                                              _request_timeout=self._timeout)
                else:
                    self._api.create_cluster_custom_object(GROUP, VERSION, plural, body,
                                                           _request_timeout=self._timeout)
            else:
                body = {**body, "metadata": {**body["metadata"],
                                             "resourceVersion": current["metadata"]["resourceVersion"]}}
                if namespace:
                    self._api.replace_namespaced_custom_object(GROUP, VERSION, namespace, plural, name, body,
                                                               _request_timeout=self._timeout)
                else:
                    self._api.replace_cluster_custom_object(GROUP, VERSION, plural, name, body,
                                                            _request_timeout=self._timeout)
        except Exception as exc:  # noqa: BLE001 - the next pass (or the periodic full one) retries
            if namespace and _status(exc) in (403, 404) and "terminat" in str(getattr(exc, "body", "") or exc):
                self.known.pop(key, None)  # the namespace is going away, and its reports with it
                return 0
            self.errors += 1
            self.known.pop(key, None)
            self.rendered.pop(key, None)
            log.warning("audit: could not write %s %s/%s: %s", plural, namespace, name, _status(exc) or exc)
            return 0
        self.known[key] = content
        self.rendered[key] = rendered
        self.writes += 1
        return 1

    def _delete(self, namespace: str, name: str) -> int:
        try:
            if namespace:
                self._api.delete_namespaced_custom_object(GROUP, VERSION, namespace, "policyreports", name,
                                                          _request_timeout=self._timeout)
            else:
                self._api.delete_cluster_custom_object(GROUP, VERSION, "clusterpolicyreports", name,
                                                       _request_timeout=self._timeout)
        except Exception as exc:  # noqa: BLE001
            if _status(exc) != 404:
                self.errors += 1
                log.warning("audit: could not delete report %s/%s: %s", namespace, name, _status(exc) or exc)
                return 0
            self.known.pop((namespace, name), None)
            self.rendered.pop((namespace, name), None)
            return 0  # already gone (its namespace was deleted)
        self.known.pop((namespace, name), None)
        self.rendered.pop((namespace, name), None)
        self.writes += 1
        return 1


class PolicyEvents:
    """core/v1 Events on a NetworkPolicy when one of its findings appears or clears."""

    def __init__(self, api_client: Any, instance: str = "", request_timeout: float = 10.0):
        import kubernetes.client

        self._core = kubernetes.client.CoreV1Api(api_client)
        self._instance = instance or "netpol-guard"
        self._timeout = request_timeout
        self.recorded = 0
        self.failed = 0

    def record(self, namespace: str, name: str, uid: Optional[str], type_: str, reason: str, message: str) -> None:
        now = _dt.datetime.now(_dt.timezone.utc)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        if len(message) > EVENT_MESSAGE_MAX:
            message = message[:EVENT_MESSAGE_MAX - 3] + "..."
        ref = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "namespace": namespace, "name": name}
        if uid:
            ref["uid"] = uid
        body = {"apiVersion": "v1", "kind": "Event",
                "metadata": {"name": f"{name}.{time.time_ns():x}", "namespace": namespace},
                "involvedObject": ref, "reason": reason, "message": message, "type": type_,
                "source": {"component": "netpol-guard-audit"}, "reportingComponent": "netpol-guard",
                "reportingInstance": self._instance, "action": "Audit",
                "firstTimestamp": stamp, "lastTimestamp": stamp,
                "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "count": 1}
        try:
            resp = self._core.create_namespaced_event(namespace, body, _preload_content=False,
                                                      _request_timeout=self._timeout)
            resp.release_conn()
            self.recorded += 1
        except Exception as exc:  # noqa: BLE001 - an Event explains; it is not the work
            self.failed += 1
            log.warning("audit: could not record event on %s/%s: %s", namespace, name, _status(exc) or exc)


def event_lines(delta: Any) -> Iterable[tuple[str, str, str]]:
    """(type, reason, message) for each finding of a PolicyDelta that appeared or cleared."""
    cause = rpt.causes_text(delta.causes)
    suffix = f" (cause: {cause})" if cause else ""
    for f in delta.appeared:
        yield ("Warning" if f.severity in ("error", "warning") else "Normal", "FindingAppeared",
               f"{f.severity} [{f.rule}] {f.path}: {f.message}{suffix}")
    for f in delta.cleared:
        yield ("Normal", "FindingCleared", f"cleared [{f.rule}] {f.path}{suffix}")
