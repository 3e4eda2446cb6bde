# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled passes of :func:`pspsim.model.cache.lru_miss_ratio` (Che's approximation), optional:
without them it runs the same arithmetic in numpy.

Each function does, key by key in key order, the products and per-group sums the numpy version
does with temporaries and ``bincount`` (which also adds each group's values in key order), so the
results are the same bytes; the exponentials stay numpy's (``exp``/``expm1`` over the array, called
by the caller between the passes), so they are the same values too.  ``tests/test_cache.py`` holds
the two to that.
"""

from libc.math cimport INFINITY


def scaled(const double[::1] rate, const double[::1] per_group, const long long[::1] group, double sign,
           double[::1] product, double[::1] negated):
    """``product[i] = rate[i] * per_group[group[i]]`` and ``negated[i] = -product[i]`` (sign 1), or
    ``negated[i] = (-rate[i]) * per_group[group[i]]`` (sign -1, ``product`` not written)."""
    cdef Py_ssize_t i, n = rate.shape[0]
    cdef double x
    with nogil:
        if sign > 0:
            for i in range(n):
                x = rate[i] * per_group[group[i]]
                product[i] = x
                negated[i] = -x
        else:
            for i in range(n):
                negated[i] = (-rate[i]) * per_group[group[i]]


def occupancy_and_slope(const double[::1] mult, const double[::1] rt, const double[::1] expm1_neg,
                        const long long[::1] group, double[::1] occupancy, double[::1] slope):
    """Per group: ``occupancy += mult * held`` and ``slope += mult * rt * (1 - held)`` with
    ``held = -expm1_neg`` (each key's chance of being cached, ``1 - exp(-rt)``); the sums start at
    0 and add the keys in order."""
    cdef Py_ssize_t i, n = mult.shape[0]
    cdef double held
    with nogil:
        occupancy[:] = 0.0
        slope[:] = 0.0
        for i in range(n):
            held = -expm1_neg[i]
            occupancy[group[i]] += mult[i] * held
            slope[group[i]] += (mult[i] * rt[i]) * (1.0 - held)


def weighted_misses(const double[::1] mult, const double[::1] rate, const double[::1] exp_neg,
                    const long long[::1] group, double[::1] out):
    """Per group, ``out = sum of mult * rate * exp_neg`` (the lookups that miss), keys in order."""
    cdef Py_ssize_t i, n = mult.shape[0]
    with nogil:
        out[:] = 0.0
        for i in range(n):
            out[group[i]] += (mult[i] * rate[i]) * exp_neg[i]


def group_min(const double[::1] x, const long long[::1] group, double[::1] out):
    """Per group, the smallest ``x`` (``inf`` for a group without keys)."""
    cdef Py_ssize_t i, n = x.shape[0]
    with nogil:
        out[:] = INFINITY
        for i in range(n):
            if x[i] < out[group[i]]:
                out[group[i]] = x[i]


def keys_and_lookups(const double[::1] mult, const double[::1] rate, const long long[::1] group,
                     double[::1] keys, double[::1] lookups):
    """Per group, ``keys += mult`` and ``lookups += mult * rate``, keys in order (from 0)."""
    cdef Py_ssize_t i, n = mult.shape[0]
    with nogil:
        keys[:] = 0.0
        lookups[:] = 0.0
        for i in range(n):
            keys[group[i]] += mult[i]
            lookups[group[i]] += mult[i] * rate[i]
