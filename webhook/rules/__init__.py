"""The rule registry. Importing this package registers every rule family.

One module per family; each rule declares its id, category, severity, summary,
rationale and examples beside its check (see base.rule).
"""
from webhook.rules.base import REGISTRY, Example, Finding, Hit, Rule, rule  # noqa: F401
from webhook.rules import structure, selectors, dns, ipblock, ports, isolation  # noqa: F401,E402

registry = REGISTRY
