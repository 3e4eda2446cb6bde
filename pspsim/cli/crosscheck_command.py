"""``pspsim crosscheck``: the packet tier against the fleet model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pspsim.cli.capture import prepare_output
from pspsim.study.crosscheck import crosscheck
from pspsim.scenario import load_scenario

HELP = """\
Run the scenario's workload through both tiers for [packets] duration (the
whole fleet at packet level, really encrypted, with the packet tier's own
control plane; and the fleet model), and report per variant the rates
(throughput, CPU cores, NIC entries, overhead, drop fraction) and the event
counts (handshakes, re-keys of each kind, stale events, NIC commands, offload
fallbacks and failures, connections lost) from both, with a tolerance from
sampling noise and whether the difference is within it.  Exit status 1 if
any comparison is outside its tolerance.  experiments/crosscheck/ holds the
shipped scenarios."""


def register(groups: argparse._SubParsersAction) -> None:
    parser = groups.add_parser("crosscheck", help="compare the packet tier with the fleet model",
                               description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", type=Path, metavar="SCENARIO.toml")
    parser.add_argument("-o", "--output", type=Path, metavar="CSV", help="also write the report as CSV")
    parser.set_defaults(handler=crosscheck_command)


def crosscheck_command(args: argparse.Namespace) -> int:
    import pandas as pd

    scenario = load_scenario(args.scenario)
    if args.output:
        prepare_output(args.output)
    report = crosscheck(scenario, progress=lambda line: print(f"  {line}", file=sys.stderr))
    with pd.option_context("display.width", 250, "display.max_colwidth", 90):
        print(report.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    outside = report[~report["within"]]
    print(f"{len(report) - len(outside)} of {len(report)} comparisons within tolerance")
    if args.output:
        from pspsim.figures import write_csv

        write_csv(report, args.output)
    return 1 if len(outside) else 0
