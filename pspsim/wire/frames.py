"""Ethernet, IPv4 and IPv6 framing helpers shared by the PSP and ESP codecs.

Frames are Ethernet II, optionally with 802.1Q / 802.1ad VLAN tags.  The
IP packet ends where its length field says; bytes after it (Ethernet
padding of short frames) are not part of the packet.  IPv6 extension
headers are not walked: ``protocol`` is the base header's next header.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import NamedTuple

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
VLAN_TPIDS = (0x8100, 0x88A8)
ETH_HEADER_LEN = 14
IPPROTO_IPIP = 4
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_IPV6 = 41
IPPROTO_ESP = 50
IPV6_HEADER_LEN = 40
UDP_HEADER_LEN = 8

_WORDS = [struct.Struct(f"!{n}H") for n in range(31)]
UDP_HEADER = struct.Struct("!HHHH")


class IpView(NamedTuple):
    """Where the IP packet sits inside a frame (:func:`parse_ip` returns a plain
    tuple in this field order, which is cheaper to build per packet)."""

    l2_len: int  # bytes before the IP header (Ethernet + VLAN tags)
    version: int  # 4 or 6
    header_len: int  # IPv4 IHL * 4, or 40 for IPv6
    protocol: int  # IPv4 protocol / IPv6 next header
    end: int  # offset just past the IP packet


def parse_ip(frame: bytes, error: type[Exception]) -> tuple[int, int, int, int, int]:
    """Locate the IP packet in ``frame`` as ``(l2_len, version, header_len,
    protocol, end)`` (see :class:`IpView`); raise ``error(reason)`` if there is none."""
    n = len(frame)
    if n < ETH_HEADER_LEN:
        raise error("frame shorter than an Ethernet header")
    l2 = ETH_HEADER_LEN
    ethertype = (frame[12] << 8) | frame[13]
    while ethertype in VLAN_TPIDS:
        l2 += 4
        if n < l2:
            raise error("frame ends inside a VLAN tag")
        ethertype = (frame[l2 - 2] << 8) | frame[l2 - 1]
    if ethertype == ETHERTYPE_IPV4:
        if n < l2 + 20:
            raise error("frame ends inside the IPv4 header")
        ver_ihl = frame[l2]
        ihl = (ver_ihl & 0x0F) << 2
        end = l2 + ((frame[l2 + 2] << 8) | frame[l2 + 3])
        if ver_ihl >> 4 != 4 or ihl < 20:
            raise error("bad IPv4 version or header length")
        if end < l2 + ihl or end > n:
            raise error("IPv4 total length disagrees with the frame")
        return l2, 4, ihl, frame[l2 + 9], end
    if ethertype == ETHERTYPE_IPV6:
        if n < l2 + IPV6_HEADER_LEN:
            raise error("frame ends inside the IPv6 header")
        if frame[l2] >> 4 != 6:
            raise error("bad IPv6 version")
        end = l2 + IPV6_HEADER_LEN + ((frame[l2 + 4] << 8) | frame[l2 + 5])
        if end > n:
            raise error("IPv6 payload length runs past the frame")
        return l2, 6, IPV6_HEADER_LEN, frame[l2 + 6], end
    raise error(f"not an IP frame (ethertype {ethertype:#06x})")


def rewritten_ip_header(
    frame: bytes, l2: int, version: int, header_len: int, payload_length: int, protocol: int
) -> tuple[bytes, ...]:
    """The IP header at ``frame[l2:]`` with a new payload length and protocol,
    as pieces to join (IPv4 checksum recomputed from all header words).

    Building pieces instead of a new header object keeps the per-packet cost
    to one ``struct`` unpack and one final ``join`` by the caller.
    """
    if version == 4:
        total = header_len + payload_length
        if total > 0xFFFF:
            raise ValueError(f"IPv4 total length {total} exceeds 65535")
        words = _WORDS[header_len >> 1].unpack_from(frame, l2)
        ttl_proto = (words[4] & 0xFF00) | protocol
        c = sum(words) - words[1] - words[4] - words[5] + total + ttl_proto
        c = (c & 0xFFFF) + (c >> 16)
        c = (c & 0xFFFF) + (c >> 16)
        return (
            frame[l2 : l2 + 2],
            _HH.pack(total, words[2]) + _HBH.pack(words[3], ttl_proto >> 8, protocol, ~c & 0xFFFF),
            frame[l2 + 12 : l2 + header_len],
        )
    if payload_length > 0xFFFF:
        raise ValueError(f"IPv6 payload length {payload_length} exceeds 65535")
    return (frame[l2 : l2 + 4], _HB.pack(payload_length, protocol), frame[l2 + 7 : l2 + IPV6_HEADER_LEN])


_HH = struct.Struct("!HH")
_HBH = struct.Struct("!HBBH")
_HB = struct.Struct("!HB")


def ipv4_checksum(header: bytes | bytearray) -> int:
    """RFC 791 header checksum of ``header`` (its checksum field must be zero)."""
    total = sum(_WORDS[len(header) // 2].unpack(header))
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4_header_with(header: bytes, total_length: int, protocol: int, *, ihl5: bool = False) -> bytes:
    """A copy of an IPv4 header with new total length and protocol, checksum redone.

    ``ihl5`` keeps only the first 20 bytes (options dropped, IHL forced to 5),
    as the PSP reference does for a tunnel's outer header.
    """
    if total_length > 0xFFFF:
        raise ValueError(f"IPv4 total length {total_length} exceeds 65535")
    h = bytearray(header[:20] if ihl5 else header)
    if ihl5:
        h[0] = 0x45
    h[2] = total_length >> 8
    h[3] = total_length & 0xFF
    h[9] = protocol
    h[10] = h[11] = 0
    c = ipv4_checksum(h)
    h[10] = c >> 8
    h[11] = c & 0xFF
    return bytes(h)


# --- building frames -------------------------------------------------------

DEFAULT_SRC_MAC = bytes.fromhex("002233445500")
DEFAULT_DST_MAC = bytes.fromhex("008899aabb00")
_DEFAULT_ADDRESSES = {4: ("10.0.0.1", "10.0.0.2"), 6: ("a00::1", "a00::2")}


def internet_checksum(data: bytes) -> int:
    """RFC 1071 one's-complement checksum of ``data`` (odd length padded with 0)."""
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ip_frame(
    l4: bytes,
    protocol: int,
    *,
    ip_version: int = 4,
    src: str | None = None,
    dst: str | None = None,
    ttl: int = 64,
    src_mac: bytes = DEFAULT_SRC_MAC,
    dst_mac: bytes = DEFAULT_DST_MAC,
) -> bytes:
    """An Ethernet frame carrying ``l4`` in an IPv4 (DF set, ID 0) or IPv6 packet."""
    src = src or _DEFAULT_ADDRESSES[ip_version][0]
    dst = dst or _DEFAULT_ADDRESSES[ip_version][1]
    s, d = ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed
    if ip_version == 4:
        header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, 0x4000, ttl, protocol, 0, s, d)
        header = ipv4_header_with(header, 20 + len(l4), protocol)
        ethertype = ETHERTYPE_IPV4
    elif ip_version == 6:
        header = struct.pack("!IHBB16s16s", 6 << 28, len(l4), protocol, ttl, s, d)
        ethertype = ETHERTYPE_IPV6
    else:
        raise ValueError(f"ip_version must be 4 or 6, got {ip_version}")
    return dst_mac + src_mac + ethertype.to_bytes(2, "big") + header + l4


def udp_frame(
    payload: bytes, *, sport: int = 11111, dport: int = 22222, ip_version: int = 4,
    src: str | None = None, dst: str | None = None, **kwargs: object,
) -> bytes:
    """An Ethernet/IP/UDP frame with a correct UDP checksum.

    With the defaults it builds the same packets as the PSP reference
    implementation's test generator (``create_pcap``).
    """
    src = src or _DEFAULT_ADDRESSES[ip_version][0]
    dst = dst or _DEFAULT_ADDRESSES[ip_version][1]
    length = UDP_HEADER_LEN + len(payload)
    s, d = ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed
    pseudo = s + d + (struct.pack("!BBH", 0, IPPROTO_UDP, length) if ip_version == 4
                      else struct.pack("!I3xB", length, IPPROTO_UDP))
    udp = UDP_HEADER.pack(sport, dport, length, 0) + payload
    checksum = internet_checksum(pseudo + udp) or 0xFFFF
    udp = UDP_HEADER.pack(sport, dport, length, checksum) + payload
    return ip_frame(udp, IPPROTO_UDP, ip_version=ip_version, src=src, dst=dst, **kwargs)  # type: ignore[arg-type]

