"""PSP encapsulation beyond the shipped vectors: modes, versions, tampering, rotation."""

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pspsim.wire import (
    DeviceKeys,
    EncapsulationError,
    NotPspPacket,
    PspAuthFailure,
    PspBadPacket,
    PspEncap,
    PspFramingError,
    PspHeader,
    PspRejected,
    PspSA,
    PspSender,
    decapsulate,
    derive_sa_key,
    encapsulate,
)
from pspsim.wire.frames import IpView, internet_checksum, ip_frame, parse_ip, udp_frame
from tests.conftest import MASTER_KEY_0, MASTER_KEY_1

KEYS = DeviceKeys(MASTER_KEY_0, MASTER_KEY_1)
PSP_OFFSET = {4: 14 + 20 + 8, 6: 14 + 40 + 8}  # start of the PSP header in an encapsulated frame


def sa_for(spi: int, version: int = 0) -> PspSA:
    master = MASTER_KEY_1 if spi >> 31 else MASTER_KEY_0
    return PspSA(spi, derive_sa_key(master, spi, version), version)


@pytest.mark.parametrize("ip_version", [4, 6])
@pytest.mark.parametrize("mode", ["transport", "tunnel"])
@pytest.mark.parametrize("vc", [None, bytes(range(8))])
@pytest.mark.parametrize("version", [0, 1, 2, 3])
def test_round_trip_and_overhead(ip_version, mode, vc, version):
    frame = udp_frame(os.urandom(300), ip_version=ip_version)
    extra = 2 if vc else 0  # customary offsets keep the cookie in clear
    encap = PspEncap(mode, 1 + extra, 6 + extra, 11 + extra, vc)
    sealed = encapsulate(frame, sa_for(0x9A345678, version), 7, encap)
    assert len(sealed) - len(frame) == encap.overhead(ip_version)
    if ip_version == 4:
        assert internet_checksum(sealed[14:34]) == 0  # outer IPv4 checksum is valid
    header = PspHeader.decode(sealed, PSP_OFFSET[ip_version])
    assert (header.spi, header.iv, header.version, header.vc) == (0x9A345678, 7, version, vc)
    assert header.next_header == ({4: 4, 6: 41}[ip_version] if mode == "tunnel" else 17)
    opened = decapsulate(sealed, KEYS)
    assert opened.frame == frame and opened.version == version


def test_gcm_hides_the_payload_and_gmac_leaves_it_in_clear():
    payload = b"secret payload " * 10
    frame = udp_frame(payload)
    assert payload not in encapsulate(frame, sa_for(0x12345678, 0), 1)
    assert payload in encapsulate(frame, sa_for(0x12345678, 2), 1)


def test_a_small_crypt_offset_encrypts_the_cookie():
    frame = udp_frame(bytes(64))
    sealed = encapsulate(frame, sa_for(1), 1, PspEncap(transport_crypt_offset=1, vc=bytes(range(8))))
    cookie = sealed[PSP_OFFSET[4] + 16 : PSP_OFFSET[4] + 24]
    assert cookie[:4] == bytes(range(4)) and cookie[4:] != bytes(range(4, 8))
    assert decapsulate(sealed, KEYS).frame == frame


def test_crypt_offset_keeps_the_prefix_in_clear():
    frame = udp_frame(bytes(64))
    sealed = encapsulate(frame, sa_for(0x12345678), 1, PspEncap(transport_crypt_offset=1))
    assert sealed[PSP_OFFSET[4] + 16 : PSP_OFFSET[4] + 20] == frame[34:38]  # UDP ports
    sealed0 = encapsulate(frame, sa_for(0x12345678), 1, PspEncap(transport_crypt_offset=0))
    assert sealed0[PSP_OFFSET[4] + 16 : PSP_OFFSET[4] + 20] != frame[34:38]


@pytest.mark.parametrize("version", [0, 2])
@pytest.mark.parametrize("vc", [None, bytes(8)])
def test_every_flipped_bit_from_psp_header_to_icv_is_rejected(version, vc):
    frame = udp_frame(bytes(range(40)))
    sealed = encapsulate(frame, sa_for(0x12345678, version), 1, PspEncap(transport_crypt_offset=1, vc=vc))
    start = PSP_OFFSET[4]
    # Bytes 1..3 of the header are read before the ICV can be checked; a flip
    # there may instead be a framing or bad-packet drop.  Everywhere else the
    # ICV is what catches it.
    parsed_before_verify = range(start + 1, start + 4)
    for bit in range(start * 8, len(sealed) * 8):
        tampered = bytearray(sealed)
        tampered[bit // 8] ^= 0x80 >> (bit % 8)
        expected = PspRejected if bit // 8 in parsed_before_verify else PspAuthFailure
        with pytest.raises(expected):
            decapsulate(bytes(tampered), KEYS)


def test_rotation_kills_spis_two_generations_old():
    keys = DeviceKeys(os.urandom(32), None)
    sa_old = keys.new_sa(0x1234)
    sealed = encapsulate(udp_frame(b"x" * 50), sa_old, 1)
    keys.rotate(os.urandom(32))  # the old key moves to "previous": still accepted
    assert decapsulate(sealed, keys).frame == udp_frame(b"x" * 50)
    keys.rotate(os.urandom(32))  # now its slot holds a fresh key
    with pytest.raises(PspAuthFailure):
        decapsulate(sealed, keys)


def test_empty_master_key_slot_is_a_bad_packet():
    sealed = encapsulate(udp_frame(b"abc"), sa_for(0x9A345678), 1)
    with pytest.raises(PspBadPacket):
        decapsulate(sealed, DeviceKeys(MASTER_KEY_0, None))


def test_disabled_version_is_a_bad_packet():
    sealed = encapsulate(udp_frame(b"abc"), sa_for(0x12345678, 1), 1)
    with pytest.raises(PspBadPacket):
        decapsulate(sealed, KEYS, versions=frozenset({0}))


def test_sender_counts_ivs_and_refuses_to_wrap():
    sender = PspSender(sa_for(0x12345678), first_iv=2**64 - 2)
    ivs = [PspHeader.decode(sender.seal(udp_frame(b"a")), PSP_OFFSET[4]).iv for _ in range(2)]
    assert ivs == [2**64 - 2, 2**64 - 1]
    with pytest.raises(EncapsulationError, match="rekey"):
        sender.seal(udp_frame(b"a"))


def test_vlan_tagged_frames_and_ethernet_padding():
    frame = udp_frame(b"hello")
    tagged = frame[:12] + b"\x81\x00\x00\x05" + frame[12:]
    assert decapsulate(encapsulate(tagged, sa_for(1), 1), KEYS).frame == tagged
    padded = frame + bytes(60 - len(frame))  # Ethernet minimum frame padding
    assert decapsulate(encapsulate(padded, sa_for(1), 1), KEYS).frame == frame


def test_ipv4_options_survive_transport_mode():
    frame = udp_frame(b"opts")
    ihl6 = bytearray(frame[:14] + frame[14:34] + b"\x01\x01\x01\x00" + frame[34:])
    ihl6[14] = 0x46
    ihl6[16:18] = (len(ihl6) - 14).to_bytes(2, "big")
    opened = decapsulate(encapsulate(bytes(ihl6), sa_for(1), 1), KEYS).frame
    assert opened[14:38] == bytes(ihl6[14:24]) + opened[24:26] + bytes(ihl6[26:38])
    assert IpView(*parse_ip(opened, ValueError)).header_len == 24


def test_transport_mode_refuses_what_it_cannot_carry():
    with pytest.raises(EncapsulationError, match="not an IP frame"):
        encapsulate(bytes(14) + b"arp", sa_for(1), 1)
    with pytest.raises(EncapsulationError, match="only TCP or UDP"):
        encapsulate(ip_frame(b"icmp6", 58, ip_version=6), sa_for(1), 1)
    with pytest.raises(EncapsulationError, match="crypt offset"):
        encapsulate(udp_frame(b""), sa_for(1), 1, PspEncap(transport_crypt_offset=3))


def test_non_psp_frames_are_passed_through():
    with pytest.raises(NotPspPacket):
        decapsulate(udp_frame(b"plain", dport=1001), KEYS)


def test_udp_length_mismatch_is_a_framing_error():
    sealed = bytearray(encapsulate(udp_frame(b"abc"), sa_for(1), 1))
    sealed[38:40] = (int.from_bytes(sealed[38:40], "big") - 1).to_bytes(2, "big")
    with pytest.raises(PspFramingError):
        decapsulate(bytes(sealed), KEYS)


def test_secrets_are_not_in_reprs():
    sa = sa_for(1)
    assert sa.key.hex() not in repr(sa) and MASTER_KEY_0.hex() not in repr(KEYS)


@settings(max_examples=150, deadline=None)
@given(
    payload=st.binary(max_size=600),
    ip_version=st.sampled_from([4, 6]),
    mode=st.sampled_from(["transport", "tunnel"]),
    version=st.integers(0, 3),
    offset=st.integers(0, 63),
    vc=st.one_of(st.none(), st.binary(min_size=8, max_size=8)),
    spi=st.integers(1, 2**32 - 1),
    iv=st.integers(0, 2**64 - 1),
)
def test_property_round_trip(payload, ip_version, mode, version, offset, vc, spi, iv):
    frame = udp_frame(payload, ip_version=ip_version)
    encap = PspEncap(mode, offset, offset, offset, vc)
    try:
        sealed = encapsulate(frame, sa_for(spi, version), iv, encap)
    except EncapsulationError:
        inner_ip = 0 if mode == "transport" else {4: 20, 6: 40}[ip_version]
        assert 4 * offset > len(payload) + 8 + (8 if vc else 0) + inner_ip
        return
    opened = decapsulate(sealed, KEYS)
    assert (opened.frame, opened.spi, opened.iv, opened.version) == (frame, spi, iv, version)


def test_seal_queue_seals_in_order_on_demand_and_checks_lengths():
    """seal_queue (compiled, or Python with PSPSIM_PURE_PYTHON=1) seals frames only
    when asked, in order, as sealing each in turn does; a wrong length raises."""
    import struct

    from pspsim.wire import psp_packet

    sa = PspSA(0x33, derive_sa_key(MASTER_KEY_0, 0x33))
    frame = udp_frame(bytes(60))
    templates = [(frame[:30], frame[38:])]
    words = [1, 2, 3]
    sender = PspSender(sa)
    expected = [sender.seal(frame[:30] + struct.pack("!II", w, w) + frame[38:]) for w in words]
    queue = psp_packet.seal_queue([PspSender(sa)], [0, 0, 0], templates, [0, 0, 0], words, words,
                                  [float(len(f)) for f in expected])
    assert queue.frames == []
    queue.upto(2)
    assert queue.frames == expected[:2]
    queue.upto(10)
    assert queue.frames == expected
    wrong = psp_packet.seal_queue([PspSender(sa)], [0, 0, 0], templates, [0, 0, 0], words, words,
                                  [float(len(expected[0]))] * 2 + [1.0])
    with pytest.raises(ValueError, match="frame 2 is"):
        wrong.upto(3)
    assert wrong.frames == expected[:2]
