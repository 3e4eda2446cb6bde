"""The packet tier: its own control plane, real keys, real failures, real bytes."""

import numpy as np
import pytest

from pspsim.costs import load_parameter_set
from pspsim.model.workload import generate_workload
from pspsim.packets.tier import PacketTier
from pspsim.scenario import scenario_from_dict
from pspsim.wire._compiled import PURE_PYTHON

COSTS = load_parameter_set().costs()


def small(variant="psp", lifetime="10min", hosts=4, span="2min", **keys):
    sc = scenario_from_dict({
        "run": {"duration": span, "window": "10s", "variants": [variant]},
        "fleet": {"racks": 1, "hosts_per_rack": hosts},
        "workload": {"connections_per_host": {"kind": "fixed", "mean": 3 if hosts > 2 else 1},
                     "peers_per_host": min(2, hosts - 1),
                     "connection_lifetime": lifetime, "messages_per_second": {"kind": "fixed", "mean": 20},
                     "message_bytes": {"kind": "fixed", "mean": 3000}},
        "keys": keys,
        "packets": {"duration": span},
    })
    return sc, generate_workload(sc, np.random.default_rng(1))


def test_rotation_outrunning_rekeys_goes_stale_as_worked_out_by_hand():
    """Two hosts, one everlasting connection each way, synchronized rotations
    every 10 s, re-keying 25 s after a rotation, 50 s of packets.  By the rules
    (SEMANTICS 2-3): the first rotation (phi) schedules a reconnect at phi+25;
    the second (phi+10) finds the t=0 associations one rotation old: stale, on
    both NICs for both connections (4 events); the reconnect is in use just
    after phi+25; phi+30 schedules the next at phi+55 (after the end); phi+40
    finds the new associations stale (4 more).  So 8 stale events, 2 connections
    lost, 2 reconnects, and every packet arriving in [phi+10, switch) or
    [phi+40, 50) fails authentication, every other one verifies."""
    sc, workload = small(lifetime=0, hosts=2, span="50s", psp_rotation_period="10s",
                         psp_rotation_schedule="synchronized", psp_rekey_delay="25s", psp_rekey_spread="0s")
    assert len(workload) == 2
    tier = PacketTier(sc, "psp", COSTS, workload, np.random.default_rng(3), keep_arrivals=True)
    result = tier.run()
    phi = tier.schedule.rotations[0][0]
    assert tier.schedule.rotations[0] == pytest.approx([phi + 10 * k for k in range(5) if phi + 10 * k < 50])
    assert result.counts["psp_stale_events"] == 8
    assert result.counts["connections_lost"] == 2
    assert result.counts["key_reconnects"] == 2 and result.counts["handshakes"] == 2
    switch = [e.start for e in tier.schedule.epochs[0] if e.incarnation == 1][0]
    assert phi + 25 < switch < phi + 25.001
    a = result.arrivals
    bad = ((a["time"] >= phi + 10) & (a["sent"] < switch)) | (a["time"] >= phi + 40)
    assert result.outcomes["rx-auth-fail"] == int(bad.sum()) > 1000
    assert (a["ok"] == ~bad).all()
    stale = sum(c["stale-events"] for c in result.nic_counters)
    assert stale == 8 and sum(c["rx-auth-fail"] for c in result.nic_counters) == int(bad.sum())


def test_timely_rekeys_deliver_everything():
    sc, workload = small(psp_rotation_period="20s", psp_rekey_delay="2s", psp_rekey_spread="5s")
    result = PacketTier(sc, "psp", COSTS, workload, np.random.default_rng(3)).run()
    assert result.counts["key_reconnects"] > 20 and result.outcomes["rx-auth-fail"] == 0
    assert result.counts["psp_stale_events"] == 0
    assert result.outcomes["delivered"] == result.packets_sent
    rx = sum(c["rx-packets"] for c in result.nic_counters)
    assert rx == result.packets_sent == sum(c["tx-packets"] for c in result.nic_counters)
    # rx-bytes leave out Ethernet, IP, UDP, PSP header and ICV: the TCP header and payload remain
    assert sum(c["rx-bytes"] for c in result.nic_counters) == result.inner_bytes_sent - 34 * result.packets_sent


def test_in_place_rekeys_change_one_direction_without_handshakes():
    sc, workload = small(lifetime=0, psp_rotation_period="20s", psp_rekey_delay="2s", psp_rekey_spread="5s",
                         psp_rekey="in-place")
    result = PacketTier(sc, "psp", COSTS, workload, np.random.default_rng(3)).run()
    # one pending re-keying per connection (SEMANTICS 3): a rotation of the other end meanwhile is left,
    # so some associations go stale and reconnect on notice; every handshake is such a reconnect
    assert result.counts["psp_rekeys"] > 0
    assert result.counts["handshakes"] == result.counts["key_reconnects"] <= result.counts["psp_stale_events"]


def test_tx_key_table_full_falls_back_to_tls():
    sc, workload = small(lifetime=0)
    costs = load_parameter_set().with_overrides({"nic.psp_tx_key_capacity": 4}).costs()
    result = PacketTier(sc, "psp", costs, workload, np.random.default_rng(3)).run()
    # 12 connections in start order; each takes a slot on both ends' NICs; those that find one full stay on TLS
    assert result.counts["offload_fallbacks"] > 0
    assert result.by_kind["tls"]["packets"] > 0 and result.outcomes["delivered"] == result.packets_sent


def _flip_last_bit(index, frame):
    return [frame[:-1] + bytes([frame[-1] ^ 1])] if index % 97 == 5 else [frame]


def test_tampered_packets_are_auth_failures_and_not_delivered():
    sc, workload = small()
    result = PacketTier(sc, "psp", COSTS, workload, np.random.default_rng(3), in_flight=_flip_last_bit).run()
    tampered = result.outcomes["rx-auth-fail"]
    assert tampered > 0 and result.outcomes["delivered"] + tampered == result.packets_sent


def _replay(index, frame):
    return [frame, frame] if index % 50 == 3 else [frame]


def test_esp_replays_are_rejected():
    sc, workload = small("ipsec-sw", ipsec_child_rekey="30s", ipsec_rekey_overlap="2s")
    result = PacketTier(sc, "ipsec-sw", COSTS, workload, np.random.default_rng(3), in_flight=_replay).run()
    replays = result.outcomes["XfrmInStateSeqError"]
    assert replays > 0 and result.outcomes["delivered"] == result.packets_sent
    assert result.counts["child_sa_rekeys"] > 0


def test_per_connection_sas_are_removed_when_connections_end_and_count_as_handshakes():
    sc, workload = small("ipsec-packet-offload", lifetime="20s", ipsec_sa_granularity="connection",
                         ipsec_child_rekey="1h", ipsec_rekey_overlap="2s")
    tier = PacketTier(sc, "ipsec-packet-offload", COSTS, workload, np.random.default_rng(3))
    result = tier.run()
    w, span = workload, 120.0
    live = int(((w.start < span) & (w.end > span)).sum())
    assert result.nic_entries_end == 4 * live  # inbound + outbound SA on each of the two hosts
    assert sum(len(db) for db in tier.sadb.inbound) == 2 * live
    opened = int(((w.start > 0) & (w.start < span)).sum())
    assert result.counts["handshakes"] >= opened  # every new connection: CREATE_CHILD_SA or IKE set-up
    assert result.outcomes["delivered"] == result.packets_sent


@pytest.mark.parametrize("variant", ["tls-user", "ktls-offload"])
def test_tls_records_survive_rekeys_and_fail_when_tampered(variant):
    sc, workload = small(variant, tls_rekey_interval="15s")
    clean = PacketTier(sc, variant, COSTS, workload, np.random.default_rng(3)).run()
    rekeys = clean.counts["tls_key_updates"] + clean.counts["key_reconnects"]
    assert rekeys > 0 and clean.outcomes["delivered"] == clean.packets_sent
    tampered = PacketTier(sc, variant, COSTS, workload, np.random.default_rng(3), in_flight=_flip_last_bit).run()
    assert tampered.outcomes["bad_record_mac"] > 0


def test_tls_rekeys_by_byte_budget_as_counted_by_hand():
    """Budget 600 kB at 3000 B x 20/s = 60 kB/s per direction: a re-key every 10 s of age.
    The connections were open long before the run (start < 0, ages uniform over days), so
    whatever the phase, exactly 120 / 10 = 12 ages of each fall inside the 120 s."""
    sc, workload = small("tls-user", lifetime=0, tls_rekey_interval="1h", tls_rekey_bytes=600_000)
    assert (workload.start < -10).all()
    result = PacketTier(sc, "tls-user", COSTS, workload, np.random.default_rng(3)).run()
    # Connections open at time 0 have steady-state ages (uniform re-key phases): a re-key every 10 s of
    # age falls 12 times in any 120 s, whatever the phase.
    assert (workload.start < 0).all()
    expected = len(workload) * 12
    assert result.counts["tls_key_updates"] == expected
    assert result.outcomes["delivered"] == result.packets_sent


def test_overhead_is_measured_from_real_bytes():
    sc, workload = small()
    result = PacketTier(sc, "psp", COSTS, workload, np.random.default_rng(3)).run()
    assert result.wire_bytes_sent - result.inner_bytes_sent == 40 * result.packets_sent


def test_same_seed_same_events_and_bytes():
    sc, workload = small(psp_rotation_period="20s", psp_rekey_delay="2s", psp_rekey_spread="5s")
    a = PacketTier(sc, "psp", COSTS, workload, np.random.default_rng(9)).run()
    b = PacketTier(sc, "psp", COSTS, workload, np.random.default_rng(9)).run()
    assert a.counts == b.counts and a.wire_bytes_sent == b.wire_bytes_sent and a.outcomes == b.outcomes


@pytest.mark.skipif(PURE_PYTHON, reason="frames are sealed on demand only with the compiled path")
@pytest.mark.parametrize("keys, cache_size", [
    (dict(psp_rotation_period="10s", psp_rekey_delay="12s", psp_rekey_spread="4s"), None),
    (dict(psp_rotation_period="10s", psp_rekey_delay="9s", psp_rekey_spread="3s"), None),
    (dict(psp_rotation_period="10s", psp_rekey_delay="12s", psp_rekey_spread="4s"), 2),  # the NICs' caches evict
])
def test_fast_path_counts_as_opening_each_frame(monkeypatch, keys, cache_size):
    """The fast path seals PSP frames as the receiver needs them, verifies them in
    compiled batches and lets them go, and counts a rejected packet where it is met.
    Every count, the key cache's lookups included (one per packet received: a
    batch that met a rejection used to look its packets up twice), must be what
    opening each frame in turn gives (the fast path off)."""
    from pspsim.packets import psp_nic, tier
    from pspsim.wire.psp_sa import DeviceKeys

    if cache_size is not None:
        monkeypatch.setattr(psp_nic, "DeviceKeys", lambda k0, k1: DeviceKeys(k0, k1, cache_size=cache_size))
    sc, workload = small(span="40s", **keys)
    runs = []
    for fast in (True, False):
        if not fast:
            monkeypatch.setattr(tier, "_psp_fast", None)
        runs.append(PacketTier(sc, "psp", COSTS, workload, np.random.default_rng(3), keep_arrivals=True).run())
    fast_path, one_by_one = runs
    assert fast_path.outcomes["rx-auth-fail"] > 100
    assert (fast_path.key_cache_hit_ratio < 0.9) == (cache_size is not None)  # evictions, where asked for
    assert fast_path.outcomes == one_by_one.outcomes and fast_path.nic_counters == one_by_one.nic_counters
    assert fast_path.key_cache_hit_ratio == one_by_one.key_cache_hit_ratio
    assert fast_path.wire_bytes_sent == one_by_one.wire_bytes_sent
    assert all((fast_path.arrivals[k] == one_by_one.arrivals[k]).all() for k in fast_path.arrivals)