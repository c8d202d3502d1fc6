"""A bounded background job queue: adapters ack at once and generation runs here."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor

log = logging.getLogger("restyle.jobs")


class JobQueue:
    def __init__(self, workers: int = 1, max_pending: int = 16) -> None:
        self.workers = workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="restyle-job")
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
