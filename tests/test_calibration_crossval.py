"""Calibration judged out of sample: leave-one-group-out cross-validation and identifiability."""

import csv
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pspsim.calibration.crossval import cross_validate, without
from pspsim.calibration.fit import _exposure, calibrate, validate
from pspsim.calibration.identify import identifiability
from pspsim.calibration.measurements import load_measurements
from pspsim.cli.main import main
from pspsim.costs.params import load_parameter_set

PUBLISHED = Path(__file__).parents[1] / "experiments" / "calibration" / "published"


def _folder(tmp_path, lines):
    (tmp_path / "measurements.toml").write_text("\n".join(lines) + "\n")
    return tmp_path


def _ipsec_sw_set(tmp_path, outlier=1.0):
    """Runs the model generates exactly from known costs (plain stack, then software ESP), one ESP run off by
    ``outlier``: a synthetic truth whose only misfit is that run."""
    truth = load_parameter_set().with_overrides({"host.stack_cycles_per_packet": 1000.0,
                                                 "host.ipsec_sw_cycles_per_packet": 2500.0})
    costs = truth.costs()
    lines = ["[platform]", f"clock_ghz = {costs.host_clock_hz / 1e9}"]
    from pspsim.calibration.fit import run_cycles
    from pspsim.calibration.measurements import TrafficRun
    from pspsim.model.variants import make_variant
    from pspsim.scenario import KeysConfig

    for variant, rates in (("plaintext", (10.0, 20.0, 30.0)), ("ipsec-sw", (2.0, 4.0, 6.0, 8.0, 10.0))):
        mss = make_variant(variant, costs, KeysConfig()).mss
        for i, gbps in enumerate(rates):
            b = gbps * 1e9 / 8
            cycles = run_cycles(TrafficRun(variant, 1, gbps, b, b / mss, 0.0, 0.0, "", ""), costs)
            factor = outlier if (variant == "ipsec-sw" and i == len(rates) - 1) else 1.0
            lines += ["[[throughput]]", f'variant = "{variant}"', f"gbps = {gbps}",
                      f"cpu_cores = {cycles * factor / costs.host_clock_hz}"]
    return load_measurements(_folder(tmp_path, lines))


def test_held_out_group_is_really_excluded_from_the_refit():
    meas = load_measurements(PUBLISHED)
    cv = cross_validate(meas, load_parameter_set())
    held = "state_scaling[0]"  # the 1,000-tunnel point, the only one before the cache cliff
    refit = {e.parameter: e.value for e in cv.refits[held].estimates}
    full = {e.parameter: e.value for e in cv.full.estimates}
    assert refit["nic.ipsec_sa_cache_entries"] != pytest.approx(full["nic.ipsec_sa_cache_entries"], rel=1e-3)
    assert refit["nic.crypto_pps"] != pytest.approx(full["nic.crypto_pps"], rel=1e-3)
    # the CPU parameters do not depend on that point: unchanged
    assert refit["host.ipsec_sw_cycles_per_packet"] == pytest.approx(full["host.ipsec_sw_cycles_per_packet"])
    # and the refit is the same code run on the data without the group, nothing else
    direct = calibrate(without(meas, held), load_parameter_set())
    assert {e.parameter: e.value for e in direct.estimates} == refit
    assert len(without(meas, held).state_scaling) == len(meas.state_scaling) - 1


def test_out_of_sample_error_matches_the_leave_one_out_closed_form(tmp_path):
    """For a least-squares slope through the origin, the held-out residual is the in-sample residual
    divided by (1 - h), h = x_i^2 / sum x^2 (the leverage): an independent check of the refits."""
    meas = _ipsec_sw_set(tmp_path, outlier=1.15)
    base = load_parameter_set()
    cv = cross_validate(meas, base)
    sw = cv.points[cv.points["variant"] == "ipsec-sw"]
    fitted = cv.full.parameters.costs()
    runs = [r for r in meas.runs if r.variant == "ipsec-sw"]
    x = _exposure(runs, fitted, "host.ipsec_sw_cycles_per_packet")
    leverage = x**2 / (x**2).sum()
    expected = sw["in_sample_error"].to_numpy() / (1 - leverage)
    np.testing.assert_allclose(sw["out_of_sample_error"].to_numpy(), expected, rtol=1e-6)
    # the outlier is predicted worse when it is not seen, and the others are no better out of sample
    assert abs(sw["out_of_sample_error"].iloc[-1]) > abs(sw["in_sample_error"].iloc[-1]) * 1.2
    assert (sw["out_of_sample_error"].abs() >= sw["in_sample_error"].abs() - 1e-12).all()
    assert cv.summary["out_of_sample_error_mean"] > cv.summary["in_sample_error_mean"]


def test_exact_synthetic_truth_has_no_error_in_or_out_of_sample(tmp_path):
    cv = cross_validate(_ipsec_sw_set(tmp_path), load_parameter_set())
    assert cv.summary["in_sample_error_max"] < 1e-9
    assert cv.summary["out_of_sample_error_max"] < 1e-9


def test_a_group_holds_repeats_out_together(tmp_path):
    lines = ["[platform]", "clock_ghz = 2.0"]
    for gbps, cores, group in ((10, 1.0, "a"), (10, 1.1, "a"), (20, 2.0, ""), (30, 3.3, "")):
        lines += ["[[throughput]]", 'variant = "plaintext"', f"gbps = {gbps}", f"cpu_cores = {cores}"]
        lines += [f'group = "{group}"'] if group else []
    meas = load_measurements(_folder(tmp_path, lines))
    assert [r.group for r in meas.runs] == ["a", "a", "throughput[2]", "throughput[3]"]
    cv = cross_validate(meas, load_parameter_set())
    assert sorted(cv.refits) == ["a", "throughput[2]", "throughput[3]"]
    # both repeats are predicted by the one refit that saw neither
    a = cv.points[cv.points["group"] == "a"]
    assert a["predicted_out_of_sample"].nunique() == 1
    assert cv.refits["a"].estimates[0].points == 2


def test_a_parameter_left_with_no_data_is_named(tmp_path):
    lines = ["[platform]", "clock_ghz = 2.0", "[[throughput]]", 'variant = "plaintext"', "gbps = 10",
             "cpu_cores = 1", "[[throughput]]", 'variant = "plaintext"', "gbps = 20", "cpu_cores = 2",
             "[[throughput]]", 'variant = "ipsec-sw"', "gbps = 5", "cpu_cores = 1"]
    cv = cross_validate(load_measurements(_folder(tmp_path, lines)), load_parameter_set())
    row = cv.points[cv.points["variant"] == "ipsec-sw"].iloc[0]
    assert row["refit_unconstrained"] == "host.ipsec_sw_cycles_per_packet"


def test_under_determined_set_is_flagged(tmp_path):
    """One run per parameter and three points for the cache's three: nothing left to check the fit with."""
    lines = ["[platform]", "clock_ghz = 2.0",
             "[[throughput]]", 'variant = "plaintext"', "gbps = 10", "cpu_cores = 1",
             "[[throughput]]", 'variant = "ipsec-sw"', "gbps = 5", "cpu_cores = 1"]
    for entries, gbps in ((1000, 180.0), (1500, 175.0), (2000, 150.0)):
        lines += ["[[state_scaling]]", 'variant = "ipsec-packet-offload"', f"entries = {entries}", f"gbps = {gbps}"]
    meas = load_measurements(_folder(tmp_path, lines))
    result = calibrate(meas, load_parameter_set())
    ident = identifiability(result, meas)
    assert ident.free_parameters == 5 and ident.effective_points == 5 and ident.under_determined
    status = dict(zip(ident.table["parameter"], ident.table["status"]))
    assert status["host.stack_cycles_per_packet"] == "no error estimate"  # one run, no residual
    assert status["host.ipsec_sw_cycles_per_packet"] == "no error estimate"
    assert status["host.clock_hz"] == "given"
    assert "host.stack_cycles_per_packet" in ident.flagged
    assert "host.psp_key_exchange_cycles" in ident.unconstrained and "nic.psp_tx_key_capacity" in ident.unconstrained
    # the written parameter set says so in the source, not as a plain measured value
    assert "no error estimate" in result.parameters.parameters["host.stack_cycles_per_packet"].source


def test_weak_estimate_is_flagged_on_the_published_set():
    """Packet offload's per-packet cost is a small difference of two noisy numbers (2 runs)."""
    meas = load_measurements(PUBLISHED)
    result = calibrate(meas, load_parameter_set())
    ident = identifiability(result, meas)
    row = ident.table.set_index("parameter").loc["host.ipsec_packet_offload_cycles_per_packet"]
    assert row["stderr"] > row["value"] / 3 and row["status"] == "weak"
    assert ident.table.set_index("parameter").loc["host.ipsec_sw_cycles_per_packet", "status"] == "identified"
    assert "WEAK" in result.parameters.parameters["host.ipsec_packet_offload_cycles_per_packet"].source
    assert not ident.under_determined


def test_validation_carries_propagated_errors():
    meas = load_measurements(PUBLISHED)
    params = calibrate(meas, load_parameter_set()).parameters
    table = validate(meas, params)
    state = table[table["kind"] == "state"]
    # past the cache cliff the cache parameters' errors show; before it only the engine rate counts, which has
    # no error estimate (one point): no error bar there
    assert (state["predicted_stderr"].iloc[1:] > 0).all() and state["predicted_stderr"].iloc[0] == 0
    # an uncalibrated set carries no standard errors: no error bars
    assert (validate(meas, load_parameter_set())["predicted_stderr"] == 0).all()
    # moving the miss cost by its standard error moves the cliff points by about the propagated error
    se = {e.parameter: e.stderr for e in calibrate(meas, load_parameter_set()).estimates}
    moved = validate(meas, params.with_overrides(
        {"nic.ipsec_sa_miss_cost": params.parameters["nic.ipsec_sa_miss_cost"].value + se["nic.ipsec_sa_miss_cost"]}))
    last = state.index[-1]
    assert abs(moved.loc[last, "predicted"] - state.loc[last, "predicted"]) <= state.loc[last, "predicted_stderr"]


def test_cli_cross_validate_writes_table_and_figure(tmp_path, capsys):
    out = tmp_path / "cv"
    assert main(["calibrate", str(PUBLISHED), "--cross-validate", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "out_of_sample_error_mean" in printed and "out_of_sample_error_max" in printed
    assert "WEAK" in printed
    assert sorted(p.name for p in out.iterdir()) == ["cross_validation.csv", "identifiability.csv", "params.toml",
                                                     "validation.png"]
    rows = list(csv.DictReader((out / "cross_validation.csv").open()))
    assert len(rows) == 18
    errors = [abs(float(r["out_of_sample_error"])) for r in rows]
    assert max(errors) < 0.15 and np.mean(errors) > np.mean([abs(float(r["in_sample_error"])) for r in rows])
    assert load_parameter_set(out / "params.toml").parameters["host.ipsec_sw_cycles_per_packet"].kind == "measured"


def test_cli_cross_validate_refuses_a_file_as_folder(tmp_path, capsys):
    target = tmp_path / "p.toml"
    target.write_text("x")
    assert main(["calibrate", str(PUBLISHED), "--cross-validate", "-o", str(target)]) == 2
    assert "not a folder" in capsys.readouterr().err and target.read_text() == "x"


def test_without_keeps_other_groups(tmp_path):
    meas = load_measurements(PUBLISHED)
    smaller = without(meas, "throughput[0]")
    assert len(smaller.runs) == len(meas.runs) - 1 and smaller.state_scaling == meas.state_scaling
    assert replace(meas) == meas


def test_cli_cross_validate_bad_measurements_write_nothing(tmp_path, capsys):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "measurements.toml").write_text("[platform]\n")
    out = tmp_path / "cv"
    assert main(["calibrate", str(tmp_path / "m"), "--cross-validate", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "platform.clock_ghz" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
