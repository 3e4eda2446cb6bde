"""Packet-tier captures (decryptable, dissectable) and the cross-check report."""

import csv
import shutil
import subprocess

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pspsim.cli.main import main
from pspsim.model.commands import fifo_departures
from pspsim.packets.tier import host_address
from pspsim.study.crosscheck import crosscheck
from pspsim.scenario import scenario_from_dict
from pspsim.wire import DeviceKeys, PspHeader, decapsulate, load_master_keys, read_pcap
from pspsim.wire.frames import IpView, parse_ip

SCENARIO = """
[run]
name = "cap"
seed = 2
duration = "40s"
window = "5s"
variants = ["psp", "ipsec-sw"]
[fleet]
racks = 1
hosts_per_rack = 4
[workload]
connections_per_host = { kind = "fixed", mean = 2 }
peers_per_host = 2
connection_lifetime = "5min"
messages_per_second = { kind = "fixed", mean = 4 }
message_bytes = { kind = "fixed", mean = 3000 }
[keys]
psp_rotation_period = "15s"
psp_rekey_delay = "1s"
psp_rekey_spread = "1s"
[packets]
duration = "40s"
"""


@pytest.fixture(scope="module")
def captured(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cap")
    (tmp / "s.toml").write_text(SCENARIO)
    assert main(["run", "-q", "--no-figure", "--pcap", "1", str(tmp / "s.toml"), "-o", str(tmp / "out")]) == 0
    return tmp / "out"


def test_capture_decrypts_with_the_device_keys_of_that_moment(captured):
    pcap = captured / "pcap"
    epochs = list(csv.DictReader((pcap / "psp-host1-keys.csv").open()))
    assert len(epochs) >= 3  # the NIC rotated during the capture
    keys = [(float(e["start_s"]), float(e["end_s"]), DeviceKeys(*load_master_keys(pcap / e["cfg"]))) for e in epochs]
    _, records = read_pcap(pcap / "psp-host1.pcap")
    me = bytes(int(x) for x in host_address(1).split("."))
    received = 0
    for record in records:
        view = IpView(*parse_ip(record.data, ValueError))
        if record.data[view.l2_len + 16 : view.l2_len + 20] != me:
            continue  # sent by host 1: sealed with the peer's keys
        time = record.ts_sec + record.ts_frac * 1e-9
        nic = next(k for start, end, k in keys if start <= time < end)
        decapsulate(record.data, nic)  # raises if it does not verify
        received += 1
    assert received > 100


def test_cli_decrypt_of_a_capture(captured, tmp_path, capsys):
    pcap = captured / "pcap"
    status = main(["psp", "decrypt", "--cfg", str(pcap / "psp-host1-keys-0.cfg"), str(pcap / "psp-host1.pcap"),
                   str(tmp_path / "clear.pcap")])
    out = capsys.readouterr().out
    assert "decrypted" in out and status == 1  # packets host 1 sent are for its peers' keys
    _, clear = read_pcap(tmp_path / "clear.pcap")
    assert len(clear) > 0 and all(IpView(*parse_ip(r.data, ValueError)).protocol == 6 for r in clear)


def test_packet_summary_is_written(captured):
    import pandas as pd

    packets = pd.read_parquet(captured / "packets.parquet")
    assert list(packets["variant"]) == ["psp", "ipsec-sw"]
    assert (packets["packets_delivered"] == packets["packets_sent"]).all()


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_shipped_lua_dissector_shows_psp_fields(captured):
    pcap = captured / "pcap" / "psp-host1.pcap"
    result = subprocess.run(["tshark", "-X", "lua_script:wireshark/psp.lua", "-r", str(pcap), "-c", "50",
                             "-T", "fields", "-e", "psp.spi", "-e", "psp.iv", "-e", "psp.version",
                             "-e", "psp.next_header", "-e", "psp.icv"], capture_output=True, text=True, check=True)
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    _, records = read_pcap(pcap)
    assert len(rows) == 50
    for row, record in zip(rows, records):
        view = IpView(*parse_ip(record.data, ValueError))
        header = PspHeader.decode(record.data, view.l2_len + view.header_len + 8)
        assert int(row[0], 16) == header.spi and int(row[1], 16) == header.iv
        assert (int(row[2]), int(row[3])) == (header.version, 6)
        assert row[4].replace(":", "") == record.data[-16:].hex()


def test_crosscheck_agrees_within_five_percent(capsys, tmp_path):
    sc = scenario_from_dict({
        "run": {"seed": 5, "duration": "20s", "window": "5s", "variants": ["psp", "ipsec-packet-offload", "tls-user"]},
        "fleet": {"racks": 1, "hosts_per_rack": 6},
        "workload": {"connections_per_host": {"kind": "fixed", "mean": 8}, "peers_per_host": 3,
                     "messages_per_second": {"kind": "fixed", "mean": 30}, "connection_lifetime": "5min"},
        "keys": {"psp_rotation_period": "8s", "psp_rekey_delay": "1s", "psp_rekey_spread": "1s",
                 "ipsec_child_rekey": "7s", "ipsec_rekey_overlap": "2s", "tls_rekey_interval": "2s"},
        "packets": {"duration": "20s"},
    })
    report = crosscheck(sc)
    assert len(report) == 3 * 5
    assert report["within_5pct"].all(), report[~report["within_5pct"]].to_string()
    nic = report[report["metric"] == "nic_entries"].set_index("variant")
    assert nic.loc["psp", "packet_tier"] == nic.loc["psp", "model"] > 0


def test_crosscheck_agrees_on_losses_when_rekeys_lag():
    sc = scenario_from_dict({
        "run": {"seed": 6, "duration": "30s", "window": "5s", "variants": ["psp"]},
        "fleet": {"racks": 1, "hosts_per_rack": 6},
        "workload": {"connections_per_host": {"kind": "fixed", "mean": 8}, "peers_per_host": 3,
                     "messages_per_second": {"kind": "fixed", "mean": 30}, "connection_lifetime": "5min"},
        "keys": {"psp_rotation_period": "8s", "psp_rekey_delay": "10s", "psp_rekey_spread": "0s"},
        "packets": {"duration": "30s"},
    })
    report = crosscheck(sc).set_index("metric")
    drops = report.loc["drop_fraction"]
    assert drops["packet_tier"] > 0.05 and drops["within_5pct"], drops
    assert report.loc["throughput_gbps", "within_5pct"]


def _naive(arrivals, servers, service, busy):
    done = np.empty(len(arrivals))
    for i in sorted(range(len(arrivals)), key=lambda i: (servers[i], arrivals[i], i)):
        busy[servers[i]] = max(busy[servers[i]], arrivals[i]) + service[i]
        done[i] = busy[servers[i]]
    return done


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 10), st.integers(0, 3), st.floats(0.001, 2)), min_size=1, max_size=40),
       st.lists(st.floats(0, 5), min_size=4, max_size=4))
def test_fifo_matches_a_naive_queue(items, busy):
    arrivals, servers, service = (np.array(x) for x in zip(*items))
    a, b = np.array(busy), np.array(busy)
    fast = fifo_departures(arrivals, servers.astype(np.int64), service, a)
    slow = _naive(arrivals, servers, service, b)
    np.testing.assert_allclose(fast, slow, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)
