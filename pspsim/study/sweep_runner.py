"""Run a sweep through any ``concurrent.futures.Executor``; the results folder.

Every (point, replication, variant) is one task, :func:`execute`: a call of
:func:`pspsim.study.runner.run_one` on the point's scenario, self-contained
and deterministic, so a process pool, a Dask cluster or this process give
the same bytes.  The tasks return their tables; this process writes them.

The results folder ``DIR``:

- ``sweep.json``: the sweep as written, the swept fields and their units, every
  point (values as written and resolved), the replications' seeds, the base
  scenario, its cost parameters and the package versions.  No wall times, so
  the whole folder is identical whichever executor ran it.
- ``runs/<run>.parquet``: one file per finished run, one row: ``point``, the
  point's fields (named by their dotted path, resolved: seconds for
  durations), ``scenario, variant, replication, seed, spawn_key`` and every
  summary column of the run.
- ``timeseries/<run>.parquet``: the same keys and fields, one row per window.
- ``failures.csv``: point, replication, variant and the error line of every
  run that raised (the other runs go on).
- ``summary.parquet``: per point and variant, mean, std, n and 95% Student-t
  interval of every numeric summary column (:mod:`pspsim.study.aggregate`).

A run's files are written to a temporary name and renamed, its ``runs`` file
last, so a run counts as finished exactly when its ``runs`` file exists:
``resume=True`` runs only the others, and a sweep killed at any moment and
resumed gives the same folder as one that ran through.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import Executor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pspsim.costs.params import ParameterSet
from pspsim.model.streams import replication_seed, replication_sequence
from pspsim.scenario import Scenario
from pspsim.study.aggregate import summarize
from pspsim.study.executors import SerialExecutor, as_executor
from pspsim.study.runner import manifest_for, resolve_parameters, run_one
from pspsim.study.sweep import Sweep, read_sweep
from pspsim.wire.errors import ConfigError

RUNS, TIMESERIES = "runs", "timeseries"
FAILURE_COLUMNS = ["point", "replication", "variant", "error"]


@dataclass(frozen=True)
class RunTask:
    """One (point, replication, variant): all a worker needs, picklable."""

    point: int
    replication: int
    variant: str
    scenario: Scenario
    params: ParameterSet
    columns: dict[str, Any]  # the point's fields, resolved

    @property
    def name(self) -> str:
        return f"p{self.point:05d}-r{self.replication:04d}-{self.variant}"


@dataclass
class SweepResults:
    runs: pd.DataFrame  # one row per finished run
    summary: pd.DataFrame  # one row per point and variant
    failures: pd.DataFrame  # one row per run that raised
    folder: Path | None  # None when run_sweep wrote to a temporary folder


def execute(task: RunTask) -> tuple[pd.DataFrame, pd.DataFrame] | str:
    """Run one task; its (runs row, time series) tables, or the error line."""
    try:
        out = run_one(task.scenario, task.params, task.replication, task.variant)
    except Exception as exc:  # recorded in failures.csv; the sweep goes on
        return error_line(exc)
    front = {"point": task.point} | task.columns
    row = pd.DataFrame([front | out.summary])
    series = out.timeseries
    for i, (name, value) in enumerate(front.items()):
        series.insert(i, name, value)
    return row, series


def error_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def tasks(sweep: Sweep) -> list[RunTask]:
    return [RunTask(p.index, r, v, p.scenario, p.params, dict(p.resolved))
            for p in sweep.points for r in range(sweep.replications) for v in sweep.variants]


def sweep_record(sweep: Sweep) -> dict[str, Any]:
    """What ``sweep.json`` holds."""
    base = manifest_for(sweep.base, resolve_parameters(sweep.base), 0.0)
    base.pop("wall_time_s")
    seeds = []
    for r in range(sweep.replications):
        seq = replication_sequence(sweep.base.run.seed, r)
        seeds.append({"replication": r, "seed": replication_seed(seq), "spawn_key": str(r)})
    return {
        "name": sweep.name,
        "sweep": sweep.spec,
        "fields": [{"field": f, "unit": u} for f, u in sweep.units().items()],
        "replications": sweep.replications,
        "variants": list(sweep.variants),
        "points": [{"point": p.index, "values": p.values, "resolved": p.resolved} for p in sweep.points],
        "seeds": seeds,
        "base": base,
    }


# ---------------------------------------------------------------- the folder


def check_sweep_folder(out: Path, record: dict[str, Any], resume: bool) -> None:
    """Refuse a folder that is not ours to write, before any work."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder")
    if not any(out.iterdir()):
        return
    if not resume:
        raise ConfigError(f"{out}: not empty; add --resume to continue the sweep there, or choose another folder")
    try:
        old = json.loads((out / "sweep.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        raise ConfigError(f"{out}: not a sweep results folder (no readable sweep.json); cannot resume") from None
    new = json.loads(json.dumps(record))
    if old.get("base", {}).get("versions") != new["base"]["versions"]:
        raise ConfigError(f"{out}: was written with other package versions; resuming would mix results")
    if old != new:
        raise ConfigError(f"{out}: holds a different sweep (its sweep.json differs); cannot resume")


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _prepare(out: Path, record: dict[str, Any]) -> None:
    for sub in (RUNS, TIMESERIES):
        (out / sub).mkdir(parents=True, exist_ok=True)
        for stale in (out / sub).glob(".*.tmp"):  # left by a killed sweep
            stale.unlink()
    _atomic(out / "sweep.json", lambda p: p.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n"))


def _write_run(out: Path, task: RunTask, row: pd.DataFrame, series: pd.DataFrame) -> None:
    _atomic(out / TIMESERIES / f"{task.name}.parquet", lambda p: series.to_parquet(p, index=False))
    _atomic(out / RUNS / f"{task.name}.parquet", lambda p: row.to_parquet(p, index=False))


# ---------------------------------------------------------------- running


def _completed(executor: Executor, todo: list[RunTask]) -> Iterator[tuple[RunTask, Any]]:
    """(task, result or error line) as runs finish."""
    if isinstance(executor, SerialExecutor):
        for task in todo:
            yield task, execute(task)
        return
    futures = {executor.submit(execute, task): task for task in todo}
    try:
        for future in as_completed(futures):
            try:
                result = future.result()
            except Exception as exc:  # the worker died (BrokenProcessPool, KilledWorker, ...)
                result = error_line(exc)
            yield futures[future], result
    finally:
        for future in futures:
            future.cancel()


def run_sweep(sweep: Sweep | str | os.PathLike[str], out_dir: str | os.PathLike[str] | None = None,
              executor: Any = None, resume: bool = False, progress: bool = False) -> SweepResults:
    """Run every (point, replication, variant) of ``sweep`` (a :class:`Sweep` or a
    sweep file) on ``executor`` (a ``concurrent.futures.Executor`` or a
    ``dask.distributed.Client``; default: this process), write the results
    folder ``out_dir`` (default: a temporary one, removed) and return its tables."""
    if not isinstance(sweep, Sweep):
        sweep = read_sweep(sweep)
    if out_dir is None:
        with tempfile.TemporaryDirectory(prefix="pspsim-sweep-") as tmp:
            results = run_sweep(sweep, tmp, executor, resume, progress)
            return SweepResults(results.runs, results.summary, results.failures, None)
    out = Path(out_dir)
    record = sweep_record(sweep)
    check_sweep_folder(out, record, resume)
    _prepare(out, record)
    everything = tasks(sweep)
    todo = [t for t in everything if not (out / RUNS / f"{t.name}.parquet").exists()]
    failures = []
    bar = _progress_bar(len(everything), len(everything) - len(todo), progress)
    try:
        for task, result in _completed(as_executor(executor), todo):
            if isinstance(result, str):
                failures.append({"point": task.point, "replication": task.replication, "variant": task.variant,
                                 "error": result})
            else:
                _write_run(out, task, *result)
            bar.update()
            if failures:
                bar.set_postfix(failed=len(failures))
    finally:
        bar.close()
    failed = pd.DataFrame(failures, columns=FAILURE_COLUMNS)
    order = {v: i for i, v in enumerate(sweep.variants)}
    failed = failed.sort_values(["point", "replication", "variant"], key=lambda s: s.map(order) if s.name ==
                                "variant" else s, kind="stable").reset_index(drop=True)
    _atomic(out / "failures.csv", lambda p: failed.to_csv(p, index=False))
    runs = load_sweep(out)
    summary = summarize(runs, ["point", *sweep.fields, "variant"], exclude=("scenario",)) if len(runs) else \
        pd.DataFrame(columns=["point", *sweep.fields, "variant", "replications"])
    _atomic(out / "summary.parquet", lambda p: summary.to_parquet(p, index=False))
    return SweepResults(runs, summary, failed, out)


def _progress_bar(total: int, done: int, show: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=done, unit="run", desc="sweep", file=sys.stderr, disable=not show,
                dynamic_ncols=True, smoothing=0.1)


# ---------------------------------------------------------------- reading


def load_sweep(folder: str | os.PathLike[str], table: str = RUNS) -> pd.DataFrame:
    """A sweep's results as one DataFrame: ``"runs"`` (one row per run: the
    point's fields and every summary column) or ``"timeseries"`` (one row per
    window), sorted by point, replication and variant (in the sweep's order)."""
    folder = Path(folder)
    if table not in (RUNS, TIMESERIES):
        raise ValueError(f"table must be {RUNS!r} or {TIMESERIES!r}")
    try:
        record = json.loads((folder / "sweep.json").read_text())
    except FileNotFoundError:
        raise ConfigError(f"{folder}: not a sweep results folder (no sweep.json)") from None
    files = sorted((folder / table).glob("p*.parquet"))
    if not files:
        return pd.DataFrame(columns=["point", *(f["field"] for f in record["fields"]), "variant", "replication"])
    frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    order = {v: i for i, v in enumerate(record["variants"])}
    keys = ["point", "replication", "variant"] + (["time_s"] if "time_s" in frame.columns else [])
    return frame.sort_values(keys, key=lambda s: s.map(order) if s.name == "variant" else s,
                             kind="stable").reset_index(drop=True)

