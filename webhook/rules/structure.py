"""Structure: what the API server refuses, what it silently ignores, and what reads
differently from what it does."""
from __future__ import annotations

from typing import Iterator

from webhook.policy import limits
from webhook.policy.model import EGRESS, INGRESS, NetworkPolicy
from webhook.rules.base import Example, Hit, rule
from webhook.rules.context import Context
from webhook.rules.fixes import snippet
from webhook.rules.inventory import CLUSTER, DNS_EGRESS, ISOLATED_SHOP

DESCRIPTION_KEYS = ("description", "netpol-guard.io/description", "kubernetes.io/description")


def _nothing(policy: NetworkPolicy, ctx: Context) -> Iterator[Hit]:
    """Reported by the runner itself, not by a per-policy check."""
    return iter(())


# Preconditions (Rule.applies): what a policy must contain for each check below to find
# anything, read from the policy alone. Most policies contain none of it, and the runner
# then skips the check (~1 us a call, see Rule.applies).

def _ignores_written_rules(policy: NetworkPolicy) -> bool:
    """policyTypes is written and leaves out a direction that has rules."""
    return policy.policy_types_written and bool(
        (policy.ingress and INGRESS not in policy.policy_types) or (policy.egress and EGRESS not in policy.policy_types))


def _has_rule_without_peers(policy: NetworkPolicy) -> bool:
    """Some written rule has no `from`/`to` (or an empty one): it allows every peer."""
    return policy.contents.rule_without_peers


def _has_peers_written_empty(policy: NetworkPolicy) -> bool:
    return policy.contents.peers_written_empty


def _described(policy: NetworkPolicy) -> bool:
    for key in DESCRIPTION_KEYS:  # a plain loop: any() over a generator costs more than the lookups
        if policy.annotations.get(key, "").strip():
            return True
    return False


def _undescribed(policy: NetworkPolicy) -> bool:
    return not _described(policy)


rule(
    id="invalid-spec", category="structure", severity="error", builtin=True,
    summary="The API server would refuse this NetworkPolicy.",
    rationale="""
Anything `kubectl apply` would reject - a protocol in lower case, a port outside 1-65535,
an `endPort` on a named port, a peer that is empty or mixes `ipBlock` with selectors, a
CIDR that does not parse, an `except` that is not a strict subset of its `cidr`, label
keys or values the API refuses, an unknown `policyTypes` entry, a missing `podSelector`,
or a field the schema does not have (`podSelectors`, `namespaceselector`) - is reported
with the API server's field path, so CI catches it before a deploy does. Unknown fields
matter: clients that drop them silently turn a peer into "everyone".
""",
    bad=(Example("protocol in lower case and a port out of range", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-ingress, namespace: shop, annotations: {description: "api ingress"}}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - ports: [{port: 80800, protocol: tcp}]
""" + CLUSTER),
         Example("a misspelt field", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-ingress, namespace: shop, annotations: {description: "api ingress"}}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - from:
    - podSelectors: {matchLabels: {app: frontend}}
""" + CLUSTER)),
    good=(Example("valid ports", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-ingress, namespace: shop, annotations: {description: "frontend to api"}}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: frontend}}}]
    ports: [{port: 8080, protocol: TCP}]
""" + CLUSTER),),
)(_nothing)

rule(
    id="policy-too-large", category="structure", severity="error", builtin=True,
    summary="The NetworkPolicy is larger than netpol-guard judges; split it.",
    rationale=f"""
Checking a policy costs ~10-50 us per rule, peer, port, `except` entry and selector term,
and the API server lets through anything under its 3 MiB request limit: one policy with
200,000 `except` entries cost the webhook 4 s, past the API server's timeout, and stalled
every review behind it. netpol-guard therefore judges a policy of at most {limits.RULES:,} ingress
and egress rules, {limits.PEERS:,} peers, {limits.PORTS:,} ports, {limits.EXCEPTS:,} ipBlock `except` entries
and {limits.SELECTOR_TERMS:,} label selector terms (matchLabels entries, matchExpressions and their
values), counted over the whole policy before anything else is read (docs/operations.md,
"Limits on input"). Real policies stay far inside. A policy past a limit is refused on
/validate, left unpatched by /mutate and reported by `lint`, with the field path, the
count and the limit. Split it into several NetworkPolicies selecting the same pods: the
traffic they allow adds up. Like `invalid-spec`, it cannot be skipped by annotation (the
annotation is not read).
""",
    bad=(Example("8 rules x 16 peers x 8 except entries = 1,024 except entries", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: partner-egress, namespace: shop, annotations: {description: "egress to partners"}}
spec:
  podSelector: {matchLabels: {app: api}}
  policyTypes: [Egress]
  egress:
  - &rule
    to: [&peer {ipBlock: {cidr: 10.0.0.0/8, except: [10.0.0.0/24, 10.0.1.0/24, 10.0.2.0/24, 10.0.3.0/24,
                                                     10.0.4.0/24, 10.0.5.0/24, 10.0.6.0/24, 10.0.7.0/24]}},
         *peer, *peer, *peer, *peer, *peer, *peer, *peer, *peer, *peer, *peer, *peer, *peer, *peer, *peer, *peer]
  - *rule
  - *rule
  - *rule
  - *rule
  - *rule
  - *rule
  - *rule
""" + CLUSTER),),
    good=(Example("an allow-list well inside the limits", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: partner-ingress, namespace: shop, annotations: {description: "partners to api"}}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - from: [{ipBlock: {cidr: 203.0.113.0/24, except: [203.0.113.0/28]}}, {ipBlock: {cidr: 198.51.100.0/24}}]
    ports: [{port: 8080, protocol: TCP}]
""" + CLUSTER),),
)(_nothing)

rule(
    id="skip-without-reason", category="structure", severity="warning", builtin=True,
    summary="A policy skips rules without saying why.",
    rationale="""
`netpol-guard.io/skip-rules` exempts one policy from named rules. An exemption nobody can
explain becomes permanent by accident, so it must come with `netpol-guard.io/skip-reason`.
The exemption still applies; the missing reason is reported.
""",
    bad=(Example("skip without a reason", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: legacy
  namespace: shop
  annotations: {description: "legacy app", netpol-guard.io/skip-rules: "missing-description"}
spec:
  podSelector: {matchLabels: {app: api}}
  policyTypes: [Ingress]
""" + CLUSTER),),
    good=(Example("skip with a reason", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: legacy
  namespace: shop
  annotations:
    description: "legacy app"
    netpol-guard.io/skip-rules: "missing-description"
    netpol-guard.io/skip-reason: "owned by vendor chart; tracked in OPS-123"
spec:
  podSelector: {matchLabels: {app: api}}
  policyTypes: [Ingress]
""" + CLUSTER),),
)(_nothing)

rule(
    id="skip-unknown-rule", category="structure", severity="warning", builtin=True,
    summary="A policy skips a rule that does not exist or cannot be skipped.",
    rationale="""
A misspelt rule id in `netpol-guard.io/skip-rules` skips nothing, and the author believes
the exemption holds. `invalid-spec` cannot be skipped: the API server refuses such objects
whatever the annotation says; nor can `policy-too-large`: such a policy is not read, its
annotations included.
""",
    bad=(Example("misspelt rule id", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: legacy
  namespace: shop
  annotations:
    description: "legacy app"
    netpol-guard.io/skip-rules: "dns-egres-missing"
    netpol-guard.io/skip-reason: "uses node-local DNS on the host network"
spec:
  podSelector: {matchLabels: {app: api}}
  policyTypes: [Ingress]
""" + CLUSTER),),
    good=(Example("exact rule id", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: legacy
  namespace: shop
  annotations:
    description: "legacy app"
    netpol-guard.io/skip-rules: "dns-egress-missing"
    netpol-guard.io/skip-reason: "uses node-local DNS on the host network"
spec:
  podSelector: {matchLabels: {app: api}}
  policyTypes: [Ingress]
""" + CLUSTER),),
)(_nothing)


@rule(
    id="rules-ignored-by-policy-types", category="structure", severity="error",
    applies=_ignores_written_rules,
    summary="Ingress or egress rules are written but policyTypes leaves their direction out, so they are ignored.",
    rationale="""
With `policyTypes: [Ingress]`, every `egress` rule is silently ignored by the API server
and the CNI: the author believes egress is restricted and it is not (or believes it is
allowed and it is not). The same holds for `ingress` rules without `Ingress`.
""",
    bad=(Example("egress rules with policyTypes [Ingress]", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api, namespace: shop, annotations: {description: "api"}}
spec:
  podSelector: {matchLabels: {app: api}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: frontend}}}]
  egress:
  - to: [{podSelector: {matchLabels: {app: db}}}]
    ports: [{port: 5432}]
""" + CLUSTER),),
    good=(Example("both directions declared", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api, namespace: shop, annotations: {description: "api"}}
spec:
  podSelector: {matchLabels: {app: api}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: frontend}}}]
  egress:
  - to: [{podSelector: {matchLabels: {app: db}}}]
    ports: [{port: 5432}]""" + DNS_EGRESS + CLUSTER),),
)
def rules_ignored_by_policy_types(policy: NetworkPolicy, ctx: Context) -> Iterator[Hit]:
    if not policy.policy_types_written:
        return
    for direction, rules in ((INGRESS, policy.ingress), (EGRESS, policy.egress)):
        if rules and direction not in policy.policy_types:
            types = sorted(policy.policy_types | {direction}, key=(INGRESS, EGRESS).index)
            yield Hit(
                f"spec.{direction.lower()}",
                f"{len(rules)} {direction.lower()} rule(s) are ignored: policyTypes is "
                f"[{', '.join(sorted(policy.policy_types))}] and does not include {direction}",
                snippet({"spec": {"policyTypes": types}}),
            )


@rule(
    id="allow-all-peers", category="structure", severity="warning",
    applies=_has_rule_without_peers,
    summary="A rule allows every source or destination, outside the cluster included.",
    rationale="""
A rule without `from` (or `to`) matches every peer: every pod in every namespace *and*
every address on the internet. `ingress: [{}]` or a `ports` list without `from` is often
meant as "from my namespace" and is in fact "from anywhere". In a namespace labeled for
isolation this undoes the default-deny, so it is a warning there and informational
elsewhere.
""",
    bad=(Example("ports without from, in an isolated namespace", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-ingress, namespace: shop, annotations: {description: "api ingress"}}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - ports: [{port: 8080}]
""" + ISOLATED_SHOP),
         Example("ingress: [{}] outside an isolated namespace is informational", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-ingress, namespace: shop, annotations: {description: "api ingress"}}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress: [{}]
""" + CLUSTER, expect_severity="info")),
    good=(Example("ingress from named peers", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-ingress, namespace: shop, annotations: {description: "api ingress"}}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: frontend}}}]
    ports: [{port: 8080}]
""" + ISOLATED_SHOP),),
)
def allow_all_peers(policy: NetworkPolicy, ctx: Context) -> Iterator[Hit]:
    isolated = ctx.isolation_mode(policy.namespace) is not None
    for direction in (INGRESS, EGRESS):
        for r in policy.rules_for(direction):
            if not r.all_peers or r.peers_written_empty:
                continue  # explicit `from: []` is explicit-empty-peers' finding
            who = "every source" if direction == INGRESS else "every destination"
            ports = "on every port" if r.all_ports else "on " + ", ".join(p.describe() for p in r.ports)
            where = " in a namespace labeled for isolation" if isolated else ""
            example_peer = ({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": policy.namespace}},
                             "podSelector": {}})
            yield Hit(
                r.path,
                f"this rule allows {who}, including addresses outside the cluster, {ports}{where}",
                snippet({r.peers_field: [example_peer]}),
                severity="warning" if isolated else "info",
            )


@rule(
    id="explicit-empty-peers", category="structure", severity="warning",
    applies=_has_peers_written_empty,
    summary="`from: []` or `to: []` is written out: it means everyone, not no one.",
    rationale="""
An empty peer list is the same as no list: the rule matches every peer. Written out, it
reads as "no one", which is the opposite of what it does. To deny, remove the rule; to
allow everyone, leave the field out so the intent is visible.
""",
    bad=(Example("from: [] meant as deny", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-ingress, namespace: shop, annotations: {description: "db ingress"}}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: []
    ports: [{port: 5432}]
""" + CLUSTER),),
    good=(Example("deny all ingress", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-ingress, namespace: shop, annotations: {description: "db: no ingress"}}
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Ingress]
""" + CLUSTER),),
)
def explicit_empty_peers(policy: NetworkPolicy, ctx: Context) -> Iterator[Hit]:
    for direction in (INGRESS, EGRESS):
        for r in policy.rules_for(direction):
            if r.peers_written_empty:
                yield Hit(
                    f"{r.path}.{r.peers_field}",
                    f"`{r.peers_field}: []` matches every peer (outside the cluster too); "
                    f"remove the rule to deny, or omit `{r.peers_field}` to say 'everyone' plainly",
                    None,
                )


@rule(
    id="missing-description", category="structure", severity="info",
    applies=_undescribed,
    summary="The policy has no `description` annotation stating its intent.",
    rationale="""
A reviewer can only tell a mistake from an intention when the intention is written down.
A one-line `description` annotation ("frontend may call api on 8080") makes every other
finding easier to judge. Raise it to `error` in the configuration to require one.
""",
    bad=(Example("no description", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api, namespace: shop}
spec:
  podSelector: {matchLabels: {app: api}}
  policyTypes: [Ingress]
""" + CLUSTER),),
    good=(Example("with a description", """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: api
  namespace: shop
  annotations: {description: "api accepts no ingress until the frontend policy lands"}
spec:
  podSelector: {matchLabels: {app: api}}
  policyTypes: [Ingress]
""" + CLUSTER),),
)
def missing_description(policy: NetworkPolicy, ctx: Context) -> Iterator[Hit]:
    if not _described(policy):
        yield Hit("metadata.annotations",
                  "no description annotation says what this policy is for",
                  snippet({"metadata": {"annotations": {"description": "<who may talk to whom, and why>"}}}))
