"""What users touch: scenarios, the runner, sweeps, results."""

from pspsim.study.sweep import read_sweep
from pspsim.study.sweep_runner import load_sweep, run_sweep

__all__ = ["load_sweep", "read_sweep", "run_sweep"]
