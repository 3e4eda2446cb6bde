"""Weighted max-min fair sharing of capacitated resources (progressive filling).

What it models: flows (a connection, or an aggregate of ``weight``
connections between two hosts) cross resources of finite capacity (a host's
uplink or downlink, a rack's share of the spine, a NIC crypto engine).  Flow
``f`` at rate ``x`` uses ``coefficient * x`` of each resource it crosses, so
one function covers bytes on links and packet-times on engines.  Each flow
gets its weighted max-min fair share: no flow can get more without taking
from a flow whose rate per unit weight is no larger.

Assumption (stated, not derived): TCP flows sharing bottlenecks converge to
weighted max-min fair shares, weight = number of connections in the
aggregate.  This is the standard fluid idealisation of flow-level
simulators; real TCP is only approximately fair (RTT bias, loss-based versus
delay-based congestion control), so per-flow shares are the model's, the
totals on each bottleneck are robust.

Algorithm: progressive filling (water-filling).  A common level ``L`` rises;
every unfrozen flow runs at ``weight * L``; a flow freezes when it reaches
its demand or when a resource it crosses saturates; frozen flows keep their
rate.  Instead of one resource per round this implementation freezes, each
round, everything whose fate is already decided by the current state
(levels of resources only rise as flows freeze, because a flow never
freezes above ``weight *`` the level of any resource it crosses):

* ``level[r] = remaining capacity / sum(coefficient * weight)`` over the
  unfrozen flows of ``r``; a resource whose unfrozen flows' demands all fit
  in its remaining capacity never saturates first and gets level ``inf``;
* a flow whose demand level ``demand / weight`` is <= the lowest level among
  its resources freezes at its demand;
* a resource whose level is within a relative 1e-9 of the lowest level of
  every one of its flows, and whose flows all want more than its level,
  saturates now: its flows freeze at ``weight *`` their lowest level.

The resource of globally lowest level always qualifies (or one of its flows
freezes at demand), so every round makes progress.  Where bottlenecks do
not limit one another, a few rounds settle thousands of them; each round is
a handful of ``np.bincount`` and ``np.minimum.reduceat`` passes over the
triplets of the unfrozen flows, and frozen flows' triplets are dropped.
Where resources are densely coupled (every one shares flows with the
others) and saturate at many distinct levels, rounds settle one level each;
the function then switches to rounds that cost O(resources) plus the
triplets of the flows they freeze (resources indexed once by a sort).
Zero-capacity resources freeze their flows at 0; flows crossing no finite
resource get their demand.

Sources: progressive filling and the bottleneck characterisation of max-min
fairness, D. Bertsekas, R. Gallager, *Data Networks*, 2nd ed., 1992,
section 6.5.2; SimGrid's LMM solver (``src/kernel/lmm/maxmin.cpp``,
P. Velho, A. Legrand et al., "On the validity of flow-level TCP network
models for grid and cloud simulations", ACM TOMACS 2013); the flow-level
simulator flowSim used by m3 (Li et al., "m3: Accurate flow-level
performance estimation using machine learning", SIGCOMM 2024).
"""

from __future__ import annotations

import numpy as np

from pspsim.model.sorting import argsort_stable

RELATIVE_TIE = 1e-9  # resources within this relative distance of the lowest level saturate together


def max_min_rates(
    demand: np.ndarray,
    weight: np.ndarray,
    flow_of: np.ndarray,
    resource_of: np.ndarray,
    coefficient: np.ndarray,
    capacity: np.ndarray,
    *,
    rounds: str = "auto",
) -> np.ndarray:
    """Weighted max-min fair rates by progressive filling.

    ``demand[f] >= 0`` (may be inf), ``weight[f] > 0`` (e.g. the number of
    connections in an aggregate flow); the sparse usage matrix as triplets
    ``(flow_of[k], resource_of[k], coefficient[k] > 0)``: flow ``f`` at rate
    ``x`` uses ``coefficient * x`` of resource ``r``; ``capacity[r] >= 0``
    (may be inf).  Returns ``x[f]`` in the units of ``demand``.

    ``rounds``: ``"local"`` freezes everything decided by the current state
    each round (few rounds when bottlenecks are independent);
    ``"one-level"`` freezes one level per round at O(resources) per round
    (for densely coupled resources saturating at many distinct levels);
    ``"auto"`` starts local and switches when a round freezes under 10% of
    what is left.  All three give the same rates.
    """
    demand = np.asarray(demand, dtype=float)
    weight = np.asarray(weight, dtype=float)
    capacity = np.asarray(capacity, dtype=float)
    flow_of = np.asarray(flow_of, dtype=np.intp)
    resource_of = np.asarray(resource_of, dtype=np.intp)
    coefficient = np.asarray(coefficient, dtype=float)
    _check(demand, weight, flow_of, resource_of, coefficient, capacity)
    if rounds not in ("auto", "local", "one-level"):
        raise ValueError(f"rounds must be 'auto', 'local' or 'one-level', not {rounds!r}")
    n_res = capacity.size

    # A resource whose flows' demands fit never saturates: drop its triplets
    # (capacity inf included).  Group the rest by flow.
    wanted = np.bincount(resource_of, coefficient * demand[flow_of], n_res)
    keep = np.flatnonzero((wanted > capacity)[resource_of])
    fo, ro, co = flow_of[keep], resource_of[keep], coefficient[keep]
    present = np.zeros(n_res, bool)
    present[ro] = True  # renumber the resources that remain 0..n-1
    ro = (np.cumsum(present) - 1)[ro]
    capacity, n_res = capacity[present], int(present.sum())
    if fo.size and (fo[1:] < fo[:-1]).any():
        order = argsort_stable(fo)
        fo, ro, co = fo[order], ro[order], co[order]

    rate = demand.copy()  # flows crossing no finite resource keep their demand
    demand_level = demand / weight
    counts = np.bincount(fo, minlength=demand.size)
    flows = np.flatnonzero(counts)
    counts = counts[flows]
    used = np.zeros(n_res)  # capacity taken by frozen flows
    slow = rounds == "one-level"
    while flows.size:
        if slow:
            _one_level_per_round(rate, demand, weight, fo, ro, co, flows, counts, capacity, used)
            break
        starts = np.cumsum(counts) - counts
        share = np.bincount(ro, co * weight[fo], n_res)  # capacity per unit of level
        wanted = np.bincount(ro, co * demand[fo], n_res)  # capacity used if all were at demand
        level = _level(capacity - used, share, wanted)
        lv = level[ro]
        lowest = np.minimum.reduceat(lv, starts)  # per flow: the lowest level of its resources
        at_demand = demand_level[flows] <= lowest
        blocked = (lv > np.repeat(lowest, counts) * (1.0 + RELATIVE_TIE)) | (demand_level[fo] <= lv)
        tight = (np.bincount(ro, blocked, n_res) == 0) & np.isfinite(level)
        saturated = np.maximum.reduceat(tight[ro], starts) & ~at_demand
        rate[flows[saturated]] = weight[flows[saturated]] * lowest[saturated]
        done = at_demand | saturated
        if not done.any():
            raise RuntimeError("max_min_rates: a round froze no flow")
        done_t = np.repeat(done, counts)
        used += np.bincount(ro[done_t], co[done_t] * rate[fo[done_t]], n_res)
        left = ~done_t
        fo, ro, co = fo[left], ro[left], co[left]
        flows, counts = flows[~done], counts[~done]
        slow = rounds == "auto" and fo.size > 4 * n_res and fo.size > 0.9 * left.size
    return rate


def _level(room: np.ndarray, share: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Level at which each resource saturates; inf if its flows' demands fit in its room."""
    room = np.maximum(room, 0.0)
    over = wanted > room
    level = np.full(room.size, np.inf)
    level[over] = room[over] / share[over]
    return level


def _segments(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated index ranges ``starts[i] : starts[i] + lengths[i]``."""
    ends = np.cumsum(lengths)
    return np.repeat(starts - ends + lengths, lengths) + np.arange(ends[-1] if ends.size else 0)


def _one_level_per_round(rate, demand, weight, fo, ro, co, flows, counts, capacity, used) -> None:
    """Progressive filling one level per round, at O(resources) per round.

    For densely coupled instances (every resource shares flows with every
    other, so few resources are tight locally): resources and flows are
    indexed once, and each round updates only the resources of the flows it
    freezes.  Writes the rates of ``flows`` into ``rate``.
    """
    n_res = capacity.size
    flow_start = np.zeros(demand.size, np.intp)
    flow_start[flows] = np.cumsum(counts) - counts
    flow_len = np.zeros(demand.size, np.intp)
    flow_len[flows] = counts
    by_res = argsort_stable(ro)
    res_len = np.bincount(ro, minlength=n_res)
    res_start = np.cumsum(res_len) - res_len
    open_flows = res_len.copy()
    infinite = np.isinf(demand)
    cd = np.where(infinite[fo], 0.0, co * demand[fo])
    share = np.bincount(ro, co * weight[fo], n_res)
    wanted = np.bincount(ro, cd, n_res)  # finite part of the demand
    wanting = np.bincount(ro, infinite[fo], n_res)  # flows of infinite demand
    frozen = np.ones(demand.size, bool)
    slot = np.empty(demand.size, np.intp)
    frozen[flows] = False
    demand_level = demand[flows] / weight[flows]
    order = argsort_stable(demand_level)
    by_demand, demand_level = flows[order], demand_level[order]
    next_demand, left = 0, flows.size
    level = _level(capacity - used, share, np.where(wanting > 0, np.inf, wanted))
    while left:
        lowest = level.min()
        end = np.searchsorted(demand_level, lowest, side="right")
        if end > next_demand:  # flows that reach their demand before any resource saturates
            new = by_demand[next_demand:end]
            new = new[~frozen[new]]
            next_demand = end
            rate[new] = demand[new]
        else:  # the tightest resources saturate
            tight = np.flatnonzero(level <= lowest * (1.0 + RELATIVE_TIE))
            new = fo[by_res[_segments(res_start[tight], res_len[tight])]]
            new = new[~frozen[new]]
            slot[new] = np.arange(new.size)
            new = new[slot[new] == np.arange(new.size)]  # each flow once
            if not new.size:
                raise RuntimeError("max_min_rates: a round froze no flow")
            rate[new] = weight[new] * lowest
        frozen[new] = True
        left -= new.size
        t = _segments(flow_start[new], flow_len[new])
        r = ro[t]
        touched = np.flatnonzero(np.bincount(r, minlength=n_res))
        used += np.bincount(r, co[t] * rate[fo[t]], n_res)
        share -= np.bincount(r, co[t] * weight[fo[t]], n_res)
        wanted -= np.bincount(r, cd[t], n_res)
        wanting -= np.bincount(r, infinite[fo[t]], n_res).astype(wanting.dtype)
        open_flows -= np.bincount(r, minlength=n_res)
        still = np.where(open_flows[touched] > 0, np.where(wanting[touched] > 0, np.inf, wanted[touched]), -1.0)
        level[touched] = _level(capacity[touched] - used[touched], share[touched], still)


def _check(demand, weight, flow_of, resource_of, coefficient, capacity) -> None:
    if demand.ndim != 1 or weight.shape != demand.shape:
        raise ValueError("demand and weight must be 1-d arrays of the same length")
    if not (flow_of.shape == resource_of.shape == coefficient.shape) or flow_of.ndim != 1:
        raise ValueError("flow_of, resource_of and coefficient must be 1-d arrays of the same length")
    if np.isnan(demand).any() or (demand < 0).any():
        raise ValueError("demand must be >= 0 (inf allowed)")
    if not (np.isfinite(weight) & (weight > 0)).all():
        raise ValueError("weight must be finite and > 0")
    if np.isnan(capacity).any() or (capacity < 0).any():
        raise ValueError("capacity must be >= 0 (inf allowed)")
    if not (np.isfinite(coefficient) & (coefficient > 0)).all():
        raise ValueError("coefficient must be finite and > 0")
    if flow_of.size and (flow_of.min() < 0 or flow_of.max() >= demand.size):
        raise ValueError("flow_of out of range")
    if resource_of.size and (resource_of.min() < 0 or resource_of.max() >= capacity.size):
        raise ValueError("resource_of out of range")
