"""The PSP header: field layout, encoding and decoding.

Layout (offsets from the start of the PSP header, network byte order)::

    0      next header (IP protocol of what follows: 6/17 transport, 4/41 tunnel)
    1      header extension length, in 8-byte units after the first 8 bytes
    2      bits 7..6 reserved (sent 0, ignored on receive), 5..0 crypt offset
    3      bit 7 S (sample), 6 D (drop), 5..2 version, 1 V (cookie), 0 always 1
    4..7   SPI (bit 31 selects the master key)
    8..15  IV (64 bits)
    16..23 virtualization cookie, present when V = 1
    ...    further header-extension bytes (opaque), up to the header length

The crypt offset counts 4-byte units from the end of the IV, so a present
cookie counts toward it.  Sources: google/psp ``src/psp.h`` and the
Wireshark dissector ``wireshark/psp.lua``; ``shared`` fact sheet section 1.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pspsim.wire.errors import PspBadPacket, PspFramingError

PSP_UDP_PORT = 1000
BASE_HEADER_LEN = 16
VC_LEN = 8
ICV_LEN = 16
CRYPT_OFFSET_UNIT = 4
MAX_CRYPT_OFFSET = 63

_BASE = struct.Struct("!BBBBIQ")


def flags_byte(version: int, *, vc: bool = False, sample: bool = False, drop: bool = False) -> int:
    """Byte 3 of the header: S, D, version, V and the always-1 bit."""
    return (sample << 7) | (drop << 6) | (version << 2) | (vc << 1) | 1


@dataclass(frozen=True, slots=True)
class PspHeader:
    """One PSP header, as fields.  ``crypt_offset`` is in 4-byte units."""

    next_header: int
    spi: int
    iv: int
    version: int = 0
    crypt_offset: int = 0
    sample: bool = False
    drop: bool = False
    vc: bytes | None = None
    extension: bytes = b""

    def __post_init__(self) -> None:
        _check_range("next_header", self.next_header, 0xFF)
        _check_range("spi", self.spi, 0xFFFF_FFFF)
        _check_range("iv", self.iv, 0xFFFF_FFFF_FFFF_FFFF)
        _check_range("version", self.version, 3)
        _check_range("crypt_offset", self.crypt_offset, MAX_CRYPT_OFFSET)
        if self.vc is not None and len(self.vc) != VC_LEN:
            raise ValueError(f"virtualization cookie must be {VC_LEN} bytes, got {len(self.vc)}")
        if len(self.extension) % 8:
            raise ValueError("header extension must be a multiple of 8 bytes")
        if (len(self.extension) + (VC_LEN if self.vc is not None else 0)) // 8 + 1 > 0xFF:
            raise ValueError("header extension too long for the 8-bit length field")

    @property
    def hdr_ext_len(self) -> int:
        """The header-extension-length field: 1 plus the 8-byte words after the IV."""
        return 1 + (len(self.extension) + (VC_LEN if self.vc is not None else 0)) // 8

    @property
    def length(self) -> int:
        """Header length in bytes, cookie and extensions included."""
        return 8 + 8 * self.hdr_ext_len

    def encode(self) -> bytes:
        base = _BASE.pack(
            self.next_header,
            self.hdr_ext_len,
            self.crypt_offset,
            flags_byte(self.version, vc=self.vc is not None, sample=self.sample, drop=self.drop),
            self.spi,
            self.iv,
        )
        return base + (self.vc or b"") + self.extension

    @classmethod
    def decode(cls, data: bytes, offset: int = 0) -> PspHeader:
        """Decode the header at ``data[offset:]``.

        Raises :class:`PspFramingError` when the header does not fit in
        ``data`` and :class:`PspBadPacket` when the always-1 bit is clear or
        the version field is outside 0..3.
        """
        if len(data) - offset < BASE_HEADER_LEN:
            raise PspFramingError("packet shorter than the 16-byte PSP header")
        next_header, hel, co, flags, spi, iv = _BASE.unpack_from(data, offset)
        if not flags & 1:
            raise PspBadPacket("always-1 bit of the PSP header is 0")
        version = (flags >> 2) & 0x0F
        if version > 3:
            raise PspBadPacket(f"unknown PSP version {version}")
        if hel == 0:
            raise PspFramingError("header extension length 0 (minimum is 1)")
        end = offset + 8 + 8 * hel
        if end > len(data):
            raise PspFramingError("header extension runs past the end of the packet")
        ext = bytes(data[offset + BASE_HEADER_LEN : end])
        has_vc = bool(flags & 0x02)
        if has_vc and len(ext) < VC_LEN:
            raise PspFramingError("V bit set but the header has no room for the cookie")
        return cls(
            next_header=next_header,
            spi=spi,
            iv=iv,
            version=version,
            crypt_offset=co & 0x3F,
            sample=bool(flags & 0x80),
            drop=bool(flags & 0x40),
            vc=ext[:VC_LEN] if has_vc else None,
            extension=ext[VC_LEN:] if has_vc else ext,
        )


def _check_range(name: str, value: int, high: int) -> None:
    if not 0 <= value <= high:
        raise ValueError(f"{name} must be in 0..{high}, got {value}")
