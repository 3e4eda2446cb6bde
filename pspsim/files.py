"""Atomic writes of result files: a file appears complete or not at all.

Each writer writes a temporary file in the destination's folder, then
renames it into place (``os.replace`` is atomic within one file system), so
a run killed half-way leaves no half-written file.  Imports nothing of
pspsim: every layer may use it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def write_atomic(path: str | os.PathLike[str], write: Callable[[str], object]) -> None:
    """Call ``write(temporary path)``, then move the file into place (mode 0644)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_csv(table: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write a table as CSV atomically."""
    write_atomic(path, lambda tmp: table.to_csv(tmp, index=False))


def write_text(text: str, path: str | os.PathLike[str]) -> None:
    """Write a text file atomically."""
    write_atomic(path, lambda tmp: Path(tmp).write_text(text))
