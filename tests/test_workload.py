"""The workload's row order: the connections open at time 0 first, by client host, then the arrivals
by start time; and how a window's arrivals are found in it."""

import numpy as np
import pytest

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
