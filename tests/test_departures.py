"""Departures: each connection leaves in the first window that ends after its end, in order of its end
(ties in connection order), as the simulation's end calendar files them; none after the run."""

import dataclasses

import numpy as np

from pspsim.costs import load_parameter_set
from pspsim.model.simulation import FleetSimulation
from pspsim.model.streams import RandomStreams
from pspsim.model.variants import make_variant
from pspsim.model.workload import generate_workload
from tests.sim_helpers import scenario


def test_departures_follow_window_ends_exactly():
    sc = scenario(run={"duration": "10.5min"}, workload={"connection_lifetime": "3min"})  # last window cut short
    costs = load_parameter_set().costs()
    streams = RandomStreams.from_sequence(np.random.SeedSequence(8))
    w = generate_workload(sc, streams.workload)
    end = w.end.copy()
    rng = np.random.default_rng(1)
    edges = rng.integers(1, 12, len(end)) * 60.0  # ends on window edges, a float below them, and ties
    pick = rng.uniform(size=len(end))
    end = np.where(pick < 0.2, edges, np.where(pick < 0.4, np.nextafter(edges, -np.inf), end))
    end[rng.uniform(size=len(end)) < 0.1] = 390.0  # many ties inside one window
    end[-3:] = [630.0, np.nextafter(630.0, -np.inf), np.inf]  # at the run's end, just before, never
    end = np.maximum(end, np.maximum(w.start, 0.0))  # a connection cannot end before it starts
    end.setflags(write=False)  # as the workload's arrays are
    w = dataclasses.replace(w, end=end)
    sim = FleetSimulation(sc, make_variant("plaintext", costs, sc.keys), w, costs, streams)
    seen = []
    window = sim.control.window

    def record(index, t0, t1, arrivals, departures, out):
        seen.append(np.array(departures))
        window(index, t0, t1, arrivals, departures, out)

    sim.control.window = record
    sim.run()
    ends = np.array(sim.window_ends)
    assert ends[-1] == 630.0 and len(ends) == 11
    first_after = np.searchsorted(ends, end, side="right")  # the first window ending after each end
    for j, got in enumerate(seen):
        mine = np.flatnonzero(first_after == j)
        want = mine[np.lexsort((mine, end[mine]))]  # by end, ties by connection
        assert got.tolist() == want.tolist(), j
    assert sum(map(len, seen)) == int((end < 630.0).sum()) > 100
    assert any(len(np.unique(end[got])) < len(got) for got in seen)  # ties were met
