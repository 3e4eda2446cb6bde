# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled inner loops of the fleet model (optional: setup.py builds them, and
without them pspsim runs its numpy implementations).

* :func:`apply_moves`: :meth:`pspsim.model.traffic.TrafficLedger.window`, one
  window's moves applied to the flows they touch.  Same arithmetic, in the same
  order, as the numpy implementation in ``traffic.py`` (each bin summed in move
  order, additions then removals), so the results are the same bytes;
  ``tests/test_traffic.py`` holds the two to that.
* :func:`fifo_serve`: :func:`pspsim.model.commands.fifo_departures`, FIFO
  servers fed in arrival order: ``departure = max(arrival, server free) +
  service``, exactly (the numpy implementation is a running maximum with an
  offset per server, exact to about a nanosecond).
"""

import numpy as np

from libc.math cimport ceil, floor
from libc.string cimport memset

cdef int CATS = 4
cdef int QUANTS = 5


cdef inline double _ceil_div(double x, double d) noexcept nogil:
    cdef double c = ceil(x / d)
    return c if c > 1.0 else 1.0


cdef inline void _quantities(double size, double msgs, double mss, double record, double tso,
                             double* out) noexcept nogil:
    out[0] = size * msgs
    if size > 0:
        out[1] = msgs * _ceil_div(size, mss)
        out[2] = msgs * _ceil_div(size, record)
        out[3] = msgs * _ceil_div(size, tso)
    else:
        out[1] = 0.0
        out[2] = 0.0
        out[3] = 0.0
    out[4] = 1.0


cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define PSPSIM_PREFETCH(p) __builtin_prefetch((const void *)(p))
    #else
    #define PSPSIM_PREFETCH(p) ((void)0)
    #endif
    """
    void PSPSIM_PREFETCH(const void *p) noexcept nogil

cdef int AHEAD = 8  # pairs ahead whose level rows are fetched into the cache
cdef int AHEAD_MOVES = 16  # moves ahead whose connection's and flow's values are fetched


def apply_moves(const long long[::1] conn, const signed char[::1] to, const signed char[::1] came_from,
                const double[::1] weight, const long long[::1] local, const long long[::1] by_pair,
                const long long[::1] pair_start, const long long[::1] touched,
                const float[::1] msg_bytes, const float[::1] msgs_per_s, double response_ratio,
                double mss, double record, double tso, double[:, :, ::1] rows,
                double[:, :, :, ::1] out, double[:, :, ::1] values,
                const long long[::1] sender, const long long[::1] receiver,
                const unsigned char[::1] crossing, double[:, :, :, :, ::1] host_level,
                double[:, :, :, :, ::1] host_average):
    """Moves ``i`` (sorted by connection, then time) of connection ``conn[i]`` from category
    ``came_from[i]`` to ``to[i]`` (-1: none) at window share ``weight[i]``; ``local[i]`` is its pair's
    position among the touched pairs, whose flows ``touched`` (``2 * local + direction``) are
    sorted; ``by_pair`` lists the moves pair by pair (in move order within a pair), pair ``p``'s
    from ``pair_start[p]`` to ``pair_start[p + 1]``.  Updates ``rows`` (the level, flow by flow) and
    writes the touched flows' level before the window to ``out[0, :n]``, their average over it
    to ``out[1, :n]`` and their level after it to ``out[2, :n]``, each (touched, categories,
    quantities).  ``values`` (moves, 2, quantities) is working space.

    Per-host sums: ``host_level[h, side, part]`` (flows sent by ``h``: side 0, received: 1; all
    of them: part 0, those ``crossing`` racks: part 1) moves by each move's values and
    ``host_average`` (the level at the window start, as given) by its values times its share.

    Two passes: move by move (each move's values, and the per-host sums, in move order; the
    connection's size and rate and the flow's hosts fetched ``AHEAD_MOVES`` moves early), then
    pair by pair, so each touched flow's level row is read and written once while it is in the
    cache (it is fetched ``AHEAD`` pairs early).  Each flow's sums take its moves in move
    order, additions and removals apart, as the numpy implementation does."""
    cdef Py_ssize_t n = touched.shape[0], m = conn.shape[0], pairs = n // 2, i, k, p, q, c
    if out.shape[0] < 3 or out.shape[1] < n or out.shape[2] != CATS or out.shape[3] != QUANTS:
        raise ValueError("out must be (3, >= touched, 4, 5)")
    if values.shape[0] < m or values.shape[1] != 2 or values.shape[2] != QUANTS:
        raise ValueError("values must be (>= moves, 2, 5)")
    if by_pair.shape[0] != m or pair_start.shape[0] != pairs + 1:
        raise ValueError("by_pair must list every move and pair_start bound every pair")
    cdef double acc[4][20]  # added, removed, their shares of the window (part_added, part_removed)
    cdef double vw[5]
    cdef double size, msgs, w, v, before
    cdef int d, t, s, side, part, parts_of
    cdef long long flow, h, f, base
    # every array is C-contiguous (the ``::1`` declarations): walk them by offsets
    cdef double* R = &rows[0, 0, 0]
    cdef double* OUT0 = &out[0, 0, 0, 0]
    cdef double* OUT1 = &out[1, 0, 0, 0]
    cdef double* OUT2 = &out[2, 0, 0, 0]
    cdef double* V = &values[0, 0, 0]
    cdef double* HL = &host_level[0, 0, 0, 0, 0]
    cdef double* HA = &host_average[0, 0, 0, 0, 0]
    cdef double* vd
    cdef double* r
    cdef double* o0
    cdef double* o1
    cdef double* o2
    with nogil:
        for i in range(m):
            if i + AHEAD_MOVES < m:  # this move's connection and flows, fetched ahead
                PSPSIM_PREFETCH(&msg_bytes[conn[i + AHEAD_MOVES]])
                PSPSIM_PREFETCH(&msgs_per_s[conn[i + AHEAD_MOVES]])
                flow = touched[2 * local[i + AHEAD_MOVES]]
                PSPSIM_PREFETCH(&sender[flow])
                PSPSIM_PREFETCH(&receiver[flow])
                PSPSIM_PREFETCH(&crossing[flow])
            size = <double> msg_bytes[conn[i]]
            msgs = <double> msgs_per_s[conn[i]]
            _quantities(size, msgs, mss, record, tso, V + 10 * i)
            _quantities(size * response_ratio, msgs, mss, record, tso, V + 10 * i + 5)
            w = weight[i]
            t = to[i]
            s = came_from[i]
            for d in range(2):
                vd = V + 10 * i + 5 * d
                for q in range(QUANTS):
                    vw[q] = vd[q] * w
                flow = touched[2 * local[i] + d]
                parts_of = 1 + crossing[flow]
                for side in range(2):
                    h = sender[flow] if side == 0 else receiver[flow]
                    for part in range(parts_of):
                        base = ((h * 2 + side) * 2 + part) * (CATS * QUANTS)
                        if t >= 0:
                            for q in range(QUANTS):
                                HL[base + t * QUANTS + q] += vd[q]
                                HA[base + t * QUANTS + q] += vw[q]
                        if s >= 0:
                            for q in range(QUANTS):
                                HL[base + s * QUANTS + q] -= vd[q]
                                HA[base + s * QUANTS + q] -= vw[q]
        for p in range(pairs):
            if p + AHEAD < pairs:
                for d in range(2):
                    r = R + (CATS * QUANTS) * touched[2 * (p + AHEAD) + d]
                    PSPSIM_PREFETCH(r)
                    PSPSIM_PREFETCH(r + 8)
                    PSPSIM_PREFETCH(r + 16)
                    PSPSIM_PREFETCH(r + 19)
            for d in range(2):
                f = 2 * p + d
                memset(&acc[0][0], 0, sizeof(acc))
                for k in range(pair_start[p], pair_start[p + 1]):
                    i = by_pair[k]
                    vd = V + 10 * i + 5 * d
                    w = weight[i]
                    t = to[i]
                    s = came_from[i]
                    if t >= 0:
                        for q in range(QUANTS):
                            v = vd[q]
                            acc[0][t * QUANTS + q] += v
                            acc[2][t * QUANTS + q] += v * w
                    if s >= 0:
                        for q in range(QUANTS):
                            v = -vd[q]
                            acc[1][s * QUANTS + q] += v
                            acc[3][s * QUANTS + q] += v * w
                r = R + (CATS * QUANTS) * touched[f]
                o0 = OUT0 + (CATS * QUANTS) * f
                o1 = OUT1 + (CATS * QUANTS) * f
                o2 = OUT2 + (CATS * QUANTS) * f
                for c in range(CATS * QUANTS):
                    before = r[c]
                    o0[c] = before
                    o1[c] = (before + acc[2][c]) + acc[3][c]
                    r[c] = (before + acc[0][c]) + acc[1][c]
                    o2[c] = r[c]


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


def events_in(const double[::1] start, const double[::1] interval, double t0, const double[::1] t1):
    """:func:`pspsim.model.ipsec_control._events_in` in one pass (two: count, then fill): per item
    ``i``, the ages ``k * interval[i]`` (k >= 1) that fall in ``[t0, t1[i])``, as (item, time) in
    item order, then k.  The same float operations in the same order, so the same bytes."""
    cdef Py_ssize_t n = start.shape[0], i, j = 0, total = 0
    cdef long long k, c
    cdef double first, last
    counts_ = np.empty(n, dtype=np.int64)
    firsts_ = np.empty(n)
    cdef long long[::1] counts = counts_
    cdef double[::1] firsts = firsts_
    with nogil:
        for i in range(n):
            first = ceil((t0 - start[i]) / interval[i])
            if first < 1.0:
                first = 1.0
            last = ceil((t1[i] - start[i]) / interval[i]) - 1
            c = <long long> (last - first + 1) if last - first + 1 > 0 else 0
            counts[i] = c
            firsts[i] = first
            total += c
    pos_ = np.empty(total, dtype=np.int64)
    times_ = np.empty(total)
    cdef long long[::1] pos = pos_
    cdef double[::1] times = times_
    with nogil:
        for i in range(n):
            for k in range(counts[i]):
                pos[j] = i
                times[j] = start[i] + (firsts[i] + <double> k) * interval[i]
                j += 1
    return pos_, times_


def sa_pairs(const double[::1] start, const double[::1] interval, const long long[::1] count,
             const unsigned char[::1] installed, const long long[::1] a, const long long[::1] b, double t1,
             double overlap, double[::1] host_pairs, double[::1] nic_pairs):
    """Per host, the SA pairs its live SAs (``count > 0``) hold at ``t1``: 1, plus the old pair of a
    re-key less than ``overlap`` ago (make-before-break); ``nic_pairs`` counts the installed ones.
    Sums over the SAs in order, each end apart (``a``, then ``b``), as the numpy ``bincount``s."""
    cdef Py_ssize_t n = start.shape[0], i, hosts = host_pairs.shape[0]
    cdef double x1, x2, b1, b2, pairs
    ha_ = np.zeros((4, hosts))
    cdef double[:, ::1] acc = ha_
    with nogil:
        for i in range(n):
            if count[i] <= 0:
                continue
            x1 = (t1 - start[i]) + 1e-9
            x2 = ((t1 - start[i]) - overlap) + 1e-9
            b1 = ceil((x1 if x1 > 0 else 0.0) / interval[i]) - 1
            b2 = ceil((x2 if x2 > 0 else 0.0) / interval[i]) - 1
            pairs = (1.0 + (b1 if b1 > 0 else 0.0)) - (b2 if b2 > 0 else 0.0)
            acc[0, a[i]] += pairs
            acc[1, b[i]] += pairs
            if installed[i]:
                acc[2, a[i]] += pairs
                acc[3, b[i]] += pairs
        for i in range(hosts):
            host_pairs[i] = acc[0, i] + acc[1, i]
            nic_pairs[i] = acc[2, i] + acc[3, i]


def engine_shares(const double[:, ::1] q, double scale, const long long[::1] sender,
                  const long long[::1] receiver, const double[::1] miss, double per_packet, double per_record,
                  double tx_lookups, double rx_lookups, double miss_cost, double pps, double bps,
                  double[::1] tx, double[::1] rx):
    """:func:`pspsim.model.dataplane.engine_util`'s two sums in one pass over the flows (rows of ``q``:
    bytes, packets, records, lookups): per flow, ``wire = bytes + packets * per_packet + records *
    per_record`` and each direction's ``max((packets + lookups * on * miss * miss_cost) / pps, 8 *
    wire / bps)``, added to its sender's ``tx`` and its receiver's ``rx`` in flow order, as the numpy
    expressions and ``bincount`` do (same operations, same order: the same bytes)."""
    cdef Py_ssize_t n = q.shape[1], i
    cdef double pk, lk, wire, bits, a
    if q.shape[0] < 4:
        raise ValueError("q needs rows bytes, packets, records, lookups")
    with nogil:
        tx[:] = 0.0
        rx[:] = 0.0
        for i in range(n):
            pk = q[1, i] * scale
            lk = q[3, i] * scale
            wire = (q[0, i] * scale + pk * per_packet) + (q[2, i] * scale) * per_record
            bits = (8 * wire) / bps
            a = (pk + ((lk * tx_lookups) * miss[sender[i]]) * miss_cost) / pps
            tx[sender[i]] += a if a >= bits else bits
            a = (pk + ((lk * rx_lookups) * miss[receiver[i]]) * miss_cost) / pps
            rx[receiver[i]] += a if a >= bits else bits


def dense_update(double[:, ::1] dense, const double[:, :, ::1] rows, int category, const long long[::1] back,
                 const long long[::1] touched, const double[:, :, ::1] average):
    """:class:`pspsim.model.traffic.DenseAverages` of ``category`` after a window: flows ``back`` get
    their level (``rows[flow, category]``) again, flows ``touched`` their average (``average[j,
    category]``, touched-flow by touched-flow): copies only."""
    cdef Py_ssize_t j, q, quants = dense.shape[0]
    cdef long long f
    with nogil:
        for j in range(back.shape[0]):
            f = back[j]
            for q in range(quants):
                dense[q, f] = rows[f, category, q]
        for j in range(touched.shape[0]):
            f = touched[j]
            for q in range(quants):
                dense[q, f] = average[j, category, q]


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


cdef inline long long _window_of(double t, double window) noexcept nogil:
    cdef long long w = <long long> floor(t / window)
    if t < w * window:  # the windows' own edges (index * window), not the division's rounding
        w -= 1
    if t >= (w + 1) * window:
        w += 1
    return w


def rekeys_by_window(const double[::1] start, const double[::1] end, const double[::1] interval, double horizon,
                     double window):
    """:func:`pspsim.model.tls_control.rekey_times` in two passes over the connections (count per
    window, then place), without the per-re-key temporaries: the same re-keys (ages ``k *
    interval``, ``k >= 1``, in ``[0, min(end, horizon))``), the same float operations, grouped by
    window in connection order, then k.  Returns (connection, time, bounds)."""
    cdef Py_ssize_t n = start.shape[0], i
    cdef long long windows = <long long> floor(horizon / window) + 2 if horizon < 1e300 else 2
    cdef long long j, c, w, total = 0
    cdef double stop, first, last, count, t
    counts_ = np.zeros(windows + 1, dtype=np.int64)
    firsts_ = np.empty(n)
    ks_ = np.zeros(n, dtype=np.int64)
    cdef long long[::1] counts = counts_
    cdef double[::1] firsts = firsts_
    cdef long long[::1] ks = ks_
    with nogil:
        for i in range(n):
            stop = end[i] if end[i] < horizon else horizon
            first = floor((-start[i] if -start[i] > 0 else 0.0) / interval[i]) + 1
            if first < 1.0:
                first = 1.0
            last = ceil((stop - start[i]) / interval[i]) - 1
            count = last - first + 1
            if not (count > 0 and count < 1e300):  # none, or not finite
                continue
            ks[i] = <long long> count
            firsts[i] = first
            for j in range(ks[i]):
                t = start[i] + (first + <double> j) * interval[i]
                if t >= 0:
                    w = _window_of(t, window)
                    if 0 <= w < windows:
                        counts[w + 1] += 1
        for w in range(windows):
            counts[w + 1] += counts[w]
        total = counts[windows]
    conn_ = np.empty(total, dtype=np.int64)
    times_ = np.empty(total)
    fill_ = np.array(counts_[:windows], dtype=np.int64)
    cdef long long[::1] conn = conn_
    cdef double[::1] times = times_
    cdef long long[::1] fill = fill_
    with nogil:
        for i in range(n):
            for j in range(ks[i]):
                t = start[i] + (firsts[i] + <double> j) * interval[i]
                if t >= 0:
                    w = _window_of(t, window)
                    if 0 <= w < windows:
                        conn[fill[w]] = i
                        times[fill[w]] = t
                        fill[w] += 1
    return conn_, times_, counts_
