# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled fast path of :mod:`pspsim.wire.psp_packet` for the common case.

It handles untagged Ethernet frames carrying IPv4 or IPv6, AES-GCM
versions (0, 1), no cookie and no header extension, in transport and
tunnel mode, and produces exactly the bytes of the general Python
implementation (held equal by ``tests/test_psp_fastpath.py``).  For any
other frame, and for every packet that the receiver must reject, it
returns ``None`` and the general implementation runs, so that errors are
raised in one place only.  Crypto is the same ``AESGCM`` object in both;
where cryptography has ``encrypt_into`` the fast path seals straight into
the new frame and, when only verifying, opens into a scratch buffer (no
copy of each packet).  Crypto is lent the packet's bytes through reused
:class:`Span` objects (no memoryview made per packet), and each SA's
``encrypt_into``/``decrypt_into`` is looked up once; :class:`Lookups` finds
receive SAs in the device's cache as ``sa_for`` would (the same hits, misses
and evictions).  Batches run in :mod:`pspsim.wire._psp_batch`, which uses the
declarations of ``_psp_fast.pxd``.
"""

from cpython.buffer cimport PyBUF_FORMAT, PyBUF_ND, PyBUF_READ, PyBUF_STRIDES, PyBUF_WRITABLE, PyBUF_WRITE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Calloc, PyMem_Free, PyMem_Realloc
from cpython.memoryview cimport PyMemoryView_FromMemory
from libc.string cimport memcpy

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pspsim.wire.errors import IvSpaceExhausted, PspAuthFailure, PspRejected
from pspsim.wire.psp_sa import DeviceKeys


#: newer cryptography seals into and opens into a given buffer (no copy of each packet)
cdef bint INTO = hasattr(AESGCM, "encrypt_into") and hasattr(AESGCM, "decrypt_into")


cdef inline unsigned int rd16(const unsigned char* p) noexcept:
    return (p[0] << 8) | p[1]


cdef inline unsigned int ipv4_checksum(const unsigned char* h, Py_ssize_t hlen) noexcept:
    cdef unsigned long s = 0
    cdef Py_ssize_t i
    for i in range(0, hlen, 2):
        s += rd16(h + i)
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


cdef int locate_ip(const unsigned char* f, Py_ssize_t n, Py_ssize_t* hlen, int* proto, Py_ssize_t* end) noexcept:
    """IP version (4 or 6) of an untagged frame that passes every check of
    ``parse_ip``, filling header length, protocol and end; 0 otherwise."""
    cdef unsigned int et
    if n < 34:
        return 0
    et = rd16(f + 12)
    if et == 0x0800:
        if f[14] >> 4 != 4 or (f[14] & 0x0F) < 5:
            return 0
        hlen[0] = (f[14] & 0x0F) * 4
        end[0] = 14 + rd16(f + 16)
        if end[0] < 14 + hlen[0] or end[0] > n:
            return 0
        proto[0] = f[23]
        return 4
    if et == 0x86DD:
        if n < 54 or f[14] >> 4 != 6:
            return 0
        hlen[0] = 40
        end[0] = 54 + rd16(f + 18)
        if end[0] > n:
            return 0
        proto[0] = f[20]
        return 6
    return 0


cdef char* BYTE_FORMAT = "B"  # a static C string: the buffer format of unsigned bytes


cdef class Span:
    """A bytes-like view of memory its user owns, pointed anew before each use
    (``point``): handing crypto a buffer this way makes no object per packet, as
    a memoryview would.  It is lent to one call at a time, which keeps no view."""

    def __getbuffer__(self, Py_buffer* view, int flags):
        # what PyBuffer_FillInfo fills, but through Cython's `view.obj = self`: FillInfo would
        # overwrite the reference to None that Cython's wrapper put there, and leak it
        if flags & PyBUF_WRITABLE and self.readonly:
            raise BufferError("read-only span")
        view.obj = self
        view.buf = self.ptr
        view.len = self.size
        view.readonly = self.readonly
        view.itemsize = 1
        view.format = BYTE_FORMAT if flags & PyBUF_FORMAT else NULL
        view.ndim = 1
        view.shape = &view.len if flags & PyBUF_ND else NULL
        view.strides = &view.itemsize if flags & PyBUF_STRIDES else NULL
        view.suboffsets = NULL
        view.internal = NULL

    def __releasebuffer__(self, Py_buffer* view):
        pass


cdef inline Span point(Span span, const unsigned char* ptr, Py_ssize_t size, bint readonly):
    """``span`` over the ``size`` bytes at ``ptr``."""
    span.ptr, span.size, span.readonly = <char*>ptr, size, readonly
    return span


cdef class Sealer:
    """One transmit SA's fast path, with its IV counter: ``seal(frame)`` takes the
    next IV; frames the fast path does not handle go to ``fallback(frame, iv)``."""


    def __init__(self, aead, unsigned long spi, int version, bint tunnel, int transport_co, int v4_tunnel_co,
                 int v6_tunnel_co, fallback, unsigned long long first_iv):
        self.aead = aead
        self.seal_into = aead.encrypt_into if INTO else None  # looked up once, not per packet
        self.src, self.dst = Span(), Span()
        self.spi = spi
        self.version = version
        self.tunnel = tunnel
        self.transport_co = transport_co
        self.v4_tunnel_co = v4_tunnel_co
        self.v6_tunnel_co = v6_tunnel_co
        self.fallback = fallback
        self.next_iv = first_iv
        self.exhausted = False

    def seal(self, frame):
        """The frame encapsulated and sealed with the next IV (see ``PspSender.seal``)."""
        if type(frame) is bytes:
            return self.seal_at(<const unsigned char*>PyBytes_AS_STRING(frame), len(frame), frame)
        return self.seal_at(NULL, 0, frame)

    cdef object seal_at(self, const unsigned char* f, Py_ssize_t n, object frame):
        """``seal`` of the ``n`` bytes at ``f`` (``frame``: those bytes as an object,
        or ``None`` to make them only if the general path needs them; ``f`` is
        ``NULL`` for an object that is not ``bytes``)."""
        if self.exhausted:
            raise IvSpaceExhausted("IV space of this SA is exhausted: rekey")
        cdef unsigned long long iv = self.next_iv
        out = None
        if f != NULL:
            out = encap(f, n, self.aead, self.spi, self.version, iv, self.tunnel,
                        self.transport_co, self.v4_tunnel_co, self.v6_tunnel_co, self.seal_into, self.src, self.dst)
        if out is None:
            out = self.fallback(PyBytes_FromStringAndSize(<const char*>f, n) if frame is None else frame, iv)
        if iv == 0xFFFFFFFFFFFFFFFF:
            self.exhausted = True
        else:
            self.next_iv = iv + 1
        return out


cpdef encapsulate(bytes frame, object aead, unsigned long spi, int version, unsigned long long iv,
                  bint tunnel, int transport_co, int v4_tunnel_co, int v6_tunnel_co):
    """The encapsulated frame, or ``None`` when the general path must run."""
    return encap(<const unsigned char*>PyBytes_AS_STRING(frame), len(frame), aead, spi, version, iv, tunnel,
                 transport_co, v4_tunnel_co, v6_tunnel_co)


cdef object encap(const unsigned char* f, Py_ssize_t n, object aead, unsigned long spi, int version,
                  unsigned long long iv, bint tunnel, int transport_co, int v4_tunnel_co, int v6_tunnel_co,
                  object seal_into=None, Span src=None, Span dst=None):
    """``encapsulate`` of the ``n`` bytes at ``f`` (``seal_into``: ``aead.encrypt_into``
    if the caller has it at hand; ``src``, ``dst``: spans to lend it, if the
    caller has them)."""
    cdef Py_ssize_t hlen, end, start, clear_len, outer_hlen, udp_len, pos, sealed_len
    cdef int proto, next_header, co, ipv
    cdef unsigned int sport
    cdef unsigned char hdr[16]
    cdef unsigned char* o
    ipv = locate_ip(f, n, &hlen, &proto, &end)
    if ipv == 0 or version > 1:
        return None
    if not tunnel:
        if ipv == 6 and proto != 6 and proto != 17:
            return None
        start, next_header, co, outer_hlen = 14 + hlen, proto, transport_co, hlen
    elif ipv == 4:
        if hlen != 20:
            return None
        start, next_header, co, outer_hlen = 14, 4, v4_tunnel_co, 20
    else:
        start, next_header, co, outer_hlen = 14, 41, v6_tunnel_co, 40
    clear_len = co * 4
    if clear_len > end - start:
        return None
    hdr[0] = next_header
    hdr[1] = 1
    hdr[2] = co
    hdr[3] = (version << 2) | 1
    wr32(hdr + 4, spi)
    wr32(hdr + 8, <unsigned long>(iv >> 32))  # wr32 writes the low 32 bits (C arithmetic, no Python ints)
    wr32(hdr + 12, <unsigned long>iv)
    nonce = PyBytes_FromStringAndSize(<char*>hdr + 4, 12)
    aad = PyBytes_FromStringAndSize(NULL, 16 + clear_len)
    memcpy(PyBytes_AS_STRING(aad), hdr, 16)
    memcpy(PyBytes_AS_STRING(aad) + 16, f + start, clear_len)
    sealed_len = end - start - clear_len + 16
    sealed = None
    if not INTO:
        sealed = aead.encrypt(nonce, PyBytes_FromStringAndSize(<const char*>f + start + clear_len,
                                                             sealed_len - 16), aad)
    udp_len = 8 + 16 + clear_len + sealed_len
    if udp_len + (outer_hlen if ipv == 4 else 0) > 0xFFFF:
        return None
    if (proto == 6 or proto == 17) and end - (14 + hlen) >= 4:
        sport = rd16(f + 14 + hlen) ^ rd16(f + 16 + hlen)
    else:
        sport = 1000
    out = PyBytes_FromStringAndSize(NULL, 14 + outer_hlen + udp_len)
    o = <unsigned char*>PyBytes_AS_STRING(out)
    memcpy(o, f, 14 + outer_hlen)
    if ipv == 4:
        if tunnel:
            o[14] = 0x45
        wr16(o + 16, outer_hlen + udp_len)
        o[23] = 17
        o[24] = 0
        o[25] = 0
        wr16(o + 24, ipv4_checksum(o + 14, outer_hlen))
    else:
        wr16(o + 18, udp_len)
        o[20] = 17
    pos = 14 + outer_hlen
    wr16(o + pos, sport)
    wr16(o + pos + 2, 1000)
    wr16(o + pos + 4, udp_len)
    wr16(o + pos + 6, 0)
    memcpy(o + pos + 8, hdr, 16)
    memcpy(o + pos + 24, f + start, clear_len)
    if INTO:  # straight into the new frame, which nothing else holds yet
        if src is None:
            aead.encrypt_into(nonce, PyMemoryView_FromMemory(<char*>f + start + clear_len, sealed_len - 16, PyBUF_READ),
                              aad, PyMemoryView_FromMemory(<char*>o + pos + 24 + clear_len, sealed_len, PyBUF_WRITE))
        else:
            seal_into(nonce, point(src, f + start + clear_len, sealed_len - 16, True), aad,
                      point(dst, o + pos + 24 + clear_len, sealed_len, False))
    else:
        memcpy(o + pos + 24 + clear_len, PyBytes_AS_STRING(sealed), sealed_len)
    return out


def decapsulate(bytes frame, object keys, object versions, type opened_type, bint build=True):
    """An ``opened_type`` tuple (frame, spi, version, iv, protected_len), or ``None``.

    ``versions`` is ``None`` when every version is accepted.  With ``build``
    false only verification happens, and ``True`` is returned instead (a
    receiver model that counts outcomes needs no cleartext frame)."""
    return decap(frame, keys, versions, opened_type, build)


cdef class Lookups:
    """The receive-SA lookups of a batch over ``keyring``, each what
    ``keyring[h].sa_for`` would give, with the same counts.  For
    :class:`DeviceKeys` itself, a hit is the dictionary lookup ``sa_for`` makes
    in ``keys._cache``, counted here per device and added to ``cache_hits`` at
    the end (:meth:`flush`); a miss calls ``sa_for`` (which derives, caches, may
    evict, and counts); a packet with the previous packet's device, SPI and
    version takes its SA (a hit: the entry was found or made by that lookup,
    and nothing came between).  A subclass's ``sa_for`` is called for every
    packet.  Each SA's ``decrypt_into`` is looked up once."""


    def __cinit__(self, list keyring):
        self.keyring, self.devices, self.last = keyring, len(keyring), -1
        self.caches = [None] * self.devices  # each device's cache dict (False: ask sa_for)
        self.opens = {}
        self.hits = <Py_ssize_t*>PyMem_Calloc(max(self.devices, 1), sizeof(Py_ssize_t))
        if self.hits == NULL:
            raise MemoryError()
        self.src, self.dst = Span(), Span()

    def __dealloc__(self):
        PyMem_Free(self.hits)

    cdef object find(self, Py_ssize_t h, unsigned long spi, int version):
        cache = self.caches[h]
        if cache is None:
            keys = self.keyring[h]
            cache = self.caches[h] = keys._cache if type(keys) is DeviceKeys else False
        elif h == self.last and spi == self.spi and version == self.version and cache is not False:
            self.hits[h] += 1
            return self.sa
        sa = cache.get(spi | (<unsigned long long>version << 32)) if cache is not False else None
        if sa is None:
            sa = self.keyring[h].sa_for(spi, version)
        else:
            self.hits[h] += 1
        opener = self.opens.get(sa)
        if opener is None and INTO:
            opener = self.opens[sa] = sa._aead.decrypt_into
        self.last, self.spi, self.version, self.sa, self.open_into = h, spi, version, sa, opener
        return sa

    cdef void flush(self) except *:
        cdef Py_ssize_t h
        for h in range(self.devices):
            if self.hits[h]:
                self.keyring[h].cache_hits += self.hits[h]
                self.hits[h] = 0


cdef object decap(bytes frame, object keys, object versions, type opened_type, bint build,
                  unsigned char* scratch=NULL, Lookups lookups=None, Py_ssize_t h=-1):
    """``decapsulate``; with ``scratch`` (at least ``len(frame)`` bytes, only when
    ``INTO`` and not ``build``) the cleartext is decrypted into it and dropped;
    with ``lookups``, SAs are found through it (``keys`` is its device ``h``; see
    :class:`Lookups`)."""
    cdef const unsigned char* f = <const unsigned char*>PyBytes_AS_STRING(frame)
    cdef Py_ssize_t n = len(frame), hlen, end, u, p, protected_len, clear_len, inner_len, outer_len
    cdef int proto, ipv, version, next_header
    cdef unsigned long spi
    cdef unsigned long long iv
    cdef unsigned char* o
    ipv = locate_ip(f, n, &hlen, &proto, &end)
    if ipv == 0 or proto != 17:
        return None
    u = 14 + hlen
    p = u + 8
    if end - p < 32 or rd16(f + u + 2) != 1000 or rd16(f + u + 4) != end - u:
        return None
    if f[p + 1] != 1 or (f[p + 3] & 0x03) != 1:  # header extension or cookie, or always-1 clear
        return None
    version = (f[p + 3] >> 2) & 0x0F
    if version > 1 or (versions is not None and version not in versions):
        return None
    protected_len = end - p - 32
    clear_len = (f[p + 2] & 0x3F) * 4
    if clear_len > protected_len:
        return None
    spi = (<unsigned long>rd16(f + p + 4) << 16) | rd16(f + p + 6)
    iv = (<unsigned long long>rd16(f + p + 8) << 48) | (<unsigned long long>rd16(f + p + 10) << 32) \
        | (<unsigned long long>rd16(f + p + 12) << 16) | rd16(f + p + 14)
    sa = keys.sa_for(spi, version) if lookups is None else lookups.find(h, spi, version)
    aad = PyBytes_FromStringAndSize(<const char*>f + p, 16 + clear_len)
    nonce = PyBytes_FromStringAndSize(<const char*>f + p + 4, 12)
    try:
        if scratch != NULL:  # verification only: the cleartext goes to the scratch buffer
            if lookups is None:
                sa._aead.decrypt_into(nonce, PyMemoryView_FromMemory(
                    <char*>f + p + 16 + clear_len, protected_len - clear_len + 16, PyBUF_READ), aad,
                    PyMemoryView_FromMemory(<char*>scratch, protected_len - clear_len, PyBUF_WRITE))
            else:
                lookups.open_into(nonce, point(lookups.src, f + p + 16 + clear_len,
                                                             protected_len - clear_len + 16, True), aad,
                                  point(lookups.dst, scratch, protected_len - clear_len, False))
            return True
        plain = sa._aead.decrypt(nonce, frame[p + 16 + clear_len:end], aad)
    except InvalidTag:
        raise PspAuthFailure(f"ICV mismatch for SPI {spi:08x}") from None
    if not build:
        return True
    next_header = f[p]
    inner_len = clear_len + len(plain)
    if next_header == 4 or next_header == 41:
        out = PyBytes_FromStringAndSize(NULL, 14 + inner_len)
        o = <unsigned char*>PyBytes_AS_STRING(out)
        memcpy(o, f, 12)
        wr16(o + 12, 0x0800 if next_header == 4 else 0x86DD)
        memcpy(o + 14, f + p + 16, clear_len)
        memcpy(o + 14 + clear_len, PyBytes_AS_STRING(plain), len(plain))
        return tuple.__new__(opened_type, (out, spi, version, iv, protected_len))
    outer_len = 14 + hlen
    out = PyBytes_FromStringAndSize(NULL, outer_len + inner_len)
    o = <unsigned char*>PyBytes_AS_STRING(out)
    memcpy(o, f, outer_len)
    if ipv == 4:
        wr16(o + 16, hlen + inner_len)
        o[23] = next_header
        o[24] = 0
        o[25] = 0
        wr16(o + 24, ipv4_checksum(o + 14, hlen))
    else:
        wr16(o + 18, inner_len)
        o[20] = next_header
    memcpy(o + outer_len, f + p + 16, clear_len)
    memcpy(o + outer_len + clear_len, PyBytes_AS_STRING(plain), len(plain))
    return tuple.__new__(opened_type, (out, spi, version, iv, protected_len))
