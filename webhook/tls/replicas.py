"""Which certificate does each ready replica serve? Ask it: a TLS handshake.

During a CA rotation the leader may drop the old CA from the webhooks' caBundle only
once no replica the API server can reach still serves a certificate from it. The
replicas the API server reaches are the Service's ready endpoints; we derive them
from the Service's selector and the ready Pods (the same rule the endpoints
controller applies), resolve the Service's targetPort on each Pod (a named port is
looked up per Pod, as Kubernetes does), and dial each one. The handshake shows what
the replica's TLS stack really serves after the kubelet's volume update and the
server's hot reload, which a replica's own report could not prove.

Endpoint selection is pure (dicts in, addresses out); ``served_certificate`` is the
only network code and is bounded by a timeout.
"""
from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional

from cryptography import x509

from webhook.tls.plan import Served


@dataclass(frozen=True)
class Endpoint:
    replica: str  # pod name
    host: str
    port: int


def _service_port(service: Mapping[str, Any]) -> Mapping[str, Any]:
    ports = (service.get("spec") or {}).get("ports") or []
    if not ports:
        raise ValueError(f"Service {service.get('metadata', {}).get('name')} has no ports")
    # The chart's Service has one port, named https; prefer that name if there are more.
    return next((p for p in ports if p.get("name") == "https"), ports[0])


def _is_ready(pod: Mapping[str, Any]) -> bool:
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    if meta.get("deletionTimestamp") or not status.get("podIP"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def _target_port(pod: Mapping[str, Any], port: Mapping[str, Any]) -> Optional[int]:
    target = port.get("targetPort", port.get("port"))
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isascii() and target.isdigit():
        return int(target)
    for container in (pod.get("spec") or {}).get("containers") or []:
        for cp in container.get("ports") or []:
            if cp.get("name") == target and (cp.get("protocol") or "TCP") == "TCP":
                return int(cp["containerPort"])
    return None


def selector_string(service: Mapping[str, Any]) -> str:
    selector = (service.get("spec") or {}).get("selector") or {}
    if not selector:
        # A selector-less Service has hand-made endpoints we cannot see with Pod reads.
        raise ValueError(f"Service {service.get('metadata', {}).get('name')} has no selector")
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


def ready_endpoints(service: Mapping[str, Any], pods: Iterable[Mapping[str, Any]]) -> list[Endpoint]:
    """The (pod, address, port) the Service sends traffic to: its ready, selected pods."""
    selector = (service.get("spec") or {}).get("selector") or {}
    port = _service_port(service)
    found = []
    for pod in pods:
        labels = (pod.get("metadata") or {}).get("labels") or {}
        if not all(labels.get(k) == v for k, v in selector.items()) or not _is_ready(pod):
            continue
        number = _target_port(pod, port)
        if number is not None:
            found.append(Endpoint(pod["metadata"]["name"], pod["status"]["podIP"], number))
    return sorted(found, key=lambda e: e.replica)


def served_certificate(endpoint: Endpoint, server_name: str, timeout: float = 3.0) -> Served:
    """Handshake with one replica and return the certificate it presents.

    No verification here on purpose: we want to see whatever is served, including a
    certificate from a CA we no longer trust; comparing it is the caller's job.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((endpoint.host, endpoint.port), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=server_name) as tls:
                der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as exc:
        return Served(endpoint.replica, None, f"{endpoint.host}:{endpoint.port}: {exc}")
    if not der:
        return Served(endpoint.replica, None, "no certificate presented")
    try:
        return Served(endpoint.replica, x509.load_der_x509_certificate(der))
    except ValueError as exc:
        return Served(endpoint.replica, None, f"unreadable certificate: {exc}")
