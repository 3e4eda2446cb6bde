"""The packet tier: real, really encrypted packets for a sample of connections.

For the sampled connections (those touching ``[packets] hosts``, or the whole
fleet; at most ``max_connections``, the first in start order) the tier runs
its own control plane (:mod:`pspsim.packets.control`: set-ups, rotations,
re-keys, stale associations, NIC command queues, table-full fallbacks, all
decided from the scenario, the costs and the workload's connection list) and
then every message becomes real frames: Ethernet/IPv4/TCP with advancing
sequence numbers, protected as the flow's epoch says at its send time (PSP by
the sending NIC with the key derived from the receiver's device key,
:mod:`pspsim.packets.psp_nic`; ESP with the SA of that moment,
:mod:`pspsim.packets.ipsec_sadb`; TLS records in the TCP stream,
:mod:`pspsim.packets.tls_endpoint`), carried by the tail-drop fabric
(:mod:`pspsim.packets.fabric`) and opened by the receiver in arrival order
with the receiver's keys of that moment.  Auth failures, stale traffic and
drops are what the real keys and queues give.

Bounded memory: time is cut into slices holding about ``chunk_packets``
packets (from the workload's expected packet rate), each generated, sealed,
carried, opened and written to the capture before the next; nothing grows
with the run's length except counters.

Not modelled: TCP retransmission, ACK-only segments and congestion control
(a dropped TLS segment breaks its record stream: counted, not repaired);
packets of one slice are opened before the next slice's, so a rotation falls
between the two slices for packets still queued at a slice's end.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np

from pspsim.costs.params import Costs
from pspsim.model.commands import fifo_departures
from pspsim.model.variants import Variant, make_variant
from pspsim.model.workload import Workload
from pspsim.packets.capture import Capture
from pspsim.packets.control import ControlPlane
from pspsim.packets.fabric import Fabric
from pspsim.packets.ipsec_sadb import Sadb
from pspsim.packets.psp_nic import PspNics, SendQueue
from pspsim.packets.result import PacketTierResult
from pspsim.packets.sample import expected_packet_rate, sample_connections
from pspsim.packets.tcp import HEADER_BYTES, Templates, sequence
from pspsim.packets.tls_endpoint import TlsEndpoints
from pspsim.scenario import Scenario
from pspsim.wire.esp import EspRejected
from pspsim.wire.psp_packet import _psp_fast, seal_templates

#: Called for every packet after the fabric: returns the frames to deliver
#: instead (none: lost; two: duplicated; changed bytes: tampered).
InFlight = Callable[[int, bytes], list[bytes]]

PSP, ESP, RECORDS, PLAIN, FAIL, WAIT = range(6)
KIND_CODE = {"psp": PSP, "esp": ESP, "esp-sw": ESP, "records": RECORDS, "records-sw": RECORDS, "tls": RECORDS,
             "plain": PLAIN, "fail": FAIL, "wait": WAIT}
IP_TCP = 40
KINDS = list(KIND_CODE)


class PacketTier:
    def __init__(self, scenario: Scenario, variant: str, costs: Costs, workload: Workload,
                 rng: np.random.Generator, capture_host: int | None = None, capture_dir: str | None = None,
                 in_flight: InFlight | None = None, chunk_packets: int = 100_000, keep_arrivals: bool = False,
                 direction_rx_only: bool = False) -> None:
        self.sc, self.c, self.w = scenario, costs, workload
        self.v: Variant = make_variant(variant, costs, scenario.keys)
        self.duration = span = scenario.packets.duration
        self.in_flight, self.keep_arrivals = in_flight, keep_arrivals
        control_seq, key_seq, msg_seq = np.random.SeedSequence(int(rng.integers(2**63))).spawn(3)
        self.rng = np.random.default_rng(msg_seq)
        key_rng = np.random.default_rng(key_seq)
        self.sample = sample_connections(scenario, workload, span)
        self.schedule = ControlPlane(scenario, self.v, costs, workload, self.sample, span,
                                     np.random.default_rng(control_seq)).run()
        hosts = scenario.fleet.hosts
        self.nics = PspNics(hosts, self.schedule.rotations, scenario.keys.psp_version, key_rng) \
            if self.v.name == "psp" else None
        self.sadb = Sadb(hosts, key_rng) if self.v.sa_based else None
        self.tls = TlsEndpoints(self.v.name == "ktls-offload", self.schedule.tls_rekeys, key_rng)
        self.fabric = Fabric(scenario.fleet, scenario.packets.link_buffer_bytes)
        pair = self.w.client[self.sample].astype(np.int64) * scenario.fleet.hosts + self.w.server[self.sample]
        order = np.argsort(pair, kind="stable")
        first = np.r_[True, pair[order][1:] != pair[order][:-1]]
        rank = np.arange(len(order)) - np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))
        self.rank = dict(zip(self.sample[order].tolist(), rank.tolist()))  # number within its host pair
        self.templates = Templates(self._ends, self.rank.__getitem__)
        self._index_epochs()
        self.seq: dict[int, int] = {}
        self.flow_busy = np.zeros(2 * len(workload))
        self.outcomes: Counter = Counter()
        self.stats: Counter = Counter()
        self.by_kind: dict[str, Counter] = {}
        self.arrival_log: list = []
        rate = expected_packet_rate(scenario, workload, self.sample, self.v.mss)
        self.slice = min(scenario.run.window, max(chunk_packets / max(rate, 1e-9), 1e-3))
        self.capture = Capture(capture_dir, self.v.name, capture_host, self, direction_rx_only) \
            if capture_host is not None and capture_dir is not None else None
        rotations = sorted((t, n) for n, times in self.schedule.rotations.items() for t in times)
        self.rx_events = sorted([(t, 0, ("rotate", n)) for t, n in rotations]
                                + [(e.time, 1 if e.kind == "install" else 2, ("esp", e)) for e in self.schedule.esp],
                                key=lambda x: (x[0], x[1]))
        self.rx_pos = 0

    def _ends(self, conn: int, direction: int) -> tuple[int, int]:
        c, s = int(self.w.client[conn]), int(self.w.server[conn])
        return (c, s) if direction == 0 else (s, c)

    # -- epochs ---------------------------------------------------------------------
    def _index_epochs(self) -> None:
        flows, times, self.epochs = [], [], []
        for flow in sorted(self.schedule.epochs):
            for epoch in self.schedule.epochs[flow]:
                flows.append(flow)
                times.append(epoch.start)
                self.epochs.append(epoch)
        self.ep_flow = np.array(flows, dtype=np.int64)
        self.ep_time = np.array(times, dtype=np.float64)
        self.ep_code = np.array([KIND_CODE[e.kind] for e in self.epochs], dtype=np.int64)
        self.ep_inc = np.array([e.incarnation for e in self.epochs], dtype=np.int64)
        self.ep_kind = np.array([KINDS.index(e.kind) for e in self.epochs], dtype=np.int64)
        self.sealers: dict[int, Callable[[bytes], bytes]] = {}

    def _lookup(self, flow: np.ndarray, t: np.ndarray) -> np.ndarray:
        """The epoch in force for each (flow, time): the last one starting at or before."""
        n = len(self.ep_flow)
        is_message = np.r_[np.zeros(n), np.ones(len(flow))]
        order = np.lexsort((is_message, np.r_[self.ep_time, t], np.r_[self.ep_flow, flow]))
        filled = np.maximum.accumulate(np.where(order < n, order, -1))
        out = np.empty(len(flow), dtype=np.int64)
        is_msg = order >= n
        out[order[is_msg] - n] = filled[is_msg]
        return out

    def _sealer(self, e: int) -> Callable[[bytes], bytes]:
        """How an epoch other than PSP's protects a frame (PSP: :meth:`_seal`)."""
        fn = self.sealers.get(e)
        if fn is None:
            epoch = self.epochs[e]
            if epoch.kind in ("esp", "esp-sw"):
                sa, gen, src, spi = epoch.data
                fn = self.sadb.sender((sa, gen, src), spi)
            else:
                fn = bytes
            self.sealers[e] = fn
        return fn

    # -- messages -------------------------------------------------------------------
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

    # -- the run --------------------------------------------------------------------
    def run(self) -> PacketTierResult:
        window = self.sc.run.window
        try:
            for w0 in np.arange(0, self.duration, window):
                w1 = float(min(w0 + window, self.duration))
                for t0 in np.arange(w0, w1, self.slice):
                    self._chunk(float(t0), float(min(t0 + self.slice, w1)))
            self._apply_rx(np.inf)
            if self.capture is not None:
                self.capture.finish()
        except BaseException:
            if self.capture is not None:
                self.capture.abort()
            raise
        return self._result()

    def _chunk(self, t0: float, t1: float) -> None:
        times, conns, directions, sizes = self._messages(t0, t1)
        if len(times) == 0:
            self._apply_rx(t1)
            return
        p = self._transmit(times, conns, directions, sizes)
        if p is None:
            self._apply_rx(t1)
            return
        arrive, dropped = self.fabric.carry(p["send"], p["src"], p["dst"], p["wire_len"])
        self.outcomes["fabric-drop"] += int(dropped.sum())
        self._receive(p, arrive, dropped)

    def _transmit(self, times, conns, directions, sizes) -> dict | None:
        v, mtu = self.v, int(self.c.net_mtu_bytes)
        flows = 2 * conns + directions
        e = self._lookup(flows, times)
        code = self.ep_code[e]
        mss = np.where((code == PSP) | (code == ESP), int(v.mss), mtu - IP_TCP)
        fail = (code == FAIL) | (code == WAIT)
        if fail.any():
            unsent = np.ceil(sizes / mss).astype(np.int64)
            self.outcomes["not-sent"] += int(unsent[code == FAIL].sum())
            self.outcomes["held-before-upgrade"] += int(unsent[code == WAIT].sum())
            self.stats["offered"] += int(unsent[code == FAIL].sum())
            keep = ~fail
            times, conns, directions, sizes, flows, e, code, mss = (
                x[keep] for x in (times, conns, directions, sizes, flows, e, code, mss))
            if len(times) == 0:
                return None
        self.stats["messages"] += len(times)
        self.stats["size_squares"] += float((sizes.astype(np.float64) ** 2).sum())
        streams: dict[int, bytes] = {}
        lengths = sizes.copy()
        for m in np.flatnonzero(code == RECORDS).tolist():
            streams[m] = self.tls.seal(int(flows[m]), float(times[m]), int(sizes[m]))
            lengths[m] = len(streams[m])
        self.stats["record_overhead"] += int((lengths - sizes).sum())
        count = np.maximum(1, -(-lengths // mss))
        msg = np.repeat(np.arange(len(times)), count)
        index = np.arange(len(msg)) - np.repeat(np.cumsum(count) - count, count)
        length = np.where(index == count[msg] - 1, lengths[msg] - (count[msg] - 1) * mss[msg], mss[msg])
        link = self.sc.fleet.host_link_gbps * 1e9 / 8
        spacing = (mss + 94) / link  # back to back at the host's line rate
        # a flow sends its messages in order (one TCP byte stream): a message starts when
        # the flow's previous one has left, as a FIFO per flow
        start = fifo_departures(times, flows, count * spacing, self.flow_busy) - count * spacing
        send = start[msg] + index * spacing[msg]
        order = np.argsort(send, kind="stable")
        msg, index, length, send = msg[order], index[order], length[order], send[order]
        flow, ep = flows[msg], e[msg]
        inc = self.ep_inc[ep]
        seq, ack = sequence(self.seq, flow, inc, length)
        pcode = code[msg]
        wire, inner, queue = self._seal(*self.templates.indexed(flow, inc, length), seq & 0xFFFFFFFF,
                                        ack & 0xFFFFFFFF, pcode, ep, length)
        for k in np.flatnonzero(pcode == RECORDS).tolist():
            m, i, n = int(msg[k]), int(index[k]), int(length[k])
            inner[k] = wire[k] = inner[k][:-n] + streams[m][i * int(mss[m]): i * int(mss[m]) + n]  # as it goes
        conn, direction = flow >> 1, flow & 1
        client, server = self.w.client[conn], self.w.server[conn]
        src = np.where(direction == 0, client, server).astype(np.int64, copy=False)
        dst = np.where(direction == 0, server, client).astype(np.int64, copy=False)  # int64: read by verify_each
        if queue is None:
            wire_len = np.fromiter(map(len, wire), dtype=np.float64, count=len(wire))
        else:  # sealed later: the lengths PSP gives, checked then
            wire_len = queue.lengths
        self.stats["packets"] += len(length)
        self.stats["offered"] += len(length)
        self.stats["payload_sent"] += int(sizes.sum())
        self.stats["inner_bytes"] += int(length.sum()) + HEADER_BYTES * len(length)
        self.stats["wire_bytes"] += int(wire_len.sum())
        kinds = self.ep_kind[ep]
        per_kind = np.bincount(kinds)
        for kind in np.flatnonzero(per_kind).tolist():
            c = self.by_kind.setdefault(KINDS[kind], Counter())
            c["packets"] += int(per_kind[kind])
            c["payload"] += int(length[kinds == kind].sum()) if len(per_kind) > 1 else int(length.sum())
        if self.nics is not None and (pcode == PSP).any():
            psp_src = src[pcode == PSP]
            per_nic = np.bincount(psp_src)
            used = np.flatnonzero(per_nic)
            for nic, n, b in zip(used.tolist(), per_nic[used].tolist(),
                                 np.bincount(psp_src, weights=wire_len[pcode == PSP])[used].tolist()):
                self.nics.count_tx(nic, n, int(b))
        if self.capture is not None:
            self.capture.sent(send, src, wire)
        return {"wire": wire, "queue": queue, "inner": inner, "send": send, "src": src, "dst": dst, "flow": flow,
                "code": pcode, "length": length, "wire_len": wire_len}

    def _seal(self, templates: list[tuple[bytes, bytes]], codes: np.ndarray, seq: np.ndarray, ack: np.ndarray,
              pcode: np.ndarray, ep: np.ndarray, length: np.ndarray):
        """Wire frames, in order, the cleartext frames of the packets that a PSP NIC
        does not seal (``None`` for those: PSP frames are sealed from their templates,
        ``templates[codes[k]]``, by :func:`~pspsim.wire.psp_packet.seal_templates`, in
        order per sender as before), and the :class:`SendQueue` of a chunk that is all
        PSP (its frames are sealed as the receive side needs them; the list fills as it
        goes).  ``seq``, ``ack``: 32-bit words, as arrays."""
        n = len(codes)
        is_psp = pcode == PSP if self.nics is not None else np.zeros(n, dtype=bool)
        inner: list[bytes | None] = [None] * n
        wire: list[bytes] = [b""] * n
        if is_psp.all() and self.capture is None and self.in_flight is None and _psp_fast is not None:
            wire_len = (length + HEADER_BYTES + self.nics.encap.overhead(4)).astype(np.float64)
            queue = SendQueue(*self._senders(ep), templates, codes, seq, ack, wire_len)
            return queue.frames, inner, queue
        psp = np.flatnonzero(is_psp)
        if len(psp):
            senders, which = self._senders(ep[psp])
            sealed = seal_templates(senders, which, templates, codes[psp], seq[psp], ack[psp])
            if len(psp) == n:
                return sealed, inner, None
            for k, w in zip(psp.tolist(), sealed):
                wire[k] = w
        rest = np.flatnonzero(~is_psp)
        frames = self.templates.frames(self.templates.parts(templates, codes[rest]), seq[rest].tolist(),
                                       ack[rest].tolist())
        eps = ep[rest].tolist()
        unique = {x: self._sealer(x) for x in set(eps)}
        for k, x, f in zip(rest.tolist(), eps, frames):
            inner[k] = f
            wire[k] = unique[x](f)
        return wire, inner, None

    def _senders(self, ep: np.ndarray) -> tuple[list, np.ndarray]:
        """The PSP senders of epochs ``ep`` and each one's position among them (int64)."""
        used = np.zeros(len(self.epochs), dtype=np.int64)
        used[ep] = 1
        senders = [self.nics.sender(*self.epochs[x].data) for x in np.flatnonzero(used).tolist()]
        return senders, (np.cumsum(used) - 1)[ep]

    # -- receive side ---------------------------------------------------------------
    def _apply_rx(self, until: float) -> None:
        """Receiver-side control events (rotations, SADB changes) up to ``until``."""
        events = self.rx_events
        while self.rx_pos < len(events) and events[self.rx_pos][0] <= until:
            _, _, (kind, data) = events[self.rx_pos]
            self.rx_pos += 1
            if kind == "rotate":
                self.nics.rotate_until(data, events[self.rx_pos - 1][0])
            else:
                self.sadb.apply(data)

    def _receive(self, p: dict, arrive: np.ndarray, dropped: np.ndarray) -> None:
        order = np.argsort(arrive, kind="stable")
        order = order[~dropped[order]]
        arrive_sorted = arrive[order]
        ok = np.zeros(len(p["length"]), dtype=bool)
        extra: list[tuple[int, bool]] = []
        events, pos, total = self.rx_events, 0, len(order)
        wire, lists = p["wire"], None
        fast = self.nics is not None and self.in_flight is None and _psp_fast is not None
        only_psp = fast and bool((p["code"] == PSP).all())
        counted = np.zeros(len(p["length"]), dtype=bool)  # PSP packets whose NIC counters are added in bulk
        while pos < total:
            end = total
            if self.rx_pos < len(events):
                end = max(pos, int(np.searchsorted(arrive_sorted, events[self.rx_pos][0], side="left")))
            segment = self._open_psp_fast(order[pos:end], only_psp, p, ok, counted) if fast else \
                order[pos:end].tolist()
            if segment and lists is None:  # the general path's per-packet lists, made when needed
                lists = p["dst"].tolist(), p["code"].tolist(), p["flow"].tolist()
            dst, code, flow = lists if lists is not None else ([], [], [])
            for i in segment:
                frames = [wire[i]] if self.in_flight is None else self.in_flight(i, wire[i])
                for k, f in enumerate(frames):
                    good = self._open(code[i], dst[i], flow[i], f, p["inner"][i])
                    if k == 0:
                        ok[i] = good
                    else:
                        extra.append((i, good))
            if end < total:
                self._apply_rx(float(arrive_sorted[end]))
            pos = end
        if p["queue"] is not None:
            p["queue"].upto(len(p["length"]))
        if counted.any():
            self.nics.count_rx(p["dst"][counted], p["wire_len"][counted])
        self.outcomes["delivered"] += int(ok.sum())
        per_packet = p["code"] != RECORDS
        self.stats["payload_delivered"] += int(p["length"][ok & per_packet].sum())
        if self.capture is not None:
            self.capture.received(arrive, p["dst"].tolist(), wire, ~dropped)
        if self.keep_arrivals:
            idx = np.r_[order, np.array([i for i, _ in extra], dtype=np.int64)].astype(np.int64)
            flags = np.r_[ok[order], np.array([g for _, g in extra], dtype=bool)]
            self.arrival_log.append((p["flow"][idx] >> 1, p["flow"][idx] & 1, p["send"][idx], arrive[idx], flags))

    def _open_psp_fast(self, index: np.ndarray, only_psp: bool, p, ok, counted) -> list[int]:
        """Open the plain PSP packets of a segment (``index``: the packets, in arrival
        order; ``only_psp``: the chunk has no other kind) with the compiled path
        (verification only; a rejection counted as :meth:`_open` counts it); returns
        the packets left for the general path (other kinds and unusual frames)."""
        psp = index if only_psp else index[p["code"][index] == PSP]
        verified = self.nics.verify(p["wire"], psp, p["dst"], p["queue"])
        if only_psp and verified.count(True) == len(verified):
            ok[index] = counted[index] = True
            return []
        rest = [] if only_psp else index[p["code"][index] != PSP].tolist()
        good = np.array([v is True for v in verified], dtype=bool)
        for failed in verified:
            if failed is not True and failed is not None:  # rejected: the counter it moved
                self.outcomes[failed] += 1
        rest += psp[np.array([v is None for v in verified], dtype=bool)].tolist()  # left to the general path
        ok[psp[good]] = counted[psp[good]] = True
        return rest

    def _open(self, code: int, host: int, flow: int, frame: bytes, inner: bytes) -> bool:
        if code == PSP:
            failed = self.nics.open(host, frame)
            if failed:
                self.outcomes[failed] += 1
            return not failed
        if code == ESP:
            try:
                self.sadb.open(host, frame)
            except EspRejected as exc:
                self.outcomes[getattr(exc, "counter", "esp-error")] += 1
                return False
            return True
        if code == RECORDS:
            if frame[:HEADER_BYTES] != inner[:HEADER_BYTES]:
                self.outcomes["tampered-header"] += 1
                return False
            good, delivered = self.tls.receive(flow, frame[HEADER_BYTES:], self.outcomes)
            self.stats["payload_delivered"] += delivered
            if not good:
                self.outcomes["record-failed"] += 1
            return good
        if frame != inner:
            self.outcomes["tampered"] += 1
            return False
        return True

    # -- result ---------------------------------------------------------------------
    def _result(self) -> PacketTierResult:
        sc, s = self.sc, self.schedule
        window = sc.run.window
        ends = np.arange(window, self.duration + 1e-9, window)
        ends = ends if len(ends) else np.array([self.duration])
        entries = s.nic_entries_at(ends - 1e-9, sc.fleet.hosts)
        if self.nics is not None:
            for _, nic, _ in s.stale:
                self.nics.counters[nic]["stale-events"] += 1
        logs = self.arrival_log
        arrivals = {name: np.concatenate([x[i] for x in logs]) if logs else np.empty(0)
                    for i, name in enumerate(("conn", "direction", "sent", "time", "ok"))}
        return PacketTierResult(
            variant=self.v.name, duration=self.duration, outcomes=self.outcomes,
            packets_sent=int(self.stats["packets"]), packets_offered=int(self.stats["offered"]),
            payload_bytes_delivered=int(self.stats["payload_delivered"]),
            wire_bytes_sent=int(self.stats["wire_bytes"]), inner_bytes_sent=int(self.stats["inner_bytes"]),
            records=self.tls.records, record_overhead_bytes=int(self.stats["record_overhead"]),
            payload_noise=float(np.sqrt(self.stats["size_squares"]) / max(self.stats["payload_sent"], 1)),
            counts=s.counts, by_kind=self.by_kind,
            nic_entries_mean=float(entries.mean() / sc.fleet.hosts), nic_entries_end=int(s.counts["nic_entries_end"]),
            command_delay_max_s=s.command_delay_max_s,
            key_cache_hit_ratio=self.nics.cache_hit_ratio if self.nics is not None else float("nan"),
            nic_counters=self.nics.counters if self.nics is not None else [], arrivals=arrivals)
