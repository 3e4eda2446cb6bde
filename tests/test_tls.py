"""TLS record protection: RFC 8448 vectors and OpenSSL as an independent peer."""

import ssl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pspsim.wire.errors import ConfigError, WireError
from pspsim.wire.tls import (
    CONTENT_ALERT,
    CONTENT_APPLICATION_DATA,
    CONTENT_HANDSHAKE,
    MAX_PLAINTEXT,
    TLS13_SUITES,
    Tls12GcmRecordProtection,
    Tls13RecordProtection,
    TlsAuthFailure,
    TlsMalformed,
    TlsRejected,
    TlsSequenceExhausted,
    iter_records,
    key_update_message,
    suite,
    tls12_gcm_keys,
    tls_bytes_on_wire,
    tls_record_overhead,
    traffic_key_and_iv,
)
from tests.tls_peer import Peers

h = bytes.fromhex
# RFC 8448 section 3 (Simple 1-RTT Handshake), TLS_AES_128_GCM_SHA256.
C_AP = h("9e40646ce79a7f9dc05af8889bce6552875afa0b06df0087f792ebb7c17504a5")
S_AP = h("a11af9f05531f856ad47116b45a950328204b4f44bfb6b3a4b4f1f3fcb631643")
C_APP_RECORD = h("1703030043a23f7054b62c94d0affafe8228ba55cbefacea42f914aa66bcab3f2b9819a8a5b46b395bd54a9a20441e2b6297"
                 "4e1f5a6292a2977014bd1e3deae63aeebb21694915e4")
S_APP_RECORD = h("17030300432e937e11ef4ac740e538ad36005fc4a46932fc3225d05f82aa1b36e30efaf97d90e6dffc602dcb501a59a8fcc4"
                 "9c4bf2e5f0a21c0047c2abf332540dd032e167c2955d")
C_ALERT_RECORD = h("1703030013c98727606556 66b74d7ff1153efd6db6d0b0e3".replace(" ", ""))
S_ALERT_RECORD = h("1703030013b58fd67166ebf599d24720cfbe7efa7a8864a9")
AES128 = suite("TLS_AES_128_GCM_SHA256")


def test_rfc8448_keys():
    assert [v.hex() for v in traffic_key_and_iv(AES128, S_AP)] == ["9f02283b6c9c07efc26bb9f2ac92e356",
                                                                    "cf782b88dd83549aadf1e984"]
    assert [v.hex() for v in traffic_key_and_iv(AES128, C_AP)] == ["17422dda596ed5d9acd890e3c63f5051",
                                                                    "5b78923dee08579033e523d9"]


def test_rfc8448_client_records():
    client = Tls13RecordProtection(AES128, C_AP)
    assert client.seal(bytes(range(50))) == C_APP_RECORD
    assert client.seal(b"\x01\x00", CONTENT_ALERT) == C_ALERT_RECORD  # close_notify at sequence 1
    reader = Tls13RecordProtection(AES128, C_AP)
    assert reader.open(C_APP_RECORD) == (CONTENT_APPLICATION_DATA, bytes(range(50)))


def test_rfc8448_server_records_after_the_session_ticket():
    server = Tls13RecordProtection(AES128, S_AP, seq=1)  # sequence 0 carried the NewSessionTicket
    assert server.open(S_APP_RECORD) == (CONTENT_APPLICATION_DATA, bytes(range(50)))
    assert server.open(S_ALERT_RECORD) == (CONTENT_ALERT, b"\x01\x00")


@pytest.mark.parametrize("name", sorted(TLS13_SUITES))
@pytest.mark.parametrize("padding", [0, 7])
def test_round_trip_every_suite_and_key_update(name, padding):
    cs = TLS13_SUITES[name]
    secret = bytes(range(cs.hash_len))
    tx, rx = Tls13RecordProtection(cs, secret), Tls13RecordProtection(cs, secret)
    for n in (0, 1, MAX_PLAINTEXT - padding):
        record = tx.seal(b"a" * n, padding=padding)
        assert len(record) == n + tls_record_overhead("1.3", name, padding)
        assert rx.open(record) == (CONTENT_APPLICATION_DATA, b"a" * n)
    tx.update_keys()
    old = Tls13RecordProtection(cs, secret)
    record = tx.seal(b"after update")
    with pytest.raises(TlsAuthFailure):
        old.open(record)
    rx.update_keys()
    assert rx.open(record)[1] == b"after update" and rx.seq == 1


def test_limits_and_errors():
    tx = Tls13RecordProtection(AES128, C_AP, seq=2**64 - 1)
    with pytest.raises(ConfigError):
        tx.seal(b"x" * (MAX_PLAINTEXT + 1))
    tx.seal(b"last")
    with pytest.raises(TlsSequenceExhausted):
        tx.seal(b"wraps")
    with pytest.raises(TlsMalformed):
        Tls13RecordProtection(AES128, C_AP).open(C_APP_RECORD[:4])
    with pytest.raises(ConfigError):
        Tls13RecordProtection(AES128, b"short")
    with pytest.raises(ConfigError):
        suite("TLS_NULL_WITH_NULL_NULL")


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(C_APP_RECORD) * 8 - 1))
def test_flipped_bit_fails(bit):
    record = bytearray(C_APP_RECORD)
    record[bit // 8] ^= 0x80 >> (bit % 8)
    with pytest.raises(TlsRejected):
        Tls13RecordProtection(AES128, C_AP).open(bytes(record))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=80))
def test_arbitrary_bytes_give_typed_rejections(data):
    for opener in (Tls13RecordProtection(AES128, C_AP), Tls12GcmRecordProtection(bytes(16), bytes(4))):
        try:
            opener.open(data)
        except WireError:
            pass


def test_overhead_functions():
    assert tls_record_overhead("1.3") == 22 and tls_record_overhead("1.2") == 29
    assert tls_bytes_on_wire(100_000) == 100_000 + 7 * 22


# --- OpenSSL as the other side ------------------------------------------------


def test_openssl_tls13_both_directions_and_key_update(tmp_path):
    peers = Peers(tmp_path, ssl.TLSVersion.TLSv1_3)
    name = peers.server.cipher()[0]
    secrets = peers.secrets()
    # OpenSSL seals, pspsim opens: the session tickets first, then the data.
    from_server = Tls13RecordProtection(name, secrets["SERVER_TRAFFIC_SECRET_0"])
    opened = [from_server.open(r) for r in iter_records(peers.server_sends(b"hello from openssl"))]
    assert opened[-1] == (CONTENT_APPLICATION_DATA, b"hello from openssl")
    assert all(t == CONTENT_HANDSHAKE for t, _ in opened[:-1])
    # pspsim seals, OpenSSL opens; then a KeyUpdate and more data under the new key.
    to_server = Tls13RecordProtection(name, secrets["CLIENT_TRAFFIC_SECRET_0"])
    assert peers.server_receives(to_server.seal(b"hello from pspsim")) == b"hello from pspsim"
    wire = to_server.seal(key_update_message(), CONTENT_HANDSHAKE)
    to_server.update_keys()
    wire += to_server.seal(b"x" * MAX_PLAINTEXT) + to_server.seal(b"after key update")
    assert peers.server_receives(wire) == b"x" * MAX_PLAINTEXT + b"after key update"


def test_openssl_tls12_gcm_both_directions(tmp_path):
    peers = Peers(tmp_path, ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-GCM-SHA256")
    secrets = peers.secrets()
    # ServerHello's random: record header 5, handshake header 4, version 2.
    server_random = peers.server_hello_flight[11:43]
    keys = tls12_gcm_keys("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", secrets["CLIENT_RANDOM"],
                          secrets["CLIENT_RANDOM_VALUE"], server_random)
    from_server = Tls12GcmRecordProtection(keys.server_key, keys.server_salt, seq=1)  # Finished was 0
    records = list(iter_records(peers.server_sends(b"tls1.2 from openssl")))
    assert from_server.open(records[-1]) == (CONTENT_APPLICATION_DATA, b"tls1.2 from openssl")
    to_server = Tls12GcmRecordProtection(keys.client_key, keys.client_salt, seq=1)
    assert peers.server_receives(to_server.seal(b"tls1.2 from pspsim")) == b"tls1.2 from pspsim"
