"""PSP encapsulation of Ethernet frames, transport and tunnel mode, IPv4 and IPv6.

Byte-compatible with the reference implementation (google/psp
``src/psp_encrypt.c`` / ``psp_decrypt.c``):

* outer UDP: destination port 1000; source port = inner L4 source port XOR
  destination port (1000 when the inner protocol is neither TCP nor UDP);
  checksum 0; length covers UDP, PSP header, protected bytes and ICV;
* transport mode keeps the IP header (IPv4 options included), rewrites its
  length and protocol (17) and recomputes the IPv4 checksum; PSP next header
  = the original protocol.  As in the reference, IPv6 transport mode carries
  only TCP and UDP (IPv6 extension headers are not walked);
* tunnel mode protects the whole inner IP packet; the outer header is a copy
  of the inner one (IPv4: first 20 bytes, IHL forced to 5; IPv6: 40 bytes)
  with length and protocol rewritten; next header 4 (IPv4) or 41 (IPv6);
* the cookie, when present, is counted inside the crypt offset.

Differences, both deliberate: the IP packet is taken from its length field,
so Ethernet padding after it is dropped (the reference would encrypt it);
and a crypt offset may reach into the cookie of a packet with an empty
payload (the reference refuses such packets, yet its decryptor accepts them).
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from pspsim.wire._compiled import compiled
from pspsim.wire.errors import (
    ConfigError,
    EncapsulationError,
    IvSpaceExhausted,
    NonceReuseError,
    NotPspPacket,
    PspBadPacket,
    PspFramingError,
    PspRejected,
    as_bytes,
    refuse_copy,
)
from pspsim.wire.frames import (
    ETHERTYPE_IPV4,
    ETHERTYPE_IPV6,
    IPPROTO_IPIP,
    IPPROTO_IPV6,
    IPPROTO_TCP,
    IPPROTO_UDP,
    UDP_HEADER,
    UDP_HEADER_LEN,
    ipv4_header_with,
    parse_ip,
    rewritten_ip_header,
)
from pspsim.wire.psp_header import (
    BASE_HEADER_LEN,
    ICV_LEN,
    MAX_CRYPT_OFFSET,
    PSP_UDP_PORT,
    VC_LEN,
)
from pspsim.wire.psp_kdf import ENCRYPTING_VERSIONS
from pspsim.wire.psp_sa import DeviceKeys, PspSA

_BASE = struct.Struct("!BBBBIQ")
_WORDS = struct.Struct("!II")
_PSP_PORT_BYTES = PSP_UDP_PORT.to_bytes(2, "big")
_TUNNEL_ETHERTYPE = {
    IPPROTO_IPIP: ETHERTYPE_IPV4.to_bytes(2, "big"),
    IPPROTO_IPV6: ETHERTYPE_IPV6.to_bytes(2, "big"),
}
ALL_VERSIONS = frozenset({0, 1, 2, 3})
MAX_IV = 0xFFFF_FFFF_FFFF_FFFF

_psp_fast = compiled("_psp_fast")  # the fast path for common frames (see _psp_fast.pyx)
_psp_batch = compiled("_psp_batch")  # its batches (seal_queue, verify_each), built on _psp_fast


@dataclass(frozen=True, slots=True)
class PspEncap:
    """How a sender encapsulates: mode, crypt offsets (4-byte units), cookie.

    The reference configuration names one crypt offset per case; the one
    used depends on the mode and the IP version of each packet.  Linux
    writes crypt offset 0 and no cookie, which is the default here.
    """

    mode: str = "transport"
    transport_crypt_offset: int = 0
    ipv4_tunnel_crypt_offset: int = 0
    ipv6_tunnel_crypt_offset: int = 0
    vc: bytes | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("transport", "tunnel"):
            raise ConfigError(f"mode must be 'transport' or 'tunnel', got {self.mode!r}")
        for name in ("transport_crypt_offset", "ipv4_tunnel_crypt_offset", "ipv6_tunnel_crypt_offset"):
            value = getattr(self, name)
            if not 0 <= value <= MAX_CRYPT_OFFSET:
                raise ConfigError(f"{name} must be in 0..{MAX_CRYPT_OFFSET}, got {value}")
        if self.vc is not None and len(self.vc) != VC_LEN:
            raise ConfigError(f"virtualization cookie must be {VC_LEN} bytes")

    def overhead(self, ip_version: int = 4) -> int:
        """Bytes this encapsulation adds to an IP packet (no padding in PSP)."""
        added = UDP_HEADER_LEN + BASE_HEADER_LEN + ICV_LEN + (VC_LEN if self.vc is not None else 0)
        if self.mode == "tunnel":
            added += 20 if ip_version == 4 else 40
        return added


class PspOpened(NamedTuple):
    """A verified, decapsulated PSP packet."""

    frame: bytes  # the cleartext frame
    spi: int
    version: int
    iv: int
    protected_len: int  # bytes after the IV up to the ICV: what rx-bytes counts


def encapsulate(frame: bytes, sa: PspSA, iv: int, encap: PspEncap = PspEncap()) -> bytes:
    """Encapsulate and seal one Ethernet frame; raises :class:`EncapsulationError`."""
    if type(frame) is not bytes:
        frame = as_bytes(frame)
    if _psp_fast is not None and encap.vc is None and type(frame) is bytes and 0 <= iv <= MAX_IV:
        out = _psp_fast.encapsulate(
            frame, sa._aead, sa.spi, sa.version, iv, encap.mode == "tunnel",
            encap.transport_crypt_offset, encap.ipv4_tunnel_crypt_offset, encap.ipv6_tunnel_crypt_offset,
        )
        if out is not None:
            return out
    return _encapsulate(frame, sa, iv, encap)


def _encapsulate(frame: bytes, sa: PspSA, iv: int, encap: PspEncap) -> bytes:
    """The general implementation of :func:`encapsulate` (every case, every error)."""
    l2, ip_version, ip_hlen, protocol, end = parse_ip(frame, EncapsulationError)
    l4 = l2 + ip_hlen
    if encap.mode == "transport":
        if ip_version == 6 and protocol not in (IPPROTO_TCP, IPPROTO_UDP):
            raise EncapsulationError("IPv6 transport mode carries only TCP or UDP")
        start, next_header, co = l4, protocol, encap.transport_crypt_offset
    elif ip_version == 4:
        start, next_header, co = l2, IPPROTO_IPIP, encap.ipv4_tunnel_crypt_offset
    else:
        start, next_header, co = l2, IPPROTO_IPV6, encap.ipv6_tunnel_crypt_offset
    clear_len = co << 2
    vc = encap.vc
    if vc is None:
        if clear_len > end - start:
            raise EncapsulationError(f"crypt offset {clear_len} bytes exceeds the {end - start}-byte payload")
        clear, rest = frame[start : start + clear_len], memoryview(frame)[start + clear_len : end]
        flags = (sa.version << 2) | 1
    else:
        protected = vc + frame[start:end]
        if clear_len > len(protected):
            raise EncapsulationError(f"crypt offset {clear_len} bytes exceeds the {len(protected)}-byte payload")
        clear, rest = protected[:clear_len], protected[clear_len:]
        flags = (sa.version << 2) | 3
    try:
        header = _BASE.pack(next_header, 1 if vc is None else 2, co, flags, sa.spi, iv)
    except struct.error:
        raise EncapsulationError(f"IV {iv} does not fit in 64 bits") from None
    sealed = sa.seal(header, clear, rest)
    udp_len = UDP_HEADER_LEN + BASE_HEADER_LEN + len(clear) + len(sealed)
    if (protocol == IPPROTO_TCP or protocol == IPPROTO_UDP) and end - l4 >= 4:
        sport = ((frame[l4] ^ frame[l4 + 2]) << 8) | (frame[l4 + 1] ^ frame[l4 + 3])
    else:
        sport = PSP_UDP_PORT
    try:
        if start == l2 and ip_version == 4 and ip_hlen != 20:  # tunnel: outer IPv4 has no options
            outer: tuple[bytes, ...] = (ipv4_header_with(frame[l2:l4], 20 + udp_len, IPPROTO_UDP, ihl5=True),)
        else:
            outer = rewritten_ip_header(frame, l2, ip_version, ip_hlen, udp_len, IPPROTO_UDP)
        udp = UDP_HEADER.pack(sport, PSP_UDP_PORT, udp_len, 0)
    except ValueError as exc:
        raise EncapsulationError(f"packet too large to encapsulate: {exc}") from None
    return b"".join((frame[:l2], *outer, udp, header, clear, sealed))


def decapsulate(
    frame: bytes, keys: DeviceKeys, versions: frozenset[int] = ALL_VERSIONS
) -> PspOpened:
    """Verify, decrypt and decapsulate one received frame.

    The SA key is derived from ``keys`` (the receiver's master keys) and the
    packet's SPI.  Raises :class:`NotPspPacket` for frames that are not PSP,
    and a :class:`~pspsim.wire.errors.PspRejected` subclass for PSP packets
    that must be dropped; nothing else, whatever the bytes (any bytes-like
    object is accepted).
    """
    if type(frame) is not bytes:
        frame = as_bytes(frame)
    if _psp_fast is not None and type(frame) is bytes:
        opened = _psp_fast.decapsulate(frame, keys, None if versions is ALL_VERSIONS else versions, PspOpened)
        if opened is not None:
            return opened
    return _decapsulate(frame, keys, versions)


def _decapsulate(frame: bytes, keys: DeviceKeys, versions: frozenset[int]) -> PspOpened:
    """The general implementation of :func:`decapsulate` (every case, every error)."""
    l2, ip_version, ip_hlen, protocol, end = parse_ip(frame, NotPspPacket)
    if protocol != IPPROTO_UDP:
        raise NotPspPacket(f"IP protocol {protocol} is not UDP")
    u = l2 + ip_hlen
    if end - u < UDP_HEADER_LEN:
        raise NotPspPacket("truncated UDP header")
    if frame[u + 2 : u + 4] != _PSP_PORT_BYTES:
        raise NotPspPacket("UDP destination port is not 1000")
    if ((frame[u + 4] << 8) | frame[u + 5]) != end - u:
        raise PspFramingError("UDP length disagrees with the IP length")
    p = u + UDP_HEADER_LEN
    if end - p < BASE_HEADER_LEN + ICV_LEN:
        raise PspFramingError("packet shorter than PSP header + ICV")
    next_header, hel, co, flags, spi, iv = _BASE.unpack_from(frame, p)
    if not flags & 1:
        raise PspBadPacket("always-1 bit of the PSP header is 0")
    version = (flags >> 2) & 0x0F
    if version not in versions:
        raise PspBadPacket(f"PSP version {version} is not supported")
    ext_len = (hel << 3) - 8
    protected_len = end - p - BASE_HEADER_LEN - ICV_LEN
    if hel == 0 or ext_len > protected_len:
        raise PspFramingError("header extension runs past the end of the packet")
    if flags & 2 and ext_len < VC_LEN:
        raise PspFramingError("V bit set but the header has no room for the cookie")
    clear_len = (co & 0x3F) << 2
    if clear_len > protected_len and version in ENCRYPTING_VERSIONS:
        raise PspFramingError("crypt offset runs past the end of the payload")
    sa = keys.sa_for(spi, version)
    body = p + BASE_HEADER_LEN
    clear = frame[body : body + clear_len]
    opened = sa.open(frame[p:body], clear, memoryview(frame)[body + clear_len : end])
    if ext_len:  # drop the cookie and extensions, wherever the crypt offset split them
        inner: tuple[bytes, ...] = ((clear + opened)[ext_len:],)
    else:
        inner = (clear, opened)
    inner_len = end - body - ext_len - ICV_LEN
    if next_header in _TUNNEL_ETHERTYPE:
        return PspOpened(
            b"".join((frame[: l2 - 2], _TUNNEL_ETHERTYPE[next_header], *inner)), spi, version, iv, protected_len
        )
    outer = rewritten_ip_header(frame, l2, ip_version, ip_hlen, inner_len, next_header)
    return PspOpened(b"".join((frame[:l2], *outer, *inner)), spi, version, iv, protected_len)


class PspSender:
    """Seals frames for one SA, with an IV counter that never repeats.

    ``seal(frame)`` encapsulates and seals one frame with the next IV.  The
    IV is a 64-bit counter (the reference implementation's choice; the
    specification suggests a timestamp).  A frame that cannot be
    encapsulated does not use up an IV.  When the counter would wrap, the SA
    must be rekeyed: ``seal`` raises :class:`IvSpaceExhausted` instead of
    reusing a nonce.  The counter only moves forward (``next_iv`` can be set
    ahead, never back), and a sender cannot be copied: either would send two
    packets with one nonce under one key.  With the
    compiled fast path, ``seal`` is the compiled sealer's own method (no
    Python frame per packet).
    """

    __slots__ = ("sa", "encap", "seal", "_iv", "_sealer")

    def __init__(self, sa: PspSA, encap: PspEncap = PspEncap(), first_iv: int = 1) -> None:
        if not 0 <= first_iv <= MAX_IV:
            raise ConfigError(f"first IV must fit in 64 bits, got {first_iv}")
        self.sa = sa
        self.encap = encap
        self._iv = first_iv
        self._sealer = None
        if _psp_fast is not None and encap.vc is None:  # the compiled path carries no cookie
            self._sealer = _psp_fast.Sealer(
                sa._aead, sa.spi, sa.version, encap.mode == "tunnel", encap.transport_crypt_offset,
                encap.ipv4_tunnel_crypt_offset, encap.ipv6_tunnel_crypt_offset, self._general, first_iv,
            )
            self.seal = self._sealer.seal
        else:
            self.seal = self._seal_python

    __copy__ = __deepcopy__ = __reduce_ex__ = refuse_copy

    def _general(self, frame: bytes, iv: int) -> bytes:
        return _encapsulate(frame, self.sa, iv, self.encap)

    def _seal_python(self, frame: bytes) -> bytes:
        iv = self._iv
        if iv > MAX_IV:
            raise IvSpaceExhausted("IV space of this SA is exhausted: rekey")
        out = _encapsulate(frame, self.sa, iv, self.encap)
        self._iv = iv + 1
        return out

    @property
    def next_iv(self) -> int:
        """The IV the next frame gets (``2**64`` once the space is used up)."""
        if self._sealer is None:
            return self._iv
        return MAX_IV + 1 if self._sealer.exhausted else self._sealer.next_iv

    @next_iv.setter
    def next_iv(self, value: int) -> None:
        if not 0 <= value <= MAX_IV + 1:
            raise ConfigError(f"IV must fit in 64 bits, got {value}")
        if value < self.next_iv:
            raise NonceReuseError(f"IV counter cannot move back (from {self.next_iv} to {value}): "
                                  "those IVs may have been sent")
        self._iv = value
        if self._sealer is not None:
            self._sealer.exhausted = value > MAX_IV
            self._sealer.next_iv = min(value, MAX_IV)


def seal_parts(senders: list[PspSender], which: list[int], parts: list[tuple[bytes, bytes]],
               words0: list[int], words1: list[int], lengths: Sequence[float] | None = None) -> list[bytes]:
    """``senders[which[k]].seal(head + word0 + word1 + tail)`` for each ``k`` in order
    (``parts[k]`` is ``(head, tail)``; words: 32-bit, big-endian), the same bytes;
    the compiled path lays each frame out in one reused buffer instead of making
    it (a packet generator that keeps templates of its frames).  With ``lengths``
    (a float64 buffer, such as a numpy array), frame ``k`` must come out
    ``lengths[k]`` bytes long, else ``ValueError`` (for a caller that has
    already carried the frames)."""
    return seal_templates(senders, which, parts, range(len(parts)), words0, words1, lengths)


def seal_templates(senders: list[PspSender], which: Sequence[int], templates: list[tuple[bytes, bytes]],
                   codes: Sequence[int], words0: Sequence[int], words1: Sequence[int],
                   lengths: Sequence[float] | None = None) -> list[bytes]:
    """:func:`seal_parts` of ``parts[k] = templates[codes[k]]`` (few distinct
    templates).  ``which``, ``codes`` and the words may be int64 buffers (numpy
    arrays), which the compiled path reads without making a Python int a packet."""
    queue = seal_queue(senders, which, templates, codes, words0, words1, lengths)
    queue.upto(len(codes))
    return queue.frames


def seal_queue(senders: list[PspSender], which: Sequence[int], templates: list[tuple[bytes, bytes]],
               codes: Sequence[int], words0: Sequence[int], words1: Sequence[int],
               lengths: Sequence[float] | None = None) -> SealQueue:
    """The frames of :func:`seal_templates`, sealed in order when ``upto(n)`` asks
    for those before ``n`` (``frames``: the ones sealed so far), or when
    :func:`verify_each` given the queue needs them."""
    sealers = [s._sealer for s in senders]
    if _psp_batch is not None and None not in sealers:
        if lengths is not None and not hasattr(lengths, "__array_interface__"):
            lengths = array("d", lengths)
        return _psp_batch.SealQueue(sealers, _int64s(which), templates, _int64s(codes), _int64s(words0),
                                   _int64s(words1), lengths)
    return SealQueue(senders, which, templates, codes, words0, words1, lengths)


class SealQueue:
    """:func:`seal_queue` without the compiled path."""

    def __init__(self, senders, which, templates, codes, words0, words1, lengths=None) -> None:
        if lengths is not None and len(lengths) != len(codes):
            raise ValueError(f"{len(lengths)} lengths for {len(codes)} frames")
        self.args, self.lengths, self.frames = (senders, which, templates, codes, words0, words1), lengths, []
        self.count = len(codes)

    def upto(self, n: int) -> None:
        senders, which, templates, codes, words0, words1 = self.args
        pack = _WORDS.pack
        for k in range(len(self.frames), min(n, self.count)):
            head, tail = templates[codes[k]]
            frame = senders[which[k]].seal(head + pack(words0[k], words1[k]) + tail)
            if self.lengths is not None and len(frame) != self.lengths[k]:
                raise ValueError(f"frame {k} is {len(frame)} bytes long, not {self.lengths[k]:.0f}")
            self.frames.append(frame)


def _int64s(values: Sequence[int]) -> Sequence[int]:
    """``values`` as a C-contiguous int64 buffer (a numpy array that is one, or an
    ``array('q')``, as it is; another numpy array converted by itself)."""
    layout = getattr(values, "__array_interface__", None)
    if layout is not None:
        if layout["typestr"][1] not in "iu":  # a float array would be truncated
            raise TypeError(f"indices must be integers, not {layout['typestr']}")
        fits = layout["typestr"] == "<i8" and layout["strides"] is None
        return values if fits else values.astype("<i8", order="C")  # type: ignore[attr-defined]
    return values if isinstance(values, array) and values.typecode == "q" else array("q", values)


def verify_each(frames: list[bytes | None], indices: Sequence[int], keyring: list[DeviceKeys],
                hosts: Sequence[int], release: bool = False, queue: SealQueue | None = None,
                rejections: list[tuple[int, PspRejected]] | None = None) -> list[bool | None]:
    """Verify ``frames[i]`` with ``keyring[hosts[i]]`` (every version accepted) for
    each ``i`` of ``indices``, in order, without making the cleartext: ``True`` for
    a packet that verified, ``None`` for one the compiled path leaves to
    :func:`decapsulate` (every packet when there is no compiled path); the first
    rejection raises (:class:`NotPspPacket`, :class:`PspRejected`).  With
    ``release``, a verified frame's place in ``frames`` becomes ``None`` (a
    receiver that only counts lets it go; only with ``rejections``, so that no
    rejection raises once frames are let go).  ``indices`` and ``hosts`` may be
    int64 buffers (numpy arrays), read without making a Python int a packet.
    With a compiled ``queue`` (:func:`seal_queue`; ``frames`` must be its
    ``frames``), frames are sealed as they are needed, each verified while still
    in the CPU cache.  With ``rejections`` (a list), a rejection does not raise:
    the packet's result is ``False`` and ``(k, exception)`` is appended (``k``:
    its place in ``indices``), with the counts of rejecting it by itself."""
    if _psp_batch is None or (queue is not None and not isinstance(queue, _psp_batch.SealQueue)):
        if queue is not None:
            queue.upto(max(indices, default=-1) + 1)
        return [None] * len(indices)
    return _psp_batch.verify_each(frames, _int64s(indices), keyring, _int64s(hosts), release, queue, rejections)
