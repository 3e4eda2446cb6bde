"""Keep freed memory in the process: glibc ``malloc`` tuned for the fleet model's window loop.

What it addresses: every window allocates and frees numpy temporaries of a
few MB to a few hundred MB (a short-rotation window moves a million
connections).  By default glibc returns freed blocks above its mmap threshold
and the freed top of its heap to the kernel, and the next window takes them
back page by page, each page zeroed by the kernel on its first touch.  On
``experiments/short-rotation.toml`` (first 15 minutes) that was 11 s of
system time in a 53 s run; with the settings below it is 1.3 s, and the run
takes 35 s (peak RSS 1.43 -> 1.65 GB).

The settings (``mallopt``, glibc's documented knobs, the same as the
``MALLOC_*_`` environment variables): the mmap threshold at its largest
(32 MiB, so blocks up to it come from the heap and are reused), no trimming
of the heap top below 2 GiB, and 256 MiB of padding when the heap grows.
Peak memory rises by about 15 % in exchange (freed memory stays with the
process until it ends).

Applied by the ``pspsim`` command, in its worker processes and on the workers
of the Dask LocalCluster it starts; a library user calls
:func:`keep_freed_memory` once (on a Dask cluster of their own:
``client.register_worker_callbacks(keep_freed_memory)``) if they want it.  Linux with glibc only
(elsewhere it does nothing); ``PSPSIM_MALLOC=default`` in the environment
keeps glibc's defaults.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc <malloc.h>
SETTINGS = ((M_MMAP_THRESHOLD, 32 << 20), (M_TRIM_THRESHOLD, (2 << 30) - 1), (M_TOP_PAD, 256 << 20))


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL("libc.so.6")


def keep_freed_memory() -> bool:
    """Tune glibc malloc as the module docstring says; True if every setting took."""
    if not sys.platform.startswith("linux") or os.environ.get("PSPSIM_MALLOC") == "default":
        return False
    try:
        mallopt = _libc().mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in SETTINGS)


def resident_bytes() -> int:
    """This process's resident memory now (Linux; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def free_heap_bytes() -> int:
    """Bytes freed into glibc's heap and kept there (``mallinfo2().fordblks``, glibc 2.33 and later;
    0 where unknown)."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        info = _libc().mallinfo2
    except (OSError, AttributeError):  # not glibc, or older than 2.33
        return 0
    info.restype = _MallInfo2
    return int(info().fordblks)


def release_freed_memory(if_resident_above: float = 0.0, if_free_above: float | None = None) -> bool:
    """Hand the memory this process has freed back to the kernel now (glibc ``malloc_trim(0)``:
    the free top of the heap, and every whole free page inside it), if the process holds more than
    ``if_resident_above`` bytes, or keeps more than ``if_free_above`` bytes free in its heap.  True
    if glibc released something.

    Called before each variant run with a quarter of the machine's memory as the bar
    (:data:`TRIM_ABOVE_FRACTION`), so that a process running several big runs one after another
    peaks at the largest of them, not at the largest plus what the others left spread over the
    heap (fleet-10k in one process: 18.8 GB without it).  Below the bar a trim regardless of what
    is free is not worth its cost: the next run faults the released pages in again (fleet-1k, whose
    workers hold about 1.7 GB: 236 s of CPU with a trim before every run, 195 s without); above
    :data:`TRIM_FREE_BYTES` of free heap it is (see :class:`FreedMemoryWatch`)."""
    if not sys.platform.startswith("linux"):
        return False
    if resident_bytes() <= if_resident_above and (if_free_above is None or free_heap_bytes() <= if_free_above):
        return False
    try:
        trim = _libc().malloc_trim
    except (OSError, AttributeError):  # not glibc
        return False
    trim.argtypes, trim.restype = (ctypes.c_size_t,), ctypes.c_int
    return trim(0) == 1


TRIM_ABOVE_FRACTION = 0.25  # of the machine's memory: see release_freed_memory
# or this much freed and kept in the heap, between runs and every FreedMemoryWatch.every windows of one.
# fleet-10k: PSP ended its day with 1.2 GiB of it kept; with 0.96 GiB carried over (under a 1 GiB bar)
# the next run in the process, IPsec packet offload, peaked at 6.99 GiB against 6.84 for PSP
TRIM_FREE_BYTES = 256 << 20


class FreedMemoryWatch:
    """Called after each window of a run: every ``every`` windows, hands back the heap's free
    memory when more than ``if_free_above`` bytes of it are kept (:func:`release_freed_memory`).

    Within a run, freed small arrays (below the 32 MiB mapping threshold: calendar chunks, a
    window's temporaries) leave free pages scattered over the heap that later allocations do not
    all reuse: a fleet-10k PSP run kept 1.2 GiB of them by the end of its day, on top of its peak.
    A check costs a walk of glibc's free lists (``mallinfo2``), so it is made every ``every``
    windows only."""

    def __init__(self, every: int = 60, if_free_above: float = TRIM_FREE_BYTES) -> None:
        self.every, self.if_free_above, self.windows, self.trims = every, if_free_above, 0, 0

    def __call__(self, simulated: float) -> None:
        self.windows += 1
        if self.windows % self.every == 0 and release_freed_memory(if_resident_above=float("inf"),
                                                                    if_free_above=self.if_free_above):
            self.trims += 1


def physical_memory() -> float:
    """The machine's memory in bytes (inf where unknown)."""
    try:
        return float(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, AttributeError):
        return float("inf")


def refaults(size: int = 20 << 20) -> int:
    """Page faults taken when a block of ``size`` bytes is allocated, written and freed a second
    time: near 0 once :func:`keep_freed_memory` took, ``size`` / 4 KiB with glibc's defaults (a
    check of the setting in any process, a Dask worker's included)."""
    import resource

    libc = _libc()
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
    libc.free.argtypes = (ctypes.c_void_p,)
    counts = []
    for value in (1, 2):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = libc.malloc(size)
        if not block:
            raise MemoryError(size)
        ctypes.memset(block, value, size)
        libc.free(block)
        counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return counts[1]
