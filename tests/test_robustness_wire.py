"""Nonces are never reused by accident, and decoders take any bytes-like input.

Each test attacks one way two packets could end up under one (key, nonce):
an SPI handed out twice, a counter moved back, a copied SA; and the limits
of the sequence spaces (ESP near 65,535 bytes and near 2**64).
"""

from __future__ import annotations

import copy
import os
import pickle

import pytest

from pspsim.wire import DeviceKeys, PspEncap, PspSA, PspSender, decapsulate, derive_sa_key, encapsulate
from pspsim.wire.errors import ConfigError, EncapsulationError, IvSpaceExhausted, NonceReuseError
from pspsim.wire.esp import EspOutsideWindow, EspSA, EspSequenceExhausted, esp_decapsulate, esp_encapsulate
from pspsim.wire.frames import udp_frame
from pspsim.wire.psp_packet import MAX_IV
from pspsim.wire.tls import (
    CONTENT_ALERT,
    Tls12GcmRecordProtection,
    Tls13RecordProtection,
    TlsMalformed,
    iter_records,
)
from tests.conftest import MASTER_KEY_0, MASTER_KEY_1

SECRET = bytes(range(32))


def test_new_sa_refuses_an_spi_already_handed_out_in_this_key_phase():
    keys = DeviceKeys(MASTER_KEY_0, MASTER_KEY_1)
    first = keys.new_sa(0x1234)
    with pytest.raises(NonceReuseError, match="already handed out"):
        keys.new_sa(0x1234)
    with pytest.raises(NonceReuseError):
        keys.new_sa(0x1234, version=1)  # same SPI, whatever the version
    assert keys.new_sa(0x1235).spi == 0x1235
    keys.rotate(os.urandom(32))  # phase 1: a different key, so SPI id 0x1234 is new under it
    second = keys.new_sa(0x1234)
    assert second.spi == first.spi | 0x8000_0000 and second.key != first.key
    keys.rotate(os.urandom(32))  # phase 0 again, with a fresh key: the id may be used again
    assert keys.new_sa(0x1234).key != first.key


def test_receive_side_lookups_are_not_hand_outs():
    keys = DeviceKeys(MASTER_KEY_0, MASTER_KEY_1)
    for _ in range(3):
        keys.sa_for(0x1234, 0)  # every received packet looks its SA up
    keys.new_sa(0x1234)


def _sender(first_iv: int = 1) -> PspSender:
    return PspSender(PspSA(5, derive_sa_key(MASTER_KEY_0, 5)), first_iv=first_iv)


def test_psp_iv_counter_moves_only_forward():
    sender = _sender(10)
    sender.seal(udp_frame(b"a"))
    with pytest.raises(NonceReuseError, match="cannot move back"):
        sender.next_iv = 10
    sender.next_iv = 50  # forward is fine
    out = sender.seal(udp_frame(b"b"))
    assert int.from_bytes(out[14 + 20 + 8 + 8 : 14 + 20 + 8 + 16], "big") == 50


def test_psp_iv_space_exhausted_is_its_own_error():
    sender = _sender(MAX_IV)
    sender.seal(udp_frame(b"last"))
    with pytest.raises(IvSpaceExhausted):
        sender.seal(udp_frame(b"wraps"))
    assert issubclass(IvSpaceExhausted, EncapsulationError)


def test_esp_sequence_counter_moves_only_forward():
    sa = EspSA(7, bytes(20), next_seq=100)
    esp_encapsulate(udp_frame(b"x"), sa)
    with pytest.raises(NonceReuseError):
        sa.next_seq = 100
    sa.next_seq = 200
    assert sa.next_seq == 200


def test_tls_sequence_numbers_are_read_only():
    for protection in (Tls13RecordProtection("TLS_AES_128_GCM_SHA256", SECRET),
                       Tls12GcmRecordProtection(bytes(16), bytes(4))):
        protection.seal(b"x")
        with pytest.raises(AttributeError):
            protection.seq = 0
        assert protection.seq == 1


@pytest.mark.parametrize("make", [
    lambda: _sender(),
    lambda: EspSA(7, bytes(20)),
    lambda: Tls13RecordProtection("TLS_AES_128_GCM_SHA256", SECRET),
    lambda: Tls12GcmRecordProtection(bytes(16), bytes(4)),
], ids=["psp-sender", "esp-sa", "tls13", "tls12"])
@pytest.mark.parametrize("how", [copy.copy, copy.deepcopy, lambda x: pickle.loads(pickle.dumps(x))],
                         ids=["copy", "deepcopy", "pickle"])
def test_nothing_holding_a_nonce_counter_can_be_copied(make, how):
    with pytest.raises(NonceReuseError, match="cannot be copied"):
        how(make())


def test_psp_sa_without_a_counter_can_be_copied():
    sa = PspSA(5, derive_sa_key(MASTER_KEY_0, 5))
    assert copy.copy(sa) is not None  # no counter: the IVs live in the sender


@pytest.mark.parametrize("content_type", [0, 256, -1])
def test_tls_seal_validates_the_content_type(content_type):
    for protection in (Tls13RecordProtection("TLS_AES_128_GCM_SHA256", SECRET),
                       Tls12GcmRecordProtection(bytes(16), bytes(4))):
        with pytest.raises(ConfigError, match="content type must be 1..255"):
            protection.seal(b"x", content_type)
        assert protection.seq == 0  # nothing was used up


def test_tls13_type_255_and_alert_round_trip():
    tx, rx = (Tls13RecordProtection("TLS_AES_128_GCM_SHA256", SECRET) for _ in range(2))
    assert rx.open(tx.seal(b"z", 255)) == (255, b"z")
    assert rx.open(tx.seal(b"\x01\x00", CONTENT_ALERT)) == (CONTENT_ALERT, b"\x01\x00")


def test_tls13_first_sequence_number_is_a_constructor_argument():
    tx = Tls13RecordProtection("TLS_AES_128_GCM_SHA256", SECRET, seq=5)
    rx = Tls13RecordProtection("TLS_AES_128_GCM_SHA256", SECRET, seq=5)
    assert rx.open(tx.seal(b"hello")) == (23, b"hello") and tx.seq == rx.seq == 6
    with pytest.raises(ConfigError):
        Tls13RecordProtection("TLS_AES_128_GCM_SHA256", SECRET, seq=-1)


@pytest.mark.parametrize("wrap", [bytearray, memoryview, lambda b: memoryview(bytearray(b))])
def test_decoders_accept_any_bytes_like_object(wrap):
    keys = DeviceKeys(MASTER_KEY_0, MASTER_KEY_1)
    frame = udp_frame(b"payload" * 5)
    sealed = encapsulate(wrap(frame), PspSA(5, derive_sa_key(MASTER_KEY_0, 5)), 1)
    assert decapsulate(wrap(sealed), keys).frame == frame
    tx, rx = EspSA(9, bytes(20)), EspSA(9, bytes(20))
    assert esp_decapsulate(wrap(esp_encapsulate(wrap(frame), tx)), {9: rx}).frame == frame
    t13, r13 = (Tls13RecordProtection("TLS_AES_128_GCM_SHA256", SECRET) for _ in range(2))
    record = t13.seal(wrap(b"data"))
    assert r13.open(wrap(record)) == (23, b"data")
    assert list(iter_records(wrap(record + record))) == [record, record]
    t12, r12 = Tls12GcmRecordProtection(bytes(16), bytes(4)), Tls12GcmRecordProtection(bytes(16), bytes(4))
    assert r12.open(wrap(t12.seal(wrap(b"data")))) == (23, b"data")


def test_decoders_refuse_what_is_not_bytes_like():
    with pytest.raises(TypeError, match="bytes-like"):
        decapsulate("not bytes", DeviceKeys(MASTER_KEY_0, MASTER_KEY_1))
    with pytest.raises(TlsMalformed):
        Tls13RecordProtection("TLS_AES_128_GCM_SHA256", SECRET).open(memoryview(b"\x17\x03"))


@pytest.mark.parametrize("mode, udp", [("transport", False), ("transport", True), ("tunnel", False)])
def test_esp_near_65535_bytes_is_refused_before_a_sequence_number_is_used(mode, udp):
    sa = EspSA(3, bytes(20), mode=mode, udp_encap=udp)
    biggest = None
    for payload in range(65535 - 20 - 8 - 60, 65535 - 20 - 8 + 1):
        frame = udp_frame(bytes(payload))
        try:
            out = esp_encapsulate(frame, sa)
        except EncapsulationError as exc:
            assert "65,535" in str(exc)
            continue
        biggest = payload
        assert int.from_bytes(out[16:18], "big") == len(out) - 14  # IPv4 total length is right
    assert biggest is not None
    # every refusal kept its sequence number: the numbers used are exactly the packets sent
    assert sa.next_seq - 1 == sum(1 for p in range(65535 - 20 - 8 - 60, biggest + 1))


def test_esn_receiver_near_the_top_of_the_sequence_space_rejects_cleanly():
    tx = EspSA(5, bytes(20), esn=True, next_seq=2**64 - 2)
    rx = EspSA(5, bytes(20), esn=True)
    rx.window.top = 2**64 - 3  # a receiver that has followed this sender up to here
    for _ in range(2):
        assert esp_decapsulate(esp_encapsulate(udp_frame(b"x"), tx), {5: rx}).seq >= 2**64 - 2
    with pytest.raises(EspSequenceExhausted):
        esp_encapsulate(udp_frame(b"x"), tx)
    # a packet whose low bits point past 2**64 - 1 (forged or from an old SA): a window drop, no struct.error
    forged = EspSA(5, bytes(20), next_seq=5)  # 32-bit sender, low bits 5 -> high 2**32 at the receiver
    with pytest.raises(EspOutsideWindow, match="past 2\\*\\*64 - 1"):
        esp_decapsulate(esp_encapsulate(udp_frame(b"x"), forged), {5: rx})


@pytest.mark.parametrize("ip_version", [4, 6])
@pytest.mark.parametrize("encap", [PspEncap(), PspEncap("tunnel"), PspEncap(vc=bytes(8)),
                                   PspEncap("tunnel", vc=bytes(8))],
                         ids=["transport", "tunnel", "transport-vc", "tunnel-vc"])
def test_psp_size_predicted_before_sealing_matches_the_sealed_frame(ip_version, encap):
    """`psp encrypt` refuses over-jumbo frames before sealing (so no IV is used) from this prediction."""
    from pspsim.wire.frames import parse_ip

    sa = PspSA(5, derive_sa_key(MASTER_KEY_0, 5))
    for payload in (0, 1, 100, 1400):
        frame = udp_frame(bytes(payload), ip_version=ip_version) + bytes(6)  # Ethernet padding is dropped
        _, version, _, _, end = parse_ip(frame, EncapsulationError)
        assert len(encapsulate(frame, sa, 1, encap)) == end + encap.overhead(version)


def test_psp_encrypt_skips_an_over_jumbo_frame_without_using_its_iv(tmp_path, capsys):
    from pspsim.cli.main import main
    from pspsim.wire import PcapRecord, read_pcap, write_pcap
    from pspsim.wire.pcap import PcapHeader
    from tests.conftest import VECTORS

    frames = [udp_frame(bytes(10)), udp_frame(bytes(9014 - 14 - 20 - 8 - 40 + 1)), udp_frame(bytes(20))]
    source = tmp_path / "in.pcap"
    write_pcap(source, [PcapRecord(0, 0, f, len(f)) for f in frames], PcapHeader(snaplen=65535))
    out = tmp_path / "out.pcap"
    cfg = VECTORS / "encrypt_transport_crypt_off_128.cfg"
    assert main(["psp", "encrypt", "--cfg", str(cfg), "--first-iv", "7", str(source), str(out)]) == 0
    assert "packet 1: skipped: encrypted frame of 9015 bytes exceeds 9014" in capsys.readouterr().err
    ivs = [int.from_bytes(r.data[14 + 20 + 8 + 8 : 14 + 20 + 8 + 16], "big") for r in read_pcap(out)[1]]
    assert ivs == [7, 8]
