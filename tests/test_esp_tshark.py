"""Wireshark's own ESP dissector decrypts and verifies what pspsim writes.

Needs ``tshark`` (``.ci/run`` installs it); skipped where it is missing.
"""

import shutil
import subprocess

import pytest

from pspsim.cli.main import main
from pspsim.wire.pcap import read_pcap
from tests.conftest import VECTORS

TSHARK = shutil.which("tshark")
pytestmark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")
KEY = "1f2e3d4c5b6a798897a6b5c4d3e2f10112233445"  # 16-byte key + 4-byte salt


def _tshark(capture, key, *fields):
    sa = f'"IPv4","*","*","0x0000abcd","AES-GCM with 16 octet ICV [RFC4106]","0x{key}","NULL",""'
    command = [TSHARK, "-n", "-r", str(capture), "-o", "esp.enable_encryption_decode:TRUE",
               "-o", "esp.enable_authentication_check:TRUE", "-o", f"uat:esp_sa:{sa}", "-T", "fields",
               "-E", "occurrence=l"]
    for field in fields:
        command += ["-e", field]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return [line.split("\t") for line in result.stdout.splitlines()]


@pytest.mark.parametrize("extra", [[], ["--mode", "tunnel"], ["--udp-encap"], ["--mode", "tunnel", "--udp-encap"]])
def test_tshark_decrypts_and_verifies(tmp_path, extra):
    out = tmp_path / "esp.pcap"
    source = VECTORS / "v4_cleartext_n4.pcap"
    assert main(["esp", "encrypt", "--spi", "abcd", "--key", KEY, *extra, str(source), str(out)]) == 0
    rows = _tshark(out, KEY, "esp.sequence", "esp.icv_good", "udp.srcport", "udp.payload")
    _, clear = read_pcap(source)
    assert [r[0] for r in rows] == ["1", "2", "3", "4"]
    assert all(r[1] == "1" for r in rows)  # Wireshark: ICV correct
    assert [r[-1] for r in rows] == [c.data[42:].hex() for c in clear]  # inner UDP payload decrypted


def test_tshark_rejects_a_wrong_key(tmp_path):
    out = tmp_path / "esp.pcap"
    main(["esp", "encrypt", "--spi", "abcd", "--key", KEY, str(VECTORS / "v4_cleartext.pcap"), str(out)])
    wrong = KEY[:-2] + "00"
    rows = _tshark(out, wrong, "esp.icv_good", "udp.payload")
    assert rows[0][0] != "1"
