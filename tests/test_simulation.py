"""The model's logic, pinned with numbers that could fail."""

import numpy as np
import pandas as pd
import pytest

from tests.sim_helpers import scenario, simulate


def _rows(run):
    return pd.DataFrame(run.rows)


def test_psp_rx_state_is_constant_while_ipsec_grows_with_peers():
    psp_rx, ipsec = [], []
    for peers in (2, 4, 8):
        sc = scenario(fleet={"racks": 4, "hosts_per_rack": 16},
                      workload={"peers_per_host": peers, "connections_per_host": {"kind": "fixed", "mean": 20 * peers}},
                      keys={"psp_tx_key_placement": "descriptor"})
        sim, run, _ = simulate(sc, "psp")
        psp_rx.append(_rows(run)["nic_bytes_host_max"].max())
        _, run, _ = simulate(sc, "ipsec-packet-offload")
        ipsec.append(_rows(run)["nic_entries_host_max"].median())
    assert psp_rx == [64.0, 64.0, 64.0]  # two 256-bit device keys, whatever the connections
    assert ipsec[0] < ipsec[1] < ipsec[2]  # one SA pair per peer


def test_sa_count_doubles_during_make_before_break():
    sc = scenario(fleet={"racks": 1, "hosts_per_rack": 2}, run={"duration": "3h"},
                  workload={"peers_per_host": 1, "connections_per_host": {"kind": "fixed", "mean": 1},
                            "connection_lifetime": "1000d"},
                  keys={"ipsec_child_rekey": "1h", "ipsec_rekey_jitter": 0.0, "ipsec_rekey_overlap": "5min"})
    _, run, workload = simulate(sc, "ipsec-crypto-offload")
    entries = _rows(run)["nic_entries_host_max"]
    # Host 0 holds the SA pair with host 1 (2 SAs), or both pairs if each is the other's peer.
    assert set(entries.unique()) == {entries.min(), 2 * entries.min()}
    doubled = int((entries == 2 * entries.min()).sum())
    assert doubled in (14, 15)  # 3 rekeys x 5 one-minute windows inside each 5-minute overlap


def test_cores_scale_with_bytes_for_software_variants_only():
    """Twice the bytes in the same packets: the extra crypto cycles per extra
    byte are the software variants' cycles per byte, and zero when offloaded."""
    from pspsim.costs import load_parameter_set

    c = load_parameter_set().costs()
    expected = {"ipsec-sw": c.host_aes_gcm_cycles_per_byte,
                "tls-user": c.host_aes_gcm_cycles_per_byte + c.host_tls_user_copy_cycles_per_byte,
                "ktls-sw": c.host_aes_gcm_cycles_per_byte + c.host_ktls_sw_copy_cycles_per_byte,
                "psp": 0.0, "ipsec-packet-offload": 0.0, "ipsec-crypto-offload": 0.0, "ktls-offload": 0.0}
    for variant, cycles_per_byte in expected.items():
        measured = []
        for size in (200, 400):  # both below one MSS and one record
            _, run, _ = simulate(scenario(workload={"message_bytes": {"kind": "fixed", "mean": size}}), variant)
            rows = _rows(run)
            # each byte is handled at both ends: sender and receiver
            measured.append((rows["cores_crypto"].mean() * c.host_clock_hz, 2 * rows["offered_gbps"].mean() * 1e9 / 8))
        (cycles_a, bytes_a), (cycles_b, bytes_b) = measured
        assert (cycles_b - cycles_a) / (bytes_b - bytes_a) == pytest.approx(cycles_per_byte, abs=1e-6), variant


def test_cache_miss_penalty_appears_past_the_cache_size():
    """Past the cache, each missed key lookup (one per TSO burst) costs the engine
    ``miss_cost`` packet-times: with the engine the bottleneck, throughput falls by
    packets / (packets + lookups * miss * cost), worked out here from the workload."""
    sc = scenario(keys={"ipsec_sa_granularity": "connection"},
                  workload={"connections_per_host": {"kind": "fixed", "mean": 300},
                            "message_bytes": {"kind": "fixed", "mean": 8000}})
    low_engine = {"nic.crypto_pps": 2e4}  # both runs engine-bound
    _, small, _ = simulate(sc, "ipsec-packet-offload", low_engine | {"nic.ipsec_sa_cache_entries": 100})
    _, large, _ = simulate(sc, "ipsec-packet-offload", low_engine | {"nic.ipsec_sa_cache_entries": 1e6})
    small, large = _rows(small), _rows(large)
    assert small["cache_miss_ratio_max"].min() > 0.5 and large["cache_miss_ratio_max"].max() == 0
    from pspsim.costs import load_parameter_set

    c = load_parameter_set().costs()
    packets, lookups = np.ceil(8000 / 1424), 1.0  # per message: ESP MSS 1424; one lookup per burst
    miss = small["cache_miss_ratio_mean"].mean()
    expected = packets / (packets + lookups * miss * c.nic_ipsec_sa_miss_cost)
    assert small["achieved_gbps"].mean() / large["achieved_gbps"].mean() == pytest.approx(expected, rel=0.03)
    assert small["nic_engine_util_max"].mean() == pytest.approx(1.0, rel=0.01)
    assert large["nic_engine_util_max"].mean() == pytest.approx(1.0, rel=0.01)


def test_psp_receive_never_misses_the_cache():
    sc = scenario(keys={"psp_tx_key_placement": "descriptor"})
    _, run, _ = simulate(sc, "psp", {"nic.ipsec_sa_cache_entries": 1, "nic.psp_tx_key_cache_entries": 1})
    assert _rows(run)["cache_miss_ratio_max"].max() == 0


def test_command_queue_shows_rekey_storms():
    calm = scenario(keys={"psp_rotation_period": "10min", "psp_rekey_spread": "5min"})
    storm = scenario(keys={"psp_rotation_period": "10min", "psp_rekey_spread": 0})
    slow = {"nic.cmd_psp_gen_spi_s": 1 / 200, "nic.cmd_psp_tx_key_create_s": 1 / 200}
    _, a, _ = simulate(calm, "psp", slow)
    _, b, _ = simulate(storm, "psp", slow)
    assert _rows(b)["command_delay_p99_us"].max() > 5 * _rows(a)["command_delay_p99_us"].max()


def test_fanout_is_a_distribution_drawn_per_host():
    from pspsim.model.workload import generate_workload

    sc = scenario(fleet={"racks": 4, "hosts_per_rack": 16},
                  workload={"peers_per_host": {"kind": "exponential", "mean": 6},
                            "connections_per_host": {"kind": "fixed", "mean": 200}})
    w = generate_workload(sc, np.random.default_rng(9))
    distinct = [len(set(w.server[w.client == h].tolist())) for h in range(64)]
    assert min(distinct) >= 1 and max(distinct) > 2 * min(distinct)
    assert all(0 <= s < 64 for s in set(w.server.tolist())) and not (w.client == w.server).any()
