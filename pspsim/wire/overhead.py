"""Bytes each protection mode adds to a packet, measured from real packets.

Nothing here is a formula: every row comes from encapsulating a real frame
and comparing lengths, so the numbers move if the wire code changes.  The
simulator uses these functions for per-packet overhead.
"""

from __future__ import annotations

from itertools import product

from pspsim.wire.frames import udp_frame
from pspsim.wire.psp_header import VC_LEN
from pspsim.wire.psp_packet import PspEncap, encapsulate
from pspsim.wire.psp_sa import PspSA

_SAMPLE_KEY = bytes(32)


def psp_overhead(mode: str = "transport", ip_version: int = 4, vc: bool = False, payload: int = 1000) -> int:
    """Bytes PSP adds to one IP packet of ``payload`` UDP payload bytes, measured."""
    frame = udp_frame(bytes(payload), ip_version=ip_version)
    sa = PspSA(1, _SAMPLE_KEY[:16], 0)
    sealed = encapsulate(frame, sa, 1, PspEncap(mode, vc=bytes(VC_LEN) if vc else None))
    return len(sealed) - len(frame)


def psp_overhead_rows(payloads: tuple[int, ...] = (0, 64, 1000, 1392)) -> list[dict[str, object]]:
    """One row per (mode, IP version, cookie, payload): measured sizes and overhead."""
    rows = []
    for mode, ip_version, vc, payload in product(("transport", "tunnel"), (4, 6), (False, True), payloads):
        frame_len = len(udp_frame(bytes(payload), ip_version=ip_version))
        added = psp_overhead(mode, ip_version, vc, payload)
        rows.append(
            {
                "protocol": "psp",
                "mode": mode,
                "ip_version": ip_version,
                "vc": vc,
                "payload_bytes": payload,
                "frame_bytes": frame_len,
                "protected_frame_bytes": frame_len + added,
                "overhead_bytes": added,
            }
        )
    return rows
