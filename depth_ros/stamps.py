"""Stamp matching: the one rule every reader and node uses to pair messages by time.

A stamp pairs with the nearest candidate stamp if that is no more than ``max_dt`` seconds away (ties go to the
earlier candidate), as the TUM benchmark's ``associate.py`` and message_filters' ``ApproximateTime`` policy with a
slop do for two topics.
"""

from __future__ import annotations

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
