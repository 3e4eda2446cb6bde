"""Replications to confidence intervals: mean, standard deviation, n and the
Student-t interval of every numeric metric, per group (a sweep point and variant).

The interval is ``mean +- t(1 - alpha/2, n - 1) * s / sqrt(n)`` with ``s`` the
sample standard deviation (ddof = 1): exact for normally distributed
replication results, approximately right for means of long runs (central
limit theorem).  It treats replications as independent, which they are (each
replication has its own ``SeedSequence`` child); points share replications'
seeds, so comparing two points by their separate intervals is conservative.
With one replication the standard deviation and interval are NaN.
Source: any statistics text, e.g. Law, *Simulation Modeling and Analysis*, 5th ed., section 4.5.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# identify a run; never aggregated
KEY_COLUMNS = ("point", "scenario", "variant", "replication", "seed", "spawn_key")
STATISTICS = ("mean", "std", "n", "ci_low", "ci_high")


def metric_columns(runs: pd.DataFrame, exclude: tuple[str, ...] = ()) -> list[str]:
    """The numeric (or boolean) columns that are neither keys nor in ``exclude``."""
    return [c for c in runs.columns if c not in KEY_COLUMNS and c not in exclude
            and (pd.api.types.is_numeric_dtype(runs[c]) or pd.api.types.is_bool_dtype(runs[c]))]


def confidence_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float, int, float, float]:
    """(mean, std, n, low, high) of the finite values."""
    from scipy.stats import t

    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = len(x)
    if n == 0:
        return np.nan, np.nan, 0, np.nan, np.nan
    mean = float(x.mean())
    if n < 2:
        return mean, np.nan, 1, np.nan, np.nan
    std = float(x.std(ddof=1))
    half = float(t.ppf(0.5 + level / 2, n - 1)) * std / np.sqrt(n)
    return mean, std, n, mean - half, mean + half


def summarize(runs: pd.DataFrame, by: list[str], exclude: tuple[str, ...] = (), level: float = 0.95) -> pd.DataFrame:
    """One row per group of ``by`` (in order of first appearance): the group's
    columns, ``replications`` (rows in the group) and, for every metric ``m``,
    ``m_mean``, ``m_std``, ``m_n``, ``m_ci_low``, ``m_ci_high`` (of its finite values)."""
    from scipy.stats import t

    metrics = metric_columns(runs, tuple(by) + tuple(exclude))
    values = runs[metrics].astype(float).replace([np.inf, -np.inf], np.nan)
    grouped = pd.concat([runs[by], values], axis=1).groupby(by, sort=False, dropna=False)
    mean, std, n = grouped[metrics].mean(), grouped[metrics].std(ddof=1), grouped[metrics].count()
    with np.errstate(invalid="ignore", divide="ignore"):
        half = t.ppf(0.5 + level / 2, (n - 1).where(n > 1)) * std / np.sqrt(n)
    columns: dict[str, pd.Series] = {"replications": grouped.size()}
    for m in metrics:
        columns |= {f"{m}_mean": mean[m], f"{m}_std": std[m], f"{m}_n": n[m],
                    f"{m}_ci_low": mean[m] - half[m], f"{m}_ci_high": mean[m] + half[m]}
    return pd.DataFrame(columns).reset_index()
