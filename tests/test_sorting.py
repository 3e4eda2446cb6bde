"""The compiled stable argsort against numpy's: the same permutation for every key type the model
sorts (float times with ties, -0.0, infinities; int32 host ids; int64 connection ids), and
numpy's own result for what it does not handle (NaN, uint64)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pspsim.model import sorting
from pspsim.model.sorting import SMALL, argsort_stable

compiled = pytest.mark.skipif(sorting._sort is None, reason="compiled module not built")


def _same(keys: np.ndarray) -> None:
    got = argsort_stable(keys)
    want = np.argsort(keys, kind="stable")
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, want)


@compiled
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), kind=st.sampled_from(["float", "ties", "int32", "int64", "wide", "uint32",
                                                                  "few", "few-negative", "int32-edge"]))
def test_radix_argsort_is_numpys_stable_argsort(seed, kind):
    rng = np.random.default_rng(seed)
    n = SMALL + int(rng.integers(0, 5000))  # above SMALL: the compiled path
    keys = {
        "float": lambda: rng.normal(0, 1e4, n),
        "ties": lambda: np.round(rng.uniform(-3, 3, n), 1) * rng.choice([1.0, -1.0], n),  # +-0.0 and many ties
        "int32": lambda: rng.integers(0, 1000, n).astype(np.int32),
        "int64": lambda: rng.integers(-2**62, 2**62, n),
        "wide": lambda: rng.choice(np.array([-2**63, 2**63 - 1, 0, -1, 5]), n),
        "uint32": lambda: rng.integers(0, 2**32, n).astype(np.uint32),
        # fewer distinct values than sorting.COUNTING: the counting sort, offset by the smallest
        "few": lambda: rng.integers(7, 7 + sorting.COUNTING - 1, n),
        "few-negative": lambda: rng.integers(-2**62, -2**62 + 300, n),
        "int32-edge": lambda: rng.integers(-2**31, -2**31 + 5, n).astype(np.int32),
    }[kind]()
    _same(keys)


def test_special_floats_and_types_numpy_handles():
    rng = np.random.default_rng(1)
    n = SMALL + 10
    specials = np.array([0.0, -0.0, np.inf, -np.inf, 1e-310, -1e-310, 1.0])
    _same(rng.choice(specials, n))  # zero signs compare equal: input order kept
    _same(np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n)))  # NaN: numpy's order (last)
    _same(rng.integers(0, 2**64 - 1, n, dtype=np.uint64))
    _same(np.zeros(n))  # every digit equal: no pass
    if np.finfo(np.longdouble).nmant > 52:  # wider than float64 here: numpy's order, not a rounded one
        _same((1 + np.arange(n) * np.finfo(np.longdouble).eps).astype(np.longdouble)[::-1])
    _same(rng.normal(size=100).astype(np.float32))  # small: numpy
    _same(rng.integers(-300, 300, 1000).astype(np.int64))  # small ints: numpy's radix on int16


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.sampled_from([10, SMALL - 1, SMALL + 1, 3 * SMALL]))
def test_lexsort_is_numpys_lexsort(seed, n):
    rng = np.random.default_rng(seed)
    time = np.round(rng.uniform(0, 5, n), 1)  # ties within a connection
    conn = rng.integers(0, max(n // 3, 1), n)  # repeated connections
    np.testing.assert_array_equal(sorting.lexsort((time, conn)), np.lexsort((time, conn)))
    np.testing.assert_array_equal(sorting.lexsort((conn, time, conn % 3)), np.lexsort((conn, time, conn % 3)))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), runs=st.integers(1, 40), repeats=st.sampled_from(["none", "few", "many"]),
       dtype=st.sampled_from([np.int64, np.int32, np.uint32]), nan=st.booleans())
def test_lexsort_of_a_few_sorted_runs_is_numpys(seed, runs, repeats, dtype, nan):
    """A window's moves: connections in a few ascending runs (one a push), some repeated (a connection
    moved twice or more), then by time: the run-merging path, with ties put in order by passes (at
    most ``FEW`` a value), by a sort (more), or none."""
    rng = np.random.default_rng(seed)
    n = SMALL + int(rng.integers(0, 30_000))
    spread = {"none": 50 * n, "few": 2 * n, "many": max(n // (4 * sorting.FEW), 1)}[repeats]
    cuts = np.sort(rng.integers(0, n, runs - 1))
    parts = [np.sort(rng.choice(spread, size=hi - lo, replace=repeats != "none")) for lo, hi in
             zip(np.r_[0, cuts], np.r_[cuts, n])]
    conn = np.concatenate(parts).astype(dtype)
    time = np.round(rng.uniform(-5, 5, n), 1)  # ties within a connection too
    if nan:
        time[rng.integers(0, n, 7)] = np.nan  # numpy sorts NaN last; the passes' comparisons do not
    kind = np.where(rng.random(n) < 0.5, 2, 1)
    when = (time * 1e3).astype("datetime64[ms]")
    when[rng.integers(0, n, 3)] = np.datetime64("NaT")  # kinds the passes leave to numpy's sort
    for keys in ((time, conn), (time, kind, conn), (kind, time, conn), (when, conn), (time.astype(object), conn)):
        np.testing.assert_array_equal(sorting.lexsort(keys), np.lexsort(keys))
    with pytest.raises(ValueError, match="same shape"):
        sorting.lexsort((time[:-1], conn))


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.int16])
@pytest.mark.parametrize("groups, n", [(20_000, 50), (20_000, 20_000), (5, 3), (0, 4)])
def test_csr_is_the_stable_sort_and_its_bounds(dtype, groups, n):
    """The compiled counting sort's groups against numpy's stable argsort and a binary search,
    with empty groups, every group empty and fewer items than groups."""
    values = np.random.default_rng(groups + n).integers(0, min(n, np.iinfo(dtype).max), groups).astype(dtype)
    order, bounds = sorting.csr(values, n)
    expected = np.argsort(values, kind="stable")
    np.testing.assert_array_equal(order, expected)
    np.testing.assert_array_equal(bounds, np.searchsorted(values[expected], np.arange(n + 1)))


@pytest.mark.skipif(sorting._sort is None, reason="compiled sort not built")
def test_csr_refuses_a_group_outside_its_range():
    with pytest.raises(ValueError, match="0..2"):
        sorting.csr(np.array([0, 1, 3] * 2000), 3)
    with pytest.raises(ValueError, match="0..2"):
        sorting.csr(np.array([0, -1, 2] * 2000), 3)
