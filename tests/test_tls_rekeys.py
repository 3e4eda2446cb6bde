"""TLS re-key schedules (KeyUpdates, kTLS offload reconnects): grouped by window, in the order a
sort of every re-key by time would give."""

import numpy as np
import pytest

from pspsim.model import tls_control


@pytest.mark.parametrize("order", ["start", "running-first", "none"])
@pytest.mark.parametrize("implementation", ["compiled", "numpy"])
def test_rekeys_grouped_by_window_are_the_time_sorted_rekeys_of_each_window(monkeypatch, implementation,
                                                                           order):
    """Re-keys grouped by window, then sorted within it, against every re-key sorted by time at once
    and cut at the window edges (the windows' own ``i * window``): the same connections and times in
    the same order, in every window of a run whose duration is not a whole number of windows."""
    if implementation == "numpy":
        monkeypatch.setattr(tls_control, "_schedules", None)
    elif tls_control._schedules is None:
        pytest.skip("compiled kernels not built")
    rng = np.random.default_rng(3)
    n, window, horizon = 20_000, 60.0, 4 * 64 * 60.0 + 30.0  # epochs of 64 windows, the last one partial
    start = np.concatenate([-rng.exponential(3_000, n // 2), rng.uniform(0, horizon, n - n // 2)])
    end = start + rng.exponential(2_000, n)
    end[:100] = np.inf  # never end
    interval = np.where(rng.random(n) < 0.5, 300.0, rng.uniform(7, 900, n))
    interval[:50] = window  # re-keys on window edges
    start[:50] = 0.0
    if order == "start":  # the compiled epochs then read only the connections started
        by_start = np.argsort(start, kind="stable")
        start, end, interval = start[by_start], end[by_start], interval[by_start]
    elif order == "running-first":  # as a workload is: those open at time 0 in any order, then by start
        later = np.flatnonzero(start >= 0)
        rows = np.concatenate([np.flatnonzero(start < 0), later[np.argsort(start[later], kind="stable")]])
        start, end, interval = start[rows], end[rows], interval[rows]
    schedule = tls_control.RekeySchedule(start, end, interval, horizon, window)
    assert schedule.by_start == (order != "none")
    # every re-key at ages k * interval in [0, min(end, horizon)), sorted by time at once
    conn, times = [], []
    for i in range(n):
        stop = min(end[i], horizon)
        k = np.arange(1, int(np.ceil((stop - start[i]) / interval[i])) + 2)
        t = start[i] + k * interval[i]
        keep = (t >= 0) & (t < stop)
        conn.append(np.full(keep.sum(), i))
        times.append(t[keep])
    conn, times = np.concatenate(conn), np.concatenate(times)
    order = np.argsort(times, kind="stable")
    conn, times = conn[order], times[order]
    windows = int(np.ceil(horizon / window))
    for w in range(windows + 2):
        t0, t1 = w * window, min((w + 1) * window, horizon)
        lo, hi = np.searchsorted(times, [t0, t1]) if w < windows else (0, 0)
        got_conn, got_times = schedule.take(w)
        np.testing.assert_array_equal(got_conn, conn[lo:hi])
        assert got_times.tobytes() == times[lo:hi].tobytes()
    assert sum(len(schedule.take(w)[0]) for w in range(windows)) == len(conn) > 20_000
    assert len(schedule.take(3)[0])  # an epoch taken again


@pytest.mark.skipif(tls_control._schedules is None, reason="compiled kernels not built")
def test_an_epochs_first_rekeys_are_found_when_the_estimate_overshoots():
    """Re-keys 1e-13 s apart starting a hair before an epoch's first window: the estimate of the
    first one in the epoch rounds past some of them, which are found by stepping back; against
    the numpy schedule made all at once (11 re-keys in window 64)."""
    t0, window = 64 * 60.0, 60.0
    start, end, interval = np.array([np.nextafter(t0, 0)]), np.array([t0 + 1e-12]), np.array([1e-13])
    conn, times, bounds = tls_control.rekey_times(start, end, interval, 3 * t0, window)
    expected = np.sort(times[bounds[64]:bounds[65]], kind="stable")
    got_conn, got = tls_control.RekeySchedule(start, end, interval, 3 * t0, window).take(64)
    assert got.tobytes() == expected.tobytes() and len(got) == 11 and (got_conn == 0).all()
