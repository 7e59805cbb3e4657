"""Every rule is held to the same standard, and its own examples are its tests."""
import re
from pathlib import Path

import pytest

from webhook.rules import registry
from webhook.rules.docs import markdown
from webhook.rules.examples import run_example

RULES = list(registry)
BAD = [(r, ex) for r in RULES for ex in r.bad]
GOOD = [(r, ex) for r in RULES for ex in r.good]


def test_rule_ids_are_unique_kebab_case_and_documented():
    ids = [r.id for r in RULES]
    assert len(ids) == len(set(ids))
    for r in RULES:
        assert re.match(r"^[a-z][a-z0-9-]*$", r.id), r.id
        assert r.summary.endswith("."), f"{r.id}: summary should be a sentence"
        assert len(r.rationale) > 80, f"{r.id}: rationale too thin"
        assert r.bad and r.good, f"{r.id}: needs at least one bad and one good example"


@pytest.mark.parametrize("rule,example", BAD, ids=[f"{r.id}:{e.title}" for r, e in BAD])
def test_bad_example_is_found(rule, example):
    found = [f for f in run_example(example) if f.rule == rule.id]
    assert found, f"{rule.id} did not fire on its bad example {example.title!r}"
    want = example.expect_severity or rule.severity
    assert {f.severity for f in found} == {want}
    for f in found:
        assert f.path and f.message and f.policy and f.line > 0


@pytest.mark.parametrize("rule,example", GOOD, ids=[f"{r.id}:{e.title}" for r, e in GOOD])
def test_good_example_is_clean_of_that_rule(rule, example):
    found = [f for f in run_example(example) if f.rule == rule.id]
    assert not found, f"{rule.id} fired on its good example: {[f.message for f in found]}"


@pytest.mark.parametrize("rule,example", GOOD, ids=[f"{r.id}:{e.title}" for r, e in GOOD])
def test_good_examples_have_no_errors_at_all(rule, example):
    errors = [f"{f.rule}: {f.message}" for f in run_example(example) if f.severity == "error"]
    assert not errors, f"good example of {rule.id} has errors: {errors}"


def test_docs_rules_md_is_generated_from_the_registry():
    committed = (Path(__file__).parent.parent / "docs" / "rules.md").read_text()
    assert committed == markdown(), "docs/rules.md is stale: run `make docs`"
