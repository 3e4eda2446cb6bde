"""Stable argsorts of large arrays of times and ids (the workload's start and end times, the
index of connections by host).

``numpy.argsort(kind="stable")`` sorts float64 and 32/64-bit integer keys by timsort, about
1.2 s for 7 M random keys on the project's machine; :func:`argsort_stable` gives the same
permutation (a stable sort's result is unique) by a compiled radix sort (:mod:`pspsim.model._sort`)
of the keys mapped to unsigned integers in the same order, several times faster; integer keys
spanning fewer than ``COUNTING`` values, and :func:`csr`'s groups, by a counting sort.  Keys made of a
few sorted runs (a window's commands: creates in start order, destroys in end order) are left to
timsort, which merges runs in about one pass (150,000 commands in 8 runs: 1 ms, against 3.5 ms).
Without the compiled module, for short arrays, or for keys it does not handle (NaN, floats wider
than 64 bits, uint64, other types), it is ``numpy.argsort`` (of integer keys as int16 where they
fit, which numpy sorts by radix).
"""

from __future__ import annotations

import numpy as np

try:
    from pspsim.model import _sort
except ImportError:  # pragma: no cover - the compiled module is optional
    _sort = None
if not all(hasattr(_sort, f) for f in ("argsort", "counting_sort")):  # pragma: no cover - a build older than this
    _sort = None  # source

SMALL = 4096  # below this many keys numpy's sort is as fast (measured: equal at ~2,000)
COUNTING = 1 << 16  # integer keys spanning fewer values than this are sorted by counting (the counts stay in cache)
FEW = 8  # ties of at most this many items are put in order by compare-and-swap passes (lexsort)
RUNS = 16  # keys in fewer ascending runs than 1/RUNS of their number: numpy's timsort merges the runs, faster


def _as_int16(keys: np.ndarray) -> np.ndarray:
    """Integer ``keys`` as int16 when they fit: numpy sorts those stably by its own radix sort, several
    times faster than a merge sort, in the same order."""
    wide_int = keys.dtype.kind in "iu" and keys.dtype.itemsize > 2
    if wide_int and len(keys) and keys.min() >= -32768 and keys.max() < 32768:
        return keys.astype(np.int16)
    return keys


def _runs(keys: np.ndarray) -> int:
    """How many places the keys go down (ascending runs - 1)."""
    return int(np.count_nonzero(keys[1:] < keys[:-1]))


def argsort_stable(keys: np.ndarray) -> np.ndarray:
    """``numpy.argsort(keys, kind="stable")`` (int64 positions), by radix sort where it can."""
    keys = np.asarray(keys)
    if _sort is None or keys.ndim != 1 or len(keys) < SMALL or _runs(keys) < len(keys) // RUNS:
        return np.argsort(_as_int16(keys), kind="stable")
    if keys.dtype.kind == "f" and keys.dtype.itemsize <= 8:
        keys = np.ascontiguousarray(keys, dtype=np.float64)
        if np.isnan(keys).any():  # numpy puts NaN last; not mapped here
            return np.argsort(keys, kind="stable")
    elif keys.dtype.kind in "iu" and keys.dtype.itemsize <= 4:
        keys = np.ascontiguousarray(keys, dtype=np.int32 if keys.dtype != np.uint32 else np.int64)
    elif keys.dtype.kind == "i":
        keys = np.ascontiguousarray(keys, dtype=np.int64)
    else:  # uint64, bool, long double, other types
        return np.argsort(keys, kind="stable")
    if keys.dtype.kind == "i":  # few distinct values (ids of hosts, windows): a counting sort, 2-4x faster
        lo, hi = int(keys.min()), int(keys.max())
        if hi - lo < COUNTING:
            return _sort.counting_sort(keys - keys.dtype.type(lo) if lo else keys, hi - lo + 1)[0]
    return _sort.argsort(keys)


def lexsort(keys: tuple[np.ndarray, ...]) -> np.ndarray:
    """``numpy.lexsort(keys)`` (the last key primary, ties by the ones before, then input order) as
    stable argsorts from the first key to the last.

    An integer last key made of a few sorted runs (a window's moves by connection: each push's
    connections in order) is sorted first, by merging its runs; then only the items whose value it
    repeats (a connection moved more than once in the window) are put in order by the other keys,
    among themselves: by compare-and-swap passes when no value repeats more than ``FEW`` times,
    else by sorting them.  The order is the same: a stable lexicographic sort has one result."""
    primary = np.asarray(keys[-1])
    if any(np.shape(key) != primary.shape for key in keys[:-1]):
        raise ValueError("all keys need to be the same shape")
    if any(np.asarray(key).dtype.kind not in "biuf" for key in keys):  # NaT, objects, strings: numpy's own
        return np.lexsort(keys).astype(np.int64, copy=False)
    if (len(keys) < 2 or primary.ndim != 1 or primary.dtype.kind not in "iu" or len(primary) < SMALL
            or _runs(primary) >= len(primary) // RUNS):
        return _lexsort_by_passes(keys)
    order = argsort_stable(primary)
    ordered = primary[order]
    tied = ordered[1:] == ordered[:-1]
    if not tied.any() or _order_few(order, tied, tuple(np.asarray(key) for key in keys[:-1])):
        return order
    grouped = np.zeros(len(order), dtype=bool)  # items that share their value with another
    grouped[1:] |= tied
    grouped[:-1] |= tied
    where = np.flatnonzero(grouped)
    items = order[where]  # each group's items in input order (the sort above is stable)
    within = _lexsort_by_passes(tuple(np.asarray(key)[items] for key in keys[:-1]) + (ordered[where],))
    order[where] = items[within]
    return order


def _order_few(order: np.ndarray, tied: np.ndarray, keys: tuple[np.ndarray, ...]) -> bool:
    """Sort each run of ``order`` whose items are ``tied`` (``tied[i]``: items ``i`` and ``i + 1`` share
    their primary value) by ``keys`` (the last most significant), stably, in place, by odd-even
    transposition: as many passes as the largest run has items, each comparing every other
    neighbouring pair of a run and swapping those out of order (never equal ones: stable).  False
    (``order`` untouched) if a run is longer than ``FEW`` or a key has NaN (numpy sorts NaN last;
    comparisons do not)."""
    first = np.flatnonzero(tied)  # pairs (i, i + 1) within a run
    begins = np.ones(len(first), dtype=bool)  # a run's first pair: not right after the pair before
    begins[1:] = first[1:] != first[:-1] + 1
    where = np.flatnonzero(begins)
    pairs = np.diff(np.append(where, len(first)))  # each run's pairs (its items less one)
    largest = int(pairs.max()) + 1
    if largest > FEW or any(key.dtype.kind == "f" and np.isnan(key).any() for key in keys):
        return False
    parity = (first - np.repeat(first[where], pairs)) % 2
    for step in range(largest):
        i = first[parity == step % 2]
        a, b = order[i], order[i + 1]
        after = np.zeros(len(i), dtype=bool)  # a's keys come after b's
        decided = np.zeros(len(i), dtype=bool)
        for key in reversed(keys):
            ka, kb = key[a], key[b]
            after |= ~decided & (ka > kb)
            decided |= ka != kb
        swap = i[after]
        order[swap], order[swap + 1] = b[after], a[after]
    return True


def _lexsort_by_passes(keys: tuple[np.ndarray, ...]) -> np.ndarray:
    """:func:`lexsort` by one stable argsort a key, from the first key to the last."""
    order = argsort_stable(keys[0])
    for key in keys[1:]:
        order = order[argsort_stable(np.asarray(key)[order])]
    return order


def unique_inverse(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``np.unique(x, return_inverse=True)`` by one sort, with that sort: (unique values, inverse,
    the positions of ``x`` by value (stable), where each value's positions start (and the end))."""
    order = argsort_stable(x)
    xs = x[order]
    first = np.ones(len(xs), dtype=bool)
    first[1:] = xs[1:] != xs[:-1]
    inverse = np.empty(len(x), np.int64)
    inverse[order] = np.cumsum(first) - 1
    starts = np.append(np.flatnonzero(first), len(xs))
    return xs[first], inverse, order, starts


def csr(groups: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Items grouped by ``groups`` (values 0..n-1; ascending within a group): (order, bounds), group
    ``g``'s items being ``order[bounds[g]:bounds[g + 1]]``; a counting sort (compiled) when there
    are no more groups than items."""
    groups = np.asarray(groups)
    if _sort is not None and groups.dtype.kind in "iu" and groups.dtype.itemsize <= 8 and n <= max(len(groups), SMALL):
        if groups.dtype not in (np.int32, np.int64):
            groups = groups.astype(np.int64)
        return _sort.counting_sort(np.ascontiguousarray(groups), n)
    order = argsort_stable(groups)
    return order, np.searchsorted(groups[order], np.arange(n + 1))
