"""The bot's HTTP server: Bolt's WSGI adapter on waitress, an established production WSGI server.

* ``POST /slack/events`` → ``slack_bolt.adapter.wsgi.SlackRequestHandler`` (Bolt verifies the signature).  The body
  is capped *before* verification: a request whose ``Content-Length`` (or chunked body) exceeds ``MAX_BODY_BYTES``
  is answered 413 from its headers and the connection closed; the body is never read.
* ``GET /healthz`` → ``Health.report()`` as JSON: 200 when ready, 503 when not (see ``bot.health``).
* Sockets time out (``channel_timeout``: an idle or trickling connection is closed), the listen backlog is 1024
  (the standard library's default of 5 made bursts of Slack deliveries wait for TCP retransmits), and a bounded
  pool of threads runs the requests.  While the bot drains (SIGTERM), Events API deliveries are answered 503 with
  ``Retry-After`` so Slack re-delivers them — to another replica behind the load balancer; slash commands and
  interactivity (which Slack does not retry) are still served.

Socket Mode uses the same server for ``/healthz`` alone (``--health-port``).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from bot.health import Health

log = logging.getLogger("restyle.http")

EVENTS_PATH = "/slack/events"
HEALTH_PATH = "/healthz"
#: Slack's Events API and interactivity payloads are a few kB (a message with blocks, tens of kB); 1 MiB is ample.
MAX_BODY_BYTES = 1024 * 1024
#: The kernel's queue of connections not yet accepted.
BACKLOG = 1024
#: Seconds a connection may sit idle (or trickle a request) before it is closed.
SOCKET_TIMEOUT_S = 30
#: Requests handled at once; Bolt acks within milliseconds and runs listeners on its own pool.
THREADS = 16
#: Open connections at once (beyond it new ones wait in the backlog).
CONNECTION_LIMIT = 1000


def wsgi_app(health: Health, bolt_app: Any = None, path: str = EVENTS_PATH) -> Callable:
    """The WSGI application: ``/healthz`` always; ``path`` → Bolt when ``bolt_app`` is given."""
    bolt = None
    if bolt_app is not None:
        from slack_bolt.adapter.wsgi import SlackRequestHandler

        bolt = SlackRequestHandler(bolt_app, path=path)

    def plain(start_response, status: str, text: str, extra: list[tuple[str, str]] | None = None
              ) -> Iterable[bytes]:
        body = text.encode()
        start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))),
                                *(extra or [])])
        return [body]

    def app(environ: dict, start_response) -> Iterable[bytes]:
        method, route = environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "")
        if route == HEALTH_PATH and method in ("GET", "HEAD"):
            ready, report = health.report()
            body = json.dumps(report).encode()
            start_response("200 OK" if ready else "503 Service Unavailable",
                           [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                            ("Cache-Control", "no-store")])
            return [body] if method == "GET" else []
        if bolt is not None and route == path:
            if method != "POST":
                return plain(start_response, "405 Method Not Allowed", "POST only", [("Allow", "POST")])
            if health.draining and environ.get("CONTENT_TYPE", "").startswith("application/json"):
                # an Events API delivery: Slack retries a 5xx, and the retry reaches a replica that is not stopping.
                # Slash commands and button clicks (form-encoded) are never retried: they are still served here.
                return plain(start_response, "503 Service Unavailable", "shutting down", [("Retry-After", "1")])
            return bolt(environ, start_response)
        return plain(start_response, "404 Not Found", "not found")

    return app


class HttpServer:
    """waitress serving ``app``, with the start/stop interface of ``socketserver`` (``serve_forever``,
    ``shutdown``, ``server_close``, ``server_address``) so it runs in a thread or in the foreground."""

    def __init__(self, app: Callable, host: str = "127.0.0.1", port: int = 3000, *,
                 max_body: int = MAX_BODY_BYTES, threads: int = THREADS, backlog: int = BACKLOG,
                 timeout_s: int = SOCKET_TIMEOUT_S, connection_limit: int = CONNECTION_LIMIT) -> None:
        from waitress.server import create_server

        self._server = create_server(
            app, host=host, port=port, threads=threads, backlog=backlog, channel_timeout=timeout_s,
            connection_limit=connection_limit, max_request_body_size=max_body, max_request_header_size=64 * 1024,
            cleanup_interval=min(30, timeout_s), expose_tracebacks=False, ident="restyle",
            clear_untrusted_proxy_headers=True, asyncore_use_poll=True)
        self.server_address: tuple[str, int] = (self._server.effective_host, int(self._server.effective_port))
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._closed = False

    @property
    def port(self) -> int:
        return self.server_address[1]

    def serve_forever(self) -> None:
        """Serve until ``shutdown``.  The loop wakes at least every 0.2 s to notice it."""
        from waitress import wasyncore

        self._stopped.clear()
        try:
            while not self._stop.is_set() and self._server._map:
                wasyncore.loop(timeout=0.2, map=self._server._map, use_poll=True, count=1)
        finally:
            self._stopped.set()

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop ``serve_forever`` (from another thread) and wait for it to return."""
        self._stop.set()
        self._stopped.wait(timeout)

    def server_close(self) -> None:
        """Close the listening socket, every connection and the request threads."""
        if self._closed:
            return
        self._closed = True
        from waitress import wasyncore

        self._server.task_dispatcher.shutdown(cancel_pending=True, timeout=5)
        self._server.close()
        wasyncore.close_all(self._server._map)

    def start(self) -> threading.Thread:
        """``serve_forever`` in a daemon thread."""
        t = threading.Thread(target=self.serve_forever, name="restyle-http", daemon=True)
        t.start()
        return t
