"""Invariants of the fleet model on small scenarios drawn by hypothesis."""

import math

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.sim_helpers import scenario, simulate, summarize, tls_rekeys_against_closed_form

SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])

small = st.fixed_dictionaries({
    "racks": st.integers(1, 3),
    "hosts_per_rack": st.integers(2, 4),
    "connections": st.integers(1, 40),
    "peers": st.integers(1, 3),
    "lifetime": st.sampled_from([30.0, 300.0, 3600.0, 0.0]),
    "rate": st.floats(1.0, 5000.0),
    "size": st.floats(100.0, 2e6),
    "link": st.floats(1.0, 100.0),
    "variant": st.sampled_from(["psp", "ipsec-sw", "ipsec-packet-offload", "tls-user", "ktls-offload",
                                "plaintext"]),
})


def _scenario(d, **extra):
    hosts = d["racks"] * d["hosts_per_rack"]
    return scenario(
        fleet={"racks": d["racks"], "hosts_per_rack": d["hosts_per_rack"], "host_link_gbps": d["link"]},
        run={"duration": "10min", "window": "60s"},
        workload={"connections_per_host": {"kind": "fixed", "mean": d["connections"]},
                  "peers_per_host": min(d["peers"], hosts - 1), "connection_lifetime": d["lifetime"],
                  "messages_per_second": {"kind": "exponential", "mean": d["rate"]},
                  "message_bytes": {"kind": "lognormal", "mean": d["size"], "sigma": 1.0}},
        **extra)


@SETTINGS
@given(small)
def test_achieved_never_exceeds_offered_nor_the_links(d):
    sc = _scenario(d)
    _, run, w = simulate(sc, d["variant"])
    ts = pd.DataFrame(run.rows)
    assert (ts["achieved_gbps"] <= ts["offered_gbps"] * (1 + 1e-9) + 1e-12).all()
    hosts = sc.fleet.hosts
    # every byte leaves one host's uplink: the fleet cannot carry more payload than its uplinks
    assert (ts["achieved_gbps"] <= hosts * d["link"] * (1 + 1e-9)).all()
    row = summarize(sc, d["variant"])
    assert math.isnan(row["achieved_fraction"]) or 0 <= row["achieved_fraction"] <= 1 + 1e-9
    assert row["connections_lost"] <= len(w)
    assert row["rekeys_per_s"] == sum(row[k] for k in ("psp_rekeys_per_s", "child_sa_rekeys_per_s",
                                                       "ike_sa_rekeys_per_s", "tls_key_updates_per_s",
                                                       "key_reconnects_per_s"))


@SETTINGS
@given(small, st.floats(1.5, 4.0))
def test_cores_do_not_fall_when_more_traffic_is_carried(d, factor):
    """More carried traffic never costs fewer cores.  When both loads saturate the links, the same
    bytes are carried (to ~1e-8) but max-min sharing splits them a little differently among flows of
    different message sizes and directions, hence packets per byte, so the cores may move a little
    either way: there they must not fall by more than 1e-6 (hypothesis found 2 racks x 2 hosts, 3
    connections, 1 Gb/s links, software IPsec: achieved +6e-9, cores -6.6e-8, the same at d03ab1f)."""
    low = summarize(_scenario(d), d["variant"])
    more = dict(d, rate=d["rate"] * factor)
    high = summarize(_scenario(more), d["variant"])
    carried = high["achieved_gbps_mean"] / max(low["achieved_gbps_mean"], 1e-300)
    if carried >= 1 - 1e-6:
        slack = 1e-9 if carried >= 1 + 1e-6 else 1e-6
        assert high["cores_mean"] >= low["cores_mean"] * (1 - slack)


@SETTINGS
@given(st.integers(2, 6))
def test_psp_receive_state_does_not_grow_with_fan_out_but_ipsec_state_does(peers):
    base = dict(fleet={"racks": 2, "hosts_per_rack": 4}, run={"duration": "5min"},
                keys={"psp_tx_key_placement": "descriptor"})
    few = scenario(**base, workload={"peers_per_host": 1, "connections_per_host": {"kind": "fixed", "mean": 30},
                                     "connection_lifetime": 0})
    many = scenario(**base, workload={"peers_per_host": peers, "connections_per_host": {"kind": "fixed", "mean": 30},
                                      "connection_lifetime": 0})
    for sc_ in (few, many):
        row = summarize(sc_, "psp")
        assert row["nic_bytes_per_host_peak"] == 64  # two 256-bit device keys, nothing per peer
    assert summarize(many, "ipsec-packet-offload")["nic_entries_per_host_peak"] > \
        summarize(few, "ipsec-packet-offload")["nic_entries_per_host_peak"]


@SETTINGS
@given(st.floats(1.0, 60.0), st.sampled_from(["tls-user", "ktls-sw"]))
def test_no_tls_rekeys_when_connections_close_long_before_the_interval(lifetime, variant):
    sc = scenario(run={"duration": "30min"}, workload={"connection_lifetime": lifetime},
                  keys={"tls_rekey_interval": "24h"})
    assert summarize(sc, variant)["tls_key_updates_per_s"] == 0


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([600.0, 1800.0, 3600.0]), st.sampled_from([900.0, 2400.0]))
def test_steady_state_tls_rekey_rate_holds_over_six_hours(life, interval):
    got, expected = tls_rekeys_against_closed_form(life, interval, 300, racks=1, variant="tls-user")
    assert abs(got - expected) <= 0.1 * expected
