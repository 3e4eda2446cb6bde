"""``pspsim sweep``, ``pspsim sweep-report`` and ``pspsim run -j`` from the command
line: bad sweep files, a sweep killed with SIGKILL and resumed, the README's
sweep example as written."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from pspsim.cli.main import main
from pspsim.study import run_sweep

pytest.importorskip("dask.distributed")

ROOT = Path(__file__).resolve().parents[1]

SWEEP = """
[run]
name = "cli"
seed = 2
duration = "{duration}"
window = "2min"
variants = ["psp", "ipsec-sw"]
[fleet]
racks = 2
hosts_per_rack = {hosts_per_rack}
[workload]
connections_per_host = {{ kind = "fixed", mean = {connections} }}
peers_per_host = 2
connection_lifetime = "5min"
[sweep]
replications = {replications}
[sweep.grid]
"keys.psp_rotation_period" = ["2min", "5min", "10min"]
"""


def write(tmp_path: Path, text: str, name: str = "sweep.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def tiny(tmp_path: Path, **values) -> Path:
    fields = {"duration": "20min", "hosts_per_rack": 3, "connections": 20, "replications": 2} | values
    return write(tmp_path, SWEEP.format(**fields))


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("change, message", [
    (('"keys.psp_rotation_period"', '"keys.psp_rotaton_period"'),
     "sweep.grid: 'keys.psp_rotaton_period' is not a scenario field ('psp_rotaton_period' unknown)"),
    (('"10min"]', '"soon"]'), "point 2 (keys.psp_rotation_period = 'soon'): keys.psp_rotation_period: "
                              "'soon' is not a duration"),
    (('= ["2min", "5min", "10min"]', '= []'), "sweep.grid.keys.psp_rotation_period: must be a non-empty list"),
    (("replications = 2", "replications = 0"), "sweep.replications: must be a positive integer"),
    (("[sweep.grid]", "[sweep.grip]"), "sweep.grip: unknown key"),
    (("[sweep.grid]\n", '[sweep.sample]\nkind = "sobol"\nn = 10\n[sweep.sample.bounds]\n'),
     "sweep.sample.n: a Sobol sample needs a power of two"),
    (("[sweep]\n", '[sweep]\nbase = "nowhere.toml"\n'), "nowhere.toml: no such base scenario"),
    (('"keys.psp_rotation_period"', '"run.variants"'), "'run.variants' cannot be swept"),
])
def test_bad_sweep_file_is_one_line_exit_2_nothing_written(tmp_path, capsys, change, message):
    text = tiny(tmp_path).read_text()
    assert change[0] in text
    path = write(tmp_path, text.replace(*change, 1))
    assert main(["sweep", str(path), "-o", str(tmp_path / "never"), "-j", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pspsim: error: ") and message in err, err
    assert not (tmp_path / "never").exists()


def test_sweep_refuses_a_non_empty_folder_without_resume(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    assert main(["sweep", str(tiny(tmp_path)), "-o", str(tmp_path / "out"), "-q"]) == 2
    assert "not empty; add --resume" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["notes.txt"]


def _live_processes(group: int) -> list[int]:
    """Processes of process group ``group`` that are not zombies (Linux /proc)."""
    live = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            live.append(int(stat.parent.name))
    return live


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_sigkill_then_resume_gives_the_same_folder(tmp_path):
    path = tiny(tmp_path, duration="30min", hosts_per_rack=4, connections=60, replications=2)  # 12 runs
    reference = tmp_path / "reference"
    run_sweep(path, reference)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "pspsim", "sweep", str(path), "-o", str(out), "-j", "2", "-q"]
    proc = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while len(list((out / "runs").glob("*.parquet"))) < 3 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)  # the sweep's own process, mid-way
        proc.wait()
        deadline = time.time() + 20
        while _live_processes(proc.pid) and time.time() < deadline:
            time.sleep(0.1)
        assert not _live_processes(proc.pid), "worker processes outlived the killed sweep"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # its worker processes, if any outlived it
        except ProcessLookupError:
            pass
    finished = len(list((out / "runs").glob("*.parquet")))
    assert 3 <= finished < 12 and not (out / "summary.parquet").exists()
    done = subprocess.run(command + ["--resume"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert folder_bytes(out) == folder_bytes(reference)


def test_dask_local_from_the_command_line_and_report(tmp_path, capsys):
    path = tiny(tmp_path)
    assert main(["sweep", str(path), "-o", str(tmp_path / "serial"), "-j", "1", "-q"]) == 0
    assert main(["sweep", str(path), "-o", str(tmp_path / "dask"), "--dask", "local", "-j", "2", "-q"]) == 0
    assert folder_bytes(tmp_path / "dask") == folder_bytes(tmp_path / "serial")
    capsys.readouterr()
    png = tmp_path / "r.png"
    assert main(["sweep-report", str(tmp_path / "dask"), "--metric", "nic_entries_per_host_peak",
                 "--metric", "cores_mean", "-o", str(png)]) == 0
    out = capsys.readouterr().out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = pd.read_parquet(tmp_path / "dask" / "summary.parquet")
    assert len(summary) == 3 * 2 and "±" in out and "keys.psp_rotation_period" in out
    assert main(["sweep-report", str(tmp_path / "dask"), "--metric", "nope"]) == 2


def test_a_failed_run_sets_exit_status_1(tmp_path, capsys):
    text = tiny(tmp_path).read_text().replace('[sweep.grid]', '[sweep.grid]\n"costs.overrides.nic.cmd_psp_gen_spi_s" = [0]')
    assert main(["sweep", str(write(tmp_path, text)), "-o", str(tmp_path / "out"), "-j", "1", "-q"]) == 1
    assert "12 of 12 runs failed" in capsys.readouterr().err
    assert len(pd.read_csv(tmp_path / "out" / "failures.csv")) == 12


def test_run_in_parallel_gives_the_serial_bytes(tmp_path):
    text = tiny(tmp_path).read_text().split("[sweep]")[0].replace('window = "2min"', 'window = "2min"\nreplications = 2')
    path = write(tmp_path, text, "run.toml")
    assert main(["run", "-q", "--no-figure", str(path), "-o", str(tmp_path / "a")]) == 0
    assert main(["run", "-q", "--no-figure", "-j", "2", str(path), "-o", str(tmp_path / "b")]) == 0
    for name in ("summary.parquet", "timeseries.parquet"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert len(pd.read_parquet(tmp_path / "b" / "summary.parquet")) == 4


def _readme_section() -> str:
    text = (ROOT / "README.md").read_text()
    return text[text.index("## Sweeps"):].split("\n## ", 1)[0]


def test_readme_sweep_example_runs_as_written(tmp_path, monkeypatch, capsys):
    section = _readme_section()
    blocks = re.findall(r"```(\w+)\n(.*?)```", section, re.S)
    toml = [body for lang, body in blocks if lang == "toml"]
    shell = [body for lang, body in blocks if lang == "sh"][0]
    python = [body for lang, body in blocks if lang == "python" and "run_sweep" in body and "jobqueue" not in body][0]
    # the sweep file the README shows is the one shipped
    shipped = (ROOT / "experiments" / "fan-out" / "sweep.toml").read_text()
    assert toml[0] in shipped
    work = tmp_path / "repo"
    shutil.copytree(ROOT / "experiments", work / "experiments")
    commands = [shlex.split(line) for line in shell.splitlines() if line.startswith("pspsim ")]
    assert len(commands) == 2
    monkeypatch.chdir(work)
    for words in commands:  # the pspsim command's own entry point, in this process
        assert main(words[1:]) == 0, capsys.readouterr().err
    assert (work / "results" / "scratch" / "fan-out" / "report.png").exists()
    assert len(pd.read_parquet(work / "results" / "scratch" / "fan-out" / "summary.parquet")) == 4 * 2
    done = subprocess.run([sys.executable, "-c", python], cwd=work, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
