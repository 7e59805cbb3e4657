"""The pre-commit hook, as a user meets it: the real `pre-commit try-repo` against this
checkout, in a fresh git repository holding a good and a bad policy. try-repo builds the
hook's own virtualenv from this repository (pip install of the package: about two minutes)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
PRE_COMMIT = Path(sys.executable).parent / "pre-commit"


def test_the_hook_manifest_is_valid_for_pre_commit():
    r = subprocess.run([str(PRE_COMMIT), "validate-manifest", str(REPO / ".pre-commit-hooks.yaml")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    (hook,) = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    assert hook["id"] == "netpol-guard-lint" and hook["entry"].startswith("netpol-guard lint")


@pytest.mark.slow
def test_try_repo_passes_a_good_policy_and_fails_a_bad_one(tmp_path):
    if not PRE_COMMIT.exists():
        pytest.skip("pre-commit is not installed (pip install -e '.[test]')")
    if subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", "HEAD:.pre-commit-hooks.yaml"]).returncode:
        pytest.skip("try-repo reads the committed hook manifest; commit .pre-commit-hooks.yaml first")
    work = tmp_path / "manifests-repo"
    work.mkdir()
    shutil.copy(REPO / "examples/policies/good/monitoring-ingress.yaml", work / "good.yaml")
    shutil.copy(REPO / "examples/policies/bad/egress-without-dns.yaml", work / "bad.yaml")
    (work / ".pre-commit-config.yaml").write_text("repos: []\n")  # excluded by the hook: no kind
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NETPOL_GUARD_", "PRE_COMMIT"))}
    env.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@example.com")
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    subprocess.run(["git", "add", "."], cwd=work, check=True)

    def try_repo(*files):
        return subprocess.Popen([str(PRE_COMMIT), "try-repo", str(REPO), "netpol-guard-lint", "--files", *files],
                                cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    # both at once: each try-repo builds its own environment, mostly waiting on downloads
    good = try_repo("good.yaml", ".pre-commit-config.yaml")
    bad = try_repo("good.yaml", "bad.yaml")
    good_out, _ = good.communicate(timeout=900)
    bad_out, _ = bad.communicate(timeout=900)
    assert good.returncode == 0, good_out
    assert "netpol-guard lint" in good_out and "Passed" in good_out
    assert bad.returncode == 1, bad_out
    assert "Failed" in bad_out and "bad.yaml:" in bad_out and "[dns-egress-missing]" in bad_out
