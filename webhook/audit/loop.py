"""The background audit in the pod agent: the orchestration between the live view, the pure
audit core, and the writes (reports, Events) - only while this replica leads.

Each step:
- not leading: queued changes are dropped (a full pass follows on taking over);
- taking over (or starting): learn the reports already written, full audit, write what differs;
- after a failed write: every report written again (where the content differs) 5 s later;
- every `full_seconds`: a full audit again (the safety net for anything the index missed,
  and the refresh of suggestion wording), writing only what differs;
- otherwise, once changes have been quiet for `debounce` seconds (or have waited `max_delay`
  since the first of a burst): re-check the affected policies, rewrite the affected
  namespaces' reports when their content changed, and record an Event per finding that
  appeared or cleared (with the cause), at most `max_events` per step.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any, Callable, Optional

from webhook.audit import report as rpt
from webhook.audit.auditor import (Auditor, dns_target_problem, isolated_namespaces, isolation_causes,
                                   isolation_problems)
from webhook.audit.diff import AuditDelta
from webhook.audit.feed import Recorder
from webhook.audit.writing import event_lines
from webhook.cluster.view import ClusterView
from webhook.config import Config

log = logging.getLogger(__name__)
GAUGES_FILE = "audit-gauges.json"  # in the metrics directory; the webhook's /metrics reads it


class AuditLoop:
    def __init__(self, view: ClusterView, recorder: Recorder, config: Config, writer: Any, events: Any, *,
                 is_leader: Callable[[], bool], ready: Callable[[], bool], metrics: Any = None,
                 gauges_dir: Optional[str] = None, debounce: float = 1.0, max_delay: float = 5.0,
                 full_seconds: float = 600.0, max_events: int = 100, clock: Callable[[], float] = time.monotonic):
        self.view, self.recorder, self.config = view, recorder, config
        self.writer, self.events, self.metrics = writer, events, metrics
        self.is_leader, self.ready = is_leader, ready
        self.gauges_dir = gauges_dir
        self.debounce, self.max_delay, self.full_seconds = debounce, max_delay, full_seconds
        self.max_events = max_events
        self.clock = clock
        self.auditor = Auditor(view, config)
        self.leading = False
        self.last_full: Optional[float] = None
        self.passes = {"full": 0, "incremental": 0}
        self.changes_seen = 0
        self.rechecks = 0
        self.events_sent = 0
        # (namespace, managed policy) -> why it went missing, kept while it stays missing
        self.missing_causes: dict[tuple[str, str], tuple] = {}
        self.last_lag: Optional[float] = None
        self.retry_at: Optional[float] = None  # a write failed: write everything again then
        self.retry_seconds = 5.0

    # --- one step ---------------------------------------------------------------------------
    def step(self) -> str:
        """Do what is due now; returns what was done (for tests and logs)."""
        if not self.ready():
            return "waiting for the view"
        if not self.is_leader():
            if self.leading:
                log.info("audit: no longer leading; writes stop")
            self.leading = False
            self.recorder.take()
            return "not leading"
        now = self.clock()
        if not self.leading:
            self.recorder.take()
            self.writer.load_existing()
            self._full(now, events=False)
            self.leading = True
            return "full (took over)"
        if self.last_full is not None and now - self.last_full >= self.full_seconds:
            self.recorder.take()
            self._full(now, events=True)
            return "full (periodic)"
        if self.retry_at is not None and now >= self.retry_at:
            self.retry_at = None
            self._write(None)
            return "retried writes"
        first, last = self.recorder.first_at, self.recorder.last_at
        if first is None or last is None:
            return "idle"
        if now - last < self.debounce and now - first < self.max_delay:
            return "debouncing"
        changes = self.recorder.take()
        if not changes:
            return "idle"
        delta = self.auditor.apply(changes)
        # namespaces whose isolation label or policies changed: their managed policies may be missing now
        touched = {c.subject.name if c.kind == "Namespace" else c.subject.namespace  # type: ignore[attr-defined]
                   for c in changes if c.kind in ("Namespace", "NetworkPolicy")}
        writes = self._write(delta.namespaces | touched if not delta.full else None,
                             isolation_causes(changes, self.config))
        self._events(delta)
        log.log(logging.INFO if writes else logging.DEBUG,
                "audit: %d changes, %d policies re-checked, %d findings appeared, %d cleared, %d report writes",
                len(changes), delta.rechecked, sum(len(d.appeared) for d in delta.changed),
                sum(len(d.cleared) for d in delta.changed), writes)
        self.last_lag = time.monotonic() - first
        self.passes["full" if delta.full else "incremental"] += 1
        self.changes_seen += len(changes)
        self.rechecks += delta.rechecked
        self._count(delta, len(changes))
        return f"incremental: {len(changes)} changes, {delta.rechecked} policies re-checked"

    def _full(self, now: float, events: bool) -> None:
        delta = self.auditor.full()
        self.last_full = now
        self._write(None)
        if events:
            self._events(delta)
        self.passes["full"] += 1
        self.rechecks += delta.rechecked
        self._count(delta, 0)
        log.info("audit: full pass: %d policies, %d findings", len(self.auditor.results),
                 sum(len(r.findings) for r in self.auditor.results.values()))

    # --- the edges ----------------------------------------------------------------------------
    def _write(self, namespaces: Optional[set[str]], causes: Optional[dict] = None) -> int:
        """Rewrite the reports of `namespaces` (None: every namespace the audit or the writer knows);
        `causes`: namespace -> the changes of this pass that can make its managed policies missing."""
        if namespaces is None:
            namespaces = (set(self.auditor.namespaces()) | self.writer.namespaces()
                          | set(isolated_namespaces(self.view, self.config)))
        errors_before = self.writer.errors
        writes = 0
        for ns in sorted(namespaces):
            results = self.auditor.in_namespace(ns)
            problems = isolation_problems(self.view, self.config, ns)
            missing = rpt.isolation_rows(ns, problems, causes=self._missing_causes(ns, problems, causes or {}))
            writes += self.writer.sync(ns, rpt.namespace_reports(ns, results, missing) if results or missing else [])
        problem = dns_target_problem(self.view, self.config)
        writes += self.writer.sync_cluster(rpt.cluster_report(rpt.dns_target_rows(problem, self.config.dns.namespace)))
        if self.metrics is not None and writes:
            self.metrics.inc("netpol_guard_audit_report_writes_total", None, writes)
        if self.writer.errors > errors_before and self.retry_at is None:
            # e.g. the CRD is not established yet, or the API server is briefly away
            self.retry_at = self.clock() + self.retry_seconds
        return writes

    def _missing_causes(self, ns: str, problems: list, causes: dict) -> dict:
        """Managed policy name -> cause, for the missing ones: the cause of the pass on which
        each went missing, kept until it is back (a full pass or a new leader knows none)."""
        names = {name for name, _ in problems}
        for key in [k for k in self.missing_causes if k[0] == ns and k[1] not in names]:
            del self.missing_causes[key]
        for name in names:
            if (ns, name) not in self.missing_causes and causes.get(ns):
                self.missing_causes[(ns, name)] = tuple(causes[ns])
        return {name: self.missing_causes[(ns, name)] for name in names if (ns, name) in self.missing_causes}

    def _events(self, delta: AuditDelta) -> None:
        if self.events is None:
            return
        budget = self.max_events
        skipped = 0
        for d in delta.changed:
            ns, _, name = d.policy.partition("/")
            kept = self.auditor.results.get(d.policy)
            uid = (kept.policy.raw.get("metadata") or {}).get("uid") if kept else None
            for type_, reason, message in event_lines(d):
                if budget <= 0:
                    skipped += 1
                    continue
                budget -= 1
                self.events.record(ns, name, uid, type_, reason, message)
                self.events_sent += 1
        if skipped:
            log.warning("audit: %d more finding changes in this pass were not recorded as Events "
                        "(at most %d per pass); the PolicyReports have them all", skipped, self.max_events)
        if self.metrics is not None and budget < self.max_events:
            self.metrics.inc("netpol_guard_audit_events_total", None, self.max_events - budget)

    def _count(self, delta: AuditDelta, changes: int) -> None:
        if self.metrics is not None:
            kind = "full" if delta.full else "incremental"
            self.metrics.inc("netpol_guard_audit_passes_total", {"kind": kind})
            self.metrics.inc("netpol_guard_audit_rechecks_total", {"kind": kind}, delta.rechecked)
            if changes:
                self.metrics.inc("netpol_guard_audit_changes_total", None, changes)
                if self.last_lag is not None:
                    self.metrics.observe("netpol_guard_audit_lag_seconds", {}, self.last_lag)
        if self.gauges_dir:
            write_gauges(self.gauges_dir, self.gauges())

    def gauges(self) -> dict[str, float]:
        """Current findings by rule and severity, and policies audited (Prometheus sample -> value)."""
        out: dict[str, float] = {"netpol_guard_audit_policies": float(len(self.auditor.results))}
        counts: dict[tuple[str, str], int] = {}
        for r in self.auditor.results.values():
            for f in r.findings:
                counts[(f.rule, f.severity)] = counts.get((f.rule, f.severity), 0) + 1
        for (rule, severity), n in sorted(counts.items()):
            out[f'netpol_guard_audit_findings{{rule="{rule}",severity="{severity}"}}'] = float(n)
        out["netpol_guard_audit_leading"] = 1.0 if self.leading else 0.0
        return out

    # --- running ------------------------------------------------------------------------------
    def run(self, stop: threading.Event, tick: float = 0.1) -> None:
        while not stop.is_set():
            try:
                self.step()
            except Exception:  # noqa: BLE001 - one failed pass must not end the audit
                log.exception("audit: pass failed; the next one starts over with a full audit")
                self.leading = False  # reload what is written, full pass
                stop.wait(5.0)
            stop.wait(tick)


def write_gauges(directory: str, gauges: dict[str, float]) -> None:
    """Atomically replace the agent's gauge file (workers read it at scrape time)."""
    path = os.path.join(directory, GAUGES_FILE)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(gauges, fh)
    os.replace(tmp, path)


def read_gauges(directory: Optional[str]) -> dict[str, float]:
    if not directory:
        return {}
    try:
        with open(os.path.join(directory, GAUGES_FILE), encoding="utf-8") as fh:
            got = json.load(fh)
    except (OSError, ValueError):
        return {}
    return {str(k): float(v) for k, v in got.items() if isinstance(v, (int, float))}
