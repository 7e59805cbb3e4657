"""Helpers that render fix snippets: short YAML a user can paste."""
from __future__ import annotations

from typing import Any

import yaml


def snippet(obj: Any) -> str:
    """Block-style YAML for a fix, without a trailing newline."""
    # The C dumper: findings on 10,000 policies render thousands of snippets.
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100).rstrip("\n")


_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def dns_egress_rule(namespace: str, pod_labels: dict[str, str], node_local: tuple[str, ...] = ()) -> dict:
    """The egress rule that allows cluster DNS on UDP and TCP 53 (and node-local DNS if configured)."""
    peers: list[dict] = [{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
        "podSelector": {"matchLabels": dict(pod_labels)},
    }]
    for addr in node_local:
        peers.append({"ipBlock": {"cidr": f"{addr}/32" if ":" not in addr else f"{addr}/128"}})
    return {"to": peers, "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}
