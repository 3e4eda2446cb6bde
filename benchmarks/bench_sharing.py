"""Max-min fair sharing speed: 10^6 flows over 10^5 resources.

Each flow goes from one host to another and crosses four resources: the
sender's uplink and NIC engine, the receiver's downlink and NIC engine
(25,000 hosts).  Capacities are drawn so that about one resource in ten
saturates, at thousands of distinct levels, but most bottlenecks do not
limit one another (the typical case).  Baseline: one ``np.bincount`` of the
flows' rates over the triplets, the least work any sharing computation
does; the ratio is ``BUDGET_PASSES`` baselines over the call's time (>= 1
means the call costs at most that many passes).  Also reported, not
targeted: a densely coupled instance (1,000 resources, all over-subscribed,
hundreds of distinct levels) in seconds.
"""

from __future__ import annotations

import time

import numpy as np

from pspsim.model.sharing import max_min_rates

BUDGET_PASSES = 20
TARGET = 1.0


def instance(flows: int, hosts: int, seed: int, load: float):
    rng = np.random.default_rng(seed)
    src = rng.integers(0, hosts, flows)
    dst = (src + 1 + rng.integers(0, hosts - 1, flows)) % hosts
    flow_of = np.repeat(np.arange(flows), 4)
    resource_of = np.stack([src, hosts + dst, 2 * hosts + src, 3 * hosts + dst], axis=1).ravel()
    coefficient = np.ones(4 * flows)
    demand = rng.exponential(1.0, flows)
    weight = rng.integers(1, 5, flows).astype(float)
    per_resource = flows / hosts  # mean demand per resource (demands have mean 1)
    capacity = rng.uniform(0.5, 1.5, 4 * hosts) * per_resource / load
    return demand, weight, flow_of, resource_of, coefficient, capacity


def _best(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def run() -> dict:
    inst = instance(1_000_000, 25_000, seed=1, load=0.6)
    demand, weight, flow_of, resource_of, coefficient, capacity = inst
    rates = max_min_rates(*inst)
    use = np.bincount(resource_of, coefficient * rates[flow_of], capacity.size)
    checks_ok = float((use <= capacity * (1 + 1e-9)).all() and (rates <= demand).all())
    call = _best(lambda: max_min_rates(*inst))
    baseline = _best(lambda: np.bincount(resource_of, coefficient * rates[flow_of], capacity.size))
    dense = instance(1_000_000, 250, seed=1, load=2.0)
    dense_s = _best(lambda: max_min_rates(*dense), repeat=1)
    return {
        "ratio": BUDGET_PASSES * baseline / call,
        "target": TARGET,
        "checks_ok": checks_ok,
        "call_s_1e6_flows_1e5_resources": call,
        "saturated_resources": float((use >= capacity * (1 - 1e-9)).sum()),
        "dense_call_s_1e6_flows_1e3_resources": dense_s,
    }


if __name__ == "__main__":
    print(run())
