"""IPsec ESP (RFC 4303) with AES-GCM (RFC 4106), transport and tunnel mode.

On the wire, after the IP header (and, with ESP-in-UDP per RFC 3948, a UDP
header to port 4500, checksum 0)::

    SPI (4) | sequence number, low 32 bits (4) | explicit IV (8)
    | ciphertext of: payload | padding 1,2,3.. | pad length (1) | next header (1)
    | ICV (16)

Key material is the key followed by a 4-byte salt, as ``ip xfrm ... aead
'rfc4106(gcm(aes))'`` takes it (20, 28 or 36 bytes); the GCM nonce is
salt || explicit IV; the AAD is SPI || sequence number, or SPI || high 32
bits || low 32 bits with extended sequence numbers (RFC 4106 section 5).
Padding aligns the ciphertext to 4 bytes and is filled 1, 2, 3, ... as
RFC 4303 section 2.4 specifies.  The explicit IV defaults to the 64-bit
sequence number, unique per SA as RFC 4106 requires.

Tunnel mode's outer header is a copy of the inner one (IPv4: 20 bytes, no
options; IPv6: 40 bytes) unless tunnel end-point addresses are given, the
same convention the PSP reference uses; next header 4 or 41.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Mapping
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pspsim.wire._compiled import compiled
from pspsim.wire.errors import ConfigError, EncapsulationError, NonceReuseError, WireError, as_bytes, refuse_copy
from pspsim.wire.esp_replay import EspOutsideWindow, EspRejected, EspReplay, ReplayWindow
from pspsim.wire.frames import (
    ETHERTYPE_IPV4,
    ETHERTYPE_IPV6,
    IPPROTO_ESP,
    IPPROTO_IPIP,
    IPPROTO_IPV6,
    IPPROTO_UDP,
    UDP_HEADER,
    UDP_HEADER_LEN,
    ipv4_header_with,
    parse_ip,
    rewritten_ip_header,
)

_esp_fast = compiled("_esp_fast")  # the seal of the common case (see _esp_fast.pyx)

ESP_UDP_PORT = 4500
ESP_HEADER_LEN = 8
IV_LEN = 8
ICV_LEN = 16
SALT_LEN = 4
_HEADER = struct.Struct("!II")
_HEADER_IV_NONCE = struct.Struct("!IIQ4sQ")
_ESN_AAD = struct.Struct("!III")
#: ESP trailers by pad length and next header: padding 1, 2, 3.., pad length, next header.
_TRAILER = [[bytes(range(1, n + 1)) + bytes((n, nh)) for nh in range(256)] for n in range(4)]
_SEQ32 = 1 << 32

__all__ = [
    "EspAuthFailure", "EspMalformed", "EspNoSa", "EspOpened", "EspOutsideWindow", "EspRejected",
    "EspReplay", "EspSA", "EspSequenceExhausted", "NotEspPacket", "esp_decapsulate", "esp_encapsulate",
]


class EspAuthFailure(EspRejected):
    """The ICV did not verify."""

    counter = "XfrmInStateProtoError"


class EspMalformed(EspRejected):
    """Too short, bad padding, or otherwise not a well-formed ESP packet."""

    counter = "XfrmInHdrError"


class EspNoSa(EspRejected):
    """No inbound SA has this SPI."""

    counter = "XfrmInNoStates"


class NotEspPacket(WireError):
    """The frame is not ESP (not IP, or neither IP protocol 50 nor UDP port 4500)."""


class EspSequenceExhausted(EncapsulationError):
    """The outbound sequence number would wrap: the SA must be rekeyed (RFC 4303 3.3.3)."""

    counter = "XfrmOutStateSeqError"


class EspSA:
    """One unidirectional ESP SA with AES-GCM.

    ``key`` is key material plus the 4-byte salt.  The outbound side uses
    ``next_seq`` (the counter moves only forward: setting it back raises
    :class:`NonceReuseError`, since the sequence number is the IV); the
    inbound side uses ``window`` (anti-replay).  An SA cannot be copied (a
    copy would send the same sequence numbers, hence nonces, again).
    """

    __slots__ = ("spi", "key", "mode", "esn", "replay_window", "udp_encap", "tunnel_src", "tunnel_dst",
                 "_next_seq", "window", "max_seq", "_aead", "_salt", "_outer_addresses")

    def __init__(self, spi: int, key: bytes, mode: str = "transport", esn: bool = False, replay_window: int = 64,
                 udp_encap: bool = False, tunnel_src: str | None = None, tunnel_dst: str | None = None,
                 next_seq: int = 1) -> None:
        self.spi, self.key, self.mode, self.esn = spi, bytes(key), mode, esn
        self.replay_window, self.udp_encap = replay_window, udp_encap
        self.tunnel_src, self.tunnel_dst = tunnel_src, tunnel_dst
        if len(self.key) not in (20, 28, 36):
            raise ConfigError(
                f"ESP AES-GCM key material is key + 4-byte salt: 20, 28 or 36 bytes, got {len(self.key)}"
            )
        if not 0 < self.spi <= 0xFFFF_FFFF:
            raise ConfigError(f"SPI must be in 1..0xffffffff, got {self.spi:#x}")
        if self.mode not in ("transport", "tunnel"):
            raise ConfigError(f"mode must be 'transport' or 'tunnel', got {self.mode!r}")
        self.max_seq = (1 << 64) - 1 if self.esn else _SEQ32 - 1
        if not 1 <= next_seq <= self.max_seq + 1:
            raise ConfigError(f"first sequence number must be in 1..{self.max_seq}")
        self._next_seq = next_seq
        if (self.tunnel_src is None) != (self.tunnel_dst is None):
            raise ConfigError("give both tunnel end points or neither")
        self._outer_addresses: tuple[int, bytes] | None = None
        if self.tunnel_src is not None:
            try:
                src, dst = ipaddress.ip_address(self.tunnel_src), ipaddress.ip_address(self.tunnel_dst)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
            if src.version != dst.version:
                raise ConfigError("tunnel end points must have the same IP version")
            self._outer_addresses = (src.version, src.packed + dst.packed)
        self.window = ReplayWindow(self.replay_window, self.esn)
        self._aead = AESGCM(self.key[:-SALT_LEN])
        self._salt = self.key[-SALT_LEN:]

    def __repr__(self) -> str:  # never print the key
        return (f"EspSA(spi={self.spi:#010x}, mode={self.mode!r}, esn={self.esn}, udp_encap={self.udp_encap}, "
                f"next_seq={self._next_seq})")

    __copy__ = __deepcopy__ = __reduce_ex__ = refuse_copy

    @property
    def next_seq(self) -> int:
        """The sequence number (and IV) of the next outbound packet."""
        return self._next_seq

    @next_seq.setter
    def next_seq(self, value: int) -> None:
        if value < self._next_seq:
            raise NonceReuseError(f"sequence counter cannot move back (from {self._next_seq} to {value}): "
                                  "those numbers, the IVs, may have been sent")
        if value > self.max_seq + 1:
            raise ConfigError(f"sequence number must be at most {self.max_seq + 1}")
        self._next_seq = value

    def sealed_len(self, data_len: int) -> int:
        """Bytes :meth:`seal` returns for ``data_len`` bytes of data."""
        return ESP_HEADER_LEN + IV_LEN + data_len + (-(data_len + 2) % 4) + 2 + ICV_LEN

    def seal(self, data: bytes, next_header: int, *, seq: int | None = None, iv: bytes | None = None) -> bytes:
        """ESP header, IV, encrypted ``data`` with trailer, and ICV.

        Without ``seq`` the SA's next outbound number is used and advanced;
        past the last number :class:`EspSequenceExhausted` is raised.
        ``iv`` defaults to the 64-bit sequence number.
        """
        if type(data) is not bytes:
            data = as_bytes(data)
        if seq is None:
            seq = self._next_seq
            if seq > self.max_seq:
                raise EspSequenceExhausted(f"SA {self.spi:08x}: sequence numbers exhausted, rekey")
            self._next_seq = seq + 1
        elif not 0 < seq <= self.max_seq:
            raise ConfigError(f"sequence number must be in 1..{self.max_seq}")
        if iv is None:  # IV = sequence number
            if _esp_fast is not None and type(data) is bytes:
                return _esp_fast.seal(self._aead, self._salt, self.spi, seq, data, next_header, self.esn)
            both = _HEADER_IV_NONCE.pack(self.spi, seq & 0xFFFF_FFFF, seq, self._salt, seq)
            header, nonce = both[: ESP_HEADER_LEN + IV_LEN], both[ESP_HEADER_LEN + IV_LEN :]
        elif len(iv) != IV_LEN:
            raise ConfigError("ESP explicit IV must be 8 bytes")
        else:
            header, nonce = _HEADER.pack(self.spi, seq & 0xFFFF_FFFF) + iv, self._salt + iv
        aad = _ESN_AAD.pack(self.spi, seq >> 32, seq & 0xFFFF_FFFF) if self.esn else header[:ESP_HEADER_LEN]
        return header + self._aead.encrypt(nonce, data + _TRAILER[-(len(data) + 2) % 4][next_header], aad)

    def open(self, packet: bytes) -> tuple[bytes, int, int]:
        """Check, verify and decrypt an ESP packet: (data, next header, sequence number).

        The replay window is consulted before the ICV is checked and moved
        only after it verified.
        """
        if type(packet) is not bytes:
            packet = as_bytes(packet)
        if len(packet) < ESP_HEADER_LEN + IV_LEN + 4 + ICV_LEN:
            raise EspMalformed("ESP packet shorter than header, IV, trailer and ICV")
        spi, seq_low = _HEADER.unpack_from(packet)
        if spi != self.spi:
            raise EspNoSa(f"SPI {spi:08x} does not belong to this SA ({self.spi:08x})")
        window = self.window
        if self.esn:
            seq = window.checked_sequence(seq_low)
            if seq > self.max_seq:  # past 2**64 - 1: only a forgery or a replayed old SA
                raise EspOutsideWindow(f"sequence number {seq_low} would be past 2**64 - 1")
            aad = _ESN_AAD.pack(spi, seq >> 32, seq_low)
        else:
            seq, aad = seq_low, packet[:ESP_HEADER_LEN]
            if seq <= window.top:  # newer packets need no window check
                window.check(seq)
        try:
            plaintext = self._aead.decrypt(self._salt + packet[ESP_HEADER_LEN : ESP_HEADER_LEN + IV_LEN],
                                           packet[ESP_HEADER_LEN + IV_LEN :], aad)
        except InvalidTag:
            raise EspAuthFailure(f"ICV mismatch for SPI {spi:08x}, sequence {seq}") from None
        pad_len = plaintext[-2]
        if pad_len + 2 > len(plaintext):
            raise EspMalformed(f"pad length {pad_len} exceeds the payload")
        window.accept(seq)
        return plaintext[: -2 - pad_len], plaintext[-1], seq

    def overhead(self, data_len: int, ip_version: int = 4) -> int:
        """Bytes ESP adds to an IP packet whose protected part is ``data_len`` bytes."""
        added = ESP_HEADER_LEN + IV_LEN + (-(data_len + 2) % 4) + 2 + ICV_LEN
        if self.udp_encap:
            added += UDP_HEADER_LEN
        if self.mode == "tunnel":
            added += 20 if ip_version == 4 else 40
        return added


class EspOpened(NamedTuple):
    frame: bytes
    spi: int
    seq: int


def esp_encapsulate(frame: bytes, sa: EspSA) -> bytes:
    """Protect one Ethernet frame with ``sa`` (transport or tunnel mode).  A frame
    whose result would not fit in an IP packet raises :class:`EncapsulationError`
    before it is sealed (no sequence number is used)."""
    if type(frame) is not bytes:
        frame = as_bytes(frame)
    l2, ip_version, ip_hlen, protocol, end = parse_ip(frame, EncapsulationError)
    udp_len = UDP_HEADER_LEN if sa.udp_encap else 0
    outer_protocol = IPPROTO_UDP if sa.udp_encap else IPPROTO_ESP
    if sa.mode == "transport":
        _check_ip_size(ip_version, ip_hlen + udp_len + sa.sealed_len(end - l2 - ip_hlen))
        esp = sa.seal(frame[l2 + ip_hlen : end], protocol)
        outer = rewritten_ip_header(frame, l2, ip_version, ip_hlen, udp_len + len(esp), outer_protocol)
        l2_header = frame[:l2]
    else:
        outer_v = sa._outer_addresses[0] if sa._outer_addresses is not None else ip_version
        _check_ip_size(outer_v, (20 if outer_v == 4 else 40) + udp_len + sa.sealed_len(end - l2))
        esp = sa.seal(frame[l2:end], IPPROTO_IPIP if ip_version == 4 else IPPROTO_IPV6)
        outer_version = ip_version
        template = frame[l2 : l2 + (20 if ip_version == 4 else 40)]
        if sa._outer_addresses is not None:
            outer_version, addresses = sa._outer_addresses
            template = _tunnel_template(outer_version, template, addresses)
        payload = udp_len + len(esp)
        try:
            if outer_version == 4:
                outer = (ipv4_header_with(template, 20 + payload, outer_protocol, ihl5=True),)
            else:
                outer = rewritten_ip_header(template, 0, 6, 40, payload, outer_protocol)
        except ValueError as exc:
            raise EncapsulationError(f"packet too large to encapsulate: {exc}") from None
        ethertype = ETHERTYPE_IPV4 if outer_version == 4 else ETHERTYPE_IPV6
        l2_header = frame[: l2 - 2] + ethertype.to_bytes(2, "big")
    udp = UDP_HEADER.pack(ESP_UDP_PORT, ESP_UDP_PORT, udp_len + len(esp), 0) if sa.udp_encap else b""
    return b"".join((l2_header, *outer, udp, esp))


def _check_ip_size(ip_version: int, header_and_payload: int) -> None:
    """Refuse a packet whose IP length field would exceed 65,535 (IPv6: payload only)."""
    length = header_and_payload - (40 if ip_version == 6 else 0)
    if length > 0xFFFF:
        raise EncapsulationError(f"ESP packet would be {length} bytes, over the 65,535 an IP length field holds")


def _tunnel_template(version: int, inner: bytes, addresses: bytes) -> bytes:
    """An outer header for the configured tunnel end points, inheriting TTL/hop limit."""
    if version == 4:
        ttl = inner[8] if inner[0] >> 4 == 4 else inner[7]
        return struct.pack("!BBHHHBBH", 0x45, 0, 0, 0, 0x4000, ttl, 0, 0) + addresses
    hop = inner[7] if inner[0] >> 4 == 6 else inner[8]
    return struct.pack("!IHBB", 6 << 28, 0, 0, hop) + addresses


def esp_decapsulate(frame: bytes, sas: Mapping[int, EspSA]) -> EspOpened:
    """Find the SA by SPI, check replay, verify, decrypt and decapsulate.

    Raises :class:`EspRejected` subclasses, or :class:`NotEspPacket` for
    frames that are not ESP; nothing else, whatever the bytes (any bytes-like
    object is accepted).
    """
    if type(frame) is not bytes:
        frame = as_bytes(frame)
    l2, ip_version, ip_hlen, protocol, end = parse_ip(frame, NotEspPacket)
    start = l2 + ip_hlen
    if protocol == IPPROTO_UDP:
        if end - start < UDP_HEADER_LEN or frame[start + 2 : start + 4] != ESP_UDP_PORT.to_bytes(2, "big"):
            raise NotEspPacket("UDP packet not addressed to port 4500")
        start += UDP_HEADER_LEN
    elif protocol != IPPROTO_ESP:
        raise NotEspPacket(f"IP protocol {protocol} is not ESP")
    if end - start < ESP_HEADER_LEN:
        raise EspMalformed("truncated ESP header")
    spi = int.from_bytes(frame[start : start + 4], "big")
    sa = sas.get(spi)
    if sa is None:
        raise EspNoSa(f"no SA for SPI {spi:08x}")
    data, next_header, seq = sa.open(frame[start:end])
    if next_header in (IPPROTO_IPIP, IPPROTO_IPV6):
        ethertype = ETHERTYPE_IPV4 if next_header == IPPROTO_IPIP else ETHERTYPE_IPV6
        return EspOpened(frame[: l2 - 2] + ethertype.to_bytes(2, "big") + data, spi, seq)
    outer = rewritten_ip_header(frame, l2, ip_version, ip_hlen, len(data), next_header)
    return EspOpened(b"".join((frame[:l2], *outer, data)), spi, seq)
