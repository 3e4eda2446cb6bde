# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled FIFO command queues of :mod:`pspsim.model.commands` (optional: setup.py builds them,
and without them the numpy versions run).

* :func:`fifo_serve`: FIFO servers fed in arrival order: ``departure = max(arrival, server free) +
  service``, exactly (the numpy version is a running maximum with an offset per server, exact to
  about a nanosecond).
* :func:`fits_in_order`: installs that take a slot on two NICs, in time order, and which fit.
* :func:`delay_histogram`: command delays added to the log-spaced histogram.
* :func:`fifo_serve_dependent`: commands that wait for others, in one pass in time order (a sorted
  stream merged with a heap of the dependents issued so far); :func:`dependents_of` lists who waits
  for whom.
"""

import numpy as np

from libc.math cimport floor
from libc.stdint cimport uint64_t
from libc.string cimport memcpy

cdef uint64_t MANTISSA = (<uint64_t> 1 << 52) - 1


def fifo_serve(const double[::1] arrivals, const long long[::1] servers, const double[::1] service,
               const long long[::1] by_time, double[::1] busy_until, double[::1] out):
    """Items in ``by_time`` order (arrival time, ties in input order): each departs at
    ``max(arrival, its server's previous departure) + service``; ``out[i]`` is item i's
    departure and ``busy_until`` each server's last."""
    cdef Py_ssize_t k, i, n = by_time.shape[0]
    cdef long long q
    cdef double start
    with nogil:
        for k in range(n):
            i = by_time[k]
            q = servers[i]
            start = arrivals[i]
            if busy_until[q] > start:
                start = busy_until[q]
            out[i] = start + service[i]
            busy_until[q] = out[i]


cdef inline bint _before(double ta, long long ia, double tb, long long ib) noexcept nogil:
    return ta < tb or (ta == tb and ia < ib)


cdef void _push(double* keys, long long* items, Py_ssize_t* size, double t, long long i) noexcept nogil:
    cdef Py_ssize_t k = size[0], parent
    size[0] += 1
    while k > 0:
        parent = (k - 1) // 2
        if not _before(t, i, keys[parent], items[parent]):
            break
        keys[k] = keys[parent]
        items[k] = items[parent]
        k = parent
    keys[k] = t
    items[k] = i


cdef void _pop(double* keys, long long* items, Py_ssize_t* size) noexcept nogil:
    cdef Py_ssize_t k = 0, child, n
    size[0] -= 1
    n = size[0]
    cdef double t = keys[n]
    cdef long long i = items[n]
    while True:
        child = 2 * k + 1
        if child >= n:
            break
        if child + 1 < n and _before(keys[child + 1], items[child + 1], keys[child], items[child]):
            child += 1
        if not _before(keys[child], items[child], t, i):
            break
        keys[k] = keys[child]
        items[k] = items[child]
        k = child
    keys[k] = t
    items[k] = i


def fifo_serve_dependent(double[::1] arrivals, const long long[::1] servers, const double[::1] service,
                         const long long[::1] dep_a, const long long[::1] dep_b,
                         const long long[::1] dependents, const long long[::1] bounds,
                         const long long[::1] independent, double latency,
                         double[::1] busy_until, double[::1] finished):
    """FIFO servers whose items may wait for others: item ``j`` with ``dep_a[j] >= 0`` arrives when
    its dependencies (``dep_a[j]``, and ``dep_b[j]`` if >= 0) have finished, at the later of their
    finishing times; the others (``independent``, sorted by arrival, ties by index) arrive at
    ``arrivals[j]``.  Each item departs at ``max(arrival, server free) + service`` and finishes
    ``latency`` later.  Items are served in order of arrival, ties in index order, which is the
    order a FIFO per server sees them in; an item's dependents (``dependents[bounds[j]:bounds[j +
    1]]``) arrive after it finishes, so one pass in time order is exact: the sorted independent
    items merged with a heap of the dependents issued so far.  Writes ``finished`` and the
    dependents' ``arrivals``; updates ``busy_until``.  Returns the number of items served (fewer
    than all if dependencies form a cycle)."""
    cdef Py_ssize_t n = arrivals.shape[0], m = independent.shape[0], size = 0, k, served = 0, next_ = 0
    cdef long long i, d, q
    cdef double t, start
    heap_t_ = np.empty(max(n - m, 1))
    heap_i_ = np.empty(max(n - m, 1), dtype=np.int64)
    pending_ = np.zeros(max(n, 1), dtype=np.int64)
    cdef double[::1] heap_t = heap_t_
    cdef long long[::1] heap_i = heap_i_
    cdef long long[::1] pending = pending_
    with nogil:
        for k in range(n):
            if dep_a[k] >= 0:
                pending[k] = 1 if (dep_b[k] < 0 or dep_b[k] == dep_a[k]) else 2
        while next_ < m or size > 0:
            if size > 0 and (next_ >= m or _before(heap_t[0], heap_i[0], arrivals[independent[next_]],
                                                   independent[next_])):
                t = heap_t[0]
                i = heap_i[0]
                _pop(&heap_t[0], &heap_i[0], &size)
            else:
                i = independent[next_]
                t = arrivals[i]
                next_ += 1
            q = servers[i]
            start = t
            if busy_until[q] > start:
                start = busy_until[q]
            busy_until[q] = start + service[i]
            finished[i] = busy_until[q] + latency
            served += 1
            for k in range(bounds[i], bounds[i + 1]):
                d = dependents[k]
                pending[d] -= 1
                if pending[d] == 0:
                    t = finished[dep_a[d]]
                    if dep_b[d] >= 0 and finished[dep_b[d]] > t:
                        t = finished[dep_b[d]]
                    arrivals[d] = t
                    _push(&heap_t[0], &heap_i[0], &size, t, d)
    return served


def dependents_of(const long long[::1] dep_a, const long long[::1] dep_b):
    """Per item ``j``, the items waiting for it, as (dependents, bounds): ``dependents[bounds[j]:
    bounds[j + 1]]`` are the ``k`` with ``dep_a[k] == j`` in increasing ``k``, then those with
    ``dep_b[k] == j != dep_a[k]`` (a counting sort: the order of the stable sort by ``j`` of that
    concatenation)."""
    cdef Py_ssize_t n = dep_a.shape[0], k
    cdef long long total = 0, c
    bounds_ = np.zeros(n + 1, dtype=np.int64)
    cdef long long[::1] bounds = bounds_
    with nogil:
        for k in range(n):
            if dep_a[k] >= 0:
                bounds[dep_a[k] + 1] += 1
            if dep_b[k] >= 0 and dep_b[k] != dep_a[k]:
                bounds[dep_b[k] + 1] += 1
        for k in range(n):
            bounds[k + 1] += bounds[k]
        total = bounds[n]
    dependents_ = np.empty(total, dtype=np.int64)
    fill_ = np.array(bounds_[:n], dtype=np.int64)
    cdef long long[::1] dependents = dependents_
    cdef long long[::1] fill = fill_
    with nogil:
        for k in range(n):
            if dep_a[k] >= 0:
                dependents[fill[dep_a[k]]] = k
                fill[dep_a[k]] += 1
        for k in range(n):
            if dep_b[k] >= 0 and dep_b[k] != dep_a[k]:
                dependents[fill[dep_b[k]]] = k
                fill[dep_b[k]] += 1
    return dependents_, bounds_


cdef inline long long _bin_of(double d, const double[::1] edges, Py_ssize_t m) noexcept nogil:
    """``searchsorted(edges, d, side="right") - 1`` for the command-delay edges (see :func:`delay_bins`):
    the index guessed from the bits of ``d`` (its binary exponent, plus the mantissa's fraction as
    log2 of the mantissa: within about one bin), then moved until ``edges[k] <= d < edges[k + 1]``:
    the binary search's answer whatever the guess."""
    cdef uint64_t bits
    cdef double g
    cdef long long k
    if d != d:  # NaN sorts after everything
        return m - 1
    if d > 0:
        memcpy(&bits, &d, 8)
        g = <double> <long long> (bits >> 52) - 1023.0 + <double> (bits & MANTISSA) * 2.220446049250313e-16
        g = floor((g * 0.30102999566398120 + 7.0) * 40.0) + 1.0
        k = <long long> g if g < m else m - 1
        if g < 0:
            k = 0
    else:
        k = 0
    while k >= 0 and edges[k] > d:
        k -= 1
    while k + 1 < m and edges[k + 1] <= d:
        k += 1
    return k


def delay_bins(const double[::1] delay, const double[::1] edges, long long[::1] out):
    """``np.searchsorted(edges, delay, side="right") - 1`` for ascending ``edges`` whose entries from
    the second on are ``10 ** (-7 + i / 40)`` (the command-delay histogram's), delay by delay as
    :func:`delay_histogram` bins them (-1 below the first edge; NaN: the binary search's last index)."""
    cdef Py_ssize_t n = delay.shape[0], m = edges.shape[0], i
    with nogil:
        for i in range(n):
            out[i] = _bin_of(delay[i], edges, m)


def delay_histogram(const double[::1] delay, const double[::1] edges, long long[::1] histogram):
    """Add each delay to its histogram bin: ``histogram += bincount(clip(searchsorted(edges, delay,
    side="right") - 1, 0, len(histogram) - 1))`` for the command-delay edges (ascending, from the
    second on ``10 ** (-7 + i / 40)``), without the temporaries; ``len(histogram)`` is ``len(edges) - 1``."""
    cdef Py_ssize_t n = delay.shape[0], m = edges.shape[0], i
    cdef long long k, top = histogram.shape[0] - 1
    with nogil:
        for i in range(n):
            k = _bin_of(delay[i], edges, m)
            if k < 0:
                k = 0
            elif k > top:
                k = top
            histogram[k] += 1


def fits_in_order(const long long[::1] order, const long long[::1] nic_a, const long long[::1] nic_b,
                  const double[::1] free, unsigned char[::1] fits):
    """Installs that each take the next slot on two NICs, in ``order``: install ``i``'s rank on a NIC
    is how many slots of that NIC earlier installs took (its ``a`` slot before its ``b`` slot), and
    it fits when both ranks are below the NIC's ``free``.  Writes ``fits[i]`` (1 or 0)."""
    cdef Py_ssize_t n = order.shape[0], k
    cdef long long i, a, b, rank_a, rank_b
    used_ = np.zeros(free.shape[0], dtype=np.int64)
    cdef long long[::1] used = used_
    with nogil:
        for k in range(n):
            i = order[k]
            a = nic_a[i]
            b = nic_b[i]
            rank_a = used[a]
            used[a] += 1
            rank_b = used[b]
            used[b] += 1
            fits[i] = (<double> rank_a < free[a]) and (<double> rank_b < free[b])
