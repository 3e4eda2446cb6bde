"""``pspsim params show [SET]``: every cost parameter with its unit, kind and source."""

from __future__ import annotations

import argparse

from pspsim.costs.params import DEFAULT_SET, SETS_DIR, load_parameter_set


def register(groups: argparse._SubParsersAction) -> None:
    params = groups.add_parser("params", help="cost parameter sets",
                               description="Cost parameter sets: every number the model uses, with its source.")
    commands = params.add_subparsers(dest="params_command", metavar="SUBCOMMAND", required=True)
    show = commands.add_parser("show", help="print a parameter set",
                               description="Print a parameter set (a shipped name or a TOML path).")
    show.add_argument("set", nargs="?", default=DEFAULT_SET, metavar="SET",
                      help=f"shipped set name or path to a TOML file (default {DEFAULT_SET}; shipped: "
                           + ", ".join(sorted(p.stem for p in SETS_DIR.glob("*.toml"))) + ")")
    show.add_argument("--kind", choices=("measured", "vendor", "spec", "derived", "assumed"),
                      help="only parameters of this kind (e.g. 'assumed': what to measure first)")
    show.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    show.set_defaults(handler=show_command)


def show_command(args: argparse.Namespace) -> int:
    import pandas as pd

    params = load_parameter_set(args.set)
    table = pd.DataFrame(params.rows())
    if args.kind:
        table = table[table["kind"] == args.kind]
    if args.csv:
        print(table.to_csv(index=False), end="")
        return 0
    print(f"{params.name}: {params.description}\n")
    with pd.option_context("display.max_colwidth", 70, "display.width", 250, "display.max_rows", 500):
        print(table.to_string(index=False, formatters={"value": "{:,.4g}".format}))
    return 0
