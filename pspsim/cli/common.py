"""Helpers shared by the command groups: argument parsers and user errors."""

from __future__ import annotations

import argparse
import re

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
            raise argparse.ArgumentTypeError(f"{what} is not hex: {text!r}") from None
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
