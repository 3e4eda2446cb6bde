"""What the packet tier's control plane decided: the schedule the data plane applies.

Per flow (connection x direction, ``2 * conn + direction``) the protection
epochs in time order; per NIC the device-key rotation times; the ESP SA
installs and removals; NIC table entry changes; the event counts.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np


def ages(origin: float, interval: float, stop: float, after: float = 0.0) -> np.ndarray:
    """Times ``origin + k * interval`` (k >= 1) in ``[after, stop)`` (``after`` > 0: strictly after)."""
    if not np.isfinite(interval) or interval <= 0:
        return np.empty(0)
    first = max(1, int(np.floor((after - origin) / interval)))
    last = int(np.ceil((stop - origin) / interval))
    times = origin + interval * np.arange(first, max(first, last + 1))
    keep = (times >= after) if after <= 0 else (times > after)
    return times[keep & (times < stop)]


@dataclass(frozen=True)
class SaEvent:
    """An inbound ESP SA installed at or removed from ``host``'s SADB."""

    time: float
    kind: str  # "install" | "remove"
    host: int
    spi: int
    key: tuple[int, int, int]  # (sa id, generation, sending host)


@dataclass(frozen=True)
class Epoch:
    """How a flow's packets are protected from ``start`` on.  kind: "psp" (data:
    receiving NIC, association time, SPI id), "tls" (software TLS records),
    "esp" / "esp-sw" (data: SA id, generation, sender, SPI), "records" (a TLS variant;
    "records-sw": kTLS offload sockets on software after a full context table),
    "plain", "fail" (not sent: an offload failure), "wait" (held until the upgrade)."""

    start: float
    kind: str
    data: tuple = ()
    incarnation: int = 0


@dataclass
class Schedule:
    counts: Counter = field(default_factory=Counter)
    epochs: dict[int, list[Epoch]] = field(default_factory=lambda: defaultdict(list))  # flow -> epochs
    rotations: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))  # nic -> times
    stale: list[tuple[float, int, int]] = field(default_factory=list)  # (time, nic, conn)
    tls_rekeys: dict[int, list[tuple[float, str]]] = field(default_factory=dict)  # conn -> (time, kind)
    entries: list[tuple[float, int, int]] = field(default_factory=list)  # (time, nic, +-n) NIC table entries
    esp: list = field(default_factory=list)  # ipsec_sadb.SaEvent, time order
    command_delay_max_s: float = 0.0

    def nic_entries_at(self, times: np.ndarray, nics: int) -> np.ndarray:
        """Live NIC table entries summed over NICs at each of ``times``."""
        if not self.entries:
            return np.zeros(len(times))
        when = np.array([e[0] for e in self.entries])
        delta = np.array([e[2] for e in self.entries], dtype=np.float64)
        order = np.argsort(when, kind="stable")
        total = np.cumsum(delta[order])
        at = np.searchsorted(when[order], times, side="right")
        return np.where(at > 0, total[np.maximum(at - 1, 0)], 0.0)


