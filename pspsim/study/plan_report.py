"""The plan as a planner reads it: ``plan.md`` (question, answer, assumptions),
``plan.json`` (machine-readable) and a one-screen summary.

Each answer names the parameters that drive it, with their value, unit and
kind from the parameter set (measured, vendor, spec, derived, assumed, or
override when the scenario replaced it), and the scenario fields it rests
on (the user's own input).  Numbers are means over replications with their
95% Student-t interval; a quantity with one replication has no interval.
"""

from __future__ import annotations

import json
import math
from typing import Any

from pspsim.costs.params import ParameterSet
from pspsim.scenario import Scenario
from pspsim.study.plan_tables import MAX_SIMULATED_CONNECTIONS

#: The parameters and scenario fields each answer rests on.
DRIVERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "cores": (("host.clock_hz", "host.stack_cycles_per_packet", "host.aes_gcm_cycles_per_byte",
               "host.aes_gcm_cycles_per_call", "host.ipsec_sw_cycles_per_packet",
               "host.ipsec_crypto_offload_cycles_per_packet", "host.ipsec_packet_offload_cycles_per_packet",
               "host.offload_driver_cycles_per_packet", "host.tls_record_cycles", "host.tls_user_copy_cycles_per_byte",
               "host.ktls_sw_copy_cycles_per_byte", "host.tls_full_handshake_client_cycles",
               "host.tls_full_handshake_server_cycles", "host.psp_key_exchange_cycles", "host.tls_resumption_ratio"),
              ("workload.connections_per_host", "workload.message_bytes", "workload.messages_per_second",
               "workload.connection_lifetime")),
    "headroom": (("nic.psp_tx_key_capacity", "nic.ipsec_sa_capacity", "nic.ktls_tx_context_capacity",
                  "nic.ktls_rx_context_capacity"),
                 ("workload.connections_per_host", "workload.peers_per_host", "workload.connection_lifetime",
                  "keys.ipsec_sa_granularity")),
    "rotation": (("nic.cmd_psp_gen_spi_s", "nic.cmd_psp_tx_key_create_s", "nic.cmd_psp_tx_key_destroy_s",
                  "nic.cmd_psp_rotate_key_s", "nic.command_latency_s"),
                 ("keys.psp_rekey", "keys.psp_rekey_delay", "keys.psp_rekey_spread", "keys.psp_stale_notice",
                  "keys.psp_rotation_schedule", "run.window", "run.duration")),
    "storm": (("host.tls_full_handshake_client_cycles", "host.tls_full_handshake_server_cycles",
               "nic.cmd_psp_gen_spi_s", "nic.cmd_psp_tx_key_create_s", "nic.cmd_psp_tx_key_destroy_s"),
              ("keys.psp_rekey_delay", "keys.psp_rekey_spread", "keys.psp_rack_wave_gap",
               "workload.connections_per_host")),
    "command_rate": (("nic.cmd_psp_gen_spi_s", "nic.cmd_psp_tx_key_create_s", "nic.cmd_psp_tx_key_destroy_s",
                      "nic.cmd_psp_rotate_key_s", "nic.command_latency_s"),
                     ("keys.psp_rekey_delay", "keys.psp_rekey_spread", "workload.connections_per_host")),
    "overflow": (("nic.psp_tx_key_capacity", "nic.ipsec_sa_capacity", "nic.ktls_tx_context_capacity",
                  "nic.ktls_rx_context_capacity"),
                 ("keys.psp_on_full", "keys.ipsec_hw_offload", "keys.ipsec_sa_granularity",
                  "workload.connection_lifetime")),
}


def clean(value: Any) -> Any:
    """JSON-safe: NaN and infinity become null, numpy numbers plain numbers."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def plan_json(answers: dict[str, Any], scenario: Scenario, params: ParameterSet) -> str:
    record = dict(answers) | {"assumptions": assumptions(scenario, params)}
    return json.dumps(clean(record), indent=2, sort_keys=False) + "\n"


def assumptions(scenario: Scenario, params: ParameterSet) -> dict[str, Any]:
    """Per answer: its parameters (value, unit, kind, source) and its scenario fields (value)."""
    data = scenario.model_dump(mode="json")
    out = {}
    for answer, (names, fields) in DRIVERS.items():
        rows = [{"name": n, "value": params.parameters[n].value, "unit": params.parameters[n].unit,
                 "kind": params.parameters[n].kind} for n in names if n in params.parameters]
        values = {f: _field(data, f) for f in fields}
        out[answer] = {"parameters": rows, "scenario": values}
    return out


def _field(data: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        data = data[part]
    return data


# ---------------------------------------------------------------- text


def fmt(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    x = float(x)
    if x == 0:
        return "0"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def with_ci(stat: dict[str, Any] | None, scale: float = 1.0, digits: int = 3) -> str:
    if not stat:
        return "n/a"
    mean, lo, hi = (stat.get(k) for k in ("mean", "ci_low", "ci_high"))
    if mean is None or not math.isfinite(mean):
        return "n/a"
    if lo is None or hi is None or not math.isfinite(lo) or lo == hi:
        return fmt(mean * scale, digits)
    return f"{fmt(mean * scale, digits)} [{fmt(lo * scale, digits)}, {fmt(hi * scale, digits)}]"


def _duration(seconds: Any) -> str:
    if seconds is None:
        return "n/a"
    s = float(seconds)
    return f"{s:g} s" if s < 120 else f"{s / 60:.3g} min" if s < 7200 else f"{s / 3600:.3g} h"


def headline(answers: dict[str, Any]) -> list[str]:
    """The answers in one sentence each (the summary and the report's opening)."""
    current = answers["current"]
    lines = []
    psp = answers["variants"].get("psp")
    if psp and current != "psp":
        saving = psp["cores_saving_vs_current"]
        lines.append(f"Moving from {current} to PSP saves {with_ci(saving['per_host'])} cores per host "
                     f"({with_ci(saving['fleet'])} for the fleet of {answers['hosts']}; "
                     f"{with_ci(saving['fraction'], 100)} %); negative means PSP costs more.")
    if psp and psp.get("nic_headroom"):
        h = psp["nic_headroom"]
        lines.append(f"PSP NIC state peaks at {with_ci(h['entries_max'])} TX keys on the busiest host, "
                     f"{with_ci(h['used_fraction_max'], 100)} % of the {fmt(h['capacity'])}-entry table.")
    rot = answers["rotation"]
    if rot["found"]:
        lines.append(f"Rotate PSP device keys no faster than every {_duration(rot['min_safe_s'])} "
                     + (f"(stale connections at {_duration(rot['unsafe_below_s'])})." if rot["unsafe_below_s"]
                        else "(safe at the shortest period tested)."))
    else:
        lines.append(f"No rotation period up to {_duration(rot['range_s'][1])} is free of stale connections.")
    storm = answers["storms"]
    worst = storm["schedules"][storm["worst_schedule"]]
    lines.append(f"At that period the worst schedule ({storm['worst_schedule']}) peaks at "
                 f"{with_ci(worst['handshakes_per_s_peak'])} handshakes/s, command delay max "
                 f"{with_ci(worst['command_delay_max_us'])} us.")
    rate = answers["command_rate"]
    if rate["found"]:
        lines.append(f"NIC firmware must sustain at least {fmt(rate['tx_key_create_rate_per_s'])} TX key creates/s "
                     f"per NIC (all commands scaled together) for set-up delay p99 <= "
                     f"{fmt(rate['target_p99_us'] / 1000)} ms during a {rate['schedule']} rotation.")
    else:
        lines.append(f"No command rate tested meets set-up delay p99 <= {fmt(rate['target_p99_us'] / 1000)} ms.")
    for variant, o in answers["table_overflow"].items():
        what = o["dimension"].split(".")[-1].replace("_", " ")
        if o.get("overflow_at") is not None:
            how = "simulated" if o["simulated"] else "predicted"
            lines.append(f"{variant}: NIC table overflows at {fmt(o['overflow_at'])} {what} ({how}; today "
                         f"{fmt(o['today'])}).")
        else:
            lines.append(f"{variant}: {o['note']}.")
    return lines


def summary_text(answers: dict[str, Any]) -> str:
    rows = [f"pspsim plan: {answers['scenario']} ({answers['hosts']} hosts, {answers['replications']} replications, "
            f"current {answers['current']}); 95% intervals in brackets", ""]
    rows.append(f"{'variant':<22} {'cores/host':>26} {'saving/host vs current':>28}")
    for variant, v in answers["variants"].items():
        rows.append(f"{variant:<22} {with_ci(v['cores_per_host']):>26} "
                    f"{with_ci(v['cores_saving_vs_current']['per_host']):>28}")
    rows.append("")
    rows += [f"- {line}" for line in headline(answers)]
    return "\n".join(rows) + "\n"


def plan_markdown(answers: dict[str, Any], scenario: Scenario, params: ParameterSet,
                  figures: list[str]) -> str:
    a = assumptions(scenario, params)
    current = answers["current"]
    out = [f"# Capacity plan: {answers['scenario']}", "",
           f"Fleet of {answers['hosts']} hosts, {fmt(scenario.workload.connections_per_host.mean)} connections per "
           f"host to {fmt(scenario.workload.peers_per_host.mean)} peers, {_duration(scenario.run.duration)} simulated, "
           f"{answers['replications']} replications (common random numbers). Today's variant: `{current}`. "
           "Numbers are means with 95% Student-t intervals over replications in brackets. "
           "Generated by `pspsim plan` from the simulator's model; the answers are as good as the assumptions "
           "listed under each.", "", "## Answers in brief", ""]
    out += [f"- {line}" for line in headline(answers)]
    out += ["", *[f"![{f}]({f})" for f in figures], ""]

    out += ["## 1. How many cores does each variant take, and what do we save against today?", "",
            "| variant | cores per host | cores, fleet | saving per host vs current | saving, fleet "
            "| cores per 100 Gb/s |",
            "|---|---|---|---|---|---|"]
    for variant, v in answers["variants"].items():
        s = v["cores_saving_vs_current"]
        out.append(f"| {variant} | {with_ci(v['cores_per_host'])} | {with_ci(v['cores_fleet'])} | "
                   f"{with_ci(s['per_host'])} | {with_ci(s['fleet'])} | {with_ci(v['cores_per_100gbps'])} |")
    out += ["", "Savings are paired per replication (the same workload for every variant), so their interval is "
            "narrower than the difference of two separate intervals.", *_drivers(a["cores"])]

    out += ["## 2. How much NIC state per host, against each table's capacity?", "",
            "| variant | table | capacity | median host, peak | busiest host, peak | used at peak | headroom factor |",
            "|---|---|---|---|---|---|---|"]
    for variant, v in answers["variants"].items():
        h = v["nic_headroom"]
        if h:
            out.append(f"| {variant} | {h['table']} | {fmt(h['capacity'])} | {with_ci(h['entries_p50'])} | "
                       f"{with_ci(h['entries_max'])} | {with_ci(h['used_fraction_max'], 100)} % | "
                       f"{with_ci(h['headroom_factor'])}x |")
    out += ["", "The model reports the median and the busiest host in each window, so the 99th percentile across "
            "hosts lies between the two (`entries_p99_upper_bound` in plan.json is the busiest host). Variants "
            "without a NIC table are left out.", *_drivers(a["headroom"])]

    rot = answers["rotation"]
    bisections = sum(t["step"] != "coarse" for t in rot["trials"])
    out += ["## 3. How often can PSP device keys rotate without stale connections?", "",
            f"Answer: **{_duration(rot['min_safe_s']) if rot['found'] else 'none found'}**. {rot['note']}.", "",
            f"Method: periods {', '.join(fmt(p) for p in rot['coarse_s'])} s (geometric, from `run.window` to half "
            f"the run, the longest that still puts two rotations on every NIC), then {bisections} "
            f"bisection steps; {rot['runs_taken']} runs. A period is unsafe when any replication has "
            "`psp_stale_events` > 0 or `connections_lost` > 0. Resolution: "
            f"{fmt(rot['resolution_s'])} s." + ("" if rot["monotone_in_coarse_sweep"] else
                                                " Warning: the coarse sweep was not monotone."), "",
            "| period (s) | step | stale events per replication | connections lost per replication |",
            "|---|---|---|---|"]
    for t in sorted(rot["trials"], key=lambda t: t["period_s"]):
        out.append(f"| {fmt(t['period_s'])} | {t['step']} | {', '.join(fmt(r['psp_stale_events']) for r in t['runs'])} "
                   f"| {', '.join(fmt(r['connections_lost']) for r in t['runs'])} |")
    k = scenario.keys
    out += ["", f"Check: a connection's re-establishment after a rotation ends at most `psp_rekey_delay` + "
            f"`psp_rekey_spread` = {fmt(k.psp_rekey_delay + k.psp_rekey_spread)} s later, and it goes stale if the "
            "next rotation of its NIC comes first, so the boundary should sit just above that sum (plus NIC command "
            "time and window granularity).", *_drivers(a["rotation"])]

    storm = answers["storms"]
    out += [f"## 4. The reconnect storm at {_duration(storm['period_s'])}, by rotation schedule", "",
            "| schedule | handshakes/s, peak window | command delay max (us) | command delay p99 (us) | "
            "key reconnects/s | stale events |", "|---|---|---|---|---|---|"]
    for schedule, s in storm["schedules"].items():
        out.append(f"| {schedule} | {with_ci(s['handshakes_per_s_peak'])} | {with_ci(s['command_delay_max_us'])} | "
                   f"{with_ci(s['command_delay_p99_us'])} | {with_ci(s['key_reconnects_per_s'])} | "
                   f"{with_ci(s['psp_stale_events'])} |")
    out += ["", f"The worst schedule (the highest peak of handshakes per second) is `{storm['worst_schedule']}`; "
            "section 5 uses it.",
            *_drivers(a["storm"])]

    rate = answers["command_rate"]
    out += ["## 5. What NIC command rate keeps connection set-up delay p99 under the target?", ""]
    if rate["found"]:
        out.append(f"Answer: **{fmt(rate['tx_key_create_rate_per_s'])} TX key creates per second per NIC** (service "
                   f"time {fmt(1e6 / rate['tx_key_create_rate_per_s'])} us), i.e. every command's service time "
                   f"may be {fmt(rate['factor'])}x today's parameter and no more (fails at "
                   f"{fmt(rate['fails_at_factor'])}x).")
    else:
        out.append(f"Answer: none found. {rate['note']}.")
    out += ["", f"Target: set-up delay p99 <= {fmt(rate['target_p99_us'])} us during a `{rate['schedule']}` rotation "
            f"every {_duration(rate['period_s'])}. Proxy: `command_delay_p99_us` (the p99 of every NIC command's "
            "queueing + service + latency over the run): a PSP set-up waits for a GEN_SPI and then a TX key create "
            "on each NIC, so its own delay is at least this and about twice it when both queue. Method: every "
            "`nic.cmd_*_s` multiplied by one factor, powers of 4 from 1/16 up to the first at which the slowest PSP "
            "command alone outlasts the target, then bisection in log space; "
            f"{rate['runs_taken']} runs; a factor passes when every replication's p99 is under the target.", "",
            "| factor | step | command delay p99 (us) | meets target |", "|---|---|---|---|"]
    for t in sorted(rate["trials"], key=lambda t: t["factor"]):
        out.append(f"| {fmt(t['factor'])} | {t['step']} | {with_ci(t['p99_us'])} | {'yes' if t['ok'] else 'no'} |")
    out += _drivers(a["command_rate"])

    out += ["## 6. At what fan-out or connections per host do the offload tables overflow?", "",
            "| variant | grows with | today | overflows at | fits at | how | note |", "|---|---|---|---|---|---|---|"]
    for variant, o in answers["table_overflow"].items():
        out.append(f"| {variant} | `{o['dimension']}` | {fmt(o['today'])} | {fmt(o.get('overflow_at'))} | "
                   f"{fmt(o.get('fits_at'))} | {'simulated' if o['simulated'] else 'linear prediction'} | "
                   f"{o['note']} |")
    out += ["", "Overflow: any replication with `offload_fallbacks` > 0, `offload_failures` > 0 or "
            "`hosts_over_nic_capacity_peak` > 0 (kTLS: fallbacks and failures only, as its entries count TX and RX "
            "contexts together). Method: the linear prediction (today's value x capacity / today's peak entries), "
            "runs at 0.5, 0.8, 1.25 and 2 times it, then bisection; fan-out stops at the fleet's hosts - 1. "
            f"Above {MAX_SIMULATED_CONNECTIONS:,} live connections the prediction is given unsimulated.",
            *_drivers(a["overflow"])]
    return "\n".join(out) + "\n"


def _drivers(entry: dict[str, Any]) -> list[str]:
    params = ", ".join(f"`{p['name']}` = {fmt(p['value'])} {p['unit']} ({p['kind']})" for p in entry["parameters"])
    fields = ", ".join(f"`{f}` = {_value(v)}" for f, v in entry["scenario"].items())
    return ["", f"Assumptions. Parameters: {params}. Your scenario: {fields}.", ""]


def _value(v: Any) -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {fmt(x) if isinstance(x, (int, float)) else x}" for k, x in v.items()
                               if k in ("kind", "mean")) + "}"
    return fmt(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)
