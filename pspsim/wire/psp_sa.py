"""PSP security associations: sealing and opening the protected region.

A :class:`PspSA` is one direction of an association: SPI, SA key and
version, with the AES-GCM cipher object built once (the design rule "one
cipher object per live SA").  It protects the bytes that follow the 16-byte
base header (cookie, extensions and payload), split at the crypt offset:

* versions 0/1 (AES-GCM): the first ``crypt_offset`` bytes stay in clear
  and are authenticated; the rest is encrypted.  AAD = base header plus the
  clear bytes; nonce = SPI || IV (header bytes 4..15).
* versions 2/3 (AES-GMAC): nothing is encrypted, everything is
  authenticated: GCM with an empty plaintext and AAD = base header plus all
  protected bytes.  The crypt-offset field is carried but has no effect.

:class:`DeviceKeys` is the receive side: a NIC's two master keys and a
bounded cache of derived SAs, so that a receiver derives each SPI's key once
rather than per packet.  The cache evicts in insertion order (FIFO), which
is cheaper per hit than LRU and, for the steady flows of a simulation,
evicts nearly the same entries.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pspsim.wire.errors import ConfigError, NonceReuseError, PspAuthFailure, PspBadPacket
from pspsim.wire.psp_header import ICV_LEN
from pspsim.wire.psp_kdf import (
    ENCRYPTING_VERSIONS,
    MASTER_KEY_LEN,
    SA_KEY_LEN,
    SPI_KEY_PHASE_BIT,
    derive_sa_key,
)


class PspSA:
    """One direction of a PSP security association (SPI, key, version)."""

    __slots__ = ("spi", "key", "version", "encrypts", "_aead")

    def __init__(self, spi: int, key: bytes, version: int = 0) -> None:
        if version not in SA_KEY_LEN:
            raise ConfigError(f"PSP version must be 0..3, got {version}")
        if len(key) != SA_KEY_LEN[version]:
            raise ConfigError(
                f"PSP version {version} needs a {SA_KEY_LEN[version]}-byte key, got {len(key)}"
            )
        if not 0 <= spi <= 0xFFFF_FFFF:
            raise ConfigError(f"SPI must fit in 32 bits, got {spi:#x}")
        self.spi = spi
        self.key = bytes(key)
        self.version = version
        self.encrypts = version in ENCRYPTING_VERSIONS
        self._aead = AESGCM(self.key)

    def __repr__(self) -> str:  # never print the key
        return f"PspSA(spi={self.spi:#010x}, version={self.version})"

    def seal(self, header: bytes, clear: bytes, rest: bytes | memoryview) -> bytes:
        """Protect one packet under its 16-byte base ``header``.

        ``clear`` is the crypt-offset prefix (sent in clear, authenticated),
        ``rest`` what follows it.  Returns what goes on the wire after
        ``clear``: ciphertext and ICV (GCM), or ``rest`` and ICV (GMAC).
        """
        if self.encrypts:
            return self._aead.encrypt(header[4:16], rest, header + clear)
        return bytes(rest) + self._aead.encrypt(header[4:16], b"", header + clear + rest)

    def open(self, header: bytes, clear: bytes, sealed: bytes | memoryview) -> bytes:
        """Verify and decrypt what :meth:`seal` returned; raises :class:`PspAuthFailure`."""
        try:
            if self.encrypts:
                return self._aead.decrypt(header[4:16], sealed, header + clear)
            body = bytes(sealed[:-ICV_LEN])
            self._aead.decrypt(header[4:16], sealed[-ICV_LEN:], header + clear + body)
            return body
        except InvalidTag:
            raise PspAuthFailure(f"ICV mismatch for SPI {self.spi:08x}") from None


class DeviceKeys:
    """The two master keys of one PSP device, and its derived-SA cache.

    ``active_phase`` is the slot (0 or 1) used for new SPIs.  :meth:`rotate`
    installs a fresh key in the other slot and makes it active, so the
    previously active key keeps serving existing SAs for one more period and
    the key before it is gone (Linux ``Documentation/networking/psp.rst``).
    :meth:`new_sa` hands each SPI out once per key phase: two senders with
    one SPI would share one key and IV space, and reuse nonces.
    """

    def __init__(
        self,
        key0: bytes | None,
        key1: bytes | None,
        *,
        active_phase: int = 0,
        cache_size: int = 65536,
    ) -> None:
        for key in (key0, key1):
            if key is not None and len(key) != MASTER_KEY_LEN:
                raise ConfigError(f"master key must be {MASTER_KEY_LEN} bytes, got {len(key)}")
        if active_phase not in (0, 1):
            raise ConfigError("active_phase must be 0 or 1")
        if cache_size < 1:
            raise ConfigError("cache_size must be at least 1")
        self._keys: list[bytes | None] = [key0, key1]
        self.active_phase = active_phase
        self.cache_size = cache_size
        self.cache_hits = 0
        self.cache_misses = 0
        self._cache: dict[int, PspSA] = {}
        self._issued: tuple[set[int], set[int]] = (set(), set())  # SPIs handed out, per master-key slot

    def __repr__(self) -> str:  # never print the keys
        return f"DeviceKeys(active_phase={self.active_phase}, cached={len(self._cache)})"

    @property
    def master_keys(self) -> tuple[bytes | None, bytes | None]:
        return (self._keys[0], self._keys[1])

    def sa_for(self, spi: int, version: int) -> PspSA:
        """The receive SA for ``spi`` (derived once, then cached)."""
        slot = spi | (version << 32)
        sa = self._cache.get(slot)
        if sa is not None:
            self.cache_hits += 1
            return sa
        self.cache_misses += 1
        master = self._keys[1 if spi & SPI_KEY_PHASE_BIT else 0]
        if master is None:
            raise PspBadPacket(f"SPI {spi:08x} selects master key slot {spi >> 31}, which is empty")
        sa = PspSA(spi, derive_sa_key(master, spi, version), version)
        if len(self._cache) >= self.cache_size:
            del self._cache[next(iter(self._cache))]
        self._cache[slot] = sa
        return sa

    def new_sa(self, spi_id: int, version: int = 0) -> PspSA:
        """The SA for SPI id ``spi_id`` (31 bits) under the active master key, for a
        new sender; raises :class:`NonceReuseError` for an SPI id already handed
        out under this key (whatever the version: the SPI names the flow)."""
        if not 0 < spi_id < SPI_KEY_PHASE_BIT:
            raise ConfigError("SPI id must be in 1..2**31-1 (id 0 is reserved)")
        issued = self._issued[self.active_phase]
        if spi_id in issued:
            raise NonceReuseError(f"SPI id {spi_id:#x} was already handed out under the active key: "
                                  "a second sender would reuse its IVs; take a new SPI")
        spi = spi_id | (SPI_KEY_PHASE_BIT if self.active_phase else 0)
        sa = self.sa_for(spi, version)
        issued.add(spi_id)
        return sa

    def rotate(self, new_key: bytes) -> int:
        """Replace the older master key with ``new_key`` and make it active."""
        if len(new_key) != MASTER_KEY_LEN:
            raise ConfigError(f"master key must be {MASTER_KEY_LEN} bytes, got {len(new_key)}")
        phase = 1 - self.active_phase
        self._keys[phase] = bytes(new_key)
        self._issued[phase].clear()  # a new key: its SPIs start afresh
        self.active_phase = phase
        stale_bit = SPI_KEY_PHASE_BIT if phase else 0
        self._cache = {
            k: sa for k, sa in self._cache.items() if (sa.spi & SPI_KEY_PHASE_BIT) != stale_bit
        }
        return phase

    @property
    def cache_hit_ratio(self) -> float:
        total = self.cache_hits + self.cache_misses
        return self.cache_hits / total if total else 0.0
