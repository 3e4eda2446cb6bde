"""PSP as Linux 6.18 runs it: reconnect re-keys, stale associations, rotation schedules,
table-full fallbacks and the command queue, each against a number worked out here."""

import numpy as np
import pandas as pd
import pytest

from pspsim.costs import load_parameter_set
from pspsim.model.rotation import RotationSchedule
from pspsim.model.simulation import FleetSimulation
from pspsim.model.streams import RandomStreams
from pspsim.model.variants import make_variant
from pspsim.model.workload import generate_workload
from tests.sim_helpers import scenario, simulate, summarize

FOREVER = {"connection_lifetime": 0}  # no churn: connections live through the run


def _stale_by_hand(sim, w, period, delay, horizon):
    """Independent reconstruction, connection by connection, of Linux's rule: an association
    goes stale at the second rotation of its NIC after its creation; every rotation asks each
    connection on that NIC to reconnect ``delay`` later (unless one is already asked for after
    it); a reconnect creates both associations anew.  Counts stale events."""
    phase = sim.control.schedule.phase
    events = 0
    for conn in range(len(w)):
        if w.start[conn] >= horizon:
            continue
        ends = (int(w.client[conn]), int(w.server[conn]))
        made = max(w.start[conn], 0.0) if w.start[conn] >= 0 else 0.0
        rotations = sorted((phase[n] + k * period, side) for side, n in enumerate(ends)
                           for k in range(0, int(horizon / period) + 2) if phase[n] + k * period < horizon)
        asked = -1.0
        made_at = [made, made]
        requests = []
        t_events = []
        for r, side in rotations:
            if made_at[side] < r and asked <= r:
                asked = r + delay
                requests.append(asked)
        # walk the timeline: reconnects renew both sides; stale when a side's second rotation comes first
        pending = sorted(requests)
        for side in (0, 1):
            n = ends[side]
            created = made
            for req in pending + [np.inf]:
                first = phase[n] + period * (np.floor((created - phase[n]) / period) + 1)
                stale = first + period
                if stale < min(req, horizon, w.end[conn]):
                    t_events.append(stale)
                    created = req  # the stale connection is re-established by the pending request
                    if req == np.inf:
                        break
                    continue
                created = req
                if req == np.inf:
                    break
        events += len(t_events)
    return events


def test_rotation_faster_than_rekey_yields_the_stale_events_worked_out_by_hand():
    period, delay = 300.0, 400.0  # re-keys come 400 s after a rotation; keys rotate every 300 s
    sc = scenario(run={"duration": "30min"}, workload=FOREVER | {"connections_per_host": {"kind": "fixed", "mean": 5},
                                                                 "peers_per_host": 2},
                  keys={"psp_rotation_period": period, "psp_rekey_delay": delay, "psp_rekey_spread": 0,
                        "psp_stale_notice": 1e6})
    sim, run, w = simulate(sc, "psp")
    expected = _stale_by_hand(sim, w, period, delay, 1800.0)
    assert expected > 0
    assert run.totals["psp_stale_events"] == expected


def test_reconnect_rekeys_add_exactly_the_reestablished_connections_to_handshakes():
    base = dict(run={"duration": "2h", "window": "60s"},
                workload=FOREVER | {"connections_per_host": {"kind": "fixed", "mean": 50}})
    quiet = summarize(scenario(**base, keys={"psp_rotation_period": "30d"}), "psp")
    rotating = summarize(scenario(**base, keys={"psp_rotation_period": "10min", "psp_rekey_delay": "1s",
                                                "psp_rekey_spread": 0}), "psp")
    assert quiet["handshakes_per_s"] == 0 and quiet["key_reconnects_per_s"] == 0
    assert rotating["handshakes_per_s"] == pytest.approx(rotating["key_reconnects_per_s"], rel=1e-12)
    # Closed form: every connection reconnects once per rotation of each of its two NICs.
    live = 8 * 50
    assert rotating["key_reconnects_per_s"] == pytest.approx(2 * live / 600, rel=0.02)
    assert rotating["psp_stale_events"] == 0 and rotating["psp_rekeys_per_s"] == 0


def test_in_place_rekeys_need_no_handshake():
    sc = scenario(run={"duration": "2h"}, workload=FOREVER | {"connections_per_host": {"kind": "fixed", "mean": 50}},
                  keys={"psp_rotation_period": "10min", "psp_rekey": "in-place", "psp_rekey_delay": "1s",
                        "psp_rekey_spread": 0})
    row = summarize(sc, "psp")
    assert row["handshakes_per_s"] == 0 and row["key_reconnects_per_s"] == 0
    assert row["psp_rekeys_per_s"] == pytest.approx(2 * 8 * 50 / 600, rel=0.01)  # one direction per rotation


def test_synchronized_rotation_is_a_storm():
    base = dict(fleet={"racks": 4, "hosts_per_rack": 8}, run={"duration": "1h"},
                workload={"connections_per_host": {"kind": "fixed", "mean": 200}})
    keys = {"psp_rotation_period": "20min", "psp_rekey_delay": "2s", "psp_rekey_spread": "20s"}
    rows = {s: summarize(scenario(**base, keys=keys | {"psp_rotation_schedule": s}), "psp")
            for s in ("staggered", "synchronized", "rack-waves")}
    # Peaks are per window (60 s): the storm of 20 s is diluted, still well above staggered.
    assert rows["synchronized"]["handshakes_per_s_peak"] > 1.3 * rows["staggered"]["handshakes_per_s_peak"]
    # Each NIC's burst is its own connections' re-keys under either schedule (a NIC's rotation
    # re-keys every connection with an end on it), so its queue sees the same burst: the storm
    # is fleet-wide (handshakes per window), not deeper per-NIC queues.
    ratio = rows["synchronized"]["command_delay_max_us"] / rows["staggered"]["command_delay_max_us"]
    assert 0.5 < ratio < 2
    assert rows["staggered"]["handshakes_per_s_peak"] < rows["rack-waves"]["handshakes_per_s_peak"]
    # Synchronized, both NICs of a connection rotate together: one reconnect instead of two.
    assert rows["synchronized"]["key_reconnects_per_s"] == pytest.approx(rows["staggered"]["key_reconnects_per_s"] / 2,
                                                                         rel=0.1)


def test_rotation_schedules():
    rng = np.random.default_rng(1)
    racks = np.repeat(np.arange(3), 4)
    wave = RotationSchedule.draw("rack-waves", 3600, racks, 60, rng)
    assert len(set(np.round(wave.phase[racks == 0], 9))) == 1
    assert (np.mod(wave.phase[racks == 1] - wave.phase[racks == 0], 3600) == pytest.approx(60))
    nics, times = wave.between(0, 7200)
    assert len(nics) == 24 and (np.diff(times) >= 0).all()
    assert wave.stale_time(np.array([0]), np.array(wave.phase[0] - 1))[0] == pytest.approx(wave.phase[0] + 3600)


def test_a_full_tx_key_table_falls_back_to_tls_and_costs_its_cores():
    sc = scenario(run={"duration": "20min"}, workload=FOREVER | {"connections_per_host": {"kind": "fixed", "mean": 100},
                                                                 "peers_per_host": 3},
                  keys={"psp_rotation_period": "30d"})
    roomy = summarize(sc, "psp")
    full = summarize(sc, "psp", {"nic.psp_tx_key_capacity": 120})
    assert roomy["offload_fallbacks"] == 0 and full["offload_fallbacks"] > 0
    # Each NIC holds 120 TX keys; every host has 100 client ends and about 100 server ends.
    sim, run, w = simulate(sc, "psp", {"nic.psp_tx_key_capacity": 120})
    assert pd.DataFrame(run.rows)["nic_entries_host_max"].max() <= 120
    assert full["software_fallback_gbps_mean"] > 0
    # The extra cores are the fallen-back traffic priced as userspace TLS instead of PSP.
    from pspsim.costs import load_parameter_set
    from pspsim.model.variants import make_variant
    from pspsim.scenario import KeysConfig

    c = load_parameter_set().costs()
    tls = make_variant("tls-user", c, KeysConfig())
    psp = make_variant("psp", c, KeysConfig())
    bytes_s = full["software_fallback_gbps_mean"] * 1e9 / 8 * 2  # both ends
    pkts = bytes_s / psp.mss
    records = bytes_s / 8192  # messages of 8 KiB mean: one record each (lognormal: approximately)
    extra = (tls.crypto_cycles(pkts, bytes_s, records) - psp.crypto_cycles(pkts, bytes_s, records)) / c.host_clock_hz
    assert full["cores_mean"] - roomy["cores_mean"] == pytest.approx(extra, rel=0.25)
    fail = summarize(sc.model_copy(update={"keys": sc.keys.model_copy(update={"psp_on_full": "fail"})}), "psp",
                     {"nic.psp_tx_key_capacity": 120})
    assert fail["offload_failures"] == full["offload_fallbacks"] and fail["achieved_fraction"] < 1


def test_a_slow_command_queue_delays_psp_and_shows_as_tls_traffic():
    sc = scenario(run={"duration": "30min"}, workload={"connection_lifetime": "2min"},
                  keys={"psp_rotation_period": "30d"})
    fast = summarize(sc, "psp")
    slow = summarize(sc, "psp", {"nic.cmd_psp_gen_spi_s": 0.02, "nic.cmd_psp_tx_key_create_s": 0.02})
    assert slow["command_delay_p99_us"] > 100 * fast["command_delay_p99_us"]
    assert slow["software_fallback_gbps_mean"] > 20 * max(fast["software_fallback_gbps_mean"], 1e-9)
    waiting = sc.model_copy(update={"keys": sc.keys.model_copy(update={"psp_before_upgrade": "wait"})})
    held = summarize(waiting, "psp", {"nic.cmd_psp_gen_spi_s": 0.02, "nic.cmd_psp_tx_key_create_s": 0.02})
    assert held["achieved_fraction"] < slow["achieved_fraction"] and held["software_fallback_gbps_mean"] == 0


def test_ipsec_and_ktls_tables_that_overflow():
    sc = scenario(run={"duration": "20min"}, keys={"ipsec_sa_granularity": "connection"},
                  workload=FOREVER | {"connections_per_host": {"kind": "fixed", "mean": 60}})
    auto = summarize(sc, "ipsec-packet-offload", {"nic.ipsec_sa_capacity": 100})
    assert auto["offload_fallbacks"] > 0 and auto["software_fallback_gbps_mean"] > 0
    yes = sc.model_copy(update={"keys": sc.keys.model_copy(update={"ipsec_hw_offload": "yes"})})
    failing = summarize(yes, "ipsec-packet-offload", {"nic.ipsec_sa_capacity": 100})
    assert failing["offload_failures"] == auto["offload_fallbacks"] and failing["achieved_fraction"] < 1
    ktls = summarize(sc, "ktls-offload", {"nic.ktls_tx_context_capacity": 50})
    assert ktls["offload_fallbacks"] > 0 and ktls["software_fallback_gbps_mean"] > 0


@pytest.mark.parametrize("granularity", ["connection", "host-pair"])
def test_an_sa_alive_at_time_0_that_finds_a_slot_later_carries_its_connections(granularity):
    """``ipsec_hw_offload = "yes"``: an SA that found its NIC's table full at time 0 waits and is retried at
    each window's start.  When it fits, it is installed with commands like any SA set up in the run, and
    its live connections run offloaded from then on.  Before, being alive at time 0 read as "installed
    before the run": no commands, and its connections waited to the end."""
    from pspsim.model.traffic import WAITING

    sc = scenario(run={"duration": "30min"}, keys={"ipsec_sa_granularity": granularity, "ipsec_hw_offload": "yes"},
                  workload={"connections_per_host": {"kind": "fixed", "mean": 60}, "connection_lifetime": "5min"})
    capacity = 40 if granularity == "connection" else 4
    sim, run, w = simulate(sc, "ipsec-packet-offload", {"nic.ipsec_sa_capacity": capacity})
    control, end = sim.control, 30 * 60.0
    assert run.totals["offload_failures"] > 0  # the tables overflowed at time 0
    live = np.flatnonzero((w.start < end) & (w.end > end))
    on_installed = live[control.sa_installed[control.sa_of[live]]]
    assert len(on_installed) > 0
    retried = control.sa_start[control.sa_of[on_installed]] < 0  # SAs alive at time 0 that are installed now
    assert retried.any()
    assert not (sim.ledger.category[on_installed] == WAITING).any()


def test_nic_counters_carry_linux_names_and_add_up():
    from pspsim.study.runner import resolve_parameters, run_one

    sc = scenario(run={"duration": "1h"}, keys={"psp_rotation_period": "10min", "psp_rekey_delay": "12min",
                                               "psp_rekey_spread": 0})
    out = run_one(sc, resolve_parameters(sc), 0, "psp")
    nic = out.nic_counters
    assert list(nic.columns[:5]) == ["scenario", "variant", "replication", "seed", "spawn_key"]
    assert len(nic) == 8 and set(nic["nic"]) == set(range(8))
    assert nic["key-rotations"].between(5, 6).all()  # 3600 s / 600 s, phase-dependent
    assert nic["stale-events"].sum() == out.summary["psp_stale_events"] > 0
    # Every packet sent is received by some NIC: conservation over the fleet.
    assert nic["rx-packets"].sum() == pytest.approx(nic["tx-packets"].sum(), rel=1e-9)
    assert nic["rx-bytes"].sum() == pytest.approx(nic["tx-bytes"].sum(), rel=1e-9)


@pytest.mark.parametrize("variant", ["psp", "ktls-offload"])
def test_nic_tables_hold_exactly_the_live_connections_under_churn(variant):
    """Found by the crosscheck: a connection set up and ended inside one window left its
    TX key (PSP) or contexts (kTLS) behind.  Entries must track live connections: PSP two
    TX keys per connection (one per end), kTLS a TX and an RX context per end."""
    sc = scenario(run={"duration": "20min", "window": "60s"}, workload={"connection_lifetime": "20s"},
                  keys={"psp_rotation_period": "30d"})
    _, run, _ = simulate(sc, variant)
    ts = pd.DataFrame(run.rows)
    per_connection = 2 if variant == "psp" else 4
    # commands take microseconds: only connections opened in the last instant are not yet installed
    assert (ts["nic_entries_total"] <= per_connection * ts["connections"]).all()
    assert (ts["nic_entries_total"] >= per_connection * ts["connections"] - per_connection * 2).all()


def test_hosts_over_capacity_flags_a_table_only_when_it_overflows():
    """kTLS entries count TX and RX contexts: a host is over capacity only past both tables."""
    sc = scenario(run={"duration": "10min"}, workload=FOREVER | {"connections_per_host": {"kind": "fixed", "mean": 60}})
    roomy = summarize(sc, "ktls-offload", {"nic.ktls_tx_context_capacity": 200, "nic.ktls_rx_context_capacity": 200})
    assert roomy["offload_fallbacks"] == 0 and roomy["hosts_over_nic_capacity_peak"] == 0


def test_a_reconnect_that_covers_the_peers_rotation_is_not_dropped():
    """A connection opens a microsecond before its client's NIC rotates (T); its server's NIC rotates
    10 s later.  The client's rotation asks for a reconnect at T + 60 s (the next window), and the
    server's rotation
    asks for nothing, because that reconnect is pending and re-keys both sides.  The client's
    association was made after T (its GEN_SPI completes after the rotation), so the reconnect is
    not needed for the client, but the server's association has seen its NIC rotate: the
    reconnect must run, or the server's side goes stale at its next rotation (T + P + 10 s) although
    re-keying (60 s) is far faster than rotation (P = 400 s).  pspsim used to drop it."""
    from pspsim.model.simulation import FleetSimulation
    from pspsim.model.variants import make_variant
    from pspsim.model.workload import Workload
    from tests.sim_helpers import RandomStreams, load_parameter_set

    period = 400.0
    sc = scenario(run={"duration": "30min"}, fleet={"racks": 2, "hosts_per_rack": 1}, workload={"peers_per_host": 1},
                  keys={"psp_rotation_period": period, "psp_rotation_schedule": "rack-waves",
                        "psp_rack_wave_gap": 10, "psp_rekey_delay": 60, "psp_rekey_spread": 0,
                        "psp_stale_notice": 1e6})
    costs = load_parameter_set().costs()

    def run(workload):
        streams = RandomStreams.from_sequence(np.random.SeedSequence(5))
        sim = FleetSimulation(sc, make_variant("psp", costs, sc.keys), workload, costs, streams)
        return sim, sim.run()

    def one_connection(start):
        return Workload(2, np.array([0], np.int32), np.array([1], np.int32), np.array([start]),
                        np.array([1e5]), np.array([8192], np.float32), np.array([1], np.float32), 1.0)

    probe, _ = run(one_connection(1000.0))
    phase = probe.control.schedule.phase
    assert phase[1] - phase[0] == pytest.approx(10.0)  # the server's NIC rotates 10 s after the client's
    rotation = phase[0] + period  # T
    sim, result = run(one_connection(rotation - 1e-6))
    assert result.totals["psp_stale_events"] == 0 and not sim.control.lost.any()
    # one reconnect 60 s after each of the client's rotations from T on (the server's are covered by them)
    assert result.totals["key_reconnects"] == len(np.arange(rotation + 60, 1800, period)) >= 3


def _in_place_stale_by_hand(phase: float, period: float, delay: float, horizon: float) -> int:
    """Stale events of one side of a connection open from time 0, re-keyed in place: each side is
    on its own (a rotation of its NIC asks for a new SPI on that side ``delay`` later unless one is
    asked for already; the peer's rotations renew only the peer's side).  Counts the associations
    whose stale time (the second rotation of the NIC after they were made) comes before they are
    replaced and before the horizon."""
    rotations = [phase + k * period for k in range(int(horizon / period) + 2) if phase + k * period < horizon]
    made, asked, renewals, events = 0.0, -np.inf, [], 0

    def stale(made):
        return phase + period * (np.floor((made - phase) / period) + 1) + period

    for r in rotations + [np.inf]:
        while renewals and renewals[0] <= min(r, horizon):
            q = renewals.pop(0)
            if made < q - delay:  # the association is older than the rotation that asked
                events += stale(made) < q
                made = q
        if r == np.inf:
            break
        if made < r and asked <= r:
            asked = r + delay
            renewals.append(asked)
    return events + (stale(made) < horizon)


def test_in_place_rekeys_renew_only_their_own_side_so_the_other_side_still_goes_stale():
    """In place, a re-key of one side does not save the other side's association: each side's
    stale events follow from its own NIC's rotations alone (worked out by hand per side).  Stale
    checks used to be cancelled by any re-key of the connection earlier in the window, whichever
    side it renewed, so some stale events (and their lost connections) went uncounted."""
    period, delay, horizon = 300.0, 350.0, 7200.0
    sc = scenario(run={"duration": "2h"}, fleet={"racks": 2, "hosts_per_rack": 2},
                  workload=FOREVER | {"connections_per_host": {"kind": "fixed", "mean": 10}, "peers_per_host": 1},
                  keys={"psp_rotation_period": period, "psp_rekey_delay": delay, "psp_rekey_spread": 0,
                        "psp_rekey": "in-place", "psp_stale_notice": 1e6})
    sim, run, w = simulate(sc, "psp", seed=0)
    phase = sim.control.schedule.phase
    expected = sum(_in_place_stale_by_hand(phase[int(host)], period, delay, horizon)
                   for conn in range(len(w)) for host in (w.client[conn], w.server[conn]))
    assert expected > 0
    assert run.totals["psp_stale_events"] == expected


@pytest.mark.parametrize("rekey", ["reconnect", "in-place"])
def test_rows_of_connections_not_started_yet_are_never_read(rekey):
    """PSP's per-side state (``made``, ``scheduled``) is written for connections as they start, so
    the day's later connections take no memory at first.  Rows not written yet are filled here with
    values that would change the run if any were read (an association made far in the future, a
    re-key already asked for), before every window: the run stays the same, to the byte."""
    sc = scenario(run={"duration": "40min"}, workload={"connection_lifetime": "5min"},
                  keys={"psp_rotation_period": "3min", "psp_rekey_delay": "4min", "psp_rekey_spread": "1min",
                        "psp_rekey": rekey, "psp_stale_notice": "20s"})
    _, clean, _ = simulate(sc, "psp")

    costs = load_parameter_set().costs()
    streams = RandomStreams.from_sequence(np.random.SeedSequence(5))
    w = generate_workload(sc, streams.workload)
    sim = FleetSimulation(sc, make_variant("psp", costs, sc.keys), w, costs, streams)
    ctl, window, unwritten = sim.control, sim.control.window, []

    def poisoned(index, t0, t1, arrivals, departures, out):
        unwritten.append(len(w) - ctl.rows_written)
        ctl.made[ctl.rows_written:] = 1e9
        ctl.scheduled[ctl.rows_written:] = np.inf
        window(index, t0, t1, arrivals, departures, out)

    ctl.window = poisoned
    run = sim.run()
    assert unwritten[0] == len(w) and 0 < unwritten[20] < len(w)  # later connections wait to be written
    assert clean.totals["psp_stale_events"] > 0 and clean.totals["key_reconnects"] + clean.totals["psp_rekeys"] > 0
    assert run.totals == clean.totals
    pd.testing.assert_frame_equal(pd.DataFrame(run.rows), pd.DataFrame(clean.rows))
