"""A bounded background job queue: adapters ack at once and generation runs here."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor

log = logging.getLogger("restyle.jobs")


def prestart(pool: ThreadPoolExecutor, threads: int, timeout: float = 10.0) -> None:
    """Start ``threads`` of ``pool``'s worker threads now (at most its ``max_workers``), not in the first burst.

    ``ThreadPoolExecutor.submit`` starts a thread whenever none is idle, so the first burst of Slack deliveries used
    to start the listener pool's and the job pool's threads (32 each with the SageMaker backend) in the same moments
    the process was acking them: ack p99 in tests/test_load.py was 176-286 ms on 2 cores, 94-142 ms with the threads
    started up front."""
    barrier = threading.Barrier(threads + 1)
    for _ in range(threads):
        pool.submit(barrier.wait, timeout)  # each holds its thread until all are started, so none is reused
    try:
        barrier.wait(timeout)
    except threading.BrokenBarrierError:  # more threads asked for than the pool may start: the rest start on demand
        log.warning("could only prestart part of a thread pool of %d", threads)


class JobQueue:
    def __init__(self, workers: int = 1, max_pending: int = 16) -> None:
        self.workers = workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="restyle-job")
        prestart(self._pool, workers)
        self._slots = threading.BoundedSemaphore(max_pending)
        self._futures: set[Future] = set()
        self._lock = threading.Lock()

    def submit(self, fn, *args, **kwargs) -> bool:
        """Queue ``fn``; False (and nothing queued) when ``max_pending`` jobs are already waiting or running."""
        if not self._slots.acquire(blocking=False):
            return False

        def run():
            try:
                return fn(*args, **kwargs)
            except Exception:
                log.exception("background job failed")
                raise
            finally:
                self._slots.release()

        fut = self._pool.submit(run)
        with self._lock:
            self._futures.add(fut)
        fut.add_done_callback(lambda f: self._discard(f))
        return True

    def _discard(self, fut: Future) -> None:
        with self._lock:
            self._futures.discard(fut)

    def pending(self) -> int:
        """Jobs queued or running."""
        with self._lock:
            return sum(1 for f in self._futures if not f.done())

    def ahead(self) -> int:
        """How many jobs would start before one submitted now (0: a worker is free)."""
        return max(0, self.pending() - self.workers + 1)

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every queued job finished; True if they all did within ``timeout``."""
        with self._lock:
            futures = list(self._futures)
        for f in futures:
            try:
                f.result(timeout=timeout)
            except TimeoutError:
                return False
            except Exception:
                pass
        return True

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=False)
