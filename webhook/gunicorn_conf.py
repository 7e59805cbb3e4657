"""gunicorn settings for `netpol-guard serve`, chosen by measurement (docs/benchmarks.md).

`serve` runs gunicorn in-process through its Python API (webhook/admission/server.py,
a BaseApplication subclass): no second argument parser, no config file on disk, and
the validated Config, the view source and the TLS paths are handed to the workers as
Python objects. These are the defaults; --workers and --threads override the first two.

- worker_class "gthread": the API server keeps connections alive, and gthread keeps
  them (sync workers close every connection, so each review would pay a full TLS
  handshake, ~3 ms of CPU). gevent would need an extra dependency for no gain in p99.
- workers 2 x threads 4 on 2 cores: one process per core (the GIL caps a worker at
  one core); 4 threads cover the hand-off between the I/O loop and the handler. Each
  worker holds its own cluster view (memory x workers; see docs/operations.md).
- keepalive 75 s: longer than the API server idles a connection (its HTTP client
  closes idle connections after 90 s... but re-dials cheaply), so connections are
  reused instead of re-handshaken; gthread parks idle connections in its poller,
  which costs nothing while they are idle.
- timeout 30 s: the API server gives up after timeoutSeconds (at most 30 s), so a
  worker stuck longer than that is useless; graceful_timeout 20 s lets in-flight
  reviews finish on shutdown within the pod's termination grace period.
- max_requests 0: no periodic worker recycling; a recycled worker would rebuild its
  live cache from a full list.
"""
from __future__ import annotations

WORKER_CLASS = "gthread"
WORKERS = 2
THREADS = 4
KEEPALIVE = 75
TIMEOUT = 30
GRACEFUL_TIMEOUT = 20
BACKLOG = 512
WORKER_CONNECTIONS = 1000
# Requests larger than this never reach Flask's own limit check in pieces: gunicorn's
# header limits stay at their defaults; the body limit is server.maxRequestBytes.

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
