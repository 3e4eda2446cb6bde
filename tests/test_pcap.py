"""Classic pcap reading and writing."""

import struct

import pytest

from pspsim.wire import PcapFormatError, PcapHeader, PcapReader, PcapRecord, PcapWriter, read_pcap, write_pcap
from tests.conftest import VECTORS


def test_rewriting_a_capture_is_byte_identical(tmp_path):
    source = VECTORS / "v4_cleartext_n4.pcap"
    header, records = read_pcap(source)
    assert (header.linktype, header.snaplen, header.nanosecond) == (1, 1434, False)
    assert [r.ts_frac for r in records] == [0, 1, 2, 3]
    write_pcap(tmp_path / "copy.pcap", records, header)
    assert (tmp_path / "copy.pcap").read_bytes() == source.read_bytes()


def test_nanosecond_and_big_endian_files(tmp_path):
    path = tmp_path / "be.pcap"
    body = struct.pack(">IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 1)
    body += struct.pack(">IIII", 7, 999_999_999, 3, 3) + b"abc"
    path.write_bytes(body)
    header, records = read_pcap(path)
    assert header.nanosecond and records == [PcapRecord(7, 999_999_999, b"abc", 3)]
    write_pcap(tmp_path / "ns.pcap", records, header)
    assert read_pcap(tmp_path / "ns.pcap") == (header, records)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "too short"),
        (b"\x0a\x0d\x0d\x0a" + bytes(20), "pcapng"),
        (b"GIF89a" + bytes(20), "not a pcap file"),
        ((VECTORS / "v4_cleartext.pcap").read_bytes()[:-5], "record 0 at byte 24: truncated packet data"),
        ((VECTORS / "v4_cleartext.pcap").read_bytes() + b"\x01\x02", "record 1 at byte 1474: truncated record header"),
    ],
)
def test_bad_files_name_the_problem(tmp_path, content, message):
    path = tmp_path / "bad.pcap"
    path.write_bytes(content)
    with pytest.raises(PcapFormatError, match=message):
        read_pcap(path)


def test_missing_file():
    with pytest.raises(PcapFormatError, match="cannot open"):
        PcapReader("/nonexistent/x.pcap")


def test_failed_write_leaves_nothing_behind(tmp_path):
    target = tmp_path / "out.pcap"
    target.write_bytes(b"previous")
    with pytest.raises(RuntimeError):
        with PcapWriter(target, PcapHeader()) as writer:
            writer.write_frame(b"x" * 60)
            raise RuntimeError("boom")
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["out.pcap"]


def test_records_longer_than_snaplen_are_cut(tmp_path):
    write_pcap(tmp_path / "s.pcap", [PcapRecord(0, 0, b"y" * 100, 100)], PcapHeader(snaplen=64))
    _, (record,) = read_pcap(tmp_path / "s.pcap")
    assert len(record.data) == 64 and record.orig_len == 100 and record.truncated
