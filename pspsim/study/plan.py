"""Capacity plan: the answers a planner asks for, found by runs of the user's own scenario.

For the scenario's fleet and workload and the variant the fleet runs today
(``current``), :func:`make_plan` answers, with 95% Student-t intervals over
replications (common random numbers: replication ``r`` of every run draws
the same workload, so differences come from what changed):

1. cores per host and for the fleet, per variant, and the saving against
   ``current`` (the interval of the *paired* per-replication differences);
2. NIC state per host against each table's capacity (headroom);
3. the shortest PSP rotation period with no stale connection (no
   ``psp_stale_events`` and no ``connections_lost`` in any replication):
   a coarse geometric sweep of the period from ``run.window`` to half the run
   (at least two rotations per NIC, the least that can make an association
   stale), then bisection between the last unsafe and first safe period;
4. the reconnect storm at that period under each rotation schedule
   (``handshakes_per_s_peak``, ``command_delay_max_us``);
5. the minimum NIC command rate keeping set-up delay p99 under a target
   during the worst rotation: every ``nic.cmd_*_s`` service time scaled by one
   factor, coarse sweep by powers of 4 then bisection in log space; the
   set-up delay proxy is ``command_delay_p99_us`` (a set-up waits for its
   commands: GEN_SPI then the TX key create on both NICs);
6. the connections per host (PSP, kTLS offload, per-connection IPsec SAs) or
   fan-out (per host-pair IPsec SAs) at which each offload variant's NIC
   table overflows: a sweep of that workload quantity scaled around the
   linear prediction ``capacity / peak entries``, then bisection; when the
   runs would exceed :data:`MAX_SIMULATED_CONNECTIONS`, the linear
   prediction alone, marked as such.

Every run goes through :func:`pspsim.study.sweep_runner.run_sweep` on the
executor given (a process pool, a Dask client or this process), and every
run of every search is kept (``PlanResult.runs``).  Assumes each boundary
is monotone in its parameter; a coarse sweep that is not is reported.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pspsim.costs.params import ParameterSet
from pspsim.scenario import VARIANTS, Scenario
from pspsim.study.plan_runs import PlanOptions, Runner, ci
from pspsim.study.plan_tables import add_median_host, table_of, table_overflow, variants_answer
from pspsim.study.runner import resolve_parameters
from pspsim.wire.errors import ConfigError

__all__ = ["PlanOptions", "PlanResult", "make_plan"]

SCHEDULES = ("staggered", "synchronized", "rack-waves")
COMMAND_PARAMETERS = ("nic.cmd_psp_gen_spi_s", "nic.cmd_psp_rotate_key_s", "nic.cmd_psp_tx_key_create_s",
                      "nic.cmd_psp_tx_key_destroy_s", "nic.cmd_ipsec_sa_add_s", "nic.cmd_ipsec_sa_delete_s",
                      "nic.cmd_ktls_context_create_s", "nic.cmd_ktls_context_destroy_s")


@dataclass
class PlanResult:
    answers: dict[str, Any]  # what plan.json holds
    runs: pd.DataFrame  # every run of every search: search, step, value, variant, replication, summary columns
    timeseries: pd.DataFrame = field(repr=False, default_factory=pd.DataFrame)  # the base comparison's windows


def unsafe(rows: pd.DataFrame) -> bool:
    """Any replication with a stale association or a lost connection."""
    return bool(((rows["psp_stale_events"] > 0) | (rows["connections_lost"] > 0)).any())


# ---------------------------------------------------------------- 3, 4: rotation


def rotation_boundary(runner: Runner, opts: PlanOptions) -> dict[str, Any]:
    run = runner.scenario.run
    low_limit, high_limit = run.window, max(run.window, run.duration / 2)
    coarse = sorted({float(round(p)) for p in np.geomspace(low_limit, high_limit, opts.rotation_coarse)})
    field_ = "keys.psp_rotation_period"
    trials: list[dict[str, Any]] = []

    def test(periods: list[float], step: str) -> None:
        runs = runner.run("rotation", step, [{field_: p} for p in periods], ["psp"], lambda p: p[field_])
        for p in periods:
            rows = runs[runs["value"] == p]
            trials.append({"period_s": p, "step": step, "unsafe": unsafe(rows),
                           "runs": rows[["replication", "psp_stale_events", "connections_lost"]].to_dict("records")})

    test(coarse, "coarse")
    verdict = {t["period_s"]: t["unsafe"] for t in trials}
    safe_from = next((p for p in coarse if not any(verdict[q] for q in coarse if q >= p)), None)
    monotone, seen_safe = True, False
    for p in coarse:  # unsafe periods must all lie below the safe ones
        seen_safe |= not verdict[p]
        monotone &= not (seen_safe and verdict[p])
    result: dict[str, Any] = {"field": field_, "range_s": [low_limit, high_limit], "coarse_s": coarse,
                              "monotone_in_coarse_sweep": bool(monotone)}
    if safe_from is None:
        result |= {"found": False, "min_safe_s": None, "unsafe_below_s": high_limit,
                   "note": f"stale connections at every period up to {high_limit:g} s (half the run): lengthen "
                           "run.duration, or the re-establishments do not keep up at any period the run can test"}
    elif safe_from == coarse[0]:
        result |= {"found": True, "min_safe_s": coarse[0], "unsafe_below_s": None,
                   "note": f"no stale connection even at the shortest testable period, run.window = {coarse[0]:g} s"}
    else:
        lo, hi = coarse[coarse.index(safe_from) - 1], safe_from
        for k in range(opts.rotation_steps):
            mid = float(round((lo + hi) / 2))
            if mid in (lo, hi):
                break
            test([mid], f"bisect {k + 1}")
            lo, hi = (mid, hi) if trials[-1]["unsafe"] else (lo, mid)
        result |= {"found": True, "min_safe_s": hi, "unsafe_below_s": lo,
                   "note": f"stale connections at {lo:g} s, none at {hi:g} s: the boundary lies between"}
    result["resolution_s"] = (result["min_safe_s"] - result["unsafe_below_s"]) if result["found"] and \
        result["unsafe_below_s"] is not None else None
    result["trials"] = trials
    result["runs_taken"] = sum(len(t["runs"]) for t in trials)
    return result


def rotation_storms(runner: Runner, period: float) -> dict[str, Any]:
    points = [{"keys.psp_rotation_period": period, "keys.psp_rotation_schedule": s} for s in SCHEDULES]
    runs = runner.run("storm", f"period {period:g} s", points, ["psp"], lambda p: SCHEDULES.index(
        p["keys.psp_rotation_schedule"]))
    out = {}
    for i, schedule in enumerate(SCHEDULES):
        rows = runs[runs["value"] == i]
        out[schedule] = {m: ci(rows[m]) for m in ("handshakes_per_s_peak", "command_delay_max_us",
                                                   "command_delay_p99_us", "key_reconnects_per_s",
                                                   "psp_stale_events", "connections_lost")}
    return {"period_s": period, "schedules": out,
            "worst_schedule": max(SCHEDULES, key=lambda s: out[s]["handshakes_per_s_peak"]["mean"])}


# ---------------------------------------------------------------- 5: command rate


def command_rate(runner: Runner, params: ParameterSet, period: float, schedule: str,
                 opts: PlanOptions) -> dict[str, Any]:
    """Largest common factor on every ``nic.cmd_*_s`` keeping command_delay_p99 under the target
    (in every replication's upper CI: the mean's 95% interval must sit below it)."""
    target_us = opts.setup_p99_s * 1e6
    base = {name: params.parameters[name].value for name in COMMAND_PARAMETERS if name in params.parameters}
    trials: list[dict[str, Any]] = []

    def point(f: float) -> dict[str, Any]:
        return {"keys.psp_rotation_period": period, "keys.psp_rotation_schedule": schedule} | {
            f"costs.overrides.{n}": v * f for n, v in base.items()}

    def test(factors: list[float], step: str) -> None:
        runs = runner.run("command-rate", step, [point(f) for f in factors], ["psp"],
                          lambda p: p["costs.overrides.nic.cmd_psp_tx_key_create_s"] / base[
                              "nic.cmd_psp_tx_key_create_s"])
        for f in factors:
            rows = runs[np.isclose(runs["value"], f)]
            p99 = ci(rows["command_delay_p99_us"])
            trials.append({"factor": f, "step": step, "p99_us": p99, "ok": bool(rows["command_delay_p99_us"].max()
                                                                                 <= target_us)})

    # a factor whose slowest PSP command alone outlasts the target cannot pass (creates are a third of
    # a set-up's commands, far above 1%): the coarse sweep stops at the first power of 4 beyond it
    slowest = max(v for n, v in base.items() if n.startswith("nic.cmd_psp"))
    top = max(0, math.ceil(math.log(target_us / 1e6 / slowest, 4)))
    test([4.0 ** k for k in range(-2, top + 1)], "coarse")
    ok = {t["factor"]: t["ok"] for t in trials}
    factors = sorted(ok)
    best = max((f for f in factors if ok[f] and all(ok[g] for g in factors if g <= f)), default=None)
    result: dict[str, Any] = {"target_p99_us": target_us, "schedule": schedule, "period_s": period,
                              "proxy": "command_delay_p99_us", "scaled_parameters": sorted(base)}
    if best is None:
        result |= {"found": False, "factor": None,
                   "note": f"p99 above {target_us:g} us even with commands {factors[-1]:g}x... "
                           f"{factors[0]:g}x as fast: below nic.command_latency_s or queueing beyond service"}
    else:
        lo, hi = best, next((f for f in factors if f > best), None)
        if hi is not None:
            for k in range(opts.rate_steps):
                mid = math.sqrt(lo * hi)
                test([mid], f"bisect {k + 1}")
                lo, hi = (mid, hi) if trials[-1]["ok"] else (lo, mid)
        create = base["nic.cmd_psp_tx_key_create_s"] * lo
        result |= {"found": True, "factor": lo, "fails_at_factor": hi,
                   "resolution_factor": (hi / lo) if hi else None,
                   "tx_key_create_rate_per_s": 1 / create,
                   "per_command_rate_per_s": {n: 1 / (v * lo) for n, v in base.items()},
                   "note": "open-ended: slowest tested still meets the target" if hi is None else
                   f"meets the target with service times x{lo:.3g}, not x{hi:.3g}"}
    result["trials"] = trials
    result["runs_taken"] = len(trials) * runner.replications
    return result


# ---------------------------------------------------------------- the plan


def plan_variants(scenario: Scenario, current: str) -> list[str]:
    if current not in VARIANTS:
        raise ConfigError(f"--current: unknown variant {current!r} (one of {', '.join(VARIANTS)})")
    wanted = set(scenario.run.variants) | {current, "psp"}
    return [v for v in VARIANTS if v in wanted]


def make_plan(scenario: Scenario, opts: PlanOptions, executor: Any = None,
              progress: Callable[[str], None] | None = None) -> PlanResult:
    params = resolve_parameters(scenario)
    variants = plan_variants(scenario, opts.current)
    if opts.setup_p99_s <= 0 or not math.isfinite(opts.setup_p99_s):
        raise ConfigError(f"--setup-p99: must be a positive number of milliseconds (got {opts.setup_p99_s * 1e3:g})")
    runner = Runner(scenario, opts.replications, executor, progress)
    as_is = {"run.name": scenario.run.name}  # the scenario itself, as a one-point sweep
    base_runs = runner.run("variants", "base", [as_is], variants, keep_series=True)
    runner.frames.pop()  # kept again below, with the median host's peak
    runner.frames.append(add_median_host(base_runs, runner.series[-1]).drop(columns=list(as_is)))
    answers_variants = variants_answer(add_median_host(base_runs, runner.series[-1]), variants, opts.current,
                                        scenario, params)
    rotation = rotation_boundary(runner, opts)
    chosen = rotation["min_safe_s"] if rotation["found"] else scenario.keys.psp_rotation_period
    storms = rotation_storms(runner, chosen)
    rate = command_rate(runner, params, chosen, storms["worst_schedule"], opts)
    overflow = {}
    for variant in variants:
        table = table_of(variant, scenario, params)
        if table is None or variant not in answers_variants:
            continue
        peak = answers_variants[variant]["nic_headroom"]["entries_max"]["mean"]
        overflow[variant] = table_overflow(runner, variant, peak, table, opts)
    answers = {
        "scenario": scenario.run.name, "hosts": scenario.fleet.hosts, "current": opts.current,
        "replications": opts.replications, "confidence": 0.95,
        "variants": answers_variants,
        "psp_min_safe_rotation_s": rotation["min_safe_s"],
        "rotation": rotation,
        "storms": storms,
        "min_command_rate_per_s": rate.get("tx_key_create_rate_per_s"),
        "command_rate": rate,
        "table_overflow": overflow,
    }
    return PlanResult(answers, runner.all_runs(), runner.series[0])
