"""The workload's row order: the connections open at time 0 first, by client host, then the arrivals
by start time; and how a window's arrivals are found in it."""

import dataclasses

import numpy as np
import pytest

from pspsim.costs import load_parameter_set
from pspsim.model.simulation import FleetSimulation
from pspsim.model.streams import RandomStreams
from pspsim.model.variants import make_variant
from pspsim.model.workload import generate_workload
from pspsim.scenario import scenario_from_dict


def _workload(seed: int = 5, lifetime: str = "20min"):
    sc = scenario_from_dict({
        "run": {"duration": "2h", "seed": seed},
        "fleet": {"racks": 3, "hosts_per_rack": 7},
        "workload": {"connections_per_host": {"kind": "exponential", "mean": 40}, "peers_per_host": 5,
                     "connection_lifetime": lifetime}})
    return generate_workload(sc, np.random.default_rng(seed))


@pytest.mark.parametrize("lifetime", ["20min", "0s"])
def test_running_connections_come_first_by_client_then_arrivals_by_start(lifetime):
    w = _workload(lifetime=lifetime)
    k = w.running
    assert 0 < k <= len(w)
    assert (w.start[:k] < 0).all() and (w.start[k:] >= 0).all()
    assert (np.diff(w.client[:k]) >= 0).all()  # a host's rows together
    assert (np.diff(w.start[k:]) >= 0).all()
    assert (np.diff(w.start[:k]) < 0).any()  # not in start order: the order is the client's
    if lifetime == "0s":
        assert k == len(w)  # no churn: no arrivals


def test_started_before_counts_the_connections_started_by_then():
    w = _workload()
    for t in [0.0, 1e-9, 59.999, 60.0, float(w.start[w.running + 10]), 3600.0, 7200.0, 1e12]:
        assert w.started_before(t) == np.count_nonzero(w.start < t)
        assert w.started_before(t, inclusive=True) == np.count_nonzero(w.start <= t)
        # they are the first rows
        assert (w.start[: w.started_before(t)] < t).all()
    with pytest.raises(ValueError, match="from time 0"):
        w.started_before(-1.0)


@pytest.mark.parametrize("variant, granularity, capacity", [
    ("psp", "connection", 400), ("ktls-offload", "connection", 400), ("ipsec-packet-offload", "connection", 400),
    ("ipsec-packet-offload", "host-pair", 16)])
def test_full_tables_at_time_0_take_connections_by_age_not_by_row(variant, granularity, capacity):
    """NIC tables too small for the connections (or host-pair SAs) open at time 0: which of them get a
    key, context or SA depends neither on the order of their rows nor on the hosts' numbers (they are
    taken oldest first), so a workload whose running rows are shuffled and whose hosts are renumbered
    has as many fall back.  Taken in row order (client host by client host), the first hosts'
    connections filled their peers' tables and fewer fitted (per-connection SAs: 4,075 fall back
    against 3,515); host-pair SAs taken by pair id, likewise (49 against 43)."""
    from tests.sim_helpers import scenario

    sc = scenario(run={"duration": "60s", "window": "60s"}, fleet={"racks": 2, "hosts_per_rack": 8},
                  workload={"connections_per_host": {"kind": "fixed", "mean": 300}, "peers_per_host": 8,
                            "connection_lifetime": "30min"},
                  keys={"ipsec_sa_granularity": granularity, "ipsec_hw_offload": "auto",
                        "psp_on_full": "stay-tls", "psp_rotation_period": "1000h"})
    tables = ("psp_tx_key_capacity", "ipsec_sa_capacity", "ktls_tx_context_capacity", "ktls_rx_context_capacity")
    params = load_parameter_set().with_overrides({f"nic.{table}": capacity for table in tables})
    costs = params.costs()
    streams = RandomStreams.from_sequence(np.random.SeedSequence(7))
    w = generate_workload(sc, streams.workload)
    k = w.running
    rows = np.concatenate([np.random.default_rng(1).permutation(k), np.arange(k, len(w))])
    shuffled = dataclasses.replace(w, **{f: getattr(w, f)[rows] for f in
                                         ("client", "server", "start", "end", "msg_bytes", "msgs_per_s")})
    number = np.random.default_rng(2).permutation(w.hosts).astype(np.int32)  # host h is called number[h]
    shuffled = dataclasses.replace(shuffled, client=number[shuffled.client], server=number[shuffled.server])
    fell_back = []
    for table in (w, shuffled):
        sim = FleetSimulation(sc, make_variant(variant, costs, sc.keys), table, costs,
                              RandomStreams.from_sequence(np.random.SeedSequence(6)))
        totals = sim.run().totals
        fell_back.append(totals["offload_fallbacks"] + totals["offload_failures"])
    assert fell_back[0] > 20 * (capacity == 16) + 1000 * (capacity > 16)  # the tables overflow
    assert fell_back[0] == fell_back[1]


def test_each_hosts_connections_are_listed_in_start_order():
    """``conns_by_host``: a host's connections as client, then as server, each in start order, the ones
    open at time 0 by age though their rows are by client host (a rotation re-keys them in this order,
    and connections re-keyed at one time queue their commands in it)."""
    from pspsim.model.control import conns_by_host

    w = _workload()
    index = conns_by_host(w)
    for host in range(w.hosts):
        mine = index(host)
        as_client = np.flatnonzero(w.client == host)
        as_server = np.flatnonzero(w.server == host)
        expected = np.concatenate([as_client[np.argsort(w.start[as_client], kind="stable")],
                                   as_server[np.argsort(w.start[as_server], kind="stable")]])
        np.testing.assert_array_equal(mine, expected)
