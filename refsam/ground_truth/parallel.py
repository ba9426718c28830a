"""Running the ground truth's per-point loop on a ``concurrent.futures.Executor``.

Every leave-one-out or finite-difference ground truth is a loop over training points j whose
iterations share nothing: one replay (or re-solve) per weight vector. `map_rows()` runs such a
loop serially, on an executor the caller passes, or on a process pool of ``n_jobs`` workers:

* ``executor=None, n_jobs=1`` (the default): in this process, in order.
* ``executor=`` any ``concurrent.futures.Executor`` — a ``ProcessPoolExecutor``, a
  ``ThreadPoolExecutor``, or a cluster's executor with the same interface (Dask's
  ``Client.get_executor()``, Ray's ``RayExecutor``): the caller owns it, refsam only submits to it.
* ``n_jobs > 1`` (``-1``: every CPU, as in joblib) without an executor: this process and a
  ``ProcessPoolExecutor`` of ``n_jobs − 1`` workers, created for the call and shut down after it. The
  count is capped at the CPUs this process may use (`available_cpus()`) and at the work: never more
  processes than chunks (``n_jobs=20`` for 4 chunks starts 3 workers; ``n_jobs=10**6`` no more than the
  CPUs).

The indices are cut into contiguous chunks of at most 64 points (at least 2 chunks where there are
that many points; `chunk_size()`), the same chunks whatever runs them: each task carries the problem
and the run once and advances its points' counterfactual runs together as one block
(`refsam.training.replay_final()`; re-solves: `refsam.ground_truth.resolve.resolve_block()`);
the rows come back in the order of the indices. The serial
path computes the same chunks in order, so every executor gives its results bit for bit (tested).
The pool that ``n_jobs`` makes receives the shared arguments (problem, run, test set) once per worker,
through its initializer, and the calling process computes chunks too (from the last one back, while
the pool works from the first); a caller's executor receives the arguments with every task (refsam
cannot know what a cluster's workers already hold).
Tasks and their arguments must pickle for a process pool or a cluster: refsam's models and problems
do; a user model defined in ``__main__`` may not.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import InvalidInputError

__all__ = ["available_cpus", "check_parallel", "chunk_size", "map_rows", "shared_executor"]

Array = NDArray[np.float64]
BLOCK_POINTS = 64  # training points per task: their replays advance together as one block (a logistic
#                   replay block of 32 runs costs 1/14 of 32 single replays, of 64 runs 1/20; measured)
MIN_CHUNKS = 2  # tasks at least, where there are that many points (two workers both get work)


def check_parallel(executor: object, n_jobs: object) -> tuple[Executor | None, int]:
    """Validate ``executor`` (None or a concurrent.futures.Executor) and ``n_jobs`` (int ≥ 1 or −1)."""
    if executor is not None and not isinstance(executor, Executor):
        raise InvalidInputError(
            f"`executor` must be a concurrent.futures.Executor (e.g. ProcessPoolExecutor, or a Dask "
            f"client's get_executor()), got {type(executor).__name__}")
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, (int, np.integer)) or not (
            n_jobs >= 1 or n_jobs == -1):
        raise InvalidInputError(f"`n_jobs` must be an int >= 1, or -1 for every CPU, got {n_jobs!r}")
    jobs = available_cpus() if n_jobs == -1 else min(int(n_jobs), available_cpus())
    if executor is not None and n_jobs != 1:
        raise InvalidInputError("give `executor` or `n_jobs`, not both: the executor sets the parallelism")
    return executor, jobs


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one; else os.cpu_count()):
    ``n_jobs=-1`` means all of them, as in joblib, and no ``n_jobs`` starts more processes than this."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@contextmanager
def shared_executor(executor: object = None, n_jobs: object = 1) -> Iterator[Executor | None]:
    """One executor for several ground-truth calls: the caller's ``executor``, a process pool of
    ``n_jobs`` workers (shut down on exit), or None (serial) — pass it on as ``executor=``."""
    executor, jobs = check_parallel(executor, n_jobs)
    if executor is not None or jobs == 1:
        yield executor
        return
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        yield pool


def map_rows(task: Callable[..., Array], args: tuple[Any, ...], idx: NDArray[np.int64], width: int,
             executor: Executor | None, n_jobs: int, what: str, progress: bool,
             unit: str = "points") -> Array:
    """Rows ``task(*args, chunk)`` for contiguous chunks of ``idx``, stacked in index order.

    ``task(*args, chunk)`` must return an array (len(chunk), width). ``executor`` and ``n_jobs`` come
    from `check_parallel()`. ``progress`` (a bool, already resolved) prints ``what done/total unit`` to
    stderr per chunk; ``unit`` names what ``idx`` counts.
    """
    out = np.empty((len(idx), width))
    size = chunk_size(len(idx))
    spans = [(lo, min(lo + size, len(idx))) for lo in range(0, len(idx), size)]
    done = 0

    def store(span: tuple[int, int], rows: Array) -> None:
        nonlocal done
        out[span[0]:span[1]] = rows
        done += span[1] - span[0]
        _progress(done, len(idx), what, progress, unit)

    if executor is None and n_jobs == 1:
        for lo, hi in spans:
            store((lo, hi), task(*args, idx[lo:hi]))
        return out
    if executor is not None:  # the caller's executor (a cluster's, perhaps): each task carries its arguments
        futures = {executor.submit(task, *args, idx[lo:hi]): (lo, hi) for lo, hi in spans}
        for future in as_completed(futures):
            store(futures[future], future.result())
        return out
    # n_jobs processes: this one and a pool of n_jobs − 1, which receive the shared arguments once each
    # (the initializer), not with every chunk. The pool works from the first chunk on, this process from
    # the last one back, until it meets a chunk the pool has started (Future.cancel fails). Computing
    # here saves a fork — the costly part of a pool's start-up, in proportion to this process's memory
    # (40 ms at 700 MB here) — and starts the work at once; every chunk is computed by the same
    # function on the same data, so the rows are the serial ones bit for bit.
    workers = min(n_jobs - 1, len(spans) - 1)  # never more processes than chunks: this one takes one too
    if workers < 1:
        for lo, hi in spans:
            store((lo, hi), task(*args, idx[lo:hi]))
        return out
    pool = ProcessPoolExecutor(max_workers=workers, initializer=_install_shared, initargs=(task, args))
    try:
        queued = [(pool.submit(_run_shared, idx[lo:hi]), (lo, hi)) for lo, hi in spans]  # in index order
        while queued and queued[-1][0].cancel():  # the pool has not started the last chunk: take it
            _, span = queued.pop()
            store(span, task(*args, idx[span[0]:span[1]]))
        futures = dict(queued)  # what the pool started: collect it
        for future in as_completed(futures):
            store(futures[future], future.result())
    finally:
        pool.shutdown(cancel_futures=True)
    return out


_SHARED: tuple[Callable[..., Array], tuple[Any, ...]] | None = None  # set in a refsam-made worker


def _install_shared(task: Callable[..., Array], args: tuple[Any, ...]) -> None:
    """Worker initializer of the pool `map_rows()` makes: keep the task and its shared arguments
    (the problem, the run, the test set: ~1 MB at n = 1000) for every chunk this worker computes.
    Sending them with each of 16 chunks instead cost the 2-process leave-one-out a third of its
    speed-up (1.5× against 1.9×, n = 1000, d = 50; measured)."""
    global _SHARED
    _SHARED = (task, args)


def _run_shared(chunk: NDArray[np.int64]) -> Array:
    """One chunk in a worker set up by `_install_shared()`."""
    assert _SHARED is not None, "a worker without the shared arguments"
    task, args = _SHARED
    return task(*args, chunk)


def chunk_size(n_points: int) -> int:
    """Points per task: at least MIN_CHUNKS tasks for small sets (so a pool has work to share), at
    most BLOCK_POINTS points per task (the block replays' width). A function of the number of points
    only — never of the executor — so every executor computes the same blocks, bit for bit."""
    return max(1, min(BLOCK_POINTS, -(-n_points // MIN_CHUNKS)))


def _progress(done: int, total: int, what: str, enabled: bool, unit: str) -> None:
    if enabled:
        print(f"  {what} {done}/{total} {unit}", file=sys.stderr, flush=True)
