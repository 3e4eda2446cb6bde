"""Measurement folders: what a user with ConnectX-7 hardware records, read in one go.

A folder holds ``measurements.toml`` and the raw outputs it names (paths
relative to the folder).  Every entry can give numbers directly (for
published figures) or point at the tools' own outputs, parsed by
:mod:`pspsim.calibration.parsers`::

    [platform]                      # clock_ghz is required; the rest documents the host
    name = "dut-01"; cpu = "Xeon Gold 6348"; clock_ghz = 2.6; nic = "ConnectX-7"; mtu = 1500

    [[crypto]]                      # openssl speed -evp aes-128-gcm (one core)
    file = "openssl-speed.txt"

    [[throughput]]                  # one run: a variant, cores, flows
    variant = "ipsec-sw"; cores = 1; flows = 1
    gbps = 6.0                      # or iperf3 = "runs/a.json"
    cpu_cores = 1.0                 # or mpstat = "runs/a-mpstat.json", or perf = "runs/a-perf.csv" (cycles)
    packets_per_s = 0               # or ethtool_before / ethtool_after (+ seconds); default: bytes / MSS
    source = "where the numbers come from"

    [[handshakes]]                  # connection-rate runs (neper tcp_crr with TLS or PSP)
    variant = "tls-user"; connections_per_s = 20000; cpu_cores = 8.0; gbps = 0.5

    [[rekeys]]                      # rekey-rate runs (PSP rekey, IKE CHILD_SA with PFS, TLS KeyUpdate)
    variant = "ipsec-sw"; rekeys_per_s = 500; cpu_cores = 2.0; gbps = 1.0

    [[request_response]]            # neper tcp_rr / netperf TCP_RR: small messages both ways
    variant = "psp"; transactions_per_s = 400000; request_bytes = 64; response_bytes = 64
    cpu_cores = 4.0; latency_p50_us = 28; latency_p99_us = 61   # latencies are reported, not fitted

    [[loss_injection]]              # tc netem loss: read and kept; not fitted (no retransmission in the model)
    variant = "ktls-offload"; loss_percent = 1.0; gbps = 60; cpu_cores = 6; retransmits_per_s = 50000

    [[state_scaling]]               # throughput against concurrent offloaded keys/SAs
    variant = "ipsec-packet-offload"; entries = 2000; gbps = 190.5

Every entry may carry ``group = "name"``: entries with the same group are
repeats of one run configuration, and cross-validation holds them out
together.  Without it each entry (each point of a sweep) is its own group.

    [[control_plane]]               # NIC firmware commands (ip xfrm state add ... offload, PSP rx-assoc, ...)
    operation = "ipsec_sa_add"; latency_us = [12.0, 15.5, 11.2]   # or file = "cp.txt", one per line
    rate_per_s = 95000              # highest rate of this operation: fits its command's service time

``operation`` is one of :data:`OPERATIONS`: each names the command whose
service time a measured rate fits, and how many such commands one operation
issues ("ktls_connection" is a connection opened and closed with kTLS
offload, as in mlx5's connections-per-second test: a create and a destroy).

The whole folder is parsed and checked before anything is returned; a
problem is one message naming the file, line or entry and field.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pspsim.calibration.parsers import (
    MeasurementError,
    ethtool_stats,
    iperf3_json,
    mpstat_json,
    openssl_speed,
    perf_stat_csv,
)
from pspsim.scenario import VARIANTS, first_error

Variant = Literal[VARIANTS]  # type: ignore[valid-type]

#: Control-plane operation -> (the service-time parameter its rate fits, commands of that time per operation).
OPERATIONS: dict[str, tuple[str, int]] = {
    "psp_rx_assoc": ("nic.cmd_psp_gen_spi_s", 1),  # MLX5_CMD_OP_PSP_GEN_SPI
    "psp_key_rotate": ("nic.cmd_psp_rotate_key_s", 1),  # MLX5_CMD_OP_PSP_ROTATE_KEY
    "psp_tx_assoc": ("nic.cmd_psp_tx_key_create_s", 1),  # mlx5_create_encryption_key
    "psp_tx_key_destroy": ("nic.cmd_psp_tx_key_destroy_s", 1),
    "ipsec_sa_add": ("nic.cmd_ipsec_sa_add_s", 1),  # ip xfrm state add ... offload
    "ipsec_sa_delete": ("nic.cmd_ipsec_sa_delete_s", 1),
    "ktls_context_create": ("nic.cmd_ktls_context_create_s", 1),
    "ktls_context_destroy": ("nic.cmd_ktls_context_destroy_s", 1),
    "ktls_connection": ("nic.cmd_ktls_context_create_s", 2),  # create + destroy, even split
}


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str = ""
    group: str = ""  # entries sharing a group are one run configuration (repeats): held out together


class PlatformEntry(_Entry):
    clock_ghz: float = Field(gt=0)
    name: str = ""
    cpu: str = ""
    cores: int | None = None
    nic: str = ""
    firmware: str = ""
    kernel: str = ""
    mtu: int = Field(gt=100, default=1500)


class CryptoEntry(_Entry):
    file: str | None = None
    algorithm: str = "aes-128-gcm"
    bytes_per_s: dict[int, float] | None = None


class ThroughputEntry(_Entry):
    variant: Variant
    cores: float = Field(gt=0, default=1)
    flows: int = Field(gt=0, default=1)
    gbps: float | None = Field(gt=0, default=None)
    iperf3: str | None = None
    cpu_cores: float | None = Field(gt=0, default=None)
    mpstat: str | None = None
    perf: str | None = None
    seconds: float | None = Field(gt=0, default=None)
    packets_per_s: float | None = Field(gt=0, default=None)
    ethtool_before: str | None = None
    ethtool_after: str | None = None


class HandshakeEntry(ThroughputEntry):
    connections_per_s: float = Field(gt=0)
    gbps: float | None = Field(ge=0, default=0.0)


class RekeyEntry(ThroughputEntry):
    rekeys_per_s: float = Field(gt=0)
    gbps: float | None = Field(ge=0, default=0.0)


class RequestResponseEntry(ThroughputEntry):
    transactions_per_s: float = Field(gt=0)
    request_bytes: int = Field(gt=0, default=64)
    response_bytes: int = Field(gt=0, default=64)
    latency_p50_us: float | None = Field(gt=0, default=None)
    latency_p99_us: float | None = Field(gt=0, default=None)


class LossEntry(ThroughputEntry):
    loss_percent: float = Field(ge=0, le=100)
    retransmits_per_s: float | None = Field(ge=0, default=None)


class StateEntry(_Entry):
    variant: Variant
    entries: float = Field(gt=0)
    gbps: float = Field(gt=0)


class ControlEntry(_Entry):
    operation: Literal[tuple(OPERATIONS)]  # type: ignore[valid-type]
    latency_us: list[float] | None = None
    file: str | None = None
    rate_per_s: float | None = Field(gt=0, default=None)


class MeasurementFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    platform: PlatformEntry
    crypto: list[CryptoEntry] = []
    throughput: list[ThroughputEntry] = []
    handshakes: list[HandshakeEntry] = []
    rekeys: list[RekeyEntry] = []
    request_response: list[RequestResponseEntry] = []
    loss_injection: list[LossEntry] = []
    state_scaling: list[StateEntry] = []
    control_plane: list[ControlEntry] = []


@dataclass(frozen=True)
class TrafficRun:
    """One throughput or connection-rate run, reduced to rates on the measured host."""

    variant: str
    cores: float
    gbps: float
    bytes_per_s: float
    packets_per_s: float
    cycles_per_s: float
    connections_per_s: float
    source: str
    label: str
    rekeys_per_s: float = 0.0
    group: str = ""  # the run configuration it belongs to (cross-validation holds a group out at once)


@dataclass(frozen=True)
class Measurements:
    folder: Path
    clock_hz: float
    mtu: int
    platform: dict
    crypto: dict[str, dict[int, float]]
    runs: list[TrafficRun]
    state_scaling: list[StateEntry]
    control_plane: list[tuple[str, list[float], float | None]]
    latencies: list[tuple[str, float, float | None, float | None]]  # request/response: label, tps, p50, p99 (s)
    loss_runs: list[tuple[TrafficRun, float]]  # read and kept; the model has no retransmission to fit


def load_measurements(folder: str | Path) -> Measurements:
    folder = Path(folder)
    index = folder / "measurements.toml" if folder.is_dir() else folder
    folder = index.parent
    try:
        data = tomllib.loads(index.read_text())
    except FileNotFoundError:
        raise MeasurementError(f"{index}: no such file (a measurement folder holds measurements.toml)") from None
    except tomllib.TOMLDecodeError as exc:
        raise MeasurementError(f"{index}: not valid TOML: {exc}") from None
    try:
        spec = MeasurementFile.model_validate(data)
    except ValidationError as exc:
        raise MeasurementError(f"{index}: {first_error(exc)}") from None

    def read(entry: str, field: str, relative: str) -> str:
        path = folder / relative
        try:
            return path.read_text()
        except (FileNotFoundError, IsADirectoryError, UnicodeDecodeError):
            raise MeasurementError(f"{index}: {entry}.{field}: cannot read {path}") from None

    clock = spec.platform.clock_ghz * 1e9
    crypto: dict[str, dict[int, float]] = {}
    for i, c in enumerate(spec.crypto):
        if c.file:
            crypto.update(openssl_speed(read(f"crypto[{i}]", "file", c.file), str(folder / c.file)))
        elif c.bytes_per_s:
            crypto[c.algorithm.lower()] = {int(k): float(v) for k, v in c.bytes_per_s.items()}
        else:
            raise MeasurementError(f"{index}: crypto[{i}]: give file or bytes_per_s")
    runs = [_traffic(e, f"throughput[{i}]", read, clock, spec.platform.mtu, index, folder)
            for i, e in enumerate(spec.throughput)]
    runs += [_traffic(e, f"handshakes[{i}]", read, clock, spec.platform.mtu, index, folder)
             for i, e in enumerate(spec.handshakes)]
    runs += [_traffic(e, f"rekeys[{i}]", read, clock, spec.platform.mtu, index, folder)
             for i, e in enumerate(spec.rekeys)]
    latencies = []
    for i, e in enumerate(spec.request_response):
        # Small messages both ways: the bytes and packets of the transactions.
        costs = _costs(spec.platform.mtu)
        mss = _mss(e.variant, costs)
        packets = e.transactions_per_s * (-(-e.request_bytes // mss) - (-e.response_bytes // mss))
        payload = e.transactions_per_s * (e.request_bytes + e.response_bytes)
        entry = e.model_copy(update={"gbps": payload * 8 / 1e9, "iperf3": None,
                                     "packets_per_s": e.packets_per_s or packets})
        run = _traffic(entry, f"request_response[{i}]", read, clock, spec.platform.mtu, index, folder)
        runs.append(run)
        latencies.append((run.label, e.transactions_per_s, (e.latency_p50_us or 0) * 1e-6 or None,
                          (e.latency_p99_us or 0) * 1e-6 or None))
    loss_runs = [(_traffic(e, f"loss_injection[{i}]", read, clock, spec.platform.mtu, index, folder), e.loss_percent)
                 for i, e in enumerate(spec.loss_injection)]
    control = []
    for i, command in enumerate(spec.control_plane):
        if command.file:
            text = read(f"control_plane[{i}]", "file", command.file)
            try:
                samples = [float(x) for x in text.split()]
            except ValueError:
                raise MeasurementError(f"{folder / command.file}: latencies must be numbers (microseconds)") from None
        else:
            samples = list(command.latency_us or [])
        if not samples and command.rate_per_s is None:
            raise MeasurementError(f"{index}: control_plane[{i}]: give latency_us, file or rate_per_s")
        control.append((command.operation, [s * 1e-6 for s in samples], command.rate_per_s))
    state = [p.model_copy(update={"group": p.group or f"state_scaling[{i}]"}) for i, p in enumerate(spec.state_scaling)]
    return Measurements(folder, clock, spec.platform.mtu, spec.platform.model_dump(), crypto, runs,
                        state, control, latencies, loss_runs)


def _costs(mtu: int):
    from pspsim.costs.params import load_parameter_set

    return load_parameter_set().with_overrides({"net.mtu_bytes": mtu}).costs()


def _mss(variant: str, costs) -> float:
    from pspsim.model.variants import make_variant
    from pspsim.scenario import KeysConfig

    return make_variant(variant, costs, KeysConfig()).mss


def _traffic(e: ThroughputEntry, where: str, read, clock: float, mtu: int, index: Path, folder: Path) -> TrafficRun:
    seconds = e.seconds
    if e.iperf3:
        result = iperf3_json(read(where, "iperf3", e.iperf3), str(folder / e.iperf3))
        gbps, seconds = result["bits_per_second"] / 1e9, seconds or result["seconds"]
    elif e.gbps is not None:
        gbps = e.gbps
    else:
        raise MeasurementError(f"{index}: {where}: give gbps or iperf3")
    if e.perf:
        events = perf_stat_csv(read(where, "perf", e.perf), str(folder / e.perf))
        if "cycles" not in events or not seconds:
            raise MeasurementError(f"{index}: {where}.perf: needs a cycles count and the run's seconds")
        cycles = events["cycles"] / seconds
    elif e.mpstat:
        cycles = mpstat_json(read(where, "mpstat", e.mpstat), str(folder / e.mpstat)) * clock
    elif e.cpu_cores is not None:
        cycles = e.cpu_cores * clock
    else:
        raise MeasurementError(f"{index}: {where}: give cpu_cores, mpstat or perf")
    bytes_per_s = gbps * 1e9 / 8
    if e.ethtool_before or e.ethtool_after:
        if not (e.ethtool_before and e.ethtool_after and seconds):
            raise MeasurementError(f"{index}: {where}: ethtool_before, ethtool_after and seconds go together")
        before = ethtool_stats(read(where, "ethtool_before", e.ethtool_before), str(folder / e.ethtool_before))
        after = ethtool_stats(read(where, "ethtool_after", e.ethtool_after), str(folder / e.ethtool_after))
        try:
            packets = sum(after[k] - before[k] for k in ("rx_packets", "tx_packets")) / seconds
        except KeyError as exc:
            raise MeasurementError(f"{index}: {where}: ethtool counters lack {exc}") from None
    elif e.packets_per_s is not None:
        packets = e.packets_per_s
    else:
        packets = bytes_per_s / _mss(e.variant, _costs(mtu))
    connections = getattr(e, "connections_per_s", 0.0)
    rekeys = getattr(e, "rekeys_per_s", 0.0)
    label = (f"{e.variant} {e.cores:g} cores" + (f", {connections:g} conn/s" if connections else "")
             + (f", {rekeys:g} rekeys/s" if rekeys else ""))
    return TrafficRun(e.variant, e.cores, gbps, bytes_per_s, packets, cycles, connections, e.source, label, rekeys,
                      e.group or where)
