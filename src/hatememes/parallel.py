"""Pure-Python work spread over the machine's cores, in forked processes.

    figures = run_forked([functools.partial(plot, run) for run in runs])   # one result per call, in order

The demo's training stages keep both cores of a small machine busy through torch's threads; a few stages are
plain Python and use one: drawing the synthetic memes (`fetch`) and the pretraining corpus (`pretrain`), and
the report's matplotlib figures. `run_forked` runs such independent calls in up to one process per core. The
processes are forked from the caller, so a call may be a closure over anything the caller holds (nothing is
pickled on the way in; results come back pickled), and the outputs are the same bytes whatever the number of
workers. Without `fork` (Windows, macOS's default) or with one core, the calls run in the caller, in order.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")

_CALLS: Sequence[Callable[[], object]] = ()  # the calls the forked workers inherit, read by index


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, which `taskset` or a container's cpuset limit)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _call(index: int) -> object:
    return _CALLS[index]()


def run_forked(calls: Sequence[Callable[[], T]], workers: int | None = None) -> list[T]:
    """Each call's result, in the calls' order, from up to `workers` forked processes (default: one per
    available core). An exception raised by a call is raised here, with the worker's traceback as its cause.
    The calls must not depend on each other: they run in any order, and what one changes in memory the others
    and the caller do not see (only what they write to files)."""
    global _CALLS
    workers = min(len(calls), workers or available_cores())
    if workers <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        return [call() for call in calls]
    _CALLS = calls
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            return pool.map(_call, range(len(calls)), chunksize=1)
    finally:
        _CALLS = ()
