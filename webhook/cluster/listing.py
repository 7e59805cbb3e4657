"""The live cluster listed once, as a ClusterView: what `lint`, `simulate` and `audit` read
with --kubeconfig/--context.

It is the live cache (cluster/live.py) run until its first complete list and then stopped,
so a one-shot command sees the cluster exactly as the webhook's view does (the same paging,
parsing and slimming). A one-shot command does not wait out an outage: the first failed
request ends the listing with the server's answer.
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from typing import Optional

from webhook.cluster.view import ClusterView
from webhook.config import DEFAULT, Config


class ListingError(Exception):
    """The cluster could not be listed: the message names the kubeconfig, context and reason."""


@dataclass
class Listed:
    view: ClusterView
    invalid_policies: dict[str, str] = field(default_factory=dict)  # ns/name -> why it is not in the view
    counts: dict[str, int] = field(default_factory=dict)
    # admin policy kinds the cluster does not serve (or we may not list): kind -> why
    not_followed: dict[str, str] = field(default_factory=dict)


def api_configuration(kubeconfig: Optional[str], context: Optional[str]):
    """A kubernetes client Configuration from the kubeconfig (file and context), else in-cluster."""
    from kubernetes import client as k8s_client, config as k8s_config

    from webhook.cluster.kubeconfig import load_kubeconfig

    configuration = k8s_client.Configuration()
    where = f"kubeconfig {kubeconfig or '(default)'}" + (f", context {context}" if context else "")
    try:
        if kubeconfig is None and context is None:
            try:
                k8s_config.load_incluster_config(client_configuration=configuration)
                return configuration
            except k8s_config.ConfigException:
                pass
        load_kubeconfig(configuration, kubeconfig, context)
    except Exception as exc:  # noqa: BLE001 - a missing file, an unknown context, bad YAML
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ListingError(f"{where}: cannot be used: {text}") from None
    return configuration


def list_cluster(kubeconfig: Optional[str] = None, context: Optional[str] = None, config: Config = DEFAULT,
                 timeout: float = 120.0) -> Listed:
    """Namespaces, Pods, Services and NetworkPolicies of the cluster, each listed once, and the
    admin network policies where the cluster serves them."""
    from webhook.cluster.live import LiveSource

    configuration = api_configuration(kubeconfig, context)
    source = LiveSource(configuration, config=config)
    # The cache logs each failed attempt as a warning it will retry; a one-shot listing stops at
    # the first failure and says so once, in the error it raises.
    live_log = logging.getLogger("webhook.cluster.live")
    level = live_log.level
    live_log.setLevel(logging.ERROR)
    source.start()
    try:
        deadline = time.monotonic() + timeout
        while not source.ready():
            errors = {k: v for k, v in source.last_errors().items() if v}
            if errors:
                kind, why = sorted(errors.items())[0]
                raise ListingError(f"listing {kind} from {configuration.host} failed: {_short(why)}")
            if time.monotonic() > deadline:
                raise ListingError(f"listing the cluster at {configuration.host} did not finish in {timeout:.0f}s")
            time.sleep(0.05)
    finally:
        source.stop()
        live_log.setLevel(level)
    stats = source.stats()
    counts = {k: stats[k] for k in ("namespaces", "pods", "services", "networkpolicies")}
    from webhook.cluster.watching import ADMIN_POLICY_KINDS
    counts.update({k.name: stats[k.name] for k in ADMIN_POLICY_KINDS if stats.get(k.name)})
    return Listed(source.view, source.invalid_policies(), counts, source.not_followed())


def _short(why: str) -> str:
    """The reason without urllib3's wrapping: "[Errno 111] Connection refused", "HTTP 403 Forbidden"."""
    m = re.search(r"\[Errno -?\d+\] [^'\")]+", why)
    return m.group(0) if m else why


def forbidden_notes(listed: Listed) -> list[str]:
    """Notes for the admin policy kinds the cluster serves but these credentials may not list:
    answers then ignore policies that exist (a kind the cluster does not serve needs no note)."""
    by_reason: dict[str, list[str]] = {}
    for kind, why in sorted(listed.not_followed.items()):
        if "403" in why:
            by_reason.setdefault(why, []).append(kind)
    return [f"{', '.join(kinds)} {why}: the answers do not account for them" for why, kinds in by_reason.items()]
