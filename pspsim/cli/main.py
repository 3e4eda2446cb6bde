"""Entry point of the ``pspsim`` command.

Exit status: 0 success; 1 the command ran but some packets failed (for
example a decrypt that dropped packets, or packets left out because the IV
or sequence space ran out, or some sweep runs failed); 2 bad input (usage,
unreadable or malformed files, outputs that cannot be written), reported as
one line on standard error that starts ``pspsim: error:`` and never repeats
a key; 130 and 143 interrupted by SIGINT or SIGTERM (one line, nothing
half-written).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys

from pspsim import __version__
from pspsim.cli import (
    calibrate_commands,
    crosscheck_command,
    esp_commands,
    overhead_command,
    params_command,
    plan_command,
    psp_commands,
    run_command,
    sweep_command,
)
from pspsim.cli.common import UserError
from pspsim.study.allocator import keep_freed_memory
from pspsim.wire.errors import WireError

DESCRIPTION = """\
pspsim compares Google's PSP Security Protocol with IPsec ESP and TLS on a
simulated datacenter fleet ('pspsim run'; many scenarios with confidence
intervals: 'pspsim sweep'; answers for a capacity planner: 'pspsim plan'),
from cost parameters with sources ('pspsim params show').  Packets are
really encrypted: 'pspsim psp' encrypts and decrypts pcap files exactly as
the public PSP reference implementation (google/psp) does, 'pspsim esp'
does ESP as Linux and Wireshark read it."""

#: Fifteen or more hex digits in pairs (separators allowed between pairs): what a key looks like; never echoed.
_KEY_LIKE = re.compile(r"(?<![0-9A-Za-z])(?:0[xX])?(?:[0-9A-Fa-f]{2}[\s:_-]?){7,}[0-9A-Fa-f]{1,2}(?![0-9A-Za-z])")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is so that every clean-up runs as for SIGINT."""


class OneLineParser(argparse.ArgumentParser):
    """argparse with its errors raised as :class:`UserError` (one line, exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        command = self.prog.removeprefix("pspsim").strip()
        raise UserError(f"{command}: {message}" if command else message)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
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
    plan_command.register(groups)
    return parser


def one_line(message: object) -> str:
    """``message`` on one line, with anything that looks like a key left out."""
    text = " ".join(str(message).split())
    return _KEY_LIKE.sub(_hide, text)


def _hide(match: re.Match[str]) -> str:
    """A key-like run is hidden unless it is a plain decimal number shorter than a 128-bit key."""
    run = match.group(0)
    if run.isdigit() and len(run) < 32:
        return run
    return "<key not shown>"


def _error(message: object, status: int) -> int:
    print(f"pspsim: error: {one_line(message)}", file=sys.stderr)
    return status


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    previous = None
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread: leave signals alone
        pass
    try:
        try:
            args = build_parser().parse_args(argv)
            keep_freed_memory()  # the window loop's temporaries are reused, not faulted in again
            return int(args.handler(args))
        except Terminated:
            return _error("terminated (SIGTERM); nothing was written", 143)
        except KeyboardInterrupt:
            return _error("interrupted; nothing was written", 130)
        except BrokenPipeError:  # the reader of standard output went away (pspsim ... | head)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return 141
        except (WireError, UnicodeError) as exc:
            return _error(exc, 2)
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            return _error(f"{where}{exc.strerror or exc}", 2)
        except MemoryError:
            return _error("out of memory; make the scenario smaller (see 'pspsim run --help')", 2)
        except (ValueError, TypeError, KeyError, IndexError, OverflowError, RecursionError) as exc:
            if os.environ.get("PSPSIM_TRACEBACK"):
                raise
            return _error(f"{type(exc).__name__}: {exc} (PSPSIM_TRACEBACK=1 shows where)", 2)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
