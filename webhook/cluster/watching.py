"""Raw list and watch calls through the kubernetes client, as JSON dicts.

This is the only module that imports the kubernetes client.
It uses the client for what it is good at - configuration, authentication, TLS, URL building
and connection pooling - and asks for undecoded responses (`_preload_content=False`): turning
50,000 pods into the client's model objects costs several times the memory and time of plain
`json.loads`, and the cache keeps only a few fields of each object anyway.
"""
from __future__ import annotations

import functools
import json
import socket
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import kubernetes.client
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines


class WatchGone(Exception):
    """The resourceVersion we asked for is no longer in the server's history (HTTP 410): relist."""


class WatchFailed(Exception):
    """The server ended a watch with an ERROR event other than 410, or sent something unreadable."""


@dataclass(frozen=True)
class ResourceKind:
    """One watched collection: its name in stats and how to list it cluster-wide."""

    name: str  # "pods"; used as the stats key
    api: str  # "core", "networking", or "custom" (a CRD's resource, listed by group/version/plural)
    method: str  # the client's list-all method
    group: str = ""  # custom only: the API group and version serving `name` (the plural)
    version: str = ""
    kind: str = ""  # custom only: the object kind, for messages and list items without one


KINDS: tuple[ResourceKind, ...] = (
    ResourceKind("namespaces", "core", "list_namespace"),
    ResourceKind("pods", "core", "list_pod_for_all_namespaces"),
    ResourceKind("services", "core", "list_service_for_all_namespaces"),
    ResourceKind("networkpolicies", "networking", "list_network_policy_for_all_namespaces"),
)

# Admin network policies (kubernetes-sigs/network-policy-api) are CRDs: many clusters do not
# serve them. They are followed only where discovery (served_resources) finds them.
ADMIN_POLICY_KINDS: tuple[ResourceKind, ...] = (
    ResourceKind("adminnetworkpolicies", "custom", "list_cluster_custom_object",
                 "policy.networking.k8s.io", "v1alpha1", "AdminNetworkPolicy"),
    ResourceKind("baselineadminnetworkpolicies", "custom", "list_cluster_custom_object",
                 "policy.networking.k8s.io", "v1alpha1", "BaselineAdminNetworkPolicy"),
    ResourceKind("clusternetworkpolicies", "custom", "list_cluster_custom_object",
                 "policy.networking.k8s.io", "v1alpha2", "ClusterNetworkPolicy"),
)


def make_api_client(client_or_config: Any) -> tuple[Any, bool]:
    """An ApiClient from an ApiClient or a Configuration; the bool says whether we own (and close) it."""
    if isinstance(client_or_config, kubernetes.client.ApiClient):
        return client_or_config, False
    if isinstance(client_or_config, kubernetes.client.Configuration):
        return kubernetes.client.ApiClient(client_or_config), True
    raise TypeError("LiveSource needs a kubernetes.client.ApiClient or Configuration, "
                    f"got {type(client_or_config).__name__}")


def default_api_client() -> tuple[Any, bool]:
    """In-cluster configuration when running in a pod, else the local kubeconfig."""
    import kubernetes.config

    config = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=config)
    except kubernetes.config.ConfigException:
        from webhook.cluster.kubeconfig import load_kubeconfig
        load_kubeconfig(config)
    return kubernetes.client.ApiClient(config), True


def http_status(exc: BaseException) -> int | None:
    """The HTTP status of a client error, None for transport errors."""
    if isinstance(exc, ApiException):
        return exc.status or None
    return None


class Lister:
    """List pages and open watch streams for the kinds in KINDS, as plain JSON."""

    def __init__(self, api_client: Any, *, connect_timeout: float = 5.0, list_timeout: float = 60.0):
        self._apis = {"core": kubernetes.client.CoreV1Api(api_client),
                      "networking": kubernetes.client.NetworkingV1Api(api_client),
                      "custom": kubernetes.client.CustomObjectsApi(api_client)}
        self.connect_timeout = connect_timeout
        self.list_timeout = list_timeout

    def _call(self, kind: ResourceKind) -> Callable[..., Any]:
        method = getattr(self._apis[kind.api], kind.method)
        if kind.api == "custom":
            return functools.partial(method, kind.group, kind.version, kind.name)
        return method

    def served_resources(self, group: str, version: str) -> set[str] | None:
        """The resource names the API server serves in group/version (discovery, which every
        authenticated user may read); None when it does not serve that group/version at all
        (404: the CRDs are not installed)."""
        try:
            resp = self._apis["custom"].get_api_resources(
                group, version, _preload_content=False, _request_timeout=(self.connect_timeout, self.list_timeout))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        try:
            body = json.loads(resp.data)
        except ValueError as exc:
            raise WatchFailed(f"discovering {group}/{version}: the response is not JSON: {exc}") from None
        finally:
            resp.release_conn()
        resources = body.get("resources") if isinstance(body, dict) else None
        return {str(r.get("name")) for r in resources or () if isinstance(r, dict)}

    def list_page(self, kind: ResourceKind, limit: int, continue_token: str | None) -> dict:
        """One page of a list: {"metadata": {"resourceVersion", "continue"?}, "items": [...]}.

        A 410 here means the continue token expired; the caller restarts the list."""
        kwargs: dict[str, Any] = {"limit": limit}
        if continue_token:
            kwargs["_continue"] = continue_token
        resp = self._call(kind)(_preload_content=False,
                                _request_timeout=(self.connect_timeout, self.list_timeout), **kwargs)
        try:
            body = json.loads(resp.data)
        except ValueError as exc:
            raise WatchFailed(f"listing {kind.name}: the response is not JSON: {exc}") from None
        finally:
            resp.release_conn()
        if not isinstance(body, dict) or not isinstance(body.get("items", []), list):
            raise WatchFailed(f"listing {kind.name}: the response is not a list object")
        return body

    def open_watch(self, kind: ResourceKind, resource_version: str, timeout_seconds: int,
                   read_timeout: float) -> "WatchStream":
        resp = self._call(kind)(watch=True, resource_version=resource_version, allow_watch_bookmarks=True,
                                timeout_seconds=timeout_seconds, _preload_content=False,
                                _request_timeout=(self.connect_timeout, read_timeout))
        return WatchStream(kind, resp)


class WatchStream:
    """An open watch: iterate for events (dicts with "type" and "object"); interrupt() from
    another thread wakes a blocked read at once (that is how stop() stays prompt)."""

    def __init__(self, kind: ResourceKind, resp: Any):
        self.kind = kind
        self._resp = resp

    def events(self) -> Iterator[dict]:
        for line in iter_resp_lines(self._resp):
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except ValueError:
                raise WatchFailed(f"watching {self.kind.name}: unreadable event line") from None
            if not isinstance(event, dict) or not isinstance(event.get("object"), dict):
                raise WatchFailed(f"watching {self.kind.name}: an event without an object")
            if event.get("type") == "ERROR":
                status = event["object"]
                if status.get("code") == 410:
                    raise WatchGone(status.get("message") or "410 Gone")
                raise WatchFailed(f"watching {self.kind.name}: {status.get('code')} "
                                  f"{status.get('reason')}: {status.get('message')}")
            yield event

    def interrupt(self) -> None:
        """Shut the socket down under a thread blocked reading it (close() alone may not wake it)."""
        resp = self._resp
        try:
            resp.shutdown()  # urllib3 >= 2.3
            return
        except Exception:
            pass
        try:  # older urllib3: reach the socket the same way kubernetes.watch.Watch.stop() does
            sock = getattr(getattr(resp, "connection", None), "sock", None)
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self) -> None:
        try:
            self._resp.close()
            self._resp.release_conn()
        except Exception:  # closing a dead connection must not mask why it died
            pass


__all__ = ["KINDS", "ADMIN_POLICY_KINDS", "ResourceKind", "Lister", "WatchStream", "WatchGone", "WatchFailed", "ApiException",
           "make_api_client", "default_api_client", "http_status"]
