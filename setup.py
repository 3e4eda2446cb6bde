"""Builds the optional compiled fast path; pspsim works without it.

Everything else about the package is in pyproject.toml.  If Cython or a C
compiler is missing, or the build fails, the install goes on and pspsim
uses its pure-Python implementation (same bytes, slower).
"""

import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # no compiler, no headers: fall back to pure Python
            print(f"pspsim: compiled fast path not built ({exc}); using pure Python", file=sys.stderr)

    def build_extension(self, ext) -> None:
        if self.compiler.compiler_type == "unix":
            # no fused multiply-add contraction: the compiled loops must round as numpy does (GCC contracts
            # by default where FMA is in the base instruction set, e.g. aarch64, or with -march=native)
            ext.extra_compile_args = [*ext.extra_compile_args, "-ffp-contract=off"]
        try:
            super().build_extension(ext)
        except Exception as exc:
            print(f"pspsim: {ext.name} not built ({exc}); using pure Python", file=sys.stderr)


def extensions():
    try:
        from Cython.Build import cythonize
    except ImportError:
        print("pspsim: Cython not available; using pure Python", file=sys.stderr)
        return []
    sources = ["pspsim/wire/_psp_fast.pyx", "pspsim/wire/_psp_batch.pyx", "pspsim/wire/_esp_fast.pyx",
               "pspsim/model/_kernels.pyx", "pspsim/model/_sort.pyx", "pspsim/model/_che.pyx",
               "pspsim/model/_queues.pyx", "pspsim/model/_schedules.pyx"]
    return cythonize(sources, language_level=3, quiet=True)


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
