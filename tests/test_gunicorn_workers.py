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
