"""The audit core: findings per policy kept current change by change, with the cause.

The incremental audit must agree with a full audit after every change (the dependency
index may over-approximate, never miss), and re-check only the affected few policies."""
import os
import random

import yaml

from webhook.audit.auditor import Auditor
from webhook.audit.deps import Cause
from webhook.audit.feed import Recorder
from webhook.cluster.objects import ContainerPort, Namespace, Pod, Service, ServicePort
from webhook.cluster.view import ClusterView
from webhook.config import DEFAULT
from webhook.policy.parse import parse_policy

DNS_PORTS = (ContainerPort(53, "UDP", "dns"), ContainerPort(53, "TCP", "dns-tcp"))
APPS = ("web", "api", "db")


def pol(text: str):
    result = parse_policy(yaml.safe_load(text))
    assert result.policy is not None, result.errors
    return result.policy


def netpol(ns: str, name: str, spec: str):
    return pol(f"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
               f"metadata: {{name: {name}, namespace: {ns}, annotations: {{description: t}}}}\nspec:\n{spec}")


DNS_EGRESS = ("  - to:\n    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}\n"
              "      podSelector: {matchLabels: {k8s-app: kube-dns}}\n"
              "    ports: [{port: 53, protocol: UDP}, {port: 53, protocol: TCP}]\n")


def shapes(ns: str, k: int, other: str):
    app = APPS[k % len(APPS)]
    return [
        netpol(ns, f"deny-{k}", "  podSelector: {}\n  policyTypes: [Ingress, Egress]\n"),
        netpol(ns, f"dns-{k}", "  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n" + DNS_EGRESS),
        netpol(ns, f"app-{k}", f"  podSelector: {{matchLabels: {{app: {app}}}}}\n  ingress:\n  - from:\n"
                               "    - podSelector: {matchLabels: {app: web}}\n    ports: [{port: 8080}]\n"),
        netpol(ns, f"from-ns-{k}", f"  podSelector: {{matchLabels: {{app: {app}}}}}\n  ingress:\n  - from:\n"
                                   "    - namespaceSelector: {matchLabels: {team: obs}}\n    ports: [{port: metrics}]\n"),
        netpol(ns, f"cross-{k}", f"  podSelector: {{matchLabels: {{app: {app}}}}}\n  ingress:\n  - from:\n"
                                 f"    - namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: {other}}}}}\n"
                                 "      podSelector: {matchLabels: {app: api}}\n"),
        netpol(ns, f"expr-{k}", "  podSelector: {matchExpressions: [{key: tier, operator: Exists}]}\n"
                                "  policyTypes: [Egress]\n  egress:\n  - to: [{podSelector: {matchLabels: {app: db}}}]\n"
                                "    ports: [{port: 5432}]\n"),
        netpol(ns, f"ip-{k}", "  podSelector: {matchLabels: {app: web}}\n  policyTypes: [Egress]\n  egress:\n"
                              "  - to: [{ipBlock: {cidr: 10.9.0.0/16}}]\n"),
    ]


def cluster(namespaces: int = 6):
    view = ClusterView()
    rec = Recorder(view)
    rec.upsert(Namespace("kube-system", {"kubernetes.io/metadata.name": "kube-system"}))
    rec.upsert(Pod("kube-system", "coredns-1", {"k8s-app": "kube-dns"}, DNS_PORTS, ("10.0.0.10",)))
    rec.upsert(Namespace("monitoring", {"kubernetes.io/metadata.name": "monitoring", "team": "obs"}))
    rec.upsert(Pod("monitoring", "prom-0", {"app": "prometheus"}, (ContainerPort(9090, "TCP", "web"),)))
    for n in range(namespaces):
        ns = f"ns{n}"
        rec.upsert(Namespace(ns, {"kubernetes.io/metadata.name": ns, "team": f"t{n % 2}"}))
        for i, app in enumerate(APPS):
            rec.upsert(Pod(ns, f"{app}-0", {"app": app, "tier": "backend" if app != "web" else "front"},
                           (ContainerPort(8080, "TCP", "http"), ContainerPort(9090, "TCP", "metrics")),
                           (f"10.{n}.0.{i + 1}",)))
        rec.upsert(Service(ns, "web", {"app": "web"}, (ServicePort(80, 8080),)))
        for k, p in enumerate(shapes(ns, n, f"ns{(n + 1) % namespaces}")):
            rec.upsert(p)
    rec.take()
    return view, rec


def canonical(findings_by_policy):
    return {k: sorted((f.rule, f.path, f.severity) for f in v) for k, v in findings_by_policy.items()}


def full_findings(view):
    fresh = Auditor(view, DEFAULT)
    fresh.full()
    return fresh.findings()


# --- what a change re-checks, and what it reports ----------------------------------------------

def test_namespace_losing_a_label_flags_exactly_the_policies_that_relied_on_it_with_the_cause():
    view, rec = cluster()
    auditor = Auditor(view, DEFAULT)
    auditor.full()
    rec.upsert(Namespace("monitoring", {"kubernetes.io/metadata.name": "monitoring"}))
    delta = auditor.apply(rec.take())
    appeared = {d.policy: d for d in delta.changed if d.appeared}
    assert set(appeared) == {f"ns{n}/from-ns-{n}" for n in range(6)}
    d = appeared["ns0/from-ns-0"]
    assert "namespace-selector-matches-nothing" in {f.rule for f in d.appeared}
    assert d.causes == (Cause("Namespace", "monitoring", "team", "obs", None),)
    assert "label team 'obs' -> (absent)" in d.causes[0].describe()
    # the few policies that name team=obs, not every policy
    assert delta.rechecked == len(appeared) < len(auditor.results) / 5
    # undone: the findings clear, naming the label coming back
    rec.upsert(Namespace("monitoring", {"kubernetes.io/metadata.name": "monitoring", "team": "obs"}))
    back = auditor.apply(rec.take())
    cleared = {d.policy for d in back.changed if d.cleared}
    assert cleared == set(appeared)
    assert canonical(auditor.findings()) == canonical(full_findings(view))


def test_relabeled_pod_makes_its_policy_select_nothing_and_back():
    view, rec = cluster()
    auditor = Auditor(view, DEFAULT)
    auditor.full()
    before = auditor.checks
    old = view.find_pod("ns2", "db-0")
    rec.upsert(Pod("ns2", "db-0", {"app": "database", "tier": "backend"}, old.ports, old.ips))
    delta = auditor.apply(rec.take())
    rechecked = auditor.checks - before
    # the policies naming app=db anywhere (pod selectors, peers) or sharing the Service: not all 42
    assert rechecked == delta.rechecked and 0 < rechecked < len(auditor.results) / 2, rechecked
    got = {d.policy: d for d in delta.changed if d.appeared}
    assert "ns2/app-2" in got  # app-2 selects app=db: now nothing
    assert {f.rule for f in got["ns2/app-2"].appeared} == {"pod-selector-matches-nothing"}
    assert Cause("Pod", "ns2/db-0", "app", "db", "database") in got["ns2/app-2"].causes
    assert canonical(auditor.findings()) == canonical(full_findings(view))
    rec.upsert(old)
    back = auditor.apply(rec.take())
    assert "ns2/app-2" in {d.policy for d in back.changed if d.cleared}
    assert canonical(auditor.findings()) == canonical(full_findings(view))


def test_relabeled_dns_pods_flag_every_egress_isolated_namespace():
    view, rec = cluster()
    auditor = Auditor(view, DEFAULT)
    auditor.full()
    old = view.find_pod("kube-system", "coredns-1")
    rec.upsert(Pod("kube-system", "coredns-1", {"k8s-app": "coredns"}, old.ports, old.ips))
    delta = auditor.apply(rec.take())
    assert canonical(auditor.findings()) == canonical(full_findings(view))
    dns_policies = {d.policy for d in delta.changed if d.appeared}
    assert {f"ns{n}/dns-{n}" for n in range(6)} <= dns_policies
    d = next(d for d in delta.changed if d.policy == "ns0/dns-0")
    assert Cause("Pod", "kube-system/coredns-1", "k8s-app", "kube-dns", "coredns") in d.causes


def test_a_change_nothing_depends_on_rechecks_nothing():
    view, rec = cluster()
    auditor = Auditor(view, DEFAULT)
    auditor.full()
    old = view.find_pod("ns1", "web-0")
    rec.upsert(Pod("ns1", "web-0", {**old.labels, "version": "v2"}, old.ports, old.ips))
    delta = auditor.apply(rec.take())
    assert delta.rechecked == 0 and not delta.changed
    # and an update that changes nothing the audit reads is not even queued
    rec.upsert(Pod("ns1", "web-0", {**old.labels, "version": "v2"}, old.ports, old.ips))
    assert rec.pending() == 0


def test_deleted_policy_and_namespace_leave_no_results():
    view, rec = cluster()
    auditor = Auditor(view, DEFAULT)
    auditor.full()
    for p in view.policies("ns3"):
        rec.delete("NetworkPolicy", "ns3", p.name)
    for pod in view.pods("ns3"):
        rec.delete("Pod", "ns3", pod.name)
    rec.delete("Namespace", "", "ns3")
    delta = auditor.apply(rec.take())
    assert not auditor.in_namespace("ns3")
    assert {d.policy for d in delta.policies if d.deleted} == {f"ns3/{p.name}" for p in shapes("ns3", 3, "ns4")}
    assert canonical(auditor.findings()) == canonical(full_findings(view))


def test_exempt_namespaces_are_not_audited():
    from dataclasses import replace
    view, _ = cluster()
    auditor = Auditor(view, replace(DEFAULT, exemptNamespaces=("ns0",)))
    auditor.full()
    assert auditor.namespaces() and "ns0" not in auditor.namespaces()


# --- the index never misses: incremental == full after every random change -------------------

def _random_change(rnd: random.Random, view, rec, n_ns: int):
    ns = f"ns{rnd.randrange(n_ns)}"
    what = rnd.randrange(9)
    if what == 0:  # namespace relabel
        old = view.namespace("monitoring") if rnd.random() < 0.4 else view.namespace(ns)
        labels = dict(old.labels)
        labels["team"] = rnd.choice(["obs", "t0", "t1", "x"]) if rnd.random() < 0.8 else labels.pop("team", "obs")
        if rnd.random() < 0.2:
            labels.pop("team", None)
        rec.upsert(Namespace(old.name, labels))
    elif what == 1:  # pod relabel
        pods = view.pods(ns)
        if pods:
            p = rnd.choice(pods)
            labels = dict(p.labels)
            key = rnd.choice(["app", "tier", "version"])
            if rnd.random() < 0.2:
                labels.pop(key, None)
            else:
                labels[key] = rnd.choice(["web", "api", "db", "database", "front", "backend"])
            rec.upsert(Pod(p.namespace, p.name, labels, p.ports, p.ips))
    elif what == 2:  # pod created
        rec.upsert(Pod(ns, f"new-{rnd.randrange(1000)}", {"app": rnd.choice(APPS + ("other",))},
                       (ContainerPort(rnd.choice([8080, 5432]), "TCP", rnd.choice(["http", "metrics", None])),),
                       (f"10.9.{rnd.randrange(4)}.{rnd.randrange(250)}",)))
    elif what == 3:  # pod deleted
        pods = view.pods(ns)
        if pods:
            rec.delete("Pod", ns, rnd.choice(pods).name)
    elif what == 4:  # DNS pods
        old = view.find_pod("kube-system", "coredns-1")
        if old is None:
            rec.upsert(Pod("kube-system", "coredns-1", {"k8s-app": "kube-dns"}, DNS_PORTS))
        elif rnd.random() < 0.3:
            rec.delete("Pod", "kube-system", "coredns-1")
        else:
            rec.upsert(Pod("kube-system", "coredns-1", {"k8s-app": rnd.choice(["kube-dns", "coredns"])},
                           old.ports, old.ips))
    elif what == 5:  # policy deleted or re-created
        pols = view.policies(ns)
        if pols and rnd.random() < 0.5:
            rec.delete("NetworkPolicy", ns, rnd.choice(pols).name)
        else:
            k = rnd.randrange(7)
            rec.upsert(shapes(ns, rnd.randrange(3), f"ns{rnd.randrange(n_ns)}")[k])
    elif what == 6:  # service changed
        rec.upsert(Service(ns, "web", {"app": rnd.choice(APPS)}, (ServicePort(rnd.choice([80, 8080]), 
                                                                             rnd.choice([8080, "http"])),)))
    elif what == 7:  # pod ports changed
        pods = view.pods(ns)
        if pods:
            p = rnd.choice(pods)
            rec.upsert(Pod(p.namespace, p.name, p.labels,
                           (ContainerPort(rnd.choice([8080, 9090, 5432]), "TCP", rnd.choice(["http", "metrics"])),),
                           p.ips))
    else:  # namespace created or deleted
        name = f"extra{rnd.randrange(3)}"
        if view.namespace(name) is None:
            rec.upsert(Namespace(name, {"kubernetes.io/metadata.name": name, "team": rnd.choice(["obs", "t0"])}))
        else:
            rec.delete("Namespace", "", name)


def test_incremental_audit_agrees_with_a_full_audit_after_every_random_change():
    n_ns = 5
    for seed in range(int(os.environ.get("AUDIT_SEEDS", "4"))):
        rnd = random.Random(seed)
        view, rec = cluster(n_ns)
        auditor = Auditor(view, DEFAULT)
        auditor.full()
        total = len(auditor.results)
        rechecks = []
        for step in range(60):
            for _ in range(rnd.choice([1, 1, 1, 3])):  # sometimes a burst, as the debounce delivers
                _random_change(rnd, view, rec, n_ns)
            delta = auditor.apply(rec.take())
            rechecks.append(delta.rechecked)
            assert canonical(auditor.findings()) == canonical(full_findings(view)), (seed, step)
        # the point of the index: most changes re-check a fraction of the policies
        assert sorted(rechecks)[len(rechecks) // 2] < total / 2, (rechecks, total)


def test_incremental_audit_agrees_with_a_full_audit_with_workload_not_isolated_on():
    from dataclasses import replace
    config = replace(DEFAULT, rules={"workload-not-isolated": "info"})
    rnd = random.Random(7)
    view, rec = cluster(4)
    auditor = Auditor(view, config)
    auditor.full()
    for p in view.policies("ns1"):  # ns1 without its default-deny: some workloads are open
        if p.name.startswith("deny-"):
            rec.delete("NetworkPolicy", "ns1", p.name)
    auditor.apply(rec.take())
    seen = 0
    for step in range(60):
        _random_change(rnd, view, rec, 4)
        auditor.apply(rec.take())
        fresh = Auditor(view, config)
        fresh.full()
        assert canonical(auditor.findings()) == canonical(fresh.findings()), step
        seen += any(f.rule == "workload-not-isolated" for fs in fresh.findings().values() for f in fs)
    assert seen > 10  # the rule really was in play


def test_workload_not_isolated_follows_a_label_only_another_policy_names():
    """The finding sits on the first isolating policy, but a pod can leave the open set through
    a label only a later policy names: every pod change of the namespace re-checks it."""
    from dataclasses import replace
    config = replace(DEFAULT, rules={"workload-not-isolated": "info"})
    view, rec = cluster(1)
    rec.upsert(Namespace("solo", {"kubernetes.io/metadata.name": "solo"}))
    rec.upsert(Pod("solo", "web-0", {"app": "web"}))
    rec.upsert(Pod("solo", "worker-0", {"app": "worker"}))
    rec.upsert(netpol("solo", "a", "  podSelector: {matchLabels: {app: web}}\n  policyTypes: [Ingress]\n"))
    rec.upsert(netpol("solo", "b", "  podSelector: {matchLabels: {tier: front}}\n  policyTypes: [Ingress]\n"))
    rec.take()
    auditor = Auditor(view, config)
    auditor.full()
    assert [f.rule for f in auditor.results["solo/a"].findings] == ["workload-not-isolated"]
    rec.upsert(Pod("solo", "worker-0", {"app": "worker", "tier": "front"}))
    delta = auditor.apply(rec.take())
    assert "solo/a" in {d.policy for d in delta.changed if d.cleared}
    assert auditor.results["solo/a"].findings == ()
