"""The two-level calendar returns exactly what one bucket per window returns (same rows, same order);
periodic events (PSP rotations, IPsec re-keys) fall in exactly one window each, inside its bounds;
IPsec's re-key timers give what a scan of every live SA gives."""

import numpy as np
import pytest

from pspsim.model import ipsec_control
from pspsim.model.calendar import EPOCH, Calendar, window_of
from pspsim.model.rotation import RotationSchedule


def _reference(pushes, window, windows, by_time=True):
    buckets: dict[int, list] = {}
    out = []
    for w, batch in pushes:  # batch pushed just before take(w)
        for time, tag in batch:
            for t, g in zip(time, tag):
                if np.isfinite(t):
                    buckets.setdefault(max(int(np.floor(t / window)), 0), []).append((t, g))
        rows = buckets.pop(w, [])
        order = sorted(range(len(rows)), key=lambda i: rows[i][0] if by_time else 0)  # stable: push order
        out.append([rows[i] for i in order])
    return out


def test_two_level_calendar_matches_one_bucket_per_window():
    rng = np.random.default_rng(3)
    window, windows = 60.0, 3 * EPOCH + 5
    pushes = []
    tag = 0
    for w in range(windows):
        batch = []
        for _ in range(rng.integers(0, 4)):
            n = int(rng.integers(0, 50))
            # ties on purpose (rounded times), far events, past events, infinities
            time = np.round(w * window + rng.exponential(window * rng.choice([0.5, 5, 200]), n) - 30, 0)
            time[rng.uniform(size=n) < 0.05] = np.inf
            batch.append((time, np.arange(tag, tag + n)))
            tag += n
        pushes.append((w, batch))
    cal, unsorted = Calendar(window, ("tag",)), Calendar(window, ("tag",))
    bounded = Calendar(window, ("tag",), windows)  # told how many windows are taken
    got, got_unsorted, got_bounded = [], [], []
    for w, batch in pushes:
        for time, tags in batch:
            for calendar in (cal, unsorted, bounded):
                calendar.push(time, tag=tags)
        rows = cal.take(w)
        got.append(list(zip(rows["time"], rows["tag"])))
        rows = unsorted.take(w, by_time=False)
        got_unsorted.append(list(zip(rows["time"], rows["tag"])))
        rows = bounded.take(w)
        got_bounded.append(list(zip(rows["time"], rows["tag"])))
    want = _reference(pushes, window, windows)
    assert [len(g) for g in got] == [len(x) for x in want] and sum(map(len, got)) > 1000
    assert got == want
    assert got_unsorted == _reference(pushes, window, windows, by_time=False) != want  # push order
    # rows past the last window are never taken: the bounded calendar drops them and takes the same
    assert got_bounded == want
    past = sum(int((np.floor(time[np.isfinite(time)] / window) >= windows).sum())
               for _, batch in pushes for time, _ in batch)
    assert past > 100 and bounded.pending() == cal.pending() - past


def test_bounded_calendar_drops_only_rows_past_its_windows():
    cal = Calendar(10.0, ("tag",), windows=3)
    cal.push(np.array([29.999, 30.0, 1e30, -5.0, 15.0]), tag=np.arange(5))
    assert cal.pending() == 3
    assert list(cal.take(0)["tag"]) == [3] and list(cal.take(1)["tag"]) == [4] and list(cal.take(2)["tag"]) == [0]


@pytest.mark.parametrize("window", [60.0, 0.1, 7 / 3])
@pytest.mark.parametrize("windows", [0, 1, 7, 1440])
def test_a_bounded_calendar_keeps_exactly_the_rows_of_its_windows(window, windows):
    """A calendar told its windows drops a row before computing its window: it keeps exactly the rows an
    unbounded one files under windows 0..windows-1, times a few ulps around the last edge included."""
    rng = np.random.default_rng(windows)
    edge = windows * window
    below = np.nextafter(edge, -np.inf) - np.arange(4) * np.spacing(max(edge, 1e-300))
    near = np.concatenate([below, [edge, np.nextafter(edge, np.inf), (windows - 1) * window, edge * (1 + 1e-16)]])
    time = np.concatenate([rng.uniform(-2 * window, (windows + 2) * window, 2000), near,
                           [np.inf, -np.inf, np.nan, -0.0, 1e300]])
    bounded, unbounded = Calendar(window, ("tag",), windows), Calendar(window, ("tag",))
    for calendar in (bounded, unbounded):
        calendar.push(time, tag=np.arange(len(time)))
    kept = window_of(time, window) < windows
    assert bounded.pending() == int(np.count_nonzero(np.maximum(window_of(time[np.isfinite(time)], window), 0)
                                                     < windows))
    for w in range(windows):
        a, b = bounded.take(w), unbounded.take(w)
        assert a["time"].tobytes() == b["time"].tobytes() and a["tag"].tobytes() == b["tag"].tobytes()
    assert bounded.pending() == 0 and (windows == 0 or kept.any())


def test_memory_follows_the_rows_still_pending():
    """Rows filed away to a far epoch do not keep the rest of their push alive: once every epoch
    but the last is taken, the calendar holds about the last epoch's rows, not the push's."""
    import tracemalloc

    window, epochs, per_epoch = 1.0, 20, 20_000
    time = np.repeat(np.arange(epochs) * EPOCH * window, per_epoch) + 0.5  # per_epoch rows in each epoch
    parts = [np.arange(k, len(time), 10) for k in range(10)]  # ten pushes, each spanning every epoch
    tracemalloc.start()
    try:
        cal = Calendar(window, ("conn", "side"))
        base = tracemalloc.get_traced_memory()[0]
        for part in parts:
            cal.push(time[part], conn=part, side=np.zeros(len(part), np.int64))
        for w in range(0, (epochs - 1) * EPOCH, EPOCH):
            assert len(cal.take(w)["conn"]) == per_epoch
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    row = 8 * 4  # time, index, conn, side
    assert cal.pending() == per_epoch
    assert held < 2 * per_epoch * row  # the last epoch's rows (without the copy: all 20 epochs' rows)


def _rotations(origin, period):
    schedule = RotationSchedule(period, origin)
    return schedule.between, 0


def _rekeys(origin, period):
    def events(t0, t1):
        return ipsec_control._events_in(origin, np.full(len(origin), period), t0, np.full(len(origin), t1))
    return events, 1  # ages k * interval with k >= 1


def _timers(origin, period):
    """IPsec re-keys taken from :class:`~pspsim.model.ipsec_control.RekeyTimers` (each SA's next
    re-key filed under its window), every SA started in window 0 and alive throughout."""
    timers, n = ipsec_control.RekeyTimers(len(origin), 60.0, None), len(origin)
    interval, counts, none = np.full(n, period), np.ones(n, np.int64), np.empty(0, np.int64)
    state = {"index": 0}

    def events(t0, t1):
        new = np.arange(n) if state["index"] == 0 else none
        got = timers.take(state["index"], t0, t1, origin, interval, counts, new, none, np.full(n, -np.inf))
        state["index"] += 1
        return got
    return events, 1


@pytest.mark.parametrize("period", [120.0, 600.0, 8400.0, 100_000 / 3])
@pytest.mark.parametrize("series", ["psp-rotations", "ipsec-rekeys", "ipsec-rekeys-numpy", "ipsec-timers"])
def test_periodic_events_fall_in_exactly_one_window_and_inside_its_bounds(series, period, monkeypatch):
    """Origins (rotation phases, SA starts) a few ulps off the window edges modulo the period, where
    the quotient that finds a window's first and last event rounds across an integer (phase
    59.99999999999998, period 120: the rotation at 300.0 was given to the window ending at 300).
    Each window's events must lie in [t0, t1), and the windows together must give each event once:
    ``origin + k * period`` (the same expression) inside the run, counted directly."""
    if series == "ipsec-rekeys-numpy":
        monkeypatch.setattr(ipsec_control, "_schedules", None)
    rng = np.random.default_rng(7)
    window, windows, count = 60.0, 2000, 3000
    edges = window * rng.integers(1, windows, count)
    origin = np.mod(edges - period * rng.integers(0, 4, count), period)
    origin = np.clip(origin + rng.integers(-8, 9, count) * np.spacing(np.maximum(origin, 1.0)), 0,
                     np.nextafter(period, 0))
    events, k_min = {"psp-rotations": _rotations, "ipsec-timers": _timers}.get(series, _rekeys)(origin, period)
    got_item, got_time = [], []
    for index in range(windows):
        t0, t1 = index * window, (index + 1) * window
        items, times = events(t0, t1)
        assert ((times >= t0) & (times < t1)).all(), (t0, t1, times[(times < t0) | (times >= t1)])
        got_item.append(items)
        got_time.append(times)
    item, time = np.concatenate(got_item), np.concatenate(got_time)
    k = np.arange(k_min, windows * window / period + 2)
    every = origin[:, None] + k[None, :] * period  # each item's events, the same float expression
    inside = (every >= 0) & (every < windows * window)
    want_item, want_time = np.nonzero(inside)[0], every[inside]  # by item, then time
    order = np.lexsort((time, item))
    assert np.array_equal(item[order], want_item) and np.array_equal(time[order], want_time)
    # bounds from the quotient alone put some of these events outside their window
    # (on t1, or just below it, in the next window)
    every_edge = window * np.arange(windows + 1)[None, :]
    old_last = np.ceil((every_edge - origin[:, None]) / period) - 1
    assert ((origin[:, None] + old_last * period >= every_edge)
            | (origin[:, None] + (old_last + 1) * period < every_edge)).any()


@pytest.mark.parametrize("window", [0.1, 7 / 3, 0.007, 60.0])
def test_each_time_is_filed_under_the_window_whose_bounds_hold_it(window):
    """Times on and one or two ulps around window edges ``i * window`` (as the simulation computes a
    window's start): ``floor(time / window)`` misplaces thousands of them when ``i * window`` is not
    exact; the window found must satisfy ``i * window <= time < (i + 1) * window``."""
    rng = np.random.default_rng(3)
    edge = rng.integers(0, 10**6, 50_000) * window
    below = np.nextafter(edge, -np.inf)
    times = np.concatenate([edge, below, np.nextafter(below, -np.inf), np.nextafter(edge, np.inf)])
    times = times[times >= 0]
    index = window_of(times, window)
    assert ((index * window <= times) & (times < (index + 1) * window)).all()
    naive = np.floor(times / window)
    if window != 60.0:  # the data do exercise both corrections
        assert (naive * window > times).any() and ((naive + 1) * window <= times).any()
    else:  # where every edge is exact, the same windows as floor: the same calendars as before
        assert np.array_equal(index, naive)
    calendar = Calendar(window, ("tag",))
    calendar.push(times, tag=np.arange(len(times)))
    some = np.unique(index)[:50].astype(int)
    for i in range(int(some.max()) + 1):
        got = calendar.take(i)["time"]
        assert ((i * window <= got) & (got < (i + 1) * window)).all()
        assert len(got) == (index == i).sum()


@pytest.mark.parametrize("window", [60.0, 7 / 3])
def test_ipsec_rekey_timers_give_what_a_scan_of_every_live_sa_gives(window):
    """SAs that start, empty and come back (a new start each time), intervals from infinity (never
    re-keyed: ``ipsec_child_rekey = 0``) and below a window (several re-keys in one) to many
    windows: window by window, the timers' re-keys equal ``_events_in`` over every SA alive or gone
    in the window, in the same order."""
    rng = np.random.default_rng(11)
    n, windows = 400, 300
    interval = rng.choice([np.inf, 0.4 * window, 1.7 * window, 13.0 * window, 1e9], n) * rng.uniform(0.9, 1.0, n)
    on_edges = rng.uniform(size=n) < 0.25  # whole windows, started on or an ulp off an edge: re-keys on the edges
    interval[on_edges] = window * rng.integers(1, 4, on_edges.sum())
    start, counts = np.full(n, np.nan), np.zeros(n, np.int64)
    timers = ipsec_control.RekeyTimers(n, window, windows)
    total = 0
    for index in range(windows):
        t0, t1 = index * window, (index + 1) * window
        if index == windows - 1:
            t1 = t0 + 0.37 * window  # a last window cut short by the run's end
        before = counts.copy()
        counts = np.maximum(counts + rng.integers(-2, 3, n) * (rng.uniform(size=n) < 0.3), 0)
        if index == 0:
            counts = rng.integers(0, 3, n)
        new = np.flatnonzero((before == 0) & (counts > 0))
        gone = np.flatnonzero((before > 0) & (counts == 0))
        brief = rng.choice(np.flatnonzero((before == 0) & (counts == 0)), 3, replace=False)  # in and out
        new, gone = np.sort(np.concatenate([new, brief])), np.sort(np.concatenate([gone, brief]))
        phase = rng.uniform(0, 1, len(new)) * np.where(np.isfinite(interval[new]), interval[new], 0.0)
        start[new] = -phase if index == 0 else rng.uniform(t0, t1, len(new))
        edge = new[on_edges[new]]
        if index > 0:
            start[edge] = [rng.choice([t0, np.nextafter(t0, np.inf), np.nextafter(t1, -np.inf)]) for _ in edge]
        last_end = np.full(n, -np.inf)
        last_end[gone] = rng.uniform(np.maximum(t0, np.nan_to_num(start[gone], nan=t0)), t1)
        got_sa, got_t = timers.take(index, t0, t1, start, interval, counts, new, gone, last_end)
        live = np.flatnonzero(counts > 0)
        live = np.union1d(live, gone)
        until = np.where(counts[live] > 0, t1, np.minimum(last_end[live], t1))
        pos, want_t = ipsec_control._events_in(start[live], interval[live], t0, until)
        assert np.array_equal(got_sa, live[pos]) and np.array_equal(got_t, want_t), index
        total += len(got_sa)
    assert total > 1000
