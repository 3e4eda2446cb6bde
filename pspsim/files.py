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


MAX_TOML_BYTES = 16 << 20  # scenarios and parameter sets are a few KiB; a larger file (or a device) is a mistake


def read_toml(path: str | os.PathLike[str], what: str, error: type[Exception] = ValueError,
              missing: Callable[[], str] | None = None) -> dict:
    """Read a small TOML file (``what``: "scenario file", "parameter set file"); every problem
    is one ``error`` naming the file (``missing()`` gives the message for a file that is absent)."""
    import tomllib

    path = Path(path)
    try:
        if path.exists() and not path.is_dir() and (not path.is_file() or path.stat().st_size > MAX_TOML_BYTES):
            raise error(f"{path}: not a {what} (a regular file of at most {MAX_TOML_BYTES >> 20} MiB)")
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except FileNotFoundError:
        raise error(missing() if missing else f"{path}: no such {what}") from None
    except IsADirectoryError:
        raise error(f"{path}: is a folder, expected a {what}") from None
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise error(f"{path}: not a text file (a {what} is TOML)") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML: {exc}") from None
    if not text.strip():
        raise error(f"{path}: the {what} is empty")
    return data
