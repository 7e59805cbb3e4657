"""What `lint DIR` (and every command that walks a directory: --cluster DIR, serve --cluster
DIR) reads: symlinked directories are followed, each real directory once (a loop ends);
hidden directories are left out; a FIFO, socket or device is skipped with a note instead of
hanging the job; a FIFO named on the command line is read, and refused when nobody writes
to it (stdin, `-`, stays the way to pipe manifests in)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BAD = REPO / "examples" / "policies" / "bad" / "namespace-label-name.yaml"  # one error
GOOD = REPO / "examples" / "policies" / "good" / "monitoring-ingress.yaml"


def lint(*args, cwd, stdin=subprocess.DEVNULL):
    # the timeout is a guard against the hang these tests are about, not a measurement
    return subprocess.run([sys.executable, "-m", "webhook", "lint", "--cluster", str(REPO / "examples" / "cluster"),
                           "--format", "json", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=30, stdin=stdin)


def policies(result) -> list[str]:
    assert "Traceback" not in result.stderr, result.stderr
    return sorted({f["file"] for f in json.loads(result.stdout)["findings"]})


@pytest.fixture
def repo(tmp_path):
    (tmp_path / "repo").mkdir()
    shutil.copy(GOOD, tmp_path / "repo" / "good.yaml")
    return tmp_path


def test_a_symlinked_directory_is_followed(repo):
    (repo / "shared").mkdir()
    shutil.copy(BAD, repo / "shared" / "bad.yaml")
    os.symlink("../shared", repo / "repo" / "shared")
    result = lint("repo", cwd=repo)
    assert result.returncode == 1, result.stderr
    assert "repo/shared/bad.yaml" in policies(result)


def test_a_symlink_loop_ends_and_each_directory_is_read_once(repo):
    (repo / "repo" / "sub").mkdir()
    shutil.copy(BAD, repo / "repo" / "sub" / "bad.yaml")
    os.symlink("..", repo / "repo" / "sub" / "up")  # a loop
    os.symlink("sub", repo / "repo" / "twin")  # the same directory again
    result = lint("repo", cwd=repo)
    assert result.returncode == 1, result.stderr
    out = json.loads(result.stdout)
    assert out["summary"]["policies"] == 2, out  # good.yaml and sub/bad.yaml, once each


def test_hidden_directories_are_left_out(repo):
    (repo / "repo" / ".github").mkdir()
    shutil.copy(BAD, repo / "repo" / ".github" / "bad.yaml")
    result = lint("repo", cwd=repo)
    assert result.returncode == 0 and json.loads(result.stdout)["summary"]["policies"] == 1, result.stderr


@pytest.mark.parametrize("where", ["lint", "--cluster"])
def test_a_fifo_in_a_directory_is_skipped_with_a_note(repo, where):
    os.mkfifo(repo / "repo" / "pipe.yaml")
    args = ["repo"] if where == "lint" else ["--cluster", "repo", GOOD]
    result = lint(*args, cwd=repo)
    assert result.returncode == 0, result.stderr
    assert "note: skipped repo/pipe.yaml: a FIFO (named pipe), not a regular file" in result.stderr


def test_a_fifo_in_a_directory_is_an_error_with_strict(repo):
    os.mkfifo(repo / "repo" / "pipe.yaml")
    result = lint("--strict", "repo", cwd=repo)
    assert result.returncode == 2 and "repo/pipe.yaml: a FIFO (named pipe), not a regular file" in result.stderr


def test_a_fifo_named_with_no_writer_is_refused(repo):
    os.mkfifo(repo / "pipe.yaml")
    result = lint("pipe.yaml", cwd=repo)
    assert result.returncode == 2, result.stderr
    assert "pipe.yaml: a FIFO with nothing written to it" in result.stderr


def test_a_pipe_named_on_the_command_line_is_read(repo):
    # `netpol-guard lint <(helm template ...)`: the shell names a pipe with a writer
    code = ("import os, subprocess, sys\n"
            "r, w = os.pipe()\n"
            f"p = subprocess.Popen([sys.executable, '-m', 'webhook', 'lint', '--format', 'json', f'/dev/fd/{{r}}'],"
            " pass_fds=[r], stdout=subprocess.PIPE, text=True)\n"
            "os.close(r)\n"
            f"os.write(w, open({str(BAD)!r}, 'rb').read()); os.close(w)\n"
            "out = p.communicate(timeout=60)[0]; print(out); sys.exit(p.returncode)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr  # read, checked (no --cluster: nothing to match against)
    assert json.loads(result.stdout)["summary"]["policies"] == 1


def test_stdin_is_still_read(repo):
    with open(BAD, "rb") as fh:
        result = lint("-", cwd=repo, stdin=fh)
    assert result.returncode == 1 and policies(result) == ["<stdin>"], result.stderr
