"""A loopback SageMaker Runtime double for load tests: ``POST /endpoints/{name}/invocations`` answered by
``tests.fake_backend.FakeEndpoint`` after a fixed latency (standing in for the GPU), with a capacity past which calls are
throttled (429 ``ThrottlingException``) as an endpoint at its capacity answers; ``GET /stats`` says how it went.

``python -m tests.loopback_runtime LATENCY_S CAPACITY`` serves it in its own process (so its picture work does not
share a GIL with the test that measures the bot) and prints its URL on the first line.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from model.schemas import InpaintRequest, SegmentRequest
from tests.fake_backend import FakeEndpoint


class LoopbackRuntime:
    """``POST /endpoints/{name}/invocations`` shaped like the SageMaker Runtime: segmentation and inpainting by
    ``FakeEndpoint`` after ``latency_s``; at most ``capacity`` calls at once — one more is answered 429
    ``ThrottlingException``, as an endpoint at its capacity answers."""

    def __init__(self, latency_s: float = 0.3, capacity: int = 64) -> None:
        self.latency_s = latency_s
        self.capacity = capacity
        self.fake = FakeEndpoint()
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0  # the most calls in flight at once
        self.throttled = 0
        self.calls = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):  # noqa: A002
                pass

            def _send(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                with outer.lock:
                    stats = {"calls": outer.calls, "throttled": outer.throttled, "peak": outer.peak}
                self._send(200, stats) if self.path == "/stats" else self._send(404, {"message": "no such path"})

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                m = re.match(r"^/endpoints/([^/]+)/invocations$", self.path)
                if not m:
                    self._send(404, {"message": "no such path"})
                    return
                with outer.lock:
                    outer.calls += 1
                    if outer.running >= outer.capacity:
                        outer.throttled += 1
                        self._send(429, {"message": "Rate exceeded"}, {"x-amzn-ErrorType": "ThrottlingException:"})
                        return
                    outer.running += 1
                    outer.peak = max(outer.peak, outer.running)
                try:
                    time.sleep(outer.latency_s)
                    if "clipseg" in m.group(1):
                        out = outer.fake.segment(SegmentRequest.model_validate_json(body))
                    else:
                        out = outer.fake.inpaint(InpaintRequest.model_validate_json(body))
                finally:
                    with outer.lock:
                        outer.running -= 1
                self._send(200, json.loads(out.model_dump_json()))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.request_queue_size = 256
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def main(argv: list[str]) -> None:
    runtime = LoopbackRuntime(float(argv[0]), int(argv[1]))
    print(runtime.url, flush=True)
    sys.stdin.read()  # until the test closes our stdin (or exits)
    runtime.close()


if __name__ == "__main__":
    main(sys.argv[1:])
