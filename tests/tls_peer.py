"""A real OpenSSL client and server (Python's ``ssl``) talking over memory,
with their traffic secrets read from the key log, as an independent TLS
implementation for the record-layer tests."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pspsim.test")])
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=3650))
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class Peers:
    """A finished handshake.  ``server`` keeps running; the client side's
    traffic is replaced by pspsim in the tests."""

    def __init__(self, tmp: Path, version: ssl.TLSVersion, ciphers: str | None = None) -> None:
        cert, key = self_signed(tmp)
        self.keylog = tmp / "keys.log"
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(cert, key)
        client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client_ctx.check_hostname = False
        client_ctx.verify_mode = ssl.CERT_NONE
        client_ctx.keylog_filename = str(self.keylog)
        for ctx in (server_ctx, client_ctx):
            ctx.minimum_version = ctx.maximum_version = version
            if ciphers:
                ctx.set_ciphers(ciphers)
        self.c_in, self.c_out, self.s_in, self.s_out = (ssl.MemoryBIO() for _ in range(4))
        self.client = client_ctx.wrap_bio(self.c_in, self.c_out)
        self.server = server_ctx.wrap_bio(self.s_in, self.s_out, server_side=True)
        self.server_hello_flight = b""
        self.withheld = b""  # server output after the client finished (TLS 1.3 session tickets)
        self._handshake()

    def _step(self, obj: ssl.SSLObject) -> bool:
        try:
            obj.do_handshake()
            return True
        except ssl.SSLWantReadError:
            return False

    def _handshake(self) -> None:
        done_c = done_s = False
        for _ in range(10):
            done_c = self._step(self.client) or done_c
            self.s_in.write(self.c_out.read())
            done_s = self._step(self.server) or done_s
            flight = self.s_out.read()
            if not self.server_hello_flight:
                self.server_hello_flight = flight
            if done_c:
                self.withheld += flight  # protected with the server's application keys
            else:
                self.c_in.write(flight)
            if done_c and done_s:
                break
        done_c = self._step(self.client)
        self.s_in.write(self.c_out.read())
        assert done_c and done_s, "TLS handshake did not finish"

    def secrets(self) -> dict[str, bytes]:
        found = {}
        for line in self.keylog.read_text().splitlines():
            if not line or line.startswith("#"):
                continue
            label, _client_random, secret = line.split()
            found[label] = bytes.fromhex(secret)
            found["CLIENT_RANDOM_VALUE"] = bytes.fromhex(_client_random)
        return found

    def server_sends(self, data: bytes) -> bytes:
        """What the server puts on the wire (post-handshake messages included)."""
        pending, self.withheld = self.withheld + self._drain_server(), b""
        self.server.write(data)
        return pending + self.s_out.read()

    def _drain_server(self) -> bytes:
        try:
            self.server.read(1)  # lets the server process the client's Finished
        except ssl.SSLWantReadError:
            pass
        return self.s_out.read()

    def server_receives(self, wire: bytes) -> bytes:
        self.s_in.write(wire)
        out = b""
        while True:
            try:
                chunk = self.server.read(65536)
            except ssl.SSLWantReadError:
                return out
            if not chunk:
                return out
            out += chunk
