"""gunicorn settings for `netpol-guard serve`, chosen by measurement (docs/benchmarks.md).

`serve` runs gunicorn in-process through its Python API (webhook/admission/server.py,
a BaseApplication subclass): no second argument parser, no config file on disk, and
the validated Config, the view source and the TLS paths are handed to the workers as
Python objects. These are the defaults; --workers and --threads override the first two.

- worker_class DeadlineWorker (webhook/admission/transport.py): gthread, whose I/O loop
  does the TLS handshake and reads each request whole - non-blocking, under deadlines -
  before a request thread runs the app. gthread because the API server keeps connections
  alive and gthread keeps them (sync workers close every connection, so each review would
  pay a full TLS handshake, ~3 ms of CPU). Plain gthread did the handshake and the reads
  in its request threads with no deadline: four clients sending one byte each held all
  threads of two workers and stopped admission (issue 13). gevent would also not block
  on them, but needs a new dependency and monkey-patching of the worker, which runs the
  live cache's kubernetes-client watch threads; keeping gthread's thread pool kept the
  measured throughput (docs/benchmarks.md, "Stalled connections").
- Connection deadlines (transport.py): TLS handshake 5 s from accept; a request (head and
  body) 5 s from the end of the handshake or from its first byte on a kept-alive
  connection (then 408); idle between requests up to keepalive (below); an answer the
  client does not read is sent by the I/O loop, not a request thread, and the connection
  reset if it is not taken within 5 s. Stalled connections are closed within ~5.5 s (the
  deadlines are checked every 0.25 s), well inside the API server's timeoutSeconds;
  a review the API server sends arrives in far less than 5 s.
- worker_connections 2048 per worker (the soft file-descriptor limit is raised to fit):
  a stalled connection costs ~35 KB (TLS state), so 2048 bound a worker to ~70 MB of
  them; at the limit the connection that has waited longest without a whole request is
  closed to make room, so stalled clients cannot fill the worker.
- workers: one process per CPU the server may use, at most 2 (default_workers()). The GIL
  caps a worker at one core, and each worker holds its own cluster view (memory x workers;
  see docs/operations.md), so more workers than CPUs buy nothing and cost a view each. The
  CPUs are the affinity mask and the container's CPU quota (cgroup v2 cpu.max or v1
  cfs_quota_us), rounded up: under the chart's default limit of one CPU that is one worker
  - two would hold two views against the memory limit and, running on two cores at once,
  use up the quota early in each CFS period and be throttled for the rest of it (a latency
  spike of up to the 100 ms period). At most 2 without --workers: on a large node with no
  limit, memory, not CPU, decides how many views to keep.
- threads 2, measured against 1 and 4 (python -m bench webhook, 3-5 runs each, 2 vCPU;
  docs/benchmarks.md): a review held the GIL for ~0.5 ms then (~0.3 ms now), so extra threads mostly
  queue on it - CPU per review rose with 4 threads (median 1,065-1,452 us vs
  1,050-1,330 us with 1-2) and throughput did not improve; p99 at 300 reviews/s was
  within run-to-run noise for 1, 2 and 4. Two rather than one so a long review does
  not hold up the other kept-alive connections of its worker (a connection stays on
  the worker that accepted it). Re-checked at 883c869: with 1 thread the webhook was
  unchanged and only the ceiling app slowed down.
- keepalive 120 s: longer than the API server's client keeps an idle connection (Go's
  default idle timeout, 90 s), so it is always the client that closes an idle
  connection - never the server at the moment the client reuses it - and connections
  are reused instead of re-handshaken. Idle connections are parked in the worker's
  poller, which costs nothing while they are idle; being idle between requests is
  allowed for keepalive, being stuck halfway through a handshake or a request is not
  (the deadlines above). (Not measured against other values: any
  value above the client's idle timeout behaves the same.)
- timeout 30 s: the API server gives up after timeoutSeconds (at most 30 s), so a
  worker stuck longer than that is useless; graceful_timeout 20 s lets in-flight
  reviews finish on shutdown within the pod's termination grace period.
- max_requests 0: no periodic worker recycling; a recycled worker would rebuild its
  live cache from a full list.
- logger_class QuietAccessLogger: gunicorn counts its access log as on whenever a
  logconfig_dict is given, so it formatted every request's access line (a timestamp, a
  dict of headers) only for the disabled gunicorn.access logger to drop it: 6-14 us per
  request (py-spy, docs/benchmarks.md). The audit line replaces the access log.
"""
from __future__ import annotations

import logging
import math
import os

from gunicorn.glogging import Logger as _GunicornLogger

WORKER_CLASS = "webhook.admission.transport.DeadlineWorker"  # gthread, fed only whole requests
WORKERS = 2  # at most, by default; see default_workers()
THREADS = 2
KEEPALIVE = 120
TIMEOUT = 30
GRACEFUL_TIMEOUT = 20
BACKLOG = 512
WORKER_CONNECTIONS = 2048  # per worker; see the module docstring (connection handling)
FD_RESERVE = 64  # descriptors a worker needs besides its connections (logs, pipes, the API server)
# gunicorn's header limits stay at their defaults; the body limit is server.maxRequestBytes.

LOGCONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "webhook.logging_setup.JSONFormatter"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
    "root": {"level": "INFO", "handlers": ["stderr"]},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["stderr"], "propagate": False, "qualname": "gunicorn.error"},
        # the audit line per decision replaces the access log (no request bodies, no query strings)
        "gunicorn.access": {"level": "WARNING", "handlers": [], "propagate": False, "qualname": "gunicorn.access"},
    },
}


class QuietAccessLogger(_GunicornLogger):
    """gunicorn's logger, building an access line only when gunicorn.access would keep it."""

    def access(self, resp, req, environ, request_time) -> None:
        if self.access_log.isEnabledFor(logging.INFO):
            super().access(resp, req, environ, request_time)


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def cpu_quota(root: str = "/sys/fs/cgroup") -> float | None:
    """CPUs the container's cgroup may use per period (e.g. 1.5), or None when unlimited or
    unknown. cgroup v2 first (`cpu.max`: "max 100000" or "150000 100000"), then v1."""
    v2 = _read(f"{root}/cpu.max")
    if v2 is not None:
        quota, _, period = v2.partition(" ")
        if quota == "max":
            return None
        try:
            return int(quota) / int(period or 100000)
        except (ValueError, ZeroDivisionError):
            return None
    for v1 in (f"{root}/cpu", f"{root}/cpu,cpuacct"):
        quota, period = _read(f"{v1}/cpu.cfs_quota_us"), _read(f"{v1}/cpu.cfs_period_us")
        if quota is None or period is None:
            continue
        try:
            q, p = int(quota), int(period)
        except ValueError:
            return None
        return q / p if q > 0 and p > 0 else None
    return None


def available_cpus(cgroup_root: str = "/sys/fs/cgroup") -> int:
    """The CPUs this process may run on (affinity mask), lowered to its cgroup quota rounded up."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    quota = cpu_quota(cgroup_root)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota - 1e-9)))  # a quota of exactly 2.0 is 2 CPUs
    return max(1, cpus)


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards `wanted` (never above the hard limit);
    the workers inherit it. Returns the soft limit in force."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
        if new > soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
                soft = new
            except (ValueError, OSError):
                pass
    return soft


def worker_connections() -> int:
    """WORKER_CONNECTIONS, or fewer when the file-descriptor limit cannot be raised that far."""
    soft = raise_fd_limit(WORKER_CONNECTIONS + FD_RESERVE)
    return max(64, min(WORKER_CONNECTIONS, soft - FD_RESERVE))


def default_workers(cgroup_root: str = "/sys/fs/cgroup") -> int:
    """One worker per available CPU, at most WORKERS (see the module docstring)."""
    return min(WORKERS, available_cpus(cgroup_root))


def settings(workers: int | None = None, threads: int | None = None) -> dict:
    """The gunicorn settings dict (names as in gunicorn's documentation)."""
    return {
        "worker_class": WORKER_CLASS,
        "workers": workers or default_workers(),
        "threads": threads or THREADS,
        "keepalive": KEEPALIVE,
        "timeout": TIMEOUT,
        "graceful_timeout": GRACEFUL_TIMEOUT,
        "backlog": BACKLOG,
        "worker_connections": worker_connections(),
        "max_requests": 0,
        # answers are written through DeadlineWorker's AnswerSink, never with sendfile()
        "sendfile": False,
        "preload_app": False,
        "logconfig_dict": LOGCONFIG,
        "accesslog": None,
        "logger_class": QuietAccessLogger,
        "proc_name": "netpol-guard",
        # gunicorn 27 opens a control socket under $HOME by default; the webhook needs none
        # (and the container's home is read-only).
        "control_socket_disable": True,
    }
