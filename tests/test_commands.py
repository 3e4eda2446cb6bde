"""NIC command queues: commands that wait for others (a TX key create once both GEN_SPIs are
done) served through per-NIC FIFO queues, against a plain event-by-event queue."""

import heapq

import numpy as np
import pytest

from pspsim.model import commands
from pspsim.model.commands import COMMANDS, CommandQueues


def _naive(times, nics, service, dep_a, dep_b, latency, busy):
    """Event by event with a heap: issue in time order (ties by index), FIFO per NIC."""
    n = len(times)
    finished = [None] * n
    issued = list(times)
    heap = [(times[j], j) for j in range(n) if dep_a[j] < 0]
    heapq.heapify(heap)
    waiting = {j for j in range(n) if dep_a[j] >= 0}
    while heap:
        t, j = heapq.heappop(heap)
        start = max(t, busy[nics[j]])
        busy[nics[j]] = start + service[j]
        finished[j] = busy[nics[j]] + latency
        for d in sorted(waiting):
            deps = [dep_a[d]] + ([dep_b[d]] if dep_b[d] >= 0 else [])
            if all(finished[x] is not None for x in deps):
                waiting.discard(d)
                issued[d] = max(finished[x] for x in deps)
                heapq.heappush(heap, (issued[d], d))
    return np.array(finished), np.array(issued)


def _commands(rng, n=60, nics=4):
    """Three stages: independent commands, then ones waiting for two of them, then for one of those."""
    first, second, third = n, n // 2, n // 4
    times = np.concatenate([rng.uniform(0, 1e-3, first), np.zeros(second + third)])
    dep_a = np.concatenate([np.full(first, -1), rng.integers(0, first, second), first + rng.integers(0, second, third)])
    dep_b = np.concatenate([np.full(first, -1), rng.integers(0, first, second), np.full(third, -1)])
    kinds = rng.integers(0, len(COMMANDS), len(times))
    return times, rng.integers(0, nics, len(times)), kinds, dep_a, dep_b


@pytest.mark.parametrize("implementation", ["compiled", "numpy"])
@pytest.mark.parametrize("seed", range(5))
def test_dependent_commands_match_an_event_by_event_queue(monkeypatch, implementation, seed):
    if implementation == "numpy":
        monkeypatch.setattr(commands, "_queues", None)
    elif commands._queues is None:
        pytest.skip("compiled loops not built")
    rng = np.random.default_rng(seed)
    times, nics, kinds, dep_a, dep_b = _commands(rng)
    service = rng.uniform(5e-6, 5e-5, len(COMMANDS))
    queues = CommandQueues(4, service, 2e-6)
    queues.busy_until[:] = rng.uniform(0, 2e-4, 4)
    want, issued = _naive(times, nics, service[kinds], dep_a, dep_b, 2e-6, list(queues.busy_until))
    got = queues.serve_dependent(times, nics, kinds, dep_a, dep_b)
    if implementation == "compiled":
        np.testing.assert_array_equal(got, want)  # the same recurrence, the same order: the same doubles
    else:
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert queues.served == len(times)
    np.testing.assert_allclose(np.sort(queues.take_window_delays()), np.sort(want - issued), atol=1e-12)
    assert (got[dep_a >= 0] > got[dep_a[dep_a >= 0]]).all()  # after what it waited for


def test_a_dependency_cycle_is_refused():
    if commands._queues is None:
        pytest.skip("compiled loops not built")
    queues = CommandQueues(1, np.full(len(COMMANDS), 1e-5), 0.0)
    with pytest.raises(ValueError, match="cycle"):
        queues.serve_dependent(np.zeros(2), np.zeros(2, np.int64), np.zeros(2, np.int64),
                               np.array([1, 0]), np.array([-1, -1]))


@pytest.mark.skipif(commands._queues is None, reason="compiled queues not built")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dependents_are_listed_as_a_stable_sort_would(seed):
    """The compiled counting sort of who waits for whom against the stable sort it replaces."""
    rng = np.random.default_rng(seed)
    n = 5000
    dep_a = np.where(rng.random(n) < 0.6, rng.integers(0, n, n), -1)
    dep_b = np.where((dep_a >= 0) & (rng.random(n) < 0.7), rng.integers(0, n, n), -1)
    dep_b[:50] = dep_a[:50]  # the same command twice counts once
    waiting = np.concatenate([np.flatnonzero(dep_a >= 0), np.flatnonzero((dep_b >= 0) & (dep_b != dep_a))])
    on = np.concatenate([dep_a[dep_a >= 0], dep_b[(dep_b >= 0) & (dep_b != dep_a)]])
    order = np.argsort(on, kind="stable")
    dependents, bounds = commands._queues.dependents_of(dep_a, dep_b)
    np.testing.assert_array_equal(dependents, waiting[order])
    np.testing.assert_array_equal(bounds, np.concatenate([[0], np.cumsum(np.bincount(on, minlength=n))]))


@pytest.mark.skipif(commands._queues is None, reason="compiled queues not built")
def test_delay_bins_are_those_of_the_binary_search():
    """The histogram bin of each command delay, compiled from its exponent bits and the edges, against
    ``searchsorted``: delays over 15 decades, every edge and the floats next to it, 0, negative,
    tiny, huge, infinite and NaN."""
    edges = commands._BINS
    rng = np.random.default_rng(0)
    delay = np.concatenate([10 ** rng.uniform(-9, 6, 100_000), edges, np.nextafter(edges, 0), np.nextafter(edges, 1),
                            [0.0, -0.0, -1.0, 1e-300, 5e-324, 1e300, np.inf, -np.inf, np.nan]])
    got = np.empty(len(delay), np.int64)
    commands._queues.delay_bins(delay, edges, got)
    expected = np.searchsorted(edges, delay, side="right") - 1
    np.testing.assert_array_equal(got, expected)
    histogram = np.arange(len(edges) - 1)  # added to, not overwritten
    commands._queues.delay_histogram(delay, edges, histogram)
    np.testing.assert_array_equal(histogram, np.arange(len(edges) - 1) + np.bincount(
        np.clip(expected, 0, len(edges) - 2), minlength=len(edges) - 1))

