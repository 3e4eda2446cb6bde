"""A short profile of ``make fuzz``: every decoder, a few thousand generated inputs each."""

import io

from tests.fuzz_decoders import DECODERS, run


def test_short_fuzz_profile_has_no_crash_tamper_or_mismatch():
    out = io.StringIO()
    tallies = run(3000, seed=1, out=out)
    assert set(tallies) == set(DECODERS)
    for name, tally in tallies.items():
        assert tally.counts["inputs"] == 3000, name
        assert tally.failures == 0, out.getvalue()
    # the inputs reach every layer: classification, framing, the version check and the ICV
    psp = tallies["psp"].counts
    assert min(psp["NotPspPacket"], psp["PspFramingError"], psp["PspBadPacket"], psp["PspAuthFailure"], psp["ok"]) > 0
    esp = tallies["esp"].counts
    assert min(esp["NotEspPacket"], esp["EspAuthFailure"], esp["EspNoSa"], esp["ok"]) > 0
    for tls in ("tls13", "tls12"):
        assert min(tallies[tls].counts["TlsAuthFailure"], tallies[tls].counts["TlsMalformed"]) > 0
    assert min(tallies["pcap"].counts["ok"], tallies["pcap"].counts["PcapFormatError"]) > 0
    assert tallies["cfg"].counts["parse_encrypt_config: ok"] > 0
