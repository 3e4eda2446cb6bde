"""The compiled ESP seal produces exactly the Python seal's bytes."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pspsim.wire import esp
from pspsim.wire._compiled import PURE_PYTHON

pytestmark = pytest.mark.skipif(PURE_PYTHON, reason="fast path switched off")


def test_fast_seal_is_built():
    assert esp._esp_fast is not None


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200), next_header=st.integers(0, 255), esn=st.booleans(),
       seq=st.integers(1, 2**32 - 1), high=st.integers(0, 2**32 - 1), key=st.binary(min_size=20, max_size=20),
       spi=st.integers(1, 2**32 - 1))
def test_same_bytes_as_python(data, next_header, esn, seq, high, key, spi):
    full = (high << 32) | seq if esn else seq
    fast = esp.EspSA(spi, key, esn=esn).seal(data, next_header, seq=full)
    saved, esp._esp_fast = esp._esp_fast, None
    try:
        slow = esp.EspSA(spi, key, esn=esn).seal(data, next_header, seq=full)
    finally:
        esp._esp_fast = saved
    assert fast == slow
    rx = esp.EspSA(spi, key, esn=esn)
    rx.window.top = full - 1
    assert rx.open(fast) == (data, next_header, full)
