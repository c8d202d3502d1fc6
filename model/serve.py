"""A SageMaker-compatible model server for restyle's endpoints, on the standard library's HTTP server.

``python -m model.serve --clipseg PATH_OR_ID --inpaint PATH_OR_ID [--upscale PATH_OR_ID] --port N`` serves

* the container contract: ``GET /ping`` (200 once the models are loaded, 503 while loading) and
  ``POST /invocations`` (the only loaded model, or the one named by ``?model=clipseg|inpaint|upscale`` or the
  ``X-Amzn-SageMaker-Custom-Attributes: model=...`` header when several are loaded);
* the SageMaker Runtime API path ``POST /endpoints/{name}/invocations``, so
  ``boto3.client("sagemaker-runtime", endpoint_url=...).invoke_endpoint(...)`` works unchanged.  Errors there are
  shaped like SageMaker's: a model's own error is a ``ModelError`` (424) carrying ``OriginalStatusCode`` and
  ``OriginalMessage`` (our ``{"error": {"code", "message", "retryable"}}`` JSON), an unknown endpoint a
  ``ValidationError``.

Models load once, in a background thread, when the server starts.  A generation whose client has gone (it timed
out and closed the connection) stops at the next diffusion step instead of computing a picture nobody will read.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import re
import select
import socket
import sys
import threading
import traceback
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from model.checks import bad_device
from model.errors import error_body
from model.handlers import JSON, MAX_PAYLOAD, LoadedModel, handle, load_model
from model.loading import DEFAULT_UPSCALE
from model.schemas import parse_looks

log = logging.getLogger("restyle.serve")

#: The upscaler's checkpoint when ``--upscale`` is not given (the bot's settings read the same name).
UPSCALE_ENV = "RESTYLE_UPSCALE_MODEL"

RUNTIME_PATH = re.compile(r"^/endpoints/([^/]+)/invocations$")
#: An async request's inference id becomes part of an S3 key: letters, digits, '.', '_' and '-' only.
INFERENCE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
ASYNC_PATH = re.compile(r"^/endpoints/([^/]+)/async-invocations$")
#: Bodies larger than this are refused without being read.
HARD_LIMIT = 4 * MAX_PAYLOAD
#: A connection that sends nothing for this long is closed (slow or stuck clients must not hold threads).
SOCKET_TIMEOUT_S = 120


def default_endpoint_names(prefix: str = "restyle") -> dict[str, str]:
    return {f"{prefix}-clipseg": "clipseg", f"{prefix}-inpaint": "inpaint", f"{prefix}-inpaint-async": "inpaint",
            f"{prefix}-upscale": "upscale", "clipseg": "clipseg", "inpaint": "inpaint", "upscale": "upscale"}


#: Set by the HTTP handler around ``route``: asks whether the client of the request in this thread has gone.
CLIENT_GONE: ContextVar[Callable[[], bool] | None] = ContextVar("client_gone", default=None)
#: Error codes worth sending again unchanged (the server was busy or still loading).
RETRYABLE = {"not_ready", "internal_error"}


def _error(code: str, message: str) -> dict:
    return error_body(code, message, code in RETRYABLE)


def client_gone(sock: socket.socket) -> bool:
    """True once the peer of ``sock`` has closed its side (or reset it).  A request blocks until its answer, so
    while it is being computed the socket is readable only when the client hung up (or pipelined more)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except (OSError, ValueError):
        return True


class ModelServer:
    """Routing and model lifecycle; ``route`` is plain data in, plain data out (tested without sockets)."""

    def __init__(self, refs: dict[str, str], *, lora: str | None = None, endpoint_names: dict[str, str] | None = None,
                 device: str | None = None, async_output: str | None = None, s3=None) -> None:
        if not refs:
            raise ValueError("give at least one of --clipseg / --inpaint / --upscale")
        self.refs = refs
        self.lora = lora
        self.device = device
        self.endpoint_names = endpoint_names or default_endpoint_names()
        self.models: dict[str, LoadedModel] = {}
        self.ready = threading.Event()
        self.load_error: str | None = None
        # async inference: s3://bucket/prefix/ for results; one worker runs the queued requests in order
        self.async_output = async_output.rstrip("/") + "/" if async_output else None
        self._s3 = s3
        self._async_jobs: queue.Queue = queue.Queue()
        self._async_worker: threading.Thread | None = None

    def load(self) -> None:
        try:
            for role, ref in self.refs.items():
                log.info("loading %s from %s", role, ref)
                self.models[role] = load_model(role, ref, lora=self.lora if role == "inpaint" else None,
                                               device=self.device)
            self.ready.set()
            log.info("ready: %s", ", ".join(self.models))
        except Exception as exc:
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.error("loading failed:\n%s", traceback.format_exc())

    def load_in_background(self) -> threading.Thread:
        t = threading.Thread(target=self.load, name="model-loader", daemon=True)
        t.start()
        return t

    # -- routing -----------------------------------------------------------------------------------------------
    def route(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes, dict]:
        url = urlsplit(path)
        if url.path == "/ping":
            if method not in ("GET", "HEAD"):
                return self._json(405, _error("method_not_allowed", "use GET /ping"))
            if self.ready.is_set():
                return self._json(200, {"status": "ok", "models": sorted(self.models)})
            if self.load_error:
                return self._json(500, {"status": "failed", **_error("load_failed", self.load_error)})
            return self._json(503, {"status": "loading"})
        if url.path == "/invocations":
            if method != "POST":
                return self._json(405, _error("method_not_allowed", "use POST /invocations"))
            return self._invoke(self._container_role(url.query, headers), headers, body, runtime=False)
        m = ASYNC_PATH.match(url.path)
        if m:
            if method != "POST":
                return self._json(405, _error("method_not_allowed", "use POST"))
            return self._invoke_async(m.group(1), headers)
        m = RUNTIME_PATH.match(url.path)
        if m:
            if method != "POST":
                return self._json(405, _error("method_not_allowed", "use POST"))
            name = m.group(1)
            role = self.endpoint_names.get(name)
            if role is None or role not in self.refs:
                known = sorted(n for n, r in self.endpoint_names.items() if r in self.refs)
                return self._sm_error(400, "ValidationError", "unknown_endpoint",
                                      f"Endpoint {name} not found. Known endpoints: {known}")
            return self._invoke(role, headers, body, runtime=True)
        return self._json(404, _error("not_found", f"no route for {method} {url.path}; try GET /ping, "
                                                   "POST /invocations or POST /endpoints/NAME/invocations"))

    # -- async inference (InvokeEndpointAsync): input and output on S3 ------------------------------------------
    def _invoke_async(self, name: str, headers: dict[str, str]):
        role = self.endpoint_names.get(name)
        if role is None or role not in self.refs:
            return self._sm_error(400, "ValidationError", "unknown_endpoint", f"Endpoint {name} not found.")
        if self.async_output is None:
            return self._sm_error(400, "ValidationError", "async_not_configured",
                                  f"Endpoint {name} is not an async endpoint here: start model.serve with "
                                  "--async-output s3://BUCKET/PREFIX/")
        location = headers.get("x-amzn-sagemaker-inputlocation", "")
        bucket, _, key = location.removeprefix("s3://").partition("/")
        if not location.startswith("s3://") or not bucket or not key or key.endswith("/"):
            return self._sm_error(400, "ValidationError", "invalid_input_location",
                                  f"InputLocation must be s3://bucket/key, got {location!r}")
        inference_id = headers.get("x-amzn-sagemaker-inference-id") or uuid.uuid4().hex
        if not INFERENCE_ID.match(inference_id):  # it names the output object: no "../", no "failures/…"
            return self._sm_error(400, "ValidationError", "invalid_inference_id",
                                  "InferenceId must be 1-128 letters, digits, '.', '_' or '-', starting with a "
                                  f"letter or digit; got {inference_id[:140]!r}")
        output = f"{self.async_output}{inference_id}.out"
        failure = f"{self.async_output}failures/{inference_id}-error.out"
        self._async_jobs.put((role, location, output, failure, headers.get("x-amzn-sagemaker-content-type"),
                              headers.get("x-amzn-sagemaker-accept")))
        if self._async_worker is None or not self._async_worker.is_alive():
            self._async_worker = threading.Thread(target=self._async_loop, name="model-async", daemon=True)
            self._async_worker.start()
        return 202, json.dumps({"InferenceId": inference_id}).encode(), {
            "Content-Type": JSON, "X-Amzn-SageMaker-OutputLocation": output,
            "X-Amzn-SageMaker-FailureLocation": failure}

    def _async_loop(self) -> None:
        import boto3

        s3 = self._s3 or boto3.client("s3")
        while True:
            role, location, output, failure, ctype, accept = self._async_jobs.get()
            try:
                bucket, _, key = location[5:].partition("/")
                body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
                self.ready.wait()
                status, out, out_type = handle(self.models[role], body, ctype, accept)
            except Exception:
                log.error("async job failed:\n%s", traceback.format_exc())
                status, out, out_type = 500, json.dumps(_error("internal_error", "see the server log")).encode(), JSON
            target = output if status == 200 else failure
            bucket, _, key = target[5:].partition("/")
            try:
                s3.put_object(Bucket=bucket, Key=key, Body=out, ContentType=out_type)
            except Exception:
                log.error("could not write %s:\n%s", target, traceback.format_exc())

    def _container_role(self, query: str, headers: dict[str, str]) -> str | None:
        wanted = parse_qs(query).get("model", [None])[0]
        attrs = headers.get("x-amzn-sagemaker-custom-attributes", "")
        for part in attrs.split(","):
            key, _, value = part.strip().partition("=")
            if key.strip() == "model" and value:
                wanted = value.strip()
        if wanted:
            return wanted.lower()  # "model=Inpaint" is the inpaint model
        return next(iter(self.refs)) if len(self.refs) == 1 else None

    def _invoke(self, role: str | None, headers: dict[str, str], body: bytes, *, runtime: bool):
        if role is None:
            names = "|".join(self.refs)
            return self._json(400, _error("ambiguous_model",
                                          f"several models are loaded: add ?model={names} or the header "
                                          f"X-Amzn-SageMaker-Custom-Attributes: model={names}"))
        if role not in self.refs:
            return self._json(404, _error("unknown_model", f"model {role!r} is not served here; "
                                                           f"loaded: {sorted(self.refs)}"))
        if not self.ready.is_set():
            msg = self.load_error or "the models are still loading; retry when GET /ping answers 200"
            if runtime:
                return self._sm_error(503, "ServiceUnavailable", "not_ready", msg)
            return self._json(503, _error("not_ready", msg))
        if len(body) > MAX_PAYLOAD:
            msg = f"the request is {len(body):,} bytes; the limit is {MAX_PAYLOAD:,} bytes (6 MB)"
            if runtime:
                return self._sm_error(413, "ValidationError", "payload_too_large", msg)
            return self._json(413, _error("payload_too_large", msg))
        status, out, ctype = handle(self.models[role], body, headers.get("content-type"), headers.get("accept"),
                                    should_stop=CLIENT_GONE.get())
        if runtime and status != 200:
            return self._model_error(status, out)
        extra = {"x-Amzn-Invoked-Production-Variant": "AllTraffic"} if runtime else {}
        return status, out, {"Content-Type": ctype, **extra}

    @staticmethod
    def _json(status: int, payload: dict) -> tuple[int, bytes, dict]:
        return status, json.dumps(payload).encode(), {"Content-Type": JSON}

    def _sm_error(self, status: int, error_type: str, code: str, message: str):
        body = {"message": message, **_error(code, message)}
        return status, json.dumps(body).encode(), {"Content-Type": JSON, "x-amzn-ErrorType": error_type}

    def _model_error(self, status: int, out: bytes):
        """What SageMaker Runtime answers when the container does not return 200."""
        original = out.decode("utf-8", "replace")
        try:
            inner = json.loads(original)["error"]
        except (ValueError, KeyError, TypeError):
            inner = error_body("model_error", original[:500], status >= 500)["error"]
        kind = "client" if status < 500 else "server"
        body = {"message": f"Received {kind} error ({status}) from primary with message \"{original}\".",
                "OriginalStatusCode": status, "OriginalMessage": original,
                "LogStreamArn": "arn:aws:logs:local:000000000000:log-group:/aws/sagemaker/Endpoints/restyle",
                "error": inner}
        return 424, json.dumps(body).encode(), {"Content-Type": JSON, "x-amzn-ErrorType": "ModelError"}


def make_handler(server: ModelServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # small JSON answers must not wait for a delayed ACK
        server_version = "restyle-model/1"
        timeout = SOCKET_TIMEOUT_S  # a client that stops sending (headers or body) frees its thread

        def _refuse(self, status: int, code: str, msg: str) -> tuple[int, bytes, dict]:
            """A request we answer without reading its body: the connection closes after the answer."""
            self.close_connection = True
            if RUNTIME_PATH.match(urlsplit(self.path).path):  # shaped like SageMaker's answer
                return server._sm_error(status, "ValidationError", code, msg)
            return server._json(status, _error(code, msg))

        def _length(self) -> tuple[int | None, tuple[int, bytes, dict] | None]:
            """The body's length, or the answer that refuses it."""
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                return None, self._refuse(411, "length_required",
                                          "send the body with a Content-Length (chunked bodies are not accepted)")
            raw = (self.headers.get("Content-Length") or "0").strip()
            if not raw.isdigit():
                return None, self._refuse(400, "bad_content_length", f"Content-Length must be a whole number of "
                                                                     f"bytes, got {raw[:40]!r}")
            if int(raw) > HARD_LIMIT:
                return None, self._refuse(413, "payload_too_large",
                                          f"the request is {int(raw):,} bytes; the limit is {MAX_PAYLOAD:,} "
                                          "bytes (6 MB)")
            return int(raw), None

        def handle_expect_100(self) -> bool:
            """``Expect: 100-continue``: refuse an oversized or chunked body before the client uploads it."""
            _, refusal = self._length()
            if refusal is not None:
                self._send(*refusal, method="POST")
                return False
            return super().handle_expect_100()

        def _serve(self, method: str) -> None:
            length, refusal = self._length()
            if refusal is not None:
                status, out, hdrs = refusal
            else:
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                sock = self.connection
                token = CLIENT_GONE.set(lambda: client_gone(sock))
                try:
                    status, out, hdrs = server.route(method, self.path, headers, body)
                except Exception:
                    log.error("unhandled:\n%s", traceback.format_exc())
                    status, out, hdrs = server._json(500, _error("internal_error", "see the server log"))
                finally:
                    CLIENT_GONE.reset(token)
                if client_gone(sock):  # nobody to answer (the work itself stopped at the last step it ran)
                    self.close_connection = True
                    return
            self._send(status, out, hdrs, method=method)

        def _send(self, status: int, out: bytes, hdrs: dict, *, method: str) -> None:
            self.send_response(status)
            for k, v in hdrs.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(out)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(out)

        def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
            """The standard library's own errors (a garbled request line, an unknown method…) as JSON too."""
            self.close_connection = True
            self.request_version = "HTTP/1.1"  # a garbled request line reads as HTTP/0.9, which has no status line
            text = message or self.responses.get(code, ("error",))[0]
            self._send(code, json.dumps(_error("bad_http_request" if code < 500 else "internal_error",
                                               text)).encode(), {"Content-Type": JSON}, method="POST")

        def do_GET(self) -> None:  # noqa: N802
            self._serve("GET")

        def do_HEAD(self) -> None:  # noqa: N802
            self._serve("HEAD")

        def do_POST(self) -> None:  # noqa: N802
            self._serve("POST")

        def do_PUT(self) -> None:  # noqa: N802
            self._serve("PUT")

        def do_DELETE(self) -> None:  # noqa: N802
            self._serve("DELETE")

        def do_PATCH(self) -> None:  # noqa: N802
            self._serve("PATCH")

        def do_OPTIONS(self) -> None:  # noqa: N802
            self._serve("OPTIONS")

        def log_message(self, fmt: str, *args) -> None:
            log.debug("%s " + fmt, self.address_string(), *args)

    return Handler


class _HTTPServer(ThreadingHTTPServer):
    # the standard library's backlog of 5 resets connections when a burst of requests arrives at once
    request_queue_size = 128

    def handle_error(self, request, client_address) -> None:
        """A client that went away mid-answer is not our error; anything else is logged with its traceback."""
        import sys

        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            log.debug("client %s went away", client_address)
            return
        log.error("error serving %s:\n%s", client_address, traceback.format_exc())


def start(server: ModelServer, host: str = "127.0.0.1", port: int = 8080) -> ThreadingHTTPServer:
    """Bind, start serving in a daemon thread, load models in another; returns the HTTP server."""
    httpd = _HTTPServer((host, port), make_handler(server))
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, name="model-http", daemon=True).start()
    server.load_in_background()
    return httpd


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m model.serve", description=__doc__.splitlines()[0])
    ap.add_argument("--clipseg", help="CLIPSeg checkpoint: Hub id or folder")
    ap.add_argument("--inpaint", help="diffusers inpainting checkpoint: Hub id or folder")
    ap.add_argument("--upscale", default=os.environ.get(UPSCALE_ENV) or None,
                    help=f"diffusers x4 upscaler (StableDiffusionUpscalePipeline, e.g. {DEFAULT_UPSCALE}): Hub id "
                         f"or folder; env {UPSCALE_ENV}; the third endpoint, PREFIX-upscale")
    ap.add_argument("--lora", help="brand looks for the inpainting model: name=REF,name2=REF2 or one REF "
                                   "(folder or Hub id)")
    ap.add_argument("--tiny", metavar="DIR", nargs="?", const=".cache/tiny",
                    help="serve tiny random checkpoints from DIR (built there if missing): clipseg, inpaint and "
                         "upscale")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080, help="0 picks a free port (printed)")
    ap.add_argument("--prefix", default="restyle",
                    help="endpoint names are PREFIX-clipseg, PREFIX-inpaint and PREFIX-upscale")
    ap.add_argument("--device", help="cpu, cuda, cuda:1 … (default: cuda when available)")
    ap.add_argument("--async-output", metavar="S3_URI",
                    help="serve InvokeEndpointAsync on PREFIX-inpaint-async: read inputs from S3, write results "
                         "under this s3:// prefix (S3 via the standard AWS chain / AWS_ENDPOINT_URL)")
    ap.add_argument("--log-level", default="INFO", type=str.upper,
                    choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"])
    args = ap.parse_args(argv)
    # what can be known to be wrong is said now, in one line, not as a traceback after loading
    if not 0 <= args.port <= 65535:
        ap.error(f"--port must be 0-65535, got {args.port}")
    if not re.fullmatch(r"[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?", args.prefix):
        ap.error(f"--prefix must be lowercase letters, digits and '-' (like a SageMaker endpoint name), "
                 f"got {args.prefix!r}")
    if args.device and (why := bad_device(args.device)):
        ap.error(f"--device {why}")
    if args.async_output and not re.fullmatch(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](?:/.*)?", args.async_output):
        ap.error(f"--async-output must be an s3://bucket/prefix/ URI, got {args.async_output!r}")
    if args.lora:
        try:
            parse_looks(args.lora)
        except ValueError as exc:
            ap.error(f"--lora: {exc}")
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    refs = {}
    if args.tiny:
        from model.tiny import build_tiny

        root = build_tiny(args.tiny)
        refs = {role: str(root / role) for role in ("clipseg", "inpaint", "upscale")}
    if args.clipseg:
        refs["clipseg"] = args.clipseg
    if args.inpaint:
        refs["inpaint"] = args.inpaint
    if args.upscale:
        refs["upscale"] = args.upscale
    if not refs:
        ap.error(f"give --clipseg, --inpaint and/or --upscale (or {UPSCALE_ENV}, or --tiny)")
    server = ModelServer(refs, lora=args.lora, endpoint_names=default_endpoint_names(args.prefix),
                         async_output=args.async_output,
                         device=args.device)
    try:
        httpd = start(server, args.host, args.port)
    except OSError as exc:  # the port is taken, the host is not an address of this machine…
        print(f"python -m model.serve: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
              file=sys.stderr)
        return 2
    print(f"serving on http://{httpd.server_address[0]}:{httpd.server_address[1]}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
