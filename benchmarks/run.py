"""Run every benchmark in this folder and report ratios measured in one run.

Machines here are shared and noisy, so each benchmark compares pspsim with
a bare baseline in the same process and reports the ratio, never an
absolute time alone.  Exit status 1 if a ratio misses its target.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).parent


def main() -> int:
    failed = []
    for path in sorted(HERE.glob("bench_*.py")):
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        result = module.run()
        ok = result["ratio"] >= result["target"] and result.get("checks_ok", 1.0) == 1.0
        status = "ok" if ok else "BELOW TARGET"
        details = ", ".join(f"{k} {v:,.2f}" for k, v in result.items() if k not in ("ratio", "target", "checks_ok"))
        print(f"{path.stem}: ratio {result['ratio']:.2f} (target >= {result['target']}) {status}; {details}")
        if status != "ok":
            failed.append(path.stem)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
