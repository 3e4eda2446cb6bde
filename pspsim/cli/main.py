"""Entry point of the ``pspsim`` command.

Exit status: 0 success; 1 the command ran but some packets failed (for
example a decrypt that dropped packets); 2 bad input (usage, unreadable or
malformed files), reported as one line on standard error.
"""

from __future__ import annotations

import argparse
import sys

from pspsim import __version__
from pspsim.cli import esp_commands, overhead_command, psp_commands
from pspsim.wire.errors import WireError

DESCRIPTION = """\
pspsim compares Google's PSP Security Protocol with IPsec ESP and TLS.
Packets are really encrypted: 'pspsim psp' encrypts and decrypts pcap files
exactly as the public PSP reference implementation (google/psp) does."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pspsim",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pspsim {__version__}")
    groups = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    psp_commands.register(groups)
    esp_commands.register(groups)
    overhead_command.register(groups)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except WireError as exc:
        print(f"pspsim: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pspsim: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
