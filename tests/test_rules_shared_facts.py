"""Facts of the view and configuration alone (the DNS pods, the address index) are kept on the
view and shared by the contexts of later reviews; a change to the view must still reach the
next review, and nothing a review's candidate adds may leak into another review."""
from webhook.cluster.files import add_to_view, parse_text
from webhook.cluster.objects import ContainerPort, Pod
from webhook.cluster.view import ClusterView
from webhook.config import DEFAULT, from_dict
from webhook.policy.parse import parse_policy
from webhook.rules.context import Context
from webhook.rules.dns import dns_status
from webhook.rules.inventory import CLUSTER
from webhook.rules.runner import check_policy


def cluster_view() -> ClusterView:
    view = ClusterView()
    for doc in parse_text(CLUSTER, "cluster.yaml"):
        add_to_view(view, doc)
    return view


def candidate(name: str, egress: list, pod_selector: dict | None = None) -> object:
    obj = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
           "metadata": {"name": name, "namespace": "shop", "annotations": {"description": "test"}},
           "spec": {"podSelector": {"matchLabels": {"app": "api"}} if pod_selector is None else pod_selector,
                    "policyTypes": ["Egress"], "egress": egress}}
    return parse_policy(obj).policy


def review_context(view: ClusterView, policy) -> Context:
    """What the webhook builds per review: a new context with the candidate overlaid."""
    return Context.for_candidate(view, DEFAULT, policy)


def test_a_candidates_context_is_a_plain_context_with_the_candidate_overlaid():
    view = cluster_view()
    policy = candidate("api-egress", NAMED_DNS_PORTS)
    plain = Context(view, DEFAULT)
    assert review_context(view, policy).engine == plain.engine.with_overlay([policy])
    switched = from_dict({"cluster": {"ipBlockMatchesPods": not DEFAULT.cluster.ipBlockMatchesPods}})
    assert Context.for_candidate(view, switched, policy).engine == \
        Context(view, switched).engine.with_overlay([policy])


NAMED_DNS_PORTS = [{"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                    "ports": [{"port": "dns", "protocol": "UDP"}, {"port": "dns-tcp", "protocol": "TCP"}]}]


def test_a_new_dns_pod_reaches_the_next_review():
    view = cluster_view()
    policy = candidate("api-egress", NAMED_DNS_PORTS)
    assert not dns_status(policy, review_context(view, policy)).needs_udp
    # A DNS pod that does not declare the port names: the named ports no longer reach every DNS pod.
    view.upsert_pod(Pod("kube-system", "coredns-extra", {"k8s-app": "kube-dns"},
                        (ContainerPort(53, "UDP", None), ContainerPort(53, "TCP", None))))
    assert dns_status(policy, review_context(view, policy)).needs_udp


def test_a_candidate_does_not_leak_into_the_next_review():
    view = cluster_view()
    # A namespace-wide DNS policy under review would cover every pod of shop - had it been stored.
    allow_dns = candidate("allow-dns", NAMED_DNS_PORTS, pod_selector={})
    no_dns = candidate("api-egress", [{"to": [{"podSelector": {"matchLabels": {"app": "db"}}}]}])
    assert not dns_status(allow_dns, review_context(view, allow_dns)).needs_udp
    assert dns_status(no_dns, review_context(view, no_dns)).needs_udp


def test_a_new_pod_ip_reaches_the_next_reviews_ipblock_check():
    view = cluster_view()
    policy = candidate("api-egress", [{"to": [{"ipBlock": {"cidr": "192.0.2.0/24"}}],
                                       "ports": [{"port": 443, "protocol": "TCP"}]}])
    rules = lambda: {f.rule for f in check_policy(policy, review_context(view, policy))}  # noqa: E731
    assert "ipblock-targets-cluster" not in rules()
    view.upsert_pod(Pod("shop", "legacy", {"app": "legacy"}, ips=("192.0.2.7",)))
    assert "ipblock-targets-cluster" in rules()


# --- the stored policies' DNS analysis, shared per namespace and combined with each candidate ---

UDP_ONLY = [{"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                     "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
             "ports": [{"port": 53, "protocol": "UDP"}]}]
TO_DB = [{"to": [{"podSelector": {"matchLabels": {"app": "db"}}}]}]


def test_a_stored_dns_policy_added_or_deleted_reaches_the_next_review():
    view = cluster_view()
    no_dns = candidate("api-egress", TO_DB)
    assert dns_status(no_dns, review_context(view, no_dns)).needs_udp
    view.upsert_policy(candidate("allow-dns", NAMED_DNS_PORTS, pod_selector={}))
    assert not dns_status(no_dns, review_context(view, no_dns)).needs_udp
    view.delete_policy("shop", "allow-dns")
    assert dns_status(no_dns, review_context(view, no_dns)).needs_udp
    view.upsert_policy(candidate("api-dns", NAMED_DNS_PORTS))  # selects the api pods only
    assert not dns_status(no_dns, review_context(view, no_dns)).needs_udp


def test_a_candidate_replacing_a_stored_dns_provider_of_its_name_loses_its_dns():
    view = cluster_view()
    view.upsert_policy(candidate("allow-dns", NAMED_DNS_PORTS, pod_selector={}))
    view.upsert_policy(candidate("api-dns", NAMED_DNS_PORTS))
    view.upsert_policy(candidate("batch-dns", NAMED_DNS_PORTS, pod_selector={"matchLabels": {"app": "batch"}}))
    other = candidate("api-egress", TO_DB)
    # Asked first, so the shared analysis of shop is built and its class verdicts kept.
    assert not dns_status(other, review_context(view, other)).needs_udp
    # Replacing the namespace-wide provider: api still has api-dns.
    wide = candidate("allow-dns", TO_DB, pod_selector={})
    status = dns_status(wide, review_context(view, wide))
    assert [p.pod.ref for p in status.udp_gaps] and all("api" not in p.pod.ref for p in status.udp_gaps)
    # Replacing api-dns as well would leave api without DNS; replacing it alone does not.
    api = candidate("api-dns", TO_DB)
    assert not dns_status(api, review_context(view, api)).needs_udp
    view.delete_policy("shop", "allow-dns")
    status = dns_status(api, review_context(view, api))
    assert status.needs_udp and status.udp_gaps[0].isolating == ("shop/api-dns",)
    assert not dns_status(other, review_context(view, other)).needs_udp  # api-dns (stored) again
    # A hypothetical pod (no batch pod in view): the stored batch-dns provides, until replaced.
    batch = lambda name: candidate(name, TO_DB, pod_selector={"matchLabels": {"app": "batch"}})  # noqa: E731
    assert not dns_status(batch("batch-egress"), review_context(view, batch("batch-egress"))).needs_udp
    status = dns_status(batch("batch-dns"), review_context(view, batch("batch-dns")))
    assert status.needs_udp and status.udp_gaps[0].hypothetical


def reference_status(policy, ctx: Context):
    """dns_status by its plain definition: the candidate replaces the engine's policy of its
    name; each pod class is judged by the union of all policies selecting it."""
    from webhook.rules.dns import _pod_classes, dns_allowed
    engine, ns = ctx.engine, policy.namespace
    if "Egress" not in policy.policy_types:
        return (False, None)
    policies = [p for p in engine.policies_in(ns) if "Egress" in p.policy_types and p.key != policy.key] + [policy]
    plain = Context(ctx.view, ctx.config)  # a context of its own: no cache of the one judged
    if dns_allowed([policy] + [p for p in policies if p.pod_selector.is_empty], plain) == (True, True):
        return (True, ())
    classes, hypothetical = _pod_classes(policy, ctx.view)
    out = []
    for pod in classes:
        selecting = [p for p in policies if p.pod_selector.matches(pod.labels)]
        out.append((pod.ref, hypothetical,
                    *dns_allowed(selecting, plain), tuple(sorted(p.key for p in selecting))))
    return (True, tuple(out))


def observed_status(policy, ctx: Context):
    status = dns_status(policy, ctx)
    if not status.isolates_egress:
        return (False, None)
    return (True, tuple((p.pod.ref, p.hypothetical, p.udp, p.tcp, p.isolating) for p in status.pods))


def test_dns_status_matches_its_definition_review_after_review():
    """Every candidate against every set of stored policies, one view changing between reviews
    (so the shared analysis is reused, replaced and asked by candidates of the same name), in
    review contexts, contexts where the candidate is not overlaid and ones that remove a policy."""
    selectors = {"all": {}, "api": {"matchLabels": {"app": "api"}}, "batch": {"matchLabels": {"app": "batch"}},
                 "backend": {"matchLabels": {"tier": "backend"}}}
    bodies = {"dns": NAMED_DNS_PORTS, "udp": UDP_ONLY, "db": TO_DB, "none": []}
    stored = [candidate("allow-dns", NAMED_DNS_PORTS, selectors["all"]),
              candidate("api-dns", UDP_ONLY, selectors["api"]),
              candidate("batch-dns", NAMED_DNS_PORTS, selectors["batch"]),
              candidate("deny", [], selectors["all"])]
    candidates = [candidate(name, body, sel)
                  for name in ("allow-dns", "api-dns", "batch-dns", "deny", "new")
                  for sel in selectors.values() for body in bodies.values()]
    ingress_only = parse_policy({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                                 "metadata": {"name": "api-dns", "namespace": "shop"},
                                 "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}).policy
    lint_dns = candidate("lint-dns", NAMED_DNS_PORTS, selectors["all"])  # a second overlaid policy (lint)
    view = cluster_view()
    checked = 0
    for mask in [m ^ (m >> 1) for m in range(1 << len(stored))]:  # one policy changes per step
        for i, p in enumerate(stored):
            if mask >> i & 1 and view.policy("shop", p.name) is not p:
                view.upsert_policy(p)
            elif not mask >> i & 1 and view.policy("shop", p.name) is not None:
                view.delete_policy("shop", p.name)
        for cand in candidates:
            plain = Context(view, DEFAULT)
            removing = plain.engine.with_overlay([cand], removed=["shop/allow-dns", "shop/api-dns"])
            contexts = [review_context(view, cand), plain, plain.with_engine(removing),
                        plain.with_engine(plain.engine.with_overlay([cand, ingress_only])),
                        plain.with_engine(plain.engine.with_overlay([cand, lint_dns]))]
            for ctx in contexts:
                assert observed_status(cand, ctx) == reference_status(cand, ctx), (mask, cand.key, cand.raw)
                checked += 1
            # A stored policy judged while the candidate (maybe of its name) is overlaid, or it is removed.
            for p in view.policies("shop"):
                for ctx in contexts[0], contexts[2]:
                    assert observed_status(p, ctx) == reference_status(p, ctx), (mask, p.key, cand.key, cand.raw)
    assert checked == 16 * len(candidates) * 5
