"""Where runs execute: every backend is a ``concurrent.futures.Executor``.

- :class:`SerialExecutor`: in this process, one run after another (the
  reference the others are compared with, and the notebook default).
- :func:`process_pool`: a ``ProcessPoolExecutor`` with the ``spawn`` start
  method (no forked state: safe from notebooks, threads and macOS).
- :func:`dask_executor`: a ``dask.distributed.Client`` on a new
  ``LocalCluster`` (``"local"``) or on a running scheduler (``"tcp://..."``),
  used through ``Client.get_executor()``, which is a real
  ``concurrent.futures.Executor`` returning standard futures.

Distribution, scheduling and worker failures are the executor's business;
pspsim submits self-contained tasks and collects their results.  Requires the
``sweep`` extra for Dask (``pip install 'pspsim[sweep]'``).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any

from pspsim.study.allocator import keep_freed_memory
from pspsim.wire.errors import ConfigError


class SerialExecutor(Executor):
    """Runs each submitted call at once, in this process."""

    def submit(self, fn, /, *args, **kwargs) -> Future:  # type: ignore[override]
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the caller through the future, as any executor does
            future.set_exception(exc)
        return future


def default_jobs() -> int:
    """All the cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def process_pool(jobs: int | None = None) -> ProcessPoolExecutor:
    """``jobs`` worker processes (default: all cores), started with ``spawn``;
    each exits when this process dies, even by SIGKILL (no orphaned workers)."""
    return ProcessPoolExecutor(max_workers=jobs or default_jobs(), mp_context=multiprocessing.get_context("spawn"),
                               initializer=_exit_with_parent, initargs=(os.getpid(),))


def _exit_with_parent(parent: int) -> None:
    """Runs in each pool worker: a daemon thread ends the worker once ``parent`` is gone (and the
    worker keeps its freed memory, as the ``pspsim`` command does: :mod:`pspsim.study.allocator`)."""
    keep_freed_memory()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="pspsim-parent-watch", daemon=True).start()


@contextmanager
def dask_executor(address: str, workers: int | None = None) -> Iterator[Executor]:
    """A Dask client's executor: ``"local"`` starts a LocalCluster of ``workers``
    single-threaded worker processes; anything else is a scheduler address."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise ConfigError("--dask needs Dask distributed: pip install 'pspsim[sweep]'") from None
    if address == "local":
        with LocalCluster(n_workers=workers or default_jobs(), threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            client.register_worker_callbacks(keep_freed_memory)  # as the pool's workers do
            yield client.get_executor(pure=False)
    else:
        try:
            client = Client(address, timeout="20s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise ConfigError(f"--dask {address}: cannot reach the scheduler ({exc})") from None
        with client:
            yield client.get_executor(pure=False)


@contextmanager
def open_executor(jobs: int | None = None, dask: str | None = None) -> Iterator[Executor]:
    """The executor the command line asks for: ``-j 1`` runs in this process,
    ``-j N`` (default: all cores) in a process pool, ``--dask`` on Dask."""
    if dask is not None:
        with dask_executor(dask, jobs) as executor:
            yield executor
    elif jobs == 1:
        yield SerialExecutor()
    else:
        with process_pool(jobs) as pool:
            yield pool


def as_executor(executor: Any) -> Executor:
    """Accept an Executor or a ``dask.distributed.Client`` (a notebook's ``Client()``)."""
    if executor is None:
        return SerialExecutor()
    if isinstance(executor, Executor):
        return executor
    if hasattr(executor, "get_executor"):
        return executor.get_executor(pure=False)
    raise TypeError(f"not an executor: {executor!r} (give a concurrent.futures.Executor or a dask Client)")
