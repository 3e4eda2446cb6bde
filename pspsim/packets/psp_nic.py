"""PSP NICs of the packet tier: device keys, rotations, SPIs, senders, counters.

Each NIC holds two real 256-bit device keys (:class:`~pspsim.wire.psp_sa.DeviceKeys`;
the SPI's top bit picks the slot).  A rotation puts a fresh random key in the
older slot and makes it active (``key-rotate``: active -> prev -> stale), so a
connection whose association was made two rotations ago really fails
authentication: the slot its SPI names now holds a newer key.  Nothing is
decided by a flag.  The keys of every rotation are drawn in advance, so the
sending side derives a TX key from the device key of the association's moment
(``rx-assoc``: SPI + derived key handed to the peer) and the receiving side
installs the same keys when the rotations happen (in arrival order).

Counters carry the kernel's names (``psp get-stats``, Linux 6.19;
reference/linux-psp.md 1.4): ``key-rotations``, ``stale-events``,
``rx-packets``, ``rx-bytes`` and ``tx-bytes`` (from the first byte after the
PSP header through the last payload byte: no UDP, PSP header or ICV),
``rx-auth-fail``, ``rx-error``, ``rx-bad``, ``tx-packets``, ``tx-error``.

Speed only (the bytes and every count are the same either way): a chunk's
frames are sealed in send order just before the receive side needs them
(:class:`SendQueue`, :func:`~pspsim.wire.psp_packet.seal_queue`: arrival order
runs at most a few dozen packets ahead of send order), so that each frame is
verified while still in the CPU cache; a verified frame is then let go (its
memory serves the next frames sealed); when a packet is rejected, the batch
goes on (the rejection counted as opening that packet by itself counts it),
so every key lookup happens once, in arrival order.
"""

from __future__ import annotations

import bisect
from collections import Counter

import numpy as np

from pspsim.wire.errors import NotPspPacket, PspRejected
from pspsim.wire.psp_kdf import SPI_KEY_PHASE_BIT, derive_sa_key
from pspsim.wire.psp_packet import PspEncap, PspOpened, PspSender, _psp_fast, decapsulate, seal_queue, verify_each
from pspsim.wire.psp_sa import DeviceKeys, PspSA

#: Ethernet 14 + IPv4 20 + UDP 8 + PSP header 16 + ICV 16: what the byte counters leave out.
UNCOUNTED = 14 + 20 + 8 + 16 + 16
COUNTERS = ("key-rotations", "stale-events", "rx-packets", "rx-bytes", "rx-auth-fail", "rx-error", "rx-bad",
            "tx-packets", "tx-bytes", "tx-error")


class PspNics:
    def __init__(self, hosts: int, rotations: dict[int, list[float]], version: int,
                 rng: np.random.Generator) -> None:
        self.version = version
        self.initial = [(rng.bytes(32), rng.bytes(32)) for _ in range(hosts)]
        self.rotations = {n: sorted(rotations.get(n, [])) for n in range(hosts)}
        self.new_keys = {n: [rng.bytes(32) for _ in times] for n, times in self.rotations.items()}
        self.devices = [DeviceKeys(k0, k1) for k0, k1 in self.initial]
        self.applied = [0] * hosts
        self.encap = PspEncap("transport", transport_crypt_offset=1)
        self.senders: dict[tuple[int, int], PspSender] = {}
        self.counters = [Counter({name: 0 for name in COUNTERS}) for _ in range(hosts)]

    def key_at(self, nic: int, t: float) -> tuple[int, bytes]:
        """(phase, device key) a NIC hands out for new SPIs at ``t``."""
        g = bisect.bisect_right(self.rotations[nic], t)
        return g % 2, (self.new_keys[nic][g - 1] if g else self.initial[nic][0])

    def sender(self, nic: int, assoc_time: float, spi_id: int) -> PspSender:
        """The peer's sender for an association made on ``nic`` at ``assoc_time``."""
        key = (nic, spi_id, assoc_time)
        sender = self.senders.get(key)
        if sender is None:
            phase, master = self.key_at(nic, assoc_time)
            spi = spi_id | (SPI_KEY_PHASE_BIT if phase else 0)
            sa = PspSA(spi, derive_sa_key(master, spi, self.version), self.version)
            sender = self.senders[key] = PspSender(sa, self.encap)
        return sender

    def rotate_until(self, nic: int, t: float) -> None:
        """Apply ``nic``'s rotations at or before ``t`` (receive side)."""
        times, k = self.rotations[nic], self.applied[nic]
        while k < len(times) and times[k] <= t:
            self.devices[nic].rotate(self.new_keys[nic][k])
            self.counters[nic]["key-rotations"] += 1
            k += 1
        self.applied[nic] = k

    def next_rotation(self, nic: int) -> float:
        k, times = self.applied[nic], self.rotations[nic]
        return times[k] if k < len(times) else float("inf")

    def count_tx(self, nic: int, packets: int, frame_bytes: int) -> None:
        c = self.counters[nic]
        c["tx-packets"] += packets
        c["tx-bytes"] += frame_bytes - UNCOUNTED * packets

    def count_rx(self, nics: np.ndarray, frame_bytes: np.ndarray) -> None:
        """Add verified packets to ``rx-packets`` / ``rx-bytes`` in bulk."""
        used, counts = np.unique(nics, return_counts=True)
        for nic, n, b in zip(used, counts, np.bincount(nics, weights=frame_bytes)[used]):
            c = self.counters[int(nic)]
            c["rx-packets"] += int(n)
            c["rx-bytes"] += int(b) - UNCOUNTED * int(n)

    def verify(self, frames: list[bytes], indices: np.ndarray, hosts: np.ndarray,
               queue: SendQueue | None = None) -> list[bool | str | None]:
        """:func:`~pspsim.wire.psp_packet.verify_each` with the NICs' keys (``hosts``:
        each frame's receiver; int64 arrays), sealing ``queue``'s frames as they are
        needed and letting verified ones go: ``True`` verified (its ``rx-packets``
        and ``rx-bytes`` are the caller's to add, :meth:`count_rx`), the counter it
        moved for a rejected one (counted here, as :meth:`open` counts it), ``None``
        for one left to :meth:`open`."""
        rejections: list = []
        out: list = verify_each(frames, indices, self.devices, hosts, release=queue is not None,
                                queue=None if queue is None else queue.sealing, rejections=rejections)
        for k, exc in rejections:
            self.counters[int(hosts[indices[k]])][exc.counter] += 1
            out[k] = exc.counter
        return out

    def open(self, nic: int, frame: bytes) -> str:
        """Verify one received frame at ``nic`` and count it: "" if it verified, else
        the counter it moved."""
        c = self.counters[nic]
        try:
            if _psp_fast is None or _psp_fast.decapsulate(frame, self.devices[nic], None, PspOpened, False) is None:
                decapsulate(frame, self.devices[nic])  # the general path for unusual frames
        except PspRejected as exc:
            c[exc.counter] += 1
            return exc.counter
        except NotPspPacket:
            return "not-psp"
        c["rx-packets"] += 1
        c["rx-bytes"] += len(frame) - UNCOUNTED
        return ""

    def keys_table(self, nic: int, span: float) -> list[tuple[float, float, bytes, bytes]]:
        """(start, end, key slot 0, key slot 1) for each period between ``nic``'s rotations."""
        keys = list(self.initial[nic])
        out, start, active = [], 0.0, 0
        for when, new in zip(self.rotations[nic], self.new_keys[nic]):
            out.append((start, when, keys[0], keys[1]))
            active = 1 - active
            keys[active] = new
            start = when
        out.append((start, span, keys[0], keys[1]))
        return out

    @property
    def cache_hit_ratio(self) -> float:
        hits = sum(d.cache_hits for d in self.devices)
        return hits / max(hits + sum(d.cache_misses for d in self.devices), 1)


class SendQueue:
    """One chunk's PSP frames, sealed in send order (each sender's IVs in order)
    as the receive side needs them (:func:`~pspsim.wire.psp_packet.seal_queue`);
    ``frames[k]`` is packet ``k``'s frame, made from ``templates[codes[k]]`` with
    its seq and ack words, which must be ``lengths[k]`` bytes long (what the
    fabric carried).  The per-packet arguments are arrays."""

    def __init__(self, senders: list[PspSender], which: np.ndarray, templates: list[tuple[bytes, bytes]],
                 codes: np.ndarray, seq: np.ndarray, ack: np.ndarray, lengths: np.ndarray) -> None:
        self.lengths = lengths
        self.sealing = seal_queue(senders, which, templates, codes, seq, ack, lengths)
        self.frames = self.sealing.frames

    def upto(self, n: int) -> None:
        """Seal the packets before ``n`` that are not sealed yet."""
        self.sealing.upto(n)
