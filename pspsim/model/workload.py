"""The workload: every connection of a run as columns (no object per connection).

Each host is a client of a number of connections (drawn per host from
``connections_per_host``) spread over a fixed set of server peers chosen at
random; how many peers (the fan-out) is drawn per host from
``peers_per_host``, rounded and kept between 1 and the other hosts.

The fleet starts in steady state.  Connections alive at time 0 have the
stationary age and residual life of exponential lifetimes (mean L) under
Poisson arrivals: age ~ Exp(L) and residual ~ Exp(L), independent; their
``start`` is minus their age, so every age-driven event (TLS KeyUpdates,
CHILD_SA rekeys) falls where a long-running fleet would have it.  New
connections arrive as a Poisson process at the rate that keeps each host's
mean count (count / mean lifetime).  Each connection carries messages of one size at
one rate, both drawn from the scenario's distributions: ``rpc`` traffic is
a request of that size and a response ``response_ratio`` times as large;
``bulk`` traffic flows client to server only.

Everything is drawn from the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pspsim.model.sorting import argsort_stable
from pspsim.scenario import Distribution, Scenario


def draw(dist: Distribution, rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` positive samples with mean ``dist.mean``."""
    if dist.kind == "fixed":
        return np.full(n, dist.mean)
    if dist.kind == "exponential":
        return rng.exponential(dist.mean, n)
    if dist.kind == "lognormal":  # parametrised by its mean
        return rng.lognormal(np.log(dist.mean) - dist.sigma**2 / 2, dist.sigma, n)
    scale = dist.mean * (dist.alpha - 1) / dist.alpha  # pareto with this mean
    return scale * (1 + rng.pareto(dist.alpha, n))


@dataclass(frozen=True)
class Workload:
    """Connection table; row i is connection i.

    First the ``running`` connections, open at time 0 (negative ``start``), in the order they are
    drawn: by client host, so the rows of a host, and of a host pair, lie together (window 0 sets
    them all up, and walks the fleet's per-connection arrays in that order rather than at random);
    then the arrivals, by start time.  So ``start`` goes up over every time >= 0:
    :meth:`started_before` finds a window's arrivals by one binary search."""

    hosts: int
    client: np.ndarray  # int32
    server: np.ndarray  # int32
    start: np.ndarray  # float64 seconds; negative for connections already open at time 0
    end: np.ndarray  # float64 seconds
    msg_bytes: np.ndarray  # float32, request size
    msgs_per_s: np.ndarray  # float32
    response_ratio: float
    running: int = 0  # connections 0..running-1 were already open at time 0 (no set-up cost in the run)

    def __len__(self) -> int:
        return len(self.client)

    def started_before(self, t: float, inclusive: bool = False) -> int:
        """How many connections start before ``t`` (at or before it if ``inclusive``), for ``t >= 0``:
        they are rows ``0..k-1`` (the running ones, then the arrivals up to ``t``)."""
        if t < 0:
            raise ValueError("started_before counts from time 0 on: the running connections are not in start order")
        rest = self.start[self.running:]
        return self.running + int(np.searchsorted(rest, t, side="right" if inclusive else "left"))

    @property
    def request_bytes_per_s(self) -> np.ndarray:
        return self.msg_bytes * self.msgs_per_s

    @property
    def response_bytes_per_s(self) -> np.ndarray:
        return self.request_bytes_per_s * self.response_ratio


def generate_workload(scenario: Scenario, rng: np.random.Generator) -> Workload:
    fleet, w = scenario.fleet, scenario.workload
    hosts, duration, life = fleet.hosts, scenario.run.duration, w.connection_lifetime
    fanout = np.clip(np.rint(draw(w.peers_per_host, rng, hosts)), 1, hosts - 1).astype(np.int64)
    peer_start = np.cumsum(fanout) - fanout
    peers = np.empty(int(fanout.sum()), dtype=np.int32)
    for h in range(hosts):  # distinct peers, never the host itself
        choice = rng.choice(hosts - 1, size=fanout[h], replace=False)
        peers[peer_start[h] : peer_start[h] + fanout[h]] = choice + (choice >= h)
    counts = np.maximum(0, np.rint(draw(w.connections_per_host, rng, hosts))).astype(np.int64)

    initial_client = np.repeat(np.arange(hosts, dtype=np.int32), counts)
    if life > 0:
        arrivals = rng.poisson(counts * duration / life)
        arrival_client = np.repeat(np.arange(hosts, dtype=np.int32), arrivals)
        arrival_start = rng.uniform(0, duration, len(arrival_client))
    else:
        arrival_client, arrival_start = np.empty(0, np.int32), np.empty(0)
    client = np.concatenate([initial_client, arrival_client])
    n = len(client)
    lifetime = rng.exponential(life, n) if life > 0 else np.full(n, np.inf)
    # The running ones: age ~ Exp(L), independent of the residual life drawn above.  Without churn
    # (lifetime 0: connections never end) ages are uniform over 30 days, so rekey phases are uniform.
    initial_start = -(rng.exponential(life, len(initial_client)) if life > 0
                      else rng.uniform(0, 30 * 86400.0, len(initial_client)))
    start = np.concatenate([initial_start, arrival_start])
    end = start + lifetime
    end[: len(initial_client)] = lifetime[: len(initial_client)]  # residual life from time 0
    server = peers[peer_start[client] + (rng.uniform(0, 1, n) * fanout[client]).astype(np.int64)]
    running = len(initial_client)  # drawn by client host: kept so (see Workload)
    order = np.concatenate([np.arange(running), running + argsort_stable(arrival_start)])
    return _read_only(Workload(
        hosts=hosts,
        client=client[order],
        server=server[order].astype(np.int32),
        start=start[order],
        end=end[order],
        msg_bytes=draw(w.message_bytes, rng, n).astype(np.float32)[order],
        msgs_per_s=draw(w.messages_per_second, rng, n).astype(np.float32)[order],
        response_ratio=0.0 if w.traffic == "bulk" else w.response_ratio,
        running=len(initial_client),
    ))


def _read_only(w: Workload) -> Workload:
    """``w`` with its arrays frozen: runs share a workload and must not change it."""
    for value in vars(w).values():
        if isinstance(value, np.ndarray):
            value.setflags(write=False)
    return w
