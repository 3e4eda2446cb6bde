"""The optional compiled fast paths (Cython), in one place.

``PSPSIM_PURE_PYTHON=1`` turns them all off, to test or debug the general
code alone; a build without a C compiler simply has none.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

PURE_PYTHON = os.environ.get("PSPSIM_PURE_PYTHON", "") not in ("", "0")


def compiled(name: str) -> ModuleType | None:
    """``pspsim.wire.<name>`` if it was built and is not switched off, else ``None``."""
    if PURE_PYTHON:
        return None
    try:
        return importlib.import_module(f"pspsim.wire.{name}")
    except ImportError:  # pragma: no cover - depends on the build
        return None
