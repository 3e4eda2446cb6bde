"""Byte-for-byte agreement with the reference implementation's outputs."""

from pathlib import Path

import pytest

from pspsim.cli.main import main
from pspsim.wire import EncapsulationError, PspSender, decapsulate, load_encrypt_config, read_pcap
from pspsim.wire.frames import IpView, parse_ip
from tests.conftest import VECTORS

ENCRYPTED = sorted((VECTORS / "encrypted").glob("v4_*.pcap"))
ALL_CFGS = sorted(p for p in VECTORS.glob("encrypt_*.cfg"))
CLEARTEXTS = ["v4_cleartext", "v6_cleartext", "v4_cleartext_n4", "v6_cleartext_n4"]


def test_vector_set_is_complete():
    assert len(ENCRYPTED) == 9 and len(ALL_CFGS) == 14


@pytest.mark.parametrize("encrypted", ENCRYPTED, ids=lambda p: p.stem)
def test_cli_encrypt_reproduces_reference_file(encrypted: Path, tmp_path: Path):
    cfg = VECTORS / f"{encrypted.stem[3:]}.cfg"
    out = tmp_path / "out.pcap"
    assert main(["psp", "encrypt", "--cfg", str(cfg), str(VECTORS / "v4_cleartext.pcap"), str(out)]) == 0
    assert out.read_bytes() == encrypted.read_bytes()


@pytest.mark.parametrize("encrypted", ENCRYPTED, ids=lambda p: p.stem)
def test_cli_decrypt_gives_back_the_cleartext(encrypted: Path, tmp_path: Path):
    out = tmp_path / "clear.pcap"
    assert main(["psp", "decrypt", "--cfg", str(VECTORS / "decrypt.cfg"), str(encrypted), str(out)]) == 0
    (_, got), (_, want) = read_pcap(out), read_pcap(VECTORS / "v4_cleartext.pcap")
    assert [(r.ts_sec, r.ts_frac, r.data) for r in got] == [(r.ts_sec, r.ts_frac, r.data) for r in want]


@pytest.mark.parametrize("clear", CLEARTEXTS + ["v4_cleartext_empty", "v6_cleartext_empty"])
@pytest.mark.parametrize("cfg", ALL_CFGS, ids=lambda p: p.stem)
def test_every_cfg_round_trips_every_capture(cfg, clear, device_keys):
    config = load_encrypt_config(cfg)
    _, records = read_pcap(VECTORS / f"{clear}.pcap")
    sender = PspSender(config.sa(), config.encap)
    for index, record in enumerate(records):
        ip = IpView(*parse_ip(record.data, ValueError))
        start = ip.l2_len if config.encap.mode == "tunnel" else ip.l2_len + ip.header_len
        room = ip.end - start + (8 if config.encap.vc else 0)
        offset = {"transport": config.encap.transport_crypt_offset,
                  "tunnel": config.encap.ipv4_tunnel_crypt_offset if ip.version == 4
                  else config.encap.ipv6_tunnel_crypt_offset}[config.encap.mode]
        if 4 * offset > room:
            with pytest.raises(EncapsulationError, match="crypt offset"):
                sender.seal(record.data)
            continue
        opened = decapsulate(sender.seal(record.data), device_keys)
        assert opened.frame == record.data
        assert opened.iv == index + 1 and opened.spi == config.spi
