"""Classic libpcap capture files: read and write, timestamps preserved.

Reads both byte orders and both timestamp resolutions (microsecond magic
``a1b2c3d4``, nanosecond magic ``a1b23c4d``).  Writes little-endian files,
as libpcap does on x86, in the resolution asked for.  pcapng is not read:
convert with ``editcap -F pcap``.  Writing goes to a temporary file that
replaces the target only when the writer closes without error, so a failed
run never leaves a half-written capture behind.
"""

from __future__ import annotations

import os
import struct
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pspsim.wire.errors import PcapFormatError

LINKTYPE_ETHERNET = 1
_MAGIC_USEC = 0xA1B2C3D4
_MAGIC_NSEC = 0xA1B23C4D
_PCAPNG_MAGIC = 0x0A0D0D0A
_MAX_RECORD = 0x0400_0000  # 64 MiB: larger record lengths mean a corrupt file


@dataclass(frozen=True, slots=True)
class PcapRecord:
    """One captured frame.  ``ts_frac`` is in microseconds or nanoseconds,
    per the file's resolution; ``orig_len`` is the frame's length on the wire."""

    ts_sec: int
    ts_frac: int
    data: bytes
    orig_len: int

    @property
    def truncated(self) -> bool:
        return len(self.data) < self.orig_len


@dataclass(frozen=True, slots=True)
class PcapHeader:
    linktype: int = LINKTYPE_ETHERNET
    snaplen: int = 65535
    nanosecond: bool = False


class PcapReader:
    """Iterate over the records of a classic pcap file (a context manager).

    ``source`` is a path, or an open binary file (``io.BytesIO`` for bytes in memory)."""

    def __init__(self, source: str | os.PathLike[str] | BinaryIO) -> None:
        if hasattr(source, "read"):
            self.path = Path(getattr(source, "name", "<memory>") if isinstance(getattr(source, "name", None), str)
                             else "<memory>")
            self._file: BinaryIO = source  # type: ignore[assignment]
        else:
            self.path = Path(source)  # type: ignore[arg-type]
            try:
                self._file = open(self.path, "rb")
            except OSError as exc:
                raise PcapFormatError(f"{self.path}: cannot open: {exc.strerror}") from None
        raw = self._file.read(24)
        if len(raw) < 24:
            self._file.close()
            raise PcapFormatError(f"{self.path}: too short for a pcap file header")
        magic_le = struct.unpack("<I", raw[:4])[0]
        for order in ("<", ">"):
            magic = struct.unpack(order + "I", raw[:4])[0]
            if magic in (_MAGIC_USEC, _MAGIC_NSEC):
                break
        else:
            self._file.close()
            if magic_le == _PCAPNG_MAGIC:
                raise PcapFormatError(
                    f"{self.path}: pcapng is not supported; convert it with 'editcap -F pcap'"
                )
            raise PcapFormatError(f"{self.path}: not a pcap file (magic {raw[:4].hex()})")
        self._order = order
        _, _, _, _, snaplen, linktype = struct.unpack(order + "HHiIII", raw[4:24])
        self.header = PcapHeader(linktype & 0x0FFF_FFFF, snaplen, magic == _MAGIC_NSEC)
        self._record = struct.Struct(order + "IIII")

    def __enter__(self) -> PcapReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    def __iter__(self) -> Iterator[PcapRecord]:
        index = 0
        while True:
            offset = self._file.tell()
            raw = self._file.read(16)
            if not raw:
                return
            if len(raw) < 16:
                raise PcapFormatError(f"{self.path}: record {index} at byte {offset}: truncated record header")
            ts_sec, ts_frac, incl_len, orig_len = self._record.unpack(raw)
            if incl_len > _MAX_RECORD:
                raise PcapFormatError(
                    f"{self.path}: record {index} at byte {offset}: implausible length {incl_len}"
                )
            data = self._file.read(incl_len)
            if len(data) < incl_len:
                raise PcapFormatError(f"{self.path}: record {index} at byte {offset}: truncated packet data")
            yield PcapRecord(ts_sec, ts_frac, data, orig_len)
            index += 1


def read_pcap(path: str | os.PathLike[str]) -> tuple[PcapHeader, list[PcapRecord]]:
    """Read a whole capture: its header and all its records."""
    with PcapReader(path) as reader:
        return reader.header, list(reader)


class PcapWriter:
    """Write a classic pcap file atomically (a context manager).

    Records longer than ``snaplen`` are cut to ``snaplen`` bytes, with their
    original length kept in the record header, as capture tools do.
    """

    _RECORD = struct.Struct("<IIII")

    def __init__(self, path: str | os.PathLike[str], header: PcapHeader = PcapHeader()) -> None:
        self.path = Path(path)
        self.header = header
        self.count = 0
        directory = self.path.parent if str(self.path.parent) else Path(".")
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=directory)
        except OSError as exc:
            raise PcapFormatError(f"{self.path}: cannot write: {exc.strerror}") from None
        self._tmp = Path(tmp)
        self._file = os.fdopen(fd, "wb")
        magic = _MAGIC_NSEC if header.nanosecond else _MAGIC_USEC
        self._file.write(struct.pack("<IHHiIII", magic, 2, 4, 0, 0, header.snaplen, header.linktype))

    def write(self, record: PcapRecord) -> None:
        data = record.data[: self.header.snaplen]
        self._file.write(self._RECORD.pack(record.ts_sec, record.ts_frac, len(data), record.orig_len))
        self._file.write(data)
        self.count += 1

    def write_frame(self, data: bytes, ts_sec: int = 0, ts_frac: int = 0) -> None:
        self.write(PcapRecord(ts_sec, ts_frac, data, len(data)))

    def close(self) -> None:
        """Finish the file and move it into place."""
        if self._file.closed:
            return
        self._file.close()
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self._tmp, 0o666 & ~umask)  # mkstemp made it 0600
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        """Discard everything written; the target file is left untouched."""
        if not self._file.closed:
            self._file.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_pcap(
    path: str | os.PathLike[str], records: Iterable[PcapRecord], header: PcapHeader = PcapHeader()
) -> int:
    """Write ``records`` to ``path`` atomically; returns how many were written."""
    with PcapWriter(path, header) as writer:
        for record in records:
            writer.write(record)
    return writer.count
