"""How large a NetworkPolicy netpol-guard judges: counts taken from the raw object before
the parse, so that one oversized policy costs a few list lengths instead of seconds.

Parsing and checking cost ~10-50 us per rule, peer, port, `except` entry or selector term,
and the API server lets through any policy that fits in its 3 MiB request limit: one
ipBlock with 194,874 `except` entries cost the webhook 4.2 s of CPU, past the API server's
3 s timeout, with two request threads per worker. Real policies have tens of rules and at
most a few hundred peers (CIDR allow-lists), far inside these limits; a policy at every
limit at once costs ~100-200 ms on /validate and on /mutate with every mutation on
(`python -m bench review_cost`, docs/benchmarks.md). Past a limit the policy is refused
like an invalid one (rule policy-too-large), never parsed, and the message says to split
it: several policies selecting the same pods allow the union of what each allows.

Only lists are counted. Each count walks at most `limit` items of the level above, and
each level is checked before the next is walked, so the check itself is bounded by the
limits (a few microseconds for an ordinary policy).
"""
from __future__ import annotations

from typing import Any

from webhook.policy.errors import FieldError, Path
from webhook.policy.selectors import MAPPING

TOO_LARGE = "Too large"  # FieldError.kind of a limit's error; the runner reports it as policy-too-large

# Documented in docs/operations.md, "Limits on input" (and in rule policy-too-large's rationale).
RULES = 500  # ingress + egress rules
PEERS = 1_000  # from/to entries, over all rules
PORTS = 1_000  # ports entries, over all rules
EXCEPTS = 1_000  # ipBlock.except entries, over all peers
SELECTOR_TERMS = 1_000  # matchLabels entries + matchExpressions + their values, in podSelector and all peers

_SPLIT = "split it into several NetworkPolicies (the traffic they allow adds up)"


def _items(obj: Any, key: str) -> list:
    value = obj.get(key) if isinstance(obj, MAPPING) else None
    return value if type(value) is list else []  # other shapes: the parser says what is wrong


def _selector_terms(selector: Any) -> int:
    if not selector or not isinstance(selector, MAPPING):
        return 0
    labels = selector.get("matchLabels")
    expressions = _items(selector, "matchExpressions")
    terms = (len(labels) if isinstance(labels, MAPPING) else 0) + len(expressions)
    if terms > SELECTOR_TERMS:
        return terms  # over already: the expressions are not walked
    for expr in expressions:
        terms += len(_items(expr, "values"))
    return terms


def _too_large(path: str, what: str, count: int, limit: int) -> FieldError:
    return FieldError(Path(path), TOO_LARGE,
                      f"{count:,} {what}, over netpol-guard's limit of {limit:,} per policy; {_SPLIT}")


def size_problems(obj: Any) -> tuple[FieldError, ...]:
    """Why `obj` (a raw NetworkPolicy) is too large to judge; empty when it is within every limit.

    At most one error: the first limit found passed (rules, peers, ports, then except entries
    and selector terms, counted in one walk over the peers) - later counts would walk an
    unbounded level.
    """
    spec = obj.get("spec") if isinstance(obj, MAPPING) else None
    if not isinstance(spec, MAPPING):
        return ()
    ingress, egress = _items(spec, "ingress"), _items(spec, "egress")
    if len(ingress) + len(egress) > RULES:
        path = "spec.ingress" if not egress else "spec.egress" if not ingress else "spec.ingress, spec.egress"
        return (_too_large(path, "ingress and egress rules", len(ingress) + len(egress), RULES),)
    peer_lists = [_items(r, "from") for r in ingress] + [_items(r, "to") for r in egress]
    peers = sum(map(len, peer_lists))
    if peers > PEERS:
        return (_too_large(_rule_path(peer_lists, len(ingress), (".from", ".to")), "peers in all rules",
                           peers, PEERS),)
    port_lists = [_items(r, "ports") for r in ingress] + [_items(r, "ports") for r in egress]
    ports = sum(map(len, port_lists))
    if ports > PORTS:
        return (_too_large(_rule_path(port_lists, len(ingress), (".ports", ".ports")), "ports in all rules",
                           ports, PORTS),)
    excepts, terms = 0, _selector_terms(spec.get("podSelector"))
    for items in peer_lists:
        for peer in items:
            if isinstance(peer, MAPPING):
                block = peer.get("ipBlock")
                if block:
                    excepts += len(_items(block, "except"))
                terms += _selector_terms(peer.get("podSelector")) + _selector_terms(peer.get("namespaceSelector"))
        if terms > SELECTOR_TERMS:
            break  # over already: the remaining rules' selectors are not walked
    if excepts > EXCEPTS:
        return (_too_large(_except_path(peer_lists, len(ingress)), "ipBlock except entries in all peers",
                           excepts, EXCEPTS),)
    if terms > SELECTOR_TERMS:
        return (_too_large("spec", "label selector terms (matchLabels entries, matchExpressions and their "
                                   "values) in podSelector and all peers", terms, SELECTOR_TERMS),)
    return ()


# Where to point the user: the longest list, where splitting the policy starts. Only
# computed for the error.

def _rule_path(lists: list[list], ingress: int, keys: tuple[str, str]) -> str:
    i = max(range(len(lists)), key=lambda k: len(lists[k]))
    return f"spec.ingress[{i}]{keys[0]}" if i < ingress else f"spec.egress[{i - ingress}]{keys[1]}"


def _except_path(peer_lists: list[list], ingress: int) -> str:
    longest, i, j = -1, 0, 0
    for rule, items in enumerate(peer_lists):
        for peer_index, peer in enumerate(items):
            n = len(_items(peer.get("ipBlock"), "except")) if isinstance(peer, MAPPING) else 0
            if n > longest:
                longest, i, j = n, rule, peer_index
    head = f"spec.ingress[{i}].from" if i < ingress else f"spec.egress[{i - ingress}].to"
    return f"{head}[{j}].ipBlock.except"
