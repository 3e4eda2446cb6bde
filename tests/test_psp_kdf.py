"""SP800-108 / AES-CMAC key derivation against the specification's examples."""

import pytest

from pspsim.wire import ConfigError, derive_sa_key, derive_sa_key_from_pair
from pspsim.wire.psp_kdf import kdf_label
from tests.conftest import MASTER_KEY_0, MASTER_KEY_1

# PSP Architecture Specification worked examples (fact sheet section 6).
SPEC_EXAMPLES = [
    (MASTER_KEY_0, 0x12345678, 0, "96c22dc799198090b74b70ae468e4e30"),
    (MASTER_KEY_1, 0x9A345678, 0, "3946da2554eae46ad1ef77a64372edc4"),
    (MASTER_KEY_0, 0x12345678, 1, "2b7d72074e42ca334487f2990e3f8c4037e436f38283449b76463e9b7fb2e3de"),
]


@pytest.mark.parametrize("master, spi, version, expected", SPEC_EXAMPLES)
def test_spec_examples(master, spi, version, expected):
    assert derive_sa_key(master, spi, version).hex() == expected


def test_spi_bit_31_selects_the_master_key():
    pair = (MASTER_KEY_0, MASTER_KEY_1)
    assert derive_sa_key_from_pair(pair, 0x12345678) == derive_sa_key(MASTER_KEY_0, 0x12345678)
    assert derive_sa_key_from_pair(pair, 0x9A345678) == derive_sa_key(MASTER_KEY_1, 0x9A345678)


def test_gmac_labels_are_distinct_and_keys_sized_by_version():
    assert [kdf_label(v) for v in range(4)] == [b"Pv0", b"Pv1", b"Pv2", b"Pv3"]
    keys = [derive_sa_key(MASTER_KEY_0, 0x12345678, v) for v in range(4)]
    assert [len(k) for k in keys] == [16, 32, 16, 32]
    assert len(set(keys)) == 4  # GMAC and GCM SAs of one SPI never share a key


def test_the_whole_spi_is_the_context():
    assert derive_sa_key(MASTER_KEY_0, 0x12345678) != derive_sa_key(MASTER_KEY_0, 0x92345678)


@pytest.mark.parametrize("master, spi, version", [(b"\0" * 16, 1, 0), (MASTER_KEY_0, 1 << 32, 0), (MASTER_KEY_0, 1, 4)])
def test_bad_inputs_raise_config_error(master, spi, version):
    with pytest.raises(ConfigError):
        derive_sa_key(master, spi, version)
