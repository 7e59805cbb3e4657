"""Checking many policies at once (lint, generate's proof): parse every policy once, put
the valid ones into the view so each check sees the whole set, then check the subjects."""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional

from webhook.cluster.view import ClusterView
from webhook.config import Config
from webhook.policy.model import Origin
from webhook.policy.parse import parse_policy
from webhook.rules.context import Context
from webhook.rules.runner import PolicyReport, check_policy, invalid_spec_findings, policy_key_of

Item = tuple[Mapping[str, Any], Optional[Origin]]


def check_all(view: ClusterView, config: Config, subjects: Iterable[Item],
              context_policies: Iterable[Item] = ()) -> list[PolicyReport]:
    """Reports for `subjects`, in order. Context policies are in the view but not reported."""
    for obj, origin in context_policies:
        result = parse_policy(obj, origin=origin)
        if result.policy:
            view.upsert_policy(result.policy)
    parsed = []
    for obj, origin in subjects:
        result = parse_policy(obj, origin=origin)
        if result.policy:
            view.upsert_policy(result.policy)
        parsed.append((obj, origin, result))
    ctx = Context(view, config)
    reports = []
    for obj, origin, result in parsed:
        if result.policy is None:
            key = policy_key_of(obj)
            reports.append(PolicyReport(key, None, tuple(invalid_spec_findings(result.errors, key, ctx, origin))))
        else:
            reports.append(PolicyReport(result.policy.key, result.policy, tuple(check_policy(result.policy, ctx))))
    return reports
