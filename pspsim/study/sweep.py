"""Sweep files: which scenarios a sweep runs, every one validated before any runs.

A sweep is a base scenario and a set of *points*, each point a few dotted
scenario fields set to values (``keys.psp_rotation_period = "5min"``), each
run for every replication and variant of the base scenario.  The points come
from ``[sweep.grid]`` (the cartesian product of value lists, first field
varying slowest) and/or ``[sweep.sample]`` (a latin-hypercube or scrambled
Sobol sample of ``n`` points within ``bounds``, from :mod:`scipy.stats.qmc`
with its own ``seed``); with both, every grid point is combined with every
sample point.  Values follow the scenario's own syntax (durations as strings,
distributions as tables); results hold the *resolved* value (seconds for a
duration, the mean of a fixed distribution).

``[sweep]`` sits in a scenario file, or in a sweep file that names its
scenario with ``base`` (relative to the sweep file); a sweep file's other
tables are merged over the base.  Every point is validated as a whole
scenario, and its cost overrides resolved, before anything runs: the first
bad one is reported as one line naming the point and the field.

Common random numbers: every point runs the same replications, so
replication ``r`` of every point draws from the same ``SeedSequence`` child
and differences between points come from the points.
"""

from __future__ import annotations

import copy
import itertools
import json
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from pspsim.costs.params import ParameterSet
from pspsim.scenario import Scenario, scenario_from_dict
from pspsim.study.runner import resolve_parameters
from pspsim.wire.errors import ConfigError

SAMPLERS = ("latin-hypercube", "sobol")
_OVERRIDES = "costs.overrides."
_SWEEP_KEYS = {"base", "replications", "grid", "sample"}
_SAMPLE_KEYS = {"kind", "n", "seed", "bounds"}
_NOT_SWEPT = {"run.variants": "variants are run at every point already",
              "run.replications": "set [sweep] replications instead",
              "run.seed": "replication r of every point draws from the r-th child of run.seed; add replications"}


@dataclass(frozen=True)
class Point:
    """One point of the sweep: its number, the values as written, the values
    as the scenario resolves them, and the validated scenario."""

    index: int
    values: dict[str, Any]
    resolved: dict[str, Any]
    scenario: Scenario
    params: ParameterSet = field(repr=False)

    def label(self) -> str:
        return _label(self.values)


def _label(values: dict[str, Any]) -> str:
    return ", ".join(f"{k} = {v!r}" for k, v in values.items())


@dataclass(frozen=True)
class Sweep:
    name: str
    source: str  # the file it came from (for messages)
    spec: dict[str, Any]  # the [sweep] table as written
    base: Scenario  # the base scenario with the sweep's replications
    fields: tuple[str, ...]  # swept dotted fields, in order
    points: tuple[Point, ...]

    @property
    def replications(self) -> int:
        return self.base.run.replications

    @property
    def variants(self) -> tuple[str, ...]:
        return tuple(self.base.run.variants)

    def units(self) -> dict[str, str]:
        """The unit of each swept field: "s" for durations, a cost parameter's
        own unit, "" otherwise."""
        params = self.points[0].params.parameters
        return {f: params[f.removeprefix(_OVERRIDES)].unit if f.startswith(_OVERRIDES) else field_unit(f)
                for f in self.fields}


# ---------------------------------------------------------------- reading


def read_sweep(path: str | Path) -> Sweep:
    """Read a sweep file (or a scenario file with a ``[sweep]`` table) and
    validate every point; errors are one-line :class:`ConfigError`."""
    path = Path(path)
    data = _read_toml(path, "sweep file")
    if "sweep" not in data:
        raise ConfigError(f"{path}: no [sweep] table")
    spec = data.pop("sweep")
    if not isinstance(spec, dict):
        raise ConfigError(f"{path}: sweep must be a table")
    if "base" in spec:
        if not isinstance(spec["base"], str):
            raise ConfigError(f"{path}: sweep.base must be a file name")
        base_path = path.parent / spec["base"]
        base = _read_toml(base_path, "base scenario")
        if "sweep" in base:
            raise ConfigError(f"{base_path}: a base scenario must not itself hold a [sweep] table")
        data = _merge(base, data)
    return sweep_from_dict(data, spec, str(path))


def _read_toml(path: Path, what: str) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such {what}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def sweep_from_dict(data: dict[str, Any], spec: dict[str, Any], source: str = "sweep") -> Sweep:
    """A sweep from a scenario table and a ``[sweep]`` table (as TOML reads them)."""
    where = f"{source}: sweep"
    unknown = sorted(set(spec) - _SWEEP_KEYS)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key (expected base, replications, grid, sample)")
    data = copy.deepcopy(data)
    if "replications" in spec:
        reps = spec["replications"]
        if isinstance(reps, bool) or not isinstance(reps, int) or reps < 1:
            raise ConfigError(f"{where}.replications: must be a positive integer (got {reps!r})")
        data.setdefault("run", {})["replications"] = reps
    base = scenario_from_dict(data, f"{source}: base scenario")
    if "grid" not in spec and "sample" not in spec:
        raise ConfigError(f"{where}: needs a [sweep.grid] or a [sweep.sample] table")
    grid = _grid(spec.get("grid", {}), f"{where}.grid")
    sample = _sample(spec["sample"], f"{where}.sample", data) if "sample" in spec else []
    fields = tuple(dict.fromkeys(itertools.chain(spec.get("grid", {}), spec.get("sample", {}).get("bounds", {}))))
    if len(fields) < len(spec.get("grid", {})) + len(spec.get("sample", {}).get("bounds", {})):
        raise ConfigError(f"{where}: a field is both in grid and in sample")
    combos = [g | s for g in (grid or [{}]) for s in (sample or [{}])]
    points = tuple(_point(i, values, data, source) for i, values in enumerate(combos))
    _unify_types(points, fields)
    return Sweep(base.run.name, source, copy.deepcopy(spec), base, fields, points)


def _check_field(name: Any, where: str) -> None:
    if not isinstance(name, str):
        raise ConfigError(f"{where}: field names must be strings")
    if name in _NOT_SWEPT:
        raise ConfigError(f"{where}: {name!r} cannot be swept ({_NOT_SWEPT[name]})")
    model: type[BaseModel] = Scenario
    parts = name.split(".")
    for i, part in enumerate(parts):
        info = model.model_fields.get(part)
        if info is None:
            raise ConfigError(f"{where}: {name!r} is not a scenario field ({part!r} unknown)")
        if typing.get_origin(info.annotation) is dict:  # costs.overrides: the rest is the key
            if i == len(parts) - 1:
                raise ConfigError(f"{where}: {name!r}: name the entry, e.g. {name}.nic.cmd_psp_gen_spi_s")
            return
        inner = info.annotation
        if isinstance(inner, type) and issubclass(inner, BaseModel) and i < len(parts) - 1:
            model = inner
        elif i < len(parts) - 1:
            raise ConfigError(f"{where}: {name!r} is not a scenario field ({part!r} has no fields)")
    if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel) and info.annotation is not _DISTRIBUTION:
        raise ConfigError(f"{where}: {name!r} is a table; sweep one of its fields")


def _grid(grid: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(grid, dict):
        raise ConfigError(f"{where}: must be a table of field = [values]")
    for name, values in grid.items():
        _check_field(name, where)
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}.{name}: must be a non-empty list of values")
    names = list(grid)
    return [dict(zip(names, combo)) for combo in itertools.product(*(grid[n] for n in names))]


def _sample(spec: Any, where: str, data: dict[str, Any]) -> list[dict[str, Any]]:
    from scipy.stats import qmc

    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: must be a table (kind, n, seed, bounds)")
    unknown = sorted(set(spec) - _SAMPLE_KEYS)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key (expected kind, n, seed, bounds)")
    kind, n, seed, bounds = spec.get("kind"), spec.get("n"), spec.get("seed", 0), spec.get("bounds")
    if kind not in SAMPLERS:
        raise ConfigError(f"{where}.kind: must be one of {', '.join(SAMPLERS)} (got {kind!r})")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"{where}.n: must be a positive integer (got {n!r})")
    if kind == "sobol" and n & (n - 1):
        raise ConfigError(f"{where}.n: a Sobol sample needs a power of two (got {n})")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"{where}.seed: must be a non-negative integer (got {seed!r})")
    if not isinstance(bounds, dict) or not bounds:
        raise ConfigError(f"{where}.bounds: must be a table of field = [low, high]")
    lows, highs, integer = [], [], []
    for name, pair in bounds.items():
        _check_field(name, f"{where}.bounds")
        if not isinstance(pair, list) or len(pair) != 2:
            raise ConfigError(f"{where}.bounds.{name}: must be [low, high]")
        lo, hi = (_number(name, v, data, f"{where}.bounds.{name}") for v in pair)
        if not lo < hi:
            raise ConfigError(f"{where}.bounds.{name}: low must be below high (got {pair!r})")
        lows.append(lo)
        highs.append(hi)
        integer.append(all(isinstance(v, int) and not isinstance(v, bool) for v in pair))
    rng = np.random.default_rng(seed)
    sampler = (qmc.LatinHypercube(d=len(bounds), rng=rng) if kind == "latin-hypercube"
               else qmc.Sobol(d=len(bounds), scramble=True, rng=rng))
    unit = sampler.random(n)
    scaled = qmc.scale(unit, lows, highs)
    return [{name: (int(round(v)) if is_int else float(v)) for name, v, is_int in zip(bounds, row, integer)}
            for row in scaled]


def _number(name: str, value: Any, data: dict[str, Any], where: str) -> float:
    """A bound in the scenario's syntax ("2min") as the number the field resolves to."""
    try:
        resolved = _resolved(scenario_from_dict(_with(data, name, value)), name)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {str(exc).split(': ', 1)[-1]}") from None
    if isinstance(resolved, bool) or not isinstance(resolved, (int, float)):
        raise ConfigError(f"{where}: {name!r} is not a number; sample numeric fields only")
    return float(resolved)


# ---------------------------------------------------------------- points


def _with(data: dict[str, Any], name: str, value: Any) -> dict[str, Any]:
    """A copy of the scenario table with dotted field ``name`` set to ``value``."""
    out = copy.deepcopy(data)
    node, model = out, Scenario
    parts = name.split(".")
    for i, part in enumerate(parts[:-1]):
        info = model.model_fields[part]
        if typing.get_origin(info.annotation) is dict:
            node.setdefault(part, {})[".".join(parts[i + 1:])] = value
            return out
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{name}: the scenario sets {part!r} to a value, not a table")
        model = info.annotation
    node[parts[-1]] = value
    return out


def _resolved(scenario: Scenario, name: str) -> Any:
    node: Any = scenario
    parts = name.split(".")
    for i, part in enumerate(parts):
        node = getattr(node, part)
        if isinstance(node, dict):
            return node[".".join(parts[i + 1:])]
    if isinstance(node, BaseModel):  # a distribution: its mean when fixed, else the table as JSON
        dumped = node.model_dump(mode="json")
        return dumped["mean"] if dumped.get("kind") == "fixed" else json.dumps(dumped, sort_keys=True)
    return node


def _point(index: int, values: dict[str, Any], data: dict[str, Any], source: str) -> Point:
    where = f"{source}: point {index} ({_label(values)})"
    try:
        table = data
        for name, value in values.items():
            table = _with(table, name, value)
        scenario = scenario_from_dict(table, where)
        params = resolve_parameters(scenario)
        params.costs()
    except ConfigError as exc:
        message = str(exc)
        raise ConfigError(message if message.startswith(where) else f"{where}: {message}") from None
    return Point(index, dict(values), {name: _resolved(scenario, name) for name in values}, scenario, params)


def _unify_types(points: tuple[Point, ...], fields: tuple[str, ...]) -> None:
    """One type per parameter column: all ints, else all floats, else all strings."""
    for name in fields:
        values = [p.resolved[name] for p in points]
        if all(isinstance(v, bool) for v in values):
            continue
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            continue
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            cast: Any = float
        else:
            cast = str
        for p in points:
            p.resolved[name] = cast(p.resolved[name])


_DISTRIBUTION = Scenario.model_fields["workload"].annotation.model_fields["message_bytes"].annotation


def field_unit(name: str) -> str:
    """"s" for a duration field (and run.window, run.duration), "" otherwise."""
    model: Any = Scenario
    for part in name.split("."):
        info = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if info is None:
            return ""
        if typing.get_origin(info.annotation) is dict:
            return ""
        model = info.annotation
    durations = any(getattr(getattr(m, "func", None), "__name__", "") == "_seconds" for m in info.metadata)
    return "s" if durations else ""
