"""Che's approximation for LRU, held to the uniform closed form, a simulated LRU
cache fed by an independent-reference stream, an independent root finder and
its structural properties."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import brentq

from pspsim.model import cache as cache_module
from pspsim.model.cache import TSO_MAX_BYTES, lookups_per_s, lru_miss_ratio

saved_che = cache_module._che


def test_uniform_popularity_misses_one_minus_c_over_n():
    # groups: 500 keys / cache 100; three rows of 400 keys (1,200) / cache 1,000;
    # 64 keys / cache 48; 5 keys / cache 5 (fits: warm); 10 busy keys and 1,000 idle
    # ones in a cache of 10 (fits); 7 keys and a cache of size 0; no keys at all
    rate = [3.0, 2.0, 2.0, 2.0, 50.0, 9.0, 1.0, 0.0, 4.0]
    mult = [500, 400, 400, 400, 64, 5, 10, 1000, 7]
    group = [0, 1, 1, 1, 2, 3, 4, 4, 5]
    miss = lru_miss_ratio(rate, mult, group, [100, 1000, 48, 5, 10, 0, 3], 7)
    expected = [1 - 100 / 500, 1 - 1000 / 1200, 1 - 48 / 64, 0.0, 0.0, 1.0, 0.0]
    np.testing.assert_allclose(miss, expected, atol=1e-12)


def _simulate_lru(popularity, cache, requests, rng):
    """Miss ratio of an LRU cache fed by independent references (superposed Poisson
    streams = i.i.d. draws with probability proportional to rate); first 10% warm up."""
    stream = rng.choice(popularity.size, size=requests, p=popularity / popularity.sum())
    lru: OrderedDict[int, None] = OrderedDict()
    misses = 0
    warm = requests // 10
    for i, key in enumerate(stream.tolist()):
        if key in lru:
            lru.move_to_end(key)
        else:
            misses += i >= warm
            lru[key] = None
            if len(lru) > cache:
                lru.popitem(last=False)
    return misses / (requests - warm)


@pytest.mark.parametrize(("alpha", "cache"), [(0.8, 500), (1.1, 100), (0.5, 1000)])
def test_che_agrees_with_a_simulated_lru(alpha, cache):
    rng = np.random.default_rng(2026)
    n = 2000
    rates = 1000.0 / np.arange(1, n + 1) ** alpha  # Zipf-like lookups/s
    rates = rng.permutation(rates)
    simulated = _simulate_lru(rates, cache, 200_000, rng)
    che = lru_miss_ratio(rates, np.ones(n), np.zeros(n, int), [cache], 1)[0]
    assert abs(che - simulated) < 0.01, (che, simulated)  # measured: within 0.1 point
    assert abs(che - (1 - cache / n)) > 0.05  # and skew matters: uniform 1 - C/N would be wrong


def _che_by_brentq(rate, cache):
    t = brentq(lambda t: np.sum(-np.expm1(-rate * t)) - cache, 0.0, 1e30, xtol=1e-300, rtol=1e-15, maxiter=500)
    return np.sum(rate * np.exp(-rate * t)) / rate.sum()


positive_rates = st.lists(st.floats(1e-3, 1e4) | st.sampled_from([1.0, 10.0]), min_size=2, max_size=60)


@settings(max_examples=100, deadline=None)
@given(positive_rates, st.floats(0.05, 0.95))
def test_characteristic_time_matches_an_independent_root_finder(rates, fraction):
    rate = np.array(rates)
    cache = fraction * rate.size
    miss = lru_miss_ratio(rate, np.ones(rate.size), np.zeros(rate.size, int), [cache], 1)[0]
    assert miss == pytest.approx(_che_by_brentq(rate, cache), abs=1e-6)


@settings(max_examples=100, deadline=None)
@given(positive_rates, st.lists(st.floats(0.0, 80.0), min_size=1, max_size=8))
def test_a_larger_cache_never_misses_more(rates, sizes):
    rate = np.array(rates)
    sizes = np.sort(np.array(sizes))
    # the same keys in every group, one group per cache size
    g = np.repeat(np.arange(sizes.size), rate.size)
    miss = lru_miss_ratio(np.tile(rate, sizes.size), np.ones(g.size), g, sizes, sizes.size)
    assert ((miss >= 0) & (miss <= 1)).all()
    assert (np.diff(miss) <= 1e-9).all()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 100.0), st.integers(0, 6), st.integers(0, 2)), min_size=1, max_size=30),
       st.lists(st.floats(0.0, 20.0), min_size=3, max_size=3))
def test_multiplicity_is_the_same_as_repeated_rows(rows, sizes):
    rate, mult, group = (np.array(col) for col in zip(*rows))
    grouped = lru_miss_ratio(rate, mult, group, sizes, 3)
    expanded = lru_miss_ratio(np.repeat(rate, mult), np.ones(mult.sum()), np.repeat(group, mult), sizes, 3)
    np.testing.assert_allclose(grouped, expanded, atol=1e-9)


def test_lookups_are_one_per_tso_burst():
    # 100 B and exactly 64 KiB are one burst; 64 KiB + 1 is two; 1 MB is 16 (1e6 / 65536 = 15.3)
    np.testing.assert_array_equal(
        lookups_per_s([250.0, 250.0, 250.0, 250.0], [100, TSO_MAX_BYTES, TSO_MAX_BYTES + 1, 1_000_000]),
        [250.0, 250.0, 500.0, 4000.0],
    )
    assert lookups_per_s(10.0, 1_000_000, tso_max_bytes=512 * 1024) == 20.0  # BIG TCP bursts


def test_bad_input_is_refused():
    with pytest.raises(ValueError):
        lru_miss_ratio([-1.0], [1.0], [0], [1.0], 1)
    with pytest.raises(ValueError):
        lru_miss_ratio([1.0], [1.0], [1], [1.0], 1)


def test_a_warm_start_finds_the_same_root():
    """Starting Newton from the previous window's log T (``log_t``) changes nothing but the steps."""
    from pspsim.model import cache

    rng = np.random.default_rng(3)
    groups = 50
    group = rng.integers(0, groups, 20_000)
    rate = rng.pareto(1.2, len(group)) + 0.01
    mult = rng.integers(1, 4, len(group)).astype(float)
    size = np.full(groups, 200.0)
    cold = cache.lru_miss_ratio(rate, mult, group, size, groups)
    log_t = np.full(groups, np.nan)
    assert np.array_equal(cache.lru_miss_ratio(rate, mult, group, size, groups, log_t), cold)  # NaN: no guess
    assert np.isfinite(log_t).all()
    nudged = rate * rng.uniform(0.98, 1.02, len(rate))  # the next window: a little different
    want = cache.lru_miss_ratio(nudged, mult, group, size, groups)
    got = cache.lru_miss_ratio(nudged, mult, group, size, groups, log_t)
    assert got == pytest.approx(want, rel=1e-9)
    assert not np.array_equal(got, cold)


@pytest.mark.skipif(cache_module._che is None, reason="compiled module not built")
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), groups=st.integers(1, 40), every_group_spills=st.booleans())
def test_compiled_passes_give_the_numpy_bytes(seed, groups, every_group_spills):
    """The compiled per-key passes against the numpy expressions: equal miss ratios and roots, byte
    for byte (same products, same order of addition, numpy's exponentials in both)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(groups, 40 * groups))
    rate = rng.lognormal(0, 2, n) * (rng.random(n) > 0.05)  # a few idle keys
    mult = rng.integers(1, 20, n).astype(float)
    group = np.concatenate([np.arange(groups), rng.integers(0, groups, n - groups)])
    keys = np.bincount(group, mult, groups)
    cache = keys * rng.uniform(0.1, 0.9, groups) if every_group_spills else keys * rng.uniform(0.1, 1.5, groups)
    results = []
    for che in (cache_module._che, None):
        cache_module._che = che
        try:
            log_t = np.full(groups, np.nan)
            results.append((lru_miss_ratio(rate, mult, group, cache, groups, log_t), log_t))
        finally:
            cache_module._che = saved_che
    (fast, fast_t), (slow, slow_t) = results
    assert fast.tobytes() == slow.tobytes()
    assert fast_t.tobytes() == slow_t.tobytes()
