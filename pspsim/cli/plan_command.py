"""``pspsim plan``: the capacity planner's answers for one scenario (see :mod:`pspsim.study.plan`)."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path

from pspsim.cli.common import UserError
from pspsim.cli.outputs import Outputs
from pspsim.cli.sweep_command import positive_int

PLAN_HELP = """\
Answer a capacity planner's questions for the fleet and workload of
SCENARIO.toml, against the variant run today (--current), with 95%
confidence intervals over replications: cores per host and fleet and the
saving; NIC state against each table's capacity; the shortest PSP rotation
period with no stale connections; the reconnect storm at that period under
each rotation schedule; the minimum NIC command rate that keeps set-up delay
p99 under --setup-p99 during the worst rotation; the connections per host
or fan-out at which each offload table overflows.  Boundaries are found by
a coarse sweep and bisection through the sweep machinery (-j, --dask).
Writes DIR/plan.md, DIR/plan.json, DIR/plan_runs.csv (every run) and
DIR/plan.png, and prints a summary.  Keep the scenario small (tens of
hosts, under an hour): the plan runs it about a hundred times."""


def _milliseconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of milliseconds: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of milliseconds: {text!r}")
    return value


def register(groups: argparse._SubParsersAction) -> None:
    parser = groups.add_parser("plan", help="capacity plan: cores, NIC headroom, safe rotation, command rate",
                               description=PLAN_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", type=Path, metavar="SCENARIO.toml")
    parser.add_argument("-o", "--output", type=Path, metavar="DIR", required=True, help="folder for the plan")
    parser.add_argument("--current", default="ipsec-packet-offload", metavar="VARIANT",
                        help="the variant the fleet runs today (default: ipsec-packet-offload)")
    parser.add_argument("--replications", type=positive_int, default=3, metavar="N",
                        help="replications per run, for the confidence intervals (default: 3)")
    parser.add_argument("--setup-p99", type=_milliseconds, default=10.0, metavar="MS",
                        help="target for the connection set-up delay p99, in ms (default: 10)")
    parser.add_argument("-j", "--jobs", type=positive_int, metavar="N",
                        help="worker processes (default: all cores; 1 runs in this process)")
    parser.add_argument("--dask", metavar="ADDRESS|local",
                        help="run on Dask: 'local' starts a LocalCluster, tcp://HOST:PORT joins a scheduler")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines; only the summary")
    parser.set_defaults(handler=plan_command)


def plan_command(args: argparse.Namespace) -> int:
    from pspsim.cli.sweep_command import _need_extra
    from pspsim.scenario import VARIANTS, load_scenario
    from pspsim.study.executors import open_executor
    from pspsim.study.plan import PlanOptions, make_plan
    from pspsim.study.plan_report import plan_json, plan_markdown, summary_text
    from pspsim.study.runner import resolve_parameters

    _need_extra()
    if args.current not in VARIANTS:
        raise UserError(f"plan: --current: unknown variant {args.current!r} (one of {', '.join(VARIANTS)})")
    scenario = load_scenario(args.scenario)
    params = resolve_parameters(scenario)
    out: Path = args.output
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    outputs = Outputs([args.scenario])
    names = {n: outputs.add(out / n) for n in ("plan.md", "plan.json", "plan_runs.csv", "plan.png")}
    opts = PlanOptions(current=args.current, replications=args.replications, setup_p99_s=args.setup_p99 / 1000)
    progress = None if args.quiet else (lambda message: print(f"plan: {message}", file=sys.stderr, flush=True))
    with open_executor(args.jobs, args.dask) as executor:
        result = make_plan(scenario, opts, executor, progress)

    from pspsim.figures import save_figure
    from pspsim.figures.plan import plan_figure

    figure = plan_figure(result.answers)
    texts = {"plan.json": plan_json(result.answers, scenario, params),
             "plan.md": plan_markdown(result.answers, scenario, params, ["plan.png"])}

    def text(name: str) -> Callable[[Path], None]:
        def write(path: Path) -> None:
            path.write_text(texts[name])
        return write

    def table(path: Path) -> None:
        result.runs.to_csv(path, index=False)

    def picture(path: Path) -> None:
        save_figure(figure, path)

    outputs.commit({names["plan.json"]: text("plan.json"), names["plan.md"]: text("plan.md"),
                    names["plan_runs.csv"]: table, names["plan.png"]: picture})
    print(summary_text(result.answers), end="")
    print(f"wrote {out}/plan.md, plan.json, plan_runs.csv, plan.png")
    return 0
