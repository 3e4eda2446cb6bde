"""The ESP anti-replay window of RFC 4303 section 3.4.3 and Appendix A.

The receiver keeps the highest sequence number it has authenticated
(``top``) and a bitmap of the ``size`` numbers at and below it.  A packet is
checked *before* its ICV is verified (cheap rejection) and recorded only
*after* (so forged packets cannot move the window).  With extended sequence
numbers only the low 32 bits travel; the high 32 bits are inferred as in
Appendix A2.2, from where the low bits fall relative to the window.
"""

from __future__ import annotations

from pspsim.wire.errors import ConfigError, WireError

MAX_WINDOW = 4096
_SEQ32 = 1 << 32


class EspRejected(WireError):
    """An inbound ESP packet that the receiver drops; ``counter`` names the
    Linux ``/proc/net/xfrm_stat`` counter it moves."""

    counter = "XfrmInError"


class EspReplay(EspRejected):
    """The sequence number was already received (inside the window)."""

    counter = "XfrmInStateSeqError"


class EspOutsideWindow(EspRejected):
    """The sequence number is older than the window (or 0, which is never sent)."""

    counter = "XfrmInStateSeqError"


class ReplayWindow:
    """Anti-replay state of one inbound SA.  ``size`` 0 turns the check off."""

    __slots__ = ("size", "esn", "top", "bitmap", "_mask")

    def __init__(self, size: int = 64, esn: bool = False) -> None:
        if size != 0 and not 32 <= size <= MAX_WINDOW:
            raise ConfigError(f"replay window must be 0 (off) or 32..{MAX_WINDOW} packets, got {size}")
        self.size = size
        self.esn = esn
        self.top = 0  # highest authenticated sequence number (64-bit with ESN)
        self.bitmap = 0  # bit i set: top - i was received
        self._mask = (1 << max(size, 1)) - 1

    def full_sequence(self, seq_low: int) -> int:
        """The 64-bit sequence number a packet carrying ``seq_low`` stands for."""
        if not self.esn:
            return seq_low
        window = max(self.size, 1)
        top_low, top_high = self.top % _SEQ32, self.top >> 32
        bottom = (top_low - window + 1) % _SEQ32
        if top_low >= window - 1:  # window inside one 2**32 block
            high = top_high if seq_low >= bottom else top_high + 1
        else:  # window straddles two blocks
            high = top_high - 1 if seq_low >= bottom else top_high
        return -1 if high < 0 else (high << 32) | seq_low

    def checked_sequence(self, seq_low: int) -> int:
        """The full sequence number of a packet carrying ``seq_low``, if it is
        neither a replay nor too old (raises otherwise); records nothing."""
        seq = self.full_sequence(seq_low) if self.esn else seq_low
        if seq > self.top:  # the common case: newer than anything seen
            return seq
        self.check(seq)
        return seq

    def check(self, seq: int) -> None:
        """Raise if ``seq`` (full number) is a replay or too old; records nothing."""
        if seq <= 0:
            raise EspOutsideWindow("sequence number 0 is never sent")
        if self.size == 0 or seq > self.top:
            return
        behind = self.top - seq
        if behind >= self.size:
            raise EspOutsideWindow(f"sequence number {seq} is {behind} behind the newest, window {self.size}")
        if self.bitmap >> behind & 1:
            raise EspReplay(f"sequence number {seq} was already received")

    def accept(self, seq: int) -> None:
        """Record an authenticated ``seq``."""
        top = self.top
        if seq > top:
            shift = seq - top
            self.bitmap = 1 if shift >= self.size else ((self.bitmap << shift) | 1) & self._mask
            self.top = seq
        else:
            self.bitmap |= 1 << (self.top - seq)
