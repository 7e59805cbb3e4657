"""Every `netpol-guard` command shown in README.md and docs/ runs as written.

In ```console blocks, a `$ command` line is followed by its expected output, where `...`
stands for any text (within a line or across lines); the commands of one block run in one
shell, so `$ echo $?` checks the exit status of the command before it. In ```sh blocks,
each `netpol-guard ...` command (a pipeline into it, too) must exit 0. Commands for a live
cluster (kubectl, helm install, curl to a server, netpol-guard audit or --kubeconfig; the
last two run on a real API server in tests/e2e/test_docs_live.py) are not run here: they are listed by
the test so the list stays visible, and covered by the cluster tests.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# Commands whose first word is one of these are run; everything else needs a cluster,
# a server, or is a make target that runs the whole suite.
RUNNABLE = ("netpol-guard", "echo $?", "python -m webhook", "helm template", "pre-commit")
# Outputs of these commands are checked elsewhere or vary by machine.
BLOCK = re.compile(r"^```(console|sh)\n(.*?)^```", re.S | re.M)


def _logical_lines(text: str) -> list[str]:
    return text.replace("\\\n", " ").splitlines()


def _strip_comment(cmd: str) -> str:
    return re.sub(r"\s+#\s.*$", "", cmd).strip()


def needs_live_cluster(cmd: str) -> bool:
    """netpol-guard commands that read a live cluster: run by tests/e2e/test_docs_live.py."""
    return cmd.startswith("netpol-guard audit") or "--kubeconfig" in cmd


def _runnable(cmd: str) -> bool:
    return (cmd.startswith(RUNNABLE) or "| netpol-guard" in cmd) and not needs_live_cluster(cmd)


def console_cases():
    for doc in DOCS:
        text = doc.read_text()
        for m in BLOCK.finditer(text):
            if m.group(1) != "console":
                continue
            line = text[:m.start()].count("\n") + 1
            steps, cmd, out = [], None, []
            for raw in _logical_lines(m.group(2)):
                if raw.startswith("$ "):
                    if cmd is not None:
                        steps.append((cmd, "\n".join(out)))
                    cmd, out = _strip_comment(raw[2:]), []
                else:
                    out.append(raw)
            if cmd is not None:
                steps.append((cmd, "\n".join(out)))
            if any(_runnable(c) for c, _ in steps):
                yield pytest.param(steps, id=f"{doc.relative_to(REPO)}:{line}")


def sh_cases():
    for doc in DOCS:
        text = doc.read_text()
        for m in BLOCK.finditer(text):
            if m.group(1) != "sh":
                continue
            line = text[:m.start()].count("\n") + 1
            for i, raw in enumerate(_logical_lines(m.group(2))):
                cmd = _strip_comment(raw)
                if cmd and _runnable(cmd):
                    yield pytest.param(cmd, id=f"{doc.relative_to(REPO)}:{line + 1 + i}")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A directory that looks like the checkout (read-only parts linked), so commands that
    write (`generate --out generated/`, `certs --out`) do not write into the repository."""
    d = tmp_path_factory.mktemp("docs")
    for entry in REPO.iterdir():
        if entry.name in {"generated", "certs", ".git", ".venv"} or entry.name.startswith("."):
            continue
        (d / entry.name).symlink_to(entry)
    (d / "certs").mkdir()
    return d


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETPOL_GUARD_")}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + str(REPO / ".tools" / "bin") + os.pathsep + env["PATH"]
    env["COLUMNS"] = "100"
    return env


def _matches(expected: str, actual: str) -> bool:
    norm = lambda s: "\n".join(l.rstrip() for l in s.strip("\n").splitlines())  # noqa: E731
    # a line of only `...` (indented or not) stands for any number of lines
    expected = re.sub(r"(?m)^[ \t]*\.\.\.[ \t]*$", "...", norm(expected))
    pattern = ".*?".join(re.escape(part) for part in expected.split("..."))
    return re.fullmatch(pattern, norm(actual), re.S) is not None


@pytest.mark.parametrize("steps", list(console_cases()))
def test_console_examples_print_what_the_docs_show(steps, workdir):
    script = []
    for i, (cmd, _) in enumerate(steps):
        # each step's output goes to its own file, the status carried to the next step
        script.append(f"(exit ${{__rc:-0}}); {cmd} > .out{i} 2>&1; __rc=$?")
    subprocess.run(["bash", "-c", "\n".join(script)], cwd=workdir, env=_env(), timeout=120)
    for i, (cmd, expected) in enumerate(steps):
        if not _runnable(cmd):
            continue
        actual = (workdir / f".out{i}").read_text()
        assert _matches(expected, actual), f"$ {cmd}\n--- docs show:\n{expected}\n--- it prints:\n{actual}"


@pytest.mark.parametrize("cmd", list(sh_cases()))
def test_shell_examples_run_as_written(cmd, workdir):
    r = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], cwd=workdir, env=_env(), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, f"$ {cmd}\n{r.stdout}{r.stderr}"


def test_ellipsis_matching_is_strict_outside_the_dots():
    assert _matches("a ... c", "a bbb c") and _matches("x\n...\nz", "x\n1\n2\nz")
    assert not _matches("a ... c", "a bbb d") and not _matches("checked 1", "checked 12")
