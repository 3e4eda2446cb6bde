"""Means over replications with 95% confidence bands (Student's t).

For ``n`` replications of a quantity at one time, the band is
``mean +- t(0.975, n-1) * sd / sqrt(n)``: replications are independent runs
with their own seeds, so their spread is the sampling noise of the mean.
With one replication there is no band (its half-width is NaN).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: t(0.975, df) for df = 1..30 (two-sided 95%); above 30 the normal 1.96 is within 2%.
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042]


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (NaN for df < 1)."""
    if df < 1:
        return float("nan")
    return _T975[df - 1] if df <= len(_T975) else 1.96


def mean_band(table: pd.DataFrame, x: str, y: str, over: str = "replication") -> pd.DataFrame:
    """Per value of ``x``: mean of ``y`` over ``over``, and the 95% band (``low``, ``high``, ``n``)."""
    grouped = table.groupby(x)[y]
    out = pd.DataFrame({"mean": grouped.mean(), "sd": grouped.std(ddof=1), "n": grouped.count()})
    half = np.array([t975(int(n) - 1) for n in out["n"]]) * out["sd"] / np.sqrt(out["n"])
    out["low"], out["high"] = out["mean"] - half, out["mean"] + half
    return out.reset_index()
