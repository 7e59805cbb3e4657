"""gunicorn settings for `netpol-guard serve`, chosen by measurement (docs/benchmarks.md).

`serve` runs gunicorn in-process through its Python API (webhook/admission/server.py,
a BaseApplication subclass): no second argument parser, no config file on disk, and
the validated Config, the view source and the TLS paths are handed to the workers as
Python objects. These are the defaults; --workers and --threads override the first two.

- worker_class "gthread": the API server keeps connections alive, and gthread keeps
  them (sync workers close every connection, so each review would pay a full TLS
  handshake, ~3 ms of CPU). gevent would need an extra dependency for no gain in p99.
- workers 2: one process per core (the GIL caps a worker at one core). Each worker
  holds its own cluster view (memory x workers; see docs/operations.md).
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
  are reused instead of re-handshaken. gthread parks idle connections in its poller,
  which costs nothing while they are idle. (Not measured against other values: any
  value above the client's idle timeout behaves the same.)
- timeout 30 s: the API server gives up after timeoutSeconds (at most 30 s), so a
  worker stuck longer than that is useless; graceful_timeout 20 s lets in-flight
  reviews finish on shutdown within the pod's termination grace period.
- max_requests 0: no periodic worker recycling; a recycled worker would rebuild its
  live cache from a full list.
"""
from __future__ import annotations

WORKER_CLASS = "gthread"
WORKERS = 2
THREADS = 2
KEEPALIVE = 120
TIMEOUT = 30
GRACEFUL_TIMEOUT = 20
BACKLOG = 512
WORKER_CONNECTIONS = 1000
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


def settings(workers: int | None = None, threads: int | None = None) -> dict:
    """The gunicorn settings dict (names as in gunicorn's documentation)."""
    return {
        "worker_class": WORKER_CLASS,
        "workers": workers or WORKERS,
        "threads": threads or THREADS,
        "keepalive": KEEPALIVE,
        "timeout": TIMEOUT,
        "graceful_timeout": GRACEFUL_TIMEOUT,
        "backlog": BACKLOG,
        "worker_connections": WORKER_CONNECTIONS,
        "max_requests": 0,
        "preload_app": False,
        "logconfig_dict": LOGCONFIG,
        "accesslog": None,
        "proc_name": "netpol-guard",
        # gunicorn 27 opens a control socket under $HOME by default; the webhook needs none
        # (and the container's home is read-only).
        "control_socket_disable": True,
    }
