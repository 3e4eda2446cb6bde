"""``pspsim overhead``: bytes each protocol adds, measured from real packets."""

from __future__ import annotations

import argparse
from pathlib import Path

from pspsim.cli.common import UserError, non_negative_int
from pspsim.cli.outputs import Outputs, figure_suffixes
from pspsim.wire.overhead import DEFAULT_PAYLOADS, overhead_rows

HELP = """\
Protect real frames with PSP (transport/tunnel, IPv4/IPv6, with and without
the virtualization cookie) and ESP (transport/tunnel, with and without
UDP encapsulation), and real records with TLS 1.3 and TLS 1.2 (AES-GCM),
and report the bytes added, measured from the bytes themselves.  Prints the
table; -o writes it as CSV and --plot draws it."""


def register(groups: argparse._SubParsersAction) -> None:
    parser = groups.add_parser("overhead", help="bytes PSP, ESP and TLS add, measured from real packets",
                               description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--payload", type=non_negative_int, action="append", metavar="BYTES",
                        help="UDP payload / record size to measure (repeatable; default "
                             + ", ".join(map(str, DEFAULT_PAYLOADS)) + ")")
    parser.add_argument("-o", "--output", type=Path, metavar="CSV", help="write the table as CSV")
    parser.add_argument("--plot", type=Path, metavar="PNG", help="write a bar chart of the overhead")
    parser.set_defaults(handler=overhead_command)


def overhead_command(args: argparse.Namespace) -> int:
    import pandas as pd

    payloads = tuple(args.payload) if args.payload else DEFAULT_PAYLOADS
    if max(payloads) > 9000:
        raise UserError("--payload must be at most 9000 bytes")
    outputs = Outputs()
    if args.output is not None:
        outputs.add(args.output)
    if args.plot is not None:
        outputs.add(args.plot, suffixes=figure_suffixes())
    table = pd.DataFrame(overhead_rows(payloads))
    writers = {}
    if args.output is not None:
        from pspsim.figures import write_csv

        writers[args.output] = lambda tmp: write_csv(table, tmp)
    if args.plot is not None:
        from pspsim.figures import overhead_figure

        writers[args.plot] = lambda tmp: overhead_figure(table, tmp)
    outputs.commit(writers)
    print(table.to_string(index=False))
    return 0
