"""Generated inputs into every decoder: only typed rejections, no accepted tamper,
and the compiled fast path giving exactly what pure Python gives.

``make fuzz`` runs 1,000,000 inputs per decoder (``python -m tests.fuzz_decoders
--inputs N``); ``tests/test_robustness_fuzz.py`` runs a short profile of the
same code in the normal test suite.

Inputs, from one seeded generator: valid packets (records, files, headers)
with 1-4 bytes changed, truncated, extended, or replaced by random bytes.
Per decoder it counts inputs, accepted, each rejection type, and three
failures that must stay at 0: an exception that is not the decoder's typed
error ("crashes"), a changed packet accepted with a changed result
("tampers accepted"), and the fast path disagreeing with pure Python
("fast/pure mismatches").  PSP receive runs both paths on every input; ESP
and PSP send compare the compiled seal with the pure one on the valid
frames the mutations start from.
"""

from __future__ import annotations

import argparse
import io
import struct
import sys
import time
from collections import Counter
from collections.abc import Callable

import numpy as np

from pspsim.wire import DeviceKeys, PspEncap, PspHeader, PspSA, derive_sa_key, encapsulate, psp_packet
from pspsim.wire.errors import PcapFormatError, PspRejected, WireError
from pspsim.wire.esp import EspSA, esp_decapsulate, esp_encapsulate
from pspsim.wire.frames import udp_frame
from pspsim.wire.pcap import PcapHeader, PcapReader
from pspsim.wire.psp_cfg import parse_encrypt_config, parse_master_keys
from pspsim.wire.tls import Tls12GcmRecordProtection, Tls13RecordProtection

MASTER = (bytes(range(32)), bytes(range(32, 64)))
SECRET = bytes(range(32))
DECODERS = ("psp", "esp", "tls13", "tls12", "pcap", "cfg", "header")


def mutate(valid: bytes, rng: np.random.Generator) -> tuple[bytes, int]:
    """A changed copy of ``valid`` and the first changed offset (len(valid) if only cut or grown)."""
    kind = rng.integers(8)
    if kind < 4:  # change 1..4 bytes (always to a different value)
        data = bytearray(valid)
        positions = rng.integers(0, len(valid), size=int(kind) + 1)
        for pos in positions:
            data[pos] ^= int(rng.integers(1, 256))
        return bytes(data), int(positions.min())
    if kind == 4:  # truncate
        cut = int(rng.integers(0, len(valid)))
        return valid[:cut], cut
    if kind == 5:  # extend
        return valid + rng.bytes(int(rng.integers(1, 40))), len(valid)
    if kind == 6:  # random bytes of a similar length
        return rng.bytes(int(rng.integers(0, len(valid) + 20))), 0
    data = bytearray(valid)  # a random run overwritten
    start = int(rng.integers(0, len(valid)))
    run = rng.bytes(int(rng.integers(1, 17)))
    data[start : start + len(run)] = run
    return bytes(data[: len(valid)]), start


class Tally:
    def __init__(self, name: str) -> None:
        self.name = name
        self.counts: Counter[str] = Counter()

    def failure(self, what: str, detail: str) -> None:
        self.counts[what] += 1
        if self.counts[what] <= 3:
            print(f"{self.name}: {what}: {detail}", file=sys.stderr)

    @property
    def failures(self) -> int:
        return self.counts["crashes"] + self.counts["tampers accepted"] + self.counts["fast/pure mismatches"]


def _outcome(call: Callable[[], object]) -> tuple[str, object]:
    try:
        return "ok", call()
    except WireError as exc:
        return type(exc).__name__, getattr(exc, "counter", None)


def fuzz_psp(n: int, rng: np.random.Generator, tally: Tally) -> None:
    keys = DeviceKeys(*MASTER)
    valid = []
    for version in (0, 1, 2, 3):
        spi = 0x100 + version
        sa = PspSA(spi, derive_sa_key(MASTER[0], spi, version), version)
        for ip_version in (4, 6):
            for encap in (PspEncap(), PspEncap("tunnel"), PspEncap(transport_crypt_offset=2),
                          PspEncap(vc=bytes(range(8)))):
                frame = udp_frame(bytes(range(60)), ip_version=ip_version)
                pure = psp_packet._encapsulate(frame, sa, 7, encap)
                if encapsulate(frame, sa, 7, encap) != pure:
                    tally.failure("fast/pure mismatches", f"encapsulate v{version} {encap}")
                psp_start = 14 + (20 if ip_version == 4 else 40) + 8
                valid.append((pure, psp_start, psp_packet._decapsulate(pure, keys, psp_packet.ALL_VERSIONS)))
    fast = psp_packet._psp_fast
    for i in range(n):
        packet, psp_start, opened = valid[i % len(valid)]
        data, changed = mutate(packet, rng)
        pure = _outcome(lambda: psp_packet._decapsulate(data, keys, psp_packet.ALL_VERSIONS))
        if pure[0] not in ("ok", "NotPspPacket") and not pure[0].startswith("Psp"):
            tally.failure("crashes", f"{pure[0]} on {data.hex()}")
        tally.counts[pure[0]] += 1
        if fast is not None:
            both = _outcome(lambda: psp_packet.decapsulate(data, keys))
            if both != pure:
                tally.failure("fast/pure mismatches", f"{both} vs {pure} on {data.hex()}")
        if pure[0] == "ok" and changed >= psp_start and data != packet and pure[1].frame != opened.frame:
            tally.failure("tampers accepted", data.hex())
        tally.counts["inputs"] += 1


def fuzz_esp(n: int, rng: np.random.Generator, tally: Tally) -> None:
    # the compiled seal against the pure one (an explicit IV takes the pure path), byte for byte
    for esn in (False, True):
        for size in range(64):
            seq = (3 << 32) + size + 1 if esn else size + 1
            fast = EspSA(9, bytes(range(20)), esn=esn, next_seq=seq)
            pure = EspSA(9, bytes(range(20)), esn=esn)
            if fast.seal(bytes(range(size)), 17) != pure.seal(bytes(range(size)), 17, seq=seq,
                                                               iv=seq.to_bytes(8, "big")):
                tally.failure("fast/pure mismatches", f"ESP seal of {size} bytes, esn={esn}")
    valid = []
    for mode in ("transport", "tunnel"):
        for udp in (False, True):
            for ip_version in (4, 6):
                tx = EspSA(0x55, bytes(range(20)), mode=mode, udp_encap=udp, next_seq=1000)
                frame = udp_frame(bytes(range(50)), ip_version=ip_version)
                sealed = esp_encapsulate(frame, tx)
                protected = len(frame) - 14 - (0 if mode == "tunnel" else (20 if ip_version == 4 else 40))
                valid.append((sealed, len(sealed) - tx.sealed_len(protected), frame))
    rx = EspSA(0x55, bytes(range(20)), replay_window=0)
    for i in range(n):
        packet, esp_start, frame = valid[i % len(valid)]
        data, changed = mutate(packet, rng)
        outcome = _outcome(lambda: esp_decapsulate(data, {0x55: rx}))
        if outcome[0] == "ok":
            if changed >= esp_start and data != packet and outcome[1].frame != frame:
                tally.failure("tampers accepted", data.hex())
        elif outcome[0] != "NotEspPacket" and not outcome[0].startswith("Esp"):
            tally.failure("crashes", f"{outcome[0]} on {data.hex()}")
        tally.counts[outcome[0]] += 1
        tally.counts["inputs"] += 1


def _fuzz_tls(n: int, rng: np.random.Generator, tally: Tally, make: Callable[[], object]) -> None:
    contents = [bytes(i % 256 for i in range(k)) for k in (0, 1, 40, 300)]
    records = [(make().seal(c, 23), c) for c in contents]  # all at sequence 0
    rx = make()
    for i in range(n):
        record, content = records[i % len(records)]
        data, changed = mutate(record, rng)
        outcome = _outcome(lambda: rx.open(data))
        if outcome[0] == "ok":
            rx = make()  # it moved to sequence 1
            if outcome[1] != (23, content):
                tally.failure("tampers accepted", data.hex())
        elif not outcome[0].startswith("Tls"):
            tally.failure("crashes", f"{outcome[0]} on {data.hex()}")
        tally.counts[outcome[0]] += 1
        tally.counts["inputs"] += 1


def fuzz_tls13(n: int, rng: np.random.Generator, tally: Tally) -> None:
    _fuzz_tls(n, rng, tally, lambda: Tls13RecordProtection("TLS_AES_128_GCM_SHA256", SECRET))


def fuzz_tls12(n: int, rng: np.random.Generator, tally: Tally) -> None:
    _fuzz_tls(n, rng, tally, lambda: Tls12GcmRecordProtection(bytes(range(16)), bytes(4)))


def fuzz_pcap(n: int, rng: np.random.Generator, tally: Tally) -> None:
    frames = [udp_frame(bytes(range(k))) for k in (0, 10, 100)]
    files = []
    for nanosecond in (False, True):
        target = io.BytesIO()
        header = PcapHeader(1, 9014, nanosecond)
        target.write(struct.pack("<IHHiIII", 0xA1B23C4D if nanosecond else 0xA1B2C3D4, 2, 4, 0, 0, 9014, 1))
        for i, f in enumerate(frames):
            target.write(struct.pack("<IIII", i, i * 7, len(f), len(f) + (i == 2)) + f)
        files.append(target.getvalue())
        with PcapReader(io.BytesIO(files[-1])) as reader:  # the reader reads the writer's layout
            assert reader.header == header and [r.data for r in reader] == frames
    for i in range(n):
        data, _ = mutate(files[i % 2], rng)
        try:
            with PcapReader(io.BytesIO(data)) as reader:
                records = list(reader)
            outcome = "ok"
            if any(len(r.data) > 0x0400_0000 for r in records):
                tally.failure("crashes", "record past the size limit")
        except PcapFormatError:
            outcome = "PcapFormatError"
        except Exception as exc:  # noqa: BLE001 - counting what escapes is the point
            outcome = type(exc).__name__
            tally.failure("crashes", f"{outcome} on {data.hex()}")
        tally.counts[outcome] += 1
        tally.counts["inputs"] += 1


def fuzz_cfg(n: int, rng: np.random.Generator, tally: Tally) -> None:
    keys = " ".join(f"{b:02x}" for b in MASTER[0] + MASTER[1])
    texts = [f"{keys}\n9A345678\ntransport\naes-gcm-128\n1 0 0\nno-vc\n".encode(),
             f"{keys}\n1\ntunnel\naes-gmac-256\n0 2 3\nvc\n".encode(), f"{keys}\n".encode()]
    for i in range(n):
        data, _ = mutate(texts[i % len(texts)], rng)
        text = data.decode("latin-1")  # the loader refuses non-ASCII files; the parser sees every byte anyway
        for parse in (parse_encrypt_config, parse_master_keys):
            outcome = _outcome(lambda: parse(text))
            if outcome[0] not in ("ok", "ConfigError"):
                tally.failure("crashes", f"{outcome[0]} on {text!r}")
            tally.counts[f"{parse.__name__}: {outcome[0]}"] += 1
        tally.counts["inputs"] += 1


def fuzz_header(n: int, rng: np.random.Generator, tally: Tally) -> None:
    valid = [PspHeader(17, 0x1234, 99).encode(), PspHeader(6, 1, 2, version=3, vc=bytes(8), extension=bytes(8),
                                                             crypt_offset=5, sample=True).encode()]
    for i in range(n):
        data, _ = mutate(valid[i % 2], rng)
        try:
            header = PspHeader.decode(data)
            outcome = "ok"
            if header.encode()[4:] != data[4 : header.length]:
                tally.failure("fast/pure mismatches", f"decode/encode round trip of {data.hex()}")
        except PspRejected as exc:
            outcome = type(exc).__name__
        except Exception as exc:  # noqa: BLE001
            outcome = type(exc).__name__
            tally.failure("crashes", f"{outcome} on {data.hex()}")
        tally.counts[outcome] += 1
        tally.counts["inputs"] += 1


FUZZERS = {"psp": fuzz_psp, "esp": fuzz_esp, "tls13": fuzz_tls13, "tls12": fuzz_tls12, "pcap": fuzz_pcap,
           "cfg": fuzz_cfg, "header": fuzz_header}


def run(n: int, seed: int = 0, decoders: tuple[str, ...] = DECODERS, out=sys.stdout) -> dict[str, Tally]:
    tallies = {}
    for name in decoders:
        tally = Tally(name)
        started = time.perf_counter()
        FUZZERS[name](n, np.random.default_rng([seed, DECODERS.index(name)]), tally)
        counts = tally.counts
        detail = ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())
                           if k not in ("inputs", "crashes", "tampers accepted", "fast/pure mismatches"))
        print(f"{name}: {counts['inputs']:,} inputs in {time.perf_counter() - started:.1f} s; "
              f"crashes {counts['crashes']}, tampers accepted {counts['tampers accepted']}, "
              f"fast/pure mismatches {counts['fast/pure mismatches']}; {detail}", file=out, flush=True)
        tallies[name] = tally
    return tallies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=1_000_000, help="inputs per decoder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=DECODERS, action="append")
    args = parser.parse_args()
    tallies = run(args.inputs, args.seed, tuple(args.only or DECODERS))
    failures = sum(t.failures for t in tallies.values())
    print(f"total: {sum(t.counts['inputs'] for t in tallies.values()):,} inputs, {failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
