# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""A stable argsort by least-significant-digit radix sort (compiled; optional:
:mod:`pspsim.model.sorting` falls back to ``numpy.argsort(kind="stable")``, which gives the same
permutation, since a stable sort's result is unique).

Keys (float64 without NaN, int64, int32) are first mapped to 64-bit unsigned integers in the same
order: floats with -0.0 taken as 0.0 (they compare equal), the sign bit set for non-negative values
and every bit flipped for negative ones; integers with the sign bit flipped.  Then up to six
passes of 11-bit digits, a pass skipped when every key has the same digit (non-negative
integers below 2**22 take one or two passes; a range across zero takes all six).  Each pass reads keys and positions in order and writes them to their
digit's bucket in order, so equal keys keep their input order.
"""

import numpy as np

from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.string cimport memcpy

ctypedef fused key_t:
    double
    int64_t
    int32_t

cdef int BITS = 11
cdef int DIGITS = 6  # 6 x 11 = 66 >= 64 bits
cdef int BUCKETS = 1 << 11
cdef uint64_t SIGN = (<uint64_t> 1) << 63


cdef inline uint64_t _ordered(key_t x) noexcept nogil:
    cdef double f
    cdef uint64_t b
    if key_t is double:
        f = x + 0.0  # -0.0 + 0.0 is +0.0
        memcpy(&b, &f, 8)
        return ~b if b & SIGN else b | SIGN
    else:
        return (<uint64_t> (<int64_t> x)) ^ SIGN


def argsort(const key_t[::1] keys):
    """Positions of ``keys`` in stable ascending order (int64).  Float keys must not be NaN."""
    cdef Py_ssize_t n = keys.shape[0], i, b
    cdef int d, shift, passes = 0
    cdef int todo[6]
    cdef int64_t[:, ::1] counts = np.zeros((DIGITS, BUCKETS), dtype=np.int64)
    cdef uint64_t[::1] ka = np.empty(max(n, 1), dtype=np.uint64)
    cdef uint64_t key
    cdef int64_t total, c
    with nogil:
        for i in range(n):
            key = _ordered(keys[i])
            ka[i] = key
            for d in range(DIGITS):
                counts[d, (key >> (d * BITS)) & (BUCKETS - 1)] += 1
        for d in range(DIGITS):
            if n == 0 or counts[d, (ka[0] >> (d * BITS)) & (BUCKETS - 1)] != n:
                todo[passes] = d
                passes += 1
                total = 0
                for b in range(BUCKETS):  # each bucket's first slot
                    c = counts[d, b]
                    counts[d, b] = total
                    total += c
    if passes == 0:
        return np.arange(n, dtype=np.int64)
    # keys: pass 0 reads ka and writes kb, then they alternate; positions: pass 0 reads i, the
    # last pass writes ib, and they alternate backwards from there
    cdef uint64_t[::1] kb = np.empty(n if passes > 1 else 1, dtype=np.uint64)
    cdef int64_t[::1] ia = np.empty(n if passes > 1 else 1, dtype=np.int64)
    cdef int64_t[::1] ib = np.empty(n, dtype=np.int64)
    cdef uint64_t[::1] ksrc, kdst
    cdef int64_t[::1] isrc, idst
    cdef int p
    cdef bint last
    for p in range(passes):
        d = todo[p]
        shift = d * BITS
        last = p == passes - 1
        ksrc, kdst = (ka, kb) if p % 2 == 0 else (kb, ka)
        idst = ib if (passes - 1 - p) % 2 == 0 else ia
        isrc = ia if (passes - 1 - p) % 2 == 0 else ib
        with nogil:
            for i in range(n):
                key = ksrc[i]
                b = (key >> shift) & (BUCKETS - 1)
                idst[counts[d, b]] = i if p == 0 else isrc[i]
                if not last:
                    kdst[counts[d, b]] = key
                counts[d, b] += 1
    return np.asarray(ib)


ctypedef fused group_t:
    int64_t
    int32_t


def counting_sort(const group_t[::1] groups, Py_ssize_t n):
    """Positions of ``groups`` (values 0..n-1) grouped by value, ascending within a group, and where
    each group starts: (order, bounds), group ``g``'s positions being ``order[bounds[g]:bounds[g +
    1]]``: the stable argsort's permutation, in one counting pass and one placing pass.  A value
    outside 0..n-1 raises ``ValueError``."""
    cdef Py_ssize_t m = groups.shape[0], i
    cdef int64_t g
    bounds_ = np.zeros(n + 1, dtype=np.int64)
    order_ = np.empty(m, dtype=np.int64)
    cdef int64_t[::1] bounds = bounds_
    cdef int64_t[::1] order = order_
    cdef bint outside = False
    with nogil:
        for i in range(m):
            g = groups[i]
            if g < 0 or g >= n:
                outside = True
                break
            bounds[g + 1] += 1
    if outside:
        raise ValueError(f"group values must be in 0..{n - 1}")
    fill_ = np.cumsum(bounds_[:n])
    bounds_[1:] = np.cumsum(bounds_[1:])
    cdef int64_t[::1] fill = fill_
    with nogil:
        for i in range(m):
            g = groups[i]
            order[fill[g]] = i
            fill[g] += 1
    return order_, bounds_
