"""The packet tier's own control plane: who holds which keys when, decided here.

Implements the event rules of SEMANTICS.md (the contract with the fleet
model) from the scenario, the cost parameters and the workload's connection
list only, for the sampled connections; nothing is read from the fleet
model's run.  One event loop (``heapq``) over the sampled connections:

* NIC command queues: one FIFO per NIC, each command type its own service
  time (:func:`command_service_s`) plus ``nic.command_latency_s``; an
  association, SA or context is in use only once its command completed.
* PSP (Linux 6.18 + the fbthrift upgrade): TLS handshake, ``rx-assoc``
  (``PSP_GEN_SPI`` on each end's NIC), ``tx-assoc`` (TX key create) when both
  SPIs exist, PSP in use when both keys are; device-key rotation per NIC
  (staggered / synchronized / rack waves), re-keying by reconnect or in
  place, stale associations at the second rotation after their creation,
  stale-notice reconnects, TX-key table full -> ``psp_on_full``.
* TLS / kTLS: re-keys at ages k * min(T, budget / busier direction's rate),
  KeyUpdate or reconnect; kTLS offload contexts with table-full fallback.
* IPsec (:mod:`pspsim.packets.ipsec_sadb` carries the SAs): IKE SA per host
  pair, CHILD_SAs per pair or per connection, jittered re-keys,
  make-before-break, SA table full -> ``ipsec_hw_offload``.

Its output, :class:`Schedule`, is what the data plane applies: per flow
(connection x direction) the protection epochs in time order, per NIC the
rotation times, the ESP SA installs and removals, and the event counts.

Assumed where SEMANTICS leaves it open (each a modelling choice, named):
a TX key or SA occupies its table slot from the command's issue until its
destroy is issued; connections in the initial population take table slots in
start order and those that find the table full count as fallbacks; in-place
re-keys do not check the table; ``ipsec_hw_offload = "yes"`` fails an SA for
its whole life; ``psp_before_upgrade = "wait"`` traffic is held (not sent,
not counted as offered: the packet tier does not model the send queue).
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict

import numpy as np

from pspsim.costs.params import Costs
from pspsim.model.variants import Variant
from pspsim.model.workload import Workload
from pspsim.packets.ipsec_sadb import IpsecControl
from pspsim.packets.schedule import Epoch, Schedule, ages
from pspsim.scenario import Scenario

COMMANDS = ("psp_gen_spi", "psp_rotate_key", "psp_tx_key_create", "psp_tx_key_destroy", "ipsec_sa_add",
            "ipsec_sa_delete", "ktls_context_create", "ktls_context_destroy")


def command_service_s(costs: Costs, command: str) -> float:
    """Service time of one NIC command (``nic.cmd_<command>_s``)."""
    return float(getattr(costs, f"nic_cmd_{command}_s"))


class NicQueues:
    """Per-NIC FIFO command queues, served in issue order."""

    def __init__(self, costs: Costs, counts: Counter, span: float) -> None:
        self.service = {name: command_service_s(costs, name) for name in COMMANDS}
        self.latency = costs.nic_command_latency_s
        self.busy: dict[int, float] = defaultdict(float)
        self.counts, self.span, self.delay_max = counts, span, 0.0

    def issue(self, nic: int, command: str, t: float) -> float:
        """Completion time of a command issued at ``t``."""
        done = max(t, self.busy[nic]) + self.service[command]
        self.busy[nic] = done
        if 0 <= t < self.span:
            self.counts["nic_commands"] += 1
            self.counts[f"cmd_{command}"] += 1
            self.delay_max = max(self.delay_max, done + self.latency - t)
        return done + self.latency


class ControlPlane:
    """The event loop; ``run()`` returns the :class:`Schedule`."""

    def __init__(self, scenario: Scenario, variant: Variant, costs: Costs, workload: Workload,
                 sample: np.ndarray, span: float, rng: np.random.Generator) -> None:
        self.sc, self.v, self.c, self.w, self.span = scenario, variant, costs, workload, span
        self.keys = scenario.keys
        self.sample = np.asarray(sample)
        rotation_seq, delay_seq, jitter_seq = np.random.SeedSequence(int(rng.integers(2**63))).spawn(3)
        self.rotation_rng = np.random.default_rng(rotation_seq)
        self.delay_rng = np.random.default_rng(delay_seq)
        self.jitter_rng = np.random.default_rng(jitter_seq)
        self.s = Schedule()
        self.queues = NicQueues(costs, self.s.counts, span)
        self.heap: list = []
        self.seq = 0
        self.live: dict[tuple[int, str], int] = defaultdict(int)  # (nic, table) -> occupied slots
        self.capacity = {"main": variant.nic_capacity, "ktls-tx": costs.nic_ktls_tx_context_capacity,
                         "ktls-rx": costs.nic_ktls_rx_context_capacity}

    # -- the loop -------------------------------------------------------------------
    def at(self, t: float, action, *args) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, action, args))

    def count(self, t: float, name: str, n: int = 1) -> None:
        if 0 <= t < self.span:
            self.s.counts[name] += n

    def occupy(self, t: float, nic: int, n: int, table: str = "main") -> None:
        self.live[nic, table] += n
        self.s.entries.append((t, nic, n))

    def has_room(self, nic: int, n: int, table: str = "main") -> bool:
        return self.live[nic, table] + n <= self.capacity[table]

    def ends(self, conn: int) -> tuple[int, int]:
        return int(self.w.client[conn]), int(self.w.server[conn])

    def run(self) -> Schedule:
        v = self.v
        if v.name == "psp":
            self._psp_init()
        elif v.sa_based:
            IpsecControl(self).start()
        elif v.uses_records:
            self._tls_init()
        else:
            for conn in self.sample.tolist():
                for d in (0, 1):
                    self.s.epochs[2 * conn + d].append(Epoch(max(float(self.w.start[conn]), 0.0), "plain"))
        while self.heap:
            t, _, action, args = heapq.heappop(self.heap)
            if t >= self.span:
                break
            action(t, *args)
        self.s.command_delay_max_s = self.queues.delay_max
        self.s.counts["nic_entries_end"] = sum(self.live.values())
        return self.s

    # -- PSP ------------------------------------------------------------------------
    def rotation_times(self) -> dict[int, np.ndarray]:
        """Rotation times per NIC inside the span, by the scenario's schedule."""
        keys, fleet, period = self.keys, self.sc.fleet, self.keys.psp_rotation_period
        hosts = fleet.hosts
        if keys.psp_rotation_schedule == "staggered":
            phase = self.rotation_rng.uniform(0, period, hosts)
        else:
            phase = np.full(hosts, self.rotation_rng.uniform(0, period))
            if keys.psp_rotation_schedule == "rack-waves":
                phase = phase + (np.arange(hosts) // fleet.hosts_per_rack) * keys.psp_rack_wave_gap
        return {n: np.arange(phase[n], self.span, period) for n in range(hosts)}

    def _psp_init(self) -> None:
        self.conn_of_nic: dict[int, set[int]] = defaultdict(set)
        self.state: dict[int, dict] = {}
        self.last_rotation: dict[int, float] = defaultdict(lambda: -np.inf)
        self.spi_next: dict[int, int] = defaultdict(lambda: 1)
        self.lost: set[int] = set()
        for nic, times in self.rotation_times().items():
            for r in times.tolist():
                self.at(r, self._rotate, nic)
        table = self.v.nic_entries_per_connection > 0
        for conn in self.sample.tolist():
            start, end = float(self.w.start[conn]), float(self.w.end[conn])
            ends = self.ends(conn)
            for e in ends:
                self.conn_of_nic[e].add(conn)
            st = self.state[conn] = {"alive": True, "mode": "setup", "pending": False, "inc": 0, "keys": []}
            self.at(end, self._psp_end, conn)
            if start > 0:
                self.at(start, self._psp_open, conn)
                continue
            # set up before the run, generation of t=0 on each NIC; table slots in start order
            if table and not all(self.has_room(e, 1) for e in ends):
                self._psp_full(0.0, conn)
                continue
            if table:
                for e in ends:
                    self.occupy(0.0, e, 1)
                st["keys"] = list(ends)
            self._psp_in_use(0.0, conn, {e: (0.0, self._spi(e)) for e in ends}, 0)

    def _spi(self, nic: int) -> int:
        spi = self.spi_next[nic]
        self.spi_next[nic] = spi % (2**31 - 1) + 1
        return spi

    def _psp_in_use(self, t: float, conn: int, assoc: dict[int, tuple[float, int]], inc: int) -> None:
        st = self.state[conn]
        st.update(mode="psp", assoc=dict(assoc), inc=inc, stale=set())
        client, server = self.ends(conn)
        for d, rx in ((0, server), (1, client)):
            a, spi = assoc[rx]
            self.s.epochs[2 * conn + d].append(Epoch(t, "psp", (rx, a, spi), inc))

    def _psp_full(self, t: float, conn: int) -> None:
        st = self.state[conn]
        kind = "tls" if self.keys.psp_on_full == "stay-tls" else "fail"
        self.count(t, "offload_fallbacks" if kind == "tls" else "offload_failures")
        st["mode"] = kind
        for d in (0, 1):
            self.s.epochs[2 * conn + d].append(Epoch(t, kind, (), st["inc"]))

    def _psp_open(self, t: float, conn: int, reconnect: bool = False) -> None:
        """Set-up steps 1-2: a TLS handshake, then rx-assoc on each end."""
        st = self.state[conn]
        if not st["alive"]:
            return
        self.count(t, "handshakes")
        if reconnect:
            self.count(t, "key_reconnects")
        inc = st["inc"] + 1 if reconnect else 0
        if not reconnect:
            before = "tls" if self.keys.psp_before_upgrade == "tls" else "wait"
            for d in (0, 1):
                self.s.epochs[2 * conn + d].append(Epoch(t, before, (), inc))
        assoc = {e: (self.queues.issue(e, "psp_gen_spi", t), self._spi(e)) for e in self.ends(conn)}
        self.at(max(a for a, _ in assoc.values()), self._psp_tx_assoc, conn, assoc, inc)

    def _psp_tx_assoc(self, t: float, conn: int, assoc: dict, inc: int) -> None:
        """Set-up step 3-5: tx-assoc on each end (a TX key create), or table full."""
        st = self.state[conn]
        if not st["alive"]:
            return
        ends = self.ends(conn)
        if self.v.nic_entries_per_connection == 0:  # TX key in the descriptor: nothing to install
            self._psp_switch(t, conn, assoc, inc, [])
            return
        if not all(self.has_room(e, 1) for e in ends):
            if st["mode"] == "psp":  # a reconnect's new socket stays on TLS
                self._release(t, st)
                st["pending"] = False
            self._psp_full(t, conn)
            return
        for e in ends:
            self.occupy(t, e, 1)
        done = max(self.queues.issue(e, "psp_tx_key_create", t) for e in ends)
        self.at(done, self._psp_switch, conn, assoc, inc, list(ends))

    def _release(self, t: float, st: dict) -> None:
        for e in st["keys"]:
            self.queues.issue(e, "psp_tx_key_destroy", t)
            self.occupy(t, e, -1)
        st["keys"] = []

    def _psp_switch(self, t: float, conn: int, assoc: dict, inc: int, new_keys: list[int]) -> None:
        """Step 4 (or the end of a reconnect): the new associations carry the traffic."""
        st = self.state[conn]
        if not st["alive"]:
            for e in new_keys:
                self.queues.issue(e, "psp_tx_key_destroy", t)
                self.occupy(t, e, -1)
            return
        self._release(t, st)
        st["keys"] = new_keys
        st["pending"] = False
        self._psp_in_use(t, conn, assoc, inc)

    def _psp_end(self, t: float, conn: int) -> None:
        st = self.state[conn]
        st["alive"] = False
        self._release(t, st)

    def _rotate(self, r: float, nic: int) -> None:
        self.queues.issue(nic, "psp_rotate_key", r)
        self.count(r, "key_rotations")
        self.s.rotations[nic].append(r)
        previous = self.last_rotation[nic]
        self.last_rotation[nic] = r
        for conn in sorted(self.conn_of_nic[nic]):
            st = self.state[conn]
            if not st["alive"] or st["mode"] != "psp":
                continue
            a = st["assoc"][nic][0]
            if nic in st["stale"]:
                continue
            if a < previous:  # second rotation after its creation: stale (counted once)
                st["stale"].add(nic)
                self.count(r, "psp_stale_events")
                self.s.stale.append((r, nic, conn))
                if conn not in self.lost and 0 <= r < self.span:
                    self.lost.add(conn)
                    self.s.counts["connections_lost"] += 1
                if not st["pending"]:
                    st["pending"] = True
                    self.at(r + self.keys.psp_stale_notice, self._psp_open, conn, True)
            elif a < r and not st["pending"]:
                st["pending"] = True
                q = r + self.keys.psp_rekey_delay + self.delay_rng.uniform(0, self.keys.psp_rekey_spread)
                if self.keys.psp_rekey == "reconnect":
                    self.at(q, self._psp_open, conn, True)
                else:
                    self.at(q, self._psp_in_place, conn, nic)

    def _psp_in_place(self, t: float, conn: int, nic: int) -> None:
        """Proposed rekey series: a new SPI on ``nic``, a new TX key on the peer."""
        st = self.state[conn]
        if not st["alive"] or st["mode"] != "psp":
            st["pending"] = False
            return
        self.count(t, "psp_rekeys")
        a = self.queues.issue(nic, "psp_gen_spi", t)
        self.at(a, self._psp_in_place_key, conn, nic, (a, self._spi(nic)))

    def _psp_in_place_key(self, t: float, conn: int, nic: int, assoc: tuple[float, int]) -> None:
        st = self.state[conn]
        client, server = self.ends(conn)
        peer = client if nic == server else server
        table = self.v.nic_entries_per_connection > 0
        done = self.queues.issue(peer, "psp_tx_key_create", t) if table and st["alive"] else t
        self.at(done, self._psp_in_place_done, conn, nic, assoc, peer if table else None)

    def _psp_in_place_done(self, t: float, conn: int, nic: int, assoc: tuple[float, int], peer) -> None:
        st = self.state[conn]
        st["pending"] = False
        if not st["alive"] or st["mode"] != "psp":
            return
        if peer is not None:
            self.queues.issue(peer, "psp_tx_key_destroy", t)  # the old key; the new one takes its slot
        st["assoc"][nic] = assoc
        st["stale"].discard(nic)
        d = 0 if nic == int(self.w.server[conn]) else 1
        self.s.epochs[2 * conn + d].append(Epoch(t, "psp", (nic, *assoc), st["inc"]))

    # -- TLS and kTLS ---------------------------------------------------------------
    def _tls_init(self) -> None:
        keys, w, v = self.keys, self.w, self.v
        offload = v.nic_entries_per_connection > 0
        reconnect = v.rekey_by_reconnect
        rate = w.msg_bytes.astype(np.float64) * w.msgs_per_s * max(1.0, w.response_ratio)
        for conn in self.sample.tolist():
            start, end = float(w.start[conn]), float(w.end[conn])
            budget = keys.tls_rekey_bytes / rate[conn] if rate[conn] > 0 else np.inf
            interval = min(keys.tls_rekey_interval, budget)
            times = ages(start, interval, min(end, self.span))
            kind = "reconnect" if reconnect else "key-update"
            self.s.tls_rekeys[conn] = [(float(t), kind) for t in times]
            for d in (0, 1):
                self.s.epochs[2 * conn + d].append(Epoch(max(start, 0.0), "records"))
            for t in times.tolist():
                self.count(t, "key_reconnects" if reconnect else "tls_key_updates")
                if reconnect:
                    self.count(t, "handshakes")
            if start > 0:
                self.count(start, "handshakes")
            if offload:
                self.at(max(start, 0.0), self._ktls_contexts, conn, start > 0, None)
                for t in times.tolist():
                    self.at(t, self._ktls_contexts, conn, True, None)
                self.at(end, self._ktls_end, conn)
        self.ktls: dict[int, list[int]] = defaultdict(list)  # conn -> NICs holding its 2 contexts

    def _ktls_contexts(self, t: float, conn: int, commands: bool, _) -> None:
        """New TX and RX contexts on each end (set-up or reconnect); the old ones go."""
        old = self.ktls.pop(conn, [])
        self._ktls_release(t, old, commands)
        ends = self.ends(conn)
        software = not all(self.has_room(e, 1, "ktls-tx") and self.has_room(e, 1, "ktls-rx") for e in ends)
        if software:  # a full table at either end: the connection runs software kTLS, counted once
            self.count(t, "offload_fallbacks")
        for e in () if software else ends:
            self.ktls[conn].append(e)
            for table in ("ktls-tx", "ktls-rx"):
                self.occupy(t, e, 1, table)
                if commands:
                    self.queues.issue(e, "ktls_context_create", t)
        kind = "records-sw" if software else "records"  # priced as software kTLS (either end on software)
        for d in (0, 1):
            flow = self.s.epochs[2 * conn + d]
            if flow and flow[-1].kind != kind:
                flow.append(Epoch(t, kind))

    def _ktls_release(self, t: float, nics: list[int], commands: bool = True) -> None:
        for e in nics:
            for table in ("ktls-tx", "ktls-rx"):
                if commands:
                    self.queues.issue(e, "ktls_context_destroy", t)
                self.occupy(t, e, -1, table)

    def _ktls_end(self, t: float, conn: int) -> None:
        self._ktls_release(t, self.ktls.pop(conn, []))
