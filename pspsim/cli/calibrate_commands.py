"""``pspsim calibrate`` and ``pspsim validate``: fit the cost model to measurements, then check it."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from pspsim.cli.common import UserError
from pspsim.cli.outputs import Outputs

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


def _measurement_files(folder: Path) -> list[Path]:
    """Every file of a measurement folder (the outputs must not overwrite any of them)."""
    if not folder.is_dir():
        return [folder]
    return [p for p in folder.rglob("*") if p.is_file()][:100_000]


def _load_measurements(folder: Path):
    """The measurement folder, with errors its parsers leave raw (binary files,
    numbers such as '1.2.3k') turned into one line naming the folder."""
    from pspsim.calibration.measurements import load_measurements

    if not folder.exists():
        raise UserError(f"{folder}: no such measurement folder")
    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder (a measurement folder holds measurements.toml)")
    _check_finite(folder / "measurements.toml")
    try:
        return load_measurements(folder)
    except UnicodeDecodeError:
        raise UserError(f"{folder}: a measurement file is not text (binary data?)") from None
    except IsADirectoryError as exc:
        raise UserError(f"{exc.filename}: is a folder, expected a measurement file") from None
    except OSError as exc:
        raise UserError(f"{exc.filename or folder}: cannot read: {exc.strerror}") from None
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        if isinstance(exc, UserError) or type(exc).__module__.startswith("pspsim"):
            raise
        raise UserError(f"{folder}: a measurement file holds a value that cannot be read: {exc}") from None


def _check_finite(index: Path) -> None:
    """Refuse NaN and infinity anywhere in measurements.toml (TOML has 'nan', 'inf', and 1e400)."""
    import tomllib

    if index.exists() and not index.is_dir() and (not index.is_file() or index.stat().st_size > 16 << 20):
        raise UserError(f"{index}: not a measurement index (a regular file of at most 16 MiB)")
    try:
        data = tomllib.loads(index.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return  # load_measurements reports these, naming the file

    def walk(value: object, where: str) -> None:
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{index}: {where}: must be a finite number, got {value}")
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{where}.{key}" if where else str(key))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, f"{where}[{i}]")

    walk(data, "")


def _check_fitted(params, folder: Path) -> None:
    """A measurement file with 'nan' or 'inf' in it (which float() reads) gives non-finite fits."""
    for p in params.parameters.values():
        if not math.isfinite(p.value):
            raise UserError(f"{folder}: the measurements give {p.name} = {p.value}; "
                            "a measurement file holds nan or inf")


def calibrate_command(args: argparse.Namespace) -> int:
    from pspsim.calibration.fit import calibrate, write_parameter_set
    from pspsim.calibration.identify import format_estimates, identifiability
    from pspsim.costs.params import load_parameter_set

    outputs = Outputs(_measurement_files(args.measurements))
    base_path = Path(args.base)
    if base_path.suffix:
        outputs.add_input(base_path)
    if args.cross_validate:
        return _cross_validate(args, outputs)
    outputs.add(args.output)
    measurements = _load_measurements(args.measurements)
    base = load_parameter_set(args.base)
    result = calibrate(measurements, base)
    _check_fitted(result.parameters, args.measurements)
    outputs.commit({args.output: lambda tmp: write_parameter_set(result.parameters, tmp)})
    print(format_estimates(identifiability(result, measurements)))
    print(f"\nunconstrained (kept from {base.name}): {', '.join(result.unconstrained)}")
    for line in result.not_fitted:
        print(f"read but not fitted: {line}")
    print(f"wrote {args.output}")
    return 0


def _cross_validate(args: argparse.Namespace, outputs: Outputs) -> int:
    from pspsim.calibration.crossval import cross_validate, format_cross_validation
    from pspsim.calibration.fit import write_parameter_set
    from pspsim.calibration.identify import format_estimates, identifiability
    from pspsim.costs.params import load_parameter_set
    from pspsim.figures import save_figure, validation_figure
    from pspsim.files import write_csv

    out = args.output
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder (--cross-validate writes a folder)")
    params, points, ident_csv, png = (outputs.add(out / name) for name in
                                      ("params.toml", "cross_validation.csv", "identifiability.csv", "validation.png"))
    measurements = _load_measurements(args.measurements)
    base = load_parameter_set(args.base)
    result = cross_validate(measurements, base)
    _check_fitted(result.full.parameters, args.measurements)
    ident = identifiability(result.full, measurements)
    outputs.commit({params: lambda tmp: write_parameter_set(result.full.parameters, tmp),
                    points: lambda tmp: write_csv(result.points, tmp),
                    ident_csv: lambda tmp: write_csv(ident.table, tmp),
                    png: lambda tmp: save_figure(validation_figure(result.validation), tmp)})
    print(format_estimates(ident))
    print(f"\nunconstrained (kept from {base.name}): {', '.join(result.full.unconstrained)}\n")
    print(format_cross_validation(result))
    print(f"wrote {out}/params.toml, cross_validation.csv, identifiability.csv, validation.png")
    return 0


def validate_command(args: argparse.Namespace) -> int:
    import pandas as pd

    from pspsim.calibration.fit import validate
    from pspsim.costs.params import load_parameter_set

    outputs = Outputs([*_measurement_files(args.measurements), args.params if args.params.suffix else None])
    if args.output is not None:
        if args.output.exists() and not args.output.is_dir():
            raise UserError(f"{args.output}: exists and is not a folder")
        csv, png = outputs.add(args.output / "validation.csv"), outputs.add(args.output / "validation.png")
    measurements = _load_measurements(args.measurements)
    params = load_parameter_set(args.params)
    table = validate(measurements, params)
    numbers = table.select_dtypes("number")
    if not numbers.apply(lambda column: column.map(math.isfinite)).all().all():
        raise UserError(f"{args.measurements}: validation gives non-finite numbers; "
                        "a measurement file holds nan or inf")
    if args.output is not None:
        from pspsim.figures import save_figure, validation_figure
        from pspsim.files import write_csv

        outputs.commit({csv: lambda tmp: write_csv(table, tmp),
                        png: lambda tmp: save_figure(validation_figure(table), tmp)})
    with pd.option_context("display.width", 220, "display.max_colwidth", 60):
        print(table.drop(columns=["source"]).to_string(index=False, float_format=lambda x: f"{x:.3g}"))
    errors = table["relative_error"].abs()
    print(f"\nrelative error: mean {errors.mean():.1%}, max {errors.max():.1%} over {len(table)} comparisons")
    if args.output is not None:
        print(f"wrote {args.output}/validation.csv, validation.png")
    return 0
