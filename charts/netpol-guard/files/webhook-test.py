"""`helm test`: the webhook answers, over TLS verified against the release's CA.

1. GET /readyz is 200 (certificate loaded, cluster view synced).
2. POST /validate with an AdmissionReview for a NetworkPolicy that isolates egress and
   allows no DNS: the answer echoes the uid and names dns-egress-missing (denied in
   enforce mode, a warning in warn mode).

Environment: WEBHOOK_URL (https://SERVICE.NAMESPACE.svc:PORT), and CA_FILE (a PEM file)
or CA_BUNDLE (base64 PEM). Standard library only: it runs in the webhook's own image.
"""
import base64
import json
import os
import ssl
import sys
import urllib.error
import urllib.request
import uuid

URL = os.environ["WEBHOOK_URL"].rstrip("/")
TIMEOUT = float(os.environ.get("TIMEOUT_SECONDS", "10"))


def context() -> ssl.SSLContext:
    if os.environ.get("CA_BUNDLE"):
        return ssl.create_default_context(cadata=base64.b64decode(os.environ["CA_BUNDLE"]).decode())
    return ssl.create_default_context(cafile=os.environ["CA_FILE"])


def call(method: str, path: str, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(URL + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, context=context(), timeout=TIMEOUT) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def fail(message: str) -> None:
    print(f"FAIL: {message}")
    sys.exit(1)


def main() -> None:
    try:
        status, body = call("GET", "/readyz")
    except (OSError, ssl.SSLError) as exc:
        fail(f"cannot reach {URL}: {exc}")
    if status != 200:
        fail(f"{URL}/readyz answered {status}: {body[:500]}")
    print(f"ok: {URL}/readyz is 200")

    uid = str(uuid.uuid4())
    policy = {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "helm-test-no-dns", "namespace": "helm-test",
                     "annotations": {"description": "helm test: egress to the database only"}},
        "spec": {"podSelector": {"matchLabels": {"app": "api"}}, "policyTypes": ["Egress"],
                 "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "db"}}}],
                             "ports": [{"port": 5432, "protocol": "TCP"}]}]},
    }
    review = {
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid, "operation": "CREATE", "namespace": "helm-test", "name": "helm-test-no-dns",
            "kind": {"group": "networking.k8s.io", "version": "v1", "kind": "NetworkPolicy"},
            "resource": {"group": "networking.k8s.io", "version": "v1", "resource": "networkpolicies"},
            "userInfo": {"username": "helm-test"}, "object": policy, "dryRun": True,
        },
    }
    status, body = call("POST", "/validate", review)
    if status != 200:
        fail(f"POST /validate answered {status}: {body[:500]}")
    response = json.loads(body).get("response") or {}
    if response.get("uid") != uid:
        fail(f"the answer does not echo the request uid: {body[:500]}")
    said = (response.get("status") or {}).get("message", "") + "\n".join(response.get("warnings") or [])
    if "dns-egress-missing" not in said:
        fail(f"a policy without DNS egress was not flagged: {body[:500]}")
    verdict = "denied" if not response.get("allowed") else "allowed with a warning"
    print(f"ok: POST /validate {verdict} a policy without DNS egress (dns-egress-missing)")


if __name__ == "__main__":
    main()
