"""Rewrite a pcap file packet by packet: the loop behind every encrypt/decrypt command.

Each packet goes through a transform; a packet the transform rejects with a
:class:`~pspsim.wire.errors.WireError` is reported on standard error (with
its index and reason) and left out.  The output appears only if the whole
file was processed; timestamps are kept.  Input and output are checked
before the first packet (:mod:`pspsim.cli.outputs`).
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

from pspsim.cli.common import UserError
from pspsim.cli.outputs import Outputs
from pspsim.wire.errors import IvSpaceExhausted, WireError
from pspsim.wire.esp import EspSequenceExhausted
from pspsim.wire.pcap import LINKTYPE_ETHERNET, PcapHeader, PcapReader, PcapRecord, PcapWriter

#: Largest frame the PSP reference writes (Ethernet jumbo); also its output snaplen.
JUMBO_FRAME = 9014

Transform = Callable[[bytes], bytes]
#: Maps a rejection to (tally label, message), e.g. ("rx-auth-fail", "dropped (rx-auth-fail): ...").
Describe = Callable[[WireError], tuple[str, str]]


def prepare_output(path: Path, input_path: Path | None = None) -> None:
    """Check an output file before any work (see :class:`~pspsim.cli.outputs.Outputs`)."""
    Outputs([input_path]).add(path)


class PacketTime:
    """The timestamp (seconds) of the packet being transformed, for transforms that need it."""

    now = 0.0


def rewrite_capture(
    input_path: Path, output_path: Path, transform: Transform, describe: Describe, *, snaplen: int = JUMBO_FRAME,
    inputs: Iterable[Path] = (), clock: PacketTime | None = None, quiet: tuple[str, ...] = (),
) -> tuple[int, Counter[str]]:
    """Apply ``transform`` to every packet; returns (packets written, tally of the rest).
    ``clock.now`` holds each packet's timestamp; rejections labelled in ``quiet`` are
    tallied without a line on standard error.

    The input's file header and every output check come first; the output
    appears only when the whole input was read (a truncated or corrupt
    record leaves nothing behind).  ``inputs`` are other files the command
    reads (key files), which the output must not overwrite either.
    ``clock.now`` holds each packet's timestamp while it is transformed;
    rejections labelled in ``quiet`` are tallied without a line on standard error."""
    outputs = Outputs([input_path, *inputs])
    outputs.add(output_path)
    tally: Counter[str] = Counter()
    written = 0
    with PcapReader(input_path) as reader:
        if reader.header.linktype != LINKTYPE_ETHERNET:
            raise UserError(f"{input_path}: link type {reader.header.linktype} is not Ethernet (1)")

        def write(tmp: Path) -> None:
            nonlocal written
            with PcapWriter(tmp, PcapHeader(LINKTYPE_ETHERNET, snaplen, reader.header.nanosecond)) as writer:
                for index, record in enumerate(reader):
                    if record.truncated:
                        tally["truncated"] += 1
                        print(f"packet {index}: skipped: truncated capture (caplen < wire length)", file=sys.stderr)
                        continue
                    if clock is not None:
                        clock.now = record.ts_sec + record.ts_frac * (1e-9 if reader.header.nanosecond else 1e-6)
                    try:
                        frame = transform(record.data)
                    except WireError as exc:
                        label, message = describe(exc)
                        tally[label] += 1
                        if label not in quiet:
                            print(f"packet {index}: {message}", file=sys.stderr)
                        continue
                    if len(frame) > snaplen:
                        tally["skipped"] += 1
                        print(f"packet {index}: skipped: {len(frame)}-byte result exceeds snaplen {snaplen}",
                              file=sys.stderr)
                        continue
                    writer.write(PcapRecord(record.ts_sec, record.ts_frac, frame, len(frame)))
            written = writer.count

        outputs.commit({output_path: write})
    return written, tally


def skipped(exc: WireError) -> tuple[str, str]:
    """A sender skip; a skip because the IV or sequence space ran out is tallied as
    ``exhausted`` (exit status 1: those packets were not sent, rekey)."""
    if isinstance(exc, (EspSequenceExhausted, IvSpaceExhausted)):
        return "exhausted", f"skipped: {exc}"
    return "skipped", f"skipped: {exc}"


def dropped(exc: WireError) -> tuple[str, str]:
    """A receiver drop, labelled with the counter it moves."""
    counter = getattr(exc, "counter", "error")
    return counter, f"dropped ({counter}): {exc}"
