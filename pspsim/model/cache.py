"""TEMPORARY (replaced by the helper's module on merge)."""
import numpy as np


def lru_miss_ratio(rate, multiplicity, group, cache_size, groups):
    rate = np.asarray(rate, float); m = np.asarray(multiplicity, float); group = np.asarray(group)
    keys = np.bincount(group, m, groups)
    lo, hi = np.full(groups, -30.0), np.full(groups, 30.0)
    for _ in range(60):
        mid = (lo + hi) / 2
        T = np.exp(mid)
        occ = np.bincount(group, m * (1 - np.exp(-rate * T[group])), groups)
        big = occ > cache_size
        hi = np.where(big, mid, hi); lo = np.where(big, lo, mid)
    T = np.exp((lo + hi) / 2)
    miss = np.bincount(group, m * rate * np.exp(-rate * T[group]), groups) / np.maximum(np.bincount(group, m * rate, groups), 1e-300)
    return np.where(keys > cache_size, miss, 0.0)
