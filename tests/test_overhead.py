"""Overhead measured from real packets matches the protocol's arithmetic."""

import pytest

from pspsim.cli.main import main
from pspsim.wire.overhead import psp_overhead, psp_overhead_rows

# Fact sheet section 12: 8 UDP + 16 header + 16 ICV, + 8 cookie, + outer IP header.
EXPECTED = {("transport", 4): 40, ("transport", 6): 40, ("tunnel", 4): 60, ("tunnel", 6): 80}


@pytest.mark.parametrize("mode, ip_version", EXPECTED)
@pytest.mark.parametrize("vc", [False, True])
@pytest.mark.parametrize("payload", [0, 1, 1392])
def test_psp_overhead_is_constant_per_mode(mode, ip_version, vc, payload):
    assert psp_overhead(mode, ip_version, vc, payload) == EXPECTED[mode, ip_version] + 8 * vc


def test_rows_cover_every_case():
    rows = psp_overhead_rows((10,))
    assert len(rows) == 8
    assert all(r["protected_frame_bytes"] - r["frame_bytes"] == r["overhead_bytes"] for r in rows)


def test_cli_writes_table_and_figure(tmp_path, capsys):
    csv, png = tmp_path / "sub" / "o.csv", tmp_path / "o.png"
    assert main(["psp", "overhead", "--payload", "100", "-o", str(csv), "--plot", str(png)]) == 0
    assert csv.read_text().count("\n") == 9
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "overhead_bytes" in capsys.readouterr().out
