"""The pod agent: the one process per pod that does the single-writer work.

`serve` runs the admission webhook in gunicorn workers (N per pod); the work that must
have exactly one writer in the whole release - the isolation controller
(``serve --controller``) and the self-managed certificates
(``certificates.selfManaged``) - runs here instead, in ONE process the gunicorn master
spawns after it binds (webhook.admission.server.AgentProcess).

With ``audit.enabled`` it also runs the background audit (webhook/audit/role.py): its own
live view, and PolicyReports, Events and metrics written by the leader only.

The agent holds the pod's only leader elector (the Lease ``leaderElection.leaseName``,
identity POD_NAME) and hands it to both roles, so they lead together on the elected pod
and each checks ``is_leader()`` before every write. On SIGTERM the roles stop first (no
write in flight), then the Lease is released so a standby takes over at once.

    run(AgentOptions(config, kubeconfig=..., controller=True, certificates=True, namespace="ns"))
"""
from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger("netpol_guard.agent")
STOP_TIMEOUT = 10.0  # seconds to wait for the certificate manager's pass in flight


def run(options: Any) -> None:
    """Block until SIGTERM running the configured roles (options: AgentOptions)."""
    from webhook.isolation.controller import kube_api_client, make_elector, run_in_background, wait_for_termination
    from webhook.tls.manager import start_certificate_manager

    config = options.config
    cluster_paths = tuple(getattr(options, "cluster_paths", ()) or ())
    dev, kubeconfig = bool(getattr(options, "dev", False)), getattr(options, "kubeconfig", None)
    namespace = getattr(options, "namespace", None) or None
    certificates = bool(getattr(options, "certificates", False))
    controller = bool(getattr(options, "controller", True))
    audit = bool(config.audit.enabled)
    if controller and cluster_paths:
        log.warning("isolation controller idle: serve --cluster reads manifests, there is no cluster to reconcile")
        controller = False
    if audit and cluster_paths:
        log.warning("audit idle: serve --cluster reads manifests, there is no cluster to audit")
        audit = False
    if not controller and not certificates and not audit:
        wait_for_termination()
        return
    if certificates and not namespace:
        raise SystemExit("pod agent: certificates.selfManaged needs the pod's namespace (POD_NAMESPACE)")
    try:
        api_client = kube_api_client(kubeconfig)
    except Exception as exc:  # noqa: BLE001 - no cluster configuration at all
        if dev and not certificates:
            log.warning("isolation controller idle: no cluster configuration (%s)", exc)
            wait_for_termination()
            return
        raise SystemExit(f"pod agent: no cluster configuration: {exc}") from None

    elector = make_elector(config, api_client, lease_namespace=namespace)
    stop = threading.Event()
    cert_thread = None
    if certificates:
        cert_thread = start_certificate_manager(api_client, config, namespace, elector.is_leader, stop)
    running = run_in_background(config, api_client, elector=elector) if controller else None
    audit_running = None
    if audit:
        from webhook.audit.role import start_audit
        audit_running = start_audit(api_client, config, elector, getattr(options, "metrics_dir", None))
    if not elector.started:
        elector.start()
    log.info("pod agent: %s under Lease %s/%s as %s",
             " and ".join(r for r, on in (("isolation controller", controller),
                                          ("certificate manager", certificates), ("audit", audit)) if on),
             elector.namespace, elector.name, elector.identity)
    if controller:  # the line operators (and tests) look for
        log.info("isolation controller started (identity %s, Lease %s/%s)", elector.identity,
                 elector.namespace, elector.name)
    try:
        wait_for_termination()
    finally:
        stop.set()
        if running is not None:
            running.stop()
        if audit_running is not None:
            audit_running.stop()
        if cert_thread is not None:
            cert_thread.join(STOP_TIMEOUT)
        elector.stop(release=True)
        api_client.close()
