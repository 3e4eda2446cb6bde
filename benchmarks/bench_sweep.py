"""Sweep speed: the same 16 runs one after another and on 2 worker processes.

1. A 16-run sweep (8 rotation periods x 2 replications, PSP, 40 hosts, three
   simulated hours, about 2 s a run) in this process, then through a
   2-process pool (start-up included).  Ratio: serial wall time / pool wall
   time.  Target >= 1.6 on 2 idle cores (2 is the ceiling).  Also the CPU
   seconds per wall second of this process (serial) and of the workers
   (pool): 1 and 2 when the cores were theirs.  Linux's autogroup scheduler
   gives one session one share of a busy machine however many processes it
   runs, so there the ratio falls towards 1; the workers' CPU against the
   serial CPU (``pool_cpu_per_serial_cpu``, 1 = no cost to running in
   parallel) holds on any machine.
2. Dask overhead per run: 32 tiny runs on a LocalCluster of one worker
   process against the same runs in this process (alternated, best of 3);
   (Dask - serial) / runs is what Dask adds to each run (transfer of the
   task and its tables, scheduling).  The cluster's start-up is reported on
   its own.
The datasets are compared byte for byte (checks_ok).
"""

from __future__ import annotations

import copy
import os
import resource
import tempfile
import time
from pathlib import Path

from pspsim.study.executors import process_pool
from pspsim.study.sweep import sweep_from_dict
from pspsim.study.sweep_runner import run_sweep

TARGET = 1.6
BASE = {
    "run": {"name": "bench", "seed": 1, "duration": "3h", "window": "60s", "variants": ["psp"]},
    "fleet": {"racks": 8, "hosts_per_rack": 5},
    "workload": {"connections_per_host": {"kind": "fixed", "mean": 200}, "peers_per_host": 8,
                 "connection_lifetime": "20min"},
}
TINY = copy.deepcopy(BASE) | {"run": BASE["run"] | {"duration": "10min"},
                              "fleet": {"racks": 2, "hosts_per_rack": 3},
                              "workload": BASE["workload"] | {"connections_per_host": {"mean": 10},
                                                              "peers_per_host": 2}}


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _timed(sweep, folder: Path, executor=None) -> float:
    start = time.perf_counter()
    run_sweep(sweep, folder, executor=executor)
    return time.perf_counter() - start


def run() -> dict[str, float]:
    from dask.distributed import Client, LocalCluster

    periods = ["4min", "5min", "6min", "8min", "10min", "15min", "20min", "30min"]
    sweep = sweep_from_dict(BASE, {"replications": 2, "grid": {"keys.psp_rotation_period": periods}}, "bench")
    tiny = sweep_from_dict(TINY, {"replications": 4, "grid": {"keys.psp_rotation_period": periods}}, "tiny")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        own = resource.getrusage(resource.RUSAGE_SELF)
        serial = _timed(sweep, root / "serial")
        after = resource.getrusage(resource.RUSAGE_SELF)
        serial_cpu = after.ru_utime + after.ru_stime - own.ru_utime - own.ru_stime
        # the workers' CPU: what the pool's children add (``make bench`` runs this after benchmarks
        # whose children, fleet-10k's among them, are counted in RUSAGE_CHILDREN already)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        with process_pool(2) as pool:
            start = time.perf_counter()
            run_sweep(sweep, root / "pool", executor=pool)
            pooled = time.perf_counter() - start
        reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
        workers_cpu = reaped.ru_utime + reaped.ru_stime - before.ru_utime - before.ru_stime
        start = time.perf_counter()
        with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            started = time.perf_counter() - start
            client.submit(len, [1]).result()  # the worker is up
            serials, dasks = [], []
            for i in range(3):  # alternated, best of 3: the machine's other load moves both alike
                serials.append(_timed(tiny, root / f"tiny-serial-{i}"))
                dasks.append(_timed(tiny, root / f"tiny-dask-{i}", client))
        tiny_serial, tiny_dask = min(serials), min(dasks)
        same = _files(root / "serial") == _files(root / "pool") and \
            all(_files(root / "tiny-serial-0") == _files(root / f"tiny-{kind}-{i}")
                for kind in ("serial", "dask") for i in range(3))
    return {
        "ratio": serial / pooled,
        "target": TARGET,
        "runs": 16.0,
        "serial_s": serial,
        "pool_2_workers_s": pooled,
        # CPU seconds the workers used over the pool's wall time: 2 when both cores were theirs
        "pool_cpu_concurrency": workers_cpu / pooled,
        "serial_cpu_concurrency": serial_cpu / serial,  # 1 when a core was this process's
        # the workers' CPU seconds per run against this process's: what parallel running costs in CPU
        "pool_cpu_per_serial_cpu": workers_cpu / serial_cpu,
        "dask_overhead_per_run_ms": 1000 * (tiny_dask - tiny_serial) / 32,
        "tiny_run_serial_ms": 1000 * tiny_serial / 32,
        "dask_localcluster_start_s": started,
        "load_average_1min": os.getloadavg()[0],  # other work on the machine: the ratio needs 2 idle cores
        "checks_ok": float(same),
    }


if __name__ == "__main__":
    for key, value in run().items():
        print(f"{key}: {value:,.3f}")
