"""Concurrency under load (issue #11): with the SageMaker backend the bot's workers follow the endpoints, so 20
designers prompting at once all get their variations, while a burst of signed events is still acked fast and each
answered exactly once.  "Busy" is the endpoints' to say (throttling), never the bot's own small queue's.

The bot runs as ``python -m bot slack --http`` in a subprocess (its own interpreter, as in production), Slack is the
loopback emulator, and the SageMaker Runtime is a loopback double: the real wire protocol (boto3's
``invoke_endpoint``), ``tests.fake_backend``'s pictures, and a fixed latency per call standing in for the GPU — the
subject here is the bot's concurrency, not the model.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings

import pytest

from bot import messages as T
from bot import slack_app
from bot.settings import AUTO_SIZES, Settings
from tests.slack_emulator import BOT_USER_ID, SignedClient, SlackEmulator, file_share, message
from tests.test_operate import PHOTO, ROOT, bot_process, get

CH = "C0LOAD"
THREADS = 20  # designers prompting at once
BURST = 200  # signed events, sent ...
BURST_CONCURRENCY = 20  # ... this many at a time
ACK_P99_S = 0.300
#: The bound that holds whatever the machine: the listen-backlog overflow issue #11 measured cost a ~1 s TCP
#: retransmit (p99 1.03 s) and reset connections; neither may come back.
ACK_P99_ANY_S = 1.0
#: The 300 ms bound is judged where the bot is not starved by other work on the machine: the Slack emulator, the load
#: generator and the loopback runtime already share its cores, so the machine must be quiet when the test starts
#: (at most this share of its CPU busy over the 2 s before).  On a quiet 2-core machine, harness included, it measured
#: p50 52-64 ms, p99 90-155 ms with the pools' threads prestarted (157-286 ms before, in 20 runs); with other jobs
#: running as well it measured p99 350-730 ms.
QUIET_MACHINE = 0.5


def _busy_share(seconds: float = 2.0) -> float:
    """The share of the machine's CPU time that was busy over the next ``seconds`` (/proc/stat; elsewhere the 1-minute
    load average per core).  Not the load average on Linux: right after ``make test``'s parallel run it still says
    "busy" for a minute after the machine went quiet."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
        return sum(fields), fields[3] + fields[4]  # all, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except OSError:
        return os.getloadavg()[0] / (os.cpu_count() or 1)
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


@contextlib.contextmanager
def loopback_runtime(latency_s: float = 0.3, capacity: int = 64):
    """``tests.loopback_runtime`` in its own process; yields its URL and a function returning its stats."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.loopback_runtime", str(latency_s), str(capacity)],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), url

        def stats() -> dict:
            with urllib.request.urlopen(url + "/stats", timeout=10) as r:
                return json.loads(r.read())

        yield url, stats
    finally:
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _percentile(values: list[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def _variations(emu: SlackEmulator, root: str) -> list[dict]:
    return [m for m in emu.thread_messages(CH, root) if any(b.get("type") == "actions" for b in m.get("blocks") or [])]


def test_defaults_follow_the_backend():
    """auto: the local model is one CPU/GPU (1 worker, 16 held, as before); SageMaker's workers wait on the network
    (a pool sized for the endpoints, a queue only a runaway fills).  Numbers that are set win."""
    sm = Settings.from_env({"RESTYLE_BACKEND": "sagemaker"})
    assert (sm.job_workers, sm.job_queue, sm.job_sizing) == (*AUTO_SIZES["sagemaker"], "auto (sagemaker backend)")
    assert sm.job_workers >= 32 and sm.job_queue >= 256
    local = Settings(backend="local")  # (from_env would check the local extra is installed)
    assert (local.job_workers, local.job_queue, local.job_sizing) == (1, 16, "auto (local backend)")
    assert Settings.from_env({"RESTYLE_BACKEND": "sagemaker", "RESTYLE_WORKERS": "auto",
                              "RESTYLE_QUEUE": "AUTO"}).job_workers == AUTO_SIZES["sagemaker"][0]
    s = Settings.from_env({"RESTYLE_BACKEND": "sagemaker", "RESTYLE_WORKERS": "4", "RESTYLE_QUEUE": "40"})
    assert (s.job_workers, s.job_queue, s.job_sizing) == (4, 40, "set")
    # a queue that is set caps the auto workers (a worker past it would never run); auto queue ≥ set workers
    assert Settings.from_env({"RESTYLE_BACKEND": "sagemaker", "RESTYLE_QUEUE": "8"}).job_workers == 8
    assert Settings.from_env({"RESTYLE_BACKEND": "sagemaker", "RESTYLE_WORKERS": "100"}).job_queue == 256
    assert Settings(backend="local", workers=20).job_queue == 20


def test_the_pools_threads_are_started_before_the_first_burst():
    """The job pool's and Bolt's listener pool's threads exist once the bot is built, so a burst of deliveries does
    not start 64 threads while it is being acked (that cost the ack p99 about 100 ms on 2 cores)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from bot.jobs import JobQueue, prestart

    def alive(prefix: str) -> int:
        return sum(t.name.startswith(prefix) for t in threading.enumerate())

    before = alive("restyle-job")
    jobs = JobQueue(workers=6, max_pending=12)
    try:
        assert alive("restyle-job") - before == 6
        assert jobs.submit(lambda: None) and jobs.join(5)
        assert alive("restyle-job") - before == 6  # the started threads do the work: none is added
    finally:
        jobs.shutdown()
    # asked for more than the pool may start: what it may start is started, and the call returns
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="restyle-small")
    try:
        prestart(pool, 3, timeout=0.5)
        assert alive("restyle-small") == 2
        assert pool.submit(lambda: 7).result(5) == 7  # the pool still works after the broken barrier
    finally:
        pool.shutdown()


@pytest.mark.parametrize("env, why", [
    ({"RESTYLE_WORKERS": "many"}, "RESTYLE_WORKERS must be a whole number or 'auto', got 'many'"),
    ({"RESTYLE_WORKERS": "0"}, "RESTYLE_WORKERS must be from 1 to 256, got 0"),
    ({"RESTYLE_QUEUE": "0"}, "RESTYLE_QUEUE must be from 1 to 10000, got 0"),
    ({"RESTYLE_WORKERS": "8", "RESTYLE_QUEUE": "4"}, r"RESTYLE_QUEUE .* must be at least RESTYLE_WORKERS \(8\), got 4"),
])
def test_worker_and_queue_settings_are_checked(env, why):
    with pytest.raises(ValueError, match=why):
        Settings.from_env({"RESTYLE_BACKEND": "sagemaker", **env})


@pytest.mark.serial
def test_twenty_threads_and_a_burst_of_signed_events_under_the_sagemaker_backend_issue_11(tmp_path):
    """The Shows of issue #11 item 4: 20 threads each with a photo and a prompt, and a burst of 200 signed events at
    concurrency 20 while they generate → ack p99 ≤ 300 ms, no connection reset or refused, every thread its
    variations on the first try (no "busy"), every event answered exactly once."""
    machine_load = _busy_share()
    emu = SlackEmulator().start()
    t_start = time.monotonic()
    try:
        # RESTYLE_WORKERS / RESTYLE_QUEUE empty: auto, as deployed by default
        with loopback_runtime(latency_s=0.3) as (url, runtime_stats), \
                bot_process(tmp_path, url, emu, RESTYLE_WORKERS="", RESTYLE_QUEUE="") as (proc, base):
            status, health, _ = get(base + "/healthz")
            assert status == 200
            assert health["queue"]["workers"] == AUTO_SIZES["sagemaker"][0]
            assert health["queue"]["capacity"] == AUTO_SIZES["sagemaker"][1]
            # 1. twenty designers share a photo with a prompt, all at once
            roots = [f"1700001000.{i:06d}" for i in range(THREADS)]
            shares = [[file_share(CH, [emu.host_file(PHOTO, f"look{i}.jpg", "image/jpeg")], ts=root,
                                  text="make the skirt a red floral maxi", user=f"U0DESIGN{i:02d}"), {}]
                      for i, root in enumerate(roots)]
            # 2. while they generate: 200 signed events, 20 at a time.  Each person's mention arrives as Slack sends
            # it — a ``message`` and an ``app_mention`` — and some deliveries again as Slack's retries: 120 asks,
            # each to be answered exactly once.
            asks = [f"1700002000.{i:06d}" for i in range(120)]
            burst: list[list] = []
            for i, ts in enumerate(asks):
                ev = message(CH, f"<@{BOT_USER_ID}> help", ts=ts, user=f"U0ASK{i:03d}")
                burst.append([ev, {"event_id": f"Ev0MSG{i:05d}"}])
                if i % 2 == 0:
                    mention = {k: v for k, v in ev.items() if k != "channel_type"} | {"type": "app_mention"}
                    burst.append([mention, {"event_id": f"Ev0MEN{i:05d}"}])
                if i % 6 == 1:
                    burst.append([ev, {"event_id": f"Ev0MSG{i:05d}", "retry_num": 1}])
            assert len(burst) == BURST
            # Slack's side runs in its own process (tests/loadgen.py): this one serves the bot's Web API calls
            plan = {"phases": [{"concurrency": THREADS, "deliveries": shares},
                               {"concurrency": BURST_CONCURRENCY, "deliveries": burst}]}
            sent = subprocess.run([sys.executable, "-m", "tests.loadgen", base + slack_app.EVENTS_PATH],
                                  input=json.dumps(plan), capture_output=True, text=True, timeout=120, cwd=ROOT,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)})
            assert sent.returncode == 0, sent.stderr[-2000:]
            result = json.loads(sent.stdout)
            acks, failures = result["acks"], result["failures"]

            assert not failures, failures[:5]
            assert len(acks) == THREADS + BURST

            # every thread gets its variations (2 each, RESTYLE_NUM_IMAGES), on the first try
            emu.wait_until(lambda: all(len(_variations(emu, r)) >= 2 for r in roots), 40,
                           what="every thread's variations")
            wall = time.monotonic() - t_start
            for root in roots:
                texts = [m["text"] for m in emu.thread_messages(CH, root)]
                assert len(_variations(emu, root)) == 2, texts
                assert T.BUSY not in texts and not any("not reachable" in t for t in texts), texts
            # every ask answered exactly once (message + app_mention + Slack's retry are one ask)
            emu.wait_until(lambda: sum(len(emu.thread_messages(CH, ts)) for ts in asks) >= len(asks), 20,
                           what="the answers to the burst")
            time.sleep(0.3)  # a duplicate, were there one, would arrive right after
            answers = {ts: [m["text"] for m in emu.thread_messages(CH, ts)] for ts in asks}
            assert all(texts == [T.HELP] for texts in answers.values()), \
                {ts: len(t) for ts, t in answers.items() if len(t) != 1}
            runtime = runtime_stats()
            assert runtime["throttled"] == 0
            assert runtime["peak"] > 1, "the endpoint never saw two calls at once: generation ran one at a time"

        p50, p99 = statistics.median(acks), _percentile(acks, 99)
        print(f"\nissue #11 load: {THREADS} threads + {BURST} events at concurrency {BURST_CONCURRENCY}: ack p50 "
              f"{p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {max(acks) * 1000:.0f} ms; endpoint peak "
              f"{runtime['peak']} calls at once; all {THREADS} threads' variations within {wall:.1f} s; "
              f"machine {machine_load:.0%} busy before the test")
        judged = f"ack p99 {p99 * 1000:.0f} ms (bound {ACK_P99_S * 1000:.0f} ms)"
        assert p99 <= ACK_P99_ANY_S, judged  # no listen-overflow retransmits, on any machine
        if machine_load <= QUIET_MACHINE:
            assert p99 <= ACK_P99_S, judged
        elif p99 > ACK_P99_S:
            warnings.warn(f"{judged} not judged: the machine was {machine_load:.0%} busy before the test "
                          f"({os.cpu_count()} cores)", stacklevel=1)
    finally:
        emu.stop()


def test_only_an_endpoint_at_capacity_says_busy_and_in_plain_words(tmp_path):
    """An endpoint that throttles every call (after the backend's retries): the person is told the models are busy
    and to try again in a minute — not the bot's own "I'm busy" queue message, and no variations."""
    emu = SlackEmulator().start()
    try:
        with loopback_runtime(latency_s=0.0, capacity=0) as (url, runtime_stats), \
                bot_process(tmp_path, url, emu, RESTYLE_WORKERS="", RESTYLE_QUEUE="", RESTYLE_RETRIES="1") as (
                    proc, base):
            slack = SignedClient(base + slack_app.EVENTS_PATH)
            root = "1700003000.000100"
            f = emu.host_file(PHOTO, "look.jpg", "image/jpeg")
            assert slack.event(file_share(CH, [f], ts=root, text="make the skirt a red floral maxi")).status == 200
            texts = emu.wait_until(lambda: [m["text"] for m in emu.thread_messages(CH, root)
                                            if "try again in a minute" in m["text"]], 30, what="the capacity reply")
            runtime = runtime_stats()
        assert runtime["throttled"] == runtime["calls"] == 2  # the first call and the backend's one retry
        assert "busy" in texts[0] and T.BUSY not in texts
        assert not _variations(emu, root)
    finally:
        emu.stop()
