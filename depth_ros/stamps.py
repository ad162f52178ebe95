"""Stamp matching: the one rule every reader and node uses to pair messages by time, and the buffer it searches.

A stamp pairs with the nearest candidate stamp if that is no more than ``max_dt`` seconds away (ties go to the
earlier candidate), as the TUM benchmark's ``associate.py`` and message_filters' ``ApproximateTime`` policy with a
slop do for two topics.
"""

from __future__ import annotations

import threading

import numpy as np


def nearest_index(candidates: np.ndarray, stamp: float, max_dt: float) -> int | None:
    """Index of the candidate stamp nearest to ``stamp`` within ``max_dt`` seconds, or None.

    Args:
        candidates: (M,) sorted stamps in seconds (or any one unit, with ``stamp`` and ``max_dt`` in it).
        stamp: the stamp to match.
        max_dt: tolerance (inclusive).
    """
    pos = int(np.searchsorted(candidates, stamp))
    best = None
    for k in (pos - 1, pos):
        if 0 <= k < len(candidates) and (best is None or abs(candidates[k] - stamp) < abs(candidates[best] - stamp)):
            best = k
    if best is None or abs(candidates[best] - stamp) > max_dt:
        return None
    return best


def match_stamps(reference: np.ndarray, other: np.ndarray, max_dt: float) -> list[tuple[int, int]]:
    """Pair every reference stamp with the nearest ``other`` stamp no more than ``max_dt`` seconds away.

    Args:
        reference: (N,) stamps in seconds (e.g. colour images).
        other: (M,) stamps in seconds, sorted (e.g. depth images).
        max_dt: tolerance in seconds.

    Returns:
        ``(i, j)`` index pairs in reference order; reference stamps without a partner are left out.
    """
    pairs = []
    for i, t in enumerate(reference):
        j = nearest_index(other, t, max_dt)
        if j is not None:
            pairs.append((i, j))
    return pairs


class StampedBuffer:
    """Items keyed by stamp (integer nanoseconds), the newest ``capacity`` kept; thread-safe.

    Args:
        capacity: items kept (the oldest stamps go first); None keeps all.
    """

    def __init__(self, capacity: int | None):
        if capacity is not None and capacity < 1:
            raise ValueError(f"a stamped buffer keeps at least 1 item, got capacity {capacity}")
        self.capacity = capacity
        self._lock = threading.Lock()
        self._items: dict[int, object] = {}

    def __getstate__(self) -> dict:  # picklable (DataLoader workers): the lock is per process
        return {"capacity": self.capacity, "items": self.snapshot()}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["capacity"])
        for stamp, item in zip(*state["items"], strict=True):
            self.add(int(stamp), item)

    def add(self, stamp_ns: int, item) -> None:
        """Keep ``item`` at ``stamp_ns`` (a repeated stamp replaces the earlier item)."""
        with self._lock:
            self._items[stamp_ns] = item
            while self.capacity is not None and len(self._items) > self.capacity:
                del self._items[min(self._items)]

    def discard(self, stamp_ns: int) -> None:
        """Forget the item at ``stamp_ns`` if there is one."""
        with self._lock:
            self._items.pop(stamp_ns, None)

    def snapshot(self) -> tuple[np.ndarray, list]:
        """(N,) int64 sorted stamps and their N items, as they are now."""
        with self._lock:
            stamps = sorted(self._items)
            return np.array(stamps, dtype=np.int64), [self._items[s] for s in stamps]

    def nearest(self, stamp_ns: int, max_dt: float) -> tuple[int, object] | None:
        """``(stamp, item)`` nearest to ``stamp_ns`` (ties: the earlier) within ``max_dt`` seconds, else None."""
        stamps, items = self.snapshot()
        index = nearest_index(stamps, stamp_ns, max_dt * 1e9)
        return None if index is None else (int(stamps[index]), items[index])
