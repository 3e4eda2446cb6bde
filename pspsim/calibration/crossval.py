"""Leave-one-group-out cross-validation of a calibration.

A fit judged on the points it was fitted to says little: with enough free
parameters any set of points is reproduced.  Here every group of
measurements (one run configuration, its repeats included, or one point of
a sweep such as a tunnel count; see ``group`` in
:mod:`pspsim.calibration.measurements`) is held out in turn, the whole
calibration is redone without it by :func:`pspsim.calibration.fit.calibrate`
(the same code, every parameter refitted), and the held-out points are
predicted by :func:`pspsim.calibration.fit.validate` with the refitted set.
Each point thus gets an in-sample error (full fit) and an out-of-sample
error (fit that never saw it).

AES-GCM speeds and control-plane samples are always kept in the fit: no
point of the validation table is predicted from them.  When holding out a
group leaves a parameter with no data, the refit keeps the base set's value
for it, and the point's ``refit_unconstrained`` column names it: such a
point is predicted by the base set, which is what the data supports.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from pspsim.calibration.fit import Calibration, calibrate, validate
from pspsim.calibration.identify import identifiability
from pspsim.calibration.measurements import Measurements
from pspsim.costs.params import ParameterSet

COLUMNS = ["group", "kind", "variant", "configuration", "metric", "measured", "predicted_in_sample",
           "in_sample_error", "predicted_out_of_sample", "out_of_sample_error", "refit_unconstrained"]


@dataclass(frozen=True)
class CrossValidation:
    points: pd.DataFrame  # one row per validated point, COLUMNS
    summary: dict[str, float]
    validation: pd.DataFrame  # the full fit's validation table (with predicted_stderr) + predicted_out_of_sample
    full: Calibration
    refits: dict[str, Calibration]  # by held-out group


def without(meas: Measurements, group: str) -> Measurements:
    """The measurements less one group's runs and state points."""
    return replace(meas, runs=[r for r in meas.runs if r.group != group],
                   state_scaling=[p for p in meas.state_scaling if p.group != group])


def cross_validate(meas: Measurements, base: ParameterSet) -> CrossValidation:
    full = calibrate(meas, base)
    inside = validate(meas, full.parameters)
    fitted = {e.parameter for e in full.estimates}
    outside = pd.Series(np.nan, index=inside.index)
    lost = pd.Series("", index=inside.index)
    refits = {}
    for group in dict.fromkeys(inside["group"]):
        refit = calibrate(without(meas, group), base)
        refits[group] = refit
        held = inside["group"] == group
        outside[held] = validate(meas, refit.parameters).loc[held, "predicted"]
        lost[held] = " ".join(sorted(fitted - {e.parameter for e in refit.estimates}))
    points = pd.DataFrame({
        "group": inside["group"], "kind": inside["kind"], "variant": inside["variant"],
        "configuration": inside["configuration"], "metric": inside["metric"], "measured": inside["measured"],
        "predicted_in_sample": inside["predicted"], "in_sample_error": inside["relative_error"],
        "predicted_out_of_sample": outside, "out_of_sample_error": outside / inside["measured"] - 1,
        "refit_unconstrained": lost}, columns=COLUMNS)
    ident = identifiability(full, meas)
    summary = {"points": float(len(points)), "groups": float(len(refits)),
               "free_parameters": float(ident.free_parameters), "effective_points": float(ident.effective_points),
               "in_sample_error_mean": float(points["in_sample_error"].abs().mean()),
               "in_sample_error_max": float(points["in_sample_error"].abs().max()),
               "out_of_sample_error_mean": float(points["out_of_sample_error"].abs().mean()),
               "out_of_sample_error_max": float(points["out_of_sample_error"].abs().max())}
    validation = inside.assign(predicted_out_of_sample=outside)
    return CrossValidation(points, summary, validation, full, refits)


def format_cross_validation(cv: CrossValidation) -> str:
    """The per-point table and the summary, as printed by ``pspsim calibrate --cross-validate``."""
    table = cv.points.drop(columns=["group", "kind", "metric"]).copy()
    for column in ("in_sample_error", "out_of_sample_error"):
        table[column] = [f"{x:+.1%}" for x in table[column]]
    with pd.option_context("display.width", 220, "display.max_colwidth", 60):
        text = table.to_string(index=False, float_format=lambda x: f"{x:.4g}")
    s = cv.summary
    return (f"{text}\n\nleave-one-group-out over {s['groups']:.0f} groups ({s['points']:.0f} points):\n"
            f"  in_sample_error_mean {s['in_sample_error_mean']:.1%}   "
            f"in_sample_error_max {s['in_sample_error_max']:.1%}\n"
            f"  out_of_sample_error_mean {s['out_of_sample_error_mean']:.1%}   "
            f"out_of_sample_error_max {s['out_of_sample_error_max']:.1%}")
