"""A work queue keyed by namespace name, with the guarantees client-go's workqueue gives.

- A key is queued at most once: a burst of 50 events for one namespace is one reconcile.
- A key is never processed by two workers at once: adding a key that is being processed
  marks it dirty, and it is queued again when the worker calls done().
- add_after() delays a key (backoff after an API error); an earlier add wins.

Backoff keeps per-key failure counts: base * 2**failures, capped, with jitter so that
many namespaces failing together do not retry in lockstep.
"""
from __future__ import annotations

import heapq
import random
import threading
import time
from collections import deque
from typing import Optional


class WorkQueue:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: deque[str] = deque()
        self._queued: set[str] = set()  # in _queue
        self._processing: set[str] = set()
        self._dirty: set[str] = set()  # re-added while processing
        self._delayed: list[tuple[float, int, str]] = []  # (due, seq, key) heap
        self._seq = 0
        self._shutdown = False

    def add(self, key: str) -> None:
        with self._cond:
            self._add_locked(key)

    def _add_locked(self, key: str) -> None:
        if self._shutdown:
            return
        if key in self._processing:
            self._dirty.add(key)
            return
        if key not in self._queued:
            self._queued.add(key)
            self._queue.append(key)
            self._cond.notify()

    def add_after(self, key: str, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        with self._cond:
            self._seq += 1
            heapq.heappush(self._delayed, (time.monotonic() + delay, self._seq, key))
            self._cond.notify()

    def _promote_due_locked(self) -> Optional[float]:
        """Move due delayed keys into the queue; returns seconds until the next one is due."""
        now = time.monotonic()
        while self._delayed and self._delayed[0][0] <= now:
            _, _, key = heapq.heappop(self._delayed)
            self._add_locked(key)
        return self._delayed[0][0] - now if self._delayed else None

    def get(self, timeout: float) -> Optional[str]:
        """The next key (now marked processing), or None after `timeout` or on shutdown."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if self._shutdown:
                    return None
                next_due = self._promote_due_locked()
                if self._queue:
                    key = self._queue.popleft()
                    self._queued.discard(key)
                    self._processing.add(key)
                    return key
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(min(remaining, next_due) if next_due is not None else remaining)

    def done(self, key: str) -> None:
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty:
                self._dirty.discard(key)
                self._add_locked(key)

    def shutdown(self) -> None:
        with self._cond:
            self._shutdown = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._queue)

    def idle(self) -> bool:
        """Nothing queued, delayed or being processed."""
        with self._cond:
            return not (self._queue or self._processing or self._delayed or self._dirty)


class Backoff:
    """Per-key exponential backoff with full jitter in [delay/2, delay]."""

    def __init__(self, base: float = 0.05, cap: float = 30.0) -> None:
        self.base, self.cap = base, cap
        self._failures: dict[str, int] = {}
        self._lock = threading.Lock()

    def next_delay(self, key: str) -> float:
        with self._lock:
            n = self._failures.get(key, 0)
            self._failures[key] = n + 1
        delay = min(self.cap, self.base * (2 ** min(n, 30)))
        return delay / 2 + random.random() * delay / 2

    def forget(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)

    def failures(self, key: str) -> int:
        with self._lock:
            return self._failures.get(key, 0)
