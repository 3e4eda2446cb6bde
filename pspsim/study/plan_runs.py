"""The runs behind ``pspsim plan``: lists of points of one scenario through the sweep machinery.

:class:`Runner` turns a list of points (dotted field -> value; unlike a grid,
fields may move together) into a :class:`~pspsim.study.sweep.Sweep` and runs
it with :func:`~pspsim.study.sweep_runner.run_sweep` on the executor given,
so ``-j`` and ``--dask`` apply and the results are the same whichever runs
them.  It keeps every run of every search (one row each, with the search,
the step and the value searched).  :func:`ci` is the 95% Student-t interval
of :mod:`pspsim.study.aggregate` as a small dict.
"""

from __future__ import annotations

import copy
import dataclasses
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pspsim.scenario import Scenario
from pspsim.study.aggregate import confidence_interval
from pspsim.study.sweep import Sweep, sweep_from_dict
from pspsim.study.sweep_runner import load_sweep, run_sweep
from pspsim.wire.errors import ConfigError


@dataclass(frozen=True)
class PlanOptions:
    current: str = "ipsec-packet-offload"
    replications: int = 3
    setup_p99_s: float = 0.010
    rotation_steps: int = 3  # bisection steps after the coarse sweep
    rotation_coarse: int = 6  # coarse periods, window .. duration / 2
    rate_steps: int = 3
    overflow_steps: int = 2


# ---------------------------------------------------------------- running points


class Runner:
    """Runs lists of points (dotted field -> value) of one base scenario through the sweep machinery."""

    def __init__(self, scenario: Scenario, replications: int, executor: Any = None,
                 progress: Callable[[str], None] | None = None) -> None:
        self.data = scenario.model_dump(mode="json")
        self.data["run"]["replications"] = replications
        self.scenario, self.replications, self.executor = scenario, replications, executor
        self.progress = progress or (lambda message: None)
        self.frames: list[pd.DataFrame] = []
        self.series: list[pd.DataFrame] = []

    def run(self, search: str, step: str, points: list[dict[str, Any]], variants: list[str],
            value_of: Callable[[dict[str, Any]], float] | None = None, keep_series: bool = False) -> pd.DataFrame:
        """Run every point for every replication and variant; one row per run with ``search``, ``step``,
        ``value`` (what the search moves) and every summary column."""
        data = copy.deepcopy(self.data)
        data["run"]["variants"] = variants
        sweep = points_sweep(data, points, f"plan {search}")
        self.progress(f"{search} ({step}): {len(points)} point(s) x {self.replications} replications x "
                      f"{len(variants)} variant(s)")
        with tempfile.TemporaryDirectory(prefix="pspsim-plan-") as tmp:
            results = run_sweep(sweep, tmp, self.executor)
            if len(results.failures):
                first = results.failures.iloc[0]
                raise ConfigError(f"plan {search}: a run failed ({first['error']})")
            if keep_series:
                self.series.append(load_sweep(tmp, "timeseries"))
        runs = results.runs.copy()
        values = [value_of(p) if value_of else float("nan") for p in points]
        runs.insert(0, "value", [values[int(i)] for i in runs["point"]])
        runs.insert(0, "step", step)
        runs.insert(0, "search", search)
        self.frames.append(runs.drop(columns=[f for f in sweep.fields if f in runs.columns]))
        return runs

    def all_runs(self) -> pd.DataFrame:
        return pd.concat(self.frames, ignore_index=True) if self.frames else pd.DataFrame()


def points_sweep(data: dict[str, Any], points: list[dict[str, Any]], source: str) -> Sweep:
    """A :class:`Sweep` of exactly these points (fields may move together, unlike a grid)."""
    swept = []
    for i, values in enumerate(points):
        one = sweep_from_dict(data, {"grid": {k: [v] for k, v in values.items()}}, source)
        swept.append(dataclasses.replace(one.points[0], index=i))
    fields = tuple(dict.fromkeys(k for p in points for k in p))
    base = sweep_from_dict(data, {"grid": {k: [v] for k, v in points[0].items()}}, source).base
    return Sweep(base.run.name, source, {"points": points}, base, fields, tuple(swept))


def ci(values: Any) -> dict[str, float | int]:
    mean, std, n, low, high = confidence_interval(np.asarray(values, dtype=float))
    return {"mean": mean, "ci_low": low, "ci_high": high, "n": n}
