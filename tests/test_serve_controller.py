"""The --controller hook: one controller process beside the workers, started by the
gunicorn master after it binds, stopped when the server stops."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tests.server_fixture import REPO, Client, free_port, make_certs

PROBE_FILE = "NPG_CONTROLLER_PROBE"


def probe_controller(options) -> None:
    """Stands in for webhook.isolation.controller.run: records what it got, waits for SIGTERM."""
    path = os.environ[PROBE_FILE]
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    with open(path, "a") as fh:
        fh.write(json.dumps({"event": "started", "pid": os.getpid(), "ppid": os.getppid(),
                             "mode": options.config.mode, "cluster": list(options.cluster_paths)}) + "\n")
    deadline = time.monotonic() + 120  # bounded, whatever happens to the test
    while not stopping and time.monotonic() < deadline:
        time.sleep(0.05)
    with open(path, "a") as fh:
        fh.write(json.dumps({"event": "stopped", "pid": os.getpid()}) + "\n")


SERVER = textwrap.dedent("""
    import sys
    from webhook.admission.server import ControllerOptions, ServeOptions, WebhookServer
    from webhook.cluster.source import EmptySource
    from webhook.config import from_dict
    cert, key, bind = sys.argv[1:4]
    config = from_dict({"mode": "warn"})
    WebhookServer(ServeOptions(config=config, source=EmptySource(), cert=cert, key=key, bind=bind, workers=2,
                               threads=1, controller=ControllerOptions(config, ("examples/cluster",)),
                               controller_entry="tests.test_serve_controller:probe_controller")).run()
""")


def _events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _wait(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_one_controller_process_runs_beside_the_workers_and_stops_with_the_server(tmp_path):
    certs = make_certs(tmp_path / "tls")
    probe = tmp_path / "probe.jsonl"
    port = free_port()
    env = {**os.environ, PROBE_FILE: str(probe), "PYTHONPATH": str(REPO)}
    with open(tmp_path / "server.log", "wb") as log:
        server = subprocess.Popen([sys.executable, "-c", SERVER, certs.cert, certs.key, f"127.0.0.1:{port}"],
                                  cwd=str(REPO), env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        assert _wait(lambda: any(e["event"] == "started" for e in _events(probe))), (tmp_path / "server.log").read_text()
        client = Client(port, certs.ca)
        assert _wait(lambda: _ready(client))
        client.close()
        started = [e for e in _events(probe) if e["event"] == "started"]
        assert len(started) == 1  # one controller, not one per worker
        assert started[0]["ppid"] == server.pid  # a child of the gunicorn master
        assert started[0]["mode"] == "warn" and started[0]["cluster"] == ["examples/cluster"]
    finally:
        os.kill(server.pid, signal.SIGTERM)
        server.wait(30)
    events = _events(probe)
    assert [e["event"] for e in events] == ["started", "stopped"]
    assert not Path(f"/proc/{events[0]['pid']}").exists()


def _ready(client: Client) -> bool:
    try:
        return client.get("/readyz")[0] == 200
    except OSError:
        return False


def test_serve_controller_runs_the_isolation_controller_idle_beside_a_snapshot(tmp_path):
    """The real entry point through the real CLI: with --cluster there is nothing to reconcile,
    so the controller says so and waits; it stops with the server."""
    from tests.server_fixture import start_server

    server = start_server(["--cluster", "examples/cluster", "--workers", "1", "--controller"],
                          workdir=str(tmp_path))
    try:
        assert _wait(lambda: "isolation controller idle" in server.log_text()), server.log_text()
        spawned = [pid for pid in server.worker_pids()
                   if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        assert len(spawned) == 1  # one controller process (besides the worker and multiprocessing's tracker)
    finally:
        code = server.stop()
    assert code == 0
    assert "controller stopped" in server.log_text()


def test_a_missing_controller_entry_point_is_a_clear_start_up_error():
    import pytest
    from webhook.admission.server import controller_entry

    with pytest.raises(ImportError, match=r"--controller: the isolation controller \(webhook.nope\) is not available"):
        controller_entry("webhook.nope:run")
    with pytest.raises(ImportError, match=r"--controller: webhook.config has no run\(options\) function"):
        controller_entry("webhook.config:run")


def test_a_clean_stop_prints_no_traceback(tmp_path):
    """SIGTERM with the pod agent running: the master stops the agent and the workers exit
    without an error. Each worker is forked after the agent was started, so it inherited
    multiprocessing's record of the master's children; at exit multiprocessing then tried to
    join the agent from the worker ("AssertionError: can only join a child process", one
    traceback per worker)."""
    from tests.server_fixture import start_server

    server = start_server(["--cluster", "examples/cluster", "--workers", "2", "--controller"],
                          workdir=str(tmp_path))
    try:
        assert _wait(lambda: "isolation controller idle" in server.log_text()), server.log_text()
    finally:
        code = server.stop()
    assert code == 0
    log = server.log_text()
    assert "controller stopped" in log  # the agent was there, and was stopped by the master
    assert "Traceback" not in log and "Error in atexit" not in log, log
