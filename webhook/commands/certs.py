"""`netpol-guard certs`: write a CA and a serving certificate for the webhook Service."""
from __future__ import annotations

import argparse

from webhook.cli import whole_number

NAME = "certs"
HELP = "write a CA and a TLS serving certificate (ca.crt, tls.crt, tls.key) for the webhook Service"
DESCRIPTION = """\
Writes a private CA and a serving certificate for a Kubernetes Service:

  ca.crt   the CA certificate (what goes into a webhook configuration's caBundle)
  tls.crt  the serving certificate, SANs NAME, NAME.NS, NAME.NS.svc, NAME.NS.svc.cluster.local
  tls.key  its ECDSA P-256 private key, file mode 0600

Existing files are never overwritten unless --force is given.

In a cluster you usually do not need this: the chart's default certificate mode makes
and rotates these itself. Use it for development (`serve --cert/--key`) or to fill the
Secret of the chart's existingSecret mode:

  netpol-guard certs --service netpol-guard --namespace netpol-guard --out certs/
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--service", required=True, metavar="NAME", help="the webhook Service's name")
    parser.add_argument("--namespace", required=True, metavar="NS", help="the Service's namespace")
    parser.add_argument("--out", default="certs", metavar="DIR",
                        help="directory to write into, created if missing (default: certs)")
    parser.add_argument("--days", type=whole_number, default=365, metavar="N",
                        help="validity of the serving certificate in days, 1 to 36500 (default: 365)")
    parser.add_argument("--ca-days", type=whole_number, default=None, metavar="N",
                        help="validity of the CA in days, 1 to 36500 (default: 3650, or --days if longer)")
    parser.add_argument("--force", action="store_true", help="overwrite existing files")


def run(args: argparse.Namespace) -> int:
    from webhook import certs
    from webhook.bounded_text import shown_path
    from webhook.cli import UsageError

    try:
        bundle = certs.generate_service_bundle(args.service, args.namespace, days=args.days, ca_days=args.ca_days)
    except certs.CertificateError as exc:
        raise UsageError(str(exc)) from None
    try:
        paths = certs.write_bundle(bundle, args.out, force=args.force)
    except FileExistsError as exc:
        raise UsageError(f"{shown_path(exc.args[0])} already exists; not overwriting it (use --force to replace)"
                         ) from None
    except OSError as exc:
        raise UsageError(f"cannot write into {shown_path(args.out)}: {exc.strerror} "
                         f"({shown_path(exc.filename or args.out)})") from None

    cert = bundle.serving_cert()
    print(f"wrote {paths[certs.CA_FILE]}, {paths[certs.CERT_FILE]}, {paths[certs.KEY_FILE]} (mode 0600)")
    print(f"names: {', '.join(certs.dns_names(cert))}")
    print(f"valid until {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    return 0
