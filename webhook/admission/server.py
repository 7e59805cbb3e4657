"""Running the app under gunicorn through its Python API, and the controller hook.

Process model (gunicorn master + N forked workers):

- master: validates everything before binding (config, certificate files, view
  source construction, the controller module), binds the socket, forks workers,
  restarts dead ones, and, with --controller, runs the controller hook (below).
- each worker, after the fork: ``source.start()``, opens its metrics file, builds
  the Flask app; TLS contexts come from webhook.admission.tls (hot reload per
  connection); on exit ``source.stop()``.

The --controller hook: ``when_ready`` in the master (after the socket is bound)
starts ONE child process, with the "spawn" start method (so it shares no threads or
locks with the master), running ``webhook.isolation.controller.run(options)``, where
``options`` is a ``ControllerOptions`` (config, cluster paths, dev, kubeconfig). The function
should block until SIGTERM, then return (install a SIGTERM handler that stops its
loops; the default handler just ends the process, which is also acceptable). `serve`
checks at start-up that the function exists and exits 2 if not. The master stops it (SIGTERM, then SIGKILL
after graceful_timeout) when gunicorn exits, and logs if it dies. Exactly one
controller runs per serve process, whatever the number of workers.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import signal
from dataclasses import dataclass, field
from typing import Optional

from gunicorn.app.base import BaseApplication

from webhook import gunicorn_conf
from webhook.admission.tls import current as tls_current, gunicorn_ssl_context
from webhook.cluster.source import ViewSource
from webhook.config import Config
from webhook.metrics import Metrics

log = logging.getLogger("netpol_guard.server")
CONTROLLER_MODULE = "webhook.isolation.controller"
CONTROLLER_ENTRY = f"{CONTROLLER_MODULE}:run"


@dataclass(frozen=True)
class ControllerOptions:
    """What the controller process receives (picklable: it crosses a spawn)."""

    config: Config
    cluster_paths: tuple[str, ...] = ()
    dev: bool = False
    kubeconfig: Optional[str] = None  # serve --kubeconfig (None: in-cluster, else the default kubeconfig)


@dataclass
class ServeOptions:
    config: Config
    source: ViewSource
    cert: str
    key: str
    bind: str
    client_ca: Optional[str] = None
    workers: Optional[int] = None
    threads: Optional[int] = None
    metrics_dir: Optional[str] = None
    controller: Optional[ControllerOptions] = None
    controller_entry: str = CONTROLLER_ENTRY  # "module:function" (tests point it elsewhere)
    extra: dict = field(default_factory=dict)  # further gunicorn settings (benchmarks)


def controller_entry(entry: str = CONTROLLER_ENTRY):
    """The controller's run function ("module:function"), or an ImportError with a clear message."""
    import importlib
    module_name, _, func = entry.partition(":")
    try:
        mod = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(f"--controller: the isolation controller ({module_name}) is not available "
                          f"in this build ({exc})") from None
    run = getattr(mod, func, None)
    if not callable(run):
        raise ImportError(f"--controller: {module_name} has no {func}(options) function")
    return run


def _controller_main(entry: str, options: ControllerOptions) -> None:  # in the spawned child
    from webhook.logging_setup import configure
    configure()
    controller_entry(entry)(options)


class ControllerProcess:
    def __init__(self, options: ControllerOptions, grace: float, entry: str = CONTROLLER_ENTRY):
        self.options, self.grace, self.entry = options, grace, entry
        self.process: Optional[multiprocessing.Process] = None

    def start(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.process = ctx.Process(target=_controller_main, args=(self.entry, self.options),
                                   name="netpol-guard-controller")
        self.process.start()
        log.info("controller started in process %s", self.process.pid)

    def stop(self) -> None:
        p = self.process
        if p is None or p.pid is None:
            return
        if p.is_alive():
            os.kill(p.pid, signal.SIGTERM)
            p.join(self.grace)
            if p.is_alive():
                os.kill(p.pid, signal.SIGKILL)
                p.join(5)
        log.info("controller stopped (exit code %s)", p.exitcode)


class WebhookServer(BaseApplication):
    def __init__(self, options: ServeOptions):
        self.options = options
        self.controller: Optional[ControllerProcess] = None
        super().__init__(prog="netpol-guard serve")

    def load_config(self) -> None:
        o = self.options
        values = gunicorn_conf.settings(o.workers, o.threads)
        values.update({
            "bind": [o.bind],
            "certfile": o.cert,
            "keyfile": o.key,
            "ca_certs": o.client_ca,
            "ssl_context": gunicorn_ssl_context,
            "worker_exit": self._worker_exit,
            "when_ready": self._when_ready,
            "on_exit": self._on_exit,
        })
        values.update(o.extra)
        for key, value in values.items():
            self.cfg.set(key, value)

    # --- hooks ------------------------------------------------------------------------
    def _when_ready(self, server) -> None:  # master
        if self.options.controller is not None and self.controller is None:
            self.controller = ControllerProcess(self.options.controller, float(self.cfg.graceful_timeout),
                                                self.options.controller_entry)
            self.controller.start()

    def _on_exit(self, server) -> None:  # master
        if self.controller is not None:
            self.controller.stop()

    def _worker_exit(self, server, worker) -> None:  # worker
        try:
            self.options.source.stop()
        except Exception:  # noqa: BLE001 - exiting anyway; say why
            log.exception("view source did not stop cleanly")

    def load(self):  # in each worker, after the fork (preload_app is off)
        from webhook.admission.app import create_app

        o = self.options
        o.source.start()
        tls = tls_current(o.cert, o.key, o.client_ca)
        return create_app(o.config, o.source, Metrics(o.metrics_dir), tls)
