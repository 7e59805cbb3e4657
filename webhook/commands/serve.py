"""`netpol-guard serve`: the admission webhook under gunicorn over TLS."""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

from webhook.bounded_text import quoted, shown, shown_path
from webhook.cli import whole_number

NAME = "serve"
HELP = "run the admission webhook (POST /validate, /mutate) under gunicorn over TLS"
DESCRIPTION = """\
Runs the admission webhook: POST /validate and /mutate (admission.k8s.io/v1 AdmissionReview),
GET /healthz, /readyz and /metrics, TLS only (1.2 or later). The certificate and key are
re-read when the files change on disk (a Secret rotation): new connections get the new
certificate, open ones are not dropped.

Cluster view: --cluster PATH (manifests, read once), else the live cluster through a watch
cache (in-cluster configuration, else kubeconfig); the cache follows the admin network
policies (policy.networking.k8s.io) where the API server serves them, and logs once when it
does not. --dev: a self-signed certificate in
certs/ (made if missing), 127.0.0.1:8443, and --cluster, else the kubeconfig's cluster if there
is one, else an empty cluster.

A bad configuration, certificate or snapshot stops serve before it binds (exit 2) with
every problem listed.

Self-managed certificates (config certificates.selfManaged, the chart's default): the
elected replica creates the TLS Secret and the webhooks' caBundle (one pod agent process
runs the leader election, the certificate manager and, with --controller, the isolation
controller). Until --cert/--key exist (the kubelet mounts the Secret a little after the
leader creates it), serve listens with a throwaway self-signed certificate: /healthz
answers 200, /readyz 503 saying what it waits for; the files are loaded when they appear.
Needs POD_NAMESPACE (the Secret's namespace).

examples:
  netpol-guard serve --dev --cluster examples/cluster
  netpol-guard serve --config /etc/netpol-guard/config.yaml --cert /tls/tls.crt --key /tls/tls.key
"""

DEV_BIND = "127.0.0.1:8443"
DEFAULT_BIND = "0.0.0.0:8443"
DEV_CERT_DIR = "certs"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dev", action="store_true",
                   help=f"local development: self-signed certificate in {DEV_CERT_DIR}/ (made if missing), "
                        f"bind {DEV_BIND}; --cluster, else the kubeconfig's cluster, else an empty one")
    p.add_argument("--cluster", action="append", default=[], metavar="PATH",
                   help="serve from manifests (Namespaces, Pods, workloads, Services, NetworkPolicies) "
                        "instead of the live cluster; may be given more than once")
    p.add_argument("--config", metavar="FILE", help="netpol-guard configuration (YAML); also NETPOL_GUARD_CONFIG")
    p.add_argument("--bind", metavar="HOST:PORT", help=f"listen address (default {DEFAULT_BIND}; --dev: {DEV_BIND})")
    p.add_argument("--cert", metavar="FILE", help="TLS certificate (PEM); with --key")
    p.add_argument("--key", metavar="FILE", help="TLS private key (PEM); with --cert")
    p.add_argument("--client-ca", metavar="FILE",
                   help="require client certificates signed by this CA (the API server's client cert)")
    p.add_argument("--controller", action="store_true",
                   help="also run the isolation controller (one process beside the workers)")
    p.add_argument("--workers", type=whole_number, metavar="N", help="gunicorn worker processes (default: one per CPU "
                                                          "the container may use - affinity and cgroup CPU "
                                                          "limit - at most 2)")
    p.add_argument("--threads", type=whole_number, metavar="N", help="threads per worker (default 2)")
    p.add_argument("--kubeconfig", metavar="FILE", help="kubeconfig for the live cluster view (default: "
                                                        "in-cluster, else $KUBECONFIG / ~/.kube/config)")


def _dev_certs() -> tuple[str, str]:
    """certs/tls.crt and tls.key, made (with ca.crt) if not there yet."""
    from webhook import certs

    paths = certs.bundle_paths(DEV_CERT_DIR)
    if all(os.path.exists(p) for p in paths.values()):
        try:
            certs.read_bundle(DEV_CERT_DIR)
        except certs.CertificateError as exc:
            raise _usage(f"{DEV_CERT_DIR}/ holds an unusable certificate ({exc}); delete the directory's "
                         "files to have a new one made") from None
    else:
        ca = certs.make_ca()
        names = ["localhost"] + certs.service_dns_names("netpol-guard", "netpol-guard")
        # The server prints https://127.0.0.1:8443 too: curl and browsers check IP SANs.
        serving = certs.issue_serving_cert(ca, names, ip_addresses=("127.0.0.1", "::1"))
        bundle = certs.TLSBundle.from_pairs(ca, serving)
        certs.write_bundle(bundle, DEV_CERT_DIR, force=True)
        print(f"netpol-guard serve: wrote a self-signed development certificate to {DEV_CERT_DIR}/ "
              f"(CA: {paths[certs.CA_FILE]})", file=sys.stderr)
    return paths[certs.CERT_FILE], paths[certs.KEY_FILE]


def _usage(message: str) -> Exception:
    from webhook.cli import UsageError
    return UsageError(message)


def _check_tls(cert: str, key: str, client_ca: str | None) -> None:
    from webhook.admission.tls import build_context
    import ssl
    for what, path in (("--cert", cert), ("--key", key), ("--client-ca", client_ca)):
        if path and not os.path.isfile(path):
            raise _usage(f"{what} {shown_path(path)}: no such file")
    try:
        build_context(cert, key, client_ca)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise _usage(f"cannot use --cert {shown_path(cert)} / --key {shown_path(key)}"
                     f"{' / --client-ca ' + shown_path(client_ca) if client_ca else ''}: {shown(exc, 400)}") from None


def _self_managed_tls(config, cert: str, key: str, client_ca: str | None, kubeconfig: str | None) -> bool:
    """Checks for certificates.selfManaged; True when --cert/--key are not usable yet (serve
    then starts with a placeholder and waits for the leader's Secret)."""
    import ssl
    from webhook.admission.tls import build_context
    from webhook.isolation.controller import kube_api_client

    if not os.environ.get("POD_NAMESPACE"):
        raise _usage("certificates.selfManaged needs POD_NAMESPACE, the namespace of the TLS Secret "
                     f"{config.certificates.secretName} and of the Lease (the chart sets it from the pod's "
                     "metadata.namespace)")
    if client_ca and not os.path.isfile(client_ca):
        raise _usage(f"--client-ca {shown_path(client_ca)}: no such file")
    try:
        kube_api_client(kubeconfig).close()  # reads the configuration only; no request
    except Exception as exc:  # noqa: BLE001 - every way of having no configuration
        raise _usage("certificates.selfManaged needs the Kubernetes API (in-cluster configuration or "
                     f"--kubeconfig): {exc}") from None
    missing = [f"{flag} {path}" for flag, path in (("--cert", cert), ("--key", key)) if not os.path.isfile(path)]
    try:
        if missing:
            raise FileNotFoundError(f"{' and '.join(missing)}: no such file yet")
        build_context(cert, key, client_ca)
        return False
    except (ssl.SSLError, OSError, ValueError) as exc:
        # Not an error here: on a first install the Secret does not exist yet, and a Secret
        # edited into garbage is replaced by the leader - which may be this very pod.
        print(f"netpol-guard serve: the TLS certificate is not usable yet ({exc}); waiting for the "
              f"leader's Secret {os.environ['POD_NAMESPACE']}/{config.certificates.secretName} to be "
              "mounted (unready until then)", file=sys.stderr)
        return True


def _check_port_free(bind: str) -> None:
    """A busy port is one clear line and exit 2, not seconds of gunicorn retrying and
    logging JSON. Bound with SO_REUSEADDR as gunicorn does, then let go at once."""
    import errno
    import socket

    host, _, port = bind.rpartition(":")
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise _usage(f"cannot listen on {shown(bind)}: {exc.strerror}") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as exc:
            hint = ("; another process is listening there (an earlier `make run`?): stop it or pass "
                    "--bind HOST:PORT") if exc.errno == errno.EADDRINUSE else ""
            raise _usage(f"cannot listen on {shown(bind)}: {exc.strerror}{hint}") from None


def _bind(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise _usage(f"--bind {quoted(value)}: expected HOST:PORT, e.g. {DEFAULT_BIND}")
    return value


def run(args: argparse.Namespace) -> int:
    from webhook.cluster.files import InputError, skipped_note
    from webhook.cluster.source import EmptySource, SnapshotSource, SourceUnavailable, live_source
    from webhook.config import ConfigError, load

    problems = []
    try:
        config = load(args.config)
    except ConfigError as exc:
        raise _usage("bad configuration:\n" + str(exc)) from None
    for flag in ("workers", "threads"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            problems.append(f"--{flag} must be at least 1")
    if bool(args.cert) != bool(args.key):
        problems.append("--cert and --key go together")
    if not args.dev and not args.cert:
        problems.append("TLS only: give --cert and --key (or --dev for a self-signed development certificate)")
    if problems:
        raise _usage("; ".join(problems))
    bind = _bind(args.bind or (DEV_BIND if args.dev else DEFAULT_BIND))
    cert, key = (args.cert, args.key) if args.cert else _dev_certs()
    # --dev brings its own certificate; otherwise the config decides who makes it
    self_managed = config.certificates.selfManaged and not args.dev
    waiting = False
    if self_managed:
        waiting = _self_managed_tls(config, cert, key, args.client_ca, args.kubeconfig)
    else:
        _check_tls(cert, key, args.client_ca)

    agent = None
    if args.controller or self_managed or (config.audit.enabled and not args.cluster):
        from webhook.admission.server import AgentOptions, controller_entry
        if args.controller:
            try:
                controller_entry()
            except ImportError as exc:
                raise _usage(str(exc)) from None
        agent = AgentOptions(config, tuple(args.cluster), args.dev, args.kubeconfig, controller=args.controller,
                             certificates=self_managed, namespace=os.environ.get("POD_NAMESPACE") or None)

    try:
        if args.cluster:
            source = SnapshotSource(args.cluster)
        elif args.dev:
            # design: --dev uses the live cluster when a kubeconfig is there, else an empty one
            try:
                source = live_source(config, args.kubeconfig)
            except SourceUnavailable as exc:
                print(f"netpol-guard serve: --dev with an empty cluster view ({exc})", file=sys.stderr)
                source = EmptySource()
        else:
            source = live_source(config, args.kubeconfig)
    except InputError as exc:
        raise _usage(f"--cluster: {exc}") from None
    except SourceUnavailable as exc:
        raise _usage(str(exc)) from None

    _check_port_free(bind)
    from webhook.admission.server import ServeOptions, WebhookServer
    from webhook.logging_setup import configure
    configure()
    for file, why in source.skipped if isinstance(source, SnapshotSource) else ():
        print(f"netpol-guard serve: {skipped_note(file, why)}", file=sys.stderr)
    invalid = source.invalid_policies if isinstance(source, SnapshotSource) else []
    if invalid:
        print(f"netpol-guard serve: {len(invalid)} NetworkPolicies in --cluster are invalid (or too large) and left out of "
              f"the view ({', '.join(invalid[:3])}{', ...' if len(invalid) > 3 else ''}); "
              "`netpol-guard lint` says why", file=sys.stderr)
    metrics_dir = tempfile.mkdtemp(prefix="netpol-guard-metrics-")
    if agent is not None:
        import dataclasses
        agent = dataclasses.replace(agent, metrics_dir=metrics_dir)
    placeholder, placeholder_dir, waiting_for = None, None, ""
    if waiting:
        from webhook.admission.tls import write_placeholder
        placeholder_dir = tempfile.mkdtemp(prefix="netpol-guard-placeholder-")
        placeholder = write_placeholder(placeholder_dir)
        waiting_for = (f"certificates.selfManaged: the elected replica creates Secret "
                       f"{os.environ['POD_NAMESPACE']}/{config.certificates.secretName}, then the kubelet mounts it")
    master = os.getpid()
    try:
        WebhookServer(ServeOptions(config=config, source=source, cert=cert, key=key, bind=bind,
                                   client_ca=args.client_ca, workers=args.workers, threads=args.threads,
                                   metrics_dir=metrics_dir, controller=agent, placeholder=placeholder,
                                   waiting_for=waiting_for)).run()
    finally:
        # Workers leave gunicorn by SystemExit through this frame too: only the master
        # may remove the directories (a replaced worker's counters must survive it).
        if os.getpid() == master:
            shutil.rmtree(metrics_dir, ignore_errors=True)
            if placeholder_dir:
                shutil.rmtree(placeholder_dir, ignore_errors=True)
    return 0
