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
frames may be sealed in send order just before the receive side needs them
(:class:`SendQueue`), and verified in batches of :data:`BATCH` in arrival
order, so that most frames are verified while still in the CPU cache (a
batch's frames, ~360 KB, fit a core's L2 of this machine's EPYC); a
verified frame is then let go (its memory serves the next frames sealed),
and if a later packet of the same period is rejected, so that the whole
period is opened again one by one, :meth:`PspNics.reopen` repeats what
opening it again would do.
"""

from __future__ import annotations

import bisect
from collections import Counter

import numpy as np

from pspsim.wire.errors import NotPspPacket, PspRejected, WireError
from pspsim.wire.psp_kdf import SPI_KEY_PHASE_BIT, derive_sa_key
from pspsim.wire.psp_packet import PspEncap, PspOpened, PspSender, _psp_fast, decapsulate, templates_sealer, verify_each
from pspsim.wire.psp_sa import DeviceKeys, PspSA

#: Ethernet 14 + IPv4 20 + UDP 8 + PSP header 16 + ICV 16: what the byte counters leave out.
UNCOUNTED = 14 + 20 + 8 + 16 + 16
BATCH = 256  # packets verified per compiled call when frames are sealed on demand (~360 KB: in L2)
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
               queue: SendQueue | None = None) -> list[bool | None]:
        """:func:`~pspsim.wire.psp_packet.verify_each` with the NICs' keys (``hosts``:
        each frame's receiver; int64 arrays), sealing ``queue``'s frames as they are
        needed."""
        if queue is None:
            return verify_each(frames, indices, self.devices, hosts)
        out: list[bool | None] = []
        for a in range(0, len(indices), BATCH):
            part = indices[a:a + BATCH]
            queue.upto(int(part.max()) + 1)
            out += verify_each(frames, part, self.devices, hosts, release=True)  # verified: let go (see reopen)
        return out

    def reopen(self, nic: int, sa: PspSA, frame_len: int) -> str:
        """:meth:`open` of a frame of ``sa`` that ``nic`` verified and let go in this
        rotation period: it verifies again, with the same key lookup and counts."""
        self.devices[nic].sa_for(sa.spi, sa.version)
        c = self.counters[nic]
        c["rx-packets"] += 1
        c["rx-bytes"] += frame_len - UNCOUNTED
        return ""

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
    when :meth:`upto` asks for them; ``frames[k]`` is packet ``k``'s frame, made
    from ``templates[codes[k]]`` with its seq and ack words, which must be
    ``lengths[k]`` bytes long (what the fabric carried).  The per-packet
    arguments are arrays."""

    def __init__(self, senders: list[PspSender], which: np.ndarray, templates: list[tuple[bytes, bytes]],
                 codes: np.ndarray, seq: np.ndarray, ack: np.ndarray, lengths: np.ndarray) -> None:
        self.senders, self.seal, self.templates = senders, templates_sealer(senders), templates
        self.args, self.lengths, self.frames = (which, codes, seq, ack), lengths, []

    def sa(self, k: int) -> PspSA:
        """The SA that sealed packet ``k``."""
        return self.senders[int(self.args[0][k])].sa

    def upto(self, n: int) -> None:
        """Seal the packets before ``n`` that are not sealed yet."""
        k = len(self.frames)
        if n > k:
            which, codes, seq, ack = self.args
            try:
                self.frames += self.seal(which[k:n], self.templates, codes[k:n], seq[k:n], ack[k:n], self.lengths[k:n])
            except ValueError as exc:
                if isinstance(exc, WireError):  # not the length check
                    raise
                raise AssertionError(f"a PSP frame's length differs from the one the fabric carried: {exc}") from None
