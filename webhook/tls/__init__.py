"""In-cluster, self-managed serving certificates (the chart's default certificate mode).

    plan.py      pure: what the Secret and the webhooks' caBundle should hold
    replicas.py  which certificate each ready replica serves (a TLS handshake)
    manager.py   the API layer and the loop the elected replica runs:
                 run_certificate_manager(api_client, config, namespace, is_leader, stop_event)

Certificate building and parsing live in webhook.certs; the server's hot reload of the
mounted files lives in webhook.admission.tls.
"""
