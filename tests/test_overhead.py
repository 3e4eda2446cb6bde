"""Overhead measured from real packets matches each protocol's arithmetic."""

import pytest

from pspsim.cli.main import main
from pspsim.wire.overhead import esp_overhead, overhead_rows, psp_overhead

# Fact sheet section 12: 8 UDP + 16 header + 16 ICV, + 8 cookie, + outer IP header.
PSP = {("transport", 4): 40, ("transport", 6): 40, ("tunnel", 4): 60, ("tunnel", 6): 80}


@pytest.mark.parametrize("mode, ip_version", PSP)
@pytest.mark.parametrize("vc", [False, True])
@pytest.mark.parametrize("payload", [0, 1, 1392])
def test_psp_overhead_is_constant_per_mode(mode, ip_version, vc, payload):
    assert psp_overhead(mode, ip_version, vc, payload) == PSP[mode, ip_version] + 8 * vc


@pytest.mark.parametrize("payload", range(8))
@pytest.mark.parametrize("mode, outer", [("transport", 0), ("tunnel", 20)])
@pytest.mark.parametrize("udp", [False, True])
def test_esp_overhead_follows_rfc_4303_padding(payload, mode, outer, udp):
    protected = payload + 8 + (20 if mode == "tunnel" else 0)  # UDP header (+ inner IPv4 header)
    expected = 8 + 8 + (-(protected + 2) % 4) + 2 + 16 + outer + 8 * udp
    assert esp_overhead(mode, 4, udp, payload) == expected


def test_rows_cover_every_case():
    rows = overhead_rows((10,))
    assert len(rows) == 2 * 8 + 2
    assert all(r["protected_bytes"] - r["unprotected_bytes"] == r["overhead_bytes"] for r in rows)
    assert {r["overhead_bytes"] for r in rows if r["protocol"].startswith("tls")} == {22, 29}


def test_cli_writes_table_and_figure(tmp_path, capsys):
    csv, png = tmp_path / "sub" / "o.csv", tmp_path / "o.png"
    assert main(["overhead", "--payload", "100", "-o", str(csv), "--plot", str(png)]) == 0
    assert csv.read_text().count("\n") == 19
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "overhead_bytes" in capsys.readouterr().out


def test_cli_rejects_huge_payload(capsys):
    assert main(["overhead", "--payload", "10000"]) == 2
    assert "at most 9000" in capsys.readouterr().err
