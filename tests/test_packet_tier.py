"""The packet tier: real keys, real failures, real bytes."""

import numpy as np
import pytest

from pspsim.costs import load_parameter_set
from pspsim.packets.tier import PacketTier
from pspsim.model.workload import generate_workload
from pspsim.scenario import scenario_from_dict

COSTS = load_parameter_set().costs()


def small(variant="psp", **keys):
    sc = scenario_from_dict({
        "run": {"duration": "2min", "window": "10s", "variants": [variant]},
        "fleet": {"racks": 1, "hosts_per_rack": 4},
        "workload": {"connections_per_host": {"kind": "fixed", "mean": 3}, "peers_per_host": 2,
                     "connection_lifetime": "10min", "messages_per_second": {"kind": "fixed", "mean": 20},
                     "message_bytes": {"kind": "fixed", "mean": 3000}},
        "keys": keys,
        "packets": {"duration": "2min"},
    })
    return sc, generate_workload(sc, np.random.default_rng(1))


def predicted_auth_failures(tier, result):
    """Packets sealed with an SPI whose device key had rotated out when they arrived.

    From the schedule alone: each connection direction's SPI is replaced when a
    rekey completes; an SPI dies at the second rotation after its generation."""
    m, w, a = tier.model, tier.w, result.arrivals
    expected = 0
    for conn in tier.sample:
        for direction, rx in ((0, w.server[conn]), (1, w.client[conn])):
            mine = np.flatnonzero((m.rk_conn == conn) & (m.rk_rx == rx) & np.isfinite(m.rk_done))
            completions = np.sort(m.rk_done[mine])
            allocated = [max(w.start[conn], 0.0), *completions]
            replaced = [*completions, np.inf]
            sel = (a["conn"] == conn) & (a["direction"] == direction)
            for alloc, until in zip(allocated, replaced):
                dies = m._spi_death(np.array([rx]), np.array([alloc]))[0]
                expected += int((sel & (a["sent"] >= alloc) & (a["sent"] < until) & (a["time"] >= dies)).sum())
    return expected


def test_lagging_rekeys_fail_authentication_exactly_as_predicted():
    sc, workload = small(psp_rotation_period="20s", psp_rekey_delay="25s", psp_rekey_spread="0s")
    tier = PacketTier(sc, "psp", COSTS, workload, np.random.default_rng(3))
    result = tier.run()
    failed = result.outcomes["rx-auth-fail"]
    assert failed > 1000
    assert failed == predicted_auth_failures(tier, result)
    assert result.outcomes["delivered"] + failed == result.packets_sent
    assert result.model.totals["connections_lost"] > 0


def test_timely_rekeys_deliver_everything():
    sc, workload = small(psp_rotation_period="20s", psp_rekey_delay="2s", psp_rekey_spread="5s")
    result = PacketTier(sc, "psp", COSTS, workload, np.random.default_rng(3)).run()
    assert result.rekeys > 20 and result.outcomes["rx-auth-fail"] == 0
    assert result.outcomes["delivered"] == result.packets_sent
    assert 0.9 < result.key_cache_hit_ratio < 1


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
    assert result.rekeys > 0


@pytest.mark.parametrize("variant", ["tls-user", "ktls-offload"])
def test_tls_records_survive_rekeys_and_fail_when_tampered(variant):
    sc, workload = small(variant, tls_rekey_interval="15s")
    clean = PacketTier(sc, variant, COSTS, workload, np.random.default_rng(3)).run()
    assert clean.rekeys > 0 and clean.outcomes["delivered"] == clean.packets_sent
    tampered = PacketTier(sc, variant, COSTS, workload, np.random.default_rng(3), in_flight=_flip_last_bit).run()
    assert tampered.outcomes["bad_record_mac"] > 0


def test_overhead_is_measured_from_real_bytes():
    sc, workload = small()
    result = PacketTier(sc, "psp", COSTS, workload, np.random.default_rng(3)).run()
    assert result.wire_bytes_sent - result.inner_bytes_sent == 40 * result.packets_sent
