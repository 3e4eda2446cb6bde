"""The compiled fast path produces exactly what the general implementation does."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pspsim.wire import DeviceKeys, PspEncap, PspRejected, PspSender, WireError, derive_sa_key, psp_packet
from pspsim.wire._compiled import PURE_PYTHON
from pspsim.wire.frames import udp_frame
from pspsim.wire.psp_sa import PspSA
from tests.conftest import MASTER_KEY_0, MASTER_KEY_1

KEYS = DeviceKeys(MASTER_KEY_0, MASTER_KEY_1)
pytestmark = pytest.mark.skipif(PURE_PYTHON, reason="fast path switched off")


def test_fast_path_is_built():
    # CI builds it; a silent build failure would hide a 2x slowdown.
    assert psp_packet._psp_fast is not None


def _outcome(function, *args):
    try:
        return function(*args)
    except WireError as exc:
        return (type(exc), str(exc))


@settings(max_examples=300, deadline=None)
@given(
    payload=st.binary(max_size=300),
    ip_version=st.sampled_from([4, 6]),
    mode=st.sampled_from(["transport", "tunnel"]),
    version=st.integers(0, 3),
    offset=st.integers(0, 20),
    spi=st.integers(1, 2**32 - 1),
    iv=st.integers(0, 2**64 - 1),
    edits=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=3),
    vc=st.one_of(st.none(), st.binary(min_size=8, max_size=8)),
)
def test_same_bytes_and_same_errors(payload, ip_version, mode, version, offset, spi, iv, edits, vc):
    frame = udp_frame(payload, ip_version=ip_version)
    master = MASTER_KEY_1 if spi >> 31 else MASTER_KEY_0
    sa = PspSA(spi, derive_sa_key(master, spi, version), version)
    encap = PspEncap(mode, offset, offset, offset, vc)
    sender = PspSender(sa, encap, first_iv=iv)
    fast = _outcome(sender.seal, frame)
    assert fast == _outcome(psp_packet._encapsulate, frame, sa, iv, encap)
    if isinstance(fast, tuple):
        return
    tampered = bytearray(fast)
    for index, value in edits:
        if index < len(tampered):
            tampered[index] = value
    for packet in (fast, bytes(tampered)):
        assert _outcome(psp_packet.decapsulate, packet, KEYS) == _outcome(
            psp_packet._decapsulate, packet, KEYS, psp_packet.ALL_VERSIONS
        )


def test_fast_path_raises_auth_failure_and_bad_slot_like_the_general_path():
    sa = PspSA(0x9A345678, derive_sa_key(MASTER_KEY_1, 0x9A345678))
    sealed = PspSender(sa).seal(udp_frame(b"x" * 30))
    for keys in (DeviceKeys(MASTER_KEY_0, None), DeviceKeys(MASTER_KEY_0, MASTER_KEY_0)):
        fast = _outcome(psp_packet.decapsulate, sealed, keys)
        assert issubclass(fast[0], PspRejected)
        assert fast == _outcome(psp_packet._decapsulate, sealed, keys, psp_packet.ALL_VERSIONS)
