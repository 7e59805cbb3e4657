"""Prometheus metrics without a client library, correct across gunicorn workers.

Each process writes its counters into its own small memory-mapped file in a shared
directory (``<dir>/<pid>.metrics``); a scrape, whichever worker serves it, sums the
files of every worker that ever ran (counters stay monotonic when a worker is
replaced). No locks between processes are needed: a process only writes its own
file, and each value is one aligned 8-byte slot written in place. Within a process a
lock serialises the threads.

Gauges (cache objects and age, sync state) are not summed: they are computed at
scrape time from the view of the worker that serves the scrape; every worker keeps
its own view, so they describe that worker's cache.

Without a directory (tests, ``create_app`` used alone) values live in process memory.

File layout: 8-byte header (bytes used), then records of
``<u32 key length><key bytes, padded to 8><f64 value>``; the key is the full
sample name with labels, e.g. ``netpol_guard_requests_total{endpoint="validate",...}``.
Values are 8-byte aligned, so a process updates them through a memoryview of doubles
over the mapping (an add is one index operation, ~4 us per request for all metrics).
Histogram buckets are stored per bucket and made cumulative when rendered.
"""
from __future__ import annotations

import bisect
import glob
import mmap
import os
import struct
import threading
from typing import Iterable, Mapping, Optional

def _build_info() -> str:
    import platform

    from webhook import __version__
    return f'netpol_guard_build_info{{version="{__version__}",python="{platform.python_version()}"}}'


LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# The audit's lag includes its debounce (1 s by default, up to maxDelay 5 s) and, on a large
# cluster, a burst that waits behind a full re-check (minutes): request-latency buckets ending
# at 2.5 s would put all of that in +Inf.
AUDIT_LAG_BUCKETS = (0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
# Histograms whose buckets are not LATENCY_BUCKETS.
BUCKETS = {"netpol_guard_audit_lag_seconds": AUDIT_LAG_BUCKETS}


def buckets_of(name: str) -> tuple[float, ...]:
    return BUCKETS.get(name, LATENCY_BUCKETS)
_CHUNK = 64 * 1024
_HEADER = struct.Struct("<Q")
_LEN = struct.Struct("<I")
_VAL = struct.Struct("<d")
BUILD_INFO = _build_info()

HELP = {
    "netpol_guard_requests_total": ("counter", "Admission requests by endpoint, operation and decision."),
    "netpol_guard_findings_total": ("counter", "Findings reported in admission decisions, by rule and severity."),
    "netpol_guard_request_duration_seconds": ("histogram", "Time to answer an admission request (webhook only)."),
    "netpol_guard_bad_requests_total": ("counter", "Malformed admission requests answered 400, by endpoint and reason."),
    "netpol_guard_cache_objects": ("gauge", "Objects in the cluster view of the worker serving this scrape."),
    "netpol_guard_cache_age_seconds": ("gauge", "Seconds since that worker's view last changed or was confirmed."),
    "netpol_guard_cache_synced": ("gauge", "1 when that worker's view source has completed its first sync."),
    "netpol_guard_cache_relists_total": ("counter", "Full re-lists by the workers' live caches (410 Gone, resync)."),
    "netpol_guard_cache_reconnects_total": ("counter", "Watch reconnects by the workers' live caches."),
    "netpol_guard_cache_errors_total": ("counter", "API errors seen by the workers' live caches."),
    "netpol_guard_cache_invalid_policies": ("gauge", "NetworkPolicies in the cluster the parser refuses (left out of the view)."),
    "netpol_guard_certificate_expiry_seconds": ("gauge", "Seconds until the serving certificate in use expires."),
    "netpol_guard_workers_reporting": ("gauge", "Worker processes whose counters this scrape sums."),
    # the background audit (pod agent, leader only; webhook/audit/loop.py)
    "netpol_guard_audit_findings": ("gauge", "Current audit findings over all NetworkPolicies, by rule and severity."),
    "netpol_guard_audit_policies": ("gauge", "NetworkPolicies the audit holds results for."),
    "netpol_guard_audit_leading": ("gauge", "1 while this release's audit is running on the elected replica."),
    "netpol_guard_audit_passes_total": ("counter", "Audit passes, by kind (full, incremental)."),
    "netpol_guard_audit_changes_total": ("counter", "Cluster changes (Namespace, Pod, Service, NetworkPolicy) audited."),
    "netpol_guard_audit_rechecks_total": ("counter", "Policies re-checked by audit passes, by kind; over changes_total: re-checks per change."),
    "netpol_guard_audit_report_writes_total": ("counter", "PolicyReport writes (create, replace, delete): only when content changed."),
    "netpol_guard_audit_events_total": ("counter", "Events recorded on NetworkPolicies for findings that appeared or cleared."),
    "netpol_guard_audit_lag_seconds": ("histogram", "Audit lag: first change of a burst seen -> its reports written."),
    "netpol_guard_build_info": ("gauge", "Always 1; the labels say which netpol-guard and Python are running."),
}


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    def esc(v: str) -> str:
        return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in labels.items()) + "}"


class _File:
    """One process's values in an mmap'd file."""

    def __init__(self, path: str):
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        if os.fstat(self.fd).st_size < _CHUNK:
            os.ftruncate(self.fd, _CHUNK)
        self.size = os.fstat(self.fd).st_size
        self.mm = mmap.mmap(self.fd, self.size)
        self.values = memoryview(self.mm).cast("d")
        self.used = _HEADER.unpack_from(self.mm, 0)[0] or _HEADER.size
        # key -> index of its value in self.values
        self.offsets = {key: off // _VAL.size for key, off, _ in _records(self.mm, self.used)}

    def add(self, key: str, amount: float) -> None:
        index = self.offsets.get(key)
        if index is None:
            index = self._append(key) // _VAL.size
        self.values[index] += amount  # values are 8-byte aligned: a view of doubles over the file

    def _append(self, key: str) -> int:
        raw = key.encode()
        padded = len(raw) + (-(_LEN.size + len(raw)) % 8)
        need = _LEN.size + padded + _VAL.size
        if self.used + need > self.size:
            new_size = self.size + max(_CHUNK, need)
            os.ftruncate(self.fd, new_size)
            self.values.release()
            self.mm.close()
            self.mm = mmap.mmap(self.fd, new_size)
            self.values = memoryview(self.mm).cast("d")
            self.size = new_size
        _LEN.pack_into(self.mm, self.used, len(raw))
        self.mm[self.used + _LEN.size: self.used + _LEN.size + len(raw)] = raw
        off = self.used + _LEN.size + padded
        _VAL.pack_into(self.mm, off, 0.0)
        self.used += need
        _HEADER.pack_into(self.mm, 0, self.used)  # published last: readers never see a half record
        self.offsets[key] = off // _VAL.size
        return off


def _records(buf, used: int) -> Iterable[tuple[str, int, float]]:
    pos = _HEADER.size
    while pos + _LEN.size <= used:
        n = _LEN.unpack_from(buf, pos)[0]
        padded = n + (-(_LEN.size + n) % 8)
        off = pos + _LEN.size + padded
        if off + _VAL.size > used:
            break
        yield bytes(buf[pos + _LEN.size: pos + _LEN.size + n]).decode(), off, _VAL.unpack_from(buf, off)[0]
        pos = off + _VAL.size


def _bound(b: float) -> str:
    return repr(float(b))


def _cumulate_buckets(samples: dict[str, float]) -> dict[str, float]:
    """Stored buckets count their own observations only; the text format wants each bucket
    to include every smaller one, and every bound present."""
    groups: dict[tuple[str, str], dict[str, float]] = {}
    for key, value in samples.items():
        base = key.split("{", 1)[0]
        if not base.endswith("_bucket"):
            continue
        for marker in (',le="', '{le="'):
            if marker in key:
                head, _, rest = key.rpartition(marker)
                groups.setdefault((head, marker), {})[rest.split('"', 1)[0]] = value
                break
    out = dict(samples)
    for (head, marker), counts in groups.items():
        total = 0.0
        name = head.split("{", 1)[0].removesuffix("_bucket")
        for bound in [_bound(b) for b in buckets_of(name)] + ["+Inf"]:
            total += counts.get(bound, 0.0)
            out[f'{head}{marker}{bound}"}}'] = total
    return out


def _sort_key(key: str) -> tuple:
    # histogram buckets in numeric order of `le`, +Inf last
    # (_histogram_keys() always puts `le` last)
    for marker in (',le="', '{le="'):
        if marker in key:
            head, _, rest = key.rpartition(marker)
            bound = rest.split('"', 1)[0]
            return (head, float("inf") if bound == "+Inf" else float(bound))
    return (key, 0.0)


def read_dir(directory: str) -> tuple[dict[str, float], int]:
    """Sum of every process file in directory, and how many files there were."""
    totals: dict[str, float] = {}
    files = glob.glob(os.path.join(directory, "*.metrics"))
    for path in files:
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        if len(data) < _HEADER.size:
            continue
        used = min(_HEADER.unpack_from(data, 0)[0], len(data))
        for key, _, value in _records(data, used):
            totals[key] = totals.get(key, 0.0) + value
    return totals, len(files)


# This process's id, kept current across forks: reading it from the kernel on every update
# (os.getpid() is a system call) showed in the request path's profile.
_pid = os.getpid()


def _after_fork() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_after_fork)


class Metrics:
    def __init__(self, directory: Optional[str] = None):
        self.directory = directory
        self._lock = threading.Lock()
        self._local: dict[str, float] = {}
        self._file: Optional[_File] = None
        self._pid = -1
        self._hist_cache: dict[tuple, tuple[list[str], str, str, str]] = {}
        self._key_cache: dict[tuple, str] = {}  # bounded: label values come from our code, not requests

    def _store(self) -> Optional[_File]:
        # Opened lazily and per pid: the object may be created in the gunicorn master
        # and used in forked workers, each of which needs its own file.
        if self.directory is None:
            return None
        if self._pid != _pid:
            self._file = _File(os.path.join(self.directory, f"{_pid}.metrics"))
            self._pid = _pid
        return self._file

    def _add(self, key: str, amount: float) -> None:  # caller holds the lock
        store = self._store()
        if store is None:
            self._local[key] = self._local.get(key, 0.0) + amount
        else:
            store.add(key, amount)

    def inc(self, name: str, labels: Mapping[str, str] | None = None, amount: float = 1.0) -> None:
        key = name + _labels(labels or {})
        with self._lock:
            self._add(key, amount)

    def raise_to(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        """Set this process's share of a counter to `value` if that is higher: for counts a
        worker keeps elsewhere (its live cache's re-lists), published at scrape time. The
        scrape sums every worker's share, so the total never goes down."""
        key = name + _labels(labels or {})
        with self._lock:
            store = self._store()
            if store is None:
                current = self._local.get(key, 0.0)
            else:
                index = store.offsets.get(key)
                current = store.values[index] if index is not None else 0.0
            if value > current:
                self._add(key, value - current)

    def _histogram_keys(self, name: str, labels: Mapping[str, str]) -> tuple[list[str], str, str]:
        # Label strings are built once per (histogram, labels). Each observation adds to ONE
        # bucket (its own, not cumulative) plus sum and count; render() makes the buckets
        # cumulative, as the text format wants. Three adds under one lock per request.
        cache_key = (name, tuple(labels.items()))
        keys = self._hist_cache.get(cache_key)
        if keys is None:
            buckets = [f"{name}_bucket" + _labels({**labels, "le": _bound(b)}) for b in buckets_of(name)]
            buckets.append(f"{name}_bucket" + _labels({**labels, "le": "+Inf"}))
            keys = (buckets, f"{name}_sum" + _labels(labels), f"{name}_count" + _labels(labels))
            self._hist_cache[cache_key] = keys
        return keys

    def record_decision(self, endpoint: str, operation: str, decision: str, seconds: float,
                        findings: Iterable[tuple[str, str]] = ()) -> None:
        """One admission decision: its request counter, a counter per finding and the latency
        histogram, with keys built once and one lock for all of it (this is on every review)."""
        request_key = self._key_cache.get((endpoint, operation, decision))
        if request_key is None:
            request_key = "netpol_guard_requests_total" + _labels(
                {"endpoint": endpoint, "operation": operation, "decision": decision})
            self._key_cache[(endpoint, operation, decision)] = request_key
        keys = [request_key]
        for rule, severity in findings:
            k = self._key_cache.get((rule, severity))
            if k is None:
                k = self._key_cache[(rule, severity)] = "netpol_guard_findings_total" + _labels(
                    {"rule": rule, "severity": severity})
            keys.append(k)
        buckets, sum_key, count_key = self._histogram_keys("netpol_guard_request_duration_seconds",
                                                           {"endpoint": endpoint})
        keys.append(buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)])
        keys.append(count_key)
        with self._lock:
            for k in keys:
                self._add(k, 1.0)
            self._add(sum_key, seconds)

    def observe(self, name: str, labels: Mapping[str, str], seconds: float) -> None:
        """One observation of a latency histogram (its buckets: buckets_of(name))."""
        buckets, sum_key, count_key = self._histogram_keys(name, dict(labels))
        with self._lock:
            self._add(buckets[bisect.bisect_left(buckets_of(name), seconds)], 1.0)
            self._add(count_key, 1.0)
            self._add(sum_key, seconds)

    def totals(self) -> tuple[dict[str, float], int]:
        if self.directory is None:
            with self._lock:
                return dict(self._local), 1
        with self._lock:
            self._store()  # make sure this worker is counted even before its first request
        return read_dir(self.directory)

    def render(self, gauges: Mapping[str, float]) -> str:
        """Prometheus text format 0.0.4."""
        totals, workers = self.totals()
        samples = _cumulate_buckets(totals)
        samples.update(gauges)
        samples["netpol_guard_workers_reporting"] = workers
        samples[BUILD_INFO] = 1
        # histogram buckets need every bound present once any exists; they are (inc'd
        # cumulatively above), so sorting by key keeps families together
        by_family: dict[str, list[str]] = {}
        for key in sorted(samples, key=_sort_key):
            base = key.split("{", 1)[0]
            family = base
            for suffix in ("_bucket", "_sum", "_count"):
                if base.endswith(suffix) and base[: -len(suffix)] in HELP:
                    family = base[: -len(suffix)]
            value = samples[key]
            text = repr(float(value)) if not float(value).is_integer() else str(int(value))
            by_family.setdefault(family, []).append(f"{key} {text}")
        out = []
        for family in sorted(set(by_family) | set(HELP)):
            if family in HELP:
                kind, help_text = HELP[family]
                out.append(f"# HELP {family} {help_text}")
                out.append(f"# TYPE {family} {kind}")
            out.extend(by_family.get(family, []))
        return "\n".join(out) + "\n"
