"""ClusterView: the cluster as the checks see it, indexed by namespace and label.

One policy's checks must cost the same whether the cluster has 100 pods or 100,000, so
selector queries go through a label index: a matchLabels term narrows to one posting
list, and only that list is filtered. Pods of one workload share their labels, so the
view also groups pods into label classes; per-pod questions ("which policies select
it?") are answered once per class.

The view is mutable (the live cache applies watch events to it) and guarded by one
lock; readers hold it only for the duration of a query.
"""
from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any, Callable, Hashable, Iterable, Iterator

from webhook.cluster.objects import NAME_LABEL, Namespace, Pod, Service
from webhook.policy.model import AdminPolicy, NetworkPolicy
from webhook.policy.selectors import LabelSelector

ALL = object()  # sentinel: "no narrowing possible"
_MISSING = object()  # memo(): a stored fact may be None
MEMO_MAX = 20_000  # memo() entries per generation (see there)


class _LabelIndex:
    """(key, value) -> set of item ids, and key -> set of ids; over one population."""

    def __init__(self) -> None:
        self.by_pair: dict[tuple[str, str], set[int]] = defaultdict(set)
        self.by_key: dict[str, set[int]] = defaultdict(set)
        self.all: set[int] = set()

    def add(self, item_id: int, labels) -> None:
        self.all.add(item_id)
        for k, v in labels.items():
            self.by_pair[(k, v)].add(item_id)
            self.by_key[k].add(item_id)

    def remove(self, item_id: int, labels) -> None:
        self.all.discard(item_id)
        for k, v in labels.items():
            s = self.by_pair.get((k, v))
            if s is not None:
                s.discard(item_id)
                if not s:
                    del self.by_pair[(k, v)]
            s = self.by_key.get(k)
            if s is not None:
                s.discard(item_id)
                if not s:
                    del self.by_key[k]

    def candidates(self, sel: LabelSelector) -> set[int]:
        """A superset of the ids `sel` matches; the smallest the index can give."""
        best: set[int] | None = None
        for k, v in sel.match_labels:
            s = self.by_pair.get((k, v), set())
            if best is None or len(s) < len(best):
                best = s
        for r in sel.expressions:
            if r.operator == "In":
                s: set[int] = set()
                for v in r.values:
                    s |= self.by_pair.get((r.key, v), set())
            elif r.operator == "Exists":
                s = self.by_key.get(r.key, set())
            else:
                continue
            if best is None or len(s) < len(best):
                best = s
        return self.all if best is None else best


class ClusterView:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._namespaces: dict[str, Namespace] = {}
        self._ns_index = _LabelIndex()
        self._ns_ids: dict[str, int] = {}
        self._ns_by_id: dict[int, str] = {}
        self._pods: dict[int, Pod] = {}
        self._pod_ids: dict[tuple[str, str, str], int] = {}  # (kind, ns, name) -> id
        self._pod_index: dict[str, _LabelIndex] = defaultdict(_LabelIndex)  # per namespace
        self._services: dict[tuple[str, str], Service] = {}
        # Cross-namespace summaries, kept up to date on every change (never rebuilt on a
        # query: the live cache changes the view continuously). Values count pods/services
        # per namespace so removals know when a namespace drops out.
        self._pair_ns: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
        self._key_ns: dict[str, dict[str, int]] = defaultdict(dict)
        self._port_ns: dict[object, dict[str, int]] = defaultdict(dict)
        # Container port number -> {protocol: how many pods/templates declare it so}: lets
        # port-protocol-mismatch rule out, per port, the common case of one protocol only.
        self._port_protocols: dict[int, dict[str, int]] = defaultdict(dict)
        self._services_by_ns: dict[str, dict[str, Service]] = defaultdict(dict)
        self._service_port_ns: dict[tuple[int, str], dict[str, int]] = defaultdict(dict)
        self._policies: dict[str, dict[str, NetworkPolicy]] = defaultdict(dict)
        # AdminNetworkPolicies and the BaselineAdminNetworkPolicy, by kind/name (cluster-scoped).
        self._admin_policies: dict[str, AdminPolicy] = {}
        # kind -> count, for objects the view was given whose effect on traffic the engine does
        # not evaluate (ClusterNetworkPolicy): answers say so instead of silently ignoring them.
        self.not_evaluated: dict[str, int] = {}
        # Immutable snapshots of a summary key's namespace set, handed to readers that
        # iterate outside the lock. Built on first read, dropped only when that key's
        # namespace membership changes (a namespace gains or loses the port: rare), so a
        # read costs a dict lookup instead of copying thousands of names.
        self._frozen: dict[int, dict[object, frozenset[str]]] = {
            id(self._port_ns): {}, id(self._service_port_ns): {}}
        self._next_id = 0
        # Whether Namespace (resp. Pod/workload) objects were ever supplied. Without
        # them "matches nothing" cannot be told apart from "not shown", so checks that
        # need an inventory stay quiet rather than guess.
        self.namespaces_known = False
        self.pods_known = False
        self.generation = 0  # bumped on every change; caches key on it
        self._memo: tuple[int, dict[Hashable, Any]] = (0, {})  # see memo()

    # --- mutation --------------------------------------------------------------------
    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _touch(self) -> None:
        self.generation += 1

    def upsert_namespace(self, ns: Namespace, implied: bool = False) -> None:
        with self.lock:
            if not implied:
                self.namespaces_known = True
            elif ns.name in self._namespaces:
                return
            self._remove_namespace(ns.name)
            nid = self._new_id()
            self._namespaces[ns.name] = ns
            self._ns_ids[ns.name] = nid
            self._ns_by_id[nid] = ns.name
            self._ns_index.add(nid, ns.labels)
            self._touch()

    def _remove_namespace(self, name: str) -> None:
        nid = self._ns_ids.pop(name, None)
        if nid is not None:
            self._ns_index.remove(nid, self._namespaces[name].labels)
            del self._ns_by_id[nid]
            del self._namespaces[name]

    def delete_namespace(self, name: str) -> None:
        with self.lock:
            self._remove_namespace(name)
            self._touch()

    def imply_namespace(self, name: str) -> None:
        """An object lives in `name`, so the namespace exists (with its automatic label)."""
        if name not in self._namespaces:
            self.upsert_namespace(Namespace(name, {NAME_LABEL: name}), implied=True)

    def _count(self, table: dict, key: object, ns: str, delta: int) -> None:
        per_ns = table[key]
        before = per_ns.get(ns, 0)
        n = before + delta
        if n > 0:
            per_ns[ns] = n
        else:
            per_ns.pop(ns, None)
            if not per_ns:
                del table[key]
        if (before > 0) != (n > 0):  # the namespace joined or left this key's set
            frozen = self._frozen.get(id(table))
            if frozen is not None:
                frozen.pop(key, None)

    def _frozen_namespaces(self, table: dict, key: object) -> frozenset[str]:
        """The namespaces `table` counts under `key`, as a cached immutable set."""
        with self.lock:
            frozen = self._frozen[id(table)]
            found = frozen.get(key)
            if found is None:
                found = frozen[key] = frozenset(table.get(key, ()))
            return found

    def _summarize_pod(self, pod: Pod, delta: int) -> None:
        ns = pod.namespace
        for pair in pod.labels.items():
            self._count(self._pair_ns, pair, ns, delta)
            self._count(self._key_ns, pair[0], ns, delta)
        for p in pod.ports:
            self._count(self._port_ns, p.port, ns, delta)
            self._count(self._port_protocols, p.port, p.protocol, delta)  # counted per protocol, not namespace
            if p.name:
                self._count(self._port_ns, p.name, ns, delta)

    def upsert_pod(self, pod: Pod) -> None:
        with self.lock:
            self.pods_known = True
            key = (pod.kind, pod.namespace, pod.name)
            self._remove_pod(key)
            pid = self._new_id()
            self._pod_ids[key] = pid
            self._pods[pid] = pod
            self._pod_index[pod.namespace].add(pid, pod.labels)
            self._summarize_pod(pod, +1)
            self.imply_namespace(pod.namespace)
            self._touch()

    def _remove_pod(self, key: tuple[str, str, str]) -> None:
        pid = self._pod_ids.pop(key, None)
        if pid is not None:
            pod = self._pods.pop(pid)
            self._pod_index[pod.namespace].remove(pid, pod.labels)
            self._summarize_pod(pod, -1)

    def delete_pod(self, namespace: str, name: str, kind: str = "Pod") -> None:
        with self.lock:
            self._remove_pod((kind, namespace, name))
            self._touch()

    def _summarize_service(self, svc: Service, delta: int) -> None:
        for sp in svc.ports:
            self._count(self._service_port_ns, (sp.port, sp.protocol), svc.namespace, delta)

    def upsert_service(self, svc: Service) -> None:
        with self.lock:
            self.delete_service(svc.namespace, svc.name)
            self._services[(svc.namespace, svc.name)] = svc
            self._services_by_ns[svc.namespace][svc.name] = svc
            self._summarize_service(svc, +1)
            self._touch()

    def delete_service(self, namespace: str, name: str) -> None:
        with self.lock:
            old = self._services.pop((namespace, name), None)
            if old is not None:
                self._services_by_ns[namespace].pop(name, None)
                if not self._services_by_ns[namespace]:
                    del self._services_by_ns[namespace]
                self._summarize_service(old, -1)
            self._touch()

    def upsert_policy(self, policy: NetworkPolicy) -> None:
        with self.lock:
            self._policies[policy.namespace][policy.name] = policy
            self.imply_namespace(policy.namespace)
            self._touch()

    def delete_policy(self, namespace: str, name: str) -> None:
        with self.lock:
            self._policies.get(namespace, {}).pop(name, None)
            self._touch()

    def upsert_admin_policy(self, policy: AdminPolicy) -> None:
        with self.lock:
            self._admin_policies[policy.key] = policy
            self._touch()

    def delete_admin_policy(self, kind: str, name: str) -> None:
        with self.lock:
            self._admin_policies.pop(f"{kind}/{name}", None)
            self._touch()

    def memo(self, key: Hashable, build: Callable[[], Any]) -> Any:
        """A fact derived from the view (an index, the DNS pods), built once per generation and
        shared by every reader: the webhook builds a rules context per review, so a fact kept
        on the context would be rebuilt for every review. `key` must name everything else the
        fact depends on (the configuration it reads). Dropped as a whole when the view changes;
        a fact built while a change lands is filed under the older generation, so it is
        rebuilt by the next reader. Bounded: some keys come from what reviews contain (the
        close matches of a label value nobody carries), and a view that never changes (a
        snapshot) would otherwise keep one entry per distinct value ever reviewed; past
        MEMO_MAX entries the store starts over and its facts are rebuilt when next asked."""
        generation = self.generation
        memo = self._memo
        if memo[0] != generation:
            memo = self._memo = (generation, {})
        store = memo[1]
        got = store.get(key, _MISSING)
        if got is _MISSING:
            got = build()
            if len(store) >= MEMO_MAX:
                store.clear()
            store[key] = got
        return got

    # --- queries ---------------------------------------------------------------------
    def namespace(self, name: str) -> Namespace | None:
        return self._namespaces.get(name)

    def namespaces(self) -> list[Namespace]:
        with self.lock:
            return list(self._namespaces.values())

    def namespace_labels(self, name: str) -> dict[str, str]:
        ns = self._namespaces.get(name)
        return dict(ns.labels) if ns else {NAME_LABEL: name}

    def select_namespaces(self, sel: LabelSelector) -> list[str]:
        with self.lock:
            out = []
            for nid in self._ns_index.candidates(sel):
                name = self._ns_by_id[nid]
                if sel.matches(self._namespaces[name].labels):
                    out.append(name)
            return out

    def pods(self, namespace: str | None = None) -> list[Pod]:
        with self.lock:
            if namespace is None:
                return list(self._pods.values())
            idx = self._pod_index.get(namespace)
            return [self._pods[i] for i in idx.all] if idx else []

    def pod_count(self) -> int:
        return len(self._pods)

    def find_pod(self, namespace: str, name: str) -> Pod | None:
        """A Pod by name, else a workload of that name (any kind)."""
        with self.lock:
            pid = self._pod_ids.get(("Pod", namespace, name))
            if pid is not None:
                return self._pods[pid]
            for (kind, ns, n), pid in self._pod_ids.items():
                if ns == namespace and n == name:
                    return self._pods[pid]
            return None

    def iter_select_pods(self, namespace: str, sel: LabelSelector) -> Iterator[Pod]:
        """Pods (and workload templates) in `namespace` that `sel` selects."""
        with self.lock:
            idx = self._pod_index.get(namespace)
            if not idx:
                return iter(())
            found = [self._pods[i] for i in idx.candidates(sel) if sel.matches(self._pods[i].labels)]
        return iter(found)

    def select_pods(self, namespace: str, sel: LabelSelector, limit: int | None = None) -> list[Pod]:
        with self.lock:
            idx = self._pod_index.get(namespace)
            if not idx:
                return []
            out = []
            for i in idx.candidates(sel):
                pod = self._pods[i]
                if sel.matches(pod.labels):
                    out.append(pod)
                    if limit is not None and len(out) >= limit:
                        break
            return out

    def first_pod(self, namespace: str, sel: LabelSelector, where: Callable[[Pod], bool]) -> Pod | None:
        """The first pod (in the index's stable order) that `sel` selects and `where` accepts."""
        with self.lock:
            idx = self._pod_index.get(namespace)
            if not idx:
                return None
            for i in idx.candidates(sel):
                pod = self._pods[i]
                if sel.matches(pod.labels) and where(pod):
                    return pod
            return None

    def any_pod(self, namespace: str, sel: LabelSelector) -> bool:
        return bool(self.select_pods(namespace, sel, limit=1))

    def pod_label_classes(self, namespace: str, sel: LabelSelector) -> list[Pod]:
        """One representative pod per distinct label set among the pods `sel` selects."""
        with self.lock:
            idx = self._pod_index.get(namespace)
            if not idx:
                return []
            seen: dict[frozenset, Pod] = {}
            for i in idx.candidates(sel):
                pod = self._pods[i]
                key = frozenset(pod.labels.items())
                if key not in seen and sel.matches(pod.labels):
                    seen[key] = pod
            return list(seen.values())

    def label_keys(self, namespace: str) -> set[str]:
        idx = self._pod_index.get(namespace)
        return set(idx.by_key) if idx else set()

    def label_values(self, namespace: str, key: str) -> set[str]:
        idx = self._pod_index.get(namespace)
        if not idx:
            return set()
        with self.lock:
            return {v for (k, v) in idx.by_pair if k == key}

    def namespace_label_keys(self) -> set[str]:
        return set(self._ns_index.by_key)

    def namespace_label_values(self, key: str) -> set[str]:
        with self.lock:
            return {v for (k, v) in self._ns_index.by_pair if k == key}

    def services(self, namespace: str | None = None) -> list[Service]:
        with self.lock:
            if namespace is not None:
                return list(self._services_by_ns.get(namespace, {}).values())
            return list(self._services.values())

    def policies(self, namespace: str | None = None) -> list[NetworkPolicy]:
        with self.lock:
            if namespace is not None:
                return list(self._policies.get(namespace, {}).values())
            return [p for d in self._policies.values() for p in d.values()]

    def policy(self, namespace: str, name: str) -> NetworkPolicy | None:
        return self._policies.get(namespace, {}).get(name)

    def admin_policies(self) -> list[AdminPolicy]:
        """AdminNetworkPolicies and BaselineAdminNetworkPolicies, in no particular order."""
        with self.lock:
            return list(self._admin_policies.values())

    def policy_count(self) -> int:
        return sum(len(d) for d in self._policies.values())

    def stats(self) -> dict[str, int]:
        with self.lock:
            return {"namespaces": len(self._namespaces), "pods": len(self._pods),
                    "services": len(self._services), "networkpolicies": self.policy_count()}


def build_view(namespaces: Iterable[Namespace] = (), pods: Iterable[Pod] = (),
               services: Iterable[Service] = (), policies: Iterable[NetworkPolicy] = ()) -> ClusterView:
    view = ClusterView()
    for ns in namespaces:
        view.upsert_namespace(ns)
    for p in pods:
        view.upsert_pod(p)
    for s in services:
        view.upsert_service(s)
    for pol in policies:
        view.upsert_policy(pol)
    return view


# --- cross-namespace lookups (appended for the selector and ports rules) ------------------
from collections.abc import Set as AbstractSet  # noqa: E402

# The per-namespace pod indexes answer "which pods here"; some checks ask "in which
# namespaces" (a peer written in the wrong namespace, a named port declared anywhere). The
# view keeps those summaries current on every change (see _summarize_pod), so one policy's
# check never walks every namespace's pods and no query ever rebuilds anything.

def _namespace_candidates(view: ClusterView, sel: LabelSelector) -> AbstractSet[str]:
    """Namespaces that may hold a pod `sel` selects: a superset, from the label-pair summary.
    Possibly a live view of a summary (no copy of thousands of names): use it under the lock."""
    best: AbstractSet[str] | None = None
    for pair in sel.match_labels:
        s = view._pair_ns.get(pair, {}).keys()
        if best is None or len(s) < len(best):
            best = s
    for r in sel.expressions:
        if r.operator == "In":
            s = set()
            for v in r.values:
                s |= view._pair_ns.get((r.key, v), {}).keys()
        elif r.operator == "Exists":
            s = view._key_ns.get(r.key, {}).keys()
        else:
            continue
        if best is None or len(s) < len(best):
            best = s
    if best is None:
        return {ns for ns, idx in view._pod_index.items() if idx.all}
    return best


def namespaces_with_pods(view: ClusterView, sel: LabelSelector, *, ns_selector: LabelSelector | None = None,
                         exclude: Iterable[str] = (), limit: int | None = None) -> list[str]:
    """Sorted namespaces holding a pod (or template) `sel` selects, optionally only those whose
    labels `ns_selector` matches. Candidates come from the cross-namespace pair summary, so the
    cost follows the namespaces that carry the selector's labels, not the cluster's size."""
    with view.lock:
        skip = set(exclude)
        candidates = _namespace_candidates(view, sel)
        if ns_selector is not None:
            # Walk the smaller side: namespaces carrying the pod labels, or the namespaces
            # the namespace selector can match (from the namespace label index).
            ns_ids = view._ns_index.candidates(ns_selector)
            if len(ns_ids) < len(candidates):
                candidates = {name for name in (view._ns_by_id[i] for i in ns_ids) if name in candidates}
        out = []
        for ns in sorted(candidates):
            if ns in skip:
                continue
            if ns_selector is not None and not ns_selector.matches(view.namespace_labels(ns)):
                continue
            if view.any_pod(ns, sel):
                out.append(ns)
                if limit is not None and len(out) >= limit:
                    break
        return out


def namespaces_declaring_port(view: ClusterView, port: int | str) -> AbstractSet[str]:
    """Namespaces where some pod or template declares a container port of that number or name.
    Immutable (callers iterate outside the lock while the live cache keeps changing the view)
    and cached until a namespace gains or loses the port, so a call does not copy the set."""
    return view._frozen_namespaces(view._port_ns, port)


def port_declared_with_other_protocol(view: ClusterView, port: int, protocol: str) -> bool:
    """Whether some pod or template anywhere in view declares container port `port` with a
    protocol other than `protocol`. A cluster-wide summary lookup: no per-namespace walk."""
    protocols = view._port_protocols.get(port, ())
    # More protocols than `protocol` alone means another one is there. Two atomic reads,
    # no iteration, so no lock is needed while the live cache changes the table.
    return len(protocols) > (protocol in protocols)


def services_in(view: ClusterView, namespace: str) -> list[Service]:
    """The Services of one namespace, without walking every Service in the cluster."""
    return view.services(namespace)


def namespaces_with_service_port(view: ClusterView, port: int, protocol: str) -> AbstractSet[str]:
    """Namespaces where some Service exposes `port`/`protocol` (immutable, cached like
    namespaces_declaring_port)."""
    return view._frozen_namespaces(view._service_port_ns, (port, protocol))
