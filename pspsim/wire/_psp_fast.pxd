# cython: language_level=3
"""What :mod:`pspsim.wire._psp_batch` uses of :mod:`pspsim.wire._psp_fast`: the
transmit SA's fast path, the buffers lent to crypto, the receive-SA lookups of
a batch and verification of one frame (see ``_psp_fast.pyx``)."""


cdef inline void wr16(unsigned char* p, unsigned int v) noexcept:
    p[0] = (v >> 8) & 0xFF
    p[1] = v & 0xFF


cdef inline void wr32(unsigned char* p, unsigned long v) noexcept:
    wr16(p, (v >> 16) & 0xFFFF)
    wr16(p + 2, v & 0xFFFF)


cdef class Span:
    cdef char* ptr
    cdef Py_ssize_t size
    cdef bint readonly


cdef class Sealer:
    cdef object aead, fallback, seal_into
    cdef Span src, dst
    cdef unsigned long spi
    cdef int version, transport_co, v4_tunnel_co, v6_tunnel_co
    cdef bint tunnel
    cdef public unsigned long long next_iv
    cdef public bint exhausted

    cdef object seal_at(self, const unsigned char* f, Py_ssize_t n, object frame)


cdef class Lookups:
    cdef list keyring, caches
    cdef dict opens
    cdef Py_ssize_t* hits
    cdef Py_ssize_t devices, last
    cdef object sa, open_into
    cdef unsigned long spi
    cdef int version
    cdef Span src, dst

    cdef object find(self, Py_ssize_t h, unsigned long spi, int version)
    cdef void flush(self) except *


cdef object decap(bytes frame, object keys, object versions, type opened_type, bint build,
                  unsigned char* scratch=*, Lookups lookups=*, Py_ssize_t h=*)
