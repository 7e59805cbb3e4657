"""connectivity-tests.sh: its structure, and its behaviour run against a kubectl stand-in whose
`exec` runs the probe on this machine against real 127.0.0.1 sockets, with a chosen set of
tools on PATH (there is no cluster here; the probing logic itself is what is tested)."""
from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import threading

import pytest

from webhook.generate.mapparse import parse_map
from webhook.generate.script import plan, render

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASH = shutil.which("bash")

FAKE_KUBECTL = r"""#!/bin/bash
# kubectl stand-in: every namespace has, per label selector, one running pod at 127.0.0.1
# named after the namespace and selector, except in namespace "missing"; `exec` runs the
# command here with PATH limited to $FAKE_TOOLS_DIR (the "image").
echo "$*" >> "$FAKE_LOG"
cmd=$1; shift
case "$cmd" in
  get)
    ns=""; out=""; sel=""
    while [ $# -gt 0 ]; do
      case "$1" in -n) ns=$2; shift;; -o) out=$2; shift;; -l) sel=$2; shift;; esac; shift
    done
    [ "$ns" = missing ] && exit 0
    name="pod-$ns${sel:+-}${sel//[^a-z0-9]/-}"
    case "$out" in
      *range*) printf '%s 127.0.0.1
' "$name";;
      *podIP*) printf 127.0.0.1;;
      *) printf '%s' "$name";;
    esac;;
  exec)
    shift 3; [ "$1" = -- ] && shift; shift  # -n NS POD -- sh
    exec env -i PATH="$FAKE_TOOLS_DIR" /bin/sh "$@";;
  *) echo "unexpected kubectl $cmd" >&2; exit 9;;
esac
"""


class Listener:
    """A TCP server on 127.0.0.1 that accepts and closes connections (a 'pod' that is up)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            conn.close()

    def close(self):
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connections are refused at once
    return port


@pytest.fixture
def listener():
    lst = Listener()
    yield lst
    lst.close()


def tools_dir(tmp_path, names):
    d = tmp_path / "tools"
    d.mkdir(exist_ok=True)
    for n in names:
        path = shutil.which(n)
        if path is None:
            pytest.skip(f"{n} is not installed here")
        (d / n).symlink_to(path)
    return str(d)


def run_script(tmp_path, map_text, tools, extra_env=None):
    cmap = parse_map(map_text, "probe-map.yaml")
    script = tmp_path / "connectivity-tests.sh"
    script.write_text(render(cmap))
    kubectl = tmp_path / "kubectl"
    kubectl.write_text(FAKE_KUBECTL)
    kubectl.chmod(kubectl.stat().st_mode | stat.S_IXUSR)
    env = {"PATH": os.environ["PATH"], "KUBECTL": str(kubectl), "FAKE_LOG": str(tmp_path / "kubectl.log"),
           "FAKE_TOOLS_DIR": tools_dir(tmp_path, tools), "DNS_NAME": "localhost", "PROBE_TIMEOUT": "2"}
    env.update(extra_env or {})
    proc = subprocess.run([BASH, str(script)], env=env, capture_output=True, text=True, timeout=60)
    return proc


def probe_map(server_port: int, client_port: int, client_ns: str = "a") -> str:
    namespaces = "a" if client_ns == "a" else f"a, {client_ns}"
    return f"""\
namespaces: [{namespaces}]
workloads:
  - {{name: server, namespace: a, labels: {{app: server}}, ports: [{server_port}]}}
  - {{name: client, namespace: {client_ns}, labels: {{app: client}}, ports: [{client_port}]}}
flows:
  - {{from: {client_ns}/client, to: a/server, ports: [{server_port}]}}
"""


def rows(stdout: str) -> list[list[str]]:
    return [line.split() for line in stdout.splitlines()
            if line.split() and line.split()[0] in ("PASS", "FAIL", "NO-TOOL", "NO-POD", "ERROR", "SKIP")]


@pytest.mark.parametrize("tools", [["curl", "getent"], ["wget", "getent"], ["bash", "timeout", "getent"]],
                         ids=["curl", "wget", "bash-dev-tcp"])
def test_all_as_expected_exits_zero_with_each_tool(tmp_path, listener, tools):
    proc = run_script(tmp_path, probe_map(listener.port, closed_port()), tools)
    table = rows(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [r[:2] for r in table] == [["PASS", "open"], ["PASS", "closed"], ["PASS", "open"], ["PASS", "open"]]
    assert table[0][2:5] == ["a/client", "a/server", f"{listener.port}/TCP"]
    assert "4 passed, 0 failed, 0 could not run, 0 skipped" in proc.stdout
    assert proc.stdout.splitlines()[0].split() == ["RESULT", "EXPECT", "FROM", "TO", "PORT", "DETAIL"]


def test_a_flow_that_should_connect_but_does_not_fails(tmp_path):
    proc = run_script(tmp_path, probe_map(closed_port(), closed_port()), ["curl", "getent"])
    assert proc.returncode == 1
    assert rows(proc.stdout)[0][:2] == ["FAIL", "open"]
    assert "1 failed" in proc.stdout


def test_a_flow_that_should_be_blocked_but_connects_fails(tmp_path, listener):
    # client's port is where the listener is: the denied sample (server -> client) connects
    proc = run_script(tmp_path, probe_map(listener.port, listener.port), ["curl", "getent"])
    assert proc.returncode == 1
    assert ["FAIL", "closed", "a/server", "a/client"] == rows(proc.stdout)[1][:4]


def test_image_without_tools_is_no_tool_not_pass_or_fail(tmp_path, listener):
    proc = run_script(tmp_path, probe_map(listener.port, closed_port()), [])
    assert proc.returncode == 2
    assert {r[0] for r in rows(proc.stdout)} == {"NO-TOOL"}
    assert "0 passed, 0 failed, 4 could not run" in proc.stdout


def test_missing_pods_are_reported_not_failed(tmp_path, listener):
    proc = run_script(tmp_path, probe_map(listener.port, closed_port(), client_ns="missing"), ["curl", "getent"])
    assert proc.returncode == 2
    table = rows(proc.stdout)
    assert table[0][:3] == ["NO-POD", "open", "missing/client"]


# --- structure --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["three-tier", "api-egress", "ingress-monitoring"])
def test_example_scripts_have_valid_syntax_and_every_check(tmp_path, name):
    path = os.path.join(ROOT, "examples", "maps", f"{name}.yaml")
    with open(path) as fh:
        cmap = parse_map(fh.read(), path)
    text = render(cmap)
    script = tmp_path / "t.sh"
    script.write_text(text)
    syntax = subprocess.run([BASH, "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert syntax.returncode == 0, syntax.stderr
    assert text.startswith("#!/usr/bin/env bash\n")
    for needle in ('"$KUBECTL" exec -n', 'nc -z -w "$t"', '--max-time "$t"', 'wget -t 1 -T "$t"',
                   'nslookup "$n"', 'getent hosts "$n"', "echo no-tool", 'exit 1; fi'):
        assert needle in text, needle
    checks = [line for line in text.splitlines() if line.startswith("check ")]
    dns_checks = [line for line in text.splitlines() if line.startswith("check_dns ")]
    allowed = {(f.source.key, f.destination.key, p.number) for f in cmap.flows for p in f.ports}
    assert len([c for c in checks if c.startswith("check open ")]) == len(allowed)
    assert len(dns_checks) == len([w for w in cmap.workloads if cmap.managed(w.namespace)])
    assert any(c.startswith("check closed ") for c in checks)


def test_plan_samples_denied_flows_deterministically_and_respects_the_limit():
    cmap = parse_map("""\
namespaces: [a]
workloads:
""" + "".join(f"  - {{name: w{i}, namespace: a, labels: {{app: w{i}}}, ports: [80]}}\n" for i in range(6)), "m")
    denied = [p for p in plan(cmap) if p.expect == "closed"]
    assert [(p.src_label, p.dst_label) for p in denied] == [(f"a/w{i}", "a/w1" if i == 0 else "a/w0")
                                                            for i in range(6)]
    assert len([p for p in plan(cmap, denied_sample=2) if p.expect == "closed"]) == 2
    assert render(cmap) == render(cmap)


def test_egress_sources_get_a_metadata_probe():
    with open(os.path.join(ROOT, "examples", "maps", "api-egress.yaml")) as fh:
        cmap = parse_map(fh.read(), "api-egress.yaml")
    meta = [p for p in plan(cmap) if p.address]
    assert [(p.expect, p.src_label, p.address, p.port) for p in meta] == \
        [("closed", "payments/api", "169.254.169.254", 80)]


def test_namespace_wide_source_uses_any_pod_of_the_namespace(tmp_path, listener):
    text = f"""\
namespaces: [a, b]
workloads:
  - {{name: server, namespace: a, labels: {{app: server}}, ports: [{listener.port}]}}
flows:
  - {{from: {{namespace: b}}, to: server, ports: [{listener.port}]}}
"""
    proc = run_script(tmp_path, text, ["curl", "getent"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert rows(proc.stdout)[0][:4] == ["PASS", "open", "b/*", "a/server"]
    gets = [line for line in (tmp_path / "kubectl.log").read_text().splitlines() if line.startswith("get pods -n b")]
    assert gets and all(" -l " not in g for g in gets)


def test_a_flow_from_a_workload_to_itself_is_not_probed_from_the_same_pod(tmp_path, listener):
    # issue 15: the only destination pod being the source pod tests no policy at all
    text = f"""\
namespaces: [a]
workloads:
  - {{name: peer, namespace: a, labels: {{app: peer}}, ports: [{listener.port}]}}
flows:
  - {{from: a/peer, to: a/peer, ports: [{listener.port}]}}
"""
    proc = run_script(tmp_path, text, ["curl", "getent"])
    row = next(r for r in rows(proc.stdout) if r[2] == "a/peer" and r[3] == "a/peer")
    assert row[:2] == ["SKIP", "open"] and "pod-a-app-peer is the only destination pod" in proc.stdout
    assert "FAIL" not in [r[0] for r in rows(proc.stdout)] and proc.returncode == 0, proc.stdout
    execs = [l for l in (tmp_path / "kubectl.log").read_text().splitlines() if l.startswith("exec") and "127.0.0.1" in l]
    assert not any(str(listener.port) in l for l in execs), "the pod probed itself"
