"""Running the app under gunicorn through its Python API, and the pod agent.

Process model (gunicorn master + N forked workers + at most one agent):

- master: validates everything before binding (config, certificate files, view
  source construction, the controller module), builds the one TLS reloader the workers
  inherit, binds the socket, forks workers, restarts dead ones, and starts the pod agent
  (below) when there is work for it.
- each worker, after the fork: ``source.start()``, opens its metrics file, builds
  the Flask app; the TLS context for each connection comes from the reloader (hot
  reload, webhook.admission.tls); on exit ``source.stop()``.

The pod agent: ``when_ready`` in the master (after the socket is bound) starts ONE
child process, with the "spawn" start method (so it shares no threads or locks with the
master), running ``webhook.agent.run(options)`` with an ``AgentOptions``. It holds the
pod's single leader elector and runs, as configured, the isolation controller
(``--controller``) and the certificate manager (``certificates.selfManaged``): both
single-writer roles lead together on the elected pod, once per pod, never per worker.
It blocks until SIGTERM. The master stops it (SIGTERM, then SIGKILL after
graceful_timeout) when gunicorn exits. If it dies before that (a crash, the OOM killer),
a watcher thread in the master logs it and starts a new one, after a back-off that grows
from 1 s to 60 s while it keeps dying young: without the agent, certificates would stop
rotating and isolated namespaces would drift unnoticed while the webhook kept answering.

Waiting for a certificate (selfManaged, first install): ``ServeOptions.placeholder``
names a throwaway certificate that gunicorn is given (it insists on an existing
certfile at bind time) and the reloader serves until the real files appear; see
webhook.admission.tls.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

from gunicorn.app.base import BaseApplication

from webhook import gunicorn_conf
from webhook.admission.tls import ReloadingContext
from webhook.cluster.source import ViewSource
from webhook.config import Config
from webhook.metrics import Metrics

log = logging.getLogger("netpol_guard.server")
CONTROLLER_MODULE = "webhook.isolation.controller"
CONTROLLER_ENTRY = f"{CONTROLLER_MODULE}:run"
AGENT_ENTRY = "webhook.agent:run"


@dataclass(frozen=True)
class AgentOptions:
    """What the pod agent process receives (picklable: it crosses a spawn)."""

    config: Config
    cluster_paths: tuple[str, ...] = ()
    dev: bool = False
    kubeconfig: Optional[str] = None  # serve --kubeconfig (None: in-cluster, else the default kubeconfig)
    controller: bool = True  # run the isolation controller (serve --controller)
    certificates: bool = False  # run the certificate manager (certificates.selfManaged)
    namespace: Optional[str] = None  # POD_NAMESPACE: the Secret's and the Lease's namespace
    metrics_dir: Optional[str] = None  # where the agent's audit counters and gauges go (serve sets it)


# The agent began as the controller process; the old name still reads naturally for it.
ControllerOptions = AgentOptions


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
    controller: Optional[AgentOptions] = None  # the pod agent's options; None: no agent process
    controller_entry: str = AGENT_ENTRY  # "module:function" the agent runs (tests point it elsewhere)
    placeholder: Optional[tuple[str, str]] = None  # (cert, key) served until --cert/--key first load
    waiting_for: str = ""  # what /readyz says it waits for meanwhile
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


def _agent_main(entry: str, options: AgentOptions) -> None:  # in the spawned child
    from webhook.logging_setup import configure
    configure()
    controller_entry(entry)(options)


class AgentProcess:
    WATCH_INTERVAL = 1.0  # seconds between liveness checks
    BACKOFF_MAX = 60.0
    STEADY = 60.0  # an agent that ran this long died of something new: back-off starts over

    def __init__(self, options: AgentOptions, grace: float, entry: str = AGENT_ENTRY):
        self.options, self.grace, self.entry = options, grace, entry
        self.process: Optional[multiprocessing.Process] = None
        self._stopping = threading.Event()
        self._watcher: Optional[threading.Thread] = None
        self._started_at = 0.0

    def start(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.process = ctx.Process(target=_agent_main, args=(self.entry, self.options),
                                   name="netpol-guard-agent")
        self._started_at = time.monotonic()  # before start(): a start that fails counts as dying young
        self.process.start()
        log.info("pod agent started in process %s (%s)", self.process.pid, _roles(self.options))
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, name="netpol-guard-agent-watcher", daemon=True)
            self._watcher.start()

    def alive(self) -> bool:
        p = self.process
        if p is None or p.pid is None:
            return False
        if p.exitcode is not None:
            return False
        # gunicorn's master reaps every child on SIGCHLD, ours included, so multiprocessing
        # may never learn of the exit; the pid is gone once it has been reaped.
        try:
            os.kill(p.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # a reused pid of someone else's
            return False
        p.is_alive()  # reaps it (and records the exit code) if it is ours and a zombie
        return p.exitcode is None

    def _watch(self) -> None:
        backoff = 1.0
        while not self._stopping.wait(self.WATCH_INTERVAL):
            if self.alive():
                continue
            ran = time.monotonic() - self._started_at
            code = self.process.exitcode if self.process is not None else None
            if ran >= self.STEADY:
                backoff = 1.0
            log.error("the pod agent (process %s, %s) ended after %.0f s (exit code %s); starting a new "
                      "one in %.0f s", self.process.pid if self.process else "?", _roles(self.options), ran,
                      "unknown" if code is None else code, backoff)
            if self._stopping.wait(backoff):
                return
            backoff = min(backoff * 2, self.BACKOFF_MAX)
            try:
                self.start()
            except Exception:  # noqa: BLE001 - keep watching; the next round tries again
                log.exception("could not start the pod agent")

    def stop(self) -> None:
        self._stopping.set()
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(self.WATCH_INTERVAL + 5)
        p = self.process
        if p is None or p.pid is None:
            return
        # gunicorn's master reaps every child it is told about (SIGCHLD), ours included, so
        # an agent that already ended may be gone without multiprocessing knowing it.
        try:
            if p.is_alive():
                os.kill(p.pid, signal.SIGTERM)
                p.join(self.grace)
                if p.is_alive():
                    os.kill(p.pid, signal.SIGKILL)
                    p.join(5)
        except ProcessLookupError:
            log.warning("the pod agent (process %s) had already ended", p.pid)
            return
        log.info("%s stopped (pod agent, exit code %s)", _roles(self.options), p.exitcode)


def forget_inherited_children() -> None:
    """Clear multiprocessing's set of child processes in a freshly forked process (its parent's
    children are not its own). multiprocessing keeps no public API for this; its own forked
    children reset the same module-level set (multiprocessing.process._bootstrap)."""
    import multiprocessing.process
    children = getattr(multiprocessing.process, "_children", None)
    if isinstance(children, set):
        children.clear()


def _roles(options: AgentOptions) -> str:
    roles = [name for name, on in (("isolation controller", options.controller),
                                   ("certificate manager", options.certificates)) if on]
    return " and ".join(roles) or "no roles"


class WebhookServer(BaseApplication):
    def __init__(self, options: ServeOptions):
        self.options = options
        self.controller: Optional[AgentProcess] = None
        # The worker (webhook.admission.transport) buffers a request body up to this size
        # before a request thread sees it; a larger one goes to the app with only its head.
        self.max_request_bytes = options.config.server.maxRequestBytes
        # Built here, in the master, unloaded: every worker inherits it through the fork and
        # loads (and reloads) the files itself on its first connection.
        self.tls = ReloadingContext(options.cert, options.key, options.client_ca,
                                    placeholder=options.placeholder, waiting_for=options.waiting_for)
        super().__init__(prog="netpol-guard serve")

    def load_config(self) -> None:
        o = self.options
        values = gunicorn_conf.settings(o.workers, o.threads)
        values.update({
            "bind": [o.bind],
            # gunicorn refuses to bind without an existing certfile; before the real one
            # exists it gets the placeholder (our ssl_context hook decides what is served).
            "certfile": o.placeholder[0] if o.placeholder else o.cert,
            "keyfile": o.placeholder[1] if o.placeholder else o.key,
            "ca_certs": o.client_ca,
            "ssl_context": self._ssl_context,
            "post_fork": self._post_fork,
            "worker_exit": self._worker_exit,
            "when_ready": self._when_ready,
            "on_exit": self._on_exit,
        })
        values.update(o.extra)
        for key, value in values.items():
            self.cfg.set(key, value)

    # --- hooks ------------------------------------------------------------------------
    def _ssl_context(self, conf, default_ssl_context_factory):  # worker, every accepted connection
        return self.tls.context()

    def _when_ready(self, server) -> None:  # master
        if self.options.controller is not None and self.controller is None:
            self.controller = AgentProcess(self.options.controller, float(self.cfg.graceful_timeout),
                                           self.options.controller_entry)
            self.controller.start()

    def _on_exit(self, server) -> None:  # master
        if self.controller is not None:
            self.controller.stop()

    def _post_fork(self, server, worker) -> None:  # worker, right after the fork
        # The fork copied multiprocessing's record of the master's children, which holds the
        # pod agent; at exit multiprocessing would join every child in it, and joining the
        # agent from a worker fails ("AssertionError: can only join a child process", a
        # traceback per worker at every stop). The agent is the master's to stop, so the
        # worker forgets it, as multiprocessing does itself in the children it forks.
        forget_inherited_children()

    def _worker_exit(self, server, worker) -> None:  # worker
        try:
            self.options.source.stop()
        except Exception:  # noqa: BLE001 - exiting anyway; say why
            log.exception("view source did not stop cleanly")

    def load(self):  # in each worker, after the fork (preload_app is off)
        from webhook.admission.app import create_app

        o = self.options
        o.source.start()
        return create_app(o.config, o.source, Metrics(o.metrics_dir), self.tls)
