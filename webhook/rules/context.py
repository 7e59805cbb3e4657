"""What a check may look at besides the policy: the cluster view, the engine and config.

Derived facts that many checks share are computed once and cached, never re-derived in
each rule: facts of the view and configuration alone (the DNS pods, an address index)
on the view, shared by every context until the view changes (`shared`); facts that read
the engine, whose overlay holds the candidate of one review, on the context (`derived`).
"""
from __future__ import annotations

import difflib
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Iterable, Iterator

from webhook.cluster.objects import NAME_LABEL, ContainerPort, Pod
from webhook.cluster.view import ClusterView
from webhook.config import Config
from webhook.policy.engine import Engine
from webhook.policy.model import EGRESS, NetworkPolicy
from webhook.policy.selectors import LabelSelector

ISOLATE_VALUES = ("all", "ingress", "egress")


@dataclass
class Context:
    view: ClusterView
    config: Config
    engine: Engine = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.engine is None:
            self.engine = Engine(self.view, self.config.cluster.ipBlockMatchesPods)
        self._derived: dict[str, tuple[int, Any]] = {}

    def shared(self, key: str, build: Callable[[], Any]) -> Any:
        """A fact derived from the view and the configuration only - never from the engine,
        whose overlay is this context's own - kept on the view until it changes, so the
        contexts of later reviews reuse it. The config is part of the key by identity; the
        entry holds it, so its id cannot be reused while the entry lives."""
        return shared_fact(self.view, self.config, key, build)

    def derived(self, key: str, build: Callable[[], Any]) -> Any:
        """A fact derived from the view and the engine (an analysis), built once per context
        and rebuilt only when the view has changed since: one context serves a whole lint
        run, and the live cache changes the view under a long-lived one."""
        generation = self.view.generation
        got = self._derived.get(key)
        if got is None or got[0] != generation:
            got = self._derived[key] = (generation, build())
        return got[1]

    def with_engine(self, engine: Engine) -> "Context":
        return Context(self.view, self.config, engine)

    @classmethod
    def for_candidate(cls, view: ClusterView, config: Config, policy: NetworkPolicy) -> "Context":
        """A context whose engine holds `policy` in place of any stored version of it (an
        admission candidate): `Context(view, config)` with `engine.with_overlay([policy])`,
        built in one step - the webhook makes one per review."""
        return cls(view, config, Engine(view, config.cluster.ipBlockMatchesPods, {policy.key: policy}))

    # --- DNS ---------------------------------------------------------------------------
    @property
    def dns_pods(self) -> list[Pod]:
        """The cluster DNS pods in view, or a stand-in for standard CoreDNS when none are shown."""
        return self.shared("dns-pods", self._find_dns_pods)

    def _find_dns_pods(self) -> list[Pod]:
        dns = self.config.dns
        sel = LabelSelector(tuple(sorted(dns.podLabels.items())))
        found = self.view.select_pods(dns.namespace, sel, limit=50)
        if found:
            return found
        # Not in view (linting a repo without kube-system): assume the standard deployment.
        return [Pod(dns.namespace, "cluster-dns", dict(dns.podLabels),
                    (ContainerPort(53, "UDP", "dns"), ContainerPort(53, "TCP", "dns-tcp"),
                     ContainerPort(9153, "TCP", "metrics")), kind="Deployment")]

    # --- isolation ---------------------------------------------------------------------
    def isolation_mode(self, namespace: str) -> str | None:
        ns = self.view.namespace(namespace)
        if ns is None:
            return None
        value = ns.labels.get(self.config.isolation.labelKey)
        return value if value in ISOLATE_VALUES else None

    # --- suggestions -------------------------------------------------------------------
    @staticmethod
    def closest(word: str, options: Iterable[str], n: int = 1) -> list[str]:
        """The option(s) closest to word ("did you mean"), within the suggestion budget of
        the policy being checked: [] once it is spent."""
        opts = options if isinstance(options, (tuple, list, set, frozenset)) else tuple(options)
        if not charge_suggestion(len(opts)):
            return []
        return close_matches(word, opts, n)

    def namespace_exists(self, name: str) -> bool:
        return self.view.namespace(name) is not None


def shared_fact(view: ClusterView, config: Config, key: Any, build: Callable[[], Any]) -> Any:
    """Context.shared for holders of a view and a config that keep no context (see _DnsAnalysis)."""
    return view.memo((key, id(config)), lambda: (config, build()))[1]


# Names compared for "did you mean" suggestions per policy checked (difflib: ~2 us each).
# With 5,000 namespaces each suggestion compares 5,000 label values, and a policy with 250
# distinct near-miss selectors cost 2.6 s of CPU - every time, since new words miss the
# cache. Past the budget a finding just has no suggestion.
SUGGESTION_BUDGET = 50_000
_suggestions = threading.local()  # .left: the budget of the policy this thread is checking


@contextmanager
def suggestion_budget() -> Iterator[None]:
    """Checking one policy: a fresh budget, and none (no limit) again afterwards, so no
    later caller in this thread runs on what the last policy left over."""
    _suggestions.left = SUGGESTION_BUDGET
    try:
        yield
    finally:
        _suggestions.left = None


def charge_suggestion(names: int) -> bool:
    """Take `names` comparisons from the budget of the policy being checked; False (nothing
    taken) when it does not hold them. Charged whether the answer is cached or not, so the
    same policy gets the same suggestions every time it is checked."""
    left = getattr(_suggestions, "left", None)
    if left is None:
        return True  # outside check_policy: no budget set
    if names > left:
        return False
    _suggestions.left = left - names
    return True


def close_matches(word: str, options: Iterable[str], n: int = 1) -> list[str]:
    """Context.closest without the budget, for callers that charge it themselves."""
    return list(_close_matches(word, tuple(sorted(set(options))), n))


@lru_cache(maxsize=4096)
def _close_matches(word: str, options: tuple[str, ...], n: int) -> tuple[str, ...]:
    # The webhook meets the same typo against the same labels review after review;
    # difflib costs ~20 us per suggestion. Keyed on the full option list, so exact.
    return tuple(difflib.get_close_matches(word, options, n=n, cutoff=0.6))


# --- preconditions (Rule.applies): cheap tests of the policy alone ----------------------------
def isolates_egress(policy: NetworkPolicy) -> bool:
    """Only a policy that isolates egress has egress rules that take effect."""
    return EGRESS in policy.policy_types


def has_ip_block(policy: NetworkPolicy) -> bool:
    """Whether any written rule (whether or not policyTypes lets it take effect) has an ipBlock peer."""
    return policy.contents.ip_block


def selected_pods(ctx: Context, policy: NetworkPolicy, limit: int | None = None) -> list[Pod]:
    return ctx.view.select_pods(policy.namespace, policy.pod_selector, limit=limit)


def name_selector(namespace: str) -> dict:
    return {"matchLabels": {NAME_LABEL: namespace}}
