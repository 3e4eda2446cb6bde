"""IPsec in the packet tier: IKE and CHILD_SA lifecycles, and the SA databases.

Control side (:class:`IpsecControl`, driven by :mod:`pspsim.packets.control`),
per SEMANTICS.md section 5: one IKE SA per host pair while any connection of
the pair lives (set-up = IKE_SA_INIT + IKE_AUTH, one handshake; its first
CHILD_SA comes with it), re-keyed at ages k x ``ipsec_ike_rekey``; CHILD_SAs
per host pair or per connection (each further CHILD_SA of an IKE SA is a
CREATE_CHILD_SA, one handshake), re-keyed at ages k x interval with interval
= ``ipsec_child_rekey`` x (1 - jitter x U), make-before-break: the new SA
pair is installed and used at once, the old inbound SAs stay
``ipsec_rekey_overlap`` longer.  An SA that ends (its connection, or the
last connection of its pair) is removed: its inbound SAs leave the SADB and,
offloaded, its NIC entries are deleted (2 per host: inbound and outbound).
Offload with the SA table full: ``ipsec_hw_offload = "auto"`` runs that SA
in software ESP (``offload_fallbacks``), ``"yes"`` fails it
(``offload_failures``; its traffic is not sent, assumed for the SA's life).

Data side (:class:`Sadb`): real :class:`~pspsim.wire.esp.EspSA` objects, one
inbound database per host keyed by SPI (with the anti-replay window), the
sender's outbound SA per (SA, generation, sending host).
"""

from __future__ import annotations

import numpy as np

from pspsim.packets.schedule import Epoch, SaEvent, ages
from pspsim.wire.esp import EspSA, esp_decapsulate, esp_encapsulate


class IpsecControl:
    def __init__(self, cp) -> None:
        self.cp = cp
        self.keys = cp.keys
        self.pairs: dict[tuple[int, int], dict] = {}
        self.sas: dict[int, dict] = {}
        self.next_spi = 0x100
        self.offload = cp.v.nic_entries_per_connection > 0

    def start(self) -> None:
        cp = self.cp
        for conn in cp.sample.tolist():
            start = float(cp.w.start[conn])
            cp.at(max(start, 0.0), self._open, conn, start > 0)
            cp.at(float(cp.w.end[conn]), self._close, conn)

    # -- IKE SAs and CHILD_SAs ----------------------------------------------------------
    def _open(self, t: float, conn: int, counted: bool) -> None:
        cp = self.cp
        a, b = cp.ends(conn)
        pair = self.pairs.get((min(a, b), max(a, b)))
        if pair is None or not pair["conns"]:
            origin = float(cp.w.start[conn])
            pair = self.pairs[(min(a, b), max(a, b))] = {"conns": set(), "children": 0, "sa": None,
                                                         "episode": object()}
            if counted:
                cp.count(t, "handshakes")
            for when in ages(origin, self.keys.ipsec_ike_rekey, cp.span, max(t, 0.0)).tolist():
                cp.at(when, self._ike_rekey, pair, pair["episode"])
        pair["conns"].add(conn)
        if self.keys.ipsec_sa_granularity == "host-pair" and pair["sa"] is not None:
            sa = pair["sa"]
        else:
            if pair["children"] > 0 and counted:
                cp.count(t, "handshakes")  # CREATE_CHILD_SA
            pair["children"] += 1
            sa = self._new_sa(t, min(a, b), max(a, b), float(cp.w.start[conn]), counted)
            if self.keys.ipsec_sa_granularity == "host-pair":
                pair["sa"] = sa
        self.sas[sa]["conns"].add(conn)
        self._epochs(t, conn, sa)

    def _ike_rekey(self, t: float, pair: dict, episode) -> None:
        if pair["conns"] and pair["episode"] is episode:
            self.cp.count(t, "ike_sa_rekeys")

    def _new_sa(self, t: float, a: int, b: int, origin: float, counted: bool) -> int:
        cp, keys = self.cp, self.keys
        sa = len(self.sas)
        interval = keys.ipsec_child_rekey * (1 - keys.ipsec_rekey_jitter * cp.jitter_rng.uniform())
        state = self.sas[sa] = {"a": a, "b": b, "gen": 0, "alive": True, "conns": set(), "mode": "esp"}
        if self.offload:
            if cp.has_room(a, 2) and cp.has_room(b, 2):
                self._nic(t, state, +1, counted)
            elif keys.ipsec_hw_offload == "auto":
                cp.count(t, "offload_fallbacks")
                state["mode"] = "software"
            else:
                cp.count(t, "offload_failures")
                state["mode"] = "fail"
        self._install(t, sa)
        for when in ages(origin, interval, cp.span, t if t > 0 else 0.0).tolist():
            if when > t:
                cp.at(when, self._rekey, sa)
        return sa

    def _nic(self, t: float, state: dict, sign: int, commands: bool = True) -> None:
        """Install (+1) or delete (-1) one SA pair on both hosts' NICs: 2 entries each."""
        for host in (state["a"], state["b"]):
            self.cp.occupy(t, host, 2 * sign)
            if commands:
                for _ in range(2):
                    self.cp.queues.issue(host, "ipsec_sa_add" if sign > 0 else "ipsec_sa_delete", t)

    def _install(self, t: float, sa: int) -> None:
        state, cp = self.sas[sa], self.cp
        gen = state["gen"]
        state["spis"] = {}
        for src, dst in ((state["a"], state["b"]), (state["b"], state["a"])):
            spi = self.next_spi
            self.next_spi += 1
            state["spis"][src] = spi
            cp.s.esp.append(SaEvent(t, "install", dst, spi, (sa, gen, src)))

    def _remove(self, t: float, sa: int, spis: dict, gen: int, nic: bool) -> None:
        state, cp = self.sas[sa], self.cp
        for src, dst in ((state["a"], state["b"]), (state["b"], state["a"])):
            cp.s.esp.append(SaEvent(t, "remove", dst, spis[src], (sa, gen, src)))
        if nic and self.offload and state["mode"] == "esp":
            self._nic(t, state, -1)

    def _epochs(self, t: float, conn: int, sa: int) -> None:
        state, cp = self.sas[sa], self.cp
        client, _ = cp.ends(conn)
        for d, src in ((0, client), (1, state["a"] if client == state["b"] else state["b"])):
            kind = {"fail": "fail", "software": "esp-sw"}.get(state["mode"], "esp")
            cp.s.epochs[2 * conn + d].append(Epoch(t, kind, (sa, state["gen"], src, state["spis"][src])))

    def _rekey(self, t: float, sa: int) -> None:
        state, cp = self.sas[sa], self.cp
        if not state["alive"]:
            return
        cp.count(t, "child_sa_rekeys")
        old_spis, old_gen = state["spis"], state["gen"]
        state["gen"] += 1
        if self.offload and state["mode"] == "esp":
            self._nic(t, state, +1)
        self._install(t, sa)
        for conn in sorted(state["conns"]):
            self._epochs(t, conn, sa)
        cp.at(t + self.keys.ipsec_rekey_overlap, self._remove_old, sa, old_spis, old_gen)

    def _remove_old(self, t: float, sa: int, spis: dict, gen: int) -> None:
        self._remove(t, sa, spis, gen, nic=True)

    def _close(self, t: float, conn: int) -> None:
        cp = self.cp
        a, b = cp.ends(conn)
        pair = self.pairs[(min(a, b), max(a, b))]
        pair["conns"].discard(conn)
        for sa, state in self.sas.items():
            if conn in state["conns"]:
                state["conns"].discard(conn)
                if not state["conns"] and state["alive"]:
                    state["alive"] = False
                    self._remove(t, sa, state["spis"], state["gen"], nic=True)
                    if pair.get("sa") == sa:
                        pair["sa"] = None
                break


class Sadb:
    """Real ESP SAs: inbound databases per host, outbound SA per (SA, generation, sender)."""

    def __init__(self, hosts: int, rng: np.random.Generator) -> None:
        self.rng = rng
        self.inbound: list[dict[int, EspSA]] = [{} for _ in range(hosts)]
        self.pairs: dict[tuple[int, int, int], tuple[EspSA, EspSA]] = {}

    def _pair(self, key: tuple[int, int, int], spi: int) -> tuple[EspSA, EspSA]:
        pair = self.pairs.get(key)
        if pair is None:
            secret = self.rng.bytes(20)
            pair = self.pairs[key] = (EspSA(spi, secret), EspSA(spi, secret, replay_window=1024))
        return pair

    def apply(self, event: SaEvent) -> None:
        if event.kind == "install":
            self.inbound[event.host][event.spi] = self._pair(event.key, event.spi)[1]
        else:
            self.inbound[event.host].pop(event.spi, None)

    def sender(self, key: tuple[int, int, int], spi: int):
        """The seal function of the outbound SA ``key`` (sa id, generation, sending host)."""
        sa = self._pair(key, spi)[0]
        return lambda frame: esp_encapsulate(frame, sa)

    def open(self, host: int, frame: bytes):
        return esp_decapsulate(frame, self.inbound[host])

    def entries(self) -> int:
        return sum(len(db) for db in self.inbound)
