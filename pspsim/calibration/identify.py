"""Identifiability of a fit: what the measurements pin down, and what they do not.

A fitted value is only as good as the data behind it.  For each estimate
this module states how many measured points it rests on and whether its
standard error is small enough to call it known:

* ``identified``: standard error at most a third of the value (the value is
  at least 3 standard errors from zero);
* ``weak``: standard error above a third of the value -- the measurements
  barely constrain it, and it is flagged wherever it is printed or written;
* ``no error estimate``: a value with no standard error (one point, or a
  maximum or a derived value), which cannot be called known either;
* ``given``: a platform fact copied from the measurement file (clock, MTU).

It also counts free parameters against effective data points (distinct run
configurations, state-scaling points, AES-GCM block sizes and control-plane
entries; repeats of one configuration count once) and lists the
parameters no measurement reached, which keep the base set's values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from pspsim.calibration.fit import Calibration
    from pspsim.calibration.measurements import Measurements

#: An estimate whose standard error exceeds this fraction of its value is flagged.
WEAK_RATIO = 1 / 3
GIVEN = {"host.clock_hz", "net.mtu_bytes"}


def status(parameter: str, value: float, stderr: float) -> str:
    """One of ``given``, ``identified``, ``weak``, ``no error estimate``."""
    if parameter in GIVEN:
        return "given"
    if math.isnan(stderr):
        return "no error estimate"
    return "weak" if stderr > WEAK_RATIO * abs(value) else "identified"


@dataclass(frozen=True)
class Identifiability:
    table: pd.DataFrame  # one row per estimate: parameter, value, stderr, relative_stderr, points, status
    free_parameters: int
    effective_points: int
    unconstrained: list[str]

    @property
    def flagged(self) -> list[str]:
        """Estimates that cannot be called known (weak, or with no error estimate)."""
        return self.table.loc[self.table["status"].isin(["weak", "no error estimate"]), "parameter"].tolist()

    @property
    def under_determined(self) -> bool:
        return self.free_parameters >= self.effective_points

    def summary(self) -> str:
        verdict = " (under-determined: no degrees of freedom left to check the fit)" if self.under_determined else ""
        return (f"{self.free_parameters} parameters fitted from {self.effective_points} effective data points"
                f"{verdict}")


def effective_points(meas: Measurements) -> int:
    """Distinct configurations measured: run and state-point groups, AES-GCM sizes, control-plane entries."""
    groups = {r.group for r in meas.runs} | {p.group for p in meas.state_scaling}
    sizes = sum(len(v) for v in meas.crypto.values())
    return len(groups) + sizes + len(meas.control_plane)


def identifiability(calibration: Calibration, meas: Measurements) -> Identifiability:
    rows = []
    for e in calibration.estimates:
        relative = e.stderr / abs(e.value) if e.value and not math.isnan(e.stderr) else float("nan")
        rows.append({"parameter": e.parameter, "value": e.value, "stderr": e.stderr, "relative_stderr": relative,
                     "points": e.points, "status": status(e.parameter, e.value, e.stderr), "basis": e.basis})
    table = pd.DataFrame(rows, columns=["parameter", "value", "stderr", "relative_stderr", "points", "status",
                                        "basis"])
    free = int((table["status"] != "given").sum())
    return Identifiability(table, free, effective_points(meas), list(calibration.unconstrained))


def format_estimates(ident: Identifiability) -> str:
    """The estimates as a text table; flagged values are shown as such, never as plain numbers."""

    def shown(row) -> tuple[str, str]:
        if row.status == "weak":
            return f"({row.value:.4g})", f"{row.stderr:.3g}  WEAK: error > 1/3 of value"
        if row.status == "no error estimate":
            return f"({row.value:.4g})", "?  no error estimate"
        return f"{row.value:.4g}", ("" if row.status == "given" else f"{row.stderr:.3g}")

    lines = [f"{'parameter':<45} {'value':>12}  {'stderr':<34} {'points':>6}  basis"]
    for row in ident.table.itertuples():
        value, stderr = shown(row)
        lines.append(f"{row.parameter:<45} {value:>12}  {stderr:<34} {row.points:>6}  {row.basis}")
    lines.append("")
    lines.append(ident.summary())
    if ident.flagged:
        lines.append(f"not known from these measurements (value in parentheses): {', '.join(ident.flagged)}")
    return "\n".join(lines)
