"""Weighted max-min fair sharing, held to hand-worked allocations, a closed form,
an independent repeated-LP solver and the bottleneck characterisation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

from pspsim.model.sharing import max_min_rates

ROUNDS = ("auto", "local", "one-level")
INF = np.inf


def _usage(x, flow_of, resource_of, coefficient, n_res):
    return np.bincount(resource_of, np.asarray(coefficient) * x[np.asarray(flow_of)], n_res)


@pytest.mark.parametrize("rounds", ROUNDS)
def test_single_link_equal_flows_get_capacity_over_n(rounds):
    n, capacity = 7, 100.0
    x = max_min_rates([INF] * n, [1.0] * n, range(n), [0] * n, [1.0] * n, [capacity], rounds=rounds)
    np.testing.assert_allclose(x, capacity / n, rtol=1e-12)


def _water_level(demand, capacity):
    """Single link: the level lam with sum(min(d, lam)) = capacity, by sorting the demands."""
    d = np.sort(demand)
    left = capacity
    for i, di in enumerate(d):
        share = left / (d.size - i)
        if di >= share:
            return share
        left -= di
    return INF


@pytest.mark.parametrize("seed", range(5))
def test_demand_limited_flows_leave_their_share_to_the_others(seed):
    rng = np.random.default_rng(seed)
    n = 50
    demand = rng.exponential(2.0, n)
    demand[:5] = INF
    capacity = 0.6 * demand[np.isfinite(demand)].sum()
    lam = _water_level(demand, capacity)
    x = max_min_rates(demand, np.ones(n), np.arange(n), np.zeros(n, int), np.ones(n), [capacity])
    np.testing.assert_allclose(x, np.minimum(demand, lam), rtol=1e-9)
    assert x.sum() == pytest.approx(capacity, rel=1e-12)
    # the small case worked by hand: C = 10, demands 1, 2 and three unlimited -> 1, 2, 7/3 each
    x = max_min_rates([1, 2, INF, INF, INF], [1] * 5, range(5), [0] * 5, [1] * 5, [10.0])
    np.testing.assert_allclose(x, [1, 2, 7 / 3, 7 / 3, 7 / 3], rtol=1e-12)


@pytest.mark.parametrize("rounds", ROUNDS)
def test_three_links_worked_by_hand(rounds):
    # Links A (cap 1), B (cap 3), C (cap 1.6).  Flow 0 crosses A and B, flow 1 A,
    # flow 2 B and C, flow 3 C, flow 4 B.  By hand (Bertsekas-Gallager 6.5.2):
    # A's fair level 1/2 is the lowest (B: 3/3 = 1, C: 1.6/2 = 0.8), so flows 0, 1 get 0.5.
    # B has 3 - 0.5 = 2.5 left for flows 2, 4 (1.25 each); C's 0.8 is now lowest: flows 2, 3 get 0.8.
    # Flow 4 alone on B gets 3 - 0.5 - 0.8 = 1.7.
    flow_of = [0, 0, 1, 2, 2, 3, 4]
    resource_of = [0, 1, 0, 1, 2, 2, 1]
    x = max_min_rates([INF] * 5, [1.0] * 5, flow_of, resource_of, [1.0] * 7, [1.0, 3.0, 1.6], rounds=rounds)
    np.testing.assert_allclose(x, [0.5, 0.5, 0.8, 0.8, 1.7], rtol=1e-12)


def test_weights_and_coefficients():
    x = max_min_rates([INF, INF], [1.0, 3.0], [0, 1], [0, 0], [1.0, 1.0], [8.0])
    np.testing.assert_allclose(x, [2.0, 6.0], rtol=1e-12)
    # packet-time coefficient: flow 1 costs twice as much of the engine per unit rate
    # equal levels L: L + 2L = 9 -> both at 3
    x = max_min_rates([INF, INF], [1.0, 1.0], [0, 1], [0, 0], [1.0, 2.0], [9.0])
    np.testing.assert_allclose(x, [3.0, 3.0], rtol=1e-12)


def test_edge_cases():
    # no resources: the demand (inf stays inf); infinite capacity never binds; zero capacity gives 0
    x = max_min_rates([5.0, INF, 4.0, 3.0, 0.0], [1.0] * 5, [2, 3, 4], [0, 1, 1], [1.0] * 3, [INF, 0.0])
    np.testing.assert_array_equal(x, [5.0, INF, 4.0, 0.0, 0.0])
    with pytest.raises(ValueError):
        max_min_rates([1.0], [0.0], [0], [0], [1.0], [1.0])
    with pytest.raises(ValueError):
        max_min_rates([1.0], [1.0], [0], [1], [1.0], [1.0])


# ---- random instances: an independent solver and the bottleneck characterisation


@st.composite
def instances(draw, max_flows=8, max_resources=5, extras=False):
    n_flows = draw(st.integers(1, max_flows))
    n_res = draw(st.integers(1, max_resources))
    levels = st.sampled_from([0.0, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0])
    capacity = [draw(levels | st.floats(0.5, 20.0)) for _ in range(n_res)]
    demand = [draw(st.just(INF) | st.floats(0.0, 10.0)) for _ in range(n_flows)]
    weight = [draw(st.sampled_from([1.0, 2.0, 3.0]) | st.floats(0.25, 4.0)) for _ in range(n_flows)]
    flow_of, resource_of, coefficient = [], [], []
    for f in range(n_flows):
        low = 0 if extras else 1
        used = draw(st.lists(st.integers(0, n_res - 1), min_size=low, max_size=n_res, unique=True))
        for r in used:
            flow_of.append(f)
            resource_of.append(r)
            coefficient.append(draw(st.sampled_from([1.0, 2.0]) | st.floats(0.25, 4.0)))
    if extras and n_res > 1 and draw(st.booleans()):
        capacity[-1] = INF
    return (np.array(demand), np.array(weight), np.array(flow_of, int), np.array(resource_of, int),
            np.array(coefficient), np.array(capacity))


def _max_min_by_lp(demand, weight, flow_of, resource_of, coefficient, capacity):
    """Max-min by repeated linear programming (no progressive filling): maximise the
    smallest normalised rate t of the flows not yet fixed, then fix every flow that
    cannot exceed weight * t while the others keep at least weight * t; repeat."""
    n, m = demand.size, capacity.size
    a = np.zeros((m, n + 1))
    np.add.at(a, (resource_of, flow_of), coefficient)
    fixed = np.full(n, np.nan)
    while np.isnan(fixed).any():
        free = np.isnan(fixed)
        bounds = [(v, v) if not np.isnan(v) else (0.0, None if np.isinf(d) else d) for v, d in zip(fixed, demand)]
        # x_f >= w_f t for free flows:  w_f t - x_f <= 0
        g = np.zeros((free.sum(), n + 1))
        g[np.arange(free.sum()), np.flatnonzero(free)] = -1.0
        g[:, n] = weight[free]
        c = np.zeros(n + 1)
        c[n] = -1.0
        res = linprog(c, A_ub=np.vstack([a, g]), b_ub=np.r_[capacity, np.zeros(free.sum())],
                      bounds=bounds + [(0.0, None)], method="highs")
        assert res.status == 0
        t = res.x[n]
        before = np.isnan(fixed).sum()
        for f in np.flatnonzero(free):
            c = np.zeros(n + 1)
            c[f] = -1.0
            out = linprog(c, A_ub=np.vstack([a, g]), b_ub=np.r_[capacity, np.zeros(free.sum())],
                          bounds=bounds + [(t, t)], method="highs")
            assert out.status in (0, 3)
            if out.status == 0 and out.x[f] <= weight[f] * t * (1 + 1e-7) + 1e-9:
                fixed[f] = weight[f] * t
        assert np.isnan(fixed).sum() < before  # every step fixes at least one flow
    return fixed


@settings(max_examples=60, deadline=None)
@given(instances())
def test_agrees_with_repeated_linear_programming(inst):
    expected = _max_min_by_lp(*inst)
    for rounds in ROUNDS:
        x = max_min_rates(*inst, rounds=rounds)
        np.testing.assert_allclose(x, expected, rtol=1e-5, atol=1e-6)


def _check_max_min(x, demand, weight, flow_of, resource_of, coefficient, capacity):
    use = _usage(x, flow_of, resource_of, coefficient, capacity.size)
    assert (x >= 0).all()
    assert (x <= demand * (1 + 1e-12)).all()
    finite = np.isfinite(capacity)
    assert (use[finite] <= capacity[finite] * (1 + 1e-9) + 1e-12).all()
    saturated = finite & (use >= capacity * (1 - 1e-9) - 1e-12)
    per_weight = x / weight
    top = np.zeros(capacity.size)
    np.maximum.at(top, resource_of, per_weight[flow_of])
    for f in range(x.size):
        if x[f] >= demand[f] * (1 - 1e-9):
            continue
        mine = resource_of[flow_of == f]
        bottleneck = saturated[mine] & (per_weight[f] >= top[mine] * (1 - 1e-9))
        assert bottleneck.any(), f"flow {f} at {x[f]} below its demand {demand[f]} has no bottleneck"


@settings(max_examples=200, deadline=None)
@given(instances(max_flows=40, max_resources=10, extras=True))
def test_every_flow_is_at_its_demand_or_has_a_bottleneck(inst):
    for rounds in ROUNDS:
        _check_max_min(max_min_rates(*inst, rounds=rounds), *inst)


@pytest.mark.parametrize("seed", range(3))
def test_dense_coupling_many_levels(seed):
    """Hundreds of flows over a few dozen coupled resources at distinct levels (the
    case the one-level rounds are for); every schedule of rounds gives the same rates."""
    rng = np.random.default_rng(seed)
    n, m = 600, 40
    flow_of = np.repeat(np.arange(n), 3)
    resource_of = np.concatenate([rng.choice(m, 3, replace=False) for _ in range(n)])
    coefficient = rng.uniform(0.5, 2.0, 3 * n)
    demand = np.where(rng.random(n) < 0.7, INF, rng.exponential(0.3, n))
    weight = rng.integers(1, 4, n).astype(float)
    capacity = rng.uniform(5.0, 50.0, m)
    inst = (demand, weight, flow_of, resource_of, coefficient, capacity)
    rates = {rounds: max_min_rates(*inst, rounds=rounds) for rounds in ROUNDS}
    _check_max_min(rates["auto"], *inst)
    np.testing.assert_allclose(rates["local"], rates["one-level"], rtol=1e-9)
    np.testing.assert_allclose(rates["auto"], rates["one-level"], rtol=1e-9)
    assert len(np.unique(np.round(rates["auto"] / weight, 9))) > 10  # many distinct levels
