"""ESP and TLS seal+open against bare AES-GCM on the same payloads.

Each protocol's ``seal`` + ``open`` on one SA (ESP: a 1,400-byte packet
payload; TLS 1.3: 1,400-byte and 16 KiB records) is timed in the same run
as a bare ``AESGCM.encrypt`` + ``decrypt`` loop over the same plaintext, and
the ratio of the rates reported.  Target: ratio >= 0.5 for each.
"""

from __future__ import annotations

import os
import statistics
import time

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pspsim.wire.esp import EspSA
from pspsim.wire.tls import Tls13RecordProtection

TARGET = 0.5


def _rate(loop, n: int) -> float:
    start = time.perf_counter()
    loop(n)
    return n / (time.perf_counter() - start)


def _bare(payload: bytes):
    aead, nonce, aad = AESGCM(os.urandom(16)), bytes(12), bytes(8)

    def loop(count: int) -> None:
        for _ in range(count):
            aead.decrypt(nonce, aead.encrypt(nonce, payload, aad), aad)

    return loop


def _esp(payload: bytes):
    def loop(count: int) -> None:
        tx = EspSA(0x1234, os.urandom(20))
        rx = EspSA(0x1234, os.urandom(20))
        rx._aead, rx._salt = tx._aead, tx._salt  # same key, built once
        for _ in range(count):
            rx.open(tx.seal(payload, 6))

    return loop


def _tls(payload: bytes):
    def loop(count: int) -> None:
        secret = os.urandom(32)
        tx = Tls13RecordProtection("TLS_AES_128_GCM_SHA256", secret)
        rx = Tls13RecordProtection("TLS_AES_128_GCM_SHA256", secret)
        for _ in range(count):
            rx.open(tx.seal(payload))

    return loop


def run(n: int = 20000, rounds: int = 5) -> dict[str, float]:
    cases = {
        "esp_1400": (_esp, 1400, n),
        "tls13_1400": (_tls, 1400, n),
        "tls13_16k": (_tls, 16384, n // 8),
    }
    results: dict[str, float] = {}
    for name, (make, size, count) in cases.items():
        payload = os.urandom(size)
        ratios = []
        for _ in range(rounds):
            bare = _rate(_bare(payload), count)
            ours = _rate(make(payload), count)
            ratios.append(ours / bare)
        results[f"{name}_ratio"] = statistics.median(ratios)
    results["ratio"] = min(results.values())
    results["target"] = TARGET
    return results


if __name__ == "__main__":
    for key, value in run().items():
        print(f"{key}: {value:.2f}")
