# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Batches of the compiled PSP fast path (:mod:`pspsim.wire._psp_fast`), for a
packet generator such as the packet tier: :class:`SealQueue` seals frames from
templates in order, as they are asked for; :func:`verify_each` verifies a
batch of frames (sealing a queue's just before they are needed), finding the
receive SAs as ``sa_for`` would and lending crypto the bytes without making an
object a packet.  The same bytes and counts as the general path (held equal by
``tests/test_psp_fastpath.py`` and ``tests/test_packet_tier.py``).
"""

from cpython.bytes cimport PyBytes_AS_STRING
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from libc.string cimport memcpy

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pspsim.wire._psp_fast cimport Lookups, Sealer, decap, wr32

from pspsim.wire.errors import PspRejected


#: newer cryptography opens into a given buffer (no copy of each packet)
cdef bint INTO = hasattr(AESGCM, "encrypt_into") and hasattr(AESGCM, "decrypt_into")


cdef class SealQueue:
    """Frames to seal in order (each sender's IVs in order), each the template
    ``templates[codes[k]] = (head, tail)`` with its two 32-bit words between them
    (``head + word0 + word1 + tail``, what ``seal`` of those bytes returns), by
    ``sealers[which[k]]``; ``frames`` holds the ones sealed so far.  Each frame is
    laid out in one reused buffer, not made as an object.  The per-packet
    arguments are int64 buffers, read without making Python ints.  With
    ``lengths``, frame ``k`` must come out ``lengths[k]`` bytes long (else
    ``ValueError``)."""

    cdef list sealers, templates
    cdef readonly list frames
    cdef readonly Py_ssize_t count
    cdef const long long[::1] which, codes, words0, words1
    cdef const double[::1] lengths
    cdef bint check
    cdef unsigned char* buf
    cdef Py_ssize_t cap

    def __cinit__(self, list sealers, const long long[::1] which, list templates, const long long[::1] codes,
                  const long long[::1] words0, const long long[::1] words1, lengths=None):
        self.count = codes.shape[0]
        if which.shape[0] != self.count or words0.shape[0] != self.count or words1.shape[0] != self.count:
            raise ValueError(f"{self.count} templates, {which.shape[0]} senders, {words0.shape[0]} and "
                             f"{words1.shape[0]} words")
        self.sealers, self.templates, self.frames = sealers, templates, []
        self.which, self.codes, self.words0, self.words1 = which, codes, words0, words1
        self.check = lengths is not None
        if self.check:
            self.lengths = lengths
            if self.lengths.shape[0] != self.count:
                raise ValueError(f"{self.lengths.shape[0]} lengths for {self.count} frames")

    def __dealloc__(self):
        PyMem_Free(self.buf)

    def upto(self, Py_ssize_t n):
        """Seal the frames before ``n`` (at most all) that are not sealed yet."""
        self.seal_to(n)

    cdef int seal_to(self, Py_ssize_t n) except -1:
        cdef Py_ssize_t k, m, hn, tn, c, w
        cdef Py_ssize_t kinds = len(self.templates), senders = len(self.sealers)
        cdef unsigned char* grown
        cdef bytes head, tail
        cdef Sealer sealer
        for k in range(len(self.frames), min(n, self.count)):
            c, w = self.codes[k], self.which[k]
            if not (0 <= c < kinds and 0 <= w < senders):
                raise IndexError(f"packet {k}: template {c} of {kinds}, sender {w} of {senders}")
            head, tail = self.templates[c]
            hn, tn = len(head), len(tail)
            m = hn + 8 + tn
            if m > self.cap:
                grown = <unsigned char*>PyMem_Realloc(self.buf, m)
                if grown == NULL:
                    raise MemoryError()
                self.buf, self.cap = grown, m
            memcpy(self.buf, PyBytes_AS_STRING(head), hn)
            wr32(self.buf + hn, <unsigned long>self.words0[k])
            wr32(self.buf + hn + 4, <unsigned long>self.words1[k])
            memcpy(self.buf + hn + 8, PyBytes_AS_STRING(tail), tn)
            sealer = <Sealer>self.sealers[w]
            frame = sealer.seal_at(self.buf, m, None)
            if self.check and len(frame) != self.lengths[k]:
                raise ValueError(f"frame {k} is {len(frame)} bytes long, not {self.lengths[k]:.0f}")
            self.frames.append(frame)
        return 0


def verify_each(list frames, const long long[::1] indices, list keyring, const long long[::1] hosts,
                bint release=False, SealQueue queue=None, list rejections=None):
    """``decapsulate(frames[i], keyring[hosts[i]], None, tuple, False)`` for each
    ``i`` of ``indices``, in order: a list of ``True`` (verified) or ``None`` (left
    to the general path); the first rejection raises, as it would there.  With
    ``release``, each verified frame's place in ``frames`` is set to ``None``.
    With ``queue`` (whose ``frames`` is ``frames``), a frame not sealed yet is
    sealed just before it is needed (with those before it), so that it is
    verified while still in the CPU cache.  With ``rejections`` (a list), a
    rejected packet does not stop the batch: its result is ``False`` and
    ``(k, exception)`` is appended (``k``: its place in ``indices``), the counts
    being those of rejecting it one by one.  ``indices`` and ``hosts`` are int64
    buffers."""
    cdef Py_ssize_t k, i, h, count = indices.shape[0], cap = 0
    cdef Py_ssize_t nframes = len(frames) if queue is None else queue.count
    cdef Py_ssize_t nhosts = hosts.shape[0], devices = len(keyring)
    if queue is not None and queue.frames is not frames:
        raise ValueError("frames must be the queue's")
    if release and rejections is None:  # a rejection would raise with verified frames already let go
        raise ValueError("release needs rejections")
    cdef unsigned char* scratch = NULL
    cdef unsigned char* grown
    cdef bytes frame
    cdef Lookups lookups = Lookups(keyring)
    out = [None] * count
    try:
        for k in range(count):
            i = indices[k]
            if not (0 <= i < nframes and i < nhosts):
                raise IndexError(f"packet {i} of {nframes} frames and {nhosts} receivers")
            h = hosts[i]
            if not 0 <= h < devices:
                raise IndexError(f"packet {i}: receiver {h} of {devices}")
            if queue is not None and i >= len(frames):
                queue.seal_to(i + 1)
            frame = <bytes?>frames[i]
            if INTO and len(frame) > cap:
                grown = <unsigned char*>PyMem_Realloc(scratch, len(frame))
                if grown == NULL:
                    raise MemoryError()
                scratch, cap = grown, len(frame)
            if rejections is None:
                good = decap(frame, keyring[h], None, tuple, False, scratch, lookups, h)
            else:
                try:
                    good = decap(frame, keyring[h], None, tuple, False, scratch, lookups, h)
                except PspRejected as exc:
                    rejections.append((k, exc))
                    good = False
            out[k] = good
            if release and good is True:
                frames[i] = None
    finally:
        PyMem_Free(scratch)
        lookups.flush()
    return out
