"""One shared thread pool for the CPU-side picture work around the models.

numpy, scipy.ndimage and PIL release the GIL on large arrays, so independent pieces of work — one garment's mask,
one candidate's paste-back — run side by side on the CPUs a GPU server otherwise leaves idle.  Results come back
in order and each is exactly what running it alone gives.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")
_PREFIX = "restyle-cpu"


def workers() -> int:
    """Threads in the pool: the CPUs this process may use, at most 16 (16 garment prompts, one each)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(16, cpus))


@functools.cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers(), thread_name_prefix=_PREFIX)


def map_all(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``[fn(x) for x in items]``, on the shared pool when there are several items and several CPUs.

    Called from inside a pooled task it runs serially (a task waiting on the pool it occupies could deadlock).
    """
    items = list(items)
    if len(items) < 2 or workers() < 2 or threading.current_thread().name.startswith(_PREFIX):
        return [fn(x) for x in items]
    return list(_pool().map(fn, items))
