"""The reference implementation's configuration files (google/psp ``cfg/``).

An encrypt configuration is whitespace-separated tokens, in this order:
32 hex bytes of master key 0; 32 hex bytes of master key 1; the SPI in hex
(bit 31 selects the master key); ``transport`` or ``tunnel``; the algorithm
(``aes-gcm-128`` or ``aes-gcm-256``; pspsim also accepts ``aes-gmac-128``
and ``aes-gmac-256`` for versions 2 and 3); the transport, IPv4-tunnel and
IPv6-tunnel crypt offsets in 4-byte units; ``vc`` or ``no-vc``.  A decrypt
configuration holds just the two master keys (an encrypt configuration
works too: only its keys are read).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from pspsim.wire.errors import ConfigError
from pspsim.wire.psp_header import MAX_CRYPT_OFFSET, VC_LEN
from pspsim.wire.psp_kdf import MASTER_KEY_LEN, VERSION_NAMES, derive_sa_key_from_pair
from pspsim.wire.psp_packet import PspEncap
from pspsim.wire.psp_sa import PspSA

_HEX_BYTE = re.compile(r"(0[xX])?[0-9a-fA-F]{1,2}")
_HEX_WORD = re.compile(r"(0[xX])?[0-9a-fA-F]{1,8}")
MAX_CFG_BYTES = 64 << 10  # a cfg holds about 400 bytes; anything this large is not one
_VERSION_BY_NAME = {name: version for version, name in VERSION_NAMES.items()}


@dataclass(frozen=True)
class PspEncryptConfig:
    """A parsed encrypt configuration."""

    master_keys: tuple[bytes, bytes]
    spi: int
    version: int
    encap: PspEncap

    def __repr__(self) -> str:  # never print the keys
        return f"PspEncryptConfig(spi={self.spi:08x}, version={self.version}, encap={self.encap})"

    def sa(self) -> PspSA:
        """The transmit SA: the key derived from the SPI's master key."""
        return PspSA(self.spi, derive_sa_key_from_pair(self.master_keys, self.spi, self.version), self.version)


def _read(path: Path) -> str:
    try:
        if path.exists() and not path.is_dir() and not path.is_file():
            raise ConfigError(f"{path}: not a regular file")
        if path.stat().st_size > MAX_CFG_BYTES:
            raise ConfigError(f"{path}: {path.stat().st_size:,} bytes is too large for a PSP configuration "
                              f"file (at most {MAX_CFG_BYTES:,})")
        return path.read_bytes().decode("ascii")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text configuration file") from None


class _Tokens:
    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.items = [
            (lineno, token)
            for lineno, line in enumerate(text.splitlines(), start=1)
            for token in line.split()
        ]
        self.pos = 0

    def next(self, field: str) -> tuple[int, str]:
        if self.pos >= len(self.items):
            raise ConfigError(f"{self.path}: ends before {field}")
        item = self.items[self.pos]
        self.pos += 1
        return item

    def fail(self, lineno: int, field: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}:{lineno}: {field}: {problem}")

    def master_key(self, index: int) -> bytes:
        field = f"master key {index}"
        out = bytearray()
        for i in range(MASTER_KEY_LEN):
            lineno, token = self.next(f"{field} byte {i}")
            if not _HEX_BYTE.fullmatch(token):
                raise self.fail(lineno, field, f"byte {i} is {token!r}, expected two hex digits")
            out.append(int(token, 16))
        return bytes(out)

    def choice(self, field: str, options: dict[str, object]) -> object:
        lineno, token = self.next(field)
        if token not in options:
            raise self.fail(lineno, field, f"{token!r} is not one of {', '.join(options)}")
        return options[token]

    def crypt_offset(self, field: str) -> int:
        lineno, token = self.next(field)
        if not (token.isascii() and token.isdigit()) or int(token) > MAX_CRYPT_OFFSET:
            raise self.fail(lineno, field, f"{token!r} is not an integer in 0..{MAX_CRYPT_OFFSET}")
        return int(token)


def load_master_keys(path: str | os.PathLike[str]) -> tuple[bytes, bytes]:
    """Master keys 0 and 1 from a decrypt (or encrypt) configuration file."""
    return parse_master_keys(_read(Path(path)), Path(path))


def parse_master_keys(text: str, name: Path = Path("<cfg>")) -> tuple[bytes, bytes]:
    """Master keys 0 and 1 from the text of a configuration file."""
    tokens = _Tokens(name, text)
    return tokens.master_key(0), tokens.master_key(1)


def load_encrypt_config(path: str | os.PathLike[str]) -> PspEncryptConfig:
    """Parse an encrypt configuration file; errors name the file, line and field."""
    return parse_encrypt_config(_read(Path(path)), Path(path))


def parse_encrypt_config(text: str, name: Path = Path("<cfg>")) -> PspEncryptConfig:
    """Parse the text of an encrypt configuration; errors name the file, line and field."""
    tokens = _Tokens(name, text)
    keys = (tokens.master_key(0), tokens.master_key(1))
    lineno, token = tokens.next("SPI")
    if not _HEX_WORD.fullmatch(token):
        raise tokens.fail(lineno, "SPI", f"{token!r} is not a 32-bit hex value")
    spi = int(token, 16)
    mode = tokens.choice("encap mode", {"transport": "transport", "tunnel": "tunnel"})
    version = tokens.choice("crypto algorithm", _VERSION_BY_NAME)
    transport = tokens.crypt_offset("transport crypt offset")
    v4_tunnel = tokens.crypt_offset("IPv4 tunnel crypt offset")
    v6_tunnel = tokens.crypt_offset("IPv6 tunnel crypt offset")
    vc = tokens.choice("virtualization cookie", {"vc": bytes(VC_LEN), "no-vc": None})
    if tokens.pos < len(tokens.items):
        lineno, token = tokens.items[tokens.pos]
        raise tokens.fail(lineno, "end of file", f"unexpected extra token {token!r}")
    encap = PspEncap(str(mode), transport, v4_tunnel, v6_tunnel, vc)  # type: ignore[arg-type]
    return PspEncryptConfig(keys, spi, int(version), encap)  # type: ignore[arg-type]
