"""The traffic ledger: the compiled inner loop gives the numpy implementation's bytes, and the
window averages follow from the moves (a connection moving at time t counts (t1 - t) / window)."""

import numpy as np
import pytest

from pspsim.model import traffic
from pspsim.model.streams import RandomStreams
from pspsim.model.traffic import BYTES, CONNECTIONS, OFFLOAD, SOFTWARE, STALE, TrafficLedger, build_flows
from pspsim.model.workload import generate_workload
from tests.sim_helpers import scenario

compiled = pytest.mark.skipif(traffic._ledger_fast is None, reason="compiled ledger not built")


def _ledger(seed: int, duration: str = "1h", twice: bool = False, response_ratio: float = 1.0):
    sc = scenario(run={"duration": duration}, workload={"connection_lifetime": "3min", "response_ratio": response_ratio,
                                                    "connections_per_host": {"kind": "fixed", "mean": 80}})
    w = generate_workload(sc, RandomStreams.from_sequence(np.random.SeedSequence(seed)).workload)
    ledger = TrafficLedger(build_flows(w, 1448, 16384, 65536), 60.0, w.end)
    rng = np.random.default_rng(seed)
    n = len(w)
    moves = [(w.start, np.arange(n), OFFLOAD), (w.end, np.arange(n), traffic.GONE)]
    some = rng.choice(n, n // 2, replace=False)  # then moves between categories, several per connection
    for to in (SOFTWARE, STALE, OFFLOAD):
        moves.append((w.start[some] + rng.uniform(0, 600, len(some)), some, to))
    for move in moves:
        for _ in range(2 if twice else 1):
            ledger.move(*move)
    return ledger


@compiled
def test_the_compiled_ledger_gives_the_numpy_bytes(monkeypatch):
    fast, slow = _ledger(4), _ledger(4)
    for i in range(60):
        a = fast.window(i, 60.0 * i, 60.0 * (i + 1))
        with monkeypatch.context() as m:
            m.setattr(traffic, "_ledger_fast", None)
            b = slow.window(i, 60.0 * i, 60.0 * (i + 1))
        assert np.array_equal(a.touched, b.touched)
        assert a.before.tobytes() == np.ascontiguousarray(b.before).tobytes()
        assert np.ascontiguousarray(a.average).tobytes() == np.ascontiguousarray(b.average).tobytes()
        assert fast.rows.tobytes() == slow.rows.tobytes()
        assert np.ascontiguousarray(a.touched_after).tobytes() == np.ascontiguousarray(
            fast.rows[a.touched].transpose(1, 2, 0)).tobytes()  # the level after, as the rows hold it
        np.testing.assert_allclose(a.host_average, b.host_average, rtol=1e-9, atol=1e-6)
    assert fast.rows[:, OFFLOAD, CONNECTIONS].sum() > 0


@compiled
def test_values_computed_again_give_the_bytes_of_values_kept(monkeypatch):
    """Past ``SCRATCH_FLOWS`` (window 0 of a big fleet) the compiled loop keeps no per-move values and
    computes them again in its second pass, and when every flow is touched it leaves the level after
    to the ledger's rows: the same bytes, every window."""
    kept, again = _ledger(5, response_ratio=3.5), _ledger(5, response_ratio=3.5)  # responses differ
    spaces, original = [], again._space

    def space(flows, moves, planes=3):
        out, values = original(flows, moves, planes)
        spaces.append((values.shape, out.shape[0]))
        return out, values

    for i in range(60):
        a = kept.window(i, 60.0 * i, 60.0 * (i + 1))
        with monkeypatch.context() as m:
            m.setattr(traffic, "SCRATCH_FLOWS", 0)  # every window as window 0 of fleet-10k
            m.setattr(traffic, "SCRATCH_SHARE", 1 << 40)
            m.setattr(traffic._ledger_fast, "AFTER_OPTIONAL", i % 2 == 0)  # odd windows: the level after copied
            m.setattr(again, "_space", space)
            b = again.window(i, 60.0 * i, 60.0 * (i + 1))
        assert np.array_equal(a.touched, b.touched)
        for x, y in ((a.before, b.before), (a.average, b.average), (a.touched_after, b.touched_after),
                     (a.host_average, b.host_average), (kept.rows, again.rows), (kept.host_level, again.host_level)):
            assert np.ascontiguousarray(x).tobytes() == np.ascontiguousarray(y).tobytes()
    assert spaces and all(shape[0] == 0 for shape, _ in spaces)  # the values were not kept
    # every flow is touched here: the level after is not copied (two planes), except where told to
    assert [planes for _, planes in spaces] == [2, 3] * 30
    assert kept.rows[:, OFFLOAD, CONNECTIONS].sum() > 0


@pytest.mark.parametrize("implementation", ["compiled", "numpy"])
def test_per_host_sums_equal_a_fresh_bincount_of_the_flows(monkeypatch, implementation):
    """The ledger's per-host sums, kept move by move, against sums of the flows' window averages."""
    if implementation == "numpy":
        monkeypatch.setattr(traffic, "_ledger_fast", None)
    elif traffic._ledger_fast is None:
        pytest.skip("compiled ledger not built")
    ledger = _ledger(7, "6h")
    flows, hosts = ledger.flows, ledger.hosts
    crossing = np.random.default_rng(0).random(flows.count) < 0.5
    ledger.crossing[:] = crossing
    for i in range(300):  # past a resync (every traffic.RESYNC windows)
        t = ledger.window(i, 60.0 * i, 60.0 * (i + 1))
        assert i < 200 or len(t.touched)  # still churning
        full = t.full()
        for side, hosts_of in ((0, flows.sender), (1, flows.receiver)):
            for part, keep in ((0, np.ones(flows.count, bool)), (1, crossing)):
                for c in (OFFLOAD, SOFTWARE, STALE):
                    want = np.bincount(hosts_of[keep], full[c, BYTES, keep], hosts)
                    np.testing.assert_allclose(t.host_average[:, side, part, c, BYTES], want, rtol=1e-9, atol=1e-6)


def test_per_host_sums_do_not_depend_on_how_many_rows_one_bincount_takes(monkeypatch):
    """The per-host sums go one block of (category, quantity) rows per ``bincount`` (small blocks
    when every flow is summed, as in a resync): blocks of 1, 3, 7 (the last ones shorter) and all
    20 rows give the same bytes, for every flow and for a window's few, and they are the sums."""
    ledger = _ledger(9, "2h")
    for i in range(30):
        ledger.window(i, 60.0 * i, 60.0 * (i + 1))
    flows, rows = ledger.flows, len(traffic.CATEGORIES) * len(traffic.QUANTITIES)
    ledger.crossing[:] = np.random.default_rng(1).random(flows.count) < 0.5
    level = ledger.rows.transpose(1, 2, 0)
    assert level[OFFLOAD, CONNECTIONS].any() and level[SOFTWARE, BYTES].any()
    for ids in (np.arange(flows.count), np.sort(np.random.default_rng(2).choice(flows.count, 40, replace=False))):
        values = level[:, :, ids]
        sums = []
        for block in (1, 3, 7, rows):
            monkeypatch.setattr(traffic, "HOST_SUM_ELEMENTS", block * len(ids))
            sums.append(ledger._host_sums(ids, values))
        assert all(x.tobytes() == sums[-1].tobytes() for x in sums)
        for side, hosts_of in ((0, flows.sender), (1, flows.receiver)):
            for part, keep in ((0, np.ones(len(ids), bool)), (1, ledger.crossing[ids] == 1)):
                for c, q in ((OFFLOAD, CONNECTIONS), (SOFTWARE, BYTES), (STALE, BYTES)):
                    want = np.bincount(hosts_of[ids][keep], values[c, q][keep], ledger.hosts)
                    assert sums[0][:, side, part, c, q].tobytes() == want.tobytes()


def test_a_connection_moving_mid_window_counts_its_share():
    """Independent of both implementations: one connection, moves at known times."""
    sc = scenario(run={"duration": "10min"}, fleet={"racks": 1, "hosts_per_rack": 2},
                  workload={"connections_per_host": {"kind": "fixed", "mean": 1}, "peers_per_host": 1})
    w = generate_workload(sc, RandomStreams.from_sequence(np.random.SeedSequence(1)).workload)
    flows = build_flows(w, 1448, 16384, 65536)
    ledger = TrafficLedger(flows, 60.0, np.full(len(w), 1e9))
    conn = np.array([0])
    ledger.move(np.array([15.0]), conn, OFFLOAD)
    ledger.move(np.array([45.0]), conn, SOFTWARE)
    t = ledger.window(0, 0.0, 60.0)
    rate = flows.quantities(conn, False)[BYTES, 0]
    flow = 2 * flows.pair_of[0]
    full = t.full()
    assert full[OFFLOAD, BYTES, flow] == pytest.approx(rate * 0.5)  # 15 s .. 45 s
    assert full[SOFTWARE, BYTES, flow] == pytest.approx(rate * 0.25)  # 45 s .. 60 s
    after = ledger.window(1, 60.0, 120.0).full()  # nothing moves: the level carries on
    assert after[SOFTWARE, BYTES, flow] == pytest.approx(rate)
    assert after[OFFLOAD, BYTES, flow] == 0.0


@pytest.mark.parametrize("implementation", ["compiled", "numpy"])
def test_every_flow_averages_kept_from_window_to_window_equal_fresh_ones(monkeypatch, implementation):
    """The ledger's kept every-flow averages (asked for from window 5 on, as kTLS offload's data
    plane does; PSP's asks for the flows of some NICs) against the dense average gathered afresh,
    byte for byte, windows with and without moves; and callers cannot write into them."""
    if implementation == "numpy":
        monkeypatch.setattr(traffic, "_ledger_fast", None)
    elif traffic._ledger_fast is None:
        pytest.skip("compiled ledger not built")
    ledger = _ledger(9, "2h")
    quiet = 0
    for i in range(200):  # the workload's connections end by about 2 h 40 min: quiet windows after
        t = ledger.window(i, 60.0 * i, 60.0 * (i + 1))
        quiet += len(t.touched) == 0
        if i < 5:
            continue
        for c in (OFFLOAD, SOFTWARE):
            kept = t.category_of(None, c)
            assert kept.tobytes() == np.ascontiguousarray(t.full()[c]).tobytes()
            with pytest.raises(ValueError):
                kept[0, 0] = 1.0
            some = np.flatnonzero(np.random.default_rng(i).random(ledger.flows.count) < 0.3)
            assert t.category_of(some, c).tobytes() == np.ascontiguousarray(t.full()[c][:, some]).tobytes()
    assert 10 < quiet < 150


@pytest.mark.parametrize("implementation", ["compiled", "numpy"])
def test_moves_to_the_category_a_connection_is_in_change_nothing(monkeypatch, implementation):
    """A PSP reconnect moves a connection that is on its offload to its offload again: the ledger
    drops such moves, so a ledger given every move twice (the second one to where the first
    went) gives the bytes of one given each move once: touched flows, averages, levels and
    per-host sums, window after window."""
    if implementation == "numpy":
        monkeypatch.setattr(traffic, "_ledger_fast", None)
    elif traffic._ledger_fast is None:
        pytest.skip("compiled ledger not built")
    plain, doubled = _ledger(5), _ledger(5, twice=True)
    for i in range(60):
        t0, t1 = 60.0 * i, 60.0 * (i + 1)
        a, b = plain.window(i, t0, t1), doubled.window(i, t0, t1)
        assert np.array_equal(a.touched, b.touched)
        assert np.ascontiguousarray(a.average).tobytes() == np.ascontiguousarray(b.average).tobytes()
        assert a.host_average.tobytes() == b.host_average.tobytes()
        assert plain.rows.tobytes() == doubled.rows.tobytes()
        assert plain.host_level.tobytes() == doubled.host_level.tobytes()
        assert np.array_equal(plain.category, doubled.category)
    live = np.flatnonzero(plain.end > 3700.0)[:5]
    for ledger in (plain, doubled):  # a real move between repeated ones is applied
        ledger.move(np.full(len(live), 3610.0), live, OFFLOAD)
        ledger.move(np.full(len(live), 3615.0), live, SOFTWARE)
        ledger.move(np.full(len(live), 3620.0), live, SOFTWARE)
    a, b = plain.window(60, 3600.0, 3660.0), doubled.window(60, 3600.0, 3660.0)
    assert len(live) and (plain.category[live] == SOFTWARE).all() and np.array_equal(a.touched, b.touched)
    assert set(plain.flows.pair_of[live]) <= set(a.touched // 2)
