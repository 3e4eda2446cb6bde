"""Typed errors of the wire layer.

Every decoder in :mod:`pspsim.wire` reports a bad input with one of these
exceptions and nothing else, so a simulated NIC can count outcomes the way a
real one does.  The PSP receive errors map one to one onto the counters that
the PSP specification requires and Linux exposes through the ``psp`` netlink
family (``get-stats``): ``rx-auth-fail``, ``rx-error`` and ``rx-bad``.
"""

from __future__ import annotations


class WireError(Exception):
    """Base class of every error raised by :mod:`pspsim.wire`."""


class NotPspPacket(WireError):
    """The frame is not addressed to PSP (not IP, not UDP, or UDP port != 1000).

    A receiving NIC passes such frames up unchanged; no PSP counter moves.
    """


class PspRejected(WireError):
    """A PSP packet that the receiver drops; ``counter`` names the Linux counter."""

    counter = "rx-bad"


class PspFramingError(PspRejected):
    """Length or framing error: IP/UDP lengths disagree, header extension or
    crypt offset past the end of the packet, packet shorter than header + ICV."""

    counter = "rx-error"


class PspBadPacket(PspRejected):
    """Other drop reasons: unsupported or disabled version, the always-1 bit
    clear, or an SPI whose key phase selects a master key the NIC does not hold."""

    counter = "rx-bad"


class PspAuthFailure(PspRejected):
    """The ICV did not verify: wrong key, wrong SPI, or a modified packet."""

    counter = "rx-auth-fail"


class EncapsulationError(WireError):
    """The sender cannot encapsulate this frame (for example a non-IP frame,
    or a crypt offset larger than the packet); the frame is not sent."""


class PcapFormatError(WireError):
    """A capture file is not a well-formed classic pcap file."""


class ConfigError(WireError, ValueError):
    """A key or configuration file (or command-line value) is invalid."""


class IvSpaceExhausted(EncapsulationError):
    """The sender's IV counter is used up: the SA must be rekeyed; the frame is not sent."""


class NonceReuseError(ConfigError):
    """An operation that would reuse a nonce under one key: an SPI handed out twice in
    one key phase, a counter moved backwards, or a copy of an SA holding a counter."""


def refuse_copy(obj: object, *_: object) -> None:
    """``__copy__``/``__deepcopy__``/``__reduce_ex__`` of an object holding a nonce counter."""
    raise NonceReuseError(f"{type(obj).__name__} holds a nonce counter and cannot be copied: "
                          "a copy would reuse its nonces; create a new SA (new key or SPI) instead")


def as_bytes(data: object) -> bytes:
    """``data`` as ``bytes``: any bytes-like object (``bytearray``, ``memoryview``) is accepted."""
    if type(data) is bytes:
        return data  # type: ignore[return-value]
    try:
        return memoryview(data).tobytes()  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"expected a bytes-like object, got {type(data).__name__}") from None
