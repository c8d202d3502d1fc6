"""Readiness and graceful shutdown for the Slack bot.

``Health`` answers ``GET /healthz`` (HTTP mode on the Events API port; Socket Mode on ``--health-port``): 200 with a
JSON report when the bot is ready, 503 with the same report when it is not.  Ready means: not draining, the store
answers a query, and — in Socket Mode — the WebSocket to Slack is connected.  The report also carries the queue
depth (jobs queued or running, workers, capacity, and whether those were sized for the backend) and how long ago Slack last reached the bot (an event, an action,
a command, or the start-up ``auth.test``).

``TrackedJobs`` is the bot's ``JobQueue`` with a record of what each job is for, so that ``drain`` can, on SIGTERM,
stop taking work, let running turns finish within ``RESTYLE_DRAIN_S`` seconds, and tell every thread whose turn did
not finish (its status message becomes the notice) — instead of leaving "Working on it… 3/30" forever.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from bot.jobs import JobQueue

log = logging.getLogger("restyle.health")

#: How often a serving replica posts interrupted-turn notices (turns of a replica that was killed, found by any
#: replica sharing the state), besides once at start-up.
NOTICES_EVERY_S = 30.0

#: Said in a thread whose queued request never started because this replica was stopping.
DRAIN_NOT_STARTED = ("I was restarting before I could start on this request, so nothing was made. "
                     "Say it again to retry.")
#: Said in a thread whose turn was cut off at the drain deadline (``{text}``: what was asked).
DRAIN_INTERRUPTED = ("My job in this thread (_{text}_) was interrupted by a restart before it finished. "
                     "Say it again to retry.")


class Health:
    """What ``/healthz`` reports.  Thread-safe; every method is cheap except ``report`` (one store query)."""

    def __init__(self, *, store: Any = None, jobs: JobQueue | None = None, capacity: int | None = None,
                 sizing: str | None = None, mode: str = "http", connected: Callable[[], bool] | None = None) -> None:
        self.store = store
        self.jobs = jobs
        self.capacity = capacity
        self.sizing = sizing  # how workers and capacity were chosen (``Settings.job_sizing``)
        self.mode = mode
        self.connected = connected  # Socket Mode: is the WebSocket up?
        self._last_contact: float | None = None  # time.time() of the last word from Slack
        self._draining = threading.Event()
        self._started = time.time()

    # -- inputs ----------------------------------------------------------------------------------------------------
    def contact(self) -> None:
        """Slack reached us (an event, an action, a command, a successful Web API call)."""
        self._last_contact = time.time()

    def middleware(self, body: dict, next: Callable[[], Any]):  # noqa: A002 - Bolt's argument name
        """A Bolt middleware: every verified request from Slack is contact."""
        self.contact()
        return next()

    def begin_drain(self) -> None:
        self._draining.set()

    @property
    def draining(self) -> bool:
        return self._draining.is_set()

    # -- the report ------------------------------------------------------------------------------------------------
    def _store_state(self) -> str:
        if self.store is None:
            return "none"
        try:
            ping = getattr(self.store, "ping", None)
            if callable(ping):
                ping()
            else:
                self.store.has_thread("healthz:probe")  # one real query against the store
        except Exception as exc:  # any failure to answer is "not ready", never a crashed health check
            return f"error: {type(exc).__name__}: {exc}"[:300]
        return "ok"

    def report(self) -> tuple[bool, dict]:
        store = self._store_state()
        connected = None
        if self.connected is not None:
            try:
                connected = bool(self.connected())
            except Exception:
                connected = False
        reasons = []
        if self.draining:
            reasons.append("draining: shutting down")
        if store not in ("ok", "none"):
            reasons.append(f"store: {store}")
        if connected is False:
            reasons.append("slack: the Socket Mode connection is down")
        queue: dict[str, int | str | None] = {"pending": None, "workers": None, "capacity": self.capacity}
        if self.sizing is not None:
            queue["sizing"] = self.sizing
        if self.jobs is not None:
            queue["pending"] = self.jobs.pending()
            queue["workers"] = self.jobs.workers
        last = self._last_contact
        body = {
            "ready": not reasons,
            "reasons": reasons,
            "mode": self.mode,
            "draining": self.draining,
            "store": store,
            "queue": queue,
            "slack": {"connected": connected,
                      "last_contact_s_ago": None if last is None else round(time.time() - last, 3)},
            "uptime_s": round(time.time() - self._started, 3),
        }
        return not reasons, body


class TrackedJobs(JobQueue):
    """A ``JobQueue`` that remembers each job's arguments and whether it started, so a drain can tell the threads
    of the jobs it had to abandon.  Jobs dropped by ``abandon`` never start."""

    def __init__(self, workers: int = 1, max_pending: int = 16) -> None:
        super().__init__(workers, max_pending)
        self._ids = itertools.count()
        self._jobs: dict[int, tuple[tuple, bool]] = {}  # id -> (args, started)
        self._jobs_lock = threading.Lock()
        self._abandoned = False

    def submit(self, fn, *args, **kwargs) -> bool:
        key = next(self._ids)

        def tracked(*a, **kw):
            with self._jobs_lock:
                if self._abandoned or key not in self._jobs:
                    return None  # dropped at the drain deadline: its thread was told
                self._jobs[key] = (args, True)
            try:
                return fn(*a, **kw)
            finally:
                with self._jobs_lock:
                    self._jobs.pop(key, None)

        with self._jobs_lock:
            if self._abandoned:
                return False
            self._jobs[key] = (args, False)
        if not super().submit(tracked, *args, **kwargs):
            with self._jobs_lock:
                self._jobs.pop(key, None)
            return False
        return True

    def wait_idle(self, timeout: float) -> bool:
        """True once no job is queued or running; False when ``timeout`` seconds passed first."""
        deadline = time.monotonic() + timeout
        while True:
            with self._jobs_lock:
                if not self._jobs:
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def abandon(self) -> tuple[list[tuple], list[tuple]]:
        """Stop: nothing queued starts any more, nothing new is taken.  Returns the arguments of the jobs that were
        running and of those that never started."""
        with self._jobs_lock:
            self._abandoned = True
            running = [args for args, started in self._jobs.values() if started]
            queued = [args for args, started in self._jobs.values() if not started]
            self._jobs.clear()
        return running, queued


def drain(bot: Any, jobs: TrackedJobs, health: Health, *, timeout_s: float,
          stop_intake: Callable[[], None] | None = None) -> bool:
    """SIGTERM: stop taking work, let running turns finish within ``timeout_s``, then tell each thread whose turn
    did not finish.  True when everything finished in time (the caller may then exit normally; otherwise worker
    threads are still busy and the process should end with ``os._exit``).

    ``bot`` is the ``SlackBot`` (``store``, ``_post``); each job's arguments start with its thread's ``Place`` and
    may carry its ``Status`` message, which becomes the notice.
    """
    from bot.slack_app import Place, Status

    health.begin_drain()
    if stop_intake is not None:
        try:
            stop_intake()
        except Exception:
            log.exception("stopping intake failed; draining anyway")
    busy = jobs.pending()
    if busy:
        log.warning("draining: waiting up to %gs for %d job(s)", timeout_s, busy)
    if jobs.wait_idle(timeout_s):
        log.warning("drained: every job finished")
        return True
    running, queued = jobs.abandon()
    log.warning("drain deadline: %d running and %d queued job(s) are reported as interrupted", len(running),
                len(queued))
    for args, started in [(a, True) for a in running] + [(a, False) for a in queued]:
        place = next((a for a in args if isinstance(a, Place)), None)
        status = next((a for a in args if isinstance(a, Status)), None)
        if place is None:
            continue
        text = DRAIN_NOT_STARTED
        if started:
            try:
                turn = bot.store.last_turn(place.thread, status="running")
            except Exception:
                turn = None
            if turn is not None:
                text = DRAIN_INTERRUPTED.format(text=turn.text)
                try:
                    # told now: the next start (which marks this 'running' turn interrupted) won't tell it again
                    bot.store.mark_reported(turn.id)
                except Exception:
                    log.exception("could not mark turn %s reported", turn.id)
        if status is not None and not status.closed:
            status.finish(text)
        else:
            bot._post(place, text)
    return False


def run(engine: Any, settings: Any, client: Any, *, http: bool, host: str = "127.0.0.1", port: int = 3000,
        health_port: int | None = None, ping_interval: float = 10.0) -> int:
    """Serve Slack until SIGTERM (or SIGINT), then drain and return 0 — or end the process with status 0 at once
    when the drain deadline left turns running (their worker threads cannot be stopped from outside)."""
    import os
    import signal
    import sys

    from bot.http_server import HttpServer, wsgi_app
    from bot.slack_app import build_app, socket_mode_handler

    jobs = TrackedJobs(settings.job_workers, settings.job_queue)
    log.info("generation: %d workers, %d held at most (%s)", settings.job_workers, settings.job_queue,
             settings.job_sizing)
    app = build_app(engine, settings, client=client, jobs=jobs)
    bot = app.restyle  # type: ignore[attr-defined]
    health = Health(store=engine.store, jobs=jobs, capacity=settings.job_queue, sizing=settings.job_sizing,
                    mode="http" if http else "socket")
    health.contact()  # auth.test just answered
    app.use(health.middleware)
    bot.post_pending_notices()
    bot.start_retention()  # RESTYLE_RETENTION_DAYS

    stop = threading.Event()

    def on_signal(signum, frame) -> None:
        log.warning("received %s: draining", signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            signal.signal(sig, on_signal)
        except ValueError:  # not the main thread (tests): the caller stops us another way
            pass

    servers: list[HttpServer] = []
    stop_intake: Callable[[], None] | None = None
    listen = ([(port, True)] if http else []) + ([(health_port, False)] if health_port is not None
                                                 and not (http and health_port == port) else [])
    for p, events in listen:
        try:
            servers.append(HttpServer(wsgi_app(health, app if events else None), host, p))
        except OSError as exc:
            print(f"restyle: cannot listen on {host}:{p} ({exc.strerror or exc})", file=sys.stderr)
            for s in servers:
                s.server_close()
            return 1
    for s in servers:
        what = "the Slack Events API" if s is servers[0] and http else "health"
        path = "/slack/events (health: /healthz)" if what != "health" else "/healthz"
        print(f"restyle: serving {what} on http://{host}:{s.port}{path}", file=sys.stderr, flush=True)
    if not http:
        handler = socket_mode_handler(app, settings.slack_app_token, ping_interval=ping_interval)
        health.connected = handler.client.is_connected
        stop_intake = handler.close  # Slack delivers to the other replicas' connections from now on
        print(f"restyle: connecting to Slack over Socket Mode (ping every {ping_interval:g}s)", file=sys.stderr,
              flush=True)
        from slack_sdk.errors import SlackApiError, SlackClientError

        try:
            handler.connect()
        except (SlackApiError, SlackClientError, OSError) as exc:
            if isinstance(exc, SlackApiError):
                why = f"SLACK_APP_TOKEN was rejected by Slack ({exc.response.get('error')})"
            else:
                why = f"cannot open the Socket Mode connection to Slack ({type(exc).__name__})"
            print(f"restyle: {why}", file=sys.stderr)
            for s in servers:
                s.server_close()
            jobs.shutdown()
            return 2 if isinstance(exc, SlackApiError) else 1
    for s in servers:
        s.start()
    next_notices = time.monotonic() + NOTICES_EVERY_S
    while not stop.wait(0.5):
        if time.monotonic() >= next_notices:  # a replica killed mid-turn: its thread is told without a restart
            next_notices = time.monotonic() + NOTICES_EVERY_S
            try:
                bot.post_pending_notices()
            except Exception:  # noqa: BLE001 - the state was unreachable: the next round tries again
                log.exception("posting interrupted-turn notices failed")
    finished = drain(bot, jobs, health, timeout_s=settings.drain_s, stop_intake=stop_intake)
    for s in servers:
        s.shutdown()
        s.server_close()
    if not finished:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)  # the cut-off turns' threads are still inside the model call; their threads were told
    jobs.shutdown()
    engine.store.close()
    return 0


def probe(argv: list[str] | None = None) -> int:
    """``python -m bot.health [PORT]``: exit 0 when ``http://127.0.0.1:PORT/healthz`` answers 200, else 1 — the
    container's HEALTHCHECK.  PORT defaults to ``RESTYLE_HEALTH_PORT``, else 3000."""
    import os
    import sys
    import urllib.error
    import urllib.request

    argv = sys.argv[1:] if argv is None else argv
    port = argv[0] if argv else (os.environ.get("RESTYLE_HEALTH_PORT") or "3000")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{int(port)}/healthz", timeout=4) as resp:
            return 0 if resp.status == 200 else 1
    except urllib.error.HTTPError as exc:
        print(f"not ready: {exc.read()[:500].decode(errors='replace')}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"no answer from port {port}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(probe())
