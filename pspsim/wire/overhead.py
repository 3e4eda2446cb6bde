"""Bytes each protection mode adds, measured from real packets and records.

Nothing here is a formula: every number comes from protecting a real frame
or record and comparing lengths, so the numbers move if the wire code
changes.  The simulator uses these functions for per-packet and per-record
overhead.  PSP adds a constant per packet; ESP's padding makes its overhead
depend on the payload length modulo 4; TLS adds a constant per record.
"""

from __future__ import annotations

from functools import lru_cache
from itertools import product

from pspsim.wire.esp import EspSA, esp_encapsulate
from pspsim.wire.frames import udp_frame
from pspsim.wire.psp_header import VC_LEN
from pspsim.wire.psp_packet import PspEncap, encapsulate
from pspsim.wire.psp_sa import PspSA
from pspsim.wire.tls import tls_record_overhead

DEFAULT_PAYLOADS = (0, 1, 2, 3, 1000, 1392)  # 0..3 show ESP padding


@lru_cache(maxsize=4096)
def psp_overhead(mode: str = "transport", ip_version: int = 4, vc: bool = False, payload: int = 1000) -> int:
    """Bytes PSP adds to one IP packet carrying ``payload`` UDP payload bytes."""
    frame = udp_frame(bytes(payload), ip_version=ip_version)
    sealed = encapsulate(frame, PspSA(1, bytes(16), 0), 1, PspEncap(mode, vc=bytes(VC_LEN) if vc else None))
    return len(sealed) - len(frame)


@lru_cache(maxsize=4096)
def esp_overhead(mode: str = "transport", ip_version: int = 4, udp_encap: bool = False, payload: int = 1000) -> int:
    """Bytes ESP (AES-GCM) adds to one IP packet carrying ``payload`` UDP payload bytes."""
    frame = udp_frame(bytes(payload), ip_version=ip_version)
    sealed = esp_encapsulate(frame, EspSA(1, bytes(20), mode=mode, udp_encap=udp_encap))
    return len(sealed) - len(frame)


def overhead_rows(payloads: tuple[int, ...] = DEFAULT_PAYLOADS) -> list[dict[str, object]]:
    """One row per protocol, mode and payload size: measured sizes and overhead."""
    rows = []

    def add(protocol: str, mode: str, ip_version: int | None, payload: int, frame_len: int, added: int) -> None:
        rows.append({"protocol": protocol, "mode": mode, "ip_version": ip_version, "payload_bytes": payload,
                     "unprotected_bytes": frame_len, "protected_bytes": frame_len + added, "overhead_bytes": added})

    for ip_version, payload in product((4, 6), payloads):
        frame_len = len(udp_frame(bytes(payload), ip_version=ip_version))
        for mode, vc in product(("transport", "tunnel"), (False, True)):
            add("psp", mode + (" +VC" if vc else ""), ip_version, payload, frame_len,
                psp_overhead(mode, ip_version, vc, payload))
        for mode, udp in product(("transport", "tunnel"), (False, True)):
            add("esp", mode + (" +UDP" if udp else ""), ip_version, payload, frame_len,
                esp_overhead(mode, ip_version, udp, payload))
    for version, payload in product(("1.3", "1.2"), payloads):
        add(f"tls{version}", "record", None, payload, payload, tls_record_overhead(version))
    return rows
