"""The protocol variants, each one class behind one interface.

A variant answers, from the cost model: how many bytes it adds per packet
and per record (measured by :mod:`pspsim.wire`), which CPU cycles a host
spends per packet, byte, record, handshake and rekey, what per-connection
or per-SA state it keeps on the NIC and on the host, and which NIC
commands connection set-up, teardown and rekeys cost.  Adding a variant is
adding one class here and one row to the design table.

Assumptions common to all: TCP over IPv4 with a 1,500-byte MTU; the host
stack's per-packet cost is paid by every variant (plaintext included); the
NIC's crypto engine is used only by offloaded variants.
"""

from __future__ import annotations

from dataclasses import dataclass

from pspsim.costs.params import Costs
from pspsim.wire.overhead import esp_overhead, psp_overhead
from pspsim.wire.tls import tls_record_overhead

IP_TCP_HEADERS = 40  # IPv4 20 + TCP 20


@dataclass(frozen=True)
class Variant:
    """Base class; subclasses set the class attributes and override what differs."""

    costs: Costs
    name = "plaintext"
    crypto_on_nic = False  # does the NIC crypto engine carry the bytes?
    per_packet_overhead = 0  # bytes added to every packet (PSP, ESP)
    per_record_overhead = 0  # bytes added to every TLS record
    uses_records = False
    sa_based = False  # IPsec: state per SA (host pair or connection) rather than per connection

    @property
    def mss(self) -> float:
        """TCP payload bytes per packet."""
        return self.costs.net_mtu_bytes - IP_TCP_HEADERS - self.per_packet_overhead

    # CPU ---------------------------------------------------------------------
    def crypto_cycles(self, packets, payload_bytes, records):
        """Cycles per second spent on protection, beyond the plain stack."""
        return 0.0 * packets

    def handshake_cycles(self) -> float:
        """Cycles one endpoint spends to set up one connection's protection."""
        return 0.0

    def rekey_cycles(self) -> float:
        """Cycles one endpoint spends per rekey of one connection or SA."""
        return 0.0

    # State -------------------------------------------------------------------
    nic_entries_per_connection = 0  # per endpoint
    nic_bytes_per_entry = 0.0
    nic_fixed_bytes = 0.0
    host_bytes_per_connection = 0.0
    commands_per_setup = 0  # NIC commands per endpoint per connection (or SA pair) set-up
    commands_per_teardown = 0
    commands_per_rekey = 0
    nic_capacity = float("inf")

    fallback = "plaintext"  # the variant whose path traffic takes when this one's offload is not available

    def nic_table_lookups(self) -> bool:
        """Do data packets look their key up in a NIC table (and so in its cache)?"""
        return self.nic_entries_per_connection > 0

    def lookups_tx(self) -> float:
        """1 if transmitted packets look a key up in a NIC table, else 0."""
        return 0.0

    def lookups_rx(self) -> float:
        """1 if received packets look a key up in a NIC table, else 0."""
        return 0.0

    def key_per_connection(self) -> bool:
        """Is each connection its own key in the NIC cache (else one key per host pair)?"""
        return True

    def context_cache(self, costs: Costs) -> tuple[float | None, float]:
        """(entries, miss cost in engine packet-times) of the NIC context cache the keys go through."""
        return None, 0.0


class Plaintext(Variant):
    name = "plaintext"


@dataclass(frozen=True)
class Psp(Variant):
    """PSP: inline NIC crypto; RX keys derived (no per-connection RX state);
    TX key per connection in the descriptor or in a NIC table (parameter)."""

    tx_key_placement: str = "nic-table"
    name = "psp"
    crypto_on_nic = True
    per_packet_overhead = psp_overhead("transport", 4, False, 1000)

    def crypto_cycles(self, packets, payload_bytes, records):
        return packets * self.costs.host_offload_driver_cycles_per_packet

    fallback = "tls-user"  # the connection stays on the userspace TLS it started with (fbthrift/Fizz)

    def handshake_cycles(self) -> float:  # TLS handshake, then the PSP upgrade
        return _tls_handshake_per_end(self.costs) + self.costs.host_psp_key_exchange_cycles

    def lookups_tx(self) -> float:  # TX keys in a NIC table; RX keys are derived, never looked up
        return 1.0 if self.tx_key_placement == "nic-table" else 0.0

    def context_cache(self, costs: Costs) -> tuple[float | None, float]:
        return costs.nic_psp_tx_key_cache_entries, costs.nic_psp_tx_key_miss_cost

    def rekey_cycles(self) -> float:
        return self.costs.host_psp_key_exchange_cycles

    @property
    def nic_entries_per_connection(self) -> int:  # type: ignore[override]
        return 1 if self.tx_key_placement == "nic-table" else 0

    @property
    def nic_bytes_per_entry(self) -> float:  # type: ignore[override]
        return self.costs.nic_psp_tx_key_bytes

    @property
    def nic_fixed_bytes(self) -> float:  # type: ignore[override]
        return self.costs.nic_psp_device_key_bytes

    @property
    def host_bytes_per_connection(self) -> float:  # type: ignore[override]
        return self.costs.host_psp_assoc_state_bytes + self.costs.host_ktls_state_bytes  # TLS socket kept for control

    @property
    def commands_per_setup(self) -> int:  # type: ignore[override]
        return 1 + self.nic_entries_per_connection  # rx_spi_alloc (+ tx_key_add)

    @property
    def commands_per_teardown(self) -> int:  # type: ignore[override]
        return self.nic_entries_per_connection

    @property
    def commands_per_rekey(self) -> int:  # type: ignore[override]
        return 1 + 2 * self.nic_entries_per_connection  # new SPI (+ add new TX key, delete old)

    @property
    def nic_capacity(self) -> float:  # type: ignore[override]
        return self.costs.nic_psp_tx_key_capacity


@dataclass(frozen=True)
class IpsecSoftware(Variant):
    """Linux xfrm in software; SA pair per host pair or per connection."""

    name = "ipsec-sw"
    sa_based = True
    per_packet_overhead = esp_overhead("transport", 4, False, 1000)
    pfs: bool = True
    sa_per_connection: bool = False

    def key_per_connection(self) -> bool:
        return self.sa_per_connection

    def crypto_cycles(self, packets, payload_bytes, records):
        c = self.costs
        return packets * (self.extra_cycles_per_packet + c.host_aes_gcm_cycles_per_call) \
            + payload_bytes * c.host_aes_gcm_cycles_per_byte

    @property
    def extra_cycles_per_packet(self) -> float:
        return self.costs.host_ipsec_sw_cycles_per_packet

    def handshake_cycles(self) -> float:  # a CHILD_SA for the new SA pair
        return self.rekey_cycles()

    def rekey_cycles(self) -> float:
        c = self.costs
        return c.host_ike_child_rekey_cycles_pfs if self.pfs else c.host_ike_child_rekey_cycles

    @property
    def host_bytes_per_connection(self) -> float:  # per SA pair, both directions
        return 2 * self.costs.host_ipsec_sa_state_bytes


@dataclass(frozen=True)
class IpsecCryptoOffload(IpsecSoftware):
    """NIC encrypts; the host still builds ESP.  SA context on the NIC."""

    name = "ipsec-crypto-offload"
    crypto_on_nic = True

    def crypto_cycles(self, packets, payload_bytes, records):
        return packets * self.extra_cycles_per_packet

    @property
    def extra_cycles_per_packet(self) -> float:
        return self.costs.host_ipsec_crypto_offload_cycles_per_packet

    nic_entries_per_connection = 2  # inbound and outbound SA per SA pair
    commands_per_setup = 2
    commands_per_teardown = 2
    commands_per_rekey = 4  # install the new pair, delete the old

    @property
    def nic_bytes_per_entry(self) -> float:  # type: ignore[override]
        return self.costs.nic_ipsec_sa_bytes

    @property
    def nic_capacity(self) -> float:  # type: ignore[override]
        return self.costs.nic_ipsec_sa_capacity

    fallback = "ipsec-sw"  # strongSwan hw_offload = auto: the SA runs in software ESP

    def lookups_tx(self) -> float:  # outbound SA
        return 1.0

    def lookups_rx(self) -> float:  # inbound SA
        return 1.0

    def context_cache(self, costs: Costs) -> tuple[float | None, float]:
        return costs.nic_ipsec_sa_cache_entries, costs.nic_ipsec_sa_miss_cost


@dataclass(frozen=True)
class IpsecPacketOffload(IpsecCryptoOffload):
    """NIC does all of ESP, with replay and lifetime state on the NIC."""

    name = "ipsec-packet-offload"

    @property
    def extra_cycles_per_packet(self) -> float:
        return self.costs.host_ipsec_packet_offload_cycles_per_packet


@dataclass(frozen=True)
class TlsUser(Variant):
    """TLS 1.3 in a userspace library: crypto and an extra copy on the host."""

    name = "tls-user"
    uses_records = True
    per_record_overhead = tls_record_overhead("1.3")
    rekey_by_reconnect: bool = False

    def crypto_cycles(self, packets, payload_bytes, records):
        c = self.costs
        return payload_bytes * (c.host_aes_gcm_cycles_per_byte + self.copy_cycles_per_byte) \
            + records * (c.host_tls_record_cycles + c.host_aes_gcm_cycles_per_call)

    @property
    def copy_cycles_per_byte(self) -> float:
        return self.costs.host_tls_user_copy_cycles_per_byte

    def handshake_cycles(self) -> float:
        return _tls_handshake_per_end(self.costs)

    def rekey_cycles(self) -> float:
        return self.handshake_cycles() if self.rekey_by_reconnect else self.costs.host_tls_key_update_cycles

    @property
    def host_bytes_per_connection(self) -> float:  # type: ignore[override]
        return self.costs.host_tls_user_state_bytes


@dataclass(frozen=True)
class KtlsSoftware(TlsUser):
    """kTLS in the kernel, software crypto (sendfile works: a smaller copy cost)."""

    name = "ktls-sw"

    @property
    def copy_cycles_per_byte(self) -> float:
        return self.costs.host_ktls_sw_copy_cycles_per_byte

    @property
    def host_bytes_per_connection(self) -> float:  # type: ignore[override]
        return self.costs.host_ktls_state_bytes


@dataclass(frozen=True)
class KtlsOffload(TlsUser):
    """kTLS with NIC inline crypto (TLS 1.2 in Linux): context per connection
    and direction on the NIC; the host still frames records."""

    name = "ktls-offload"
    crypto_on_nic = True
    per_record_overhead = tls_record_overhead("1.2")
    nic_entries_per_connection = 2
    commands_per_setup = 2
    commands_per_teardown = 2
    commands_per_rekey = 4

    def crypto_cycles(self, packets, payload_bytes, records):
        c = self.costs
        return packets * c.host_offload_driver_cycles_per_packet + records * c.host_tls_record_cycles

    @property
    def nic_bytes_per_entry(self) -> float:  # type: ignore[override]
        return self.costs.nic_ktls_context_bytes

    @property
    def host_bytes_per_connection(self) -> float:  # type: ignore[override]
        return self.costs.host_ktls_state_bytes

    @property
    def nic_capacity(self) -> float:  # type: ignore[override]
        """TX and RX contexts together (NIC entries count both)."""
        return self.costs.nic_ktls_tx_context_capacity + self.costs.nic_ktls_rx_context_capacity

    fallback = "ktls-sw"  # Linux keeps the socket on software kTLS when device offload fails

    def lookups_tx(self) -> float:
        return 1.0

    def lookups_rx(self) -> float:
        return 1.0

    def context_cache(self, costs: Costs) -> tuple[float | None, float]:
        return costs.nic_ktls_context_cache_entries, costs.nic_ktls_context_miss_cost


def _tls_handshake_per_end(costs: Costs) -> float:
    """Until each end is charged its own side: the mean of client and server, so that a
    connection's two ends together cost client + server."""
    return (costs.tls_handshake_client_cycles + costs.tls_handshake_server_cycles) / 2


VARIANT_CLASSES: dict[str, type[Variant]] = {
    cls.name: cls
    for cls in (Psp, IpsecSoftware, IpsecCryptoOffload, IpsecPacketOffload, TlsUser, KtlsSoftware, KtlsOffload,
                Plaintext)
}


def make_variant(name: str, costs: Costs, keys) -> Variant:
    """Build a variant with its scenario parameters (``keys`` is the scenario's key section)."""
    cls = VARIANT_CLASSES[name]
    if cls is Psp:
        return Psp(costs, tx_key_placement=keys.psp_tx_key_placement)
    if issubclass(cls, IpsecSoftware):
        return cls(costs, pfs=keys.ipsec_pfs, sa_per_connection=keys.ipsec_sa_granularity == "connection")
    if issubclass(cls, TlsUser):
        return cls(costs, rekey_by_reconnect=keys.tls_rekey == "reconnect" or cls is KtlsOffload)
    return cls(costs)
