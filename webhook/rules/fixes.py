"""Helpers that render fix snippets: short YAML a user can paste."""
from __future__ import annotations

import threading
from typing import Any

import yaml

# Rendered snippets by content. The webhook renders the same few fixes for review after
# review (a DNS rule, a port entry), and YAML rendering costs ~100 us each; the key is the
# object's repr, which keeps key order and tells 1 from "1" and True. Bounded: cleared
# when full (a lint run over 10,000 policies renders many distinct ones).
_RENDERED: dict[str, str] = {}
_RENDERED_MAX = 4096
_lock = threading.Lock()


def snippet(obj: Any) -> str:
    """Block-style YAML for a fix, without a trailing newline."""
    key = repr(obj)
    found = _RENDERED.get(key)
    if found is None:
        found = _render(obj)
        with _lock:
            if len(_RENDERED) >= _RENDERED_MAX:
                _RENDERED.clear()
            _RENDERED[key] = found
    return found


def _render(obj: Any) -> str:
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
