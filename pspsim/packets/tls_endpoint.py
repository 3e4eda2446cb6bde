"""TLS endpoints of the packet tier: records in the TCP byte stream, re-keys in band.

Each connection direction has a sender and a receiver sharing real record
protection: TLS 1.3 (``TLS_AES_128_GCM_SHA256``; tls-user, ktls-sw, and PSP
connections before their upgrade or after a table-full fallback) or TLS 1.2
AES-GCM (ktls-offload, as Linux offloads it).  A message is sealed as
records of at most 16 KiB; the receiver reassembles the stream and opens
records in order, so a lost or tampered segment fails every record it
touches (``bad_record_mac``).

Re-keys come from the control plane's schedule (:mod:`pspsim.packets.control`:
ages k x min(T, byte budget / rate)): the first message a side sends at or
after a re-key time starts with a KeyUpdate record (TLS 1.3), after which
both sides step to the next traffic secret; a reconnect (``tls_rekey =
"reconnect"``, or kTLS offload) puts a marker record in the stream after
which both sides use the keys of a new handshake (the receiver is handed
them, as the handshake the packet tier does not simulate would).
"""

from __future__ import annotations

import numpy as np

from pspsim.wire.errors import WireError
from pspsim.wire.tls import (
    CONTENT_HANDSHAKE,
    MAX_PLAINTEXT,
    RECORD_HEADER_LEN,
    Tls12GcmRecordProtection,
    Tls13RecordProtection,
    TlsRejected,
    key_update_message,
)

SUITE = "TLS_AES_128_GCM_SHA256"


class TlsEndpoints:
    def __init__(self, tls12: bool, rekeys: dict[int, list[tuple[float, str]]], rng: np.random.Generator) -> None:
        self.tls12, self.rng = tls12, rng
        self.rekeys = rekeys
        self.tx: dict[int, object] = {}  # flow -> sender protection
        self.rx: dict[int, list] = {}  # flow -> [protection, buffered bytes, queued TLS 1.2 keys]
        self.next_rekey: dict[int, int] = {}
        self.secrets: dict[int, bytes] = {}  # flow -> TLS 1.3 traffic secret at set-up (for key logs)
        self.records = 0
        self.rekeys_done = 0

    def _new(self, flow: int) -> None:
        if self.tls12:
            key, salt = self.rng.bytes(16), self.rng.bytes(4)
            self.tx[flow] = Tls12GcmRecordProtection(key, salt)
            self.rx[flow] = [Tls12GcmRecordProtection(key, salt), b"", []]
        else:
            secret = self.rng.bytes(32)
            self.secrets[flow] = secret
            self.tx[flow] = Tls13RecordProtection(SUITE, secret)
            self.rx[flow] = [Tls13RecordProtection(SUITE, secret), b"", []]
        self.next_rekey[flow] = 0

    def seal(self, flow: int, t: float, size: int) -> bytes:
        """The records carrying one ``size``-byte message sent at ``t``."""
        if flow not in self.tx:
            self._new(flow)
        records = []
        plan, k = self.rekeys.get(flow >> 1, ()), self.next_rekey[flow]
        while k < len(plan) and plan[k][0] <= t:
            records.append(self._rekey(flow, plan[k][1]))
            k += 1
        self.next_rekey[flow] = k
        tx = self.tx[flow]
        for start in range(0, size, MAX_PLAINTEXT):
            records.append(tx.seal(bytes(min(MAX_PLAINTEXT, size - start))))
        self.records += len(records)
        return b"".join(records)

    def _rekey(self, flow: int, kind: str) -> bytes:
        tx = self.tx[flow]
        record = tx.seal(key_update_message(), CONTENT_HANDSHAKE)
        self.rekeys_done += flow & 1 == 0
        if isinstance(tx, Tls13RecordProtection) and kind == "key-update":
            tx.update_keys()
        elif isinstance(tx, Tls13RecordProtection):
            secret = self.rng.bytes(32)
            self.tx[flow] = Tls13RecordProtection(SUITE, secret)
            self.rx[flow][2].append(secret)
        else:
            key, salt = self.rng.bytes(16), self.rng.bytes(4)
            self.tx[flow] = Tls12GcmRecordProtection(key, salt)
            self.rx[flow][2].append((key, salt))
        return record

    def receive(self, flow: int, payload: bytes, outcomes) -> tuple[bool, int]:
        """Feed one segment's payload; (every record in it opened, application bytes delivered)."""
        state = self.rx[flow]
        state[1] += payload
        buffer, ok, delivered = state[1], True, 0
        while len(buffer) >= RECORD_HEADER_LEN:
            end = RECORD_HEADER_LEN + int.from_bytes(buffer[3:5], "big")
            if len(buffer) < end:
                break
            record, buffer = buffer[:end], buffer[end:]
            try:
                content_type, content = state[0].open(record)
            except (TlsRejected, WireError) as exc:
                outcomes[getattr(exc, "alert", "tls-error")] += 1
                ok = False
                continue
            if content_type == CONTENT_HANDSHAKE:  # the in-band re-key
                if state[2]:
                    new = state[2].pop(0)
                    state[0] = Tls12GcmRecordProtection(*new) if self.tls12 else Tls13RecordProtection(SUITE, new)
                else:
                    state[0].update_keys()
                continue
            delivered += len(content)
        state[1] = buffer
        return ok, delivered

    def key_log_lines(self) -> list[str]:
        """NSS key log lines (TLS 1.3 application traffic secrets at set-up), one
        synthetic client random per connection (its number, zero-padded)."""
        lines = []
        for flow, secret in sorted(self.secrets.items()):
            label = "CLIENT_TRAFFIC_SECRET_0" if flow % 2 == 0 else "SERVER_TRAFFIC_SECRET_0"
            lines.append(f"{label} {(flow >> 1).to_bytes(32, 'big').hex()} {secret.hex()}")
        return lines
