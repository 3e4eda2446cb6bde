"""Simulator speed on fleet-1k.

1. Control plane: simulated events (connection set-ups and teardowns, NIC
   commands, rekeys, key rotations, windows) per wall-second of one PSP run
   of fleet-1k over its first 4 hours, against a bare simpy loop of the same
   number of timeouts, in the same process.  Target: ratio >= 0.5 (batching
   lets pspsim exceed 1).
2. The whole of fleet-1k, every variant, 24 simulated hours, in a child
   process: wall time and peak memory against the budget (120 s, 4 GiB).
   Both are reported as a fraction of the budget (<= 1 passes).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import simpy

ROOT = Path(__file__).resolve().parents[1]
FLEET = ROOT / "experiments" / "fleet-1k.toml"
TARGET = 0.5
WALL_BUDGET_S, MEMORY_BUDGET_GIB = 120.0, 4.0


def _control_plane() -> tuple[float, int]:
    from pspsim.costs import load_parameter_set
    from pspsim.model.simulation import FleetSimulation
    from pspsim.model.streams import RandomStreams
    from pspsim.model.variants import make_variant
    from pspsim.model.workload import generate_workload
    from pspsim.scenario import load_scenario, scenario_from_dict

    data = load_scenario(FLEET).model_dump()
    data["run"]["duration"] = 4 * 3600.0
    sc = scenario_from_dict(data)
    costs = load_parameter_set().costs()
    workload = generate_workload(sc, np.random.default_rng(1))
    start = time.perf_counter()
    sim = FleetSimulation(sc, make_variant("psp", costs, sc.keys), workload, costs,
                          RandomStreams.from_sequence(np.random.SeedSequence(2)))
    run = sim.run()
    wall = time.perf_counter() - start
    ended = int((workload.end < sc.run.duration).sum())
    from pspsim.model.control import REKEY_KINDS

    events = len(workload) + ended + int(run.totals["nic_commands"] + run.totals["key_rotations"]
                                         + sum(run.totals[k] for k in REKEY_KINDS))
    return events / wall, events + len(run.rows)


def _bare_simpy(n: int) -> float:
    env = simpy.Environment()

    def loop(env: simpy.Environment):
        for _ in range(n):
            yield env.timeout(1)

    env.process(loop(env))
    start = time.perf_counter()
    env.run()
    return n / (time.perf_counter() - start)


def _fleet_run(scenario: Path = FLEET) -> tuple[float, float]:
    """Wall time and peak memory of ``pspsim run`` on ``scenario``: the peak of that child and its
    workers (``wait4``'s usage of this child, not ``RUSAGE_CHILDREN``, which would also hold the
    benchmarks run before it in this process)."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        args = [sys.executable, "-m", "pspsim", "run", "-q", "--no-figure", str(scenario),
                "-o", os.path.join(tmp, "out")]
        child = subprocess.Popen(args, cwd=ROOT)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
    if child.returncode:
        raise subprocess.CalledProcessError(child.returncode, args)
    return wall, usage.ru_maxrss / 2**20


def run() -> dict[str, float]:
    ours, events = _control_plane()
    bare = _bare_simpy(events)
    wall, peak = _fleet_run()
    return {
        "ratio": ours / bare,
        "target": TARGET,
        "events": float(events),
        "control_events_per_s": ours,
        "bare_simpy_events_per_s": bare,
        "fleet1k_wall_s": wall,
        "fleet1k_peak_gib": peak,
        "fleet1k_wall_budget_fraction": wall / WALL_BUDGET_S,
        "fleet1k_memory_budget_fraction": peak / MEMORY_BUDGET_GIB,
        "checks_ok": float(wall <= WALL_BUDGET_S and peak <= MEMORY_BUDGET_GIB),
    }


if __name__ == "__main__":
    for key, value in run().items():
        print(f"{key}: {value:,.3f}")
