"""Self-managed certificates: the leader's work against the API stand-in, through the real
kubernetes client, with real TLS handshakes to stand-in replicas on 127.0.0.1.

Time is injected (`now`), never slept.
"""
from __future__ import annotations

import base64
import datetime as dt
import logging
import os
import socket
import ssl
import threading

import pytest
from cryptography import x509

from webhook import certs
from webhook import config as server_config
from webhook.tls import plan as certplan
from webhook.tls.manager import CertificateManager, CertManagerError, run_certificate_manager
from webhook.tls.replicas import Endpoint, ready_endpoints, served_certificate

NS, SERVICE, SECRET, WEBHOOKS = "guard-system", "guard-netpol-guard", "guard-netpol-guard-tls", "guard-netpol-guard"
NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)
DAY = dt.timedelta(days=1)
POD_LABELS = {"app.kubernetes.io/name": "netpol-guard", "app.kubernetes.io/component": "webhook"}


def make_config(**certificates) -> server_config.Config:
    values = {"selfManaged": True, "secretName": SECRET, "serviceName": SERVICE, "webhookConfigName": WEBHOOKS,
              **certificates}
    return server_config.from_dict({"certificates": values})


CONFIG = make_config()


def webhook(name: str, path: str) -> dict:
    return {"name": name, "admissionReviewVersions": ["v1"], "sideEffects": "None",
            "clientConfig": {"service": {"name": SERVICE, "namespace": NS, "path": path, "port": 443}},
            "rules": [{"apiGroups": ["networking.k8s.io"], "apiVersions": ["v1"], "operations": ["CREATE"],
                       "resources": ["networkpolicies"]}]}


@pytest.fixture
def cluster(kube_api):
    """Our two webhook configurations (as the chart creates them: no caBundle) and the Service."""
    kube_api.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    kube_api.put_object({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
                         "metadata": {"name": WEBHOOKS},
                         "webhooks": [webhook("networkpolicies.netpol-guard.io", "/validate"),
                                      webhook("namespaces.netpol-guard.io", "/validate")]})
    kube_api.put_object({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
                         "metadata": {"name": WEBHOOKS},
                         "webhooks": [webhook("networkpolicies.netpol-guard.io", "/mutate")]})
    kube_api.put_object({"apiVersion": "v1", "kind": "Service", "metadata": {"name": SERVICE, "namespace": NS},
                         "spec": {"selector": POD_LABELS,
                                  "ports": [{"name": "https", "port": 443, "targetPort": "https"}]}})
    return kube_api


@pytest.fixture
def client(kube_api):
    api_client = kube_api.api_client()
    yield api_client
    api_client.close()


def manager(client, config=CONFIG, **kwargs) -> CertificateManager:
    return CertificateManager(client, config, NS, **kwargs)


def secret_pems(kube_api) -> dict[str, bytes]:
    data = kube_api.get_object("Secret", NS, SECRET)["data"]
    return {k: base64.b64decode(v) for k, v in data.items()}


def ca_bundles(kube_api) -> list[bytes]:
    """The decoded caBundle of every webhook of both configurations."""
    found = []
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        obj = kube_api.get_object(kind, None, WEBHOOKS)
        if obj is not None:
            found += [base64.b64decode(h["clientConfig"].get("caBundle", "")) for h in obj["webhooks"]]
    return found


def subjects(pem: bytes) -> list[str]:
    return [certs.fingerprint(c) for c in x509.load_pem_x509_certificates(pem)]


def write_paths(kube_api) -> list[str]:
    return [f"{r.method} {r.path}" for r in kube_api.requests() if r.is_write]


# --- stand-in replicas: real TLS listeners on 127.0.0.1 ----------------------------------

class Replica:
    """A TLS listener presenting whatever certificate it was last given, like a webhook pod
    after its hot reload; registered in the stand-in as a ready Pod with a named port."""

    def __init__(self, kube_api, tmp_path, name: str):
        self.name, self._dir = name, tmp_path / name
        self._dir.mkdir()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self._sock.settimeout(0.1)
        self.port = self._sock.getsockname()[1]
        self._context: ssl.SSLContext | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        kube_api.put_object({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS, "labels": POD_LABELS},
            "spec": {"containers": [{"name": "netpol-guard", "image": "x",
                                     "ports": [{"name": "https", "containerPort": self.port}]}]},
            "status": {"podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}})

    def serve(self, cert_pem: bytes, key_pem: bytes) -> None:
        (self._dir / "tls.crt").write_bytes(cert_pem)
        (self._dir / "tls.key").write_bytes(key_pem)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self._dir / "tls.crt", self._dir / "tls.key")
        self._context = context

    def serve_secret(self, kube_api) -> None:
        pems = secret_pems(kube_api)
        self.serve(pems["tls.crt"], pems["tls.key"])

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (socket.timeout, OSError):
                continue
            conn.settimeout(2)
            try:
                if self._context is not None:
                    with self._context.wrap_socket(conn, server_side=True):
                        pass
            except (OSError, ssl.SSLError):
                pass
            finally:
                conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()


@pytest.fixture
def replicas(cluster, tmp_path):
    made = [Replica(cluster, tmp_path, f"guard-{i}") for i in range(2)]
    yield made
    for replica in made:
        replica.close()


# --- creation and steady state ------------------------------------------------------------

def test_no_secret_creates_it_and_writes_the_ca_bundle_into_both_configurations(cluster, client):
    outcome = manager(client).reconcile(NOW)

    secret = cluster.get_object("Secret", NS, SECRET)
    assert secret["type"] == "kubernetes.io/tls"
    pems = secret_pems(cluster)
    assert set(pems) == {"ca.crt", "ca.key", "tls.crt", "tls.key"}
    serving, [ca] = x509.load_pem_x509_certificate(pems["tls.crt"]), x509.load_pem_x509_certificates(pems["ca.crt"])
    assert certs.dns_names(serving) == [SERVICE, f"{SERVICE}.{NS}", f"{SERVICE}.{NS}.svc",
                                        f"{SERVICE}.{NS}.svc.cluster.local"]
    assert certs.is_signed_by(serving, ca)
    assert certs.public_keys_match(serving, certs.load_key_pem(pems["tls.key"]))
    assert serving.not_valid_after_utc == NOW + 365 * DAY
    # Every webhook of both configurations trusts exactly that CA.
    assert ca_bundles(cluster) == [pems["ca.crt"]] * 3
    # The API server learns the CA before any replica can serve the certificate.
    assert write_paths(cluster) == [
        f"PUT /apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/{WEBHOOKS}",
        f"PUT /apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{WEBHOOKS}",
        f"POST /api/v1/namespaces/{NS}/secrets",
    ]
    assert sorted(outcome.writes) == sorted([f"Secret/{SECRET}", f"ValidatingWebhookConfiguration/{WEBHOOKS}",
                                             f"MutatingWebhookConfiguration/{WEBHOOKS}"])


def test_a_created_certificate_passes_a_real_handshake_verified_against_the_bundle(cluster, client, replicas):
    manager(client).reconcile(NOW)
    replicas[0].serve_secret(cluster)
    context = ssl.create_default_context(cadata=ca_bundles(cluster)[0].decode())
    with socket.create_connection(("127.0.0.1", replicas[0].port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=f"{SERVICE}.{NS}.svc") as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_steady_state_makes_no_writes(cluster, client):
    mgr = manager(client)
    mgr.reconcile(NOW)
    before = secret_pems(cluster)
    cluster.reset_log()
    for later in (NOW, NOW + 100 * DAY, NOW + 300 * DAY):
        assert mgr.reconcile(later).writes == []
    assert cluster.writes() == 0
    assert len(cluster.requests()) == 9  # three GETs a pass: the Secret and the two configurations
    assert secret_pems(cluster) == before


def test_a_missing_mutating_configuration_is_fine(cluster, client):
    cluster.delete_object("MutatingWebhookConfiguration", None, WEBHOOKS)
    manager(client).reconcile(NOW)
    assert ca_bundles(cluster) == [secret_pems(cluster)["ca.crt"]] * 2
    cluster.reset_log()
    assert manager(client).reconcile(NOW).writes == [] and cluster.writes() == 0


def test_a_changed_ca_bundle_is_put_back(cluster, client):
    manager(client).reconcile(NOW)
    vwc = cluster.get_object("ValidatingWebhookConfiguration", None, WEBHOOKS)
    vwc["webhooks"][1]["clientConfig"]["caBundle"] = base64.b64encode(b"someone else's CA").decode()
    cluster.put_object(vwc)
    cluster.reset_log()
    assert manager(client).reconcile(NOW).writes == [f"ValidatingWebhookConfiguration/{WEBHOOKS}"]
    assert ca_bundles(cluster) == [secret_pems(cluster)["ca.crt"]] * 3


# --- renewal -----------------------------------------------------------------------------------

def test_serving_certificate_near_expiry_is_reissued_from_the_same_ca(cluster, client):
    mgr = manager(client)
    mgr.reconcile(NOW)
    first = secret_pems(cluster)
    cluster.reset_log()

    outcome = mgr.reconcile(NOW + 336 * DAY)  # 29 days left, renewBeforeDays is 30
    after = secret_pems(cluster)
    assert after["ca.crt"] == first["ca.crt"] and after["ca.key"] == first["ca.key"]
    assert after["tls.crt"] != first["tls.crt"] and after["tls.key"] != first["tls.key"]
    serving = x509.load_pem_x509_certificate(after["tls.crt"])
    assert certs.is_signed_by(serving, x509.load_pem_x509_certificate(first["ca.crt"]))
    assert serving.not_valid_after_utc == NOW + (336 + 365) * DAY
    # Same CA: the webhooks need no change.
    assert outcome.writes == [f"Secret/{SECRET}"]
    assert write_paths(cluster) == [f"PUT /api/v1/namespaces/{NS}/secrets/{SECRET}"]
    assert any("within renewBeforeDays" in r for r in outcome.reasons)


def test_wrong_names_are_reissued_from_the_same_ca(cluster, client):
    manager(client, make_config(serviceName="old-name")).reconcile(NOW)
    first = secret_pems(cluster)
    outcome = manager(client).reconcile(NOW + DAY)
    after = secret_pems(cluster)
    assert after["ca.crt"] == first["ca.crt"]
    assert certs.dns_names(x509.load_pem_x509_certificate(after["tls.crt"]))[0] == SERVICE
    assert any("the service needs" in r for r in outcome.reasons)


def test_a_key_that_does_not_match_the_certificate_is_reissued(cluster, client):
    manager(client).reconcile(NOW)
    secret = cluster.get_object("Secret", NS, SECRET)
    secret["data"]["tls.key"] = base64.b64encode(certs.key_to_pem(certs.new_private_key())).decode()
    cluster.put_object(secret)
    outcome = manager(client).reconcile(NOW)
    pems = secret_pems(cluster)
    assert certs.public_keys_match(x509.load_pem_x509_certificate(pems["tls.crt"]), certs.load_key_pem(pems["tls.key"]))
    assert any("tls.key does not belong to tls.crt" in r for r in outcome.reasons)


# --- CA rotation -----------------------------------------------------------------------------

def test_ca_rotation_trusts_both_cas_until_every_replica_serves_the_new_certificate(cluster, client, replicas):
    config = make_config(caValidityDays=400)
    mgr = manager(client, config)
    mgr.reconcile(NOW)
    old = secret_pems(cluster)
    for replica in replicas:
        replica.serve_secret(cluster)
    # A replica that is not ready gets no traffic from the API server: it is not waited for.
    cluster.put_object({"apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": "guard-starting", "namespace": NS, "labels": POD_LABELS},
                        "spec": {"containers": [{"name": "c", "image": "x", "ports": [{"name": "https", "containerPort": 9}]}]},
                        "status": {"podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "False"}]}})

    when = NOW + 371 * DAY  # the CA has 29 days left
    cluster.reset_log()
    rotating = mgr.reconcile(when)
    new = secret_pems(cluster)
    [new_ca, old_ca] = x509.load_pem_x509_certificates(new["ca.crt"])
    assert certs.fingerprint(old_ca) == subjects(old["ca.crt"])[0]
    assert certs.is_signed_by(x509.load_pem_x509_certificate(new["tls.crt"]), new_ca)
    assert ca_bundles(cluster) == [new["ca.crt"]] * 3
    assert write_paths(cluster)[-1] == f"PUT /api/v1/namespaces/{NS}/secrets/{SECRET}"  # after the webhooks
    assert rotating.waiting and any("rotating the CA" in r for r in rotating.reasons)

    # Replicas still serve the old certificate: both CAs stay, and nothing is written.
    cluster.reset_log()
    waiting = mgr.reconcile(when)
    assert "guard-0" in waiting.waiting and "guard-1" in waiting.waiting and "guard-starting" not in waiting.waiting
    assert cluster.writes() == 0 and len(subjects(ca_bundles(cluster)[0])) == 2

    # One replica has reloaded: still both.
    replicas[0].serve_secret(cluster)
    waiting = mgr.reconcile(when + dt.timedelta(minutes=1))
    assert "guard-1" in waiting.waiting and "guard-0" not in waiting.waiting
    assert cluster.writes() == 0

    # Every ready replica serves the new certificate: only the new CA is trusted.
    replicas[1].serve_secret(cluster)
    done = mgr.reconcile(when + dt.timedelta(minutes=2))
    assert done.waiting == ""
    assert subjects(secret_pems(cluster)["ca.crt"]) == [certs.fingerprint(new_ca)]
    assert ca_bundles(cluster) == [secret_pems(cluster)["ca.crt"]] * 3
    assert secret_pems(cluster)["tls.crt"] == new["tls.crt"]  # the serving certificate is untouched
    cluster.reset_log()
    assert mgr.reconcile(when + dt.timedelta(minutes=3)).writes == [] and cluster.writes() == 0


def test_ca_rotation_waits_while_no_replica_can_be_checked(cluster, client):
    mgr = manager(client, make_config(caValidityDays=400))
    mgr.reconcile(NOW)
    mgr.reconcile(NOW + 371 * DAY)
    outcome = mgr.reconcile(NOW + 371 * DAY)
    assert outcome.waiting == "no ready replica to check"
    assert len(subjects(secret_pems(cluster)["ca.crt"])) == 2


def test_serving_certificate_never_outlives_its_ca(cluster, client):
    # 60 days of CA left and a 365-day validity: the certificate ends with the CA, and the
    # CA is rotated (not the certificate re-issued in a loop) when the window is reached.
    mgr = manager(client, make_config(caValidityDays=400))
    mgr.reconcile(NOW)
    secret = cluster.get_object("Secret", NS, SECRET)
    secret["data"]["tls.crt"] = base64.b64encode(b"garbage").decode()
    cluster.put_object(secret)
    mgr.reconcile(NOW + 340 * DAY)
    pems = secret_pems(cluster)
    ca = x509.load_pem_x509_certificate(pems["ca.crt"])
    assert x509.load_pem_x509_certificate(pems["tls.crt"]).not_valid_after_utc <= ca.not_valid_after_utc
    cluster.reset_log()
    assert mgr.reconcile(NOW + 345 * DAY).writes == []


# --- conflicts, corruption, errors ---------------------------------------------------------

def test_a_conflict_on_update_is_retried_and_converges(cluster, client):
    mgr = manager(client)
    cluster.inject_failure("PUT", "validatingwebhookconfigurations", status=409, count=1)
    outcome = mgr.reconcile(NOW)
    assert outcome.conflicts == 1
    assert ca_bundles(cluster) == [secret_pems(cluster)["ca.crt"]] * 3

    cluster.inject_failure("PUT", "secrets", status=409, count=2)
    outcome = mgr.reconcile(NOW + 340 * DAY)
    assert outcome.conflicts == 2
    assert x509.load_pem_x509_certificate(secret_pems(cluster)["tls.crt"]).not_valid_after_utc > NOW + 700 * DAY
    cluster.reset_log()
    assert mgr.reconcile(NOW + 340 * DAY).writes == [] and cluster.writes() == 0


def test_a_real_concurrent_change_makes_our_stale_write_fail_and_retry(cluster, client):
    # Someone changes the configuration between our read and our write: the stale
    # resourceVersion is refused by the server (no injected status), we re-read and win.
    mgr = manager(client)
    original_read = mgr._read
    raced = []

    def read_then_race(kind):
        obj = original_read(kind)
        if kind == "ValidatingWebhookConfiguration" and not raced:
            raced.append(True)
            other = cluster.get_object(kind, None, WEBHOOKS)
            other["metadata"].setdefault("labels", {})["touched"] = "yes"
            cluster.put_object(other)
        return obj

    mgr._read = read_then_race
    outcome = mgr.reconcile(NOW)
    assert outcome.conflicts == 1
    vwc = cluster.get_object("ValidatingWebhookConfiguration", None, WEBHOOKS)
    assert vwc["metadata"]["labels"]["touched"] == "yes"  # their change survived
    assert ca_bundles(cluster) == [secret_pems(cluster)["ca.crt"]] * 3


def test_endless_conflicts_give_up_with_a_clear_error(cluster, client):
    cluster.inject_failure("PUT", "validatingwebhookconfigurations", status=409, count=10)
    with pytest.raises(CertManagerError, match="gave up after 5 conflicting writes"):
        manager(client).reconcile(NOW)


def test_a_hand_corrupted_secret_is_replaced_with_a_log_line(cluster, client, caplog):
    manager(client).reconcile(NOW)
    first = secret_pems(cluster)
    secret = cluster.get_object("Secret", NS, SECRET)
    garbage = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n").decode()
    secret["data"].update({"ca.crt": garbage, "tls.crt": garbage, "ca.key": "%%% not base64"})
    cluster.put_object(secret)

    with caplog.at_level(logging.WARNING, logger="webhook.tls.manager"):
        outcome = manager(client).reconcile(NOW + DAY)
    pems = secret_pems(cluster)
    # A new CA signs the new certificate; the CA the webhooks trusted stays trusted beside
    # it, since the replicas keep serving their last good certificate until they reload.
    [ca, previous] = x509.load_pem_x509_certificates(pems["ca.crt"])
    assert certs.is_signed_by(x509.load_pem_x509_certificate(pems["tls.crt"]), ca)
    assert certs.fingerprint(previous) == subjects(first["ca.crt"])[0]
    assert ca_bundles(cluster) == [pems["ca.crt"]] * 3
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert f"Secret {NS}/{SECRET} has no usable CA" in logged
    assert "data.ca.crt" in logged and "data.ca.key is not base64" in logged
    assert outcome.writes


def test_a_corrupt_serving_certificate_keeps_a_good_ca(cluster, client, caplog):
    manager(client).reconcile(NOW)
    first = secret_pems(cluster)
    secret = cluster.get_object("Secret", NS, SECRET)
    secret["data"]["tls.crt"] = base64.b64encode(b"garbage").decode()
    cluster.put_object(secret)
    with caplog.at_level(logging.WARNING, logger="webhook.tls.manager"):
        manager(client).reconcile(NOW)
    assert secret_pems(cluster)["ca.crt"] == first["ca.crt"]
    assert "issuing a new serving certificate from the same CA" in caplog.text


def test_a_secret_with_no_data_is_filled_and_keys_we_do_not_own_are_kept(cluster, client):
    cluster.put_object({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                        "metadata": {"name": SECRET, "namespace": NS}, "data": {"note": "aGk="}})
    manager(client).reconcile(NOW)
    assert set(secret_pems(cluster)) == {"ca.crt", "ca.key", "tls.crt", "tls.key", "note"}


def test_api_errors_are_clear_and_never_crash_the_loop(cluster, client, caplog):
    cluster.inject_failure("POST", "secrets", status=403, count=1)
    with pytest.raises(CertManagerError, match=f"cannot write Secret {NS}/{SECRET}: 403"):
        manager(client).reconcile(NOW)

    # The loop logs it and tries again.
    cluster.inject_failure("POST", "secrets", status=403, count=1)
    stop = threading.Event()
    passes = []

    def is_leader():  # also asked before every write; ends the loop once the Secret exists
        passes.append(1)
        if cluster.get_object("Secret", NS, SECRET) is not None or len(passes) > 50:
            stop.set()
        return True

    with caplog.at_level(logging.ERROR, logger="webhook.tls.manager"):
        run_certificate_manager(client, CONFIG, NS, is_leader, stop, waiting_interval_seconds=0.01,
                                interval_seconds=0.01, now=lambda: NOW)
    assert "403" in caplog.text
    assert cluster.get_object("Secret", NS, SECRET) is not None


def test_a_follower_writes_nothing(cluster, client):
    with pytest.raises(CertManagerError, match="no longer the leader"):
        manager(client, is_leader=lambda: False).reconcile(NOW)
    assert cluster.writes() == 0

    stop = threading.Event()
    calls = []

    def is_leader():
        calls.append(1)
        if len(calls) >= 3:
            stop.set()
        return False

    run_certificate_manager(client, CONFIG, NS, is_leader, stop, follower_interval_seconds=0.01)
    assert cluster.writes() == 0 and len(calls) == 3


def test_the_manager_does_not_run_when_self_management_is_off(cluster, client):
    stop = threading.Event()
    run_certificate_manager(client, make_config(selfManaged=False), NS, lambda: True, stop)
    assert cluster.writes() == 0


def test_the_namespace_is_required(client):
    with pytest.raises(CertManagerError, match="POD_NAMESPACE"):
        CertificateManager(client, CONFIG, "")


# --- pure parts ------------------------------------------------------------------------------

def test_ready_endpoints_follow_the_service_selector_readiness_and_named_ports():
    service = {"metadata": {"name": SERVICE},
               "spec": {"selector": {"app": "g"}, "ports": [{"name": "https", "port": 443, "targetPort": "https"}]}}

    def pod(name, ready=True, labels=None, port=8443, ip="10.0.0.1", deleting=False):
        meta = {"name": name, "labels": labels or {"app": "g"}}
        if deleting:
            meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
        return {"metadata": meta,
                "spec": {"containers": [{"ports": [{"name": "https", "containerPort": port}]}]},
                "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}

    pods = [pod("a", port=9443), pod("b"), pod("c", ready=False), pod("d", labels={"app": "other"}),
            pod("e", deleting=True), pod("f", ip="")]
    assert ready_endpoints(service, pods) == [Endpoint("a", "10.0.0.1", 9443), Endpoint("b", "10.0.0.1", 8443)]
    numeric = {**service, "spec": {**service["spec"], "ports": [{"port": 443, "targetPort": 8000}]}}
    assert [e.port for e in ready_endpoints(numeric, pods)] == [8000, 8000]


def test_an_unreachable_replica_is_reported_not_raised():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    served = served_certificate(Endpoint("gone", "127.0.0.1", port), "x", timeout=2)
    assert served.cert is None and "127.0.0.1" in served.error
    confirmed, why = certplan.replicas_confirm(certs.make_ca().cert, [served])
    assert not confirmed and "gone" in why


def test_plan_refuses_a_naive_clock():
    settings = certplan.Settings(service=SERVICE, namespace=NS)
    with pytest.raises(certs.CertificateError, match="timezone"):
        certplan.plan_certificates(None, settings, dt.datetime(2026, 1, 1))


def test_expiry_metric_reads_the_served_certificate_file(tmp_path):
    bundle = certs.generate_service_bundle(SERVICE, NS, days=10, now=NOW)
    paths = certs.write_bundle(bundle, str(tmp_path))
    assert certs.certificate_file_seconds_remaining(paths["tls.crt"], now=NOW) == 10 * 86400
    assert certs.certificate_file_seconds_remaining(paths["tls.crt"], now=NOW + 11 * DAY) == -86400
    assert certs.certificate_file_seconds_remaining(str(tmp_path / "missing.crt")) is None
    (tmp_path / "bad.crt").write_bytes(b"garbage")
    assert certs.certificate_file_seconds_remaining(str(tmp_path / "bad.crt")) is None
    assert os.path.exists(paths["tls.key"])


def test_deleting_the_secret_makes_a_new_ca_and_keeps_the_old_one_trusted_until_replicas_reload(cluster, client, replicas):
    mgr = manager(client)
    mgr.reconcile(NOW)
    old = secret_pems(cluster)
    for replica in replicas:
        replica.serve_secret(cluster)
    cluster.delete_object("Secret", NS, SECRET)

    mgr.reconcile(NOW + DAY)
    trust = subjects(secret_pems(cluster)["ca.crt"])
    assert len(trust) == 2 and trust[1] == subjects(old["ca.crt"])[0]
    assert ca_bundles(cluster) == [secret_pems(cluster)["ca.crt"]] * 3

    for replica in replicas:
        replica.serve_secret(cluster)
    assert mgr.reconcile(NOW + DAY).waiting == ""
    assert subjects(secret_pems(cluster)["ca.crt"]) == trust[:1]


def test_plan_with_no_renewal_window_still_rotates_a_ca_in_its_last_day():
    settings = certplan.Settings(service=SERVICE, namespace=NS, validity_days=10, ca_validity_days=10,
                                 renew_before_days=0)
    first = certplan.plan_certificates(None, settings, NOW)
    assert certplan.plan_certificates(first.secret_data, settings, NOW + 5 * DAY).secret_data is None
    last_day = certplan.plan_certificates(first.secret_data, settings, NOW + 9 * DAY + dt.timedelta(hours=1))
    assert last_day.active_ca != first.active_ca and len(last_day.trust) == 2
    assert last_day.serving_cert.not_valid_after_utc <= last_day.active_ca.not_valid_after_utc


def test_plan_drops_an_expired_old_ca_without_waiting_for_replicas():
    settings = certplan.Settings(service=SERVICE, namespace=NS, validity_days=10, ca_validity_days=20,
                                 renew_before_days=5)
    first = certplan.plan_certificates(None, settings, NOW)
    rotated = certplan.plan_certificates(first.secret_data, settings, NOW + 16 * DAY)
    assert len(rotated.trust) == 2
    later = certplan.plan_certificates(rotated.secret_data, settings, NOW + 21 * DAY)
    assert later.trust == (rotated.active_ca,) and later.secret_data is not None
