"""``pspsim sweep`` and ``pspsim sweep-report``: many scenarios and replications,
on all cores or a Dask cluster, resumable; confidence intervals and a figure."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pspsim.wire.errors import ConfigError

SWEEP_HELP = """\
Run every point of a sweep (a [sweep] table in a scenario file, or a sweep
file naming its base scenario) for every replication and variant, and write
DIR/runs/*.parquet (one file per finished run, one row: the point's fields
and the run's summary), DIR/timeseries/*.parquet, DIR/sweep.json,
DIR/failures.csv and DIR/summary.parquet (mean, std, n and 95% confidence
interval per point and variant).  Every point is validated first: a bad one
is one line naming the point and the field, exit status 2, nothing written.
Runs that raise are listed in failures.csv and the others go on; the exit
status is then 1.  Results are the same bytes whichever executor runs them."""

REPORT_HELP = """\
Print and plot a sweep's summary: each chosen metric's mean and 95%
confidence interval against a swept field, one line per variant (and per
value of the other swept fields)."""


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def register(groups: argparse._SubParsersAction) -> None:
    parser = groups.add_parser("sweep", help="run a sweep of scenarios with replications", description=SWEEP_HELP,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", type=Path, metavar="SWEEP.toml")
    parser.add_argument("-o", "--output", type=Path, metavar="DIR", required=True, help="results folder")
    parser.add_argument("-j", "--jobs", type=positive_int, metavar="N",
                        help="worker processes (default: all cores; 1 runs in this process); "
                             "with --dask local, the number of Dask workers")
    parser.add_argument("--dask", metavar="ADDRESS|local",
                        help="run on Dask: 'local' starts a LocalCluster, tcp://HOST:PORT joins a scheduler")
    parser.add_argument("--resume", action="store_true", help="continue a sweep in DIR: run only the runs not finished")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar; print only the output folder")
    parser.set_defaults(handler=sweep_command)

    report = groups.add_parser("sweep-report", help="confidence intervals and figure of a sweep",
                               description=REPORT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    report.add_argument("folder", type=Path, metavar="DIR")
    report.add_argument("--metric", action="append", metavar="M",
                        help="summary metric to show (repeatable; default: cores_per_100gbps)")
    report.add_argument("--x", metavar="FIELD", help="swept field on the x axis (default: the first)")
    report.add_argument("-o", "--output", type=Path, metavar="PNG", help="figure file (default: DIR/report.png)")
    report.set_defaults(handler=sweep_report_command)


def _need_extra() -> None:
    try:
        import scipy  # noqa: F401
        import tqdm  # noqa: F401
    except ImportError:
        raise ConfigError("sweeps need the sweep extra: pip install 'pspsim[sweep]'") from None


def sweep_command(args: argparse.Namespace) -> int:
    _need_extra()
    from pspsim.study.executors import default_jobs, open_executor
    from pspsim.study.sweep import read_sweep
    from pspsim.study.sweep_runner import check_sweep_folder, run_sweep, sweep_record

    sweep = read_sweep(args.sweep)
    check_sweep_folder(args.output, sweep_record(sweep), args.resume)  # before any work
    runs = len(sweep.points) * sweep.replications * len(sweep.variants)
    if not args.quiet:
        where = (f"Dask ({args.dask})" if args.dask else "this process" if args.jobs == 1
                 else f"{args.jobs or default_jobs()} worker processes")
        print(f"{sweep.name}: {len(sweep.points)} points x {sweep.replications} replications x "
              f"{len(sweep.variants)} variants = {runs} runs on {where}", file=sys.stderr)
    with open_executor(args.jobs, args.dask) as executor:
        results = run_sweep(sweep, args.output, executor, resume=args.resume, progress=not args.quiet)
    if len(results.failures):
        print(f"pspsim: {len(results.failures)} of {runs} runs failed; see {args.output / 'failures.csv'}",
              file=sys.stderr)
    print(f"wrote {args.output}")
    return 1 if len(results.failures) else 0


def sweep_report_command(args: argparse.Namespace) -> int:
    import pandas as pd

    from pspsim.sweep_figure import sweep_figure

    folder: Path = args.folder
    try:
        record = json.loads((folder / "sweep.json").read_text())
        summary = pd.read_parquet(folder / "summary.parquet")
    except FileNotFoundError as exc:
        raise ConfigError(f"{folder}: not a finished sweep folder (no {Path(exc.filename).name})") from None
    fields = [f["field"] for f in record["fields"]]
    units = {f["field"]: f["unit"] for f in record["fields"]}
    x = args.x or fields[0]
    if x not in fields:
        raise ConfigError(f"--x {x}: not a swept field (swept: {', '.join(fields)})")
    available = [c.removesuffix("_mean") for c in summary.columns if c.endswith("_mean")
                 and f"{c.removesuffix('_mean')}_ci_low" in summary.columns]
    metrics = args.metric or ["cores_per_100gbps" if "cores_per_100gbps" in available else available[0]]
    for metric in metrics:
        if metric not in available:
            raise ConfigError(f"--metric {metric}: not in {folder / 'summary.parquet'} (has: {', '.join(available)})")
    if summary.empty:
        raise ConfigError(f"{folder}: no finished runs to report")
    out = args.output or folder / "report.png"
    sweep_figure(summary, x, units, [f for f in fields if f != x], metrics, out, record["name"])
    table = summary[["point", *fields, "variant", "replications"]].copy()
    for metric in metrics:
        half = (summary[f"{metric}_ci_high"] - summary[f"{metric}_ci_low"]) / 2
        table[metric] = [f"{m:.4g} ± {h:.2g}" if h == h else f"{m:.4g}" for m, h in zip(summary[f"{metric}_mean"], half)]
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(table.to_string(index=False))
    print(f"wrote {out}")
    return 0
