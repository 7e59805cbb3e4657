"""Audit results as wgpolicyk8s.io/v1alpha2 PolicyReports, the shape Kyverno's reports use
and the Policy Reporter UI reads. Pure: objects in, dicts out; the agent writes them.

One PolicyReport per namespace (named `netpol-guard`), one result per (NetworkPolicy, rule):
several findings of one rule in one policy share a result (their paths and messages joined).
A policy without findings gets one `pass` result (rule `all-rules`); a rule skipped by the
policy's netpol-guard.io/skip-rules annotation gets a `skip` result with the reason.

Severity: the v1alpha2 CRD admits high, medium and low only (later versions add critical and
info), so error -> high, warning -> medium, info -> low; the netpol-guard severity is kept in
properties.severity. A namespace whose results would exceed the API server's object size
limit is split into `netpol-guard`, `netpol-guard-2`, ... (each below MAX_REPORT_BYTES).
"""
from __future__ import annotations

import json
import time
from typing import Iterable, Mapping, Optional, Sequence

from webhook.audit.auditor import PolicyResult
from webhook.audit.deps import Cause
from webhook.rules.base import Finding
from webhook.rules.runner import SKIP_REASON, SKIP_RULES

API_VERSION = "wgpolicyk8s.io/v1alpha2"
SOURCE = "netpol-guard"
REPORT_NAME = "netpol-guard"
MANAGED_BY = {"app.kubernetes.io/managed-by": "netpol-guard"}
PASS_RULE = "all-rules"
# etcd refuses values over 1.5 MiB by default (--max-request-bytes); stay well under it with
# room for the metadata and managedFields the API server adds.
MAX_REPORT_BYTES = 1_000_000
MAX_TEXT = 4096  # one message or fix longer than this is cut (and says so)

RESULT_OF = {"error": "fail", "warning": "warn", "info": "warn"}
SEVERITY_OF = {"error": "high", "warning": "medium", "info": "low"}
_RANK = {"error": 0, "warning": 1, "info": 2}


def _cut(text: str) -> str:
    if len(text) <= MAX_TEXT:
        return text
    return text[:MAX_TEXT] + f"... ({len(text) - MAX_TEXT} more characters cut)"


def _resource(policy_key: str, uid: Optional[str] = None) -> dict:
    ns, _, name = policy_key.partition("/")
    ref = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "namespace": ns, "name": name}
    if uid:
        ref["uid"] = uid
    return ref


def _timestamp(seconds: float) -> dict:
    return {"seconds": int(seconds), "nanos": 0}


def causes_text(causes: Sequence[Cause]) -> str:
    return "; ".join(c.describe() for c in causes)


def policy_results(result: PolicyResult) -> list[dict]:
    """The report results of one audited policy, in a stable order. A result's timestamp is
    when its oldest finding was first seen, so an unchanged result renders identically."""
    key = result.policy.key
    by_rule: dict[str, list[Finding]] = {}
    for f in result.findings:
        by_rule.setdefault(f.rule, []).append(f)
    out = []
    for rule_id in sorted(by_rule):
        group = sorted(by_rule[rule_id], key=lambda f: (_RANK[f.severity], f.path, f.message))
        worst = group[0].severity
        props = {"path": ", ".join(dict.fromkeys(f.path for f in group)), "severity": worst,
                 "category": group[0].category}
        fixes = [f.fix for f in group if f.fix]
        if fixes:
            props["fix"] = _cut("\n---\n".join(dict.fromkeys(fixes)))
        causes = [c for f in group for c in result.causes_of(f)]
        if causes:
            props["cause"] = _cut(causes_text(list(dict.fromkeys(causes))))
        since = min(result.seen_of(f) for f in group)
        out.append({
            "policy": key, "rule": rule_id, "result": RESULT_OF[worst], "severity": SEVERITY_OF[worst],
            "category": group[0].category, "source": SOURCE, "scored": True,
            "message": _cut("\n".join(f.message for f in group)),
            "resources": [_resource(key)], "properties": props, "timestamp": _timestamp(since),
        })
    since = result.since
    if not out:
        out.append({"policy": key, "rule": PASS_RULE, "result": "pass", "source": SOURCE, "scored": True,
                    "message": "no findings", "resources": [_resource(key)], "timestamp": _timestamp(since)})
    skipped = result.policy.annotations.get(SKIP_RULES)
    if skipped:
        reason = result.policy.annotations.get(SKIP_REASON, "").strip() or "(no reason given)"
        for rule_id in sorted({r.strip() for r in skipped.split(",") if r.strip()}):
            out.append({"policy": key, "rule": rule_id, "result": "skip", "source": SOURCE, "scored": False,
                        "message": _cut(f"skipped by {SKIP_RULES}: {reason}"), "resources": [_resource(key)],
                        "timestamp": _timestamp(since)})
    return out


def summary(results: Iterable[Mapping]) -> dict:
    counts = {"pass": 0, "fail": 0, "warn": 0, "error": 0, "skip": 0}
    for r in results:
        counts[r["result"]] += 1
    return counts


def _report(kind: str, name: str, namespace: Optional[str], results: list[dict]) -> dict:
    meta: dict = {"name": name, "labels": dict(MANAGED_BY)}
    if namespace is not None:
        meta["namespace"] = namespace
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": meta, "summary": summary(results),
            "results": results}


def _size(obj: object) -> int:
    return len(json.dumps(obj, separators=(",", ":")))


def chunk_name(i: int) -> str:
    return REPORT_NAME if i == 0 else f"{REPORT_NAME}-{i + 1}"


def namespace_reports(namespace: str, results: Iterable[PolicyResult], extra: Iterable[dict] = ()) -> list[dict]:
    """The PolicyReports of one namespace (usually one; more only past the size limit);
    `extra`: namespace-level rows (isolation_rows)."""
    rows: list[dict] = []
    for r in sorted(results, key=lambda r: r.policy.key):
        rows.extend(policy_results(r))
    rows.extend(extra)
    return _chunks("PolicyReport", namespace, rows)


def cluster_report(rows: list[dict]) -> list[dict]:
    """ClusterPolicyReports for results that belong to no one namespace (the DNS target)."""
    return _chunks("ClusterPolicyReport", None, rows)


def _chunks(kind: str, namespace: Optional[str], rows: list[dict]) -> list[dict]:
    chunks: list[list[dict]] = [[]]
    size = 0
    overhead = _size(_report(kind, chunk_name(99), namespace, []))
    for row in rows:
        n = _size(row) + 1
        if chunks[-1] and size + n + overhead > MAX_REPORT_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(row)
        size += n
    return [_report(kind, chunk_name(i), namespace, c) for i, c in enumerate(chunks)]


def content(report: Mapping) -> str:
    """What decides whether a stored report must be rewritten: everything but server metadata
    and the results' timestamps (each replica's audit has its own clock: a new leader must not
    rewrite every report only because it first saw the same findings later)."""
    meta = report.get("metadata") or {}
    results = [{k: v for k, v in r.items() if k != "timestamp"} for r in report.get("results") or []]
    # ownerReferences: a report written before it had an owner is rewritten once to get one
    owners = [{k: o.get(k) for k in ("apiVersion", "kind", "name", "uid")} for o in meta.get("ownerReferences") or []]
    return json.dumps({"labels": meta.get("labels") or {}, "summary": report.get("summary"),
                       "results": results, **({"owners": owners} if owners else {})},
                      sort_keys=True, separators=(",", ":"))


def keep_timestamps(report: dict, stored: Optional[Mapping]) -> dict:
    """`report` with what the stored report knew about its identical results (same policy, rule,
    result and message): the time each was first reported, and the cause it appeared with -
    history a new leader or a restarted agent cannot know, and must not erase by rewriting."""
    if not stored:
        return report
    def ident(r: Mapping) -> tuple:
        return (r.get("policy"), r.get("rule"), r.get("result"), r.get("message"))
    old = {ident(r): r for r in stored.get("results") or () if isinstance(r, Mapping)}
    if not old:
        return report
    rows = []
    for r in report.get("results") or []:
        prior = old.get(ident(r))
        if prior is not None:
            r = dict(r)
            if "timestamp" in prior:
                r["timestamp"] = prior["timestamp"]
            cause = (prior.get("properties") or {}).get("cause")
            if cause and "cause" not in (r.get("properties") or {}):
                r["properties"] = {**(r.get("properties") or {}), "cause": cause}
        rows.append(r)
    return {**report, "results": rows}


def dns_target_rows(problem: Optional[str], config_dns_namespace: str, since: float = 0.0) -> list[dict]:
    """The ClusterPolicyReport rows about the configured DNS target (fail, or pass)."""
    base = {"policy": "netpol-guard/dns-target", "rule": "dns-target-missing", "source": SOURCE, "scored": True,
            "category": "dns", "timestamp": _timestamp(since),
            "resources": [{"apiVersion": "v1", "kind": "Namespace", "name": config_dns_namespace}]}
    if problem is None:
        return [{**base, "result": "pass", "message": "the configured DNS target selects DNS pods"}]
    return [{**base, "result": "fail", "severity": "high", "message": _cut(problem),
             "properties": {"severity": "error", "fix": "dns:\n  namespace: <where the DNS pods run>\n"
                                                        "  podLabels: {<label>: <value the DNS pods carry>}"}}]


def isolation_rows(namespace: str, problems: Iterable[tuple[str, str]], fixes: Mapping[str, str] | None = None,
                   causes: Mapping[str, Sequence[Cause]] | None = None) -> list[dict]:
    """Rows for managed policies the namespace's isolation label asks for and that are missing;
    `causes`: managed policy name -> the changes that made it go missing, when the audit saw them."""
    out = []
    for name, message in problems:
        cause = causes_text(list(causes[name])) if causes and causes.get(name) else None
        out.append({"policy": f"{namespace}/{name}", "rule": "isolation-policy-missing", "result": "fail",
                    "severity": "high", "category": "isolation", "source": SOURCE, "scored": True,
                    "message": _cut(message), "resources": [{"apiVersion": "v1", "kind": "Namespace", "name": namespace}],
                    "properties": {"severity": "error", "path": "metadata.labels",
                                   **({"fix": fixes[name]} if fixes and name in fixes else {}),
                                   **({"cause": _cut(cause)} if cause else {})},
                    "timestamp": _timestamp(time.time())})  # a rewrite keeps the stored one (keep_timestamps)
    return out
