"""``pspsim run``: simulate a scenario file for every variant it names."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from pspsim.cli.sweep_command import positive_int
from pspsim.study.executors import open_executor
from pspsim.study.runner import check_results_folder, run_scenario, write_results
from pspsim.scenario import load_scenario

HELP = """\
Simulate the fleet, workload and key management that SCENARIO.toml
describes, once per protocol variant (and replication), and write
timeseries.parquet, summary.parquet, manifest.json and comparison.png to
DIR (default: results/<scenario name>); an earlier results folder there is
replaced, any other folder is refused.  The scenario is validated first:
an unknown key, a wrong type or an impossible value is reported as one line
naming the field, with exit status 2 and nothing written."""

SHOWN = ["variant", "cores_per_100gbps", "nic_entries_per_host_peak", "host_state_bytes_per_host_mean",
         "handshakes_per_s", "rekeys_per_s", "command_delay_p99_us", "connections_lost", "achieved_fraction"]


def register(groups: argparse._SubParsersAction) -> None:
    parser = groups.add_parser("run", help="simulate a scenario file", description=HELP,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", type=Path, metavar="SCENARIO.toml")
    parser.add_argument("-o", "--output", type=Path, metavar="DIR",
                        help="results folder; an earlier results folder there is replaced, anything else is refused")
    parser.add_argument("--no-figure", action="store_true", help="skip comparison.png")
    parser.add_argument("--pcap", type=int, metavar="HOST",
                        help="also run the packet tier (real encrypted packets) for the connections of HOST, or "
                             "of [packets] hosts, over [packets] duration, and write what HOST sends and receives "
                             "to DIR/pcap/<variant>-hostHOST.pcap (PSP: with HOST's device keys per rotation period, "
                             "for 'pspsim psp decrypt'; open in Wireshark with wireshark/psp.lua)")
    parser.add_argument("-j", "--jobs", type=positive_int, default=1, metavar="N",
                        help="run variants and replications in N worker processes (default 1); same results")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the output folder")
    parser.set_defaults(handler=run_command)


def run_command(args: argparse.Namespace) -> int:
    scenario = load_scenario(args.scenario)
    out = args.output or Path("results") / scenario.run.name
    check_results_folder(out)  # before any work
    progress = None if args.quiet else (lambda line: print(f"  {line}", file=sys.stderr))
    with open_executor(args.jobs) as executor:
        parallel = None if args.jobs == 1 else executor
        if args.pcap is None:
            results = run_scenario(scenario, progress=progress, executor=parallel)
            write_results(results, out, figure=not args.no_figure)
        else:
            with tempfile.TemporaryDirectory() as captures:
                results = run_scenario(scenario, progress=progress, capture_host=args.pcap, capture_dir=captures,
                                       executor=parallel)
                write_results(results, out, figure=not args.no_figure, captures=captures)
    if not args.quiet:
        import pandas as pd

        with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:,.3g}".format):
            print(results.summary[SHOWN].to_string(index=False))
        print(f"wall time {results.manifest['wall_time_s']:.1f} s")
    print(f"wrote {out}")
    return 0
