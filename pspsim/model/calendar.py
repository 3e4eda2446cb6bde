"""Future control-plane events as arrays, bucketed by simulation window.

The fleet model never keeps one simpy process or one Python object per
connection: every future event (a re-key request, a stale check, a traffic
step) is a row of a few numpy arrays, filed under the window it falls in.
Pushing costs O(k log k) for k events, taking a window's events costs what
they are, so a run costs what its events cost, not the fleet's size times
its windows.  Events before time 0 go to window 0; events past the last
window are never taken.
"""

from __future__ import annotations

import numpy as np


class Calendar:
    """Rows of named arrays, kept per window index; :meth:`take` returns one window's rows by time."""

    def __init__(self, window: float, fields: tuple[str, ...]) -> None:
        if window <= 0:
            raise ValueError("window must be positive")
        self.window = window
        self.fields = ("time", *fields)
        self._buckets: dict[int, list[tuple[np.ndarray, ...]]] = {}

    def push(self, time: np.ndarray, **values: np.ndarray) -> None:
        time = np.asarray(time, dtype=np.float64)
        columns = [time] + [np.asarray(values[f]) for f in self.fields[1:]]
        finite = np.isfinite(time)  # events at infinity never happen
        if not finite.all():
            columns = [c[finite] for c in columns]
            time = columns[0]
        if len(time) == 0:
            return
        index = np.maximum(np.floor(time / self.window), 0).astype(np.int64)
        order = np.argsort(index, kind="stable")
        index = index[order]
        columns = [c[order] for c in columns]
        cuts = np.flatnonzero(np.diff(index)) + 1
        starts = np.concatenate([[0], cuts])
        for lo, hi in zip(starts, np.concatenate([cuts, [len(index)]])):
            self._buckets.setdefault(int(index[lo]), []).append(tuple(c[lo:hi] for c in columns))

    def take(self, window_index: int) -> dict[str, np.ndarray]:
        """Remove and return the rows filed under ``window_index``, sorted by time (stable)."""
        chunks = self._buckets.pop(window_index, [])
        if not chunks:
            return {f: np.empty(0) for f in self.fields}
        columns = [np.concatenate([c[i] for c in chunks]) for i in range(len(self.fields))]
        order = np.argsort(columns[0], kind="stable")
        return {f: c[order] for f, c in zip(self.fields, columns)}

    def pending(self) -> int:
        return sum(len(c[0]) for chunks in self._buckets.values() for c in chunks)
