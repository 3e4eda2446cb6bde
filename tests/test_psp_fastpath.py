"""The compiled fast path produces exactly what the general implementation does."""

from functools import partial

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
    assert psp_packet._psp_fast is not None and psp_packet._psp_batch is not None


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


class CountingKeys(DeviceKeys):
    """A DeviceKeys subclass: batch verification must ask its sa_for, not its cache."""

    calls = 0

    def sa_for(self, spi, version):
        self.calls += 1
        return super().sa_for(spi, version)


def _frames_of(spis, pattern):
    """Frames sealed by senders of ``spis`` (SA ids), in the order ``pattern`` names them."""
    senders = [PspSender(DeviceKeys(MASTER_KEY_0, MASTER_KEY_1).new_sa(spi)) for spi in spis]
    return [senders[k].seal(udp_frame(bytes([k]) * (20 + k))) for k in pattern]


@pytest.mark.parametrize("keys_type", [DeviceKeys, CountingKeys])
def test_batch_verification_counts_key_lookups_as_one_by_one(keys_type):
    """verify_each finds SAs without calling DeviceKeys.sa_for for each packet; the
    cache's hits, misses and contents must still be those of one sa_for a packet,
    also when a two-entry cache evicts and when one device holds two places of the
    keyring; a subclass's own sa_for is called for every packet."""
    pattern = [0, 0, 1, 0, 2, 2, 1, 1, 0, 2, 0, 1, 1, 1, 2, 0]
    frames = _frames_of([5, 6, 7], pattern)
    hosts = [k // 2 % 3 for k in range(len(frames))]

    def keyring():  # the third NIC's place holds the first one's keys again
        first, second = (keys_type(MASTER_KEY_0, MASTER_KEY_1, cache_size=2) for _ in range(2))
        return [first, second, first]

    batch, single = keyring(), keyring()
    assert psp_packet.verify_each(frames, list(range(len(frames))), batch, hosts) == [True] * len(frames)
    for frame, host in zip(frames, hosts):
        psp_packet.decapsulate(frame, single[host])
    assert batch[0] is batch[2]
    for a, b in zip(batch, single):
        assert (a.cache_hits, a.cache_misses, a._cache.keys()) == (b.cache_hits, b.cache_misses, b._cache.keys())
    first_lookups = len({(id(batch[h]), spi) for h, spi in zip(hosts, pattern)})
    assert sum(k.cache_misses for k in batch[:2]) > first_lookups  # evictions happened: the check means something
    if keys_type is CountingKeys:
        assert sum(k.calls for k in batch[:2]) == len(frames) == sum(k.calls for k in single[:2])


def test_batch_verification_lets_go_of_verified_frames_only():
    frames = _frames_of([5, 6], [0, 1, 0])
    cookie = PspSender(PspSA(9, derive_sa_key(MASTER_KEY_0, 9)), PspEncap(vc=bytes(8))).seal(udp_frame(b"vc"))
    frames.append(cookie)  # the compiled path leaves frames with a cookie to the general one
    frames[1] = frames[1][:-1] + bytes([frames[1][-1] ^ 1])  # its ICV no longer matches
    keep, keyring = list(frames), [DeviceKeys(MASTER_KEY_0, MASTER_KEY_1)]
    with pytest.raises(ValueError, match="release needs rejections"):  # a rejection would lose the frames let go
        psp_packet.verify_each(frames, [0], keyring, [0] * 4, release=True)
    rejections = []
    verified = psp_packet.verify_each(frames, [3, 0, 1, 2], keyring, [0] * 4, release=True, rejections=rejections)
    assert verified == [None, True, False, True] and [k for k, _ in rejections] == [2]
    assert frames == [None, keep[1], None, cookie]  # the rejected and the unusual frames are kept


def test_sealing_checks_frame_lengths_when_given():
    import numpy as np

    sa = PspSA(0x1234, derive_sa_key(MASTER_KEY_0, 0x1234))
    template = udp_frame(bytes(40))
    parts = [(template[:30], template[38:])] * 3
    plain = psp_packet.seal_parts([PspSender(sa)], [0, 0, 0], parts, [1, 2, 3], [4, 5, 6])
    lengths = np.array([len(f) for f in plain], dtype=np.float64)
    assert psp_packet.seal_parts([PspSender(sa)], [0, 0, 0], parts, [1, 2, 3], [4, 5, 6], lengths) == plain
    lengths[2] += 1
    with pytest.raises(ValueError, match="frame 2"):
        psp_packet.seal_parts([PspSender(sa)], [0, 0, 0], parts, [1, 2, 3], [4, 5, 6], lengths)


def test_sealing_from_templates_is_sealing_each_frame(monkeypatch):
    """seal_templates (arrays of senders, template codes and words) gives the bytes
    of sealing each frame in turn, each sender's IVs in order, compiled or not; bad
    indices raise."""
    import struct

    import numpy as np

    rng = np.random.default_rng(7)
    templates = [(udp_frame(bytes(n))[:30], udp_frame(bytes(n))[38:]) for n in (10, 200, 1400)]
    sas = [PspSA(spi, derive_sa_key(MASTER_KEY_0, spi)) for spi in (0x11, 0x22)]
    codes = rng.integers(0, 3, 50)
    which = rng.integers(0, 2, 50)
    words0, words1 = rng.integers(0, 2**32, 50), rng.integers(0, 2**32, 50)
    sealed = psp_packet.seal_templates([PspSender(sa) for sa in sas], which, templates, codes, words0, words1)
    senders = [PspSender(sa) for sa in sas]
    expected = [senders[w].seal(templates[c][0] + struct.pack("!II", a, b) + templates[c][1])
                for w, c, a, b in zip(which.tolist(), codes.tolist(), words0.tolist(), words1.tolist())]
    assert sealed == expected and len(set(expected)) == 50
    with monkeypatch.context() as m:
        m.setattr(psp_packet, "_psp_fast", None)
        seal = partial(psp_packet.seal_templates, [PspSender(sa) for sa in sas])
        assert seal(which, templates, codes, words0, words1) == expected
    seal = partial(psp_packet.seal_templates, [PspSender(sa) for sa in sas])
    with pytest.raises(IndexError, match="template 3 of 3"):
        seal(which, templates, np.where(np.arange(50) == 9, 3, codes), words0, words1)
    with pytest.raises(IndexError, match="sender -1 of 2"):
        seal(np.where(np.arange(50) == 9, -1, which), templates, codes, words0, words1)
    with pytest.raises(ValueError, match="49 senders"):
        seal(which[:49], templates, codes, words0, words1)


def test_batch_verification_refuses_indices_out_of_range_or_not_integers():
    import sys

    import numpy as np

    frames = _frames_of([5], [0] * 200)
    keyring = [DeviceKeys(MASTER_KEY_0, MASTER_KEY_1)]
    assert psp_packet.verify_each(frames, np.array([1, 0]), keyring, np.zeros(200, dtype=np.int32)) == [True] * 2
    nones = sys.getrefcount(None)
    psp_packet.verify_each(frames, np.arange(200), keyring, np.zeros(200, dtype=np.int64))
    assert sys.getrefcount(None) - nones < 10  # the buffers lent to crypto leak no reference (two a packet did)
    frames = frames[:2]
    with pytest.raises(TypeError, match="integers"):
        psp_packet.verify_each(frames, np.array([0.9, 1.5]), keyring, np.array([0, 0]))
    with pytest.raises(IndexError, match="packet 2 of 2 frames"):
        psp_packet.verify_each(frames, [0, 2], keyring, [0, 0])
    with pytest.raises(IndexError, match="receiver 1 of 1"):
        psp_packet.verify_each(frames, [1], keyring, [0, 1])


def test_batch_verification_goes_on_past_rejections_when_asked():
    from pspsim.wire.errors import PspAuthFailure

    frames = _frames_of([5, 6], [0, 1, 0, 1])
    frames[1] = frames[1][:-1] + bytes([frames[1][-1] ^ 1])  # its ICV no longer matches
    batch, single = (DeviceKeys(MASTER_KEY_0, MASTER_KEY_1) for _ in range(2))
    rejections = []
    assert psp_packet.verify_each(frames, [0, 1, 2, 3], [batch], [0] * 4, rejections=rejections) == \
        [True, False, True, True]
    assert [(k, type(exc)) for k, exc in rejections] == [(1, PspAuthFailure)]
    for frame in frames:
        try:
            psp_packet.decapsulate(frame, single)
        except PspRejected:
            pass
    assert (batch.cache_hits, batch.cache_misses) == (single.cache_hits, single.cache_misses) == (2, 2)
    with pytest.raises(PspAuthFailure):
        psp_packet.verify_each(frames, [0, 1, 2, 3], [batch], [0] * 4)
