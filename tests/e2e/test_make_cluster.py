"""`make cluster` / `make cluster-down`, as a newcomer runs them (README, "See a real denial").

The targets run for real, with CLUSTER_STATE pointing at a directory of this test's own (a
developer's `.cluster/` is never touched). `make cluster` must print the export lines, and
with them `kubectl apply` of a bad example must print exactly what README shows;
`make cluster-down` must leave no process it started and no port they listened on.
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.e2e.cluster import PROCESSES
from tests.e2e.controlplane import REPO
from tests.e2e.test_admission import readme_console_blocks

README_COMMAND = "kubectl apply -f examples/policies/bad/egress-without-dns.yaml"


def make(target: str, state: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "KUBECONFIG")}
    return subprocess.run(["make", "--no-print-directory", target, f"CLUSTER_STATE={state}"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)


def session_members(sids: set[int]) -> dict[int, str]:
    """Every live process whose session is one of `sids` (each program the cluster starts
    gets a session of its own, so this includes gunicorn's workers): {pid: command}."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            if fields[0] != "Z" and int(fields[3]) in sids:
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
        except (OSError, IndexError, ValueError):
            continue
    return found


def listening_ports(pids: set[int]) -> set[int]:
    """TCP ports in LISTEN state on sockets the given processes hold."""
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    return {port for port, inode in _listeners() if inode in inodes}


def _listeners() -> list[tuple[int, str]]:
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if cols[3] == "0A":  # LISTEN
                out.append((int(cols[1].rsplit(":", 1)[1], 16), cols[9]))
    return out


def processes_naming(state: Path) -> dict[int, str]:
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(state) in cmd:
                found[int(entry.name)] = cmd[:160]
    return found


def owner_of(inode: str) -> str | None:
    """The command line of the process holding a socket inode (None: none visible)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) == f"socket:[{inode}]":
                    return (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
    return None


@pytest.fixture
def state(tmp_path):
    state = tmp_path / "cluster"
    yield state
    make("cluster-down", state)  # whatever happened, stop what the test started


def test_make_cluster_denies_as_readme_shows_and_cluster_down_leaves_nothing(state):
    up = make("cluster", state)
    assert up.returncode == 0, up.stderr[-3000:]
    lines = up.stdout.splitlines()
    kubeconfig = [line.removeprefix("export KUBECONFIG=") for line in lines if line.startswith("export KUBECONFIG=")]
    assert len(kubeconfig) == 1 and Path(kubeconfig[0]).is_absolute() and Path(kubeconfig[0]).is_file(), up.stdout
    path_line = [line for line in lines if re.fullmatch(r"export PATH=.*:\$PATH", line)]
    assert path_line, up.stdout
    tools = path_line[0].removeprefix("export PATH=").removesuffix(":$PATH")

    pids = {int((state / f"{name}.pid").read_text()) for name in PROCESSES}
    members = session_members(pids)
    assert pids <= set(members), members
    assert len(members) > len(pids), "gunicorn's workers should be running beside its arbiter"
    ports = listening_ports(set(members))
    assert len(ports) >= 5, ports  # etcd client+peer, kube-apiserver, kube-controller-manager, the webhook

    # the README's three commands, as a newcomer types them (kubectl from the printed PATH)
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env.update({"KUBECONFIG": kubeconfig[0], "PATH": f"{tools}:{os.environ['PATH']}"})
    res = subprocess.run(README_COMMAND.split(), cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    assert (res.stderr + res.stdout).rstrip("\n") == readme_console_blocks()[README_COMMAND]

    down = make("cluster-down", state)
    assert down.returncode == 0, down.stderr
    for name in PROCESSES:
        assert name in down.stdout, down.stdout
    assert session_members(pids) == {}, "processes left running after make cluster-down"
    assert processes_naming(state) == {}, "processes of this cluster left running after make cluster-down"
    # a port may already be another program's (the machine is shared): only its owner tells
    held = {port: owner_of(inode) for port, inode in _listeners() if port in ports}
    assert not {p: o for p, o in held.items() if o is None or str(state) in o}, held
    assert not any((state / f"{name}.pid").exists() for name in PROCESSES)
