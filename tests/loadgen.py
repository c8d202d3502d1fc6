"""A Slack load generator in its own process: ``python -m tests.loadgen URL`` reads phases of signed deliveries as
JSON on stdin (``{"phases": [{"concurrency": N, "deliveries": [[event, {"event_id": …, "retry_num": …}], …]}, …]}``),
sends each phase's deliveries ``concurrency`` at a time, one phase after the other, and prints, as JSON, every ack's
seconds and every failure.

The ack latencies it reports are the bot's (and the loopback network's): the test's own threads — the Slack
emulator answering the bot's Web API calls and uploads — run in another process, so their share of one
interpreter's lock is not counted as the bot's.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
from concurrent.futures import ThreadPoolExecutor

from tests.slack_emulator import SignedClient


def main() -> int:
    url = sys.argv[1]
    plan = json.load(sys.stdin)
    client = SignedClient(url)
    acks: list[float] = []
    failures: list[str] = []

    def send(delivery: list) -> None:
        event, kw = delivery
        t0 = time.perf_counter()
        try:
            resp = client.event(event, timeout=30, **kw)
        except (urllib.error.URLError, OSError) as exc:  # refused, reset: what a listen backlog of 5 did
            failures.append(f"{type(exc).__name__}: {exc}")
            return
        acks.append(time.perf_counter() - t0)
        if resp.status != 200:
            failures.append(f"HTTP {resp.status}: {resp.body[:200]}")

    for phase in plan["phases"]:
        with ThreadPoolExecutor(phase["concurrency"]) as pool:
            list(pool.map(send, phase["deliveries"]))
    json.dump({"acks": acks, "failures": failures}, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
