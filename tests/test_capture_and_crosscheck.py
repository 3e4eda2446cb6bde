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
from pspsim.model.streams import RandomStreams, replication_sequence
from pspsim.model.workload import generate_workload
from pspsim.packets.tcp import host_address
from pspsim.scenario import load_scenario
from pspsim.study.crosscheck import COUNTS, crosscheck
from pspsim.wire import DeviceKeys, PspHeader, decapsulate, load_master_keys, read_pcap
from pspsim.wire.frames import IpView, parse_ip

SCENARIO = """
[run]
name = "cap"
seed = 2
duration = "40s"
window = "5s"
variants = ["psp", "ipsec-sw", "plaintext"]
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
    assert main(["run", "-q", "--no-figure", "--pcap", "1", "--pcap-variants", "psp,ipsec-sw", str(tmp / "s.toml"),
                 "-o", str(tmp / "out")]) == 0
    return tmp / "out"


def _psp_records(path):
    _, records = read_pcap(path)
    return [r for r in records if IpView(*parse_ip(r.data, ValueError)).protocol == 17]


def test_capture_decrypts_with_the_device_keys_of_that_moment(captured):
    pcap = captured / "pcap"
    epochs = list(csv.DictReader((pcap / "psp-host1-keys.csv").open()))
    assert len(epochs) >= 3  # the NIC rotated during the capture
    keys = [(float(e["start_s"]), float(e["end_s"]), DeviceKeys(*load_master_keys(pcap / e["cfg"]))) for e in epochs]
    me = bytes(int(x) for x in host_address(1).split("."))
    received = 0
    for record in _psp_records(pcap / "psp-host1.pcap"):
        view = IpView(*parse_ip(record.data, ValueError))
        if record.data[view.l2_len + 16 : view.l2_len + 20] != me:
            continue  # sent by host 1: sealed with the peer's keys
        time = record.ts_sec + record.ts_frac * 1e-9
        nic = next(k for start, end, k in keys if start <= time < end)
        decapsulate(record.data, nic)  # raises if it does not verify
        received += 1
    assert received > 100


def test_cli_decrypt_with_keys_and_direction_rx(captured, tmp_path, capsys):
    pcap = captured / "pcap"
    status = main(["psp", "decrypt", "--keys", str(pcap / "psp-host1-keys.csv"), "--direction", "rx",
                   str(pcap / "psp-host1.pcap"), str(tmp_path / "clear.pcap")])
    out = capsys.readouterr().out
    assert status == 0 and "rx-auth-fail 0, rx-error 0, rx-bad 0" in out, out
    _, clear = read_pcap(tmp_path / "clear.pcap")
    me = bytes(int(x) for x in host_address(1).split("."))
    assert len(clear) > 100
    assert all(r.data[14 + 16 : 14 + 20] == me and IpView(*parse_ip(r.data, ValueError)).protocol == 6 for r in clear)
    # without --direction rx, what host 1 sent (sealed with its peers' keys) fails: 1, and counted
    status = main(["psp", "decrypt", "--keys", str(pcap / "psp-host1-keys.csv"), str(pcap / "psp-host1.pcap"),
                   str(tmp_path / "all.pcap")])
    assert status == 1 and "rx-auth-fail 0" not in capsys.readouterr().out


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_tshark_reads_advancing_tcp_streams(captured, tmp_path):
    pcap = captured / "pcap"
    assert main(["psp", "decrypt", "--keys", str(pcap / "psp-host1-keys.csv"), "--direction", "rx",
                 str(pcap / "psp-host1.pcap"), str(tmp_path / "clear.pcap")]) == 0
    flagged = subprocess.run(["tshark", "-r", str(tmp_path / "clear.pcap"), "-Y", "tcp.analysis.flags"],
                             capture_output=True, text=True, check=True).stdout
    assert flagged.strip() == ""  # no retransmissions, duplicate ACKs or lost segments seen
    syn = subprocess.run(["tshark", "-r", str(pcap / "psp-host1.pcap"), "-Y", "tcp.flags.syn==1"],
                         capture_output=True, text=True, check=True).stdout
    assert "[SYN]" in syn and "[SYN, ACK]" in syn  # connections opened inside the capture
    seqs = subprocess.run(["tshark", "-r", str(tmp_path / "clear.pcap"), "-T", "fields", "-e", "tcp.stream",
                           "-e", "tcp.seq"], capture_output=True, text=True, check=True).stdout.split("\n")
    last: dict[str, int] = {}
    for line in filter(None, seqs):
        stream, seq = line.split("\t")
        assert int(seq) >= last.get(stream, 0)
        last[stream] = int(seq)
    assert max(last.values()) > 10_000


def test_esp_capture_comes_with_its_sa_file(captured):
    pcap = captured / "pcap"
    sas = list(csv.DictReader((pcap / "ipsec-sw-host1-sas.csv").open()))
    assert sas and all(len(bytes.fromhex(sa["key"])) == 20 for sa in sas)
    assert (pcap / "ipsec-sw-host1.pcap").stat().st_size > 10_000


def test_packet_summary_is_written(captured):
    import pandas as pd

    packets = pd.read_parquet(captured / "packets.parquet")
    assert list(packets["variant"]) == ["psp", "ipsec-sw"]
    assert (packets["packets_delivered"] == packets["packets_sent"]).all()
    assert (packets["key_rotations"] > 0).all() or packets.loc[0, "key_rotations"] > 0


def test_a_capture_that_would_not_fit_is_refused_before_any_work(tmp_path, capsys):
    (tmp_path / "s.toml").write_text(SCENARIO)
    status = main(["run", "-q", "--pcap", "1", "--pcap-max-bytes", "100K", str(tmp_path / "s.toml"), "-o",
                   str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1 and "--pcap-max-bytes" in err
    assert not (tmp_path / "out").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]


def test_killing_a_capture_run_leaves_nothing_half_written(tmp_path):
    import signal
    import sys
    import time

    (tmp_path / "s.toml").write_text(SCENARIO.replace('duration = "40s"', 'duration = "600s"')
                                     .replace("mean = 4 }", "mean = 400 }"))
    proc = subprocess.Popen([sys.executable, "-m", "pspsim", "run", "-q", "--no-figure", "--pcap", "1",
                             str(tmp_path / "s.toml"), "-o", str(tmp_path / "out")])
    deadline = time.time() + 60
    while time.time() < deadline and not list(tmp_path.rglob(".psp-host1.pcap.*.tmp")):
        time.sleep(0.2)
    assert list(tmp_path.rglob(".psp-host1.pcap.*.tmp")), "the capture never started"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.rglob("*.pcap")) and not list(tmp_path.rglob("*.parquet"))
    # a polite stop (SIGTERM) also cleans its temporary files up
    proc = subprocess.Popen([sys.executable, "-m", "pspsim", "run", "-q", "--no-figure", "--pcap", "1",
                             str(tmp_path / "s.toml"), "-o", str(tmp_path / "out2")])
    before = set(tmp_path.iterdir())
    deadline = time.time() + 60
    while time.time() < deadline and not list(tmp_path.rglob(".out2.pcap.*/.psp-host1.pcap.*.tmp")):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait() != 0
    assert not (tmp_path / "out2").exists() and set(tmp_path.iterdir()) <= before
    assert not list(tmp_path.glob(".out2*"))


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_shipped_lua_dissector_shows_psp_fields(captured):
    pcap = captured / "pcap" / "psp-host1.pcap"
    result = subprocess.run(["tshark", "-X", "lua_script:wireshark/psp.lua", "-r", str(pcap), "-Y", "psp",
                             "-T", "fields", "-e", "psp.spi", "-e", "psp.iv", "-e", "psp.version",
                             "-e", "psp.next_header", "-e", "psp.icv"], capture_output=True, text=True, check=True)
    rows = [line.split("\t") for line in result.stdout.splitlines()][:50]
    records = _psp_records(pcap)
    assert len(rows) == 50
    for row, record in zip(rows, records):
        view = IpView(*parse_ip(record.data, ValueError))
        header = PspHeader.decode(record.data, view.l2_len + view.header_len + 8)
        assert int(row[0], 16) == header.spi and int(row[1], 16) == header.iv
        assert (int(row[2]), int(row[3])) == (header.version, 6)
        assert row[4].replace(":", "") == record.data[-16:].hex()


def _crosscheck(name):
    return crosscheck(load_scenario(f"experiments/crosscheck/{name}.toml"))


@pytest.fixture(scope="module")
def churn():
    return _crosscheck("churn")


def test_crosscheck_reports_every_count_with_a_tolerance(churn):
    report = churn
    assert {"variant", "metric", "packet_tier", "model", "tolerance", "within"} <= set(report.columns)
    for _, rows in report.groupby("variant"):
        assert set(COUNTS) | {"throughput_gbps", "cpu_cores", "nic_entries_per_host", "overhead_gbps",
                              "drop_fraction"} == set(rows["metric"])
    assert (report["tolerance"] > 0).all() or (report.loc[report["tolerance"] == 0, "packet_tier"] == 0).all()
    rows = report.set_index(["variant", "metric"])
    # the packet tier's own count, worked out from the connection list: one handshake per connection opened
    sc = load_scenario("experiments/crosscheck/churn.toml")
    w = generate_workload(sc, RandomStreams.from_sequence(replication_sequence(sc.run.seed, 0)).workload)
    opened = int(((w.start > 0) & (w.start < sc.packets.duration)).sum())
    assert rows.loc[("psp", "handshakes"), "packet_tier"] == opened
    assert rows.loc[("tls-user", "handshakes"), "packet_tier"] == opened
    # ktls-offload: 2 context creates per end per opened connection, 2 destroys per end per ended one
    ended = int(((w.end > 0) & (w.end < sc.packets.duration)).sum())
    assert rows.loc[("ktls-offload", "nic_commands"), "packet_tier"] == 4 * opened + 4 * ended
    for metric in ("throughput_gbps", "overhead_gbps", "nic_entries_per_host", "drop_fraction"):
        assert rows.xs(metric, level="metric")["within"].all(), metric


def test_crosscheck_ktls_offload_nic_entries_agree(churn):
    """The crosscheck found the model's leak (kTLS contexts of connections that opened and closed in
    one window were never released: 31.8 against 22.7 entries per host); fixed, they agree."""
    rows = churn.set_index(["variant", "metric"])
    assert rows.loc[("ktls-offload", "nic_entries_per_host"), "within"]


def test_crosscheck_sees_stale_keys_when_rotation_outruns_rekeys():
    report = _crosscheck("rotation-outruns-rekey").set_index("metric")
    assert report.loc["psp_stale_events", "packet_tier"] > 0
    assert report.loc["connections_lost", "packet_tier"] > 0
    assert report.loc["drop_fraction", "packet_tier"] > 0.01  # rx-auth-fail on stale keys, really failed
    # the fleet model's own control plane must agree, within sampling noise, once it implements
    # SEMANTICS.md (it then reports psp_stale_events; until then the report shows the column missing)
    if np.isnan(report.loc["psp_stale_events", "model"]):
        pytest.skip("the fleet model does not report psp_stale_events yet")
    for metric in ("psp_stale_events", "connections_lost", "key_reconnects", "handshakes"):
        assert report.loc[metric, "within"], report.loc[metric].to_dict()


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
    from pspsim.model import commands

    if commands._queues is not None:  # the compiled loop is the recurrence itself: exactly the naive queue
        np.testing.assert_array_equal(fast, slow)
        c = np.array(busy)
        np.testing.assert_allclose(commands._fifo_numpy(arrivals, servers.astype(np.int64), service, c,
                                                        np.argsort(arrivals, kind="stable")), slow,
                                   rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(c, b, rtol=1e-9, atol=1e-9)
