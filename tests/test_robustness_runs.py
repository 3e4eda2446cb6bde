"""Runs: results replaced whole or not at all, leftovers repaired, SIGTERM, exit statuses,
nonce warnings, key files, scenario values refused, and runs too big to start."""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pspsim.cli.main import main
from pspsim.model.workload import generate_workload
from pspsim.scenario import load_scenario, scenario_from_dict
from pspsim.study.budget import BudgetExceeded, check_budget, estimate
from pspsim.study.runner import recover_results_folder, run_scenario, write_results
from pspsim.wire import read_pcap
from tests.robust_helpers import ESP_KEY, TINY_SCENARIO, make_workspace, snapshot
from tests.test_robustness_cli import assert_one_line_error, assert_refused_untouched

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def tiny_results():
    return run_scenario(scenario_from_dict(__import__("tomllib").loads(TINY_SCENARIO)))


def test_leftovers_of_a_killed_swap_are_repaired(tmp_path, tiny_results):
    out = tmp_path / "r"
    write_results(tiny_results, out, figure=False)
    earlier = snapshot(out)
    # killed between the two renames: DIR gone, the earlier results in .DIR.old, the new ones in .DIR.xxxxxxxx
    out.rename(tmp_path / ".r.old")
    (tmp_path / ".r.k3j9x_2a").mkdir()
    (tmp_path / ".r.k3j9x_2a" / "timeseries.parquet").write_bytes(b"half")
    done = recover_results_folder(out)
    assert snapshot(out) == earlier and sorted(p.name for p in tmp_path.iterdir()) == ["r"]
    assert len(done) == 2
    # killed after the swap: .DIR.old beside the new DIR is removed
    (tmp_path / ".r.old").mkdir()
    recover_results_folder(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_a_folder_still_being_written_is_left_alone(tmp_path):
    live = tmp_path / ".r.abcdefgh"
    live.mkdir()
    (live / ".pspsim-writing").write_text(str(os.getpid()))  # this process: alive
    other = tmp_path / ".other.abcdefgh"  # another results folder's name
    other.mkdir()
    recover_results_folder(tmp_path / "r")
    assert live.exists() and other.exists()


def test_the_next_run_repairs_leftovers(tmp_path, tiny_results):
    out = tmp_path / "r"
    write_results(tiny_results, out, figure=False)
    out.rename(tmp_path / ".r.old")
    write_results(tiny_results, out, figure=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]
    assert (out / "manifest.json").exists()


def test_a_failed_write_keeps_the_earlier_results(tmp_path, tiny_results):
    out = tmp_path / "r"
    write_results(tiny_results, out, figure=False)
    before = snapshot(tmp_path)
    broken = type(tiny_results)(tiny_results.timeseries, tiny_results.summary,
                                tiny_results.manifest | {"wall_time_s": float("nan")})
    with pytest.raises(ValueError):
        write_results(broken, out, figure=False)  # NaN is not JSON: refused, not written as 'NaN'
    assert snapshot(tmp_path) == before


def test_sigterm_is_one_line_and_keeps_the_earlier_results(tmp_path):
    scenario = tmp_path / "s.toml"
    scenario.write_text(TINY_SCENARIO.replace('duration = "5min"', 'duration = "2h"', 1)
                        .replace('variants = ["psp", "plaintext"]',
                                 'variants = ["psp", "plaintext", "ipsec-sw", "tls-user"]')
                        .replace("mean = 20 }", "mean = 3000 }"))
    out = tmp_path / "r"
    out.mkdir()
    (out / "manifest.json").write_text("{}\n")
    before = snapshot(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "pspsim", "run", "--no-figure", str(scenario), "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    first = proc.stderr.readline()  # the first variant finished: the run is under way
    assert first.startswith("  psp"), first
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert err.splitlines() == ["pspsim: error: terminated (SIGTERM); nothing was written"] or \
        (err.splitlines()[-1].startswith("pspsim: error: terminated") and
         all(line.startswith("  ") for line in err.splitlines()[:-1]))
    assert snapshot(tmp_path) == before


def test_iv_space_running_out_exits_1(tmp_path, capsys):
    ws = make_workspace(tmp_path)
    out = tmp_path / "e.pcap"
    status = main(["psp", "encrypt", "--cfg", str(ws.enc_cfg), "--first-iv", str(2**64 - 2), str(ws.clear_pcap),
                   str(out)])
    captured = capsys.readouterr()
    assert status == 1
    lines = captured.err.splitlines()
    assert lines[:2] == ["packet 2: skipped: IV space of this SA is exhausted: rekey",
                         "packet 3: skipped: IV space of this SA is exhausted: rekey"]
    assert lines[2].startswith("pspsim: error: 2 packets not encrypted") and len(lines) == 3
    assert len(read_pcap(out)[1]) == 2


def test_esp_sequence_space_running_out_exits_1_and_one_past_the_end_is_refused(tmp_path, capsys):
    ws = make_workspace(tmp_path)
    out = tmp_path / "e.pcap"
    argv = ["esp", "encrypt", "--spi", "1234", "--key", ESP_KEY.hex()]
    assert main([*argv, "--seq", str(2**32 - 1), str(ws.clear_pcap), str(out)]) == 1
    assert "pspsim: error: 3 packets not encrypted" in capsys.readouterr().err
    assert len(read_pcap(out)[1]) == 1
    before = snapshot(tmp_path)
    line = assert_one_line_error(capsys, main([*argv, "--seq", str(2**32), str(ws.clear_pcap), str(out)]))
    assert "--seq must be in 1..4294967295" in line
    assert snapshot(tmp_path) == before
    assert main([*argv, "--esn", "--seq", str(2**32), str(ws.clear_pcap), str(out)]) == 0


def _payloads(path: Path) -> list[bytes]:
    return [r.data[14 + 20 + 8 + 16 :] for r in read_pcap(path)[1]]


def test_default_first_iv_warns_and_names_the_next_iv(tmp_path, capsys):
    ws = make_workspace(tmp_path)
    a, b, c = tmp_path / "a.pcap", tmp_path / "b.pcap", tmp_path / "c.pcap"
    assert main(["psp", "encrypt", "--cfg", str(ws.enc_cfg), str(ws.clear_pcap), str(a)]) == 0
    warning = capsys.readouterr().err.splitlines()
    assert len(warning) == 1 and warning[0].startswith("pspsim: warning:") and "--first-iv 5" in warning[0]
    # the hazard it warns about: same cfg, same IVs: the XOR of the ciphertexts is the XOR of the plaintexts
    assert main(["psp", "encrypt", "--cfg", str(ws.enc_cfg), str(ws.clear_pcap), str(b)]) == 0
    assert _payloads(a) == _payloads(b)  # same plaintext, same nonce: identical ciphertext
    assert main(["psp", "encrypt", "--cfg", str(ws.enc_cfg), "--first-iv", "5", str(ws.clear_pcap), str(c)]) == 0
    assert capsys.readouterr().err.count("warning") == 1  # only b warned: the explicit --first-iv run did not
    assert not set(_payloads(a)) & set(_payloads(c))


def test_key_files_and_environment_give_the_same_bytes_as_the_command_line(tmp_path, capsys, monkeypatch):
    ws = make_workspace(tmp_path)
    outs = []
    monkeypatch.setenv("PSPSIM_TEST_ESP_KEY", ESP_KEY.hex())
    for source in (["--key", ESP_KEY.hex()], ["--key-file", str(ws.esp_key_file)],
                   ["--key-file", "env:PSPSIM_TEST_ESP_KEY"]):
        outs.append(tmp_path / f"e{len(outs)}.pcap")
        assert main(["esp", "encrypt", "--spi", "1234", *source, "--seq", "1", str(ws.clear_pcap), str(outs[-1])]) == 0
    assert outs[0].read_bytes() == outs[1].read_bytes() == outs[2].read_bytes()
    keys = ws.master_key_file.read_text().split()
    capsys.readouterr()
    assert main(["psp", "derive-key", "--master-key", keys[0], "--master-key", keys[1], "--spi", "9A345678"]) == 0
    direct = capsys.readouterr().out
    assert main(["psp", "derive-key", "--master-key-file", str(ws.master_key_file), "--spi", "9A345678"]) == 0
    assert capsys.readouterr().out == direct
    line = assert_one_line_error(capsys, main(["esp", "encrypt", "--spi", "1", "--key-file", "env:PSPSIM_UNSET_X",
                                               str(ws.clear_pcap), str(tmp_path / "x.pcap")]))
    assert "PSPSIM_UNSET_X" in line


def _refused(tmp_path, capsys, change: tuple[str, str]) -> str:
    """Run the tiny scenario with one text change: the one-line refusal, nothing written."""
    scenario = tmp_path / "s.toml"
    scenario.write_text(TINY_SCENARIO.replace(*change))
    return assert_refused_untouched(capsys, tmp_path, ["run", str(scenario), "-o", str(tmp_path / "r")])


@pytest.mark.parametrize("change, message", [
    (('duration = "5min"', "duration = inf"), "run.duration: a duration must be a finite number"),
    (('duration = "5min"', 'duration = "1e400s"'), "run.duration: a duration must be a finite number"),
    (("racks = 2", "racks = 2\nhost_link_gbps = nan"), "fleet.host_link_gbps: Input should be a finite number"),
    (('name = "tiny"', 'name = "../escape"'), "run.name: '../escape' is not a plain name"),
    (('name = "tiny"', 'name = "/tmp/abs"'), "run.name: '/tmp/abs' is not a plain name"),
    (('name = "tiny"', 'name = ".hidden"'), "is not a plain name"),
    (("racks = 2\nhosts_per_rack = 2", "racks = 1\nhosts_per_rack = 1"), "fleet: one host has no peer"),
    (("[packets]", '[costs.overrides]\n"nic.command_latency_s" = nan\n[packets]'), "Input should be a finite number"),
])
def test_bad_scenario_values_are_refused(tmp_path, capsys, change, message):
    assert message in _refused(tmp_path, capsys, change)


def test_nan_override_is_refused_through_the_python_api_too():
    from pspsim.costs.params import load_parameter_set
    from pspsim.wire.errors import ConfigError

    for bad in (float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="non-negative number"):
            load_parameter_set().with_overrides({"nic.command_latency_s": bad})


@pytest.mark.parametrize("change, setting", [
    (('window = "60s"', "window = 1e-9"), "run.window"),
    (("racks = 2", "racks = 1000000000"), "fleet.racks"),
    (("mean = 20 }", "mean = 1e12 }"), "connections_per_host"),
])
def test_runs_that_cannot_fit_are_refused_before_they_start(tmp_path, capsys, change, setting):
    line = _refused(tmp_path, capsys, change)
    assert "this run would need" in line and setting in line and "--force" in line


def test_jobs_that_would_not_fit_in_memory_are_lowered_not_refused(tmp_path, capsys, monkeypatch):
    """-j N holds N variant runs in memory at once: with room for one run but not two, the run
    goes on with one worker and says so; with room for none it is refused."""
    from pspsim.study import budget

    sc = scenario_from_dict(__import__("tomllib").loads(TINY_SCENARIO))
    one, two = estimate(sc, jobs=1), estimate(sc, jobs=2)
    assert two.memory_bytes > 1.9 * (one.memory_bytes - budget.BASE_BYTES)  # two runs' worth
    assert two.seconds < one.seconds  # and half the rounds
    monkeypatch.setattr(budget, "available_memory", lambda: (one.memory_bytes + two.memory_bytes) / 2)
    assert budget.jobs_that_fit(sc, 2) == 1
    scenario = tmp_path / "s.toml"
    scenario.write_text(TINY_SCENARIO)
    assert main(["run", str(scenario), "-j", "2", "-q", "--no-figure", "-o", str(tmp_path / "r")]) == 0
    assert "-j 2 lowered to -j 1" in capsys.readouterr().err
    assert (tmp_path / "r" / "summary.parquet").exists()
    monkeypatch.setattr(budget, "available_memory", lambda: one.memory_bytes / 2)
    line = assert_one_line_error(capsys, main(["run", str(scenario), "-j", "2", "-o", str(tmp_path / "r2")]))
    assert "this run would need" in line


def test_run_uses_every_core_by_default_only_for_long_runs(monkeypatch):
    from pspsim.cli import run_command
    from pspsim.study import budget, executors

    sc = scenario_from_dict(__import__("tomllib").loads(TINY_SCENARIO))
    monkeypatch.setattr(executors, "default_jobs", lambda: 2)
    assert run_command.check_budget(sc, force=False, jobs=None) == 1  # seconds: workers would cost more
    slow = estimate(sc)
    monkeypatch.setattr(budget, "estimate", lambda scenario, packets=False, jobs=1: budget.Estimate(
        slow.connections, slow.windows, slow.runs, 0.0, slow.memory_bytes * jobs, 10 * run_command.AUTO_PARALLEL_S))
    assert run_command.check_budget(sc, force=False, jobs=None) == 2
    monkeypatch.setattr(budget, "available_memory", lambda: 1.5 * slow.memory_bytes)  # room for one run only
    assert run_command.check_budget(sc, force=False, jobs=None) == 1


def test_psp_rekey_waves_count_in_the_estimate_only_with_psp(monkeypatch):
    """Without PSP, no re-key term; with it, a shorter rotation costs more, and a run whose time
    goes to re-keys is refused naming the rotation period (the counts themselves are checked
    against the model in the test below)."""
    from pspsim.study import budget

    data = __import__("tomllib").loads(TINY_SCENARIO)  # 4 hosts x 20 = 80 live connections, 5 min, 60 s windows

    def with_keys(period, variants=("psp", "plaintext"), run=None, workload=None):
        return scenario_from_dict(data | {"run": data["run"] | {"variants": list(variants)} | (run or {}),
                                          "workload": data["workload"] | (workload or {}),
                                          "keys": {"psp_rotation_period": period}})
    assert budget.psp_rekeys(with_keys("2min", ("plaintext", "ipsec-sw"))) == (0.0, 0.0)
    fast, slow = estimate(with_keys("2min")), estimate(with_keys("24h"))
    assert fast.seconds > slow.seconds and fast.memory_bytes > slow.memory_bytes
    without = estimate(with_keys("2min", ("plaintext",)))
    assert without.rekeys == 0 and estimate(with_keys("24h", ("plaintext",))).seconds == without.seconds
    # 4 M live connections re-keyed every minute for 30 days: ~96 h of re-keys, ~1 min of the rest
    monkeypatch.setattr(budget, "available_memory", lambda: float("inf"))
    month = with_keys("60s", ("psp",), run={"duration": "30d"},
                      workload={"connections_per_host": {"kind": "fixed", "mean": 1e6}, "connection_lifetime": "1000d"})
    with pytest.raises(BudgetExceeded, match=r"about .* h allowed.*change keys\.psp_rotation_period"):
        check_budget(month)


@pytest.mark.parametrize("schedule, gap", [("staggered", "20s"), ("synchronized", "20s"), ("rack-waves", "20s"),
                                           ("rack-waves", "3min")])
def test_the_rekey_estimate_bounds_what_the_model_asks(schedule, gap):
    """The estimate's re-keys against the fleet model's own count (in-place re-keys: one request per
    end per rotation of its NIC; connections that live through the run): the run's total is the
    estimate's, less the requests of the last rotations, served after the run ends; no window serves
    more than the estimate's busiest window (re-keys served in the rotation's window: no delay).  A
    rack wave whose gap is the period puts every rack at once, as synchronized rotations do."""
    from pspsim.study.budget import psp_rekeys
    from tests.sim_helpers import scenario, simulate

    sc = scenario(run={"duration": "30min", "window": "60s"},
                  fleet={"racks": 4, "hosts_per_rack": 5},
                  workload={"connection_lifetime": 0, "connections_per_host": {"kind": "fixed", "mean": 40}},
                  keys={"psp_rotation_period": "3min", "psp_rotation_schedule": schedule, "psp_rack_wave_gap": gap,
                        "psp_rekey": "in-place", "psp_rekey_delay": "0s", "psp_rekey_spread": "0s"})
    _, run, _ = simulate(sc, "psp")
    total, widest = psp_rekeys(sc)
    per_window = pd.DataFrame(run.rows)["psp_rekeys_in_window"]
    assert 0.85 * total <= run.totals["psp_rekeys"] <= total
    assert per_window.max() <= widest
    if schedule == "synchronized" or gap == "3min":  # every NIC at once: every connection's two ends in a window
        assert per_window.max() == widest == 2 * 20 * 40


def test_the_connection_estimate_matches_the_workload_generator(tmp_path):
    """The estimate's connection count against the generator's own draw (a different implementation)."""
    sc = scenario_from_dict({"run": {"duration": "2h"}, "fleet": {"racks": 2, "hosts_per_rack": 5},
                             "workload": {"connections_per_host": {"kind": "fixed", "mean": 500},
                                          "peers_per_host": 3, "connection_lifetime": "30min"}})
    drawn = len(generate_workload(sc, np.random.default_rng(0)))
    expected = estimate(sc).connections  # 10 x 500 x (1 + 4) = 25,000; Poisson arrivals: sd ~ 141
    assert expected == 25_000 and abs(drawn - expected) < 5 * 141


def test_budget_limits_and_the_shipped_experiments():
    sc = scenario_from_dict(__import__("tomllib").loads(TINY_SCENARIO))
    with pytest.raises(BudgetExceeded, match="h allowed"):
        check_budget(sc, max_hours=1e-9)
    # Every shipped experiment fits this kind of machine (24 GiB, 24 h), whatever else runs on it now.
    from pspsim.study.budget import MAX_HOURS, estimate

    for path in (ROOT / "experiments").glob("*.toml"):
        est = estimate(load_scenario(path), packets=True)
        assert est.memory_bytes < 24 * 2**30 and est.seconds < MAX_HOURS * 3600, path.name


def test_run_with_an_unwritable_output_fails_before_simulating(tmp_path, capsys):
    scenario = tmp_path / "s.toml"
    scenario.write_text(TINY_SCENARIO)
    line = assert_one_line_error(capsys, main(["run", str(scenario), "-o", "/proc/pspsim-x/r"]))
    assert "cannot write" in line or "cannot create" in line


def test_manifest_is_standard_json(tmp_path, tiny_results):
    out = write_results(tiny_results, tmp_path / "r", figure=False)
    json.loads((out / "manifest.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-standard {c}"))


def test_the_allocator_keeps_freed_memory_unless_told_not_to(monkeypatch):
    from pspsim.study.allocator import keep_freed_memory, refaults

    if not sys.platform.startswith("linux"):
        assert keep_freed_memory() is False
        return
    assert keep_freed_memory() is True  # glibc accepted every setting (each is within its documented range)
    # freed memory stays: a 20 MiB block freed and taken again faults in no new pages (glibc defaults: 5,119)
    assert refaults() < 100
    monkeypatch.setenv("PSPSIM_MALLOC", "default")
    assert keep_freed_memory() is False


def test_workers_of_the_pool_and_of_a_local_dask_cluster_keep_freed_memory():
    from pspsim.study.allocator import refaults
    from pspsim.study.executors import dask_executor, process_pool

    if not sys.platform.startswith("linux"):
        pytest.skip("glibc only")
    with process_pool(1) as pool:
        assert pool.submit(refaults).result() < 100
    with dask_executor("local", 1) as executor:
        assert executor.submit(refaults).result() < 100


_FREED_HEAP = """
    import numpy as np
    from pspsim.study.allocator import FreedMemoryWatch, free_heap_bytes, keep_freed_memory, release_freed_memory
    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096
    def free_blocks():
        blocks = [np.ones(1 << 19) for _ in range(100)]  # 100 x 4 MiB, written
        keep = np.ones(1 << 10)  # allocated last: the heap top is in use, so nothing is trimmed by itself
        del blocks
        return keep
    keep_freed_memory()
    base = rss()
"""


def _with_freed_heap(body: str) -> str:
    """What ``body`` prints, run in a fresh process with pspsim's allocator settings after
    ``_FREED_HEAP`` (``free_blocks()`` frees 400 MB in 4 MB blocks, kept in the heap: under the
    32 MiB mmap threshold)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc only")
    code = textwrap.dedent(_FREED_HEAP) + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


def test_memory_freed_by_an_earlier_run_goes_back_before_the_next():
    """``release_freed_memory`` (called at the start of every ``run_one``) hands back what the
    allocator kept: 400 MB freed stays resident until it is called, and leaves then; not while the
    process holds less than the bar it is given."""
    values = _with_freed_heap("""
        out = []
        for bar in ("resident", "free"):
            keep = free_blocks()
            kept, free = rss() - base, free_heap_bytes()
            assert release_freed_memory(if_resident_above=100e9) is False and rss() - base > kept - 20e6
            assert release_freed_memory(if_resident_above=100e9, if_free_above=2 * free) is False
            if bar == "resident":
                released = release_freed_memory(if_resident_above=rss() - 1)
            else:  # whatever the process holds, the heap keeps more than the bar free
                released = release_freed_memory(if_resident_above=100e9, if_free_above=free // 2)
            out += [kept, free, rss() - base, released]
        print(*out)
    """).split()
    for kept, free, after, released in (values[:4], values[4:]):
        assert int(kept) > 350e6 and int(free) > 350e6 and int(after) < 50e6 and released == "True"


def test_a_run_hands_freed_memory_back_as_it_goes():
    """``FreedMemoryWatch`` (called after every window of ``run_one``) checks every ``every``
    windows, and hands the heap's free memory back when more than its bar is kept: 400 MB freed
    stays resident through the first two windows and leaves at the third; with nothing freed
    since, the next checks release nothing."""
    seen = ast.literal_eval(_with_freed_heap("""
        keep = free_blocks()
        watch = FreedMemoryWatch(every=3, if_free_above=100e6)
        out = []
        for window in range(9):
            watch(60.0 * (window + 1))
            out.append((rss() - base, watch.trims))
        print(out)
    """))
    assert all(kept > 350e6 and trims == 0 for kept, trims in seen[:2])
    assert all(kept < 50e6 and trims == 1 for kept, trims in seen[2:])
