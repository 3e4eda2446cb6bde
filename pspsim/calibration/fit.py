"""Fit a parameter set to measurements, and check the fit by re-running them.

Fitting uses the model's own cost functions, so that what is fitted is
exactly what the simulator uses.  For a parameter that enters the cost
linearly (cycles per packet, per byte, per handshake), each run is priced
with the parameter at 0 and at 1: the difference is the run's "exposure" to
it, and the estimate is the least-squares slope through the origin of
(measured cycles - cycles at 0) on the exposure, with its standard error.
Parameters are fitted in dependency order (AES-GCM costs, then the plain
stack, then each variant's own parameter, then handshakes and rekeys), each
using the ones before.

* AES-GCM cycles per call and per byte: least squares of cycles per
  operation (clock / operations per second) on the block size, from
  ``openssl speed`` at several sizes, weighted for relative noise.
* Context cache: throughput against live entries follows
  ``T0 / (1 + max(0, 1 - C/N) * k)``; C is found on a log grid over the
  measured range, k by least squares given C, and both standard errors by
  jackknife (leave one point out).  T0 is the throughput at the fewest
  entries; the NIC engine's packet rate is set so that the model reaches T0.
* Command latency: median of the samples (standard error of a median,
  1.2533 sigma / sqrt(n)); command service time: per operation measured,
  1 / (highest rate x commands per operation) for the command type the
  operation issues (``OPERATIONS`` in :mod:`pspsim.calibration.measurements`).

Parameters the measurements do not constrain keep the base set's values
and are listed as such.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from pspsim.calibration.identify import status
from pspsim.calibration.measurements import OPERATIONS, Measurements, TrafficRun
from pspsim.costs.params import Costs, Parameter, ParameterSet, field_name
from pspsim.files import write_text
from pspsim.model.variants import make_variant
from pspsim.scenario import KeysConfig

#: The parameter each variant's runs constrain (after the plain stack cost).
VARIANT_PARAMETER = {
    "plaintext": "host.stack_cycles_per_packet",
    "ipsec-sw": "host.ipsec_sw_cycles_per_packet",
    "ipsec-crypto-offload": "host.ipsec_crypto_offload_cycles_per_packet",
    "ipsec-packet-offload": "host.ipsec_packet_offload_cycles_per_packet",
    "psp": "host.offload_driver_cycles_per_packet",
    "ktls-offload": "host.offload_driver_cycles_per_packet",
    "tls-user": "host.tls_user_copy_cycles_per_byte",
    "ktls-sw": "host.ktls_sw_copy_cycles_per_byte",
}
#: The parameter each variant's rekey runs constrain.
REKEY_PARAMETER = {
    "psp": "host.psp_key_exchange_cycles",
    "ipsec-sw": "host.ike_child_rekey_cycles_pfs",
    "ipsec-crypto-offload": "host.ike_child_rekey_cycles_pfs",
    "ipsec-packet-offload": "host.ike_child_rekey_cycles_pfs",
    "tls-user": "host.tls_key_update_cycles",
    "ktls-sw": "host.tls_key_update_cycles",
}
#: The context cache (size, miss cost) a state-scaling sweep of each variant measures.
CACHE_PARAMETERS = {
    "psp": ("nic.psp_tx_key_cache_entries", "nic.psp_tx_key_miss_cost"),
    "ipsec-crypto-offload": ("nic.ipsec_sa_cache_entries", "nic.ipsec_sa_miss_cost"),
    "ipsec-packet-offload": ("nic.ipsec_sa_cache_entries", "nic.ipsec_sa_miss_cost"),
    "ktls-offload": ("nic.ktls_context_cache_entries", "nic.ktls_context_miss_cost"),
}
FIT_ORDER = ["plaintext", "ipsec-sw", "ipsec-crypto-offload", "ipsec-packet-offload", "psp", "ktls-offload",
             "tls-user", "ktls-sw"]


@dataclass(frozen=True)
class Estimate:
    parameter: str
    value: float
    stderr: float
    points: int
    residual_rms: float  # relative, over the points used
    basis: str


def _with(costs: Costs, **values: float) -> Costs:
    return replace(costs, **{field_name(k): v for k, v in values.items()})


def run_cycles(run: TrafficRun, costs: Costs) -> float:
    """Cycles per second the model spends on the measured host for this run."""
    variant = make_variant(run.variant, costs, KeysConfig())
    records = run.bytes_per_s / costs.net_tls_record_bytes if variant.uses_records else 0.0
    crypto = float(np.asarray(variant.crypto_cycles(np.float64(run.packets_per_s), np.float64(run.bytes_per_s),
                                                    np.float64(records))))
    return (run.packets_per_s * costs.host_stack_cycles_per_packet + crypto
            + run.connections_per_s * variant.handshake_cycles() + run.rekeys_per_s * variant.rekey_cycles())


def _exposure(runs: list[TrafficRun], costs: Costs, parameter: str) -> np.ndarray:
    """How the modelled cycles of each run grow per unit of ``parameter``."""
    base, unit = _with(costs, **{parameter: 0.0}), _with(costs, **{parameter: 1.0})
    return np.array([run_cycles(r, unit) - run_cycles(r, base) for r in runs])


def _slope(runs: list[TrafficRun], costs: Costs, parameter: str, earlier: list[Estimate]) -> Estimate | None:
    """Least-squares estimate of one linear parameter from the runs exposed to it.

    Its standard error combines the regression's own with the errors of the
    earlier estimates it takes as known (first-order propagation)."""
    x = _exposure(runs, costs, parameter)
    base = _with(costs, **{parameter: 0.0})
    y = np.array([r.cycles_per_s - run_cycles(r, base) for r in runs])
    keep = x > 0
    if not keep.any():
        return None
    kept = [r for r, k in zip(runs, keep) if k]
    x, y = x[keep], y[keep]
    value = float((x * y).sum() / (x * x).sum())
    residual = y - value * x
    n = len(x)
    variance = (residual**2).sum() / max(n - 1, 1) / (x * x).sum() if n > 1 else float("nan")
    for e in earlier:
        if not math.isnan(e.stderr) and e.parameter.startswith("host.") and e.parameter != "host.clock_hz":
            sensitivity = (x * _exposure(kept, costs, e.parameter)).sum() / (x * x).sum()
            variance += (sensitivity * e.stderr) ** 2
    measured = np.array([r.cycles_per_s for r in kept])
    rms = float(np.sqrt(np.mean((residual / measured) ** 2)))
    return Estimate(parameter, max(value, 0.0), float(math.sqrt(variance)), n, rms, f"{n} runs")


def _crypto(meas: Measurements) -> list[Estimate]:
    speeds = meas.crypto.get("aes-128-gcm")
    if not speeds or len(speeds) < 2:
        return []
    size = np.array(sorted(speeds), dtype=float)
    cycles = np.array([meas.clock_hz / (speeds[int(s)] / s) for s in size])  # cycles per operation
    # Measurement noise is relative (a percentage of each rate), so weight by 1/cycles^2.
    design = np.column_stack([np.ones_like(size), size])
    weight = 1 / cycles**2
    normal = design.T @ (design * weight[:, None])
    coef = np.linalg.solve(normal, design.T @ (cycles * weight))
    residual = cycles - design @ coef
    n = len(size)
    sigma2 = (weight * residual**2).sum() / max(n - 2, 1)
    cov = sigma2 * np.linalg.inv(normal)
    rms = float(np.sqrt(np.mean((residual / cycles) ** 2)))
    basis = f"openssl speed, {n} block sizes"
    return [Estimate("host.aes_gcm_cycles_per_call", max(float(coef[0]), 0.0), float(np.sqrt(cov[0, 0])), n, rms,
                     basis),
            Estimate("host.aes_gcm_cycles_per_byte", float(coef[1]), float(np.sqrt(cov[1, 1])), n, rms, basis)]


def cache_fit(entries: np.ndarray, gbps: np.ndarray) -> tuple[float, float, float]:
    """(cache entries C, miss cost k, no-miss throughput T0) for gbps = T0 / (1 + max(0, 1 - C/N) k)."""
    t0 = float(gbps[np.argmin(entries)])
    best = (float("inf"), float(entries.min()), 0.0)
    for cache in np.geomspace(entries.min() * 0.5, entries.max(), 400):
        miss = np.clip(1 - cache / entries, 0, None)
        if not (miss > 0).any():
            continue
        k = max(0.0, float((miss * (t0 / gbps - 1)).sum() / (miss * miss).sum()))
        error = float(((t0 / (1 + miss * k) - gbps) ** 2).sum())
        if error < best[0]:
            best = (error, float(cache), k)
    return best[1], best[2], t0


def _cache(meas: Measurements) -> list[Estimate]:
    points = meas.state_scaling
    if len(points) < 3 or points[0].variant not in CACHE_PARAMETERS:
        return []  # a cache cliff needs three points, and a variant whose keys go through a NIC cache
    entries = np.array([p.entries for p in points])
    gbps = np.array([p.gbps for p in points])
    cache, k, t0 = cache_fit(entries, gbps)
    jack = [cache_fit(np.delete(entries, i), np.delete(gbps, i))[:2] for i in range(len(points))]
    n = len(points)
    spread = np.array(jack)
    stderr = np.sqrt((n - 1) / n * ((spread - spread.mean(axis=0)) ** 2).sum(axis=0))
    predicted = t0 / (1 + np.clip(1 - cache / entries, 0, None) * k)
    rms = float(np.sqrt(np.mean(((predicted - gbps) / gbps) ** 2)))
    basis = f"state-scaling sweep, {n} points"
    size, miss_cost = CACHE_PARAMETERS[points[0].variant]
    return [Estimate(size, cache, float(stderr[0]), n, rms, basis),
            Estimate(miss_cost, k, float(stderr[1]), n, rms, basis)]


def _control(meas: Measurements) -> list[Estimate]:
    latencies = [s for _, samples, _ in meas.control_plane for s in samples]
    out = []
    if latencies:
        n = len(latencies)
        out.append(Estimate("nic.command_latency_s", float(np.median(latencies)),
                            1.2533 * float(np.std(latencies, ddof=1 if n > 1 else 0)) / math.sqrt(n), n, 0.0,
                            f"{n} command latencies (median)"))
    for parameter in dict.fromkeys(p for p, _ in OPERATIONS.values()):
        rated = [(op, rate) for op, _, rate in meas.control_plane if rate and OPERATIONS[op][0] == parameter]
        if rated:
            op, rate = max(rated, key=lambda item: item[1] * OPERATIONS[item[0]][1])
            per_op = OPERATIONS[op][1]
            out.append(Estimate(parameter, 1.0 / (rate * per_op), float("nan"), len(rated), 0.0,
                                f"1 / highest measured {op} rate ({rate:g}/s)"
                                + (f" / {per_op} commands per operation" if per_op > 1 else "")))
    return out


@dataclass
class Calibration:
    parameters: ParameterSet
    estimates: list[Estimate]
    unconstrained: list[str]
    not_fitted: list[str]  # measurements read but outside the model, with the reason

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([e.__dict__ for e in self.estimates])


def calibrate(meas: Measurements, base: ParameterSet) -> Calibration:
    costs = _with(base.costs(), **{"host.clock_hz": meas.clock_hz, "net.mtu_bytes": float(meas.mtu)})
    estimates: list[Estimate] = []

    def adopt(found: list[Estimate]) -> None:
        nonlocal costs
        for e in found:
            estimates.append(e)
            costs = _with(costs, **{e.parameter: e.value})

    adopt(_crypto(meas))
    traffic = [r for r in meas.runs if r.connections_per_s == 0 and r.rekeys_per_s == 0]
    fitted: set[str] = set()
    for variant in FIT_ORDER:
        parameter = VARIANT_PARAMETER[variant]
        runs = [r for r in traffic if VARIANT_PARAMETER[r.variant] == parameter]
        if parameter in fitted or not runs:
            continue
        found = _slope(runs, costs, parameter, estimates)
        if found:
            adopt([found])
            fitted.add(parameter)
    handshakes = [r for r in meas.runs if r.connections_per_s > 0 and r.rekeys_per_s == 0]
    if handshakes:
        found = _slope(handshakes, costs, "host.tls_full_handshake_server_cycles", estimates)
        if found:
            adopt([found])
    rekey_runs = [r for r in meas.runs if r.rekeys_per_s > 0 and r.variant in REKEY_PARAMETER]
    for parameter in dict.fromkeys(REKEY_PARAMETER.values()):
        runs = [r for r in rekey_runs if REKEY_PARAMETER[r.variant] == parameter]
        found = _slope(runs, costs, parameter, estimates) if runs else None
        if found:
            adopt([found])
    cache = _cache(meas)
    adopt(cache)
    if cache:  # the engine's packet rate that makes the model reach T0 with no misses
        engine = make_variant(meas.state_scaling[0].variant, costs, KeysConfig())
        t0 = cache_fit(np.array([p.entries for p in meas.state_scaling]),
                       np.array([p.gbps for p in meas.state_scaling]))[2]
        pps = t0 * 1e9 / 8 / engine.mss  # full-size packets carrying T0 of payload
        adopt([Estimate("nic.crypto_pps", pps, float("nan"), len(meas.state_scaling), 0.0,
                        f"throughput before the cache cliff ({t0:g} Gb/s) over {engine.name} packets")])
    adopt(_control(meas))
    adopt([Estimate("host.clock_hz", meas.clock_hz, 0.0, 1, 0.0, "platform.clock_ghz")])
    if meas.mtu != base.parameters["net.mtu_bytes"].value:
        adopt([Estimate("net.mtu_bytes", float(meas.mtu), 0.0, 1, 0.0, "platform.mtu")])
    params = dict(base.parameters)
    for e in estimates:
        old = params[e.parameter]
        uncertainty = "" if math.isnan(e.stderr) else f" ± {e.stderr:.4g}"
        flag = {"weak": "; WEAK: standard error above a third of the value",
                "no error estimate": "; no error estimate"}.get(status(e.parameter, e.value, e.stderr), "")
        params[e.parameter] = Parameter(e.parameter, e.value, old.unit, "measured",
                                        f"calibrated from {meas.folder.name}: {e.basis}{flag}{uncertainty}")
    unconstrained = sorted(set(base.parameters) - {e.parameter for e in estimates})
    not_fitted = []
    if meas.loss_runs:
        not_fitted.append(f"{len(meas.loss_runs)} loss-injection runs: the model has no loss or retransmission "
                          "(kTLS offload record re-DMA included)")
    if any(p50 or p99 for _, _, p50, p99 in meas.latencies):
        not_fitted.append(f"{len(meas.latencies)} request/response latencies: the model adds crypto latency "
                          "only (their CPU cost was fitted)")
    return Calibration(ParameterSet(f"{base.name}+{meas.folder.name}",
                                    f"{base.name} calibrated with {meas.folder.name}", params),
                       estimates, unconstrained, not_fitted)


def write_parameter_set(params: ParameterSet, path) -> None:
    """Write a parameter set as TOML (the format of pspsim/costs/sets/)."""

    def quote(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = [f"name = {quote(params.name)}", f"description = {quote(params.description)}", ""]
    for p in params.parameters.values():
        lines += [f'[param."{p.name}"]', f"value = {p.value!r}", f"unit = {quote(p.unit)}",
                  f"kind = {quote(p.kind)}", f"source = {quote(p.source)}", ""]
    write_text("\n".join(lines), path)


def validate(meas: Measurements, params: ParameterSet) -> pd.DataFrame:
    """Every measured configuration re-run through the simulator's data plane:
    predicted against measured, with the relative error, and the prediction's
    standard error propagated from the parameters' (``predicted_stderr``:
    first order, each parameter moved by its standard error, independent)."""
    table = _predict(meas, params)
    variance = np.zeros(len(table))
    for name, stderr in parameter_stderrs(params).items():
        moved = _predict(meas, params.with_overrides({name: params.parameters[name].value + stderr}))
        variance += (moved["predicted"].to_numpy() - table["predicted"].to_numpy()) ** 2
    table.insert(table.columns.get_loc("predicted") + 1, "predicted_stderr", np.sqrt(variance))
    return table


_STDERR = re.compile(r" ± ([0-9.eE+-]+)$")


def parameter_stderrs(params: ParameterSet) -> dict[str, float]:
    """The standard errors a calibrated set carries (written by :func:`calibrate` as ``... ± SE`` in the source)."""
    found = {}
    for name, p in params.parameters.items():
        match = _STDERR.search(p.source)
        if match and float(match.group(1)) > 0:
            found[name] = float(match.group(1))
    return found


def _predict(meas: Measurements, params: ParameterSet) -> pd.DataFrame:
    """Each measured configuration through the data plane's own functions.

    CPU runs: the host's stack and protection cycles for the run's packets,
    bytes and records (:func:`~pspsim.model.dataplane.host_cycles`), plus its
    handshakes and rekeys.  State points: the NIC crypto engine
    (:func:`~pspsim.model.dataplane.engine_load`) offered the line rate in
    full-size packets, its context cache holding ``entries`` keys looked up
    at equal rates (miss ratio from :func:`~pspsim.model.cache.lru_miss_ratio`),
    one lookup per packet: the published sweep forwards packets one by one
    (XDP), with no TSO bursts to share a lookup."""
    from pspsim.model.cache import lru_miss_ratio
    from pspsim.model.dataplane import engine_load, host_cycles, wire_bytes

    costs = params.costs()
    rows = []
    for run in meas.runs:
        variant = make_variant(run.variant, costs, KeysConfig())
        records = run.bytes_per_s / costs.net_tls_record_bytes if variant.uses_records else 0.0
        stack, crypto = host_cycles(variant, costs, np.float64(run.packets_per_s), np.float64(run.bytes_per_s),
                                    np.float64(records))
        cycles = (float(stack) + float(crypto) + run.connections_per_s * variant.handshake_cycles()
                  + run.rekeys_per_s * variant.rekey_cycles())
        predicted = cycles / costs.host_clock_hz
        measured = run.cycles_per_s / costs.host_clock_hz
        rows.append({"kind": "cpu", "variant": run.variant, "configuration": run.label, "metric": "cores",
                     "group": run.group, "measured": measured, "predicted": predicted,
                     "relative_error": predicted / measured - 1, "source": run.source})
    for point in meas.state_scaling:
        variant = make_variant(point.variant, costs, KeysConfig())
        cache, miss_cost = variant.context_cache(costs)
        payload = costs.nic_line_rate_bps / 8
        packets = payload / variant.mss
        miss = 0.0
        if cache is not None:
            miss = float(lru_miss_ratio(np.ones(1), np.array([point.entries]), np.zeros(1, dtype=int),
                                        np.array([cache]), 1)[0])
        load = float(engine_load(costs, packets, packets, wire_bytes(variant, payload, packets, 0.0), miss,
                                 miss_cost))
        predicted = payload * 8 / max(load, 1.0) / 1e9
        rows.append({"kind": "state", "variant": point.variant, "configuration": f"{point.entries:g} entries",
                     "metric": "gbps", "group": point.group, "measured": point.gbps, "predicted": predicted,
                     "relative_error": predicted / point.gbps - 1, "source": point.source})
    return pd.DataFrame(rows)
