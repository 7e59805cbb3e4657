"""Kubernetes objects reduced to what the checks need: namespaces, pods (or pod templates),
services. Pure functions from API dicts; shared by the file loader and the live cache."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

NAME_LABEL = "kubernetes.io/metadata.name"

# kind -> path to the pod template spec inside the object, for workloads
WORKLOAD_TEMPLATES: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}


@dataclass(frozen=True)
class ContainerPort:
    port: int
    protocol: str = "TCP"
    name: str | None = None


@dataclass(frozen=True)
class Namespace:
    name: str
    labels: Mapping[str, str]
    terminating: bool = False


@dataclass(frozen=True, eq=False)
class Pod:
    """A pod, or the pods a workload's template stands for (kind says which)."""

    namespace: str
    name: str
    labels: Mapping[str, str]
    ports: tuple[ContainerPort, ...] = ()
    ips: tuple[str, ...] = ()
    kind: str = "Pod"

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def ref(self) -> str:
        """How messages name it: pods by name, workloads as kind/name."""
        return self.key if self.kind == "Pod" else f"{self.namespace}/{self.kind.lower()}/{self.name}"

    def named_port(self, name: str, protocol: str) -> int | None:
        for p in self.ports:
            if p.name == name and p.protocol == protocol:
                return p.port
        return None


@dataclass(frozen=True)
class ServicePort:
    port: int
    target_port: int | str
    protocol: str = "TCP"
    name: str | None = None


@dataclass(frozen=True)
class Service:
    namespace: str
    name: str
    selector: Mapping[str, str]
    ports: tuple[ServicePort, ...] = ()
    cluster_ips: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    m = obj.get("metadata")
    return m if isinstance(m, Mapping) else {}


def _str_map(v: Any) -> dict[str, str]:
    if not isinstance(v, Mapping):
        return {}
    return {str(k): str(x) for k, x in v.items() if x is not None}


def namespace_from(obj: Mapping[str, Any]) -> Namespace:
    meta = _meta(obj)
    name = str(meta.get("name", ""))
    labels = _str_map(meta.get("labels"))
    labels.setdefault(NAME_LABEL, name)  # the API server sets it on every namespace
    phase = (obj.get("status") or {}).get("phase") if isinstance(obj.get("status"), Mapping) else None
    return Namespace(name, labels, terminating=bool(meta.get("deletionTimestamp")) or phase == "Terminating")


def _container_ports(pod_spec: Any) -> tuple[ContainerPort, ...]:
    if not isinstance(pod_spec, Mapping):
        return ()
    out = []
    for group in ("containers", "initContainers"):
        for c in pod_spec.get(group) or ():
            if not isinstance(c, Mapping):
                continue
            for p in c.get("ports") or ():
                if isinstance(p, Mapping) and isinstance(p.get("containerPort"), int):
                    out.append(ContainerPort(p["containerPort"], str(p.get("protocol") or "TCP"),
                                             p.get("name") if isinstance(p.get("name"), str) else None))
    return tuple(out)


def pod_from(obj: Mapping[str, Any], default_namespace: str = "default") -> Pod:
    meta = _meta(obj)
    status = obj.get("status") if isinstance(obj.get("status"), Mapping) else {}
    ips = [p.get("ip") for p in status.get("podIPs") or () if isinstance(p, Mapping) and p.get("ip")]
    if not ips and status.get("podIP"):
        ips = [status["podIP"]]
    return Pod(
        namespace=str(meta.get("namespace") or default_namespace),
        name=str(meta.get("name") or meta.get("generateName") or ""),
        labels=_str_map(meta.get("labels")),
        ports=_container_ports(obj.get("spec")),
        ips=tuple(str(i) for i in ips),
    )


def workload_from(obj: Mapping[str, Any], default_namespace: str = "default") -> Pod | None:
    """The pods a workload stands for, as one Pod of kind=<workload kind>; None if it has no template."""
    kind = obj.get("kind")
    path = WORKLOAD_TEMPLATES.get(kind)  # type: ignore[arg-type]
    if not path:
        return None
    tpl: Any = obj
    for step in path:
        tpl = tpl.get(step) if isinstance(tpl, Mapping) else None
    if not isinstance(tpl, Mapping):
        return None
    meta = _meta(obj)
    tmeta = tpl.get("metadata") if isinstance(tpl.get("metadata"), Mapping) else {}
    return Pod(
        namespace=str(meta.get("namespace") or default_namespace),
        name=str(meta.get("name") or ""),
        labels=_str_map(tmeta.get("labels")),
        ports=_container_ports(tpl.get("spec")),
        kind=str(kind),
    )


def service_from(obj: Mapping[str, Any], default_namespace: str = "default") -> Service:
    meta = _meta(obj)
    spec = obj.get("spec") if isinstance(obj.get("spec"), Mapping) else {}
    ports = []
    for p in spec.get("ports") or ():
        if isinstance(p, Mapping) and isinstance(p.get("port"), int):
            tp = p.get("targetPort", p["port"])
            ports.append(ServicePort(p["port"], tp if isinstance(tp, (int, str)) else p["port"],
                                     str(p.get("protocol") or "TCP"), p.get("name")))
    ips = [i for i in (spec.get("clusterIPs") or [spec.get("clusterIP")]) if i and i != "None"]
    return Service(str(meta.get("namespace") or default_namespace), str(meta.get("name") or ""),
                   _str_map(spec.get("selector")), tuple(ports), tuple(ips))
