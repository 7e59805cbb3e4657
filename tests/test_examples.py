"""The bundled examples say what they claim: good/ lints clean, each bad/ file shows its mistake.

Each bad file names the rule it demonstrates in a first-line comment `# expect: rule-id`.
A rule that is not registered (yet) makes its case an expected failure, decided at run time,
so the case becomes a real test the moment the rule lands.
"""
from __future__ import annotations

import json
import os
import re

import pytest

from webhook.cli import main
from webhook.rules.base import REGISTRY

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
CLUSTER = os.path.join(EXAMPLES, "cluster")
GOOD = os.path.join(EXAMPLES, "policies", "good")
BAD = os.path.join(EXAMPLES, "policies", "bad")
BAD_FILES = sorted(f for f in os.listdir(BAD) if f.endswith(".yaml"))


def lint(capsys, *paths: str) -> tuple[int, dict]:
    code = main(["lint", "--format", "json", "--cluster", CLUSTER, *paths])
    return code, json.loads(capsys.readouterr().out)


def expected_rule(name: str) -> str:
    with open(os.path.join(BAD, name), encoding="utf-8") as fh:
        m = re.match(r"#\s*expect:\s*([a-z0-9-]+)", fh.readline())
    assert m, f"{name}: first line must be `# expect: rule-id`"
    return m.group(1)


def _registered(rule_id: str) -> bool:
    return rule_id in REGISTRY


def test_good_policies_have_nothing_above_info(capsys):
    code, report = lint(capsys, GOOD)
    above_info = [f for f in report["findings"] if f["severity"] != "info"]
    assert code == 0 and above_info == [], above_info
    assert report["summary"]["policies"] == len([f for f in os.listdir(GOOD) if f.endswith(".yaml")])


def test_example_cluster_policies_lint_clean(capsys):
    code, report = lint(capsys, os.path.join(CLUSTER, "shop-policies.yaml"))
    assert code == 0
    assert [f for f in report["findings"] if f["severity"] != "info"] == []
    assert report["summary"]["policies"] == 6


BAD_CASES = [pytest.param(n, marks=pytest.mark.xfail(not _registered(expected_rule(n)), strict=False,
                                                      reason=f"rule {expected_rule(n)} is not registered yet"))
             for n in BAD_FILES]


@pytest.mark.parametrize("name", BAD_CASES)
def test_bad_policy_shows_its_mistake(name, capsys):
    rule_id = expected_rule(name)
    code, report = lint(capsys, os.path.join(BAD, name))
    fired = {f["rule"]: f for f in report["findings"]}
    assert rule_id in fired, f"{name}: expected {rule_id}, got {sorted(fired)}"
    assert fired[rule_id]["severity"] in ("error", "warning")
    assert fired[rule_id]["file"].endswith(name)
    assert code == (1 if any(f["severity"] == "error" for f in report["findings"]) else 0)


def test_every_bad_file_is_a_distinct_mistake():
    rules = [expected_rule(n) for n in BAD_FILES]
    assert len(rules) == len(set(rules)) and len(rules) >= 10


def test_make_run_lints_everything_together(capsys):
    # what `make run` does: the bad examples make it exit 1 and nothing is unusable input
    code = main(["lint", "--cluster", CLUSTER, os.path.join(EXAMPLES, "policies")])
    out = capsys.readouterr().out
    assert code == 1
    assert f"checked {len(BAD_FILES) + len(os.listdir(GOOD))} NetworkPolicies" in out
