# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled re-key schedules (optional: setup.py builds them, and without them the numpy versions
run, with the same bytes: the same float operations in the same order).

* :func:`events_in`: :func:`pspsim.model.ipsec_control._events_in`, the IPsec re-keys of a window.
* :func:`sa_pairs`: the SA pairs per host of :class:`pspsim.model.ipsec_control.IpsecControl`.
* :func:`rekeys_by_window`: :func:`pspsim.model.tls_control.rekey_times`, a run's TLS re-keys
  grouped by window.
* :func:`rotation_requests`: the re-keys PSP device-key rotations ask for
  (:meth:`pspsim.model.psp_control.PspControl._rotation_requests`).
"""

import numpy as np

VERSION = 2  # the signatures of this source (callers check it: an older build is not used)

from libc.math cimport INFINITY, ceil, floor


def events_in(const double[::1] start, const double[::1] interval, double t0, const double[::1] t1):
    """:func:`pspsim.model.ipsec_control._events_in` in one pass (two: count, then fill): per item
    ``i``, the ages ``k * interval[i]`` (k >= 1) that fall in ``[t0, t1[i])``, as (item, time) in
    item order, then k (the bounds corrected by the times, as ``calendar.periodic_bounds``).  The
    same float operations in the same order, so the same bytes."""
    cdef Py_ssize_t n = start.shape[0], i, j = 0, total = 0
    cdef long long k, c
    cdef double first, last
    counts_ = np.empty(n, dtype=np.int64)
    firsts_ = np.empty(n)
    cdef long long[::1] counts = counts_
    cdef double[::1] firsts = firsts_
    with nogil:
        for i in range(n):
            first = ceil((t0 - start[i]) / interval[i])  # corrected by the times, as periodic_bounds does
            if start[i] + first * interval[i] < t0:
                first = first + 1
            if start[i] + (first - 1) * interval[i] >= t0:
                first = first - 1
            if first < 1.0:
                first = 1.0
            last = ceil((t1[i] - start[i]) / interval[i]) - 1
            if start[i] + last * interval[i] >= t1[i]:
                last = last - 1
            if start[i] + (last + 1) * interval[i] < t1[i]:
                last = last + 1
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


cdef inline long long _window_of(double t, double window) noexcept nogil:
    cdef long long w = <long long> floor(t / window)
    if t < w * window:  # the windows' own edges (index * window), not the division's rounding
        w -= 1
    if t >= (w + 1) * window:
        w += 1
    return w


cdef inline double _rekey_at(double start, double first, long long j, double interval) noexcept nogil:
    return start + (first + <double> j) * interval


def rekeys_by_window(const double[::1] start, const double[::1] end, const double[::1] interval, double horizon,
                     double window, long long first_window, long long windows, Py_ssize_t limit):
    """:func:`pspsim.model.tls_control.rekey_times` for windows ``first_window`` to ``first_window +
    windows - 1`` only, over connections ``0..limit-1`` (the ones started before those windows end:
    a re-key comes after its connection's start): the same re-keys (ages ``k * interval``, ``k >= 1``,
    in ``[0, min(end, horizon))``, each in the window ``_window_of`` its time), the same float
    operations, grouped by window in connection order, then k, in two passes (count, then place).
    Each connection's first ``k`` in the windows is found from an estimate, moved until the re-key
    before it falls earlier (times grow with ``k``).  Returns (connection, time, bounds), window
    ``first_window + i``'s re-keys being ``bounds[i]:bounds[i + 1]``."""
    cdef long long total_windows = <long long> floor(horizon / window) + 2 if horizon < 1e300 else 2
    cdef long long last_window = min(first_window + windows, total_windows)
    cdef double t0 = first_window * window
    counts_ = np.zeros(windows + 1, dtype=np.int64)
    none_ = np.empty(0, dtype=np.int64)
    _rekeys_pass(start, end, interval, horizon, window, first_window, last_window, limit, t0, counts_, none_,
                 np.empty(0), none_, False)
    bounds_ = np.cumsum(counts_)
    conn_ = np.empty(bounds_[windows], dtype=np.int64)
    times_ = np.empty(bounds_[windows])
    _rekeys_pass(start, end, interval, horizon, window, first_window, last_window, limit, t0, bounds_, conn_,
                 times_, np.array(bounds_[:windows]), True)
    return conn_, times_, bounds_


cdef void _rekeys_pass(const double[::1] start, const double[::1] end, const double[::1] interval, double horizon,
                       double window, long long first_window, long long last_window, Py_ssize_t limit, double t0,
                       long long[::1] counts, long long[::1] conn, double[::1] times, long long[::1] fill,
                       bint place) noexcept nogil:
    """One pass of :func:`rekeys_by_window`: count each window's re-keys (``counts[w - first_window +
    1]``), or place them (``conn``, ``times`` at ``fill``)."""
    cdef Py_ssize_t i
    cdef long long j, w, ks
    cdef double stop, first, last, count, t, guess
    for i in range(limit):
        if end[i] <= t0:  # ended before these windows: none in them
            continue
        stop = end[i] if end[i] < horizon else horizon
        first = floor((-start[i] if -start[i] > 0 else 0.0) / interval[i]) + 1
        if first < 1.0:
            first = 1.0
        last = ceil((stop - start[i]) / interval[i]) - 1
        count = last - first + 1
        if not (count > 0 and count < 1e300):  # none, or not finite
            continue
        ks = <long long> count
        guess = floor((t0 - start[i]) / interval[i]) - first  # about the first j at or after t0
        j = 0 if not (guess > 0) else (<long long> guess if guess < count else ks)
        while j > 0 and _window_of(_rekey_at(start[i], first, j - 1, interval[i]), window) >= first_window:
            j -= 1
        while j < ks:
            t = _rekey_at(start[i], first, j, interval[i])
            j += 1
            if t < 0:
                continue
            w = _window_of(t, window)
            if w < first_window:
                continue
            if w >= last_window:
                break
            if place:
                conn[fill[w - first_window]] = i
                times[fill[w - first_window]] = t
                fill[w - first_window] += 1
            else:
                counts[w - first_window + 1] += 1


def rotation_requests(const long long[::1] nics, const double[::1] times, const int[::1] by_host,
                      const long long[::1] bounds, const int[::1] client, const double[::1] start,
                      const double[::1] end, const signed char[::1] mode, int on_psp, const double[:, ::1] made,
                      double[:, ::1] scheduled, const double[::1] uniforms, double delay, double spread,
                      bint reconnect):
    """:meth:`pspsim.model.psp_control.PspControl._rotation_requests`'s loop: rotation by rotation (NIC
    ``nics[i]`` at ``times[i]``), each connection with an end on that NIC whose association there is
    older than the rotation, alive and on PSP, with nothing already asked for after it, asks for a
    re-key ``delay + spread * U`` later (``U``: the next of ``uniforms``, in order, as the generator's
    ``uniform`` would give them).  Updates ``scheduled``; returns (connection, time, side, trigger) of
    the requests and how many ``uniforms`` were used."""
    cdef Py_ssize_t m = nics.shape[0], i, k, j = 0
    cdef long long nic, c
    cdef int side
    cdef double r, when
    total = 0
    for i in range(m):
        total += bounds[nics[i] + 1] - bounds[nics[i]]
    conn_ = np.empty(total, dtype=np.int64)
    when_ = np.empty(total)
    side_ = np.empty(total, dtype=np.int64)
    trig_ = np.empty(total)
    cdef long long[::1] out_conn = conn_
    cdef double[::1] out_when = when_
    cdef long long[::1] out_side = side_
    cdef double[::1] out_trig = trig_
    if uniforms.shape[0] < total:
        raise ValueError("need a uniform draw for every connection of the rotating NICs")
    with nogil:
        for i in range(m):
            nic = nics[i]
            r = times[i]
            for k in range(bounds[nic], bounds[nic + 1]):
                c = by_host[k]
                side = 1 if client[c] != nic else 0
                if not (start[c] <= r and end[c] > r and mode[c] == on_psp and not (made[c, side] >= r)
                        and scheduled[c, side] <= r):
                    continue
                when = r + (delay + (0.0 + spread * uniforms[j]))
                scheduled[c, side] = when
                if reconnect and when > scheduled[c, 1 - side]:
                    scheduled[c, 1 - side] = when
                out_conn[j] = c
                out_when[j] = when
                out_side[j] = side
                out_trig[j] = r
                j += 1
    return conn_[:j], when_[:j], side_[:j], trig_[:j], j


def still_needed(const long long[::1] conn, const long long[::1] side, const double[::1] time,
                 const double[::1] trigger, const unsigned char[::1] reconnect, const double[:, ::1] made,
                 const double[::1] end, const signed char[::1] mode, int on_psp, const int[::1] client,
                 const int[::1] server, const double[::1] phase, double period, unsigned char[::1] keep):
    """:meth:`pspsim.model.psp_control.PspControl._still_needed`'s test, request by request: alive and
    on PSP at its time, and the association on the triggering side older than the trigger (or not set
    up), or (a reconnect) either side's association has seen a rotation of its NIC since it was made
    (``phase + period * (floor((made - phase) / period) + 1) <= time``, NaN: not made, no)."""
    cdef Py_ssize_t n = conn.shape[0], i
    cdef long long c, nic
    cdef int d
    cdef double t, m, nxt
    cdef bint rotated
    with nogil:
        for i in range(n):
            c = conn[i]
            t = time[i]
            if not (end[c] > t and mode[c] == on_psp):
                keep[i] = 0
                continue
            if not (made[c, side[i]] >= trigger[i]):
                keep[i] = 1
                continue
            rotated = False
            if reconnect[i]:
                for d in range(2):
                    m = made[c, d]
                    nic = client[c] if d == 0 else server[c]
                    nxt = phase[nic] + period * (floor((m - phase[nic]) / period) + 1)
                    if nxt <= t:
                        rotated = True
            keep[i] = rotated


def stale_times(const long long[::1] conn, const long long[::1] side, const int[::1] client,
                const int[::1] server, const double[:, ::1] made, const double[::1] phase, double period,
                double[::1] when):
    """When each association ``(conn[i], side[i])`` goes stale: the second rotation of its NIC after
    it was made, ``phase + period * (floor((made - phase) / period) + 1) + period`` as
    :meth:`pspsim.model.rotation.RotationSchedule.stale_time` computes it."""
    cdef Py_ssize_t n = conn.shape[0], i
    cdef long long c
    cdef int nic
    cdef double p
    with nogil:
        for i in range(n):
            c = conn[i]
            nic = client[c] if side[i] == 0 else server[c]
            p = phase[nic]
            when[i] = p + period * (floor((made[c, side[i]] - p) / period) + 1) + period


cdef inline Py_ssize_t _slot(long long key, const long long[::1] keys, int shift) noexcept nogil:
    """Where ``key`` is in the open-addressing table ``keys`` (-1: empty), or the empty slot where
    it goes (Fibonacci hashing, linear probing); -1 if the table is full and ``key`` not in it."""
    cdef Py_ssize_t mask = keys.shape[0] - 1, probes = 0
    cdef Py_ssize_t k = <Py_ssize_t> ((<unsigned long long> key * 11400714819323198485ULL) >> shift)
    while keys[k] != -1 and keys[k] != key:
        k = (k + 1) & mask
        probes += 1
        if probes > mask:
            return -1
    return k


def early_rekeys(const long long[::1] asked_conn, const long long[::1] asked_side, const double[::1] at,
                 const unsigned char[::1] both, const long long[::1] conn, const long long[::1] side,
                 const double[::1] when, long long[::1] keys, double[::1] first, int shift,
                 unsigned char[::1] early):
    """For each stale check ``j`` (association ``(conn[j], side[j])`` at ``when[j]``): is a re-key of
    that association asked for in the window before it?  Request ``i`` re-keys ``(asked_conn[i],
    asked_side[i])`` at ``at[i]``, and the other side too if ``both[i]`` (a reconnect).  Each
    association's earliest request is kept in a hash table (``keys``: ``2 conn + side`` or -1,
    ``first``: its time; a power of two in size, more than twice the associations asked for;
    ``shift`` is 64 - log2 of its size), which is all empty (-1) again on return."""
    cdef Py_ssize_t n = asked_conn.shape[0], m = conn.shape[0], i, k, used = 0, d
    cdef long long key
    cdef int sides
    cdef bint full = False
    slots_ = np.empty(2 * n, dtype=np.int64)
    cdef long long[::1] slots = slots_
    with nogil:
        for i in range(n):
            sides = 2 if both[i] else 1
            for d in range(sides):
                key = 2 * asked_conn[i] + (asked_side[i] if d == 0 else 1 - asked_side[i])
                k = _slot(key, keys, shift)
                if k == -1:
                    full = True
                    break
                if keys[k] == -1:
                    keys[k] = key
                    first[k] = at[i]
                    slots[used] = k
                    used += 1
                elif at[i] < first[k] or first[k] != first[k]:  # the earliest time; NaN only if all are
                    first[k] = at[i]
            if full:
                break
        if not full:
            for i in range(m):
                k = _slot(2 * conn[i] + side[i], keys, shift)
                early[i] = k != -1 and keys[k] != -1 and first[k] < when[i]
        for i in range(used):
            keys[slots[i]] = -1
    if full:
        raise ValueError("the re-key hash table is full: it must have more slots than twice the requests")
