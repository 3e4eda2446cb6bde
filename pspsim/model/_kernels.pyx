# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled per-flow and per-move loops of the fleet model (optional: setup.py builds them, and
without them pspsim runs its numpy implementations, with the same bytes).

* :func:`apply_moves`: :meth:`pspsim.model.traffic.TrafficLedger.window`, one
  window's moves applied to the flows they touch.  Same arithmetic, in the same
  order, as the numpy implementation in ``traffic.py`` (each bin summed in move
  order, additions then removals), so the results are the same bytes;
  ``tests/test_traffic.py`` holds the two to that.
* :func:`dense_update`: the ledger's kept every-flow averages after a window.
* :func:`engine_shares`: :func:`pspsim.model.dataplane.engine_util`'s per-flow engine loads.

The command queues are in ``_queues.pyx``, the re-key schedules in ``_schedules.pyx``, the radix
sort in ``_sort.pyx`` and Che's passes in ``_che.pyx``.
"""

import numpy as np

from libc.math cimport ceil
from libc.string cimport memset

RECOMPUTES_VALUES = True  # apply_moves takes values with no rows (a build without this does not)
AFTER_OPTIONAL = True  # apply_moves takes an out of two planes (no level after: the caller has it)

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
# the first pass fetches in three stages, each reading what the one before brought into the cache:
cdef int AHEAD_PAIR = 48  # moves ahead: the move's pair's entry in ``touched`` (its flows)
cdef int AHEAD_MOVES = 24  # moves ahead: the connection's size and rate, the flow's hosts
cdef int AHEAD_HOSTS = 8  # moves ahead: the per-host sums the move adds to


cdef inline void _prefetch_host_sums(double* HL, double* HA, long long a, long long b, int parts_of,
                                     int t, int s) noexcept nogil:
    """Fetch the rows of ``host_level`` and ``host_average`` a move of categories ``t`` (to) and ``s``
    (from) adds to: both hosts of its pair (``a``, ``b``), as sender and as receiver, in each part."""
    cdef long long h, base
    cdef int k, side, part
    for k in range(2):
        h = a if k == 0 else b
        for side in range(2):
            for part in range(parts_of):
                base = ((h * 2 + side) * 2 + part) * (CATS * QUANTS)
                if t >= 0:
                    PSPSIM_PREFETCH(HL + base + t * QUANTS)
                    PSPSIM_PREFETCH(HA + base + t * QUANTS)
                if s >= 0:
                    PSPSIM_PREFETCH(HL + base + s * QUANTS)
                    PSPSIM_PREFETCH(HA + base + s * QUANTS)


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
    to ``out[1, :n]`` and their level after it to ``out[2, :n]`` (if ``out`` has that plane), each
    (touched, categories, quantities).  ``values`` (moves, 2, quantities) is working space; with no rows (window 0's whole
    population: 80 bytes a move) each move's values are computed again in the second pass instead
    of kept (the same expressions: the same bytes).

    Per-host sums: ``host_level[h, side, part]`` (flows sent by ``h``: side 0, received: 1; all
    of them: part 0, those ``crossing`` racks: part 1) moves by each move's values and
    ``host_average`` (the level at the window start, as given) by its values times its share.

    Two passes: move by move (each move's values, and the per-host sums, in move order; fetched
    ahead in three stages, each reading only what the one before brought into the cache: the
    pair's flows ``AHEAD_PAIR`` moves early, the connection's size and rate and the flow's hosts
    ``AHEAD_MOVES`` early, the per-host sums it adds to ``AHEAD_HOSTS`` early), then
    pair by pair, so each touched flow's level row is read and written once while it is in the
    cache (it is fetched ``AHEAD`` pairs early, with its moves' values, shares and categories, which
    lie in move order: at fleet-10k a third of the second pass waited for them).  Each flow's sums take its moves in move
    order, additions and removals apart, as the numpy implementation does."""
    cdef Py_ssize_t n = touched.shape[0], m = conn.shape[0], pairs = n // 2, i, k, p, q, c
    if out.shape[0] < 2 or out.shape[1] < n or out.shape[2] != CATS or out.shape[3] != QUANTS:
        raise ValueError("out must be (3, >= touched, 4, 5), or (2, ...) without the level after")
    cdef bint after = out.shape[0] >= 3
    cdef bint kept = values.shape[0] > 0
    if (kept and values.shape[0] < m) or values.shape[1] != 2 or values.shape[2] != QUANTS:
        raise ValueError("values must be (>= moves, 2, 5), or (0, 2, 5) to compute them again")
    if by_pair.shape[0] != m or pair_start.shape[0] != pairs + 1:
        raise ValueError("by_pair must list every move and pair_start bound every pair")
    cdef double acc[4][20]  # added, removed, their shares of the window (part_added, part_removed)
    cdef double vw[5]
    cdef double again[10]  # a move's values when they are not kept
    cdef double size, msgs, w, v, before
    cdef int d, t, s, side, part, parts_of
    cdef long long flow, h, f, base
    # every array is C-contiguous (the ``::1`` declarations): walk them by offsets
    cdef double* R = &rows[0, 0, 0]
    cdef double* OUT0 = &out[0, 0, 0, 0]
    cdef double* OUT1 = &out[1, 0, 0, 0]
    cdef double* OUT2 = &out[2, 0, 0, 0] if after else NULL
    cdef double* V = &values[0, 0, 0] if kept else &again[0]
    cdef double* vm
    cdef double* HL = &host_level[0, 0, 0, 0, 0]
    cdef double* HA = &host_average[0, 0, 0, 0, 0]
    cdef double* vd
    cdef double* r
    cdef double* o0
    cdef double* o1
    cdef double* o2
    with nogil:
        for i in range(m):
            if i + AHEAD_PAIR < m:  # fetched ahead in stages (see AHEAD_PAIR)
                PSPSIM_PREFETCH(&touched[2 * local[i + AHEAD_PAIR]])
            if i + AHEAD_MOVES < m:
                PSPSIM_PREFETCH(&msg_bytes[conn[i + AHEAD_MOVES]])
                PSPSIM_PREFETCH(&msgs_per_s[conn[i + AHEAD_MOVES]])
                flow = touched[2 * local[i + AHEAD_MOVES]]
                PSPSIM_PREFETCH(&sender[flow])
                PSPSIM_PREFETCH(&receiver[flow])
                PSPSIM_PREFETCH(&crossing[flow])
            if i + AHEAD_HOSTS < m:
                flow = touched[2 * local[i + AHEAD_HOSTS]]
                _prefetch_host_sums(HL, HA, sender[flow], receiver[flow], 1 + crossing[flow],
                                    to[i + AHEAD_HOSTS], came_from[i + AHEAD_HOSTS])
            size = <double> msg_bytes[conn[i]]
            msgs = <double> msgs_per_s[conn[i]]
            vm = V + 10 * i if kept else V
            _quantities(size, msgs, mss, record, tso, vm)
            _quantities(size * response_ratio, msgs, mss, record, tso, vm + 5)
            w = weight[i]
            t = to[i]
            s = came_from[i]
            for d in range(2):
                vd = vm + 5 * d
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
                for k in range(pair_start[p + AHEAD], pair_start[p + AHEAD + 1]):  # its moves, in move order
                    i = by_pair[k]
                    if kept:
                        PSPSIM_PREFETCH(V + 10 * i)
                        PSPSIM_PREFETCH(V + 10 * i + 9)
                    else:
                        PSPSIM_PREFETCH(&msg_bytes[conn[i]])
                        PSPSIM_PREFETCH(&msgs_per_s[conn[i]])
                    PSPSIM_PREFETCH(&weight[i])
                    PSPSIM_PREFETCH(&to[i])
                    PSPSIM_PREFETCH(&came_from[i])
            for d in range(2):
                f = 2 * p + d
                memset(&acc[0][0], 0, sizeof(acc))
                for k in range(pair_start[p], pair_start[p + 1]):
                    i = by_pair[k]
                    if kept:
                        vd = V + 10 * i + 5 * d
                    else:  # as the first pass computed them
                        size = <double> msg_bytes[conn[i]]
                        msgs = <double> msgs_per_s[conn[i]]
                        vd = V
                        if d == 0:
                            _quantities(size, msgs, mss, record, tso, vd)
                        else:
                            _quantities(size * response_ratio, msgs, mss, record, tso, vd)
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
                if after:
                    o2 = OUT2 + (CATS * QUANTS) * f
                for c in range(CATS * QUANTS):
                    before = r[c]
                    o0[c] = before
                    o1[c] = (before + acc[2][c]) + acc[3][c]
                    r[c] = (before + acc[0][c]) + acc[1][c]
                    if after:
                        o2[c] = r[c]


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
            tx[sender[i]] += a if (a >= bits or a != a) else bits  # np.maximum: a NaN wins
            a = (pk + ((lk * rx_lookups) * miss[receiver[i]]) * miss_cost) / pps
            rx[receiver[i]] += a if (a >= bits or a != a) else bits


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
