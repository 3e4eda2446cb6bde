"""``pspsim psp`` commands as a user runs them."""

import subprocess
import sys

import pytest

from pspsim.cli.main import main
from pspsim.wire import PcapRecord, read_pcap, write_pcap
from pspsim.wire.pcap import PcapHeader
from tests.conftest import VECTORS

DECRYPT_CFG = str(VECTORS / "decrypt.cfg")
ENC_CFG = str(VECTORS / "encrypt_transport_crypt_off_128.cfg")


def test_multi_packet_file_uses_a_running_iv_and_first_iv_option(tmp_path, capsys):
    out = tmp_path / "e.pcap"
    assert main(["psp", "encrypt", "--cfg", ENC_CFG, "--first-iv", "100", str(VECTORS / "v6_cleartext_n4.pcap"),
                 str(out)]) == 0
    assert "encrypted 4 packets" in capsys.readouterr().out
    _, records = read_pcap(out)
    assert [int.from_bytes(r.data[14 + 40 + 8 + 8 : 14 + 40 + 8 + 16], "big") for r in records] == [100, 101, 102, 103]


def test_decrypt_reports_each_failure_and_exits_1(tmp_path, capsys):
    _, records = read_pcap(VECTORS / "encrypted" / "v4_encrypt_transport_crypt_off_128.pcap")
    good = records[0]
    tampered = bytearray(good.data)
    tampered[-1] ^= 1
    bad_version = bytearray(good.data)
    bad_version[14 + 20 + 8 + 3] |= 0x3C  # version 15
    plain = (VECTORS / "v4_cleartext.pcap")
    _, (clear,) = read_pcap(plain)
    mixed = [good, PcapRecord(1, 0, bytes(tampered), len(tampered)),
             PcapRecord(2, 0, bytes(bad_version), len(bad_version)), PcapRecord(3, 5, clear.data, len(clear.data))]
    source = tmp_path / "mixed.pcap"
    write_pcap(source, mixed, PcapHeader(snaplen=9014))
    out = tmp_path / "d.pcap"
    assert main(["psp", "decrypt", "--cfg", DECRYPT_CFG, str(source), str(out)]) == 1
    captured = capsys.readouterr()
    assert "packet 1: dropped (rx-auth-fail)" in captured.err
    assert "packet 2: dropped (rx-bad)" in captured.err
    assert "packet 3: skipped: not PSP" in captured.err
    assert "rx-auth-fail 1, rx-error 0, rx-bad 1" in captured.out
    _, written = read_pcap(out)
    assert [r.data for r in written] == [clear.data]


def test_encrypt_skips_non_ip_and_strict_fails(tmp_path, capsys):
    _, (clear,) = read_pcap(VECTORS / "v4_cleartext.pcap")
    arp = bytes(12) + b"\x08\x06" + bytes(28)
    source = tmp_path / "in.pcap"
    write_pcap(source, [PcapRecord(0, 0, arp, len(arp)), clear], PcapHeader())
    out = tmp_path / "o.pcap"
    assert main(["psp", "encrypt", "--cfg", ENC_CFG, str(source), str(out)]) == 0
    assert "packet 0: skipped: not an IP frame" in capsys.readouterr().err
    _, written = read_pcap(out)
    assert len(written) == 1 and written[0].data[14 + 20 + 8 + 8 : 14 + 20 + 8 + 16] == (1).to_bytes(8, "big")
    assert main(["psp", "encrypt", "--strict", "--cfg", ENC_CFG, str(source), str(out)]) == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["psp", "encrypt", "--cfg", "/no/such.cfg", "in.pcap", "out.pcap"], "cannot read"),
        (["psp", "decrypt", "--cfg", DECRYPT_CFG, "/no/such.pcap", "out.pcap"], "cannot open"),
        (["psp", "encrypt", "--cfg", ENC_CFG, str(VECTORS / "decrypt.cfg"), "out.pcap"], "not a pcap file"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_output(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("pspsim: error: ") and message in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_output_over_input_is_refused(tmp_path):
    source = tmp_path / "x.pcap"
    source.write_bytes((VECTORS / "v4_cleartext.pcap").read_bytes())
    assert main(["psp", "encrypt", "--cfg", ENC_CFG, str(source), str(source)]) == 2
    assert source.read_bytes() == (VECTORS / "v4_cleartext.pcap").read_bytes()


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--master-key", "34448a064292601b11a0978f56a2d34cf3fc35ede1a6bc04f8db3e5243a2b0ca", "--spi", "12345678"],
         "96c22dc799198090b74b70ae468e4e30"),
        (["--cfg", DECRYPT_CFG, "--spi", "0x9A345678"], "3946da2554eae46ad1ef77a64372edc4"),
        (["--master-key", "34448a064292601b11a0978f56a2d34cf3fc35ede1a6bc04f8db3e5243a2b0ca",
          "--master-key", "563952565d3a78ae773ec1b779f2f2d99f4a7f53a6fbb9b07d5b71f39364d739",
          "--spi", "12345678", "--version", "1"],
         "2b7d72074e42ca334487f2990e3f8c4037e436f38283449b76463e9b7fb2e3de"),
    ],
)
def test_derive_key(capsys, argv, expected):
    assert main(["psp", "derive-key", *argv]) == 0
    assert capsys.readouterr().out.strip() == expected


def test_derive_key_rejects_short_key(capsys):
    assert main(["psp", "derive-key", "--master-key", "abcd", "--spi", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pspsim: error: ") and err.count("\n") == 1 and "abcd" not in err


def test_installed_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "pspsim", "psp", "encrypt", "--help"],
                            capture_output=True, text=True, check=True)
    assert "byte for byte" in result.stdout
