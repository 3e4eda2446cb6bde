"""PSP SA-key derivation: NIST SP 800-108 counter mode with AES-CMAC.

A PSP receiver never stores per-connection keys.  It holds two 256-bit
master ("device") keys; bit 31 of the SPI selects one, and the SA key is
derived from that master key and the SPI (PSP Architecture Specification,
section "Key derivation"; reference implementation google/psp
``src/psp_encrypt.c``).  Each AES-CMAC call yields 128 bits from a 16-byte
input block::

    bytes 0..3    counter i (1, then 2 for a 256-bit key), big-endian
    bytes 4..6    label "Pv" + one ASCII digit
    byte  7       0x00 separator
    bytes 8..11   context: the SPI, all 32 bits, big-endian
    bytes 12..15  L: output length in bits (128 or 256), big-endian

Label digit.  Versions 0 (AES-GCM-128) and 1 (AES-GCM-256) use "Pv0" and
"Pv1"; this is verified byte for byte against the reference implementation
and the specification's worked examples (see ``tests/test_psp_kdf.py``).
For the GMAC versions 2 and 3 no public implementation or test vector
exists.  We use "Pv2" and "Pv3", i.e. the version number ORed into the
label's third byte (0x30 | version).  Reasons: it is the only reading of
the specification text on record (softpsp's ``kdf.go``: "the version number
may be OR'd into the third byte of the base label"); it agrees with the
verified labels of versions 0 and 1; and it separates domains, so a GCM SA
and a GMAC SA with the same SPI never share a key.  The reference's own
code would instead pick the label from the key size ("Pv0" for any 128-bit
key); if the specification turns out to say so, only ``kdf_label`` changes.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC

from pspsim.wire.errors import ConfigError

MASTER_KEY_LEN = 32
SPI_KEY_PHASE_BIT = 0x8000_0000
#: SA key length in bytes, by PSP version.
SA_KEY_LEN = {0: 16, 1: 32, 2: 16, 3: 32}
#: Versions whose payload is encrypted (GCM); 2 and 3 only authenticate (GMAC).
ENCRYPTING_VERSIONS = frozenset({0, 1})
VERSION_NAMES = {0: "aes-gcm-128", 1: "aes-gcm-256", 2: "aes-gmac-128", 3: "aes-gmac-256"}

_BLOCK = struct.Struct("!I3sBII")


def kdf_label(version: int) -> bytes:
    """The 3-byte SP 800-108 label for ``version``: b"Pv0" .. b"Pv3"."""
    _check_version(version)
    return bytes((0x50, 0x76, 0x30 | version))


def derive_sa_key(master_key: bytes, spi: int, version: int = 0) -> bytes:
    """Derive the SA key for ``spi`` from one 256-bit ``master_key``.

    The caller has already chosen the master key; use
    :func:`derive_sa_key_from_pair` to let SPI bit 31 choose it.
    """
    if len(master_key) != MASTER_KEY_LEN:
        raise ConfigError(f"master key must be {MASTER_KEY_LEN} bytes, got {len(master_key)}")
    _check_spi(spi)
    key_len = SA_KEY_LEN[_check_version(version)]
    label = kdf_label(version)
    cipher = algorithms.AES(master_key)
    out = b""
    for counter in range(1, key_len // 16 + 1):
        mac = CMAC(cipher)
        mac.update(_BLOCK.pack(counter, label, 0, spi, key_len * 8))
        out += mac.finalize()
    return out


def select_master_key(master_keys: Sequence[bytes | None], spi: int) -> bytes | None:
    """The master key that SPI bit 31 selects (``None`` if that slot is empty)."""
    return master_keys[1 if spi & SPI_KEY_PHASE_BIT else 0]


def derive_sa_key_from_pair(master_keys: Sequence[bytes], spi: int, version: int = 0) -> bytes:
    """Derive the SA key for ``spi`` from the pair (master key 0, master key 1)."""
    if len(master_keys) != 2:
        raise ConfigError("a PSP device holds exactly two master keys")
    key = select_master_key(master_keys, spi)
    if key is None:
        raise ConfigError(f"SPI {spi:08x} selects master key slot {spi >> 31}, which is empty")
    return derive_sa_key(key, spi, version)


def _check_version(version: int) -> int:
    if version not in SA_KEY_LEN:
        raise ConfigError(f"PSP version must be 0, 1, 2 or 3, got {version}")
    return version


def _check_spi(spi: int) -> None:
    if not 0 <= spi <= 0xFFFF_FFFF:
        raise ConfigError(f"SPI must fit in 32 bits, got {spi:#x}")
