"""PSP control's compiled per-window tables against plain references: the stale test's first re-key
per association (a hash table sized by the window's requests), the one-item row views, and the
window a connection ending on a window edge leaves in."""

from __future__ import annotations

import numpy as np
import pytest

from pspsim.model import psp_control
from pspsim.model.psp_control import ONE_MORE_EACH_SIDE, _both, _rows

compiled = pytest.mark.skipif(psp_control._schedules is None, reason="compiled schedules not built")


def _early_by_hand(asked_conn, asked_side, at, both, conn, side, when):
    first: dict[tuple[int, int], float] = {}
    for c, s, t, b in zip(asked_conn, asked_side, at, both):
        for key in [(c, s)] + ([(c, 1 - s)] if b else []):
            if not np.isnan(t) and t < first.get(key, np.inf):
                first[key] = t
    return np.array([first.get((c, s), np.inf) < w for c, s, w in zip(conn, side, when)])


@compiled
@pytest.mark.parametrize("seed", range(4))
def test_early_rekeys_are_the_first_request_of_each_association_before_its_check(seed):
    """Requests repeat associations (both sides of reconnects, the same side twice), some times are
    NaN; the table is reused window after window and is empty again after each."""
    rng = np.random.default_rng(seed)
    control = psp_control.PspControl.__new__(psp_control.PspControl)
    control._rekey_keys, control._rekey_first = np.empty(0, np.int64), np.empty(0)
    for _ in range(5):
        n, m = int(rng.integers(1, 3000)), int(rng.integers(0, 3000))
        asked_conn = rng.integers(0, 500, n) * int(rng.choice([1, 2**33]))  # large ids too
        asked_side, both = rng.integers(0, 2, n), rng.random(n) < 0.5
        at = rng.uniform(0, 60, n)
        at[rng.random(n) < 0.05] = np.nan
        conn, side, when = rng.choice(asked_conn, m), rng.integers(0, 2, m), rng.uniform(0, 60, m)
        keys, first, shift = control._rekey_table(n)
        flags = np.empty(m, np.uint8)
        psp_control._schedules.early_rekeys(asked_conn, asked_side, at, both.view(np.uint8), conn, side, when,
                                            keys, first, shift, flags)
        np.testing.assert_array_equal(flags.view(bool), _early_by_hand(asked_conn, asked_side, at, both, conn,
                                                                       side, when))
        assert (keys == -1).all()


@compiled
def test_a_full_hash_table_is_an_error_not_a_hang():
    keys, first, flags = np.full(4, -1, np.int64), np.empty(4), np.empty(1, np.uint8)
    with pytest.raises(ValueError, match="full"):
        psp_control._schedules.early_rekeys(np.arange(5), np.zeros(5, np.int64), np.ones(5), np.zeros(5, np.uint8),
                                            np.array([0]), np.array([0]), np.array([5.0]), keys, first, 62, flags)
    assert (keys == -1).all()


def test_row_views_gather_scatter_and_bump_both_sides():
    made = np.arange(20.0).reshape(10, 2)
    version = np.array([[0, 7], [2**31 - 2, 0], [5, 5]] + [[1, 1]] * 7, np.int32)
    idx = np.array([0, 1, 2, 2])  # a repeated row counts once, as numpy's own fancy += does
    _rows(version)[idx] += ONE_MORE_EACH_SIDE
    np.testing.assert_array_equal(version[:3], [[1, 8], [2**31 - 1, 1], [6, 6]])
    _rows(made)[np.array([3, 5])] = _both(np.array([-1.0, np.nan]), np.array([np.inf, -0.0]))
    assert made[3].tolist() == [-1.0, np.inf] and np.isnan(made[5, 0]) and np.signbit(made[5, 1])
    np.testing.assert_array_equal(_rows(made)[np.array([9])].view(np.float64), [18.0, 19.0])


def test_a_connection_ending_on_a_window_edge_leaves_in_the_next_window():
    """Windows are [t0, t1): a connection whose end is exactly 120 s is live at the end of the
    window ending at 120 s and gone at the end of the next."""
    from pspsim.model.workload import Workload
    from tests.sim_helpers import FleetSimulation, RandomStreams, load_parameter_set, make_variant, scenario

    sc = scenario(run={"duration": "5min"}, fleet={"racks": 1, "hosts_per_rack": 2}, workload={"peers_per_host": 1})
    costs = load_parameter_set().costs()
    w = Workload(2, np.array([0, 1], np.int32), np.array([1, 0], np.int32), np.array([-50.0, -10.0]),
                 np.array([120.0, 1e5]), np.array([8192, 8192], np.float32), np.array([1, 1], np.float32), 1.0,
                 running=2)
    sim = FleetSimulation(sc, make_variant("plaintext", costs, sc.keys), w, costs,
                          RandomStreams.from_sequence(np.random.SeedSequence(1)))
    rows = sim.run().rows
    assert [r["connections"] for r in rows] == [2.0, 2.0, 1.0, 1.0, 1.0]
