"""Real packet bytes, no simulation: PSP (and, later, ESP and TLS records) and pcap.

Everything here is pure functions and small classes over ``bytes``; bad
input raises a typed :mod:`pspsim.wire.errors` exception, never anything else.
"""

from pspsim.wire.errors import (
    ConfigError,
    EncapsulationError,
    NotPspPacket,
    PcapFormatError,
    PspAuthFailure,
    PspBadPacket,
    PspFramingError,
    PspRejected,
    WireError,
)
from pspsim.wire.pcap import PcapHeader, PcapReader, PcapRecord, PcapWriter, read_pcap, write_pcap
from pspsim.wire.psp_cfg import PspEncryptConfig, load_encrypt_config, load_master_keys
from pspsim.wire.psp_header import PspHeader
from pspsim.wire.psp_kdf import derive_sa_key, derive_sa_key_from_pair
from pspsim.wire.psp_packet import PspEncap, PspOpened, PspSender, decapsulate, encapsulate
from pspsim.wire.psp_sa import DeviceKeys, PspSA

__all__ = [
    "ConfigError",
    "DeviceKeys",
    "EncapsulationError",
    "NotPspPacket",
    "PcapFormatError",
    "PcapHeader",
    "PcapReader",
    "PcapRecord",
    "PcapWriter",
    "PspAuthFailure",
    "PspBadPacket",
    "PspEncap",
    "PspEncryptConfig",
    "PspFramingError",
    "PspHeader",
    "PspOpened",
    "PspRejected",
    "PspSA",
    "PspSender",
    "WireError",
    "decapsulate",
    "derive_sa_key",
    "derive_sa_key_from_pair",
    "encapsulate",
    "load_encrypt_config",
    "load_master_keys",
    "read_pcap",
    "write_pcap",
]
