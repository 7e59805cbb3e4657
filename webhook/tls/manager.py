"""Self-managed certificates in the cluster: the thin API layer around tls.plan.

The elected replica runs ``run_certificate_manager`` (a loop); each pass
(``CertificateManager.reconcile``) reads the Secret and our two webhook
configurations, asks ``plan_certificates`` what they should hold, and writes only what
differs, so a steady state costs three GETs and no write. Objects are read and written
as raw JSON (not the client's typed models) so that fields this client version does
not know survive our updates.

Write order: the webhook configurations' caBundle first, then the Secret. The API
server watches webhook configurations and trusts a new CA within moments; the pods see
a new Secret only after the kubelet's volume sync (up to a minute or more). So a
replica can never serve a certificate the API server does not yet trust.

Concurrency: every update is a PUT carrying the resourceVersion we read. A 409 (someone
else wrote in between, or a create raced) re-reads everything and plans again, a
bounded number of times. ``is_leader()`` is checked right before every write.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from webhook.tls.plan import (
    Plan, Served, Settings, cas_from_bundle, finish_rotation, needs_replica_check, plan_certificates,
)
from webhook.tls.replicas import Endpoint, ready_endpoints, selector_string, served_certificate

log = logging.getLogger(__name__)

WEBHOOK_KINDS = ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")
MANAGED_BY = {"app.kubernetes.io/managed-by": "netpol-guard", "app.kubernetes.io/component": "certificates"}


class CertManagerError(RuntimeError):
    """A pass could not complete (API error, lost leadership); the message names the object."""


class _Conflict(Exception):
    def __init__(self, what: str):
        super().__init__(what)
        self.what = what


@dataclass
class Outcome:
    """What one pass did: the writes (as "Kind/name"), why, and what it still waits for."""

    writes: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    waiting: str = ""  # non-empty while a CA rotation waits for replicas
    conflicts: int = 0
    plan: Optional[Plan] = None


Probe = Callable[[Endpoint, str], Served]


class CertificateManager:
    def __init__(self, api_client: Any, config: Any, namespace: str, *,
                 is_leader: Callable[[], bool] = lambda: True,
                 probe: Probe = served_certificate, max_attempts: int = 5):
        """namespace: where the Secret and Service live (the pod's POD_NAMESPACE)."""
        import kubernetes.client

        if not namespace:
            raise CertManagerError("the pod's namespace is needed (POD_NAMESPACE is empty)")
        self._core = kubernetes.client.CoreV1Api(api_client)
        self._admission = kubernetes.client.AdmissionregistrationV1Api(api_client)
        self._api_exception = kubernetes.client.exceptions.ApiException
        self.settings = Settings.from_config(config, namespace)
        self.namespace = namespace
        self.secret_name = config.certificates.secretName
        self.webhook_config_name = config.certificates.webhookConfigName
        self.is_leader = is_leader
        self.probe = probe
        self.max_attempts = max_attempts

    # --- one pass -----------------------------------------------------------------------

    def reconcile(self, now: Optional[dt.datetime] = None) -> Outcome:
        """Bring the Secret and the caBundles to the plan; retries on 409 (re-reading)."""
        now = now or dt.datetime.now(dt.timezone.utc)
        conflicts = 0
        for _ in range(self.max_attempts):
            try:
                outcome = self._pass(now)
                outcome.conflicts = conflicts
                return outcome
            except _Conflict as exc:
                conflicts += 1
                log.info("conflict writing %s (changed since we read it): re-reading and retrying", exc.what)
        raise CertManagerError(f"gave up after {conflicts} conflicting writes in a row "
                               f"(Secret {self.namespace}/{self.secret_name}, webhook configurations "
                               f"{self.webhook_config_name}): something else keeps changing them")

    def _pass(self, now: dt.datetime) -> Outcome:
        secret = self._read("Secret")
        configs = {kind: self._read(kind) for kind in WEBHOOK_KINDS}
        data = None if secret is None else dict(secret.get("data") or {})
        webhook_cas = [ca for cfg in configs.values() if cfg for hook in cfg.get("webhooks") or []
                       for ca in cas_from_bundle((hook.get("clientConfig") or {}).get("caBundle"))]
        plan = plan_certificates(data, self.settings, now, webhook_cas=webhook_cas, secret_name=self.secret_name)
        waiting = ""
        if needs_replica_check(plan, data):
            plan, waiting = finish_rotation(plan, data, self.served_certificates())
            if plan.rotation_in_progress:
                log.info("CA rotation: keeping old and new CA trusted: %s", waiting)
            else:
                waiting = ""
        elif plan.rotation_in_progress:
            waiting = "the serving certificate changed in this pass"

        for reason in plan.reasons:
            (log.warning if plan.problems else log.info)("%s", reason)
        outcome = Outcome(reasons=list(plan.reasons), waiting=waiting, plan=plan)
        for kind in WEBHOOK_KINDS:
            if configs[kind] is not None and self._write_ca_bundle(kind, configs[kind], plan.ca_bundle_base64):
                outcome.writes.append(f"{kind}/{self.webhook_config_name}")
        if configs["ValidatingWebhookConfiguration"] is None:
            log.warning("ValidatingWebhookConfiguration %s not found: no caBundle to keep "
                        "(is the chart installed with this name?)", self.webhook_config_name)
        if plan.secret_data is not None:
            self._write_secret(secret, plan.secret_data)
            outcome.writes.append(f"Secret/{self.secret_name}")
        return outcome

    # --- replicas -------------------------------------------------------------------------

    def served_certificates(self) -> list[Served]:
        """What each ready replica of the Service serves ([] when that cannot be read)."""
        service_name = self.settings.service
        try:
            service = self._raw(self._core.read_namespaced_service, service_name, self.namespace)
            pods = self._raw(self._core.list_namespaced_pod, self.namespace,
                             label_selector=selector_string(service))["items"]
            endpoints = ready_endpoints(service, pods)
        except (self._api_exception, ValueError) as exc:
            log.warning("cannot list the replicas of Service %s/%s: %s", self.namespace, service_name,
                        _describe(exc))
            return []
        server_name = f"{service_name}.{self.namespace}.svc"
        return [self.probe(endpoint, server_name) for endpoint in endpoints]

    # --- API access -------------------------------------------------------------------------

    @staticmethod
    def _raw(method, *args, **kwargs) -> dict:
        response = method(*args, _preload_content=False, **kwargs)
        try:
            return json.loads(response.data)
        finally:
            response.release_conn()  # back to the pool: unread/unreleased responses leak connections

    def _read(self, kind: str) -> Optional[dict]:
        try:
            if kind == "Secret":
                return self._raw(self._core.read_namespaced_secret, self.secret_name, self.namespace)
            if kind == "ValidatingWebhookConfiguration":
                return self._raw(self._admission.read_validating_webhook_configuration, self.webhook_config_name)
            return self._raw(self._admission.read_mutating_webhook_configuration, self.webhook_config_name)
        except self._api_exception as exc:
            if exc.status == 404:
                return None
            raise CertManagerError(f"cannot read {self._name(kind)}: {_describe(exc)}") from None

    def _name(self, kind: str) -> str:
        if kind == "Secret":
            return f"Secret {self.namespace}/{self.secret_name}"
        return f"{kind} {self.webhook_config_name}"

    def _check_leader(self, what: str) -> None:
        if not self.is_leader():
            raise CertManagerError(f"no longer the leader: not writing {what}")

    def _write_ca_bundle(self, kind: str, obj: dict, ca_bundle: str) -> bool:
        hooks = obj.get("webhooks") or []
        if all((h.get("clientConfig") or {}).get("caBundle") == ca_bundle for h in hooks):
            return False
        for hook in hooks:
            hook.setdefault("clientConfig", {})["caBundle"] = ca_bundle
        self._check_leader(self._name(kind))
        replace = (self._admission.replace_validating_webhook_configuration if kind == WEBHOOK_KINDS[0]
                   else self._admission.replace_mutating_webhook_configuration)
        # obj carries metadata.resourceVersion as read: the API server refuses (409) a stale one.
        self._write(kind, replace, self.webhook_config_name, obj)
        log.info("wrote the CA bundle into %d webhook(s) of %s", len(hooks), self._name(kind))
        return True

    def _write_secret(self, secret: Optional[dict], data: dict[str, str]) -> None:
        self._check_leader(self._name("Secret"))
        if secret is None:
            body = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                    "metadata": {"name": self.secret_name, "namespace": self.namespace, "labels": dict(MANAGED_BY)},
                    "data": data}
            self._write("Secret", self._core.create_namespaced_secret, self.namespace, body)
            log.info("created %s", self._name("Secret"))
            return
        secret["data"] = {**(secret.get("data") or {}), **data}  # keys we do not own are kept
        self._write("Secret", self._core.replace_namespaced_secret, self.secret_name, self.namespace, secret)
        log.info("updated %s", self._name("Secret"))

    def _write(self, kind: str, method, *args) -> None:
        try:
            self._raw(method, *args)
        except self._api_exception as exc:
            if exc.status == 409:
                raise _Conflict(self._name(kind)) from None
            raise CertManagerError(f"cannot write {self._name(kind)}: {_describe(exc)}") from None


def _describe(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    if status is None:
        return str(exc)
    message = ""
    try:
        message = json.loads(getattr(exc, "body", "") or "{}").get("message", "")
    except (ValueError, AttributeError):
        pass
    return f"{status} {getattr(exc, 'reason', '')}{': ' + message if message else ''}".strip()


# --- the loop the elected replica runs --------------------------------------------------

def run_certificate_manager(api_client: Any, config: Any, namespace: str, is_leader: Callable[[], bool],
                            stop_event: threading.Event, *, interval_seconds: float = 60.0,
                            waiting_interval_seconds: float = 10.0, follower_interval_seconds: float = 2.0,
                            now: Optional[Callable[[], dt.datetime]] = None,
                            probe: Probe = served_certificate) -> None:
    """Keep the certificates right while this replica leads; returns when stop_event is set.

    Passes run every interval_seconds while leading, every waiting_interval_seconds while a
    CA rotation waits for replicas or after an error, and leadership is re-checked every
    follower_interval_seconds while not leading. Returns at once (with a log line) when
    certificates.selfManaged is off. Never raises for API trouble: it logs and retries.
    """
    if not config.certificates.selfManaged:
        log.info("certificates.selfManaged is off: the certificate manager does not run")
        return
    manager = CertificateManager(api_client, config, namespace, is_leader=is_leader, probe=probe)
    while not stop_event.is_set():
        delay = follower_interval_seconds
        if is_leader():
            delay = interval_seconds
            try:
                outcome = manager.reconcile(now() if now else None)
                if outcome.waiting:
                    delay = waiting_interval_seconds
            except CertManagerError as exc:
                log.error("certificate manager: %s", exc)
                delay = waiting_interval_seconds
            except Exception as exc:  # noqa: BLE001 - network trouble must not end the loop
                log.error("certificate manager pass failed: %s: %s", type(exc).__name__, exc)
                delay = waiting_interval_seconds
        stop_event.wait(delay)


def start_certificate_manager(api_client: Any, config: Any, namespace: str, is_leader: Callable[[], bool],
                              stop_event: threading.Event, **kwargs: Any) -> threading.Thread:
    """run_certificate_manager in a daemon thread (named certificate-manager), started."""
    thread = threading.Thread(target=run_certificate_manager, name="certificate-manager", daemon=True,
                              args=(api_client, config, namespace, is_leader, stop_event), kwargs=kwargs)
    thread.start()
    return thread
