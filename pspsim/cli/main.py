"""Entry point of the ``pspsim`` command.

Exit status: 0 success; 1 the command ran but some packets failed (for
example a decrypt that dropped packets) or some sweep runs failed; 2 bad input (usage, unreadable or
malformed files), reported as one line on standard error.
"""

from __future__ import annotations

import argparse
import sys

from pspsim import __version__
from pspsim.cli import (
    calibrate_commands,
    crosscheck_command,
    esp_commands,
    overhead_command,
    params_command,
    psp_commands,
    run_command,
    sweep_command,
)
from pspsim.wire.errors import WireError

DESCRIPTION = """\
pspsim compares Google's PSP Security Protocol with IPsec ESP and TLS on a
simulated datacenter fleet ('pspsim run'), from cost parameters with sources
('pspsim params show').  Packets are really encrypted: 'pspsim psp' encrypts
and decrypts pcap files exactly as the public PSP reference implementation
(google/psp) does, 'pspsim esp' does ESP as Linux and Wireshark read it."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pspsim",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pspsim {__version__}")
    groups = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run_command.register(groups)
    crosscheck_command.register(groups)
    psp_commands.register(groups)
    esp_commands.register(groups)
    overhead_command.register(groups)
    params_command.register(groups)
    calibrate_commands.register(groups)
    sweep_command.register(groups)
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
