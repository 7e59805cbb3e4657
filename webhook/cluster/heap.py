"""Keeping CPython's cyclic garbage collector away from the cluster view.

A full cluster view is millions of small objects that live as long as the worker.
The collector counts every object that survives a young collection, including the
in-flight objects of a review that happen to be alive at that moment and die a
millisecond later, and once those counts reach a quarter of the long-lived heap it
walks the whole heap. With a 50,000-pod view each such walk takes hundreds of
milliseconds, stalls every review in that worker, and adds up to ~80 us per review
on average (measured: `python -m bench webhook`, docs/benchmarks.md).

`gc.freeze()` moves every object alive now into a permanent generation that the
collector never walks. It is called when a view has been (re)built: when a static
source starts in a worker, and after each complete list of a live source. The view's
objects hold no reference cycles (they are freed by reference counting when they are
replaced), so freezing them keeps nothing alive that would otherwise have been freed.
Freezing in the worker, after the fork, also keeps the collector from writing to
pages the worker shares with the master.
"""
from __future__ import annotations

import gc
import logging
import threading

log = logging.getLogger(__name__)
_lock = threading.Lock()


def freeze_view(why: str) -> int:
    """Move everything alive now out of the cyclic collector's reach; returns how many
    objects are frozen in total."""
    with _lock:
        gc.freeze()
        frozen = gc.get_freeze_count()
    log.debug("froze %d objects for the garbage collector (%s)", frozen, why)
    return frozen
