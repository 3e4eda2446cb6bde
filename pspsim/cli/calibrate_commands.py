"""``pspsim calibrate`` and ``pspsim validate``: fit the cost model to measurements, then check it."""

from __future__ import annotations

import argparse
from pathlib import Path

from pspsim.cli.capture import prepare_output
from pspsim.cli.common import UserError

CALIBRATE_HELP = """\
Fit the cost model to a measurement folder (measurements.toml plus the raw
outputs of openssl speed, iperf3 --json, mpstat -o JSON, perf stat -x, and
ethtool -S; the format is in the README) and write a complete parameter set:
fitted parameters become kind 'measured' with their uncertainty in the
source, the rest keep the base set's values.  Prints each estimate with its
standard error and relative residual, and the parameters left unconstrained.
Estimates whose standard error exceeds a third of their value, or that have
none, are flagged and shown in parentheses.

With --cross-validate, -o names a folder: every group of measurements (one
run configuration, or one point of a sweep) is held out in turn, the whole
fit is redone without it, and the held-out points are predicted.  Prints the
in-sample and out-of-sample relative error per point and their mean and
max, and writes DIR/params.toml (the fit on all points),
DIR/cross_validation.csv, DIR/identifiability.csv and DIR/validation.png."""

VALIDATE_HELP = """\
Re-run every measured configuration through the simulator's data plane with
PARAMS.toml and report predicted against measured (CPU cores per run;
throughput against NIC state) with the relative error, as a table, and with
-o as validation.csv and validation.png."""


def register(groups: argparse._SubParsersAction) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    cal = groups.add_parser("calibrate", help="fit the cost model to measurements", description=CALIBRATE_HELP,
                            formatter_class=fmt)
    cal.add_argument("measurements", type=Path, metavar="MEASUREMENTS", help="folder with measurements.toml")
    cal.add_argument("-o", "--output", type=Path, required=True, metavar="PARAMS.toml",
                     help="the parameter set to write (with --cross-validate: a folder)")
    cal.add_argument("--base", default="cx7-x86-2026", metavar="SET", help="parameter set to start from")
    cal.add_argument("--cross-validate", action="store_true",
                     help="leave-one-group-out cross-validation; -o is then a folder")
    cal.set_defaults(handler=calibrate_command)

    val = groups.add_parser("validate", help="compare the model with measurements", description=VALIDATE_HELP,
                            formatter_class=fmt)
    val.add_argument("measurements", type=Path, metavar="MEASUREMENTS")
    val.add_argument("--params", type=Path, required=True, metavar="PARAMS.toml",
                     help="a parameter set file (from calibrate) or a shipped set name")
    val.add_argument("-o", "--output", type=Path, metavar="DIR", help="write validation.csv and validation.png")
    val.set_defaults(handler=validate_command)


def calibrate_command(args: argparse.Namespace) -> int:
    from pspsim.calibration.fit import calibrate, write_parameter_set
    from pspsim.calibration.identify import format_estimates, identifiability
    from pspsim.calibration.measurements import load_measurements
    from pspsim.costs.params import load_parameter_set

    measurements = load_measurements(args.measurements)
    base = load_parameter_set(args.base)
    if args.cross_validate:
        return _cross_validate(args, measurements, base)
    prepare_output(args.output)
    result = calibrate(measurements, base)
    print(format_estimates(identifiability(result, measurements)))
    print(f"\nunconstrained (kept from {base.name}): {', '.join(result.unconstrained)}")
    for line in result.not_fitted:
        print(f"read but not fitted: {line}")
    write_parameter_set(result.parameters, args.output)
    print(f"wrote {args.output}")
    return 0


def _cross_validate(args: argparse.Namespace, measurements, base) -> int:
    from pspsim.calibration.crossval import cross_validate, format_cross_validation
    from pspsim.calibration.fit import write_parameter_set
    from pspsim.calibration.identify import format_estimates, identifiability
    from pspsim.figures import save_figure, validation_figure
    from pspsim.files import write_csv

    out = args.output
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder (--cross-validate writes a folder)")
    result = cross_validate(measurements, base)
    ident = identifiability(result.full, measurements)
    print(format_estimates(ident))
    print(f"\nunconstrained (kept from {base.name}): {', '.join(result.full.unconstrained)}\n")
    print(format_cross_validation(result))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{out}: cannot create folder: {exc.strerror}") from None
    write_parameter_set(result.full.parameters, out / "params.toml")
    write_csv(result.points, out / "cross_validation.csv")
    write_csv(ident.table, out / "identifiability.csv")
    save_figure(validation_figure(result.validation), out / "validation.png")
    print(f"wrote {out}/params.toml, cross_validation.csv, identifiability.csv, validation.png")
    return 0


def validate_command(args: argparse.Namespace) -> int:
    import pandas as pd

    from pspsim.calibration.fit import validate
    from pspsim.calibration.measurements import load_measurements
    from pspsim.costs.params import load_parameter_set

    measurements = load_measurements(args.measurements)
    params = load_parameter_set(args.params)
    table = validate(measurements, params)
    with pd.option_context("display.width", 220, "display.max_colwidth", 60):
        print(table.drop(columns=["source"]).to_string(index=False, float_format=lambda x: f"{x:.3g}"))
    errors = table["relative_error"].abs()
    print(f"\nrelative error: mean {errors.mean():.1%}, max {errors.max():.1%} over {len(table)} comparisons")
    if args.output:
        from pspsim.figures import save_figure, validation_figure
        from pspsim.files import write_csv

        args.output.mkdir(parents=True, exist_ok=True)
        write_csv(table, args.output / "validation.csv")
        save_figure(validation_figure(table), args.output / "validation.png")
        print(f"wrote {args.output}/validation.csv, validation.png")
    return 0
