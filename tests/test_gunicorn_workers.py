"""The default worker count follows the CPUs the server may use: its affinity mask and its
container's CPU limit (cgroup v2 cpu.max or v1 cfs_quota_us), at most two."""
import os

import pytest

from tests.server_fixture import serve  # noqa: F401 (fixture)
from webhook import gunicorn_conf
from webhook.gunicorn_conf import available_cpus, cpu_quota, default_workers


def cgroup(tmp_path, files: dict[str, str]) -> str:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return str(tmp_path)


AFFINITY = len(os.sched_getaffinity(0))


@pytest.mark.parametrize("cpu_max, quota", [
    ("max 100000", None), ("100000 100000", 1.0), ("150000 100000", 1.5), ("50000 100000", 0.5),
    ("200000 100000", 2.0), ("nonsense", None),
])
def test_cgroup_v2_cpu_max(tmp_path, cpu_max, quota):
    assert cpu_quota(cgroup(tmp_path, {"cpu.max": cpu_max})) == quota


@pytest.mark.parametrize("directory", ["cpu", "cpu,cpuacct"])
def test_cgroup_v1_cfs_quota(tmp_path, directory):
    root = cgroup(tmp_path, {f"{directory}/cpu.cfs_quota_us": "50000", f"{directory}/cpu.cfs_period_us": "100000"})
    assert cpu_quota(root) == 0.5


def test_cgroup_v1_without_quota_and_no_cgroup_at_all(tmp_path):
    root = cgroup(tmp_path, {"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"})
    assert cpu_quota(root) is None
    assert cpu_quota(str(tmp_path / "missing")) is None
    assert available_cpus(str(tmp_path / "missing")) == AFFINITY


def test_a_limit_of_one_cpu_or_less_means_one_worker(tmp_path):
    for text in ("100000 100000", "10000 100000", "99999 100000"):
        root = cgroup(tmp_path / text.split()[0], {"cpu.max": text})
        assert available_cpus(root) == 1 and default_workers(root) == 1


@pytest.mark.skipif(AFFINITY < 2, reason="needs two CPUs in the affinity mask")
def test_a_fraction_above_one_rounds_up_and_the_default_stays_at_two(tmp_path):
    assert available_cpus(cgroup(tmp_path / "a", {"cpu.max": "150000 100000"})) == 2
    assert default_workers(cgroup(tmp_path / "b", {"cpu.max": "max 100000"})) == min(AFFINITY, gunicorn_conf.WORKERS)


def test_settings_use_the_default_unless_workers_are_given(tmp_path):
    assert gunicorn_conf.settings()["workers"] == default_workers()
    assert gunicorn_conf.settings(workers=3)["workers"] == 3


def test_serve_on_one_cpu_runs_one_worker(serve):
    # The real server, started as `taskset -c 0 netpol-guard serve` would start it.
    server = serve(["--cluster", "examples/cluster"], cpus={0})
    assert len(server.worker_pids()) == 1
    status, _ = server.get("/readyz")
    assert status == 200


@pytest.mark.skipif(AFFINITY < 2, reason="needs two CPUs in the affinity mask")
def test_serve_on_two_cpus_runs_two_workers(serve):
    server = serve(["--cluster", "examples/cluster"], cpus={0, 1})
    assert len(server.worker_pids()) == 2


ACCESS_PROBE = r"""
import io, json, logging, sys
from datetime import timedelta
from gunicorn.config import Config
from webhook import gunicorn_conf

built = []
cfg = Config()
for key, value in gunicorn_conf.settings(1, 2).items():
    cfg.set(key, value)
logger = cfg.logger_class(cfg)  # what serve's gunicorn builds (applies LOGCONFIG)
original_atoms = logger.atoms
logger.atoms = lambda *a: built.append(1) or original_atoms(*a)

class Resp:
    status, sent, headers = "200 OK", 42, []
class Req:
    method, path, query, version, headers, uri = "POST", "/validate", "", (1, 1), [], "/validate"
environ = {"REMOTE_ADDR": "127.0.0.1", "REQUEST_METHOD": "POST", "PATH_INFO": "/validate", "RAW_URI": "/validate",
           "QUERY_STRING": "", "SERVER_PROTOCOL": "HTTP/1.1"}

logger.access(Resp(), Req(), environ, timedelta(milliseconds=3))
quiet = len(built)
# A user who turns the access log on still gets it.
sink = io.StringIO()
access = logging.getLogger("gunicorn.access")
access.setLevel(logging.INFO)
access.addHandler(logging.StreamHandler(sink))
logger.access(Resp(), Req(), environ, timedelta(milliseconds=3))
print(json.dumps({"class": type(logger).__name__, "quiet": quiet, "on": len(built), "line": sink.getvalue()}))
"""


def test_no_access_line_is_built_while_the_access_log_is_off():
    # gunicorn counts its access log as on whenever a logconfig_dict is set (ours is), and
    # formatted every request's line only for the WARNING-level gunicorn.access to drop it.
    # In a subprocess: building gunicorn's logger applies the logging configuration.
    import json
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", ACCESS_PROBE], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["class"] == "QuietAccessLogger"
    assert got["quiet"] == 0
    assert got["on"] == 1 and "POST /validate" in got["line"]
