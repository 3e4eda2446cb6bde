"""PSP wire throughput: pspsim encapsulate+decapsulate against bare AES-GCM.

Both loops protect the same 1,434-byte frame's payload in the same process,
interleaved over several rounds; the ratio of their rates is reported (the
bare rate is the physical limit: pspsim does the same AES-GCM work plus
header parsing and building).  Target: ratio >= 0.5.
"""

from __future__ import annotations

import os
import statistics
import time

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pspsim.wire import DeviceKeys, PspEncap, PspSender, decapsulate
from pspsim.wire.frames import udp_frame

TARGET = 0.5


def _rate(loop, n: int) -> float:
    start = time.perf_counter()
    loop(n)
    return n / (time.perf_counter() - start)


def run(n: int = 20000, rounds: int = 5) -> dict[str, float]:
    frame = udp_frame(bytes(range(256)) * 5 + bytes(112))  # 1,434-byte frame
    assert len(frame) == 1434
    keys = DeviceKeys(os.urandom(32), os.urandom(32))
    sender = PspSender(keys.new_sa(0x1234), PspEncap(transport_crypt_offset=1))
    aead = AESGCM(os.urandom(16))
    payload = frame[34 + 4 :]  # what PSP encrypts with crypt offset 1
    aad = bytes(20)
    nonce = bytes(12)

    def pspsim_loop(count: int) -> None:
        for _ in range(count):
            decapsulate(sender.seal(frame), keys)

    def bare_loop(count: int) -> None:
        for _ in range(count):
            aead.decrypt(nonce, aead.encrypt(nonce, payload, aad), aad)

    ratios, ours, bare = [], [], []
    for _ in range(rounds):
        b = _rate(bare_loop, n)
        o = _rate(pspsim_loop, n)
        ours.append(o)
        bare.append(b)
        ratios.append(o / b)
    return {
        "ratio": statistics.median(ratios),
        "pspsim_pkts_per_s": statistics.median(ours),
        "bare_pkts_per_s": statistics.median(bare),
        "target": TARGET,
    }


if __name__ == "__main__":
    result = run()
    print(f"psp wire: ratio {result['ratio']:.2f} (target >= {TARGET}); "
          f"pspsim {result['pspsim_pkts_per_s']:.0f} vs bare {result['bare_pkts_per_s']:.0f} round trips/s")
