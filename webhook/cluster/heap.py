"""Keeping CPython's cyclic garbage collector away from the cluster view.

A full cluster view is hundreds of thousands of long-lived tracked objects. The
collector counts every object that survives a young collection, including the
in-flight objects of a review that happen to be alive at that moment and die a
millisecond later, and once those counts reach a quarter of the long-lived heap it
walks the whole heap. With a 50,000-pod view each walk takes ~0.2 s, stalls every
review in that worker, and adds up to ~80 us per review on average (measured:
`python -m bench webhook`, docs/benchmarks.md).

`gc.freeze()` moves every object alive now into a permanent generation that the
collector never walks. It is called when a view has been (re)built: when a static
source starts in a worker, after each complete list of a live source, and, as watch
events replace objects, once a tenth of the view is new (`Refreezer`). Each freeze
first collects what is not frozen yet, so no garbage cycle is frozen with the view.
The view's own objects hold no reference cycles: when they are replaced, reference
counting frees them, frozen or not. Freezing in the worker, after the fork, also keeps
the collector from writing to pages the worker shares with the master.
"""
from __future__ import annotations

import gc
import logging
import threading
from typing import Callable

log = logging.getLogger(__name__)
_lock = threading.Lock()


def freeze_view(why: str) -> int:
    """Collect what is not frozen yet, then move everything alive out of the collector's
    walks; returns how many objects are frozen in total."""
    with _lock:
        gc.collect()  # walks only what is not frozen: the whole view once, later only the new part
        gc.freeze()
        frozen = gc.get_freeze_count()
    log.debug("froze %d objects for the garbage collector (%s)", frozen, why)
    return frozen


class Refreezer:
    """Counts objects replaced by watch events and freezes again once they are a tenth of
    the view (at least `minimum`), so a view that churns does not drift back into the
    collector's walks. Approximate by design: a lost increment between threads only
    delays the next freeze."""

    def __init__(self, minimum: int = 1000) -> None:
        self.minimum = minimum
        self.changed = 0

    def reset(self) -> None:
        self.changed = 0

    def changed_one(self, view_size: Callable[[], int]) -> bool:
        """Note one replaced object; freeze (and return True) when enough have been."""
        self.changed += 1
        if self.changed < self.minimum or self.changed % max(1, self.minimum // 10):
            return False  # the view's size is only looked up every minimum/10 changes
        if self.changed < view_size() // 10:
            return False
        self.changed = 0
        freeze_view("a tenth of the view replaced by watch events")
        return True
