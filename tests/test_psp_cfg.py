"""Reference-format configuration files: parsing and clear errors."""

import pytest

from pspsim.wire import ConfigError, load_encrypt_config, load_master_keys
from tests.conftest import MASTER_KEY_0, MASTER_KEY_1, VECTORS


def test_reference_cfg_is_parsed():
    cfg = load_encrypt_config(VECTORS / "encrypt_tunnel_crypt_off_256_vc.cfg")
    assert cfg.master_keys == (MASTER_KEY_0, MASTER_KEY_1)
    assert (cfg.spi, cfg.version, cfg.encap.mode) == (0x1A345678, 1, "tunnel")
    assert (cfg.encap.transport_crypt_offset, cfg.encap.ipv4_tunnel_crypt_offset,
            cfg.encap.ipv6_tunnel_crypt_offset, cfg.encap.vc) == (3, 8, 13, bytes(8))
    assert MASTER_KEY_0.hex() not in repr(cfg)


def test_decrypt_cfg_and_encrypt_cfg_both_give_keys():
    assert load_master_keys(VECTORS / "decrypt.cfg") == (MASTER_KEY_0, MASTER_KEY_1)
    assert load_master_keys(VECTORS / "encrypt_transport_crypt_off_128.cfg") == (MASTER_KEY_0, MASTER_KEY_1)


GOOD = (VECTORS / "encrypt_transport_crypt_off_128.cfg").read_text()


@pytest.mark.parametrize(
    "text, message",
    [
        (GOOD.replace("9A345678", "XYZ"), r":3: SPI: 'XYZ' is not a 32-bit hex value"),
        (GOOD.replace("transport", "bogus"), r":4: encap mode: 'bogus' is not one of transport, tunnel"),
        (GOOD.replace("aes-gcm-128", "aes-gcm-512"), "crypto algorithm"),
        (GOOD.replace("\n6\n", "\n64\n"), r":7: IPv4 tunnel crypt offset: '64' is not an integer in 0..63"),
        (GOOD.replace("no-vc", "maybe"), "virtualization cookie"),
        (GOOD.replace("no-vc", "no-vc extra"), "unexpected extra token 'extra'"),
        (GOOD.replace(" ca\n", " zz\n", 1), r":1: master key 0: byte 31 is 'zz'"),
        ("34 44", "ends before master key 0 byte 2"),
    ],
)
def test_errors_name_file_line_and_field(tmp_path, text, message):
    path = tmp_path / "bad.cfg"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_encrypt_config(path)
    assert str(path) in str(pytest.raises(ConfigError, load_encrypt_config, path).value)


def test_binary_or_missing_cfg(tmp_path):
    (tmp_path / "bin.cfg").write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not a text"):
        load_master_keys(tmp_path / "bin.cfg")
    with pytest.raises(ConfigError, match="cannot read"):
        load_master_keys(tmp_path / "missing.cfg")
