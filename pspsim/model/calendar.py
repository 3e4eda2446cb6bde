"""Future control-plane events as arrays, bucketed by simulation window.

The fleet model never keeps one simpy process or one Python object per
connection: every future event (a re-key request, a stale check, a traffic
step) is a row of a few numpy arrays, filed under the window it falls in.
Pushing costs O(k log k) for k events, taking a window's events costs what
they are, so a run costs what its events cost, not the fleet's size times
its windows.  Events before time 0 go to window 0; events past the last
window are never taken, and a calendar told how many windows will be taken
drops them when they are pushed (a stale check two rotations ahead, a
departure after the run: at fleet-10k, 140 M of PSP's checks fall past a
24 h run, 5 GB if kept).
"""

from __future__ import annotations

import numpy as np

from pspsim.model.sorting import argsort_stable

EPOCH = 64  # windows per epoch: far events wait per epoch and are filed per window when it begins


def periodic_bounds(origin: np.ndarray, period: np.ndarray | float, t0: float,
                    t1: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Per item, the first and last ``k`` (floats) with ``origin + k * period`` in ``[t0, t1)``
    (first > last: none), for series such as rotations (``phase + k * period``) or re-keys
    (``start + k * interval``).  The times themselves decide, as computed by that expression:
    the quotient that finds ``k`` can round across an integer (``(300 - 59.99999999999998) /
    120`` gives 2.0000000000000002, while ``59.99999999999998 + 2 * 120`` gives 300.0), so each
    bound is moved by one where the time says so.  Windows that follow each other (each ``t0``
    the previous ``t1``) then share every event out once, each inside its window."""
    first = np.ceil((t0 - origin) / period)
    first = first + (origin + first * period < t0)  # rounded below t0: the next one
    first = first - (origin + (first - 1) * period >= t0)  # the one before is in too
    last = np.ceil((t1 - origin) / period) - 1
    last = last - (origin + last * period >= t1)  # rounded up to t1: the next window's
    last = last + (origin + (last + 1) * period < t1)  # the one after is still before t1
    return first, last


def window_of(time: np.ndarray, window: float) -> np.ndarray:
    """Each time's window ``i``: ``i * window <= time < (i + 1) * window``, bounds computed as the
    simulation computes a window's start (``index * window``).  ``floor(time / window)`` alone
    can be one off when ``i * window`` is not exact (a window of 0.1 s or 7/3 s): the quotient of
    a time just below an edge rounds up to it, and the other way."""
    with np.errstate(invalid="ignore"):
        index = np.floor(np.asarray(time, dtype=np.float64) / window)
        index -= index * window > time
        index += (index + 1) * window <= time
    return index


class Calendar:
    """Rows of named arrays, kept per window index; :meth:`take` returns one window's rows by time.

    Two levels, so a push spread over a day of windows costs a few slices, not one per
    window: rows for the current epoch (``EPOCH`` windows) go to their window's bucket;
    rows further ahead wait in their epoch's list and are filed into windows (one stable
    sort) when :meth:`take` first reaches that epoch.  Rows of one window keep their
    push order, so :meth:`take` returns the same rows in the same order as one bucket
    per window would."""

    def __init__(self, window: float, fields: tuple[str, ...], windows: int | None = None) -> None:
        if window <= 0:
            raise ValueError("window must be positive")
        if windows is not None and windows < 0:
            raise ValueError("windows must be non-negative")
        self.window = window
        self.windows = windows  # windows 0..windows-1 are taken; rows filed past them are dropped
        self.fields = ("time", *fields)
        self._buckets: dict[int, list[tuple[np.ndarray, ...]]] = {}
        self._epochs: dict[int, list[tuple[np.ndarray, ...]]] = {}  # (index, *columns) per push
        self._open = 0  # epochs below this one are filed per window

    def push(self, time: np.ndarray, at: np.ndarray | None = None, **values: np.ndarray) -> None:
        """File rows at ``time`` under the window each falls in, or under windows ``at`` (a caller
        whose own rule puts a time on a window's edge in the other one)."""
        time = np.asarray(time, dtype=np.float64)
        columns = [time] + [np.asarray(values[f]) for f in self.fields[1:]]
        if at is not None:
            columns.append(np.asarray(at, dtype=np.int64))
        if at is None and self.windows is not None:
            # rows past the last window would never be taken: dropped before their windows are computed
            # (window_of(t) < windows exactly when t < windows * window, its upper edge as computed)
            edge = self.windows * self.window if self.windows > 0 else -np.inf
            kept = (time < edge) & (time > -np.inf)  # and events at infinity never happen
        else:
            kept = np.isfinite(time)  # events at infinity never happen
        if not kept.all():
            columns = [c[kept] for c in columns]
            time = columns[0]
        if len(time) == 0:
            return
        if at is None:
            index = np.clip(window_of(time, self.window), 0, 2.0**62).astype(np.int64)  # no int64 overflow
        else:
            index = np.maximum(columns.pop(), 0)
        if self.windows is not None and at is not None:  # rows past the last window would never be taken
            taken = index < self.windows
            if not taken.all():
                index, columns = index[taken], [c[taken] for c in columns]
                if len(index) == 0:
                    return
        near = index < self._open * EPOCH
        if near.all():
            self._file(index, columns)
            return
        if near.any():
            self._file(index[near], [c[near] for c in columns])
            index, columns = index[~near], [c[~near] for c in columns]
        epoch = index // EPOCH
        order = argsort_stable(epoch)
        epoch, index, columns = epoch[order], index[order], [c[order] for c in columns]
        cuts = np.flatnonzero(np.diff(epoch)) + 1
        # each epoch's part copied: a view would keep the whole push alive until its last epoch is
        # filed (a window's departures span the day: fleet-10k kept 1.5 GB of filed-away rows by its end)
        for lo, hi in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [len(epoch)]])):
            self._epochs.setdefault(int(epoch[lo]), []).append(tuple(c[lo:hi].copy() for c in (index, *columns)))

    def _file(self, index: np.ndarray, columns: list[np.ndarray]) -> None:
        order = argsort_stable(index)
        index = index[order]
        columns = [c[order] for c in columns]
        cuts = np.flatnonzero(np.diff(index)) + 1
        starts = np.concatenate([[0], cuts])
        for lo, hi in zip(starts, np.concatenate([cuts, [len(index)]])):
            self._buckets.setdefault(int(index[lo]), []).append(tuple(c[lo:hi] for c in columns))

    def take(self, window_index: int, by_time: bool = True) -> dict[str, np.ndarray]:
        """Remove and return the rows filed under ``window_index``, sorted by time (stable), or
        in push order (``by_time=False``, for a caller that sorts them itself)."""
        while self._open * EPOCH <= window_index:  # file the epochs reached, in push order
            chunks = self._epochs.pop(self._open, [])
            self._open += 1
            if chunks:
                self._file(np.concatenate([c[0] for c in chunks]),
                           [np.concatenate([c[i + 1] for c in chunks]) for i in range(len(self.fields))])
        chunks = self._buckets.pop(window_index, [])
        if not chunks:
            return {f: np.empty(0) for f in self.fields}
        columns = [np.concatenate([c[i] for c in chunks]) for i in range(len(self.fields))]
        if not by_time:
            return dict(zip(self.fields, columns))
        order = argsort_stable(columns[0])
        return {f: c[order] for f, c in zip(self.fields, columns)}

    def pending(self) -> int:
        return sum(len(c[0]) for part in (self._buckets, self._epochs) for chunks in part.values() for c in chunks)
