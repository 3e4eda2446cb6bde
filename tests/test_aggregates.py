"""The incremental data plane (per-host sums kept from window to window, dense solver only near
capacity) gives the dense computation's numbers, window by window, on fleets that stay below
capacity, whose NIC caches spill, and whose links saturate."""

import numpy as np
import pandas as pd
import pytest

from pspsim.costs import load_parameter_set
from pspsim.model.aggregates import HostSums
from pspsim.model.simulation import FleetSimulation
from pspsim.model.streams import RandomStreams
from pspsim.model.traffic import BYTES, OFFLOAD, TrafficLedger, build_flows
from pspsim.model.variants import make_variant
from pspsim.model.workload import generate_workload
from tests.sim_helpers import scenario


def _both(sc, variant, overrides=None):
    costs = load_parameter_set().with_overrides(overrides or {}).costs()
    runs = []
    for incremental in (True, False):
        streams = RandomStreams.from_sequence(np.random.SeedSequence(11))
        workload = generate_workload(sc, streams.workload)
        sim = FleetSimulation(sc, make_variant(variant, costs, sc.keys), workload, costs, streams,
                              incremental=incremental)
        runs.append((sim, pd.DataFrame(sim.run().rows)))
    return runs


def _same(fast: pd.DataFrame, dense: pd.DataFrame) -> None:
    assert list(fast.columns) == list(dense.columns)
    for col in dense.columns:
        a, b = fast[col].to_numpy(float), dense[col].to_numpy(float)
        scale = max(np.abs(b).max(), 1e-300)
        assert np.abs(a - b).max() <= 1e-9 * scale, col


@pytest.mark.parametrize("variant", ["psp", "ipsec-packet-offload", "ktls-offload", "tls-user"])
def test_incremental_matches_dense_below_capacity_with_cache_spills(variant):
    sc = scenario(fleet={"racks": 2, "hosts_per_rack": 4}, run={"duration": "40min"},
                  workload={"connections_per_host": {"kind": "fixed", "mean": 60}, "peers_per_host": 3})
    small = {"nic.psp_tx_key_cache_entries": 40, "nic.ipsec_sa_cache_entries": 2,
             "nic.ktls_context_cache_entries": 40}
    (fast_sim, fast), (_, dense) = _both(sc, variant, small)
    _same(fast, dense)
    assert fast_sim.dataplane.solver_windows == 0  # never near capacity: the sums did it all
    if variant != "tls-user":
        assert dense["cache_miss_ratio_max"].max() > 0  # the Che path on the spilling NICs ran


def test_incremental_falls_back_to_the_solver_when_links_saturate():
    sc = scenario(fleet={"racks": 2, "hosts_per_rack": 4, "host_link_gbps": 1}, run={"duration": "20min"},
                  workload={"connections_per_host": {"kind": "fixed", "mean": 40}, "traffic": "bulk",
                            "message_bytes": {"kind": "fixed", "mean": 1000000},
                            "messages_per_second": {"kind": "fixed", "mean": 10}})
    (fast_sim, fast), (_, dense) = _both(sc, "psp")
    _same(fast, dense)
    assert (dense["achieved_gbps"] < 0.99 * dense["offered_gbps"]).all()  # links saturated
    assert fast_sim.dataplane.solver_windows == len(dense)


def test_host_sums_equal_a_fresh_bincount_after_many_windows():
    """The sums kept by adding each window's changes equal sums rebuilt from the level."""
    sc = scenario(run={"duration": "2h"}, workload={"connection_lifetime": "5min"})
    costs = load_parameter_set().costs()
    streams = RandomStreams.from_sequence(np.random.SeedSequence(2))
    w = generate_workload(sc, streams.workload)
    flows = build_flows(w, 1400, 16384, 65536)
    ledger = TrafficLedger(flows, 60.0, w.end)
    ledger.move(w.start, np.arange(len(w)), OFFLOAD)
    ledger.move(w.end, np.arange(len(w)), -1)
    sums = HostSums(flows, w.hosts, lambda q, ids: q[OFFLOAD, BYTES][None, :], np.array([False]))
    for i in range(120):
        traffic = ledger.window(i, 60.0 * i, 60.0 * (i + 1))
        got = sums.window(traffic)[0]
        avg = traffic.full()[OFFLOAD, BYTES]
        want = np.bincount(flows.sender, avg, w.hosts)
        assert got == pytest.approx(want, rel=1e-9, abs=1e-6)
    assert costs is not None


def test_incremental_matches_dense_when_only_some_nics_spill(monkeypatch):
    """NICs of very different loads, PSP (TX keys only): the Che solve takes the flows the spilling
    NICs send (a strict subset of the flows near the cache: they also receive), the engine shares
    those NICs' flows, and the numbers are the dense computation's."""
    from pspsim.model.aggregates import IncrementalDataplane

    picked = []
    original = IncrementalDataplane._part

    def part(self, near, nics, tx, rx):
        ids, q = original(self, near, nics, tx, rx)
        picked.append((len(ids), len(near[0])))
        assert np.array_equal(q, near[1][:, np.isin(near[0], ids)])  # the same flows' columns, in order
        return ids, q

    monkeypatch.setattr(IncrementalDataplane, "_part", part)
    sc = scenario(fleet={"racks": 2, "hosts_per_rack": 6}, run={"duration": "30min"},
                  workload={"connections_per_host": {"kind": "exponential", "mean": 60}, "peers_per_host": 4})
    (_, fast), (_, dense) = _both(sc, "psp", {"nic.psp_tx_key_cache_entries": 60})
    _same(fast, dense)
    assert any(0 < kept < near for kept, near in picked)  # some flows near the cache left out
    assert any(kept == near for kept, near in picked)  # and all kept (handed on, not copied)
    assert dense["cache_miss_ratio_max"].max() > 0
