"""The capture of one host's traffic in the packet tier, streamed as it goes.

What host H sends (at its send time) and receives (at its arrival time),
each chunk's packets written in time order, with the TCP three-way handshake
at each connection incarnation's start and the FIN exchange at its end.
Written atomically (:class:`~pspsim.wire.pcap.PcapWriter`: a hidden
temporary file renamed at the end, removed if the run fails), so an
interrupted run leaves no capture that looks complete.

Key files beside it, for decryption: PSP ``psp-hostH-keys.csv`` (epoch,
start_s, end_s, cfg: the host's two device keys for each period between its
rotations, each in a reference-format cfg file; ``pspsim psp decrypt --keys``
picks each packet's period by its timestamp); ESP ``<variant>-hostH-sas.csv``
(spi, src, dst, key: every SA that H received with); TLS
``<variant>-hostH-keylog.txt`` (NSS key log).
"""

from __future__ import annotations

import bisect
import os

import numpy as np

from pspsim.packets.tcp import closing, handshake, host_address
from pspsim.wire.pcap import PcapHeader, PcapRecord, PcapWriter


def _record(time: float, frame: bytes) -> PcapRecord:
    seconds = int(time)
    return PcapRecord(seconds, int(round((time - seconds) * 1e9)) % 1_000_000_000, frame, len(frame))


class Capture:
    def __init__(self, directory: str, variant: str, host: int, tier, rx_only: bool = False) -> None:
        self.dir, self.variant, self.host, self.tier, self.rx_only = directory, variant, host, tier, rx_only
        self.path = os.path.join(directory, f"{variant}-host{host}.pcap")
        self.writer = PcapWriter(self.path, PcapHeader(snaplen=65535, nanosecond=True))
        self.pending: list[tuple[float, bytes]] = []
        self.tcp = self._tcp_events()
        self.tcp_pos = 0
        self.bytes = 24

    def _tcp_events(self) -> list[tuple[float, bytes]]:
        tier, out = self.tier, []
        w, span = tier.w, tier.duration
        rtt = 4 * tier.sc.fleet.hop_latency_us * 1e-6
        for conn in tier.sample.tolist():
            client, server = int(w.client[conn]), int(w.server[conn])
            if self.host not in (client, server):
                continue
            seen = set()
            for epoch in tier.schedule.epochs.get(2 * conn, []):
                if epoch.incarnation not in seen and epoch.start > 0:
                    out += handshake(tier.rank[conn], epoch.incarnation, client, server, epoch.start, rtt)
                seen.add(epoch.incarnation)
            if w.end[conn] < span and seen:
                out.append((float(w.end[conn]), (conn, max(seen), client, server, rtt)))  # built when written
        out.sort(key=lambda x: x[0])  # (time, frame), or (time, FIN exchange to build)
        return out

    def sent(self, send: np.ndarray, src: np.ndarray, wire: list[bytes]) -> None:
        if self.rx_only:
            return
        for i in np.flatnonzero(src == self.host).tolist():
            self.pending.append((float(send[i]), wire[i]))

    def received(self, arrive: np.ndarray, dst: list[int], wire: list[bytes], delivered: np.ndarray) -> None:
        for i in np.flatnonzero((np.asarray(dst) == self.host) & delivered).tolist():
            self.pending.append((float(arrive[i]), wire[i]))
        self._flush(max((t for t, _ in self.pending), default=0.0))

    def _flush(self, until: float) -> None:
        end = bisect.bisect_right([t for t, _ in self.tcp], until, lo=self.tcp_pos)
        if not self.rx_only:
            self.pending += self.tcp[self.tcp_pos:end]
        self.tcp_pos = end
        self.pending.sort(key=lambda x: x[0])
        for t, frame in self.pending:
            if isinstance(frame, tuple):  # a FIN exchange: sequence numbers as the connection left them
                conn, inc, client, server, rtt = frame
                seq = self.tier.seq
                sent = seq.get((2 * conn) * 4096 + inc, 1), seq.get((2 * conn + 1) * 4096 + inc, 1)
                for when, f in closing(self.tier.rank[conn], inc, client, server, t, rtt, *sent):
                    self.writer.write(_record(when, f))
                    self.bytes += 16 + len(f)
                continue
            self.writer.write(_record(t, frame))
            self.bytes += 16 + len(frame)
        self.pending = []

    def finish(self) -> None:
        self._flush(np.inf)
        self.writer.close()
        if self.tier.nics is not None:
            self._psp_keys()
        if self.tier.sadb is not None:
            self._esp_sas()
        if self.tier.tls.secrets:
            with open(os.path.join(self.dir, f"{self.variant}-host{self.host}-keylog.txt"), "w") as log:
                log.write("\n".join(self.tier.tls.key_log_lines()) + "\n")

    def abort(self) -> None:
        self.writer.abort()

    def _psp_keys(self) -> None:
        host = self.host
        lines = ["epoch,start_s,end_s,cfg,address"]
        for i, (start, end, k0, k1) in enumerate(self.tier.nics.keys_table(host, self.tier.duration)):
            name = f"psp-host{host}-keys-{i}.cfg"
            with open(os.path.join(self.dir, name), "w") as cfg:
                cfg.write(" ".join(f"{b:02x}" for b in k0) + "\n" + " ".join(f"{b:02x}" for b in k1) + "\n")
            lines.append(f"{i},{start:.9f},{end:.9f},{name},{host_address(host)}")
        with open(os.path.join(self.dir, f"psp-host{host}-keys.csv"), "w") as index:
            index.write("\n".join(lines) + "\n")

    def _esp_sas(self) -> None:
        receiver = {e.key: e.host for e in self.tier.schedule.esp if e.kind == "install"}
        lines = ["spi,src,dst,key"]
        for key, (tx, _) in sorted(self.tier.sadb.pairs.items()):
            src, dst = key[2], receiver.get(key)
            if self.host in (src, dst):
                lines.append(f"{tx.spi:#010x},{host_address(src)},{host_address(dst)},{tx.key.hex()}")
        with open(os.path.join(self.dir, f"{self.variant}-host{self.host}-sas.csv"), "w") as out:
            out.write("\n".join(lines) + "\n")
