"""Asking the real API server for the webhook's verdict, and waiting for a verdict to change.

`dry_run(cluster, doc)` is `kubectl apply --dry-run=server -f -`: the API server runs admission
(our webhooks included) and stores nothing. `until(...)` is the bounded polling the e2e tests
use instead of sleeps: it retries a check until it holds, and fails once a check that *started*
after the deadline still does not hold - so a slow kubectl on a busy machine cannot fail a test,
but a view that is still stale `within` seconds after the change does.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Callable, Optional, TypeVar

T = TypeVar("T")
DENIED = "denied the request"


@dataclass(frozen=True)
class Verdict:
    returncode: int
    stderr: str
    stdout: str

    @property
    def denied(self) -> bool:
        return self.returncode != 0 and DENIED in self.stderr

    @property
    def allowed(self) -> bool:
        return self.returncode == 0

    @property
    def warnings(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("Warning:")]

    def warns(self, rule: str) -> bool:
        return any(f"[{rule}]" in w for w in self.warnings)

    def __str__(self) -> str:
        return f"exit {self.returncode}\n{self.stderr}{self.stdout}"


def dry_run(cluster, doc: dict, *, kubeconfig=None) -> Verdict:
    """The verdict of the API server (and so of our webhooks) on `doc`; nothing is stored."""
    res = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(doc), check=False,
                          kubeconfig=kubeconfig)
    return Verdict(res.returncode, res.stderr, res.stdout)


def until(check: Callable[[], Optional[T]], within: float, what: str, *, interval: float = 0.05,
          describe: Callable[[], str] = lambda: "") -> T:
    """Call `check` until it returns something truthy (returned). Fails when an attempt that began
    more than `within` seconds after the call still returns falsy: the bound is on how late the
    world may change, not on how fast the machine answers. Every attempt is bounded by the caller."""
    start = time.monotonic()
    deadline = start + within
    attempts = 0
    last = None
    while True:
        began = time.monotonic()
        attempts += 1
        last = check()
        if last:
            return last
        if began > deadline:
            raise AssertionError(f"{what}: not so {within:g} s after it should be ({attempts} attempts over "
                                 f"{time.monotonic() - start:.1f} s); last: {last!r}\n{describe()}")
        time.sleep(interval)


def network_policy(namespace: str, name: str, spec: dict, annotations: Optional[dict] = None) -> dict:
    meta = {"name": name, "namespace": namespace,
            "annotations": {"description": "e2e probe", **(annotations or {})}}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta, "spec": spec}
