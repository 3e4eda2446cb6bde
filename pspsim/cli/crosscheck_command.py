"""``pspsim crosscheck``: the packet tier against the fleet model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pspsim.cli.outputs import Outputs
from pspsim.cli.run_command import add_force, check_budget, scenario_inputs
from pspsim.scenario import load_scenario
from pspsim.study.crosscheck import crosscheck

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
    add_force(parser)
    parser.set_defaults(handler=crosscheck_command)


def crosscheck_command(args: argparse.Namespace) -> int:
    import pandas as pd

    scenario = load_scenario(args.scenario)
    outputs = Outputs(scenario_inputs(args.scenario, scenario))
    if args.output:
        outputs.add(args.output)
    check_budget(scenario, args.force, packets=True)
    report = crosscheck(scenario, progress=lambda line: print(f"  {line}", file=sys.stderr))
    if args.output:
        from pspsim.files import write_csv

        outputs.commit({args.output: lambda tmp: write_csv(report, tmp)})
    with pd.option_context("display.width", 250, "display.max_colwidth", 90):
        print(report.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    outside = report[~report["within"]]
    print(f"{len(report) - len(outside)} of {len(report)} comparisons within tolerance")
    return 1 if len(outside) else 0
