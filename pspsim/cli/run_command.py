"""``pspsim run``: simulate a scenario file for every variant it names."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from pspsim.cli.common import UserError
from pspsim.cli.outputs import check_writable_folder, inside
from pspsim.cli.sweep_command import positive_int
from pspsim.costs.params import SETS_DIR
from pspsim.scenario import Scenario, load_scenario
from pspsim.study import budget
from pspsim.study.executors import open_executor
from pspsim.study.runner import check_results_folder, run_scenario, write_results

HEARTBEAT_S = 30.0  # a run says how far it has got this often (unless -q)

HELP = f"""\
Simulate the fleet, workload and key management that SCENARIO.toml
describes, once per protocol variant (and replication), and write
timeseries.parquet, summary.parquet, manifest.json and comparison.png to
DIR (default: results/<scenario name>); an earlier results folder there is
replaced as a whole (the new results are written beside it and swapped in
at the end; a run that fails or is interrupted leaves the earlier results
as they were), any other folder is refused.  The scenario is validated
first: an unknown key, a wrong type or an impossible value is reported as
one line naming the field, with exit status 2 and nothing written.  A run
estimated to need more memory than this machine has, or more than
{budget.MAX_HOURS:g} hours, is refused in one line naming the setting to change;
--force runs it anyway.  With -j N, each worker process holds one variant
run: when N runs at once would not fit in memory, fewer workers are used
(said on stderr).  Unless -q, each run says on stderr when it is done and,
every {HEARTBEAT_S:g} s while it runs, how much of the simulated time it has covered."""

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
    parser.add_argument("-j", "--jobs", type=positive_int, default=None, metavar="N",
                        help="run variants and replications in N worker processes; same results (default: one "
                             "per core for runs estimated to take more than a minute, else 1; never more than "
                             "fit in memory at once)")
    parser.add_argument("--pcap-variants", default="psp", metavar="LIST",
                        help="comma-separated variants to capture with --pcap, or 'all' (default: psp)")
    parser.add_argument("--pcap-max-bytes", type=byte_count, default=64 << 30, metavar="N",
                        help="refuse, before any work, a capture estimated above N bytes (suffixes K, M, G; "
                             "default 64G); the capture must also fit the free space of the output's file system")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the output folder")
    add_force(parser)
    parser.set_defaults(handler=run_command)


AUTO_PARALLEL_S = 60.0  # estimated serial seconds above which `run` uses every core by default


def add_force(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true",
                        help="run even when the estimate says the run needs more memory or time than this machine has")


def check_budget(scenario: Scenario, force: bool, packets: bool = False, jobs: int | None = 1) -> int:
    """Refuse (one line) a run that cannot fit this machine, unless ``force``; returns the worker
    processes to use: ``jobs``, or fewer (said on stderr) when that many runs at once would not
    fit in memory.  ``jobs=None``: one per core if the run is estimated to take over
    ``AUTO_PARALLEL_S`` (below that, starting workers costs more than it saves), silently
    lowered to what fits."""
    auto = jobs is None
    if jobs is None:
        from pspsim.study.executors import default_jobs

        jobs = default_jobs() if budget.estimate(scenario, packets).seconds > AUTO_PARALLEL_S else 1
    if force:
        return jobs
    fitting = budget.jobs_that_fit(scenario, jobs, packets)
    budget.check_budget(scenario, packets=packets, jobs=fitting)
    if fitting < jobs and not auto:
        need = budget.estimate(scenario, packets, 1).memory_bytes
        print(f"pspsim: -j {jobs} lowered to -j {fitting}: each variant run needs about {budget.bytes_text(need)} "
              f"and {budget.bytes_text(budget.available_memory())} is available", file=sys.stderr)
    return fitting


def scenario_inputs(path: Path, scenario: Scenario) -> list[Path]:
    """The files a scenario reads: itself and its parameter-set file, if a path."""
    inputs = [path]
    named = Path(scenario.costs.parameter_set)
    inputs.append(named if named.suffix else SETS_DIR / f"{named}.toml")
    return inputs
def _comparison(timeseries, path: Path) -> None:
    from pspsim.figures import comparison_figure  # matplotlib only when a figure is drawn

    comparison_figure(timeseries, path)


def byte_count(text: str) -> int:
    """An argparse type for a byte count: 123, 64K, 512M, 8G."""
    units = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([kKmMgGtT]?)(?:i?[bB])?\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a byte count: {text!r} (examples: 1000000, 512M, 8G)")
    return int(float(match.group(1)) * units[match.group(2).lower()])


def _stop(signum, frame) -> None:
    raise SystemExit(128 + signum)


def _size(n: float) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} bytes"


def check_capture(scenario, args: argparse.Namespace, out: Path) -> list[str]:
    """The variants to capture; refuses (one line, exit 2) a capture that would not fit."""
    from pspsim.model.streams import RandomStreams, replication_sequence
    from pspsim.model.workload import generate_workload
    from pspsim.packets.sample import estimate_capture
    from pspsim.study.runner import resolve_parameters

    if not 0 <= args.pcap < scenario.fleet.hosts:
        raise UserError(f"--pcap host {args.pcap} is not in the fleet (0..{scenario.fleet.hosts - 1})")
    names = scenario.run.variants if args.pcap_variants == "all" else \
        [n.strip() for n in args.pcap_variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in scenario.run.variants]
    if unknown or not names:
        raise UserError(f"--pcap-variants: {', '.join(unknown) or 'nothing'} is not among the scenario's "
                          f"variants ({', '.join(scenario.run.variants)})")
    costs = resolve_parameters(scenario).costs()
    streams = RandomStreams.from_sequence(replication_sequence(scenario.run.seed, 0))
    workload = generate_workload(scenario, streams.workload)
    packets = size = 0
    for name in names:
        p, b = estimate_capture(scenario, workload, args.pcap, name, costs)
        packets, size = packets + p, size + b
    free = shutil.disk_usage(out.parent if out.parent.exists() else Path(".")).free
    if size > args.pcap_max_bytes:
        raise UserError(f"--pcap {args.pcap}: the capture would hold about {packets:,} packets, "
                          f"{_size(size)}, above --pcap-max-bytes {_size(args.pcap_max_bytes)}: "
                          f"raise --pcap-max-bytes, or shorten [packets] duration or max_connections")
    if size + (1 << 30) > free:  # the capture, with a GiB to spare
        raise UserError(f"--pcap {args.pcap}: the capture would need about {_size(size)} and "
                          f"{_size(free)} is free under {out.parent}: shorten [packets] duration or "
                          f"max_connections, or choose another -o")
    return names


def run_command(args: argparse.Namespace) -> int:
    scenario = load_scenario(args.scenario)
    out = args.output or Path("results") / scenario.run.name
    check_results_folder(out)  # before any work
    for source in scenario_inputs(args.scenario, scenario):
        if out.exists() and inside(source, out):
            raise UserError(f"{out}: replacing it would delete the input {source}")
    check_writable_folder(out.parent, out)
    if args.pcap is not None and not 0 <= args.pcap < scenario.fleet.hosts:
        raise UserError(f"--pcap host {args.pcap} is not in the fleet (0..{scenario.fleet.hosts - 1})")
    from pspsim.study.runner import resolve_parameters

    params = resolve_parameters(scenario)  # a bad parameter set fails here, before any work
    jobs = check_budget(scenario, args.force, packets=args.pcap is not None, jobs=args.jobs)
    progress = None if args.quiet else (lambda line: print(f"  {line}", file=sys.stderr))
    if args.pcap is None:
        variants: list[str] = []
    else:
        variants = check_capture(scenario, args, out)
    with open_executor(jobs) as executor:
        parallel = None if jobs == 1 else executor
        if args.pcap is None:
            results = run_scenario(scenario, params, progress=progress, executor=parallel,
                                   heartbeat_s=None if args.quiet else HEARTBEAT_S)
            write_results(results, out, figure=None if args.no_figure else _comparison)
        else:
            signal.signal(signal.SIGTERM, _stop)  # clean the temporary capture folder up on a polite stop
            out.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix=f".{out.name}.pcap.", dir=out.parent) as captures:
                os.chmod(captures, 0o755)  # becomes DIR/pcap
                results = run_scenario(scenario, params, progress=progress, capture_host=args.pcap,
                                       capture_dir=captures, capture_variants=variants, executor=parallel,
                                       heartbeat_s=None if args.quiet else HEARTBEAT_S)
                write_results(results, out, figure=None if args.no_figure else _comparison,
                              captures=captures)
    if not args.quiet:
        import pandas as pd

        with pd.option_context("display.width", 200, "display.max_columns", 20,
                               "display.float_format", "{:,.3g}".format):
            print(results.summary[SHOWN].to_string(index=False))
        print(f"wall time {results.manifest['wall_time_s']:.1f} s")
    print(f"wrote {out}")
    return 0
