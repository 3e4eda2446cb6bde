"""Helpers shared by the command groups: argument parsers and user errors."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from pspsim.wire.errors import ConfigError

_SEPARATORS = re.compile(r"[\s:_-]")


def hex_bytes(length: int | tuple[int, ...], what: str):
    """An argparse type for a hex string of ``length`` bytes (spaces and colons allowed)."""
    lengths = (length,) if isinstance(length, int) else length

    def parse(text: str) -> bytes:
        cleaned = _SEPARATORS.sub("", text)
        if cleaned[:2].lower() == "0x":
            cleaned = cleaned[2:]
        try:
            value = bytes.fromhex(cleaned)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} is not hex (value not shown)") from None
        if len(value) not in lengths:
            sizes = " or ".join(str(n) for n in lengths)
            raise argparse.ArgumentTypeError(f"{what} must be {sizes} bytes, got {len(value)}")
        return value

    return parse


def hex_u32(text: str) -> int:
    """An argparse type for a 32-bit value written in hex (``9A345678`` or ``0x9a345678``)."""
    cleaned = text[2:] if text[:2].lower() == "0x" else text
    if not re.fullmatch(r"[0-9a-fA-F]{1,8}", cleaned):
        raise argparse.ArgumentTypeError(f"not a 32-bit hex value: {text!r}")
    return int(cleaned, 16)


def non_negative_int(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


class UserError(ConfigError):
    """A problem with the user's input: reported as one line, exit status 2."""


MAX_KEY_FILE_BYTES = 64 << 10


def _read_key_file(path: Path, what: str) -> str:
    try:
        if path.exists() and not path.is_dir() and (not path.is_file() or path.stat().st_size > MAX_KEY_FILE_BYTES):
            raise UserError(f"{path}: cannot be the {what} file (it must be a regular file of at most "
                            f"{MAX_KEY_FILE_BYTES >> 10} KiB)")
        return path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        problem = exc.strerror if isinstance(exc, OSError) else "not a text file"
        raise UserError(f"{path}: cannot read {what}: {problem}") from None


def key_from_file(path: Path, length: int | tuple[int, ...], what: str) -> bytes:
    """A key written in hex in a file (spaces, colons and newlines allowed), so that
    it stays out of ``ps`` and the shell history.  ``env:NAME`` reads the
    environment variable ``NAME`` instead of a file."""
    text = str(path)
    if text.startswith("env:"):
        name = text[4:]
        if name not in os.environ:
            raise UserError(f"{what}: environment variable {name!r} is not set")
        content = os.environ[name]
    else:
        content = _read_key_file(Path(path), what)
    try:
        return hex_bytes(length, what)("".join(content.split()))
    except argparse.ArgumentTypeError as exc:
        raise UserError(f"{path}: {exc}") from None


def keys_from_file(path: Path, length: int, what: str) -> list[bytes]:
    """One or two keys from a file (or ``env:NAME``), one per line."""
    text = str(path)
    if text.startswith("env:"):
        lines = os.environ.get(text[4:], "").splitlines()
        if text[4:] not in os.environ:
            raise UserError(f"{what}: environment variable {text[4:]!r} is not set")
    else:
        lines = _read_key_file(Path(path), what).splitlines()
    lines = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not 1 <= len(lines) <= 2:
        raise UserError(f"{path}: expected one or two {what}s, one per line, found {len(lines)}")
    parse = hex_bytes(length, what)
    try:
        return [parse("".join(line.split())) for line in lines]
    except argparse.ArgumentTypeError as exc:
        raise UserError(f"{path}: {exc}") from None
