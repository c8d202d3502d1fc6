"""A loopback Slack: a Web API emulator, signed-request helpers, and payload builders for end-to-end tests.

``SlackEmulator`` is a stdlib ``ThreadingHTTPServer`` on 127.0.0.1 (port 0) in a thread, in the style of
bolt-python's ``tests/mock_web_api_server``: point ``WebClient(base_url=emu.api_url)`` at it.  It records every
request per path (thread-safe), answers the Web API methods restyle uses like real Slack does (including the
parts that bite: file timestamps are not message ``ts`` values, ``url_private`` needs the bot token and otherwise
answers an HTML login page with 200, 429 carries ``Retry-After``), and ``wait_until`` polls with a timeout.

``SignedClient`` posts Events API JSON, slash commands and interactivity payloads to a Bolt app over HTTP, signed
exactly like Slack signs them (``v0=HMAC_SHA256(secret, "v0:{ts}:{body}")``).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from slack_sdk.signature import SignatureVerifier

BOT_TOKEN = "xoxb-123456789012-restyle-TEST-9f8e7d6c5b4a"
TEAM_ID = "T0RESTYLE"
BOT_USER_ID = "U0RESTYLEBOT"
BOT_ID = "B0RESTYLEBOT"
APP_ID = "A0RESTYLE"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"

LOGIN_PAGE = (b"<!DOCTYPE html><html><head><title>Slack</title></head><body>"
              b"<h1>Sign in to your workspace</h1><form action=\"/signin\"></form></body></html>")


@dataclass
class Call:
    """One request the emulator received."""

    path: str  # "chat.postMessage" for Web API methods, else the URL path ("/upload/F…", "/files-pri/…")
    method: str
    args: dict[str, Any]  # JSON body or form fields (single values), merged with the query string
    raw: bytes
    authorized: bool  # Authorization: Bearer <bot token>
    headers: dict[str, str] = field(default_factory=dict)  # Authorization left out


@dataclass
class HostedFile:
    id: str
    name: str
    mimetype: str
    content: bytes
    login_page: bool = False  # always answer the HTML login page (e.g. a missing files:read scope)
    redirect_to: str | None = None  # answer 302 with this Location instead of the bytes
    title: str = ""
    channel: str | None = None
    thread_ts: str | None = None
    created: int = 0


class SlackEmulator:
    def __init__(self, token: str = BOT_TOKEN) -> None:
        self.token = token
        self._lock = threading.Condition()
        self.calls: dict[str, list[Call]] = {}
        self.files: dict[str, HostedFile] = {}
        self.messages: list[dict] = []  # every posted/updated message, as Slack would store it
        self.channel_names: dict[str, str] = {}  # conversations.info: channel id → name
        self.user_messages: list[dict] = []  # messages people posted (user_post), for conversations.replies
        self._fail_next: dict[str, list[tuple[int, dict[str, str], dict]]] = {}
        self._ts = itertools.count(1)
        self._ids = itertools.count(1)
        self._base_ts = int(time.time())
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.api_url = f"{self.base_url}/api/"
        self._thread = threading.Thread(target=self._server.serve_forever, name="slack-emulator", daemon=True)

    # -- lifecycle -------------------------------------------------------------------------------------------------
    def start(self) -> SlackEmulator:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- test helpers ----------------------------------------------------------------------------------------------
    def next_ts(self) -> str:
        """A message timestamp: unique, increasing, in Slack's "seconds.micros" form."""
        return f"{self._base_ts + next(self._ts)}.{next(self._ids):06d}"

    def new_id(self, prefix: str) -> str:
        return f"{prefix}0{next(self._ids):08d}"

    def host_file(self, content: bytes, name: str = "model.png", mimetype: str = "image/png", *,
                  login_page: bool = False, redirect_to: str | None = None) -> dict:
        """Serve ``content`` at a ``url_private``; return the file object as it appears in a message event."""
        fid = self.new_id("F")
        with self._lock:
            self.files[fid] = HostedFile(fid, name, mimetype, content, login_page=login_page,
                                         redirect_to=redirect_to, created=int(time.time()))
        return self.file_object(fid)

    def file_object(self, fid: str) -> dict:
        f = self.files[fid]
        ext = f.name.rsplit(".", 1)[-1].lower() if "." in f.name else "bin"
        return {
            "id": fid, "created": f.created, "timestamp": f.created, "name": f.name, "title": f.title or f.name,
            "mimetype": f.mimetype, "filetype": ext, "pretty_type": ext.upper(), "user": "U0DESIGNER",
            "size": len(f.content), "mode": "hosted", "is_external": False, "is_public": f.channel is not None,
            "url_private": f"{self.base_url}/files-pri/{TEAM_ID}-{fid}/{urllib.parse.quote(f.name)}",
            "url_private_download": f"{self.base_url}/files-pri/{TEAM_ID}-{fid}/download/{urllib.parse.quote(f.name)}",
            "permalink": f"https://restyle-test.slack.com/files/U0DESIGNER/{fid}/{urllib.parse.quote(f.name)}",
            "shares": {},  # like real Slack right after an upload: filled in asynchronously, never rely on it
        }

    def rate_limit_next(self, path: str, retry_after: int = 1, times: int = 1) -> None:
        """The next ``times`` calls to ``path`` answer 429 with ``Retry-After``."""
        self.fail_next(path, 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(retry_after)}, times)

    def fail_next(self, path: str, status: int, body: dict, headers: dict[str, str] | None = None,
                  times: int = 1) -> None:
        with self._lock:
            self._fail_next.setdefault(path, []).extend([(status, headers or {}, body)] * times)

    def count(self, path: str) -> int:
        with self._lock:
            return len(self.calls.get(path, []))

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {p: len(c) for p, c in sorted(self.calls.items())}

    def bodies(self, path: str) -> list[dict[str, Any]]:
        with self._lock:
            return [c.args for c in self.calls.get(path, [])]

    def wait_until(self, predicate, timeout: float = 30.0, what: str = "condition"):
        """Poll ``predicate()`` (re-checked after every request) until it returns something truthy."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                value = predicate()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout}s waiting for {what}; calls: {self.counts()}")
                self._lock.wait(min(left, 0.2))

    def thread_messages(self, channel: str, thread_ts: str) -> list[dict]:
        with self._lock:
            return [m for m in self.messages if m["channel"] == channel and m.get("thread_ts") == thread_ts]

    # -- the Web API -----------------------------------------------------------------------------------------------
    def _record(self, call: Call) -> None:
        with self._lock:
            self.calls.setdefault(call.path, []).append(call)
            self._lock.notify_all()

    def _take_failure(self, path: str):
        with self._lock:
            queue = self._fail_next.get(path)
            return queue.pop(0) if queue else None

    def api(self, method: str, args: dict[str, Any], authorized: bool) -> dict:
        if not authorized:
            return {"ok": False, "error": "not_authed" if method != "auth.test" else "invalid_auth"}
        fn = getattr(self, "_api_" + method.replace(".", "_"), None)
        if fn is None:
            return {"ok": False, "error": "unknown_method"}
        return fn(args)

    def _api_auth_test(self, args: dict) -> dict:
        return {"ok": True, "url": "https://restyle-test.slack.com/", "team": "Restyle Test", "user": "restyle",
                "team_id": TEAM_ID, "user_id": BOT_USER_ID, "bot_id": BOT_ID, "is_enterprise_install": False}

    def _message(self, args: dict, ts: str) -> dict:
        blocks = args.get("blocks")
        if isinstance(blocks, str):
            blocks = json.loads(blocks)
        return {"type": "message", "channel": args.get("channel"), "ts": ts, "thread_ts": args.get("thread_ts"),
                "text": args.get("text", ""), "blocks": blocks or [], "bot_id": BOT_ID, "user": BOT_USER_ID}

    def _api_chat_postMessage(self, args: dict) -> dict:
        if not args.get("channel"):
            return {"ok": False, "error": "channel_not_found"}
        if not args.get("text") and not args.get("blocks"):
            return {"ok": False, "error": "no_text"}
        msg = self._message(args, self.next_ts())
        with self._lock:
            self.messages.append(msg)
        return {"ok": True, "channel": msg["channel"], "ts": msg["ts"], "message": msg}

    def _api_chat_update(self, args: dict) -> dict:
        with self._lock:
            for m in self.messages:
                if m["channel"] == args.get("channel") and m["ts"] == args.get("ts"):
                    m["text"] = args.get("text", m["text"])
                    if "blocks" in args:  # Slack replaces the blocks when the update names them
                        blocks = args["blocks"]
                        m["blocks"] = (json.loads(blocks) if isinstance(blocks, str) else blocks) or []
                    m.setdefault("edits", []).append(m["text"])
                    return {"ok": True, "channel": m["channel"], "ts": m["ts"], "text": m["text"]}
        return {"ok": False, "error": "message_not_found"}

    def _api_chat_postEphemeral(self, args: dict) -> dict:
        if not args.get("channel") or not args.get("user"):
            return {"ok": False, "error": "invalid_arguments"}
        return {"ok": True, "message_ts": self.next_ts()}

    def _api_files_getUploadURLExternal(self, args: dict) -> dict:
        if not args.get("filename") or not str(args.get("length", "")).isdigit():
            return {"ok": False, "error": "invalid_arguments"}
        fid = self.new_id("F")
        with self._lock:
            self.files[fid] = HostedFile(fid, args["filename"], "application/octet-stream", b"")
        return {"ok": True, "upload_url": f"{self.base_url}/upload/{fid}", "file_id": fid}

    def _api_files_completeUploadExternal(self, args: dict) -> dict:
        wanted = args.get("files")
        wanted = json.loads(wanted) if isinstance(wanted, str) else wanted
        out = []
        with self._lock:
            for item in wanted or []:
                f = self.files.get(item.get("id"))
                if f is None or not f.content:
                    return {"ok": False, "error": "file_not_found"}
                f.title = item.get("title") or f.name
                f.channel = args.get("channel_id")
                f.thread_ts = args.get("thread_ts")
                # like real Slack: the *file's* timestamps are Unix seconds, not the ts of the message sharing it
                f.created = int(time.time())
                out.append(self.file_object(f.id))
        return {"ok": True, "files": out}

    def _api_conversations_info(self, args: dict) -> dict:
        """A channel's name: ``channel_names`` (set by a test), else its id in lower case."""
        ch = args.get("channel")
        if not ch:
            return {"ok": False, "error": "channel_not_found"}
        return {"ok": True, "channel": {"id": ch, "name": self.channel_names.get(ch, ch.lower()),
                                        "is_channel": True, "is_im": ch.startswith("D")}}

    def user_post(self, event: dict) -> dict:
        """Remember a message a person posted (a ``message``/``file_share`` event), for ``conversations.replies``."""
        with self._lock:
            self.user_messages.append(event)
        return event

    def _api_conversations_replies(self, args: dict) -> dict:
        with self._lock:
            msgs = [m for m in self.user_messages + self.messages
                    if m.get("channel") == args.get("channel") and args.get("ts") in (m.get("ts"), m.get("thread_ts"))]
        if not msgs:
            return {"ok": False, "error": "thread_not_found"}
        msgs.sort(key=lambda m: (m.get("ts") != args.get("ts"), float(m.get("ts", 0))))
        return {"ok": True, "messages": msgs[:int(args.get("limit") or 1000)], "has_more": False}

    def _api_files_info(self, args: dict) -> dict:
        with self._lock:
            if args.get("file") not in self.files:
                return {"ok": False, "error": "file_not_found"}
            return {"ok": True, "file": self.file_object(args["file"])}

    # -- HTTP ------------------------------------------------------------------------------------------------------
    def _handler(self):
        emu = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):  # noqa: A002 - http.server's name
                pass

            def _send(self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def _json(self, status: int, obj: dict, headers: dict[str, str] | None = None):
                self._send(status, json.dumps(obj).encode(), "application/json; charset=utf-8", headers)

            def _read(self) -> tuple[bytes, dict[str, Any]]:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                parsed = urllib.parse.urlsplit(self.path)
                args: dict[str, Any] = {k: v[-1] for k, v in urllib.parse.parse_qs(parsed.query).items()}
                ctype = self.headers.get("Content-Type", "")
                if not parsed.path.startswith("/api/"):
                    return raw, args  # an upload: the bytes are the file, whatever the Content-Type says
                if raw and ctype.startswith("application/json"):
                    args.update(json.loads(raw))
                elif raw and ctype.startswith("application/x-www-form-urlencoded"):
                    args.update({k: v[-1] for k, v in urllib.parse.parse_qs(raw.decode()).items()})
                return raw, args

            def _call(self, path: str, raw: bytes, args: dict) -> Call:
                auth = self.headers.get("Authorization", "")
                authorized = auth == f"Bearer {emu.token}" or args.get("token") == emu.token
                args.pop("token", None)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "authorization"}
                call = Call(path, self.command, args, raw, authorized, headers)
                emu._record(call)
                return call

            def do_POST(self):
                raw, args = self._read()
                path = urllib.parse.urlsplit(self.path).path
                if path.startswith("/api/"):
                    method = path[len("/api/"):]
                    call = self._call(method, raw, args)
                    failure = emu._take_failure(method)
                    if failure is not None:
                        status, headers, body = failure
                        return self._json(status, body, headers)
                    return self._json(200, emu.api(method, args, call.authorized))
                if path.startswith("/upload/"):
                    fid = path.rsplit("/", 1)[-1]
                    self._call(path, raw, {})
                    with emu._lock:
                        f = emu.files.get(fid)
                        if f is None:
                            return self._send(404, b"not found", "text/plain")
                        f.content = raw
                    return self._send(200, f"OK - {len(raw)}".encode(), "text/plain")
                self._call(path, raw, args)
                return self._send(404, b"not found", "text/plain")

            def do_GET(self):
                parsed = urllib.parse.urlsplit(self.path)
                if parsed.path.startswith("/api/"):
                    raw, args = self._read()
                    method = parsed.path[len("/api/"):]
                    call = self._call(method, raw, args)
                    return self._json(200, emu.api(method, args, call.authorized))
                call = self._call(parsed.path, b"", {})
                if parsed.path.startswith("/files-pri/"):
                    fid = parsed.path.split("/")[2].split("-", 1)[-1]
                    with emu._lock:
                        f = emu.files.get(fid)
                    if f is None:
                        return self._send(404, b"<html>Not found</html>", "text/html; charset=utf-8")
                    if f.redirect_to:
                        self.send_response(302)
                        self.send_header("Location", f.redirect_to)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return None
                    if not call.authorized or f.login_page:  # real Slack: 200 + a sign-in page, not 401
                        return self._send(200, LOGIN_PAGE, "text/html; charset=utf-8")
                    return self._send(200, f.content, f.mimetype)
                return self._send(404, b"not found", "text/plain")

        return Handler


# -- signed requests to the Bolt app -------------------------------------------------------------------------------
@dataclass
class Response:
    status: int
    body: str
    headers: dict[str, str]


class SignedClient:
    """Posts to a Bolt app's ``/slack/events`` signed with ``signing_secret``, like Slack does."""

    def __init__(self, url: str, signing_secret: str = SIGNING_SECRET) -> None:
        self.url = url
        self.verifier = SignatureVerifier(signing_secret)
        self._event_ids = itertools.count(1)

    def post(self, body: str, content_type: str, *, timestamp: int | None = None, signature: str | None = None,
             headers: dict[str, str] | None = None, timeout: float = 10.0) -> Response:
        ts = str(int(time.time()) if timestamp is None else timestamp)
        sig = signature or self.verifier.generate_signature(timestamp=ts, body=body)
        req = urllib.request.Request(self.url, data=body.encode(), method="POST", headers={
            "Content-Type": content_type, "X-Slack-Request-Timestamp": ts, "X-Slack-Signature": sig,
            **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return Response(resp.status, resp.read().decode(), dict(resp.headers))
        except urllib.error.HTTPError as exc:
            return Response(exc.code, exc.read().decode(), dict(exc.headers))

    def event(self, event: dict, *, event_id: str | None = None, retry_num: int | None = None,
              **kw) -> Response:
        """An Events API ``event_callback`` (JSON)."""
        payload = event_callback(event, event_id or f"Ev0{next(self._event_ids):08d}")
        headers = dict(kw.pop("headers", None) or {})
        if retry_num is not None:
            headers.update({"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": "http_timeout"})
        return self.post(json.dumps(payload), "application/json", headers=headers, **kw)

    def command(self, text: str, *, channel: str, user: str = "U0DESIGNER", command: str = "/restyle",
                **kw) -> Response:
        """A slash command (form-encoded)."""
        form = {"token": "legacy-verification-token", "team_id": TEAM_ID, "team_domain": "restyle-test",
                "channel_id": channel, "channel_name": kw.pop("channel_name", "design"), "user_id": user, "user_name": "designer",
                "command": command, "text": text, "api_app_id": APP_ID, "is_enterprise_install": "false",
                "response_url": "https://hooks.slack.com/commands/T0RESTYLE/1/abc",
                "trigger_id": f"1337.{next(self._event_ids)}.abcdef"}  # unique per invocation, as Slack's are
        return self.post(urllib.parse.urlencode(form), "application/x-www-form-urlencoded", **kw)

    def action(self, action_id: str, value: str, *, channel: str, message_ts: str, thread_ts: str,
               user: str = "U0DESIGNER", message_text: str = "variation", **kw) -> Response:
        """A ``block_actions`` interactivity payload (form-encoded ``payload=``) for a button click."""
        payload = {
            "type": "block_actions", "team": {"id": TEAM_ID, "domain": "restyle-test"},
            "user": {"id": user, "username": "designer", "team_id": TEAM_ID}, "api_app_id": APP_ID,
            "token": "legacy-verification-token", "trigger_id": "1337.42.abcdef",
            "container": {"type": "message", "message_ts": message_ts, "channel_id": channel,
                          "is_ephemeral": False, "thread_ts": thread_ts},
            "channel": {"id": channel, "name": "design"},
            "message": {"type": "message", "ts": message_ts, "thread_ts": thread_ts, "bot_id": BOT_ID,
                        "user": BOT_USER_ID, "text": message_text},
            "response_url": "https://hooks.slack.com/actions/T0RESTYLE/1/abc",
            "actions": [{"type": "button", "action_id": action_id, "block_id": "restyle", "value": value,
                         "action_ts": str(time.time()), "text": {"type": "plain_text", "text": "button"}}],
        }
        return self.post(urllib.parse.urlencode({"payload": json.dumps(payload)}),
                         "application/x-www-form-urlencoded", **kw)


# -- payload builders ----------------------------------------------------------------------------------------------
def event_callback(event: dict, event_id: str) -> dict:
    return {"token": "legacy-verification-token", "team_id": TEAM_ID, "api_app_id": APP_ID, "event": event,
            "type": "event_callback", "event_id": event_id, "event_time": int(time.time()),
            "authorizations": [{"enterprise_id": None, "team_id": TEAM_ID, "user_id": BOT_USER_ID,
                                "is_bot": True, "is_enterprise_install": False}],
            "is_ext_shared_channel": False}


_msg_ts = itertools.count(1)


def user_ts() -> str:
    """A ts for a message a person posted (distinct from the emulator's bot messages)."""
    return f"{int(time.time()) - 1000}.{900000 + next(_msg_ts):06d}"


def file_share(channel: str, files: list[dict], *, text: str = "", user: str = "U0DESIGNER", ts: str | None = None,
               thread_ts: str | None = None, channel_type: str = "channel") -> dict:
    ev = {"type": "message", "subtype": "file_share", "channel": channel, "user": user, "text": text,
          "ts": ts or user_ts(), "files": files, "upload": False, "display_as_bot": False,
          "channel_type": channel_type}
    ev["event_ts"] = ev["ts"]
    if thread_ts:
        ev["thread_ts"] = thread_ts
    return ev


def message(channel: str, text: str, *, user: str = "U0DESIGNER", ts: str | None = None,
            thread_ts: str | None = None, channel_type: str = "channel", **extra) -> dict:
    ev = {"type": "message", "channel": channel, "user": user, "text": text, "ts": ts or user_ts(),
          "channel_type": channel_type, **extra}
    ev["event_ts"] = ev["ts"]
    if thread_ts:
        ev["thread_ts"] = thread_ts
    return ev


def reaction(channel: str, ts: str, name: str, *, added: bool = True, user: str = "U0DESIGNER",
             item_type: str = "message") -> dict:
    item = {"type": item_type, "channel": channel, "ts": ts} if item_type == "message" else \
        {"type": item_type, "file": ts}
    return {"type": "reaction_added" if added else "reaction_removed", "user": user, "reaction": name,
            "item_user": BOT_USER_ID, "item": item, "event_ts": str(time.time())}
