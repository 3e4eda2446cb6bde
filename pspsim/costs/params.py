"""Versioned parameter sets: every cost number with its unit, kind and source.

A parameter set is a TOML file (``pspsim/costs/sets/NAME.toml``, or any
path) with one ``[param."group.name"]`` table per parameter holding
``value``, ``unit``, ``kind`` and ``source``.  :class:`Costs` is the typed
view the model reads; its fields are exactly the parameter names with the
dot replaced by an underscore, so a set that lacks a parameter, or has one
the model does not know, is refused when it is loaded.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pspsim.files import read_toml
from pspsim.wire.errors import ConfigError

SETS_DIR = Path(__file__).parent / "sets"
DEFAULT_SET = "cx7-x86-2026"
KINDS = ("measured", "vendor", "spec", "derived", "assumed")


@dataclass(frozen=True)
class Parameter:
    name: str
    value: float
    unit: str
    kind: str
    source: str


@dataclass(frozen=True)
class Costs:
    """The numbers the model uses (one field per parameter of a set)."""

    host_clock_hz: float
    host_stack_cycles_per_packet: float
    host_aes_gcm_cycles_per_byte: float
    host_aes_gcm_cycles_per_call: float
    host_ipsec_sw_cycles_per_packet: float
    host_ipsec_crypto_offload_cycles_per_packet: float
    host_ipsec_packet_offload_cycles_per_packet: float
    host_tls_record_cycles: float
    host_tls_user_copy_cycles_per_byte: float
    host_ktls_sw_copy_cycles_per_byte: float
    host_offload_driver_cycles_per_packet: float
    host_tls_full_handshake_client_cycles: float
    host_tls_full_handshake_server_cycles: float
    host_tls_resumed_handshake_client_cycles: float
    host_tls_resumed_handshake_server_cycles: float
    host_tls_resumption_ratio: float
    host_tls_key_update_cycles: float
    host_ike_sa_setup_initiator_cycles: float
    host_ike_sa_setup_responder_cycles: float
    host_ike_sa_rekey_cycles: float
    host_ike_child_rekey_cycles_pfs: float
    host_ike_child_rekey_cycles: float
    host_psp_key_exchange_cycles: float
    host_ipsec_sa_state_bytes: float
    host_tls_user_state_bytes: float
    host_ktls_state_bytes: float
    host_psp_assoc_state_bytes: float
    nic_line_rate_bps: float
    nic_crypto_bps: float
    nic_crypto_pps: float
    nic_ipsec_sa_cache_entries: float
    nic_ipsec_sa_miss_cost: float
    nic_psp_tx_key_cache_entries: float
    nic_psp_tx_key_miss_cost: float
    nic_ktls_context_cache_entries: float
    nic_ktls_context_miss_cost: float
    nic_cache_miss_latency_s: float
    nic_psp_tx_key_capacity: float
    nic_ipsec_sa_capacity: float
    nic_ktls_tx_context_capacity: float
    nic_ktls_rx_context_capacity: float
    nic_ipsec_sa_bytes: float
    nic_psp_tx_key_bytes: float
    nic_ktls_context_bytes: float
    nic_psp_device_key_bytes: float
    nic_psp_descriptor_key_bytes: float
    nic_cmd_psp_gen_spi_s: float
    nic_cmd_psp_rotate_key_s: float
    nic_cmd_psp_tx_key_create_s: float
    nic_cmd_psp_tx_key_destroy_s: float
    nic_cmd_ipsec_sa_add_s: float
    nic_cmd_ipsec_sa_delete_s: float
    nic_cmd_ktls_context_create_s: float
    nic_cmd_ktls_context_destroy_s: float
    nic_command_latency_s: float
    nic_crypto_latency_s: float
    net_mtu_bytes: float
    net_tls_record_bytes: float
    net_tso_max_bytes: float

    @property
    def tls_handshake_client_cycles(self) -> float:
        """Mean TLS handshake cost of the client end, weighted by the resumption ratio."""
        r = self.host_tls_resumption_ratio
        return (1 - r) * self.host_tls_full_handshake_client_cycles + r * self.host_tls_resumed_handshake_client_cycles

    @property
    def tls_handshake_server_cycles(self) -> float:
        """Mean TLS handshake cost of the server end, weighted by the resumption ratio."""
        r = self.host_tls_resumption_ratio
        return (1 - r) * self.host_tls_full_handshake_server_cycles + r * self.host_tls_resumed_handshake_server_cycles


PARAMETER_NAMES = tuple(f.name.replace("_", ".", 1) for f in dataclasses.fields(Costs))


def field_name(parameter: str) -> str:
    """The :class:`Costs` field of a parameter name ("nic.command_latency_s" -> "nic_command_latency_s")."""
    return parameter.replace(".", "_", 1)


@dataclass(frozen=True)
class ParameterSet:
    name: str
    description: str
    parameters: Mapping[str, Parameter]

    def costs(self) -> Costs:
        return Costs(**{field_name(n): self.parameters[n].value for n in PARAMETER_NAMES})

    def with_overrides(self, overrides: Mapping[str, float]) -> ParameterSet:
        """A copy with single values replaced (kind becomes 'override')."""
        params = dict(self.parameters)
        for name, value in overrides.items():
            if name not in params:
                raise ConfigError(f"unknown cost parameter {name!r}; see 'pspsim params show'")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0:
                raise ConfigError(f"cost parameter {name!r} must be a non-negative number, got {value!r}")
            old = params[name]
            params[name] = Parameter(name, float(value), old.unit, "override", "scenario override")
        return ParameterSet(self.name, self.description, params)

    def rows(self) -> list[dict[str, object]]:
        return [dataclasses.asdict(p) for p in self.parameters.values()]


def load_parameter_set(name_or_path: str | Path = DEFAULT_SET) -> ParameterSet:
    """Load a shipped set by name, or a TOML file by path; errors name the problem."""
    path = Path(name_or_path)
    if not path.suffix:
        path = SETS_DIR / f"{name_or_path}.toml"

    def missing() -> str:
        shipped = ", ".join(sorted(p.stem for p in SETS_DIR.glob("*.toml")))
        return f"no parameter set {str(name_or_path)!r} (shipped: {shipped})"

    data = read_toml(path, "parameter set file", ConfigError, missing)
    table = data.get("param", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: 'param' must be tables [param.\"group.name\"]")
    for key in ("name", "description"):
        if not isinstance(data.get(key, ""), str):
            raise ConfigError(f"{path}: {key} must be a string")
    params = {}
    for name, entry in table.items():
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: param {name!r} must be a table with value, unit, kind and source")
        missing = {"value", "unit", "kind", "source"} - set(entry)
        if missing:
            raise ConfigError(f"{path}: param {name!r} lacks {', '.join(sorted(missing))}")
        if entry["kind"] not in KINDS:
            raise ConfigError(f"{path}: param {name!r}: kind must be one of {', '.join(KINDS)}")
        if isinstance(entry["value"], bool) or not isinstance(entry["value"], (int, float)) \
                or not math.isfinite(entry["value"]):
            raise ConfigError(f"{path}: param {name!r}: value must be a finite number")
        for key in ("unit", "source"):
            if not isinstance(entry[key], str):
                raise ConfigError(f"{path}: param {name!r}: {key} must be a string")
        params[name] = Parameter(name, float(entry["value"]), entry["unit"], entry["kind"], entry["source"])
    unknown = set(params) - set(PARAMETER_NAMES)
    absent = set(PARAMETER_NAMES) - set(params)
    if unknown or absent:
        problems = [f"unknown {sorted(unknown)}"] if unknown else []
        problems += [f"missing {sorted(absent)}"] if absent else []
        raise ConfigError(f"{path}: parameters {'; '.join(problems)}")
    return ParameterSet(data.get("name", path.stem), data.get("description", ""), params)
