"""The packet tier: real, really encrypted packets for a sample of connections.

For the sampled connections (those touching ``[packets] hosts``, or the
whole fleet; at most ``max_connections``, the first in start order), every
message becomes real frames: Ethernet/IPv4/TCP, sealed
by the sending NIC with :mod:`pspsim.wire` (PSP, ESP, or TLS records in the
TCP stream), carried by the fabric, and opened by the receiving NIC:

* PSP: each NIC holds two real 256-bit device keys.  The receiver allocates
  SPIs and derives SA keys; the sender seals with its copy of the key and a
  per-SA IV counter.  A rotation replaces the NIC's older master key with a
  fresh random one, so a connection that was not rekeyed in time really
  fails authentication at the receiver; nothing is decided by a flag.
  Rotation and rekey times are shared with the fleet model's run of the same
  scenario (same schedule, same command-queue delays), so the two tiers can
  be compared.
* ESP: one SA pair per host pair, looked up by SPI in the receiver's SA
  database, with sequence numbers and the anti-replay window; a CHILD_SA
  rekey installs the new inbound SA, switches the sender, and removes the
  old inbound SA after the make-before-break overlap.
* TLS: records sealed per message and carried in the TCP byte stream; the
  receiver reassembles records in order and opens them.  TLS 1.3 rekeys
  with an in-band KeyUpdate; kTLS offload (TLS 1.2) reconnects, modelled as
  an in-band marker after which both sides use fresh keys.

The fabric (:mod:`pspsim.packets.fabric`) carries each window's packets
through host links and the spine as FIFO servers in one vectorised pass (no
event per hop), with drops on overflow.

Not modelled: TCP payload bytes (zeros), sequence numbers and
retransmission (frames are per-connection templates), handshake packets.
"""

from __future__ import annotations

import ipaddress
import os
import struct
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from pspsim.costs.params import Costs
from pspsim.packets.fabric import Fabric
from pspsim.model.simulation import FleetSimulation, VariantRun
from pspsim.model.streams import RandomStreams
from pspsim.model.variants import Variant, make_variant
from pspsim.model.workload import Workload
from pspsim.scenario import Scenario
from pspsim.wire.errors import NotPspPacket, PspRejected, WireError
from pspsim.wire.esp import EspRejected, EspSA, esp_decapsulate, esp_encapsulate
from pspsim.wire.frames import IPPROTO_TCP, ip_frame
from pspsim.wire.pcap import PcapHeader, PcapRecord, PcapWriter
from pspsim.wire.psp_packet import PspEncap, PspOpened, PspSender, _psp_fast, decapsulate
from pspsim.wire.psp_kdf import SPI_KEY_PHASE_BIT, derive_sa_key
from pspsim.wire.psp_sa import DeviceKeys, PspSA
from pspsim.wire.tls import (
    CONTENT_HANDSHAKE,
    MAX_PLAINTEXT,
    RECORD_HEADER_LEN,
    Tls12GcmRecordProtection,
    Tls13RecordProtection,
    TlsRejected,
    key_update_message,
)

#: Called for every packet after the fabric: returns the frames to deliver
#: instead (none: lost; two: duplicated; changed bytes: tampered).
InFlight = Callable[[int, bytes], list[bytes]]

TCP_HEADER = struct.Struct("!HHIIBBHHH")
HEADER_BYTES = 14 + 20 + 20  # Ethernet, IPv4, TCP


def host_address(host: int) -> str:
    return str(ipaddress.IPv4Address(0x0A000000 + host + 1))


@dataclass
class PacketTierResult:
    """What the packet tier measured over ``duration`` seconds."""

    variant: str
    duration: float
    outcomes: Counter  # delivered, per-counter drops, fabric drops ...
    packets_sent: int
    payload_bytes_delivered: int
    wire_bytes_sent: int
    inner_bytes_sent: int  # the same frames unprotected
    records: int
    record_overhead_bytes: int  # TLS: bytes the records add to the messages
    payload_noise: float  # relative standard deviation of the delivered payload (Poisson messages)
    handshakes: int
    rekeys: int
    nic_entries: int  # live NIC table entries at the end (TX keys, SAs, contexts)
    key_cache_hit_ratio: float
    model: VariantRun  # the fleet model's run of the same scenario and span
    arrivals: dict[str, np.ndarray] = field(repr=False, default_factory=dict)


@dataclass
class _Packets:
    """One window's packets, in send order."""

    wire: list[bytes]
    inner: list[bytes]
    send: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    conn: np.ndarray
    direction: np.ndarray
    length: np.ndarray  # TCP payload bytes


class PacketTier:
    def __init__(self, scenario: Scenario, variant: str, costs: Costs, workload: Workload,
                 rng: np.random.Generator, capture_host: int | None = None, capture_dir: str | None = None,
                 in_flight: InFlight | None = None) -> None:
        span = scenario.packets.duration
        self.sc = scenario.model_copy(update={"run": scenario.run.model_copy(update={"duration": span})})
        self.c, self.w, self.rng = costs, workload, rng
        self.v: Variant = make_variant(variant, costs, scenario.keys)
        self.duration = span
        self.capture_host, self.capture_dir, self.in_flight = capture_host, capture_dir, in_flight
        model_seed, self.key_seed = rng.integers(0, 2**63, 2)
        self.model = FleetSimulation(self.sc, self.v, workload, costs,
                                     RandomStreams.from_sequence(np.random.SeedSequence(int(model_seed))))
        self.model_run = self.model.run()
        hosts = scenario.packets.hosts
        touches = (workload.start < span) & (workload.end > 0)
        if hosts is not None:
            touches &= np.isin(workload.client, hosts) | np.isin(workload.server, hosts)
        self.sample = np.flatnonzero(touches)[: scenario.packets.max_connections]
        self.key_rng = np.random.default_rng(self.key_seed)
        self.outcomes: Counter = Counter()
        self._frames: dict = {}
        self.fabric = Fabric(scenario.fleet, scenario.packets.link_buffer_bytes)

    # -- keys and protection state ---------------------------------------------------
    def _secret(self, n: int) -> bytes:
        return self.key_rng.bytes(n)

    def _setup(self) -> None:
        v, hosts = self.v, self.sc.fleet.hosts
        self.pending_rekeys: set[tuple[int, int]] = set()
        self.seal_fn: dict[int, Callable[[bytes], bytes]] = {}  # PSP senders by flow (conn * 2 + direction)
        self.tx: dict[tuple[int, int], object] = {}
        self.rx: dict[tuple[int, int], object] = {}
        self.handshakes = self.rekeys = 0
        if v.name == "psp":
            initial = [(self._secret(32), self._secret(32)) for _ in range(hosts)]
            self.nic_keys = [DeviceKeys(k0, k1) for k0, k1 in initial]
            period = self.sc.keys.psp_rotation_period
            # Every rotation's new key, drawn in advance: the sending pass derives
            # new SAs from the key a NIC holds at that moment, the receiving pass
            # installs the same keys at the same moments.
            self.rotations = [[(float(r), self._secret(32)) for r in np.arange(offset, self.duration, period)]
                              for offset in self.model.rotation_offset]
            self.initial_keys = initial
            self.next_spi = [1] * hosts
            self.encap = PspEncap("transport", transport_crypt_offset=1)
        if v.sa_based:
            self.sad: list[dict[int, EspSA]] = [{} for _ in range(hosts)]
            self.next_esp_spi = 0x100

    def _ends(self, conn: int, direction: int) -> tuple[int, int]:
        c, s = int(self.w.client[conn]), int(self.w.server[conn])
        return (c, s) if direction == 0 else (s, c)

    def _active_key(self, nic: int, time: float) -> tuple[int, bytes]:
        """The (phase, master key) a NIC uses for new SPIs at ``time``."""
        done = [key for when, key in self.rotations[nic] if when <= time]
        if not done:
            return 0, self.initial_keys[nic][0]
        return len(done) % 2, done[-1]

    def _psp_sa(self, conn: int, direction: int, time: float) -> None:
        """The receiver allocates an SPI under its active key; the sender gets the derived key."""
        _, rx = self._ends(conn, direction)
        spi_id = self.next_spi[rx]
        self.next_spi[rx] += 1
        phase, master = self._active_key(rx, time)
        spi = spi_id | (SPI_KEY_PHASE_BIT if phase else 0)
        version = self.sc.keys.psp_version
        sender = PspSender(PspSA(spi, derive_sa_key(master, spi, version), version), self.encap)
        self.seal_fn[conn * 2 + direction] = sender.seal

    def _esp_pair(self) -> tuple[EspSA, EspSA]:
        """Outbound and inbound halves of one ESP SA (same SPI and key)."""
        key = self._secret(20)
        spi = self.next_esp_spi
        self.next_esp_spi += 1
        return EspSA(spi, key), EspSA(spi, key, replay_window=1024)

    def _open_connection(self, conn: int, time: float) -> None:
        v = self.v
        if v.name == "plaintext" or v.sa_based:
            return
        self.handshakes += time > 0  # connections running at time 0 were set up before the run
        for d in (0, 1):
            if v.name == "psp":
                self._psp_sa(conn, d, time)
            elif v.name == "ktls-offload":
                key, salt = self._secret(16), self._secret(4)
                self.tx[conn, d] = Tls12GcmRecordProtection(key, salt)
                self.rx[conn, d] = [Tls12GcmRecordProtection(key, salt), b"", []]
            else:
                secret = self._secret(32)
                self.tx[conn, d] = Tls13RecordProtection("TLS_AES_128_GCM_SHA256", secret)
                self.rx[conn, d] = [Tls13RecordProtection("TLS_AES_128_GCM_SHA256", secret), b"", []]

    def _esp_events(self, sa_index: int, times: list[float]) -> tuple[list, list]:
        """Set-up (at times[0]) and rekeys of one host pair's SAs, both directions:
        the receiver installs the new inbound SA, the sender switches at the
        same moment, and the old inbound SA goes after the make-before-break
        overlap."""
        a, b = int(self.model.sa_a[sa_index]), int(self.model.sa_b[sa_index])
        tx_events, rx_events = [], []
        for direction, dst in ((0, b), (1, a)):
            previous = None
            for k, time in enumerate(times):
                tx, rx = self._esp_pair()
                rx_events.append((time, 0, "esp-install", (dst, rx)))
                tx_events.append((time, 1, "esp-switch", (sa_index, direction, tx, k > 0)))
                if previous is not None:
                    rx_events.append((time + self.sc.keys.ipsec_rekey_overlap, 2, "esp-remove", (dst, previous)))
                previous = rx.spi
        return tx_events, rx_events

    # -- the schedule of control events --------------------------------------------
    def _control_events(self) -> None:
        """(time, order, kind, data) lists: sender-side and receiver-side changes."""
        w, span, v = self.w, self.duration, self.v
        events, rx_events = [], []
        for conn in self.sample:
            if w.start[conn] > 0:
                events.append((float(w.start[conn]), 0, "open", int(conn)))
        if v.name == "psp":
            for nic, rotations in enumerate(self.rotations):
                for when, key in rotations:
                    rx_events.append((when, 0, "rotate", (nic, key)))
            sampled = np.zeros(len(w), dtype=bool)
            sampled[self.sample] = True
            m = self.model
            for i in np.flatnonzero(sampled[m.rk_conn] & (m.rk_done < span)):
                conn, rx = int(m.rk_conn[i]), int(m.rk_rx[i])
                direction = 0 if rx == w.server[conn] else 1
                events.append((float(m.rk_done[i]), 1, "psp-rekey", (conn, direction)))
        if v.sa_based:
            for sa in np.unique(self.model.sa_of[self.sample]):
                start, interval = float(self.model.sa_start[sa]), float(self.model.sa_interval[sa])
                times = [max(start, 0.0)]
                first = int(np.floor(max(0.0, -start) / interval)) + 1
                for k in range(first, int(np.ceil((span - start) / interval)) + 1):
                    if 0 < start + k * interval < span:
                        times.append(start + k * interval)
                tx_part, rx_part = self._esp_events(int(sa), times)
                events += tx_part
                rx_events += rx_part
        if v.uses_records:
            interval = self.sc.keys.tls_rekey_interval
            for conn in self.sample:
                for r in np.arange(max(w.start[conn], 0) + interval, min(w.end[conn], span), interval):
                    events.append((float(r), 1, "tls-rekey", int(conn)))
        events.sort(key=lambda e: (e[0], e[1]))
        rx_events.sort(key=lambda e: (e[0], e[1]))
        self.tx_control, self.rx_control = deque(events), deque(rx_events)

    # -- frames -------------------------------------------------------------------
    def _messages(self, t0: float, t1: float):
        """Messages in [t0, t1): (time, conn, direction, bytes), sorted by time."""
        w, s = self.w, self.sample
        lo, hi = np.maximum(w.start[s], t0), np.minimum(w.end[s], t1)
        live = hi > lo
        conns, span = s[live], (hi - lo)[live]
        counts = self.rng.poisson(w.msgs_per_s[conns] * span)
        conn = np.repeat(conns, counts)
        times = np.repeat(lo[live], counts) + self.rng.uniform(0, 1, counts.sum()) * np.repeat(span, counts)
        size = w.msg_bytes[conn].astype(np.int64)
        out = [(times, conn, np.zeros(len(conn), dtype=np.int64), size)]
        if w.response_ratio > 0:
            out.append((times + 1e-6, conn, np.ones(len(conn), dtype=np.int64),
                        np.maximum(1, (size * w.response_ratio).astype(np.int64))))
        times, conn, direction, size = (np.concatenate(x) for x in zip(*out))
        order = np.argsort(times, kind="stable")
        return times[order], conn[order], direction[order], size[order]

    # -- the run ------------------------------------------------------------------
    def run(self) -> PacketTierResult:
        self._setup()
        for conn in self.sample:
            if self.w.start[conn] <= 0:
                self._open_connection(int(conn), 0.0)
        self._control_events()
        self._apply_control(self.tx_control, 0.0, inclusive=True)
        self._apply_control(self.rx_control, 0.0, inclusive=True)
        self.stats = Counter()
        self.capture = self._open_capture()
        self.arrival_log: list[tuple[np.ndarray, ...]] = []
        window = self.sc.run.window
        try:
            for t0 in np.arange(0, self.duration, window):
                self._window(float(t0), float(min(t0 + window, self.duration)))
        finally:
            if self.capture is not None:
                self.capture.close()
        if self.capture is not None and self.v.name == "psp":
            self._write_capture_keys()
        return self._result()

    def _write_capture_keys(self) -> None:
        """The capture host's two device keys for each period between its rotations,
        as reference-format decrypt cfg files, so the capture can be decrypted
        (``pspsim psp decrypt --cfg``).  Keys appear only because the pcap needs them."""
        host = self.capture_host
        keys, active = list(self.initial_keys[host]), 0
        epochs = [(0.0, tuple(keys))]
        for when, key in self.rotations[host]:
            active = 1 - active
            keys[active] = key
            epochs.append((when, tuple(keys)))
        lines = ["epoch,start_s,end_s,cfg"]
        for i, (start, (k0, k1)) in enumerate(epochs):
            end = epochs[i + 1][0] if i + 1 < len(epochs) else self.duration
            name = f"psp-host{host}-keys-{i}.cfg"
            with open(os.path.join(self.capture_dir, name), "w") as cfg:
                cfg.write(" ".join(f"{b:02x}" for b in k0) + "\n" + " ".join(f"{b:02x}" for b in k1) + "\n")
            lines.append(f"{i},{start:.9f},{end:.9f},{name}")
        with open(os.path.join(self.capture_dir, f"psp-host{host}-keys.csv"), "w") as index:
            index.write("\n".join(lines) + "\n")

    def _window(self, t0: float, t1: float) -> None:
        """One window: seal in send order, carry, open in arrival order."""
        times, conns, directions, sizes = self._messages(t0, t1)
        packets = self._transmit(times, conns, directions, sizes)
        if packets is None:
            self._apply_control(self.tx_control, t1)
            self._apply_control(self.rx_control, t1)
            return
        wire_len = np.fromiter(map(len, packets.wire), dtype=np.float64, count=len(packets.wire))
        arrive, dropped = self.fabric.carry(packets.send, packets.src, packets.dst, wire_len)
        self.outcomes["fabric-drop"] += int(dropped.sum())
        self._receive(packets, arrive, dropped, t1)

    def _apply_control(self, events: deque, until: float, inclusive: bool = False) -> None:
        """Apply, in order, the events of one list that happen before ``until``.
        The sending pass applies sender-side events before each send, the
        receiving pass receiver-side events before each arrival."""
        while events and (events[0][0] < until or (inclusive and events[0][0] <= until)):
            time, _, kind, data = events.popleft()
            if kind == "open":
                self._open_connection(data, time)
            elif kind == "rotate":
                nic, key = data
                self.nic_keys[nic].rotate(key)
                self.stats["rotations"] += 1
            elif kind == "psp-rekey":
                self._psp_sa(*data, time)
                self.rekeys += 1
            elif kind == "esp-switch":
                sa_index, direction, tx, is_rekey = data
                self.tx[sa_index, direction] = tx
                self.rekeys += is_rekey and direction == 0  # one rekey per SA pair, as the model counts
            elif kind == "esp-install":
                host, rx = data
                self.sad[host][rx.spi] = rx
            elif kind == "esp-remove":
                host, spi = data
                self.sad[host].pop(spi, None)
            elif kind == "tls-rekey":  # each side rekeys in-band with its next record
                self.pending_rekeys.update({(data, 0), (data, 1)})

    def _transmit(self, times, conns, directions, sizes) -> _Packets | None:
        """Seal every packet of the window's messages in send order; sender-side
        control events (rekeys, new connections) are applied between them."""
        v, w = self.v, self.w
        if len(times) == 0:
            return None
        self.stats["messages"] += len(times)
        self.stats["size_squares"] += float((sizes.astype(np.float64) ** 2).sum())
        self.stats["payload_sent"] += int(sizes.sum())
        if v.uses_records:  # the TCP payload is the stream of sealed records: one message at a time
            streams = []
            for time, conn, direction, size in zip(times.tolist(), conns.tolist(), directions.tolist(),
                                                   sizes.tolist()):
                if self.tx_control and self.tx_control[0][0] <= time:
                    self._apply_control(self.tx_control, time, inclusive=True)
                streams.append(self._seal_records(conn, direction, size))
            lengths = np.array([len(x) for x in streams], dtype=np.int64)
            self.stats["record_overhead"] += int(lengths.sum() - sizes.sum())
        else:
            lengths = sizes
        mss = int(v.mss)
        count = np.maximum(1, -(-lengths // mss))
        msg = np.repeat(np.arange(len(times)), count)
        index = np.arange(len(msg)) - np.repeat(np.cumsum(count) - count, count)
        length = np.where(index == count[msg] - 1, lengths[msg] - (count[msg] - 1) * mss, mss)
        conn, direction = conns[msg], directions[msg]
        send = times[msg] + index * 1e-9
        client, server = w.client[conn], w.server[conn]
        src, dst = np.where(direction == 0, client, server), np.where(direction == 0, server, client)
        keys = ((conn * 2 + direction) << 16) | length
        get = self._frames.get
        inner = [get(k) or self._frame_for(k) for k in keys.tolist()]
        if v.uses_records:
            inner = [frame[:-n] + streams[m][i * mss : i * mss + n] if n else frame
                     for frame, m, i, n in zip(inner, msg.tolist(), index.tolist(), length.tolist())]
            wire = inner
        else:
            wire = self._seal_all(inner, (conn * 2 + direction).tolist(), send)
        self.stats["packets"] += len(wire)
        self.stats["inner_bytes"] += int(length.sum()) + HEADER_BYTES * len(wire)
        self.stats["wire_bytes"] += sum(map(len, wire))
        if self.capture is not None:
            for i in np.flatnonzero(src == self.capture_host).tolist():
                self.capture.write(_record(float(send[i]), wire[i]))
        return _Packets(wire, inner, send, src, dst, conn, direction, length)

    def _frame_for(self, key: int) -> bytes:
        """The unprotected frame (zero payload) for key ((conn * 2 + direction) << 16 | length)."""
        frame = self._frames.get(key)
        if frame is None:
            flow, length = key >> 16, key & 0xFFFF
            conn, direction = flow >> 1, flow & 1
            src, dst = self._ends(conn, direction)
            ports = (40000 + conn % 20000, 443) if direction == 0 else (443, 40000 + conn % 20000)
            tcp = TCP_HEADER.pack(*ports, 0, 0, 0x50, 0x18, 0xFFFF, 0, 0)
            frame = ip_frame(tcp + bytes(length), IPPROTO_TCP, src=host_address(src), dst=host_address(dst))
            self._frames[key] = frame
        return frame

    def _seal_all(self, inner: list[bytes], flows: list[int], send: np.ndarray) -> list[bytes]:
        """Seal frames in send order, segment by segment between sender-side control events."""
        v, out, pos, total = self.v, [], 0, len(inner)
        while pos < total:
            end = total
            if self.tx_control:
                end = max(pos, int(np.searchsorted(send, self.tx_control[0][0], side="left")))
            if end > pos:
                if v.name == "psp":
                    seal = self.seal_fn
                    out += [seal[f](frame) for f, frame in zip(flows[pos:end], inner[pos:end])]
                elif v.sa_based:
                    out += [self._seal_esp(f, frame) for f, frame in zip(flows[pos:end], inner[pos:end])]
                else:
                    out += inner[pos:end]
            if end < total:
                self._apply_control(self.tx_control, float(send[end]), inclusive=True)
            pos = end
        return out

    def _seal_esp(self, flow: int, frame: bytes) -> bytes:
        conn, direction = flow >> 1, flow & 1
        sa = int(self.model.sa_of[conn])
        a, _ = self._ends(conn, direction)
        return esp_encapsulate(frame, self.tx[sa, 0 if a == self.model.sa_a[sa] else 1])

    def _seal_records(self, conn: int, direction: int, size: int) -> bytes:
        records = []
        if (conn, direction) in self.pending_rekeys:
            self.pending_rekeys.discard((conn, direction))
            records.append(self._rekey_record(conn, direction))
            self.rekeys += direction == 0  # one per connection, as the model counts
        tx = self.tx[conn, direction]
        for start in range(0, size, MAX_PLAINTEXT):
            records.append(tx.seal(bytes(min(MAX_PLAINTEXT, size - start))))
            self.stats["records"] += 1
        return b"".join(records)

    def _rekey_record(self, conn: int, direction: int) -> bytes:
        """The in-band rekey: a KeyUpdate (TLS 1.3), or a reconnect marker after
        which both sides use the keys of a new handshake (TLS 1.2: the receiver
        is handed them, as the handshake it does not simulate would)."""
        tx = self.tx[conn, direction]
        record = tx.seal(key_update_message(), CONTENT_HANDSHAKE)
        if isinstance(tx, Tls13RecordProtection):
            tx.update_keys()
        else:
            key, salt = self._secret(16), self._secret(4)
            self.tx[conn, direction] = Tls12GcmRecordProtection(key, salt)
            self.rx[conn, direction][2].append((key, salt))
        return record

    def _receive(self, p: _Packets, arrive: np.ndarray, dropped: np.ndarray, t1: float) -> None:
        """Open every packet in arrival order; receiver-side control events (device-key
        rotations, SA installs and removals) are applied between them."""
        order = np.argsort(arrive, kind="stable")
        order = order[~dropped[order]]
        arrive_sorted = arrive[order]
        ok = np.zeros(len(p.wire), dtype=bool)
        attempts: list[tuple[int, bool]] = []  # extra frames from the in-flight hook
        hooked = self.in_flight is not None or self.capture is not None
        pos, total = 0, len(order)
        while pos < total:
            end = total
            if self.rx_control:
                end = max(pos, int(np.searchsorted(arrive_sorted, self.rx_control[0][0], side="left")))
            segment = order[pos:end].tolist()
            if hooked:
                for i in segment:
                    frames = [p.wire[i]] if self.in_flight is None else self.in_flight(i, p.wire[i])
                    for k, frame in enumerate(frames):
                        if self.capture is not None and p.dst[i] == self.capture_host:
                            self.capture.write(_record(float(arrive[i]), frame))
                        good = self._open(i, p, frame)
                        if k == 0:
                            ok[i] = good
                        else:
                            attempts.append((i, good))
            elif self.v.name == "psp":
                keys, dst, outcomes, wire = self.nic_keys, p.dst.tolist(), self.outcomes, p.wire
                fast = _psp_fast.decapsulate if _psp_fast is not None else None
                for i in segment:
                    try:
                        if fast is None or fast(wire[i], keys[dst[i]], None, PspOpened, False) is None:
                            decapsulate(wire[i], keys[dst[i]])  # the general path for unusual frames
                        ok[i] = True
                    except (PspRejected, NotPspPacket) as exc:
                        outcomes[getattr(exc, "counter", "not-psp")] += 1
            else:
                for i in segment:
                    ok[i] = self._open(i, p, p.wire[i])
            if end < total:
                self._apply_control(self.rx_control, float(arrive_sorted[end]), inclusive=True)
            pos = end
        self._apply_control(self.tx_control, t1)
        self._apply_control(self.rx_control, t1)
        if not self.v.uses_records:
            self.outcomes["delivered"] += int(ok.sum())
            self.stats["payload_delivered"] += int(p.length[ok].sum())
        extra = np.array([i for i, _ in attempts], dtype=np.int64)
        idx = np.concatenate([order, extra])
        flags = np.concatenate([ok[order], np.array([g for _, g in attempts], dtype=bool)])
        self.arrival_log.append((p.conn[idx], p.direction[idx], p.send[idx], arrive[idx], flags))

    def _open(self, i: int, p: _Packets, frame: bytes) -> bool:
        """Open one frame at its receiver; True if it verified (TLS: every record in it)."""
        v, host = self.v, int(p.dst[i])
        try:
            if v.name == "psp":
                decapsulate(frame, self.nic_keys[host])
            elif v.sa_based:
                esp_decapsulate(frame, self.sad[host])
            elif v.uses_records:
                return self._open_records(int(p.conn[i]), int(p.direction[i]), frame, p.inner[i])
            elif frame != p.inner[i]:
                self.outcomes["tampered"] += 1
                return False
        except (PspRejected, EspRejected, NotPspPacket) as exc:
            self.outcomes[getattr(exc, "counter", "not-psp")] += 1
            return False
        return True

    def _open_records(self, conn: int, direction: int, frame: bytes, inner: bytes) -> bool:
        state = self.rx[conn, direction]
        if frame[:HEADER_BYTES] != inner[:HEADER_BYTES]:  # TCP/IP headers are not protected by TLS
            self.outcomes["tampered-header"] += 1
            return False
        state[1] += frame[HEADER_BYTES:]
        buffer, ok = state[1], True
        while len(buffer) >= RECORD_HEADER_LEN:
            end = RECORD_HEADER_LEN + int.from_bytes(buffer[3:5], "big")
            if len(buffer) < end:
                break
            record, buffer = buffer[:end], buffer[end:]
            try:
                content_type, content = state[0].open(record)
            except (TlsRejected, WireError) as exc:
                self.outcomes[getattr(exc, "alert", "tls-error")] += 1
                ok = False
                continue
            if content_type == CONTENT_HANDSHAKE:  # our in-band rekey
                if isinstance(state[0], Tls13RecordProtection):
                    state[0].update_keys()
                elif state[2]:
                    state[0] = Tls12GcmRecordProtection(*state[2].pop(0))
                continue
            self.stats["payload_delivered"] += len(content)
        state[1] = buffer
        self.outcomes["delivered" if ok else "record-failed"] += 1
        return ok

    def _open_capture(self):
        if self.capture_host is None or self.capture_dir is None:
            return None
        path = os.path.join(self.capture_dir, f"{self.v.name}-host{self.capture_host}.pcap")
        return PcapWriter(path, PcapHeader(snaplen=65535, nanosecond=True))

    def _result(self) -> PacketTierResult:
        v = self.v
        if v.name == "psp":
            hits = sum(k.cache_hits for k in self.nic_keys)
            misses = sum(k.cache_misses for k in self.nic_keys)
            ratio = hits / max(hits + misses, 1)
        else:
            ratio = float("nan")
        live = (self.w.start[self.sample] < self.duration) & (self.w.end[self.sample] > self.duration)
        live_conns = int(live.sum())
        if v.sa_based:
            entries = 2 * sum(len(sad) for sad in self.sad) if v.nic_entries_per_connection else 0
        else:
            entries = 2 * live_conns * v.nic_entries_per_connection
        logs = self.arrival_log
        arrivals = {name: np.concatenate([x[i] for x in logs]) if logs else np.empty(0)
                    for i, name in enumerate(("conn", "direction", "sent", "time", "ok"))}
        return PacketTierResult(
            variant=v.name, duration=self.duration, outcomes=self.outcomes,
            packets_sent=int(self.stats["packets"]),
            payload_bytes_delivered=int(self.stats["payload_delivered"]),
            wire_bytes_sent=int(self.stats["wire_bytes"]), inner_bytes_sent=int(self.stats["inner_bytes"]),
            records=int(self.stats["records"]), record_overhead_bytes=int(self.stats["record_overhead"]),
            payload_noise=float(np.sqrt(self.stats["size_squares"]) / max(self.stats["payload_sent"], 1)),
            handshakes=self.handshakes, rekeys=self.rekeys,
            nic_entries=entries, key_cache_hit_ratio=ratio, model=self.model_run, arrivals=arrivals,
        )

def result_row(r: PacketTierResult) -> dict[str, object]:
    """One summary row of a packet-tier run."""
    return {"variant": r.variant, "duration_s": r.duration, "packets_sent": r.packets_sent,
            "packets_delivered": r.outcomes["delivered"], "payload_bytes_delivered": r.payload_bytes_delivered,
            "wire_bytes_sent": r.wire_bytes_sent, "records": r.records, "handshakes": r.handshakes,
            "rekeys": r.rekeys, "nic_entries_end": r.nic_entries, "key_cache_hit_ratio": r.key_cache_hit_ratio,
            "failures": ";".join(f"{k}={v}" for k, v in sorted(r.outcomes.items()) if k != "delivered" and v)}


def _record(time: float, frame: bytes) -> PcapRecord:
    seconds = int(time)
    return PcapRecord(seconds, int(round((time - seconds) * 1e9)) % 1_000_000_000, frame, len(frame))
