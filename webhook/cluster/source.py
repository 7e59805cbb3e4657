"""Where the webhook's cluster view comes from: the interface every view source meets.

The admission edge never talks to the API server on the request path; it reads a
ClusterView that a *view source* keeps current. The sources:

- ``StaticSource``    a view built once (the base of the next two, and of benchmarks);
- ``EmptySource``     an empty cluster (``serve --dev`` without ``--cluster``);
- ``SnapshotSource``  manifests on disk (``serve --cluster PATH``), loaded once;
- ``LiveSource``      a watch cache of the real cluster (``webhook/cluster/live.py``,
                      constructed from a kubernetes client configuration).

Life cycle under gunicorn: a source is *constructed* in the master before workers are
forked (so construction must not start threads or open connections), then ``start()``
runs once in every worker after the fork and ``stop()`` when that worker exits. Each
worker therefore owns its own view; ``ready()`` and ``stats()`` describe that worker's.
"""
from __future__ import annotations

import time
from typing import Iterable, Protocol, runtime_checkable

from webhook.cluster.heap import freeze_view
from webhook.cluster.view import ClusterView


@runtime_checkable
class ViewSource(Protocol):
    """What the admission edge needs from a source of cluster state."""

    view: ClusterView

    def start(self) -> None:
        """Begin keeping ``view`` current (called once per worker, after fork). Must not block
        for long: a live source syncs in the background and reports it through ready()."""

    def stop(self) -> None:
        """Stop background work; idempotent."""

    def ready(self) -> bool:
        """True once the view is complete enough to judge requests (first sync done)."""

    def stats(self) -> dict:
        """At least {"objects": int, "age_seconds": float, "synced": bool}: exported as
        metrics. age_seconds is the time since the view last changed or was confirmed
        current (for a live source: the last event or successful relist)."""


def view_object_count(view: ClusterView) -> int:
    return sum(view.stats().values())


class StaticSource:
    """A view that never changes after construction: always ready, nothing to start."""

    def __init__(self, view: ClusterView) -> None:
        self.view = view
        self._since = time.monotonic()

    def start(self) -> None:
        # The view is complete from the start: take it out of the garbage collector's walks
        # (webhook/cluster/heap.py), in the worker that will read it.
        freeze_view("static view")

    def stop(self) -> None:
        pass

    def ready(self) -> bool:
        return True

    def stats(self) -> dict:
        return {"objects": view_object_count(self.view), "age_seconds": time.monotonic() - self._since,
                "synced": True, **self.view.stats()}


class EmptySource(StaticSource):
    """An empty cluster: nothing in view, always ready."""

    def __init__(self) -> None:
        super().__init__(ClusterView())


class SnapshotSource(StaticSource):
    """Manifests read once from files or directories (``--cluster``); always ready.

    Loading happens in the constructor, in the gunicorn master: bad input fails
    ``serve`` at start-up with the file and line, before any worker exists, and the
    parsed view is shared with the forked workers copy-on-write.
    """

    def __init__(self, paths: Iterable[str]) -> None:
        from webhook.bounded_text import shown_path
        from webhook.cluster.files import load_snapshot
        from webhook.policy.parse import parse_policy

        self.paths = list(paths)
        snap = load_snapshot([], self.paths)
        self.invalid_policies: list[str] = []
        for doc in snap.context_policy_docs:
            result = parse_policy(doc.obj, origin=doc.origin())
            if result.policy is not None:
                snap.view.upsert_policy(result.policy)
            else:  # the API server would not hold it, so it is not part of the cluster
                self.invalid_policies.append(f"{shown_path(doc.file)}:{doc.line}")  # printed
        # Admin network policies (ANP, BANP, ClusterNetworkPolicy) are checked and held as
        # lint and simulate hold them, so an invalid one fails serve at start-up (exit 2)
        # instead of being dropped without a word; the live cache follows them likewise.
        from webhook.cluster.admin_policies import add_admin_policies
        add_admin_policies(snap.view, snap.admin_policy_docs)
        self.admin_policies = len(snap.view.admin_policies())
        self.kinds = dict(snap.kinds)
        self.skipped = list(snap.skipped)  # (file, why): in a directory, holding no Kubernetes object
        super().__init__(snap.view)


class SourceUnavailable(Exception):
    """The requested source cannot be built (e.g. live.py missing, no kubeconfig)."""


def live_source(config, kube_config_file: str | None = None) -> ViewSource:
    """The live watch cache, imported lazily: the kubernetes client is only loaded when used.

    Uses the in-cluster configuration when running in a pod, else the kubeconfig. The
    contract for webhook/cluster/live.py: ``LiveSource(configuration, config=config)``
    where ``configuration`` is a ``kubernetes.client.Configuration`` and ``config`` the
    netpol-guard Config (server.relistSeconds etc.); it meets ViewSource above.
    """
    from webhook.cluster import live

    try:
        from kubernetes import client as k8s_client, config as k8s_config
        configuration = k8s_client.Configuration()
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
        except k8s_config.ConfigException:
            from webhook.cluster.kubeconfig import load_kubeconfig
            load_kubeconfig(configuration, kube_config_file)
    except Exception as exc:  # noqa: BLE001 - every failure here is "no cluster to talk to"
        raise SourceUnavailable(f"no cluster configuration: not in a pod and no usable kubeconfig ({exc}); "
                                "use --cluster PATH or --dev") from None
    return live.LiveSource(configuration, config=config)
