"""Scenario files: TOML, validated in one place, with one-line errors.

A scenario describes the fleet, the workload, key management and which
variants to run; every field has a default, so a file states only what it
changes.  Durations are numbers of seconds or strings such as ``"90s"``,
``"30min"``, ``"24h"``, ``"2d"``.  Unknown keys, wrong types and impossible
values are refused with the field's dotted path and what is wrong.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from pspsim.files import read_toml
from pspsim.wire.errors import ConfigError

VARIANTS = ("psp", "ipsec-sw", "ipsec-crypto-offload", "ipsec-packet-offload", "tls-user", "ktls-sw",
            "ktls-offload", "plaintext")
_UNITS = {"s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600, "d": 86400, "ms": 1e-3, "us": 1e-6}
_DURATION = re.compile(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-z]*)\s*")


def _finite(seconds: float) -> float:
    if not math.isfinite(seconds):
        raise ValueError("a duration must be a finite number of seconds")
    return seconds


def _seconds(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("a duration must be a number of seconds or a string like '30min'")
    if isinstance(value, (int, float)):
        return _finite(float(value))
    if isinstance(value, str):
        match = _DURATION.fullmatch(value)
        if match and match.group(2) in _UNITS:
            return _finite(float(match.group(1)) * _UNITS[match.group(2)])
        if match and match.group(2) == "":
            return _finite(float(match.group(1)))
    raise ValueError(f"{value!r} is not a duration (examples: 90, '90s', '30min', '24h', '2d')")


_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def _plain_name(name: str) -> str:
    """``run.name`` names the folder results/<name>: no path, no '..', nothing hidden."""
    if not _PLAIN_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a plain name: use letters, digits, '.', '_' and '-' "
                         "(at most 100, not starting with '.' or '-'; no '/')")
    return name


Duration = Annotated[float, BeforeValidator(_seconds), Field(ge=0)]


class _Strict(BaseModel):
    # allow_inf_nan=False: every number read is finite (NaN and infinity are refused)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Distribution(_Strict):
    """A positive random quantity: fixed, exponential, lognormal or pareto."""

    kind: Literal["fixed", "exponential", "lognormal", "pareto"] = "fixed"
    mean: float = Field(ge=0, default=1.0)
    sigma: float = Field(ge=0, default=1.0)  # lognormal shape
    alpha: float = Field(gt=1, default=2.5)  # pareto shape (finite mean)


class FleetConfig(_Strict):
    racks: int = Field(gt=0, default=4)
    hosts_per_rack: int = Field(gt=0, default=8)
    host_link_gbps: float = Field(gt=0, default=100.0)
    spine_oversubscription: float = Field(ge=1, default=2.0)
    hop_latency_us: float = Field(ge=0, default=1.0)
    cores_per_host: int = Field(gt=0, default=64)

    @property
    def hosts(self) -> int:
        return self.racks * self.hosts_per_rack


class WorkloadConfig(_Strict):
    connections_per_host: Distribution = Distribution(kind="fixed", mean=1000)
    peers_per_host: Annotated[Distribution, BeforeValidator(lambda v: {"kind": "fixed", "mean": v}
                                                            if isinstance(v, (int, float)) and not isinstance(v, bool)
                                                            else v)] = Distribution(kind="fixed", mean=16)
    connection_lifetime: Duration = 1800.0
    traffic: Literal["rpc", "bulk"] = "rpc"
    message_bytes: Distribution = Distribution(kind="lognormal", mean=8192, sigma=1.0)
    messages_per_second: Distribution = Distribution(kind="exponential", mean=20)
    response_ratio: float = Field(ge=0, default=1.0)  # response bytes per request byte


class KeysConfig(_Strict):
    """Key management.  PSP follows Linux 6.18: one association per socket, so
    moving a connection to a new key opens a new connection (``psp_rekey =
    "reconnect"``); ``"in-place"`` models the proposed (not merged) rekey series
    (at most two associations per socket)."""

    psp_rotation_period: Duration = 86400.0
    psp_rotation_schedule: Literal["staggered", "synchronized", "rack-waves"] = "staggered"
    psp_rack_wave_gap: Duration = 60.0  # rack-waves: rack r rotates r * gap after rack 0
    psp_rekey: Literal["reconnect", "in-place"] = "reconnect"
    psp_rekey_delay: Duration = 30.0  # key-rotate-ntf to the first re-establishment (assumed)
    psp_rekey_spread: Duration = 300.0  # re-establishments spread uniformly over this (assumed)
    psp_stale_notice: Duration = 30.0  # a stale connection's application notices and reconnects (assumed)
    psp_before_upgrade: Literal["tls", "wait"] = "tls"  # traffic until both associations are installed
    psp_on_full: Literal["stay-tls", "fail"] = "stay-tls"  # tx-assoc fails: keep TLS, or fail the connection
    psp_tx_key_placement: Literal["descriptor", "nic-table"] = "nic-table"
    psp_version: Literal[0, 1] = 0
    ipsec_hw_offload: Literal["auto", "yes"] = "auto"  # strongSwan hw_offload: auto falls back to software
    ipsec_sa_granularity: Literal["host-pair", "connection"] = "host-pair"
    ipsec_child_rekey: Duration = 3600.0
    ipsec_rekey_jitter: float = Field(ge=0, lt=1, default=0.1)
    ipsec_rekey_overlap: Duration = 30.0
    ipsec_ike_rekey: Duration = 14400.0
    ipsec_pfs: bool = True
    tls_rekey: Literal["key-update", "reconnect"] = "key-update"
    tls_rekey_bytes: float = Field(gt=0, default=float(1 << 34))
    tls_rekey_interval: Duration = 3600.0


class PacketsConfig(_Strict):
    """The packet tier: real packets for a sample of connections."""

    hosts: list[int] | None = None  # connections touching these hosts; None: the whole fleet
    duration: Duration = 60.0  # simulated seconds of packets, from time 0
    max_connections: int = Field(gt=0, default=2000)
    link_buffer_bytes: int = Field(gt=0, default=4 << 20)  # per link, before drops


class CostsConfig(_Strict):
    parameter_set: str = "cx7-x86-2026"
    overrides: dict[str, float] = Field(default_factory=dict)


class RunConfig(_Strict):
    name: Annotated[str, AfterValidator(_plain_name)] = "scenario"
    seed: int = Field(ge=0, default=1)
    duration: Duration = 3600.0
    window: Duration = 60.0
    variants: list[Literal[VARIANTS]] = Field(default_factory=lambda: list(VARIANTS))  # type: ignore[valid-type]
    replications: int = Field(gt=0, default=1)

    @model_validator(mode="after")
    def _check(self) -> RunConfig:
        if self.window <= 0:
            raise ValueError("window must be positive")
        if self.duration < self.window:
            raise ValueError("duration must be at least one window")
        if not self.variants:
            raise ValueError("variants must name at least one variant")
        if len(set(self.variants)) != len(self.variants):
            raise ValueError("variants lists a variant twice")
        return self


class Scenario(_Strict):
    run: RunConfig = RunConfig()
    fleet: FleetConfig = FleetConfig()
    workload: WorkloadConfig = WorkloadConfig()
    keys: KeysConfig = KeysConfig()
    costs: CostsConfig = CostsConfig()
    packets: PacketsConfig = PacketsConfig()

    @model_validator(mode="before")
    @classmethod
    def _packet_span(cls, data: Any) -> Any:
        """``[packets] duration`` defaults to 60 s, or the run's duration when that is shorter."""
        if not isinstance(data, dict) or not isinstance(data.get("packets", {}), dict):
            return data
        if "duration" in data.get("packets", {}):
            return data
        run = data.get("run", {})
        try:
            run_duration = _seconds(run.get("duration", 3600.0)) if isinstance(run, dict) else 3600.0
        except ValueError:
            return data  # run.duration's own validation reports it
        if not run_duration < 60.0:
            return data
        return {**data, "packets": {**data.get("packets", {}), "duration": run_duration}}

    @model_validator(mode="after")
    def _check(self) -> Scenario:
        if self.fleet.hosts < 2:
            raise ValueError("fleet: one host has no peer to connect to; give at least 2 hosts "
                             "(racks x hosts_per_rack)")
        if self.workload.peers_per_host.mean >= self.fleet.hosts:
            raise ValueError(f"workload.peers_per_host must be below the {self.fleet.hosts} hosts of the fleet")
        for host in self.packets.hosts or []:
            if not 0 <= host < self.fleet.hosts:
                raise ValueError(f"packets.hosts: host {host} is not in the fleet (0..{self.fleet.hosts - 1})")
        if "psp" in self.run.variants and self.keys.psp_rotation_period < self.run.window:
            raise ValueError(f"keys.psp_rotation_period ({self.keys.psp_rotation_period:g} s) must be at least "
                             f"run.window ({self.run.window:g} s): shorten run.window")
        if self.packets.duration > self.run.duration:
            raise ValueError("packets.duration must not exceed run.duration")
        return self


def first_error(exc: ValidationError) -> str:
    """The first validation error as one line: dotted field path and what is wrong."""
    err = exc.errors()[0]
    path = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        message = "unknown key"
    elif "input" in err and err["type"] not in ("missing", "value_error") and not isinstance(err["input"], dict):
        message += f" (got {err['input']!r})"
    return f"{path}: {message}" if path else message


def scenario_from_dict(data: dict[str, Any], source: str = "scenario") -> Scenario:
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {first_error(exc)}") from None


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file (a ``[sweep]`` table in it is for ``pspsim sweep``:
    running the file as a scenario runs its base point)."""
    data = read_toml(path, "scenario file", ConfigError)
    data.pop("sweep", None)
    return scenario_from_dict(data, str(path))
