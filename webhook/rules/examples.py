"""Run a rule's example: the first NetworkPolicy in the manifest is the subject, every other
object (policies included) is the inventory it is checked against."""
from __future__ import annotations

from webhook.cluster.files import add_to_view, parse_text
from webhook.cluster.view import ClusterView
from webhook.config import DEFAULT, Config
from webhook.rules.base import Example, Finding
from webhook.rules.batch import check_all


def run_example(example: Example, config: Config = DEFAULT, name: str = "example.yaml") -> list[Finding]:
    docs = parse_text(example.manifest, name)
    policies = [d for d in docs if d.kind == "NetworkPolicy"]
    if not policies:
        raise ValueError(f"example {example.title!r} has no NetworkPolicy")
    view = ClusterView()
    for d in docs:
        if d.kind != "NetworkPolicy":
            add_to_view(view, d)
    if example.enables:
        from dataclasses import replace
        from webhook.rules.base import REGISTRY
        config = replace(config, rules={**{r: REGISTRY.get(r).severity for r in example.enables}, **config.rules})
    subject, others = policies[0], policies[1:]
    reports = check_all(view, config, [(subject.obj, subject.origin())],
                        [(d.obj, d.origin()) for d in others])
    return list(reports[0].findings)
