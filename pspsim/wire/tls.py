"""TLS record protection: TLS 1.3 (RFC 8446 section 5) and TLS 1.2 AES-GCM (RFC 5288).

TLS 1.3.  From a traffic secret, ``key = HKDF-Expand-Label(secret, "key",
"", key_len)`` and ``iv = HKDF-Expand-Label(secret, "iv", "", 12)``; each
record's nonce is the IV XOR the 64-bit record sequence number (left-padded
to 12 bytes).  A record is ``23 03 03 length || AEAD(content || type ||
zero padding)`` with the 5-byte header as AAD.  KeyUpdate moves to
``HKDF-Expand-Label(secret, "traffic upd", "", Hash.length)`` and restarts
the sequence number at 0.  Suites: TLS_AES_128_GCM_SHA256,
TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256.

TLS 1.2 AES-GCM (kept because Linux kTLS NIC offload serves TLS 1.2).  Keys
and 4-byte salts ("implicit IV") come from the key block; the nonce is salt
|| an 8-byte explicit nonce sent in the record (the sequence number here, as
OpenSSL and the Linux kernel send it); the AAD is sequence number || type ||
version || plaintext length.

A record's sequence number never wraps: at 2**64 - 1 the connection must
rekey (KeyUpdate) or close, and :class:`TlsSequenceExhausted` is raised.
The sequence number is the nonce counter, so it is read-only (a first value
can be given when the protection is created), and a record protection
cannot be copied.  ``seal`` takes content types 1..255 (0 is padding in TLS
1.3 and never a record type).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from pspsim.wire.errors import ConfigError, WireError, as_bytes, refuse_copy

RECORD_HEADER_LEN = 5
MAX_PLAINTEXT = 1 << 14
MAX_SEQ = (1 << 64) - 1
TAG_LEN = 16
EXPLICIT_NONCE_LEN = 8  # TLS 1.2 GCM
CONTENT_ALERT, CONTENT_HANDSHAKE, CONTENT_APPLICATION_DATA = 21, 22, 23
HANDSHAKE_KEY_UPDATE = 24
_HEADER = struct.Struct("!BHH")
_TYPE_BYTE = [bytes((t,)) for t in range(256)]


class TlsRejected(WireError):
    """A record the receiver rejects; ``alert`` is the TLS alert it sends."""

    alert = "decode_error"


class TlsAuthFailure(TlsRejected):
    """AEAD verification failed."""

    alert = "bad_record_mac"


class TlsMalformed(TlsRejected):
    """Bad header, impossible length, or no content type in the inner plaintext."""

    alert = "decode_error"


class TlsSequenceExhausted(WireError):
    """The record sequence number would wrap; update the keys or close."""


@dataclass(frozen=True)
class CipherSuite:
    name: str
    key_len: int
    hash_name: str  # "sha256" or "sha384"
    chacha: bool = False

    @property
    def hash_len(self) -> int:
        return hashlib.new(self.hash_name).digest_size

    def hash_algorithm(self) -> hashes.HashAlgorithm:
        return hashes.SHA256() if self.hash_name == "sha256" else hashes.SHA384()

    def aead(self, key: bytes) -> AESGCM | ChaCha20Poly1305:
        return ChaCha20Poly1305(key) if self.chacha else AESGCM(key)


TLS13_SUITES = {
    s.name: s
    for s in (
        CipherSuite("TLS_AES_128_GCM_SHA256", 16, "sha256"),
        CipherSuite("TLS_AES_256_GCM_SHA384", 32, "sha384"),
        CipherSuite("TLS_CHACHA20_POLY1305_SHA256", 32, "sha256", chacha=True),
    )
}
TLS12_GCM_SUITES = {
    s.name: s
    for s in (
        CipherSuite("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", 16, "sha256"),
        CipherSuite("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", 32, "sha384"),
        CipherSuite("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", 16, "sha256"),
        CipherSuite("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", 32, "sha384"),
    )
}


def suite(name: str, version: str = "1.3") -> CipherSuite:
    """Look a cipher suite up by its IANA name."""
    table = TLS13_SUITES if version == "1.3" else TLS12_GCM_SUITES
    try:
        return table[name]
    except KeyError:
        raise ConfigError(f"unknown TLS {version} cipher suite {name!r}; known: {', '.join(table)}") from None


def hkdf_expand_label(cs: CipherSuite, secret: bytes, label: bytes, context: bytes, length: int) -> bytes:
    """HKDF-Expand-Label of RFC 8446 section 7.1."""
    full = b"tls13 " + label
    info = struct.pack("!HB", length, len(full)) + full + bytes((len(context),)) + context
    return HKDFExpand(cs.hash_algorithm(), length, info).derive(secret)


def traffic_key_and_iv(cs: CipherSuite, secret: bytes) -> tuple[bytes, bytes]:
    """The write key and IV of a TLS 1.3 traffic secret."""
    return hkdf_expand_label(cs, secret, b"key", b"", cs.key_len), hkdf_expand_label(cs, secret, b"iv", b"", 12)


def next_traffic_secret(cs: CipherSuite, secret: bytes) -> bytes:
    """application_traffic_secret_N+1 (RFC 8446 section 7.2)."""
    return hkdf_expand_label(cs, secret, b"traffic upd", b"", cs.hash_len)


def key_update_message(request_update: bool = False) -> bytes:
    """The KeyUpdate handshake message (sent as a protected handshake record)."""
    return bytes((HANDSHAKE_KEY_UPDATE, 0, 0, 1, int(request_update)))


def iter_records(stream: bytes) -> Iterator[bytes]:
    """Split a byte stream into whole TLS records (a trailing partial one is an error)."""
    stream = as_bytes(stream)
    pos = 0
    while pos < len(stream):
        if len(stream) - pos < RECORD_HEADER_LEN:
            raise TlsMalformed("stream ends inside a record header")
        end = pos + RECORD_HEADER_LEN + int.from_bytes(stream[pos + 3 : pos + 5], "big")
        if end > len(stream):
            raise TlsMalformed("stream ends inside a record")
        yield stream[pos:end]
        pos = end


def _check_content_type(content_type: int) -> None:
    if type(content_type) is not int or not 1 <= content_type <= 255:
        raise ConfigError(f"TLS content type must be 1..255, got {content_type!r}")


def _first_seq(seq: int) -> int:
    if type(seq) is not int or not 0 <= seq <= MAX_SEQ + 1:
        raise ConfigError(f"first record sequence number must be in 0..2**64, got {seq!r}")
    return seq


class Tls13RecordProtection:
    """One direction of TLS 1.3 record protection, from a traffic secret.

    ``seq`` is the sequence number of the first record (0 for a fresh
    secret; more when records were already sent with it)."""

    def __init__(self, cs: CipherSuite | str, traffic_secret: bytes, seq: int = 0) -> None:
        self.suite = suite(cs) if isinstance(cs, str) else cs
        if len(traffic_secret) != self.suite.hash_len:
            raise ConfigError(f"{self.suite.name} traffic secret must be {self.suite.hash_len} bytes")
        self._install(bytes(traffic_secret))
        self._seq = _first_seq(seq)
        self.key_updates = 0

    __copy__ = __deepcopy__ = __reduce_ex__ = refuse_copy

    @property
    def seq(self) -> int:
        """The sequence number of the next record (read-only: it is the nonce counter)."""
        return self._seq

    def _install(self, secret: bytes) -> None:
        self._secret = secret
        key, self._iv = traffic_key_and_iv(self.suite, secret)
        self._iv_int = int.from_bytes(self._iv, "big")
        self._aead = self.suite.aead(key)
        self._seq = 0

    def __repr__(self) -> str:  # never print secrets
        return f"Tls13RecordProtection({self.suite.name}, seq={self.seq}, key_updates={self.key_updates})"

    def _nonce(self) -> bytes:
        if self._seq > MAX_SEQ:
            raise TlsSequenceExhausted("TLS record sequence number exhausted: update the keys")
        return (self._iv_int ^ self._seq).to_bytes(12, "big")

    def seal(self, content: bytes, content_type: int = CONTENT_APPLICATION_DATA, padding: int = 0) -> bytes:
        """One protected record carrying ``content`` (at most 16 KiB)."""
        if len(content) + 1 + padding > MAX_PLAINTEXT + 1 or padding < 0:
            raise ConfigError(f"record content plus padding exceeds {MAX_PLAINTEXT} bytes")
        if content_type != CONTENT_APPLICATION_DATA:
            _check_content_type(content_type)
        if type(content) is not bytes:
            content = as_bytes(content)
        seq = self._seq
        if seq > MAX_SEQ:
            raise TlsSequenceExhausted("TLS record sequence number exhausted: update the keys")
        inner = content + (_TYPE_BYTE[content_type] if not padding else bytes((content_type,)) + bytes(padding))
        header = _HEADER.pack(CONTENT_APPLICATION_DATA, 0x0303, len(inner) + TAG_LEN)
        self._seq = seq + 1
        return header + self._aead.encrypt((self._iv_int ^ seq).to_bytes(12, "big"), inner, header)

    def open(self, record: bytes) -> tuple[int, bytes]:
        """Verify and decrypt one record: (content type, content)."""
        if type(record) is not bytes:
            record = as_bytes(record)
        if len(record) < RECORD_HEADER_LEN + TAG_LEN + 1:
            raise TlsMalformed("record too short")
        outer_type, _version, length = _HEADER.unpack_from(record)
        if outer_type != CONTENT_APPLICATION_DATA:
            raise TlsMalformed(f"protected record has outer type {outer_type}, not 23")
        if length != len(record) - RECORD_HEADER_LEN:
            raise TlsMalformed("record length field disagrees with the record")
        if length > MAX_PLAINTEXT + 256:
            raise TlsMalformed("record_overflow: ciphertext longer than 2**14 + 256")
        try:
            inner = self._aead.decrypt(self._nonce(), record[RECORD_HEADER_LEN:], record[:RECORD_HEADER_LEN])
        except InvalidTag:
            raise TlsAuthFailure(f"record {self._seq} failed authentication") from None
        self._seq += 1
        stripped = inner.rstrip(b"\x00")
        if not stripped:
            raise TlsMalformed("inner plaintext has no content type")
        if len(stripped) - 1 > MAX_PLAINTEXT:
            raise TlsMalformed("record_overflow: plaintext longer than 2**14")
        return stripped[-1], stripped[:-1]

    def update_keys(self) -> None:
        """Move to the next application traffic secret (after a KeyUpdate)."""
        self._install(next_traffic_secret(self.suite, self._secret))
        self.key_updates += 1


def tls12_prf(cs: CipherSuite, secret: bytes, label: bytes, seed: bytes, length: int) -> bytes:
    """The TLS 1.2 PRF (RFC 5246 section 5), P_SHA256 or P_SHA384."""
    out, a = b"", label + seed
    while len(out) < length:
        a = hmac.new(secret, a, cs.hash_name).digest()
        out += hmac.new(secret, a + label + seed, cs.hash_name).digest()
    return out[:length]


@dataclass(frozen=True)
class Tls12GcmKeys:
    client_key: bytes
    server_key: bytes
    client_salt: bytes
    server_salt: bytes

    def __repr__(self) -> str:
        return "Tls12GcmKeys(<secret>)"


def tls12_gcm_keys(cs: CipherSuite | str, master_secret: bytes, client_random: bytes,
                   server_random: bytes) -> Tls12GcmKeys:
    """Key block of an AES-GCM suite (no MAC keys): keys then 4-byte salts."""
    cs = suite(cs, "1.2") if isinstance(cs, str) else cs
    n = cs.key_len
    block = tls12_prf(cs, master_secret, b"key expansion", server_random + client_random, 2 * n + 8)
    return Tls12GcmKeys(block[:n], block[n : 2 * n], block[2 * n : 2 * n + 4], block[2 * n + 4 :])


class Tls12GcmRecordProtection:
    """One direction of TLS 1.2 AES-GCM record protection (RFC 5288)."""

    def __init__(self, key: bytes, salt: bytes, seq: int = 0) -> None:
        if len(key) not in (16, 32) or len(salt) != 4:
            raise ConfigError("TLS 1.2 GCM needs a 16- or 32-byte key and a 4-byte salt")
        self._aead = AESGCM(bytes(key))
        self._salt = bytes(salt)
        self._seq = _first_seq(seq)

    def __repr__(self) -> str:
        return f"Tls12GcmRecordProtection(seq={self._seq})"

    __copy__ = __deepcopy__ = __reduce_ex__ = refuse_copy

    @property
    def seq(self) -> int:
        """The sequence number of the next record (read-only: it is the explicit nonce)."""
        return self._seq

    def seal(self, content: bytes, content_type: int = CONTENT_APPLICATION_DATA) -> bytes:
        if len(content) > MAX_PLAINTEXT:
            raise ConfigError(f"record content exceeds {MAX_PLAINTEXT} bytes")
        if content_type != CONTENT_APPLICATION_DATA:
            _check_content_type(content_type)
        if type(content) is not bytes:
            content = as_bytes(content)
        if self._seq > MAX_SEQ:
            raise TlsSequenceExhausted("TLS record sequence number exhausted: renegotiate or close")
        explicit = self._seq.to_bytes(EXPLICIT_NONCE_LEN, "big")
        aad = explicit + _HEADER.pack(content_type, 0x0303, len(content))
        sealed = self._aead.encrypt(self._salt + explicit, content, aad)
        self._seq += 1
        return _HEADER.pack(content_type, 0x0303, EXPLICIT_NONCE_LEN + len(sealed)) + explicit + sealed

    def open(self, record: bytes) -> tuple[int, bytes]:
        if type(record) is not bytes:
            record = as_bytes(record)
        if len(record) < RECORD_HEADER_LEN + EXPLICIT_NONCE_LEN + TAG_LEN:
            raise TlsMalformed("record too short")
        content_type, version, length = _HEADER.unpack_from(record)
        if length != len(record) - RECORD_HEADER_LEN:
            raise TlsMalformed("record length field disagrees with the record")
        if length > MAX_PLAINTEXT + 2048:
            raise TlsMalformed("record_overflow")
        if self._seq > MAX_SEQ:
            raise TlsSequenceExhausted("TLS record sequence number exhausted")
        explicit = record[RECORD_HEADER_LEN : RECORD_HEADER_LEN + EXPLICIT_NONCE_LEN]
        plain_len = length - EXPLICIT_NONCE_LEN - TAG_LEN
        aad = self._seq.to_bytes(8, "big") + _HEADER.pack(content_type, version, plain_len)
        try:
            content = self._aead.decrypt(self._salt + explicit, record[RECORD_HEADER_LEN + EXPLICIT_NONCE_LEN :], aad)
        except InvalidTag:
            raise TlsAuthFailure(f"record {self._seq} failed authentication") from None
        self._seq += 1
        return content_type, content


@cache
def tls_record_overhead(version: str = "1.3", suite_name: str | None = None, padding: int = 0) -> int:
    """Bytes a protected record adds to its content, measured by sealing one."""
    if version == "1.3":
        cs = suite(suite_name or "TLS_AES_128_GCM_SHA256")
        record = Tls13RecordProtection(cs, bytes(cs.hash_len)).seal(b"x", padding=padding)
    elif version == "1.2":
        cs = suite(suite_name or "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "1.2")
        record = Tls12GcmRecordProtection(bytes(cs.key_len), bytes(4)).seal(b"x")
    else:
        raise ConfigError(f"TLS version must be '1.2' or '1.3', got {version!r}")
    return len(record) - 1


def tls_bytes_on_wire(message_len: int, version: str = "1.3", record_size: int = MAX_PLAINTEXT) -> int:
    """Bytes a message of ``message_len`` takes once cut into protected records."""
    if not 1 <= record_size <= MAX_PLAINTEXT:
        raise ConfigError(f"record size must be 1..{MAX_PLAINTEXT}")
    records = max(1, -(-message_len // record_size))
    return message_len + records * tls_record_overhead(version)
