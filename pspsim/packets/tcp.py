"""TCP framing for the packet tier: frames whose sequence numbers advance.

Each flow incarnation (a connection, or its re-established successor after a
PSP reconnect) has its own port pair and byte stream: the client's port is
``32768 + (64 x rank + incarnation mod 64) mod 28232`` (rank: the connection's
number among those of its host pair, so no two live flows of a host pair share
a 4-tuple while a pair has fewer than 441 connections), the server's 443; both
sides start at ISN 0 (data from sequence 1, after the SYN).  Data segments
carry ``seq`` = the bytes the side sent before, ``ack`` = the bytes the other
side had sent by the start of the chunk (what a receiver could have
acknowledged; the tier does not model ACK-only segments).  Checksums are 0
(as with checksum offload).  For captures, the three-way handshake and the
FIN exchange are written at an incarnation's start and end.
"""

from __future__ import annotations

import ipaddress
import struct

import numpy as np

from pspsim.wire.frames import IPPROTO_TCP, ip_frame

TCP_HEADER = struct.Struct("!HHIIBBHHH")
SEQ_ACK = struct.Struct("!II")
HEADER_BYTES = 14 + 20 + 20  # Ethernet, IPv4, TCP
SEQ_AT = 14 + 20 + 4
SYN, ACK, PSH, FIN = 0x02, 0x10, 0x08, 0x01


def host_address(host: int) -> str:
    return str(ipaddress.IPv4Address(0x0A000000 + host + 1))


def ports(rank: int, incarnation: int, direction: int) -> tuple[int, int]:
    client = 32768 + (64 * rank + incarnation % 64) % 28232
    return (client, 443) if direction == 0 else (443, client)


def segment(src: int, dst: int, sport: int, dport: int, seq: int, ack: int, flags: int, payload: bytes) -> bytes:
    tcp = TCP_HEADER.pack(sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 0x50, flags, 0xFFFF, 0, 0)
    return ip_frame(tcp + payload, IPPROTO_TCP, src=host_address(src), dst=host_address(dst))


class Templates:
    """Data frames (zero payload) per (flow, incarnation, length), each kept as the
    bytes before and after the sequence and acknowledgement numbers, in a cache of
    ``limit`` entries (or one batch's, if more), emptied when a batch would overflow it."""

    def __init__(self, ends, rank, limit: int = 50_000) -> None:
        self.ends, self.rank, self.limit = ends, rank, limit
        self.cache: dict[int, tuple[bytes, bytes]] = {}

    def _make(self, key: int) -> tuple[bytes, bytes]:
        flow, incarnation, length = key >> 28, (key >> 16) & 0xFFF, key & 0xFFFF
        conn, direction = flow >> 1, flow & 1
        src, dst = self.ends(conn, direction)
        template = segment(src, dst, *ports(self.rank(conn), incarnation, direction), 0, 0, ACK | PSH,
                           bytes(length))
        return template[:SEQ_AT], template[SEQ_AT + 8:]

    def indexed(self, flow, incarnation, length) -> tuple[list[tuple[bytes, bytes]], np.ndarray]:
        """The distinct (bytes before seq, bytes after ack) data-frame templates of
        packets (arrays of flow, incarnation, payload length) and each packet's
        index among them (int64): found by numpy (``unique``), not looked up
        packet by packet."""
        keys, codes = np.unique((flow << 28) | ((incarnation & 0xFFF) << 16) | length, return_inverse=True)
        distinct, cache = keys.tolist(), self.cache
        missing = set(distinct).difference(cache)
        if missing:
            if len(cache) + len(missing) > self.limit:  # start afresh (a batch may exceed the limit)
                cache.clear()
                missing = set(distinct)
            for k in missing:
                cache[k] = self._make(k)
        return [cache[k] for k in distinct], codes.astype(np.int64, copy=False).reshape(-1)

    @staticmethod
    def parts(templates: list[tuple[bytes, bytes]], codes: np.ndarray) -> list[tuple[bytes, bytes]]:
        """Each packet's template, as a list (``templates[codes[k]]``, gathered by numpy)."""
        table = np.empty(len(templates), dtype=object)
        for i, t in enumerate(templates):  # one by one: numpy would read each pair as two elements
            table[i] = t
        return table[codes].tolist()

    @staticmethod
    def frames(parts: list[tuple[bytes, bytes]], seq: list[int], ack: list[int]) -> list[bytes]:
        """The data frames of :meth:`parts` with their seq and ack (32-bit, as lists)."""
        pack = SEQ_ACK.pack
        return [h + pack(s, a) + t for (h, t), s, a in zip(parts, seq, ack)]


def sequence(sent: dict[int, int], flow: np.ndarray, inc: np.ndarray, length: np.ndarray):
    """TCP seq (bytes the side sent before) and ack (the other side's bytes by the chunk's start)
    of each packet (arrays in send order); ``sent`` (per ``flow * 4096 + incarnation``: 1 + the
    bytes sent so far) is brought up to date."""
    group = flow * 4096 + inc
    order = np.argsort(group, kind="stable")  # send order within each group
    g, n = group[order], length[order]
    first = np.r_[True, g[1:] != g[:-1]]
    cum = np.cumsum(n)
    start = np.maximum.accumulate(np.where(first, cum - n, 0))
    uniq = g[first].tolist()
    base = np.array([sent.get(x, 1) for x in uniq], dtype=np.int64)
    rank = np.cumsum(first) - 1
    seq = np.empty(len(flow), dtype=np.int64)
    seq[order] = base[rank] + (cum - n - start)
    ack_of = {x: sent.get(x ^ 4096, 1) for x in uniq}  # flow ^ 1 is the reverse direction
    ack = np.empty(len(flow), dtype=np.int64)
    ack[order] = np.array([ack_of[x] for x in uniq], dtype=np.int64)[rank]
    ends = np.r_[np.flatnonzero(first)[1:], len(g)] - 1
    for x, b, total in zip(uniq, base.tolist(), (cum[ends] - start[ends]).tolist()):
        sent[x] = b + total
    return seq, ack


def handshake(rank: int, incarnation: int, client: int, server: int, t: float,
              rtt: float) -> list[tuple[float, bytes]]:
    """SYN, SYN-ACK, ACK (one round trip ``rtt`` apart), sequence numbers from ISN 0."""
    c, s = ports(rank, incarnation, 0)
    return [(t, segment(client, server, c, s, 0, 0, SYN, b"")),
            (t + rtt / 2, segment(server, client, s, c, 0, 1, SYN | ACK, b"")),
            (t + rtt, segment(client, server, c, s, 1, 1, ACK, b""))]


def closing(rank: int, incarnation: int, client: int, server: int, t: float, rtt: float,
            client_seq: int, server_seq: int) -> list[tuple[float, bytes]]:
    """FIN-ACK from the client, FIN-ACK back, the last ACK."""
    c, s = ports(rank, incarnation, 0)
    return [(t, segment(client, server, c, s, client_seq, server_seq, FIN | ACK, b"")),
            (t + rtt / 2, segment(server, client, s, c, server_seq, client_seq + 1, FIN | ACK, b"")),
            (t + rtt, segment(client, server, c, s, client_seq + 1, server_seq + 1, ACK, b""))]
