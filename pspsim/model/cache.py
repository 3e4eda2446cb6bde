"""NIC context-cache miss ratio under skewed per-key traffic (Che's approximation for LRU).

What it models: a NIC keeps its key contexts (PSP TX keys, IPsec SAs, kTLS
contexts) in a table in host or NIC memory and caches ``C`` of them on chip.
A lookup of a key that is not cached is a miss (a fetch over PCIe).  Keys
carry very different traffic, so the miss ratio is not the uniform
``1 - C/N``: busy keys stay cached, idle ones do not.

Assumptions:

* The cache is LRU (the replacement policy of ConnectX context caches is not
  published; LRU is the standard stand-in).
* Lookups follow the independent reference model: each key is looked up as
  a Poisson stream of its own rate, independent of the others.
* One lookup per TSO/GSO burst, not per packet.  The stack hands the NIC
  one send descriptor (a WQE on mlx5) per GSO skb of up to ``tso_max_bytes``
  (64 KiB by default, Linux ``GSO_LEGACY_MAX_SIZE``; BIG TCP raises it), and
  the offload names its key once per skb (mlx5: ``keyid`` in
  ``struct mlx5e_accel_tx_psp_state``, en_accel/psp_rxtx.h), so the NIC
  fetches the context once per descriptor (assumed).  On receive, the
  packets of one burst arrive back to back, so the first one brings the key
  in and the rest hit (assumed).  Interleaving with other flows inside a burst and
  pure ACKs (which carry no payload and are their own sends) are not
  counted: add ACK lookups to the rates if they matter.
* Warm cache: a group whose active keys all fit misses nothing (compulsory
  misses after a key is installed are ignored).  Keys of zero rate occupy
  nothing.

Che's approximation: an LRU cache of ``C`` entries behaves as if each key
stays for a fixed characteristic time ``T`` after its last lookup, with
``T`` solving ``sum_i (1 - exp(-rate_i T)) = C``; key ``i`` then misses with
probability ``exp(-rate_i T)``, and the request-weighted miss ratio is
``sum_i rate_i exp(-rate_i T) / sum_i rate_i``.  It is exact for uniform
popularity; against a simulated LRU fed by 200,000 independent references
over 2,000 Zipf-like keys it is within 0.1 percentage point
(tests/test_cache.py).  ``T`` is found for every group (NIC) at once by
Newton steps on ``log T`` kept inside a bisection bracket, each step two
sums per NIC (``bincount`` over the keys, in their order: no sort).

Sources: H. Che, Y. Tung, Z. Wang, "Hierarchical Web caching systems:
modeling, design and experimental results", IEEE JSAC 20(7), 2002;
C. Fricker, P. Robert, J. Roberts, "A versatile and accurate approximation
for LRU cache performance", ITC 24, 2012 (why it is accurate, and its use
for Poisson request streams).
"""

from __future__ import annotations

import numpy as np

try:  # the compiled passes (setup.py builds them); the numpy expressions below give the same bytes
    from pspsim.model import _che
except ImportError:  # pragma: no cover - the compiled module is optional
    _che = None
if not all(hasattr(_che, f) for f in ("scaled", "occupancy_and_slope", "weighted_misses", "group_min",
                                      "keys_and_lookups")):  # pragma: no cover - a build older than this source
    _che = None

TSO_MAX_BYTES = 65536  # Linux GSO_LEGACY_MAX_SIZE: largest TSO/GSO burst without BIG TCP
_MAX_STEPS = 200
_LOG_TOLERANCE = 1e-10  # on log T; the miss ratio moves by at most 1/e times this


def lru_miss_ratio(
    rate: np.ndarray,
    multiplicity: np.ndarray,
    group: np.ndarray,
    cache_size: np.ndarray,
    groups: int,
    log_t: np.ndarray | None = None,
) -> np.ndarray:
    """Per group (a NIC), the request-weighted miss ratio of an LRU cache.

    The cache of group ``g`` holds ``cache_size[g]`` entries; keys are
    looked up at ``rate[i]`` lookups/s each, row ``i`` standing for
    ``multiplicity[i]`` identical keys of group ``group[i]``.  Che's
    approximation (see the module docstring).  Groups whose active keys fit
    (``sum m_i <= C_g``) miss 0; a group without lookups reports 0 (it has
    no misses); a cache of size 0 misses every lookup.

    ``log_t`` (optional, length ``groups``): each group's ``log T`` from an earlier solve, used
    as the first Newton iterate when it lies in the group's bracket (NaN: none), and updated
    with this solve's roots.  Between windows that differ by a few connections this cuts the
    steps from about six to one or two; the root is the same to the tolerance
    (``_LOG_TOLERANCE`` on ``log T``).
    """
    rate = np.asarray(rate, dtype=float)
    multiplicity = np.asarray(multiplicity, dtype=float)
    group = np.asarray(group, dtype=np.intp)
    cache_size = np.broadcast_to(np.asarray(cache_size, dtype=float), (groups,))
    smallest = _check(rate, multiplicity, group, cache_size, groups)
    if smallest <= 0:  # keys without lookups (or without multiplicity) take no cache room
        active = (rate > 0) & (multiplicity > 0)
        rate, multiplicity, group = rate[active], multiplicity[active], group[active]
    if _che is not None:
        rate, multiplicity = np.ascontiguousarray(rate), np.ascontiguousarray(multiplicity)
        group = np.ascontiguousarray(group, np.int64)
        keys, lookups = np.empty(groups), np.empty(groups)
        _che.keys_and_lookups(multiplicity, rate, group, keys, lookups)
    else:
        keys = np.bincount(group, multiplicity, groups)
        lookups = np.bincount(group, multiplicity * rate, groups)
    miss = np.zeros(groups)
    spill = keys > cache_size
    miss[spill & (cache_size <= 0)] = 1.0
    solve = spill & (cache_size > 0)
    if not solve.any():
        return miss
    if solve.all():  # every group (kTLS offload: every NIC spills)
        r, m, local = rate, multiplicity, group
    else:
        rows = solve[group]
        r, m = rate[rows], multiplicity[rows]
        local = (np.cumsum(solve) - 1)[group[rows]]
    c, n, total = cache_size[solve], keys[solve], lookups[solve]
    steps = _Steps(r, m, local, c.size)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        # Bracket on u = log T: occupancy(T) <= T * sum(m r) gives the low end,
        # occupancy(T) >= n (1 - exp(-r_min T)) the high end.
        lo = np.log(c) - np.log(total)
        hi = np.maximum(np.log(-np.log1p(-c / n)) - np.log(steps.slowest()), lo)
        u = 0.5 * (lo + hi)
        if log_t is not None:
            guess = log_t[solve]
            inside = (guess >= lo) & (guess <= hi)  # False for NaN
            u = np.where(inside, guess, u)
        done = np.zeros(c.size, bool)
        for _ in range(_MAX_STEPS):
            occupancy, slope = steps.occupancy(u)
            excess = occupancy - c
            high = excess > 0
            hi = np.where(high, u, hi)
            lo = np.where(high, lo, u)
            newton = u - excess / slope
            step = np.where((newton >= lo) & (newton <= hi), newton, 0.5 * (lo + hi))
            done |= (np.abs(step - u) < _LOG_TOLERANCE) | (hi - lo < _LOG_TOLERANCE)
            u = np.where(done, u, step)
            if done.all():
                break
        if log_t is not None:
            log_t[solve] = u
        miss[solve] = np.minimum(steps.misses(u) / total, 1.0)  # a ratio, despite rounding
    return miss


class _Steps:
    """The per-key passes of a solve over keys ``r`` (rates), ``m`` (multiplicities) of groups
    ``local`` (``groups`` of them): compiled (:mod:`pspsim.model._che`) or numpy, the same bytes."""

    def __init__(self, r: np.ndarray, m: np.ndarray, local: np.ndarray, groups: int) -> None:
        self.r, self.m, self.local, self.groups = r, m, local, groups
        self.fast = _che is not None
        if self.fast:
            self.r, self.m = np.ascontiguousarray(r, np.float64), np.ascontiguousarray(m, np.float64)
            self.local = np.ascontiguousarray(local, np.int64)
            self.rt, self.neg = np.empty(len(r)), np.empty(len(r))

    def per_group(self, x: np.ndarray) -> np.ndarray:  # sums by scatter-add in key order: no sort
        return np.bincount(self.local, x, self.groups)

    def slowest(self) -> np.ndarray:
        """Each group's smallest rate."""
        out = np.full(self.groups, np.inf)
        if self.fast:
            _che.group_min(self.r, self.local, out)
        else:
            np.minimum.at(out, self.local, self.r)
        return out

    def occupancy(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per group at ``T = exp(u)``: the expected keys cached, and its derivative in ``u``."""
        r, m, local = self.r, self.m, self.local
        if self.fast:
            occupancy, slope = np.empty(self.groups), np.empty(self.groups)
            _che.scaled(r, np.exp(u), local, 1.0, self.rt, self.neg)
            np.expm1(self.neg, out=self.neg)
            _che.occupancy_and_slope(m, self.rt, self.neg, local, occupancy, slope)
            return occupancy, slope
        rt = r * np.exp(u)[local]
        held = -np.expm1(-rt)  # each key's chance of being in the cache
        return self.per_group(m * held), self.per_group(m * rt * (1.0 - held))  # slope: d occupancy / d log T

    def misses(self, u: np.ndarray) -> np.ndarray:
        """Per group at ``T = exp(u)``: lookups per second that miss."""
        r, m, local = self.r, self.m, self.local
        if self.fast:
            out = np.empty(self.groups)
            _che.scaled(r, np.exp(u), local, -1.0, self.rt, self.neg)
            np.exp(self.neg, out=self.neg)
            _che.weighted_misses(m, r, self.neg, local, out)
            return out
        t = np.exp(u)[local]
        return self.per_group(m * r * np.exp(-r * t))


def lookups_per_s(messages_per_s, message_bytes, tso_max_bytes: float = TSO_MAX_BYTES) -> np.ndarray:
    """Key lookups per second in one direction: one per TSO/GSO burst.

    A message of ``message_bytes`` leaves as ``ceil(message_bytes /
    tso_max_bytes)`` bursts, each one descriptor and one key lookup.
    """
    bursts = np.ceil(np.asarray(message_bytes, dtype=float) / tso_max_bytes)
    return np.asarray(messages_per_s, dtype=float) * bursts


def _check(rate, multiplicity, group, cache_size, groups) -> float:
    """Refuses bad input; returns the smallest rate or multiplicity (inf if none).  Two reductions
    an array, no temporaries: a NaN makes ``min`` NaN, which fails ``>= 0``."""
    if not (rate.ndim == 1 and rate.shape == multiplicity.shape == group.shape):
        raise ValueError("rate, multiplicity and group must be 1-d arrays of the same length")
    lowest = [float(x.min(initial=np.inf)) for x in (rate, multiplicity)]
    if not (lowest[0] >= 0 and rate.max(initial=0.0) < np.inf):
        raise ValueError("rate must be finite and >= 0")
    if not (lowest[1] >= 0 and multiplicity.max(initial=0.0) < np.inf):
        raise ValueError("multiplicity must be finite and >= 0")
    if np.isnan(cache_size).any() or (cache_size < 0).any():
        raise ValueError("cache_size must be >= 0")
    if group.size and (group.min() < 0 or group.max() >= groups):
        raise ValueError("group out of range")
    return min(lowest)
