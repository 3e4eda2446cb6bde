"""Tiny scenarios for the simulator tests."""

from __future__ import annotations

import numpy as np

from pspsim.costs import load_parameter_set
from pspsim.model.simulation import FleetSimulation
from pspsim.model.streams import RandomStreams
from pspsim.model.variants import make_variant
from pspsim.model.workload import generate_workload
from pspsim.scenario import Scenario, scenario_from_dict


def scenario(**sections) -> Scenario:
    base = {
        "run": {"name": "t", "seed": 3, "duration": "30min", "window": "60s"},
        "fleet": {"racks": 2, "hosts_per_rack": 4},
        "workload": {"connections_per_host": {"kind": "fixed", "mean": 50}, "peers_per_host": 3,
                     "connection_lifetime": "10min"},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    return scenario_from_dict(base)


def simulate(sc: Scenario, variant: str, overrides: dict | None = None, seed: int = 5):
    params = load_parameter_set().with_overrides(overrides or {})
    costs = params.costs()
    streams = RandomStreams.from_sequence(np.random.SeedSequence(seed))
    workload = generate_workload(sc, streams.workload)
    sim = FleetSimulation(sc, make_variant(variant, costs, sc.keys), workload, costs, streams)
    return sim, sim.run(), workload


def summarize(sc: Scenario, variant: str, overrides: dict | None = None, replication: int = 0) -> dict:
    """The summary row ``pspsim run`` writes for one variant (common random numbers per replication)."""
    from pspsim.study.runner import resolve_parameters, run_one

    params = resolve_parameters(sc).with_overrides(overrides or {})
    return run_one(sc, params, replication, variant).summary


def tls_rekeys_against_closed_form(life: float, interval: float, per_host: int, racks: int,
                                   variant: str) -> tuple[float, float]:
    """(simulated, closed form) TLS KeyUpdates per second over 6 h: in steady state with
    exponential lifetimes (mean L) and KeyUpdates at ages k T, the rate is
    (N / L) * sum_k exp(-k T / L) for N live connections."""
    import math

    sc = scenario(fleet={"racks": racks, "hosts_per_rack": 8 if racks > 1 else 4},
                  run={"duration": "6h", "window": "10min"},
                  workload={"connection_lifetime": life, "connections_per_host": {"kind": "fixed", "mean": per_host},
                            "messages_per_second": {"kind": "fixed", "mean": 1}},
                  keys={"tls_rekey_interval": interval, "tls_rekey_bytes": 1e18})
    n = sc.fleet.hosts * per_host
    expected = n / life * sum(math.exp(-k * interval / life) for k in range(1, 500))
    return summarize(sc, variant)["tls_key_updates_per_s"], expected
