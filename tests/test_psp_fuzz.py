"""Arbitrary bytes into the PSP decoders: only clean, typed rejections."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pspsim.wire import DeviceKeys, NotPspPacket, PspHeader, PspRejected, PspSA, decapsulate, derive_sa_key, encapsulate
from pspsim.wire.frames import udp_frame
from tests.conftest import MASTER_KEY_0

KEYS = DeviceKeys(MASTER_KEY_0, MASTER_KEY_0)
SA = PspSA(5, derive_sa_key(MASTER_KEY_0, 5))
VALID = encapsulate(udp_frame(b"payload" * 9), SA, 1)
FUZZ = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _decode(frame: bytes) -> None:
    try:
        decapsulate(frame, KEYS)
    except (NotPspPacket, PspRejected):
        pass


@FUZZ
@given(st.binary(max_size=200))
def test_arbitrary_bytes(data):
    _decode(data)


@FUZZ
@given(st.binary(max_size=120), st.sampled_from([4, 6]))
def test_arbitrary_bytes_behind_a_psp_udp_header(tail, ip_version):
    # A correct Ethernet/IP/UDP:1000 prefix gets the fuzz past classification.
    prefix = udp_frame(tail, dport=1000, ip_version=ip_version)
    _decode(prefix)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=6),
       st.integers(0, len(VALID)))
def test_mutated_and_truncated_valid_packets(edits, cut):
    frame = bytearray(VALID)
    for index, value in edits:
        frame[index] = value
    _decode(bytes(frame[:cut]) if cut % 3 == 0 else bytes(frame))


@FUZZ
@given(st.binary(max_size=64))
def test_header_decoder(data):
    try:
        header = PspHeader.decode(data)
    except PspRejected:
        return
    assert header.encode()[4:] == data[4 : header.length]
