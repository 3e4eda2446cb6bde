# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled ESP seal for the common case (IV = sequence number); the same bytes as
:meth:`pspsim.wire.esp.EspSA.seal`, held equal by ``tests/test_esp_fastpath.py``."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.string cimport memcpy


cdef inline void wr32(unsigned char* p, unsigned long long v) noexcept:
    p[0] = (v >> 24) & 0xFF
    p[1] = (v >> 16) & 0xFF
    p[2] = (v >> 8) & 0xFF
    p[3] = v & 0xFF


def seal(object aead, bytes salt, unsigned long spi, unsigned long long seq, bytes data, int next_header,
         bint esn):
    """SPI || low 32 bits of seq || IV (= seq) || AES-GCM(data || 1,2,3.. || pad length || next header)."""
    cdef Py_ssize_t n = len(data)
    cdef Py_ssize_t pad = (4 - (n + 2) % 4) % 4
    cdef Py_ssize_t i
    cdef unsigned char head[16]
    cdef unsigned char nonce_bytes[12]
    cdef unsigned char aad_bytes[12]
    cdef unsigned char* p
    wr32(head, spi)
    wr32(head + 4, <unsigned long>seq)  # wr32 writes the low 32 bits (C arithmetic, no Python ints)
    wr32(head + 8, seq >> 32)
    wr32(head + 12, <unsigned long>seq)
    memcpy(nonce_bytes, PyBytes_AS_STRING(salt), 4)
    memcpy(nonce_bytes + 4, head + 8, 8)
    plaintext = PyBytes_FromStringAndSize(NULL, n + pad + 2)
    p = <unsigned char*>PyBytes_AS_STRING(plaintext)
    memcpy(p, PyBytes_AS_STRING(data), n)
    for i in range(pad):
        p[n + i] = i + 1
    p[n + pad] = pad
    p[n + pad + 1] = next_header
    if esn:
        wr32(aad_bytes, spi)
        wr32(aad_bytes + 4, seq >> 32)
        wr32(aad_bytes + 8, <unsigned long>seq)
        aad = PyBytes_FromStringAndSize(<char*>aad_bytes, 12)
    else:
        aad = PyBytes_FromStringAndSize(<char*>head, 8)
    sealed = aead.encrypt(PyBytes_FromStringAndSize(<char*>nonce_bytes, 12), plaintext, aad)
    out = PyBytes_FromStringAndSize(NULL, 16 + len(sealed))
    p = <unsigned char*>PyBytes_AS_STRING(out)
    memcpy(p, head, 16)
    memcpy(p + 16, PyBytes_AS_STRING(sealed), len(sealed))
    return out
