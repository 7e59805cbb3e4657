"""Text from the input, printed on a line: a file name, a kind, an object's name, a value, a
command-line argument. It is clipped and its control characters are escaped, in every
format and every error line, so a file cannot forge a line of output: GitHub Actions reads
`::error` and `::stop-commands::` workflow commands from stderr as well as stdout, a
terminal obeys ESC sequences, and a CI's JUnit reader drops a report that is not
well-formed XML. A file name that is not UTF-8 is shown by its bytes, never a traceback.

Each case runs the real CLI in a child process (under the memory limit of
test_hostile_input), with a strict UTF-8 stdout as on a developer's machine.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.test_hostile_input import MEMORY_LIMIT, REPO, TIME_LIMIT

CLUSTER = str(REPO / "examples" / "cluster")
BAD_POLICY = REPO / "examples" / "policies" / "bad" / "namespace-label-name.yaml"
FORGED = "\n::stop-commands::x\n::error file=README.md,line=1::forged annotation"
EVIL_NAME = "evil\x1b]0;pwned\x07\x1b[2Jname"
FORMATS = ("text", "json", "sarif", "github", "junit")


def run_cli(args: list, cwd: Path, **env_extra: str) -> subprocess.CompletedProcess:
    """`netpol-guard ARGS` (str or bytes arguments) in a child limited in memory, output as bytes."""
    code = ("import resource, sys\n"
            f"resource.setrlimit(resource.RLIMIT_AS, ({MEMORY_LIMIT}, {MEMORY_LIMIT}))\n"
            "from webhook.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETPOL_GUARD_")}
    env.update({"PYTHONPATH": str(REPO), "PYTHONIOENCODING": "utf-8", "LANG": "C.UTF-8", **env_extra})
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True,
                          timeout=TIME_LIMIT, stdin=subprocess.DEVNULL)


def lines_of(data: bytes) -> list[str]:
    """Lines as a CI runner splits them; the output must be UTF-8."""
    return data.decode("utf-8").splitlines()


def assert_nothing_forged(result: subprocess.CompletedProcess) -> None:
    assert b"Traceback" not in result.stderr, result.stderr[-2000:]
    for line in lines_of(result.stdout) + lines_of(result.stderr):
        assert "\x1b" not in line and "\x07" not in line, line
        if line.startswith("::"):  # only our own annotations, each naming a real finding
            assert "stop-commands" not in line and "forged" not in line, line


def test_a_kind_with_newlines_in_a_skipped_file_cannot_forge_workflow_commands(tmp_path):
    (tmp_path / "repo").mkdir()
    shutil.copy(BAD_POLICY, tmp_path / "repo")
    kind = "Kustomization" + FORGED
    (tmp_path / "repo" / "kustomization.yaml").write_text(
        f"apiVersion: kustomize.config.k8s.io/v1beta1\nkind: {kind!r}\n".replace("'", '"'))
    result = run_cli(["lint", "--format", "github", "--cluster", CLUSTER, "repo"], tmp_path)
    assert_nothing_forged(result)
    assert result.returncode == 1  # the real finding is still reported, as an annotation
    notes = [ln for ln in lines_of(result.stderr) if ln.startswith("note: skipped")]
    assert notes == ["note: skipped repo/kustomization.yaml: a Kustomization\\n::stop-commands::x\\n::error "
                     "file=README.md,line=1::forged annotation of kustomize.config.k8s.io/v1beta1, not a Kubernetes "
                     "object (`kubectl kustomize DIR | netpol-guard lint -` checks what it builds)"]
    assert sum(ln.startswith("::error ") for ln in lines_of(result.stdout)) == 1


def test_a_file_name_with_a_newline_is_one_line_in_the_note(tmp_path):
    (tmp_path / "repo").mkdir()
    shutil.copy(BAD_POLICY, tmp_path / "repo")
    (tmp_path / "repo" / "a\n::stop-commands::deadbeef\n.yaml").write_text("foo: bar\n")
    result = run_cli(["lint", "--format", "github", "--cluster", CLUSTER, "repo"], tmp_path)
    assert_nothing_forged(result)
    assert "note: skipped repo/a\\n::stop-commands::deadbeef\\n.yaml: not a Kubernetes object" \
        in lines_of(result.stderr)[0]


def test_a_kind_with_newlines_in_an_error_line_is_escaped(tmp_path):
    (tmp_path / "f.yaml").write_text('kind: "Pod\\n::error::INJECT"\nmetadata: {name: x}\n')
    result = run_cli(["lint", "f.yaml"], tmp_path)
    assert result.returncode == 2
    assert lines_of(result.stderr) == ["netpol-guard lint: f.yaml:1: Pod\\n::error::INJECT has no apiVersion"]


@pytest.mark.parametrize("where", ["kind", "apiVersion"])
def test_a_two_megabyte_kind_gives_a_short_error_line(tmp_path, where):
    big = "K" * 2_000_000
    (tmp_path / "repo").mkdir()
    shutil.copy(BAD_POLICY, tmp_path / "repo")
    if where == "kind":  # an error: a kind without apiVersion
        (tmp_path / "f.yaml").write_text(f"kind: {big}\nmetadata: {{name: x}}\n")
        result = run_cli(["lint", "f.yaml"], tmp_path)
        assert result.returncode == 2
    else:  # a note: a tool's configuration, skipped
        (tmp_path / "repo" / "k.yaml").write_text(f"apiVersion: kustomize.config.k8s.io/{big}\nkind: {big}\n")
        result = run_cli(["lint", "--cluster", CLUSTER, "repo"], tmp_path)
        assert result.returncode == 1
    assert b"Traceback" not in result.stderr
    assert len(result.stderr) < 1000, len(result.stderr)
    assert "(1,999,900 more characters)" in result.stderr.decode()


def test_simulate_arguments_are_clipped_and_escaped(tmp_path):
    port = run_cli(["simulate", "--cluster", CLUSTER, "--port", "x" * 100_000], tmp_path)
    source = run_cli(["simulate", "--cluster", CLUSTER, "--from", "shop/a\n::error::x" + "y" * 100_000,
                      "--to", "shop/backend", "--port", "8080"], tmp_path)
    for result in (port, source):
        assert result.returncode == 2, result.stderr[-500:]
        assert len(lines_of(result.stderr)) == 1 and len(result.stderr) < 1000, result.stderr[:1000]
    assert "--from shop/a\\n::error::xyyy" in source.stderr.decode()


def test_an_admin_policy_error_quotes_a_huge_value_clipped(tmp_path):
    (tmp_path / "anp.yaml").write_text(
        "apiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\nmetadata: {name: a}\n"
        "spec:\n  priority: 5\n  subject: {namespaces: {}}\n  egress:\n  - action: Deny\n"
        f"    to: [{{networks: ['{'9' * 1_000_000}\\n::error::x']}}]\n".replace("'", '"'))
    result = run_cli(["lint", "anp.yaml", str(BAD_POLICY)], tmp_path)
    assert result.returncode == 2
    assert len(lines_of(result.stderr)) == 1 and len(result.stderr) < 1000, result.stderr[:1000]
    assert "(999,911 more characters)" in result.stderr.decode()


# --- file names that are not UTF-8 (F5), names with control characters (F6) -------------------

@pytest.fixture
def odd_names(tmp_path) -> Path:
    """A directory with a policy file whose name is not UTF-8, and one whose policy name holds
    terminal escapes and whose file name holds a control character."""
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(BAD_POLICY, os.fsencode(repo) + b"/\xffbad.yaml")
    evil = BAD_POLICY.read_text().replace("name: api-from-monitoring-by-name", f"name: {EVIL_NAME!r}"
                                          .replace("'", '"').replace("\\x1b", "\\e").replace("\\x07", "\\a"))
    assert EVIL_NAME not in evil and "\\e]0;" in evil
    (repo / "evil\x01.yaml").write_text(evil)
    return tmp_path


@pytest.mark.parametrize("fmt", FORMATS)
def test_odd_file_and_policy_names_work_in_every_format(odd_names, fmt):
    result = run_cli(["lint", "--format", fmt, "--cluster", CLUSTER, "repo"], odd_names)
    assert result.returncode == 1, result.stderr[-2000:]  # the findings, as usual
    assert_nothing_forged(result)
    out = result.stdout.decode("utf-8")
    assert "\x01" not in out
    if fmt == "sarif":
        assert '"uri": "repo/%FFbad.yaml"' in out and '"uri": "repo/evil%01.yaml"' in out
    else:
        assert "repo/\\xffbad.yaml" in out.replace("\\\\", "\\")
        assert "evil\\x1b]0;pwned\\x07\\x1b[2Jname" in out.replace("\\\\", "\\")
    if fmt == "junit":
        ET.fromstring(result.stdout)  # well-formed


def test_the_junit_report_is_well_formed_with_control_characters_in_a_name(odd_names):
    result = run_cli(["lint", "--format", "junit", "--cluster", CLUSTER, "repo/evil\x01.yaml"], odd_names)
    root = ET.fromstring(result.stdout)
    names = [case.get("name") for case in root.iter("testcase")]
    assert names == ["shop/evil\\x1b]0;pwned\\x07\\x1b[2Jname"]


# --- simulate --dot (F13) ----------------------------------------------------------------------

def test_simulate_dot_replaces_a_planted_symlink_instead_of_writing_through_it(tmp_path):
    (tmp_path / "victim").write_text("SECRET\n")
    (tmp_path / "m.dot").symlink_to("victim")
    result = run_cli(["simulate", "--cluster", CLUSTER, "--port", "8080", "--dot", "m.dot"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "victim").read_text() == "SECRET\n"
    assert not (tmp_path / "m.dot").is_symlink()
    assert (tmp_path / "m.dot").read_text().startswith("digraph connectivity {")
    assert (tmp_path / "m.dot").stat().st_mode & 0o777 == 0o644


def test_simulate_dot_still_writes_into_a_pipe(tmp_path):
    read, write = os.pipe()
    with os.fdopen(read, "rb") as reader:
        result = subprocess.run([sys.executable, "-m", "webhook", "simulate", "--cluster", CLUSTER, "--port", "8080",
                                 "--dot", f"/dev/fd/{write}"], cwd=tmp_path, capture_output=True,
                                env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=TIME_LIMIT, pass_fds=(write,))
        os.close(write)
        assert result.returncode == 0, result.stderr[-2000:]
        assert reader.read().startswith(b"digraph connectivity {")


# --- integer options (F14) ---------------------------------------------------------------------

def test_certs_days_beyond_the_documented_bound_is_a_usage_error(tmp_path):
    for flag in ("--days", "--ca-days"):
        result = run_cli(["certs", "--service", "s", "--namespace", "n", "--out", "out", flag, "99999999"], tmp_path)
        assert result.returncode == 2 and b"Traceback" not in result.stderr, result.stderr[-2000:]
        assert "from 1 to 36,500 (100 years), got 99999999" in result.stderr.decode()
    huge = run_cli(["certs", "--service", "s", "--namespace", "n", "--days", "9" * 22], tmp_path)
    assert huge.returncode == 2 and b"is not a whole number" in huge.stderr
    assert not (tmp_path / "out").exists()


def test_certs_at_the_bound_works(tmp_path):
    result = run_cli(["certs", "--service", "s", "--namespace", "n", "--out", "out", "--days", "36500"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("args", [["certs", "--service", "s", "--namespace", "n", "--days"],
                                  ["certs", "--service", "s", "--namespace", "n", "--ca-days"],
                                  ["generate", "--map", "m.yaml", "--denied-sample"],
                                  ["serve", "--dev", "--workers"], ["serve", "--dev", "--threads"],
                                  ["controller", "--workers"]])
@pytest.mark.parametrize("value", ["８", "1_0", "٣"])
def test_integer_options_take_ascii_digits_only(tmp_path, args, value):
    result = run_cli([*args, value], tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    err = result.stderr.decode()
    assert f"'{value}' is not a whole number (ASCII digits 0-9" in err and "usage:" in err, err


def test_every_integer_option_uses_the_shared_type():
    for path in (REPO / "webhook").rglob("*.py"):
        assert "type=int" not in path.read_text(), path


def test_simulate_output_escapes_names_from_the_files(tmp_path):
    # Pod names in a snapshot are not validated as the API server would: one with a newline
    # and terminal escapes must not forge lines or reach the terminal raw in the matrix,
    # in a single verdict, or in --explain.
    cluster = tmp_path / "cluster"
    shutil.copytree(CLUSTER, cluster)
    (cluster / "zz-odd-pod.yaml").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: \"odd" + FORGED.replace("\n", "\\n") + "\\x1b[2J\"\n"
        "  namespace: shop\n  labels: {app: odd}\nspec:\n  containers:\n  - name: c\n    image: x\n"
        "    ports: [{containerPort: 8080}]\n")
    matrix = run_cli(["simulate", "--cluster", str(cluster), "--port", "8080"], tmp_path)
    listed = run_cli(["simulate", "--cluster", str(cluster), "--from", "shop/frontend", "--port", "8080",
                      "--explain"], tmp_path)
    for result in (matrix, listed):
        assert result.returncode == 0, result.stderr[-500:]
        assert "odd\\n::stop-commands" in result.stdout.decode(), result.stdout[-800:]
        assert_nothing_forged(result)
