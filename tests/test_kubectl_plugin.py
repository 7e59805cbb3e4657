"""`kubectl netpol-guard ...` through the real kubectl's plugin mechanism, and shell
completion (`netpol-guard completion bash|zsh`) loaded into real bash and zsh."""
import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def kubectl():
    found = sorted(glob.glob(os.path.expanduser("~/.cache/netpol-guard/controlplane/*/bin/kubectl")))
    return found[-1] if found else shutil.which("kubectl")


@pytest.fixture
def plugin_env():
    k = kubectl()
    if not k:
        pytest.skip("no kubectl binary: the control-plane build (scripts/controlplane) puts one in "
                    "~/.cache/netpol-guard/controlplane/*/bin")
    if not (BIN / "kubectl-netpol_guard").exists():
        pytest.skip("kubectl-netpol_guard is not installed: pip install -e . (pyproject console script)")
    # only the venv's bin and the system's: the plugin is found on PATH like any other
    return k, dict(os.environ, PATH=f"{BIN}{os.pathsep}/usr/bin:/bin", KUBECONFIG="/nonexistent")


def test_kubectl_plugin_list_finds_the_plugin(plugin_env):
    k, env = plugin_env
    r = subprocess.run([k, "plugin", "list"], env=env, capture_output=True, text=True)
    assert str(BIN / "kubectl-netpol_guard") in r.stdout, r.stdout + r.stderr
    assert "warning" not in r.stderr.lower(), r.stderr  # e.g. not executable, or shadowed


def test_kubectl_netpol_guard_lint_and_simulate_work(plugin_env):
    k, env = plugin_env
    r = subprocess.run([k, "netpol-guard", "lint", "--cluster", "examples/cluster",
                        "examples/policies/bad/egress-without-dns.yaml"], cwd=REPO, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 1 and "[dns-egress-missing]" in r.stdout, r.stdout + r.stderr
    r = subprocess.run([k, "netpol-guard", "simulate", "--cluster", "examples/cluster", "--from", "shop/frontend",
                        "--to", "shop/api", "--port", "8080", "--format", "json"], cwd=REPO, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0 and '"allowed": true' in r.stdout, r.stdout + r.stderr
    r = subprocess.run([k, "netpol-guard", "lint", "--help"], env=env, capture_output=True, text=True)
    assert r.stdout.startswith("usage: kubectl netpol-guard lint")


# --- completion ---------------------------------------------------------------------------------

def _script(shell):
    r = subprocess.run([sys.executable, "-m", "webhook", "completion", shell], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


BASH_DRIVER = r"""
source "$1"; shift
COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); COMPREPLY=()
_netpol_guard
printf '%s\n' "${COMPREPLY[@]}"
"""


def bash_complete(tmp_path, *words):
    script = tmp_path / "netpol-guard.bash"
    script.write_text(_script("bash"))
    r = subprocess.run(["bash", "-c", BASH_DRIVER, "driver", str(script), *words], cwd=REPO,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return set(r.stdout.split())


def test_bash_completes_commands_flags_choices_and_paths(tmp_path):
    from webhook.cli import COMMAND_MODULES
    assert bash_complete(tmp_path, "netpol-guard", "") >= set(COMMAND_MODULES)
    assert bash_complete(tmp_path, "netpol-guard", "sim") == {"simulate"}
    assert bash_complete(tmp_path, "netpol-guard", "lint", "--ex") == {"--exclude", "--explain"}
    assert bash_complete(tmp_path, "netpol-guard", "lint", "--format", "") == {"text", "json", "sarif", "github",
                                                                              "junit"}
    assert bash_complete(tmp_path, "kubectl-netpol_guard", "isolation", "render", "--mode", "") == \
        {"all", "ingress", "egress"}
    assert bash_complete(tmp_path, "netpol-guard", "lint", "--cluster", "examples/clu") == {"examples/cluster"}
    assert bash_complete(tmp_path, "netpol-guard", "completion", "") >= {"bash", "zsh"}
    r = subprocess.run(["bash", "-c", f"source <({sys.executable} -m webhook completion bash); complete -p netpol-guard"],
                       capture_output=True, text=True)
    assert "-F _netpol_guard" in r.stdout


def test_zsh_loads_the_completion_for_both_programs(tmp_path):
    if not shutil.which("zsh"):
        pytest.skip("zsh is not installed")
    script = tmp_path / "_netpol-guard"
    script.write_text(_script("zsh"))
    assert subprocess.run(["zsh", "-n", str(script)]).returncode == 0
    r = subprocess.run(["zsh", "-f", "-c", f"autoload -Uz compinit && compinit -u -d {tmp_path}/zcompdump && "
                        f"source {script} && print -r -- $_comps[netpol-guard] $_comps[kubectl-netpol_guard] && "
                        "whence -w _netpol_guard_lint _netpol_guard_isolation_render"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "_netpol_guard _netpol_guard"
    assert "_netpol_guard_lint: function" in r.stdout and "_netpol_guard_isolation_render: function" in r.stdout
    assert "'--format[" in script.read_text() and "(text json sarif github junit)" in script.read_text()


def test_kubectl_completes_the_plugins_commands_and_flags(plugin_env):
    k, env = plugin_env
    if not (BIN / "kubectl_complete-netpol_guard").exists():
        pytest.skip("kubectl_complete-netpol_guard is not installed: pip install -e .")

    def complete(*words):
        r = subprocess.run([k, "__complete", "netpol-guard", *words], env=env, capture_output=True, text=True)
        lines = r.stdout.splitlines()
        return set(lines[:-1]), lines[-1]

    assert complete("si") == ({"simulate"}, ":4")
    assert complete("lint", "--format", "") == ({"text", "json", "sarif", "github", "junit"}, ":4")
    assert complete("isolation", "render", "--mo") == ({"--mode"}, ":4")
    assert complete("lint", "--cluster", "")[1] == ":0"  # the shell completes a path
