"""ESP with AES-GCM: published vectors, scapy as an independent implementation, replay."""

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pspsim.wire.errors import ConfigError, WireError
from pspsim.wire.esp import (
    EspAuthFailure,
    EspMalformed,
    EspNoSa,
    EspOutsideWindow,
    EspRejected,
    EspReplay,
    EspSA,
    EspSequenceExhausted,
    NotEspPacket,
    esp_decapsulate,
    esp_encapsulate,
)
from pspsim.wire.frames import udp_frame

# draft-mcgrew-gcm-test-01 (GCM test cases for ESP), AES-GCM cases with a
# nonzero SPI: (key || salt, SPI, 64-bit sequence, ESN, IV, plaintext incl.
# ESP trailer, ciphertext || ICV).  Case 4 uses SPI 0, which RFC 4303 reserves.
DRAFT_VECTORS = [
    ("4c80cdefbb5d10da906ac73c3613a634" "2e443b68", 0x4321, 0x87654321 << 32, True, "4956ed7e3b244cfe",
     "45000048699a000080114db7c0a80102c0a801010a9bf15638d3010000010000"
     "00000000045f736970045f756470037369700963796265726369747902646b00" "0021000101020201",
     "fecf537e729d5b07dc30df528dd22b768d1b98736696a6fd348509fa13ceac34"
     "cfa2436f14a3f3cf65925bf1f4a13c5d15b21e1884f5ff6247aeabb786b93bce"
     "61bc17d768fd9732" "459018148f6cbe722fd04796562dfdb4"),
    ("feffe9928665731c6d6a8f9467308308feffe9928665731c" "cafebabe", 0xA5F8, 10, False, "facedbaddecaf888",
     "45000028a4ad4000400678800a01038f0a010612802306b8cb712602dd6bb03e" "501016d075680001",
     "a5b1f8066029aea40e598b8122de02420938b3ab33f828e687b8858b5bfbdbd0" "315b27452144cc77"
     "95457b9652037f5318027b5b4cd7a636"),
    ("abbccddef00112233445566778899aababbccddef00112233445566778899aab" "11223344", 0x4A2CBFE3, 2, False,
     "0102030405060708",
     "4500003069a6400080062690c0a801029389155e0a9e008b2dc57ee000000000" "7002400020bf0000020405b40101040201020201",
     "ff425c9b724599df7a3bcd510194e00d6a78107f1b0b1cbf06efae9d65a5d763" "748a637985771d347f0545659f14e99def842d8e"
     "b335f4eecfdbf831824b4c4915956c96"),
    ("7d773d00c144c525ac619d18c84a3f47" "d9664267", 0x335467AE, 0xFFFFFFFF, False, "43457e9182443bc6",
     "01020201", "437f866b" "cb3f699fe9b0822bac961c4504bef270"),
]


@pytest.mark.parametrize("key, spi, seq, esn, iv, plaintext, sealed", DRAFT_VECTORS)
def test_published_vectors(key, spi, seq, esn, iv, plaintext, sealed):
    plaintext = bytes.fromhex(plaintext)
    data, next_header = plaintext[: -2 - plaintext[-2]], plaintext[-1]
    tx = EspSA(spi, bytes.fromhex(key), esn=esn)
    packet = tx.seal(data, next_header, seq=seq, iv=bytes.fromhex(iv))
    assert packet[:8] == spi.to_bytes(4, "big") + (seq & 0xFFFFFFFF).to_bytes(4, "big")
    assert packet[16:].hex() == sealed
    rx = EspSA(spi, bytes.fromhex(key), esn=esn)
    rx.window.top = seq - 1  # a receiver that has seen everything before this packet
    assert rx.open(packet) == (data, next_header, seq)


scapy_ipsec = pytest.importorskip("scapy.layers.ipsec")
from scapy.layers.inet import IP  # noqa: E402
from scapy.layers.inet6 import IPv6  # noqa: E402

CASES = [(mode, v, udp, esn) for mode in ("transport", "tunnel") for v in (4, 6) for udp in (False, True)
         for esn in (False, True) if not (v == 6 and udp)]


def _scapy_sa(spi, key, mode, ip_version, udp, esn, esn_high=0):
    from scapy.layers.inet import UDP

    tunnel = None
    if mode == "tunnel":
        tunnel = IP(src="10.0.0.1", dst="10.0.0.2") if ip_version == 4 else IPv6(src="a00::1", dst="a00::2")
    return scapy_ipsec.SecurityAssociation(
        scapy_ipsec.ESP, spi=spi, crypt_algo="AES-GCM", crypt_key=key, auth_algo="NULL",
        tunnel_header=tunnel, nat_t_header=UDP(sport=4500, dport=4500) if udp else None,
        esn_en=esn, esn=esn_high,
    )


def _ip(frame: bytes, ip_version: int):
    return (IP if ip_version == 4 else IPv6)(frame[14:])


@pytest.mark.parametrize("mode, ip_version, udp, esn", CASES)
def test_scapy_opens_what_pspsim_seals(mode, ip_version, udp, esn):
    key = os.urandom(20)
    frame = udp_frame(os.urandom(77), ip_version=ip_version)
    tx = EspSA(0x1234, key, mode=mode, udp_encap=udp, esn=esn, next_seq=(5 << 32) + 9 if esn else 9)
    sealed = esp_encapsulate(frame, tx)
    other = _scapy_sa(0x1234, key, mode, ip_version, udp, esn, esn_high=5 if esn else 0)
    opened = other.decrypt(_ip(sealed, ip_version))
    assert bytes(opened) == frame[14:]


@pytest.mark.parametrize("mode, ip_version, udp, esn", CASES)
def test_pspsim_opens_what_scapy_seals(mode, ip_version, udp, esn):
    key = os.urandom(36)
    frame = udp_frame(os.urandom(130), ip_version=ip_version)
    other = _scapy_sa(0x77, key, mode, ip_version, udp, esn, esn_high=3 if esn else 0)
    sealed = bytes(other.encrypt(_ip(frame, ip_version), seq_num=42))
    rx = EspSA(0x77, key, esn=esn)
    if esn:
        rx.window.top = (3 << 32) + 40
    opened = esp_decapsulate(frame[:14] + sealed, {0x77: rx})
    assert opened.frame == frame and opened.seq == ((3 << 32) + 42 if esn else 42)


def test_overhead_matches_real_bytes_for_every_mode():
    for mode, ip_version, udp, esn in CASES:
        for size in range(0, 9):
            frame = udp_frame(bytes(size), ip_version=ip_version)
            sa = EspSA(1, bytes(20), mode=mode, udp_encap=udp, esn=esn)
            protected = len(frame) - 14 - (0 if mode == "tunnel" else {4: 20, 6: 40}[ip_version])
            assert len(esp_encapsulate(frame, sa)) - len(frame) == sa.overhead(protected, ip_version)


def test_replayed_packet_is_rejected_and_window_slides():
    tx, rx = EspSA(9, bytes(20)), EspSA(9, bytes(20), replay_window=32)
    packets = [esp_encapsulate(udp_frame(bytes([i])), tx) for i in range(40)]
    esp_decapsulate(packets[5], {9: rx})
    with pytest.raises(EspReplay):
        esp_decapsulate(packets[5], {9: rx})
    esp_decapsulate(packets[39], {9: rx})  # sequence 40: packet seq 6 is now 34 behind
    with pytest.raises(EspOutsideWindow):
        esp_decapsulate(packets[5], {9: rx})
    esp_decapsulate(packets[10], {9: rx})  # seq 11: 29 behind, inside, unseen


@settings(max_examples=200, deadline=None)
@given(order=st.lists(st.integers(1, 200), min_size=1, max_size=120), size=st.sampled_from([32, 64, 128]))
def test_property_replay_window_matches_a_set_model(order, size):
    tx, rx = EspSA(3, bytes(20)), EspSA(3, bytes(20), replay_window=size)
    packets = {seq: tx.seal(b"p", 17, seq=seq) for seq in set(order)}
    seen, top = set(), 0
    for seq in order:
        expect_ok = seq not in seen and (seq > top or top - seq < size)
        try:
            rx.open(packets[seq])
            assert expect_ok
            seen.add(seq)
            top = max(top, seq)
        except EspReplay:
            assert seq in seen and top - seq < size
        except EspOutsideWindow:
            assert top - seq >= size


def test_forged_packets_do_not_move_the_window():
    tx, rx = EspSA(4, bytes(20)), EspSA(4, bytes(20))
    forged = bytearray(tx.seal(b"x", 17, seq=1000))
    forged[-1] ^= 1
    with pytest.raises(EspAuthFailure):
        rx.open(bytes(forged))
    assert rx.window.top == 0
    rx.open(tx.seal(b"y", 17, seq=1))


def test_esn_window_crosses_the_32_bit_boundary():
    tx, rx = EspSA(5, bytes(20), esn=True, next_seq=2**32 - 3), EspSA(5, bytes(20), esn=True)
    rx.window.top = 2**32 - 4
    seqs = [rx.open(tx.seal(b"z", 17))[2] for _ in range(6)]
    assert seqs == list(range(2**32 - 3, 2**32 + 3))


def test_sequence_counter_never_wraps():
    sa = EspSA(6, bytes(20), next_seq=2**32 - 1)
    sa.seal(b"last", 17)
    with pytest.raises(EspSequenceExhausted):
        sa.seal(b"wrapped", 17)


@pytest.mark.parametrize("index", range(0, 60))
def test_flipped_bit_fails(index):
    tx, rx = EspSA(0x99, bytes(range(20))), EspSA(0x99, bytes(range(20)))
    frame = udp_frame(b"flip me")
    packet = bytearray(esp_encapsulate(frame, tx))
    packet[34 + index % (len(packet) - 34)] ^= 1 << (index % 8)
    with pytest.raises(EspRejected):
        esp_decapsulate(bytes(packet), {0x99: rx})


def test_unknown_spi_malformed_and_not_esp():
    with pytest.raises(EspNoSa):
        esp_decapsulate(esp_encapsulate(udp_frame(b"a"), EspSA(1, bytes(20))), {})
    with pytest.raises(NotEspPacket):
        esp_decapsulate(udp_frame(b"plain"), {})
    short = udp_frame(b"")[:14] + bytes.fromhex("4500001c000040004032000000000000000000000000000000000000")
    with pytest.raises((EspMalformed, EspNoSa)):
        esp_decapsulate(short, {0: EspSA(1, bytes(20))})


@pytest.mark.parametrize("kwargs", [dict(key=bytes(16)), dict(spi=0), dict(mode="beet"), dict(replay_window=16),
                                    dict(tunnel_src="10.0.0.1"), dict(next_seq=0)])
def test_bad_sa_parameters(kwargs):
    args = dict(spi=1, key=bytes(20)) | kwargs
    with pytest.raises(ConfigError):
        EspSA(**args)


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=120))
def test_arbitrary_bytes_give_typed_rejections(data):
    sa = EspSA(0x01020304, bytes(20))
    prefix = udp_frame(b"")[:14] + bytes.fromhex("45000000000040004032000000000000000000000000")
    for frame in (data, prefix + data):
        try:
            esp_decapsulate(frame, {0x01020304: sa})
        except WireError:
            pass
