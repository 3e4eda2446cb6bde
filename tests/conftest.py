"""Shared fixtures: the PSP reference vectors copied into ``tests/data``."""

from __future__ import annotations

from pathlib import Path

import pytest

from pspsim.wire import DeviceKeys, load_master_keys

VECTORS = Path(__file__).parent / "data" / "psp_vectors"
MASTER_KEY_0 = bytes.fromhex("34448a064292601b11a0978f56a2d34cf3fc35ede1a6bc04f8db3e5243a2b0ca")
MASTER_KEY_1 = bytes.fromhex("563952565d3a78ae773ec1b779f2f2d99f4a7f53a6fbb9b07d5b71f39364d739")


@pytest.fixture
def vectors() -> Path:
    return VECTORS


@pytest.fixture
def device_keys() -> DeviceKeys:
    return DeviceKeys(*load_master_keys(VECTORS / "decrypt.cfg"))
