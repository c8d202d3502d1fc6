"""The Slack adapter: a Bolt app that turns Slack events into engine events and renders the replies in threads.

``python -m bot slack`` runs it over Socket Mode (``SLACK_BOT_TOKEN`` + ``SLACK_APP_TOKEN``); ``--http --port N``
serves the Events API at ``/slack/events`` instead (``SLACK_SIGNING_SECRET``; Bolt verifies every request), on
waitress through Bolt's WSGI adapter (``bot.http_server``).  Readiness (``/healthz``) and the SIGTERM drain are in
``bot.health``.

Listeners stay small; the cross-cutting work is shared:

* each event listener first claims the delivery's ``event_id`` (``Store.claim_event``), so a Slack retry or a
  Socket Mode re-delivery never generates twice — in the listener, after Bolt acked, so no ack waits on the store
  (issue #11); message-level work is additionally claimed by ``channel:ts``, because one @mention arrives twice
  (``message`` *and* ``app_mention``); a global middleware drops a replayed slash command or button click;
* everything that may generate is acked at once and run on the ``JobQueue``: a status message in the thread is
  updated in place from the engine's progress callback (at most once a second);
* ``Variations`` become a contact-sheet upload plus, per variation, an image upload and a message with
  Favourite / Use as base / More like this buttons.  That message's ``channel:ts`` is linked to the variation, so
  a ⭐ ❤️ 👍 reaction on it points at exactly one variation.

Nothing here logs request bodies, headers or tokens.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from slack_bolt import App, BoltRequest, BoltResponse
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

from bot import controls as C
from bot import messages as T
from bot.events import (
    Answer,
    Command,
    Event,
    Favorite,
    FavoritesList,
    Files,
    Message,
    MoreLike,
    Photo,
    Question,
    Reply,
    Swatch,
    Text,
    Use,
    VariationOut,
    Variations,
)
from bot.intent import plain_prompt
from bot.jobs import JobQueue, prestart
from bot.settings import Settings

log = logging.getLogger("restyle.slack")


# -- knobs ---------------------------------------------------------------------------------------------------------
FAV_REACTIONS = frozenset({"star", "heart", "+1", "thumbsup"})
ACTION_FAV, ACTION_USE, ACTION_MORE = "restyle_fav", "restyle_use", "restyle_more"
ACTION_UPSCALE = "restyle_upscale"
#: Bolt's listener threads at least (more with more workers: ``build_app``)
LISTENER_THREADS = 16
ACTIONS = (ACTION_FAV, ACTION_USE, ACTION_MORE, ACTION_UPSCALE)
#: The Generate / Not that buttons under a question restyle asks before spending GPU time (value: the question id)
ACTION_YES, ACTION_NO = "restyle_confirm", "restyle_cancel"
#: Socket Mode: ping Slack this often (s); a connection with no pong for 4 intervals is dropped and reconnected.
PING_INTERVAL_S = 10.0
#: The status message is edited at most this often (s) — chat.update is rate-limited (~50/min per workspace).
UPDATE_EVERY_S = 1.0
MAX_DOWNLOAD_BYTES = 50 * 1024 * 1024
#: Variations above this many pixels are uploaded as JPEG (quality 95, no chroma subsampling) instead of PNG: a
#: 24-megapixel PNG is ~17 MB, its JPEG ~3 MB.  The lossless PNG stays in the data dir.
UPLOAD_PNG_MAX_PIXELS = 4_000_000
DOWNLOAD_TIMEOUT_S = 30.0
EVENTS_PATH = "/slack/events"
MESSAGE_SUBTYPES = {None, "file_share", "thread_broadcast"}
#: "@restyle forget" / "forget this thread" in a photo thread: its data deleted now (bot/controls.py)
FORGET = re.compile(r"^\s*(?:/restyle\s+)?(?:please\s+)?forget(?:\s+(?:this|it|this\s+thread|everything))?\s*[.!]?\s*$",
                    re.IGNORECASE)


# -- small helpers -------------------------------------------------------------------------------------------------
def thread_id(channel: str, root_ts: str) -> str:
    return f"slack:{channel}:{root_ts}"


def parse_thread(thread: str) -> Place | None:
    """``"slack:C1:17.01"`` → Place("C1", "17.01"); None for other adapters' threads."""
    parts = thread.split(":", 2)
    if len(parts) != 3 or parts[0] != "slack":
        return None
    return Place(parts[1], parts[2])


def escape(text: str) -> str:
    """Slack mrkdwn escaping for text we did not write (prompts)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _asks_restyle(text: str) -> bool:
    """Is ``text`` meant for restyle (a request, or a #N reference) rather than people talking?"""
    from bot.intent import read

    reading = read(text)
    return reading.generates or reading.variation is not None


def looks_like_html(data: bytes) -> bool:
    head = data[:512].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html", b"<head", b"<body"))


@dataclass(frozen=True)
class Place:
    """Where replies go: a channel and the ROOT ts of the photo's thread."""

    channel: str
    root: str

    @property
    def thread(self) -> str:
        return thread_id(self.channel, self.root)


class DownloadError(Exception):
    """A user-facing reason the photo could not be fetched (the message is the thread reply)."""


class Status:
    """The status message ("On it…", then "Working on it… 3/30"), edited in place (throttled) until the job
    finishes."""

    def __init__(self, client: WebClient, channel: str, ts: str, text: str,
                 fallback: Callable[[str], object] | None = None) -> None:
        self.client, self.channel, self.ts = client, channel, ts
        self._fallback = fallback  # posts a text as a new thread message
        self._lock = threading.Lock()
        self._last_text = text
        self._last_at = time.monotonic()
        self.closed = False

    def progress(self, done: int, total: int, text: str) -> None:
        with self._lock:
            now = time.monotonic()
            if self.closed or text == self._last_text or now - self._last_at < UPDATE_EVERY_S:
                return
            self._last_at = now
            if self._update(text):  # a failed edit is not shown: finish() must still say it
                self._last_text = text

    def finish(self, text: str) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
            if text != self._last_text and not self._update(text) and self._fallback is not None:
                self._fallback(text)  # the status message is gone (deleted, rate-limited…): say it anew

    def _update(self, text: str) -> bool:
        try:
            self.client.chat_update(channel=self.channel, ts=self.ts, text=text)
            return True
        except (SlackApiError, SlackClientError, OSError) as exc:
            log.warning("could not update the status message: %s", _why(exc))
            return False


def _why(exc: BaseException) -> str:
    if isinstance(exc, SlackApiError):
        return f"Slack error {exc.response.get('error', '?')}"
    return type(exc).__name__


# -- the adapter ---------------------------------------------------------------------------------------------------
class SlackBot:
    """State shared by the listeners: the engine, the Web API client, the job queue and the bot's identity."""

    def __init__(self, engine, settings: Settings, client: WebClient, jobs: JobQueue) -> None:
        self.engine = engine
        self.store = engine.store
        self.settings = settings
        self.client = client
        self.jobs = jobs
        self.bot_user_id: str | None = None
        self._thread_locks: dict[str, threading.Lock] = {}  # one generation at a time per thread
        self._locks_guard = threading.Lock()
        self.controls: C.Controls = getattr(engine, "controls", None) or C.Controls(self.store, settings)
        self.channels = C.ChannelPolicy(settings, client)  # RESTYLE_CHANNELS / RESTYLE_ALLOW_DMS

    # -- middleware ------------------------------------------------------------------------------------------------
    def dedupe(self, body: dict, context, request: BoltRequest,
               next: Callable[[], BoltResponse]):  # noqa: A002 - Bolt's argument name
        """Global middleware: a slash command or block action is processed once per signed body and timestamp (a
        replay within Slack's 5-minute window).  Events API deliveries pass: their listeners claim the ``event_id``
        once Bolt has acked (``_first_delivery``)."""
        if context.get("bot_user_id") and not self.bot_user_id:
            self.bot_user_id = context["bot_user_id"]
        if body.get("type") == "event_callback":
            return next()
        key = C.replay_key(body, request.raw_body or "", request.headers or {})
        if key and not self.store.claim_event(key):
            log.info("a replayed %s was acked and not run again", "slash command" if body.get("command")
                     else body.get("type"))
            return BoltResponse(status=200, body="")
        return next()

    def channel_ok(self, channel: str, *, is_dm: bool = False, name: str | None = None) -> bool:
        """May restyle work in ``channel`` (RESTYLE_CHANNELS, RESTYLE_ALLOW_DMS)?"""
        return self.channels.allowed(channel, is_dm=is_dm, name=name)

    def channel_note(self, channel: str, *, is_dm: bool) -> str:
        return T.DMS_OFF if is_dm or channel.startswith("D") else T.CHANNEL_NOT_ALLOWED.format(
            channels=self.channels.listed)

    def controls_command(self, ack, sub: str, text: str, channel: str, user: str) -> None:
        """``/restyle usage [csv]`` and ``/restyle limits [key=value …]``."""
        rest = text.split(" ", 1)[1] if " " in text else ""
        if sub == "limits":
            ack(text=self.controls.set_limits(user, rest))
            return
        if rest.strip().lower() == "csv":
            if not self.controls.is_admin(user):
                ack(text=T.ADMINS_ONLY.format(what="download the usage CSV"))
                return
            data, n = self.controls.usage_csv()
            try:
                self.client.files_upload_v2(channel=channel, content=data, filename=f"restyle-usage-"
                                            f"{C.day_label()}.csv", title="restyle usage", snippet_type="csv")
            except (SlackApiError, SlackClientError, OSError) as exc:
                log.warning("uploading the usage CSV to %s failed: %s", channel, _why(exc))
                ack(text=T.USAGE_CSV_FAILED.format(why=_why(exc)))
                return
            ack(text=T.USAGE_CSV.format(n=n))
            return
        text_out, blocks = self.controls.usage_blocks(user, channel)
        ack(text=text_out, blocks=blocks)

    def _first_delivery(self, body: dict) -> bool:
        """True the first time this Events API delivery's ``event_id`` is seen (by any replica sharing the
        store); False for a Slack retry or a Socket Mode re-delivery, which then does nothing.  Called first in
        each event listener: Bolt has acked by then, so the ack never waits on the store."""
        event_id = body.get("event_id")
        if event_id and not self.store.claim_event(str(event_id)):
            log.info("event %s was already handled; the re-delivery was acked and does nothing", event_id)
            return False
        return True

    # -- listeners -------------------------------------------------------------------------------------------------
    def on_message(self, body: dict, event: dict) -> None:
        if event.get("subtype") not in MESSAGE_SUBTYPES:
            return  # message_changed, message_deleted, channel_join, bot_message …
        if self._first_delivery(body):
            self._user_message(event, mentioned=False)

    def on_mention(self, body: dict, event: dict) -> None:
        if self._first_delivery(body):
            self._user_message(event, mentioned=True)

    def on_file_shared(self) -> None:
        """``file_shared`` only needs an ack (else Slack retries); the ``message``/``file_share`` event does the work."""

    def on_reaction(self, body: dict, event: dict) -> None:
        if not self._first_delivery(body):
            return
        name = str(event.get("reaction", "")).split("::", 1)[0]  # "+1::skin-tone-2" → "+1"
        item = event.get("item") or {}
        user = event.get("user")
        if name not in FAV_REACTIONS or item.get("type") != "message" or not user or user == self.bot_user_id:
            return
        vid = self.store.variation_for_message(f"{item.get('channel')}:{item.get('ts')}")
        variation = self.store.variation(vid) if vid else None
        place = parse_thread(variation.thread) if variation else None
        if variation is None or place is None:
            return
        added = event.get("type") == "reaction_added"
        source = "+1" if name == "thumbsup" else name  # one emoji, two names
        try:
            at = float(event.get("event_ts") or "")
        except ValueError:
            at = None
        self._run(place, Favorite(variation.thread, user, variation.id, added=added, source=source, at=at),
                  ephemeral_to=user)

    def on_action(self, ack, body: dict, action: dict) -> None:
        ack()
        user = (body.get("user") or {}).get("id", "")
        channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")
        vid = str(action.get("value", ""))
        variation = self.store.variation(vid)
        place = parse_thread(variation.thread) if variation else None
        if variation is None or place is None:
            if channel:
                self._ephemeral(channel, user, None, T.GONE_VARIATION)
            return
        aid = action.get("action_id")
        if aid == ACTION_FAV:
            self._run(place, Favorite(variation.thread, user, vid, added=True, source="button"), ephemeral_to=user)
        elif aid == ACTION_USE:
            self._run(place, Use(variation.thread, user, vid))
        elif aid == ACTION_MORE:
            self._run(place, MoreLike(variation.thread, user, vid))
        elif aid == ACTION_UPSCALE:  # the same as saying "upscale #N" in the thread
            self._run(place, Message(variation.thread, user, f"upscale #{variation.number}"))

    def on_answer(self, ack, body: dict, action: dict) -> None:
        """Generate / Not that under a question: the answer goes to the engine (which knows whether that question is
        still open); the buttons are replaced by who answered, so nobody answers twice."""
        ack()
        user = (body.get("user") or {}).get("id", "")
        message = body.get("message") or {}
        container = body.get("container") or {}
        channel = (body.get("channel") or {}).get("id") or container.get("channel_id")
        root = message.get("thread_ts") or container.get("thread_ts")
        if not channel or not root:
            return
        place = Place(channel, root)
        yes = action.get("action_id") == ACTION_YES
        if message.get("ts"):
            text = str(message.get("text") or "")
            answered = f"<@{user}>: {'Generate' if yes else 'Not that'}"
            try:
                self.client.chat_update(channel=channel, ts=message["ts"], text=text, blocks=[
                    {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000] or " "}},
                    {"type": "context", "elements": [{"type": "mrkdwn", "text": answered}]}])
            except (SlackApiError, SlackClientError, OSError) as exc:
                log.warning("chat.update of a question in %s failed: %s", channel, _why(exc))
        self._run(place, Answer(place.thread, user, str(action.get("value", "")), yes))

    def on_command(self, ack, command: dict) -> None:
        text = " ".join(str(command.get("text", "")).split())
        channel, user = command.get("channel_id", ""), command.get("user_id", "")
        sub = text.split(" ", 1)[0].lower()
        is_dm = command.get("channel_name") == "directmessage"
        if not self.channel_ok(channel, is_dm=is_dm, name=command.get("channel_name")):
            ack(text=self.channel_note(channel, is_dm=is_dm))
            return
        if sub in ("", "help"):
            ack(text=T.HELP)
            return
        if sub in ("usage", "limits"):  # team controls (bot/controls.py)
            self.controls_command(ack, sub, text, channel, user)
            return
        if sub == "forget":  # the channel's latest photo thread, deleted now (its starter or an admin)
            latest = self.store.latest_thread(thread_id(channel, ""))
            ack(text=self.controls.forget(latest, user) if latest else T.FORGET_USAGE)
            return
        if sub not in ("batch", "favorites", "favourites", "favs", "settings", "lookbook"):
            ack(text=T.UNKNOWN_COMMAND.format(sub=escape(sub)) + T.HELP)
            return
        thread = self.store.latest_thread(thread_id(channel, ""))
        place = parse_thread(thread) if thread else None
        if place is None:
            ack(text=T.NO_THREAD)
            return
        event = Command(thread, user, text)
        if sub == "batch":
            count = re.match(r"batch\s+(-?\d+)\b", text, re.IGNORECASE)
            # the engine plans the batch now, exactly as it will run it: the answer names what will come
            job = None if count and int(count.group(1)) < 1 else self.engine.preview_batch(thread, user, text)
            if job is None or isinstance(job, Text):  # "batch 0", or "batch 8" with no look yet to repeat
                ack(text=T.BATCH_USAGE if job is None or job.text in (T.NO_GARMENT, T.NO_PREVIOUS) else job.text)
                return
            capped = T.BATCH_CAPPED.format(cap=job.count) if (job.intent.count or 0) > job.count and not job.note \
                else ""
            ack(text=T.BATCH_STARTED.format(n=job.count, prompt=escape(plain_prompt(job.prompt))) + capped + job.note)
        else:
            ack()
        self._run(place, event)

    # -- messages and photos ---------------------------------------------------------------------------------------
    def _user_message(self, event: dict, *, mentioned: bool) -> None:
        user, channel, ts = event.get("user"), event.get("channel"), event.get("ts")
        if event.get("bot_id") or not user or user == self.bot_user_id or not channel or not ts:
            return
        raw = str(event.get("text") or "")
        if self.bot_user_id and re.search(rf"<@{re.escape(self.bot_user_id)}(?:\|[^>]*)?>", raw):
            mentioned = True  # "<@U0BOT>" or "<@U0BOT|restyle>"
        if not self.channel_ok(channel, is_dm=event.get("channel_type") == "im"):
            # not on RESTYLE_CHANNELS: photos and messages are ignored (nothing downloaded); a mention is answered
            # once per person and channel, privately
            if mentioned and self.store.claim_notice(f"channel-note:{channel}:{user}"):
                self._ephemeral(channel, user, event.get("thread_ts"),
                                self.channel_note(channel, is_dm=event.get("channel_type") == "im"))
            return
        text = re.sub(r"<@[A-Z0-9]+(?:\|[^>]*)?>", " ", raw).strip() if mentioned else raw.strip()
        parent = event.get("thread_ts") if event.get("thread_ts") not in (None, ts) else None
        is_dm = event.get("channel_type") == "im"
        files = event.get("files") or []
        if files:
            if not (is_dm or mentioned or self.settings.photos == "all" or _asks_restyle(text)):
                return  # a photo nobody asked restyle about is not downloaded (a request in its thread fetches it)
            if self._claim(channel, ts):
                self._photo(channel, ts, parent, user, files, text)
            return
        if parent is not None:
            place = Place(channel, parent)
            if self.store.has_thread(place.thread) and FORGET.match(text) and (mentioned or is_dm):
                if self._claim(channel, ts):  # "@restyle forget": this thread's data deleted now
                    self._post(place, self.controls.forget(place.thread, user))
                return
            if not self.store.has_thread(place.thread) and (gone := self.controls.forgotten_text(place.thread)):
                if (mentioned or is_dm or _asks_restyle(text)) and self._claim(channel, ts):
                    self._post(place, gone)  # deleted by retention or /restyle forget: say so, generate nothing
                return
            if self.store.has_thread(place.thread):
                if self._claim(channel, ts):
                    # said among people in a channel thread unless it mentions restyle: the engine keeps quiet
                    # about small talk then
                    self._run(place, Message(place.thread, user, text, addressed=mentioned or is_dm))
            elif (mentioned or _asks_restyle(text)) and self._claim(channel, ts):
                # the first request in the thread of a photo restyle was not asked about when it was shared
                if not self._photo_from_parent(place, user, text) and mentioned:
                    self._post(place, T.NO_THREAD)
            return
        if not (mentioned or is_dm):
            return  # channel chatter
        latest = self.store.latest_thread(thread_id(channel, "")) if is_dm else None
        place = parse_thread(latest) if latest else None
        if place is not None and text.lower() not in ("", "help"):
            if self._claim(channel, ts):  # a DM needs no threads: top-level text continues the latest photo
                self._run(place, Message(place.thread, user, text))
        elif self._claim(channel, ts):
            self._post(Place(channel, ts), T.HELP if text.lower() in ("", "help") else T.NO_THREAD)

    def _claim(self, channel: str, ts: str) -> bool:
        """One message, one reaction — even when it arrives as both ``message`` and ``app_mention``."""
        return self.store.claim_event(f"msg:{channel}:{ts}")

    def _photo(self, channel: str, ts: str, parent: str | None, user: str, files: list[dict], text: str) -> None:
        # an image shared into a thread that has its photo is a swatch or print for it ("use this print on …")
        swatch = parent is not None and self.store.has_thread(thread_id(channel, parent))
        place = Place(channel, parent or ts)
        files = [self._resolve_file(f) for f in files]
        image = next((f for f in files if str(f.get("mimetype", "")).startswith("image/")), None)
        if image is None:
            f = files[0]
            if f.get("mode") == "hidden_by_limit":
                self._post(place, T.FILE_HIDDEN)
                return
            what = f.get("pretty_type") or f.get("filetype") or f.get("mimetype") or "unknown type"
            self._post(place, T.NOT_AN_IMAGE.format(what=f"{f.get('name') or 'file'}: {what}"))
            return
        filename = str(image.get("name") or "photo")
        kind = Swatch if swatch else Photo
        probe = kind(place.thread, user, b"", filename, text)

        def make() -> Event | Text:
            try:
                data = self._download(image)
            except DownloadError as exc:
                return Text(str(exc), kind="error")
            return kind(place.thread, user, data, filename, text)

        self._run(place, probe, make=make)

    def _photo_from_parent(self, place: Place, user: str, text: str) -> bool:
        """A request in the thread of a photo restyle has not seen: fetch that photo now (``conversations.replies``,
        the ``*:history`` scopes) and start its thread with the request; False when the thread's root has no file."""
        try:
            msgs = self.client.conversations_replies(channel=place.channel, ts=place.root, limit=1).get("messages")
        except (SlackApiError, SlackClientError, OSError) as exc:
            log.warning("conversations.replies in %s failed: %s", place.channel, _why(exc))
            return False
        root = next((m for m in msgs or [] if m.get("ts") == place.root), None)
        if not root or not root.get("files"):
            return False
        self._photo(place.channel, place.root, None, user, root["files"], text)
        return True

    def _slack_host(self, url: str) -> bool:
        """https on Slack's file hosts only (the emulator: RESTYLE_TEST_LOOPBACK_FILES, tests only)."""
        return C.file_url_refused(url, self.settings) is None

    def _resolve_file(self, file: dict) -> dict:
        """A file stub (``file_access: "check_file_info"``, or no type and no URL) → its full object from
        ``files.info``; a file Slack hides (``hidden_by_limit``) or cannot describe stays as it is."""
        if file.get("mode") == "hidden_by_limit" or not file.get("id"):
            return file
        if file.get("file_access") != "check_file_info" and (file.get("mimetype") or file.get("url_private")):
            return file
        try:
            return {**file, **(self.client.files_info(file=file["id"]).get("file") or {})}
        except (SlackApiError, SlackClientError, OSError) as exc:
            log.warning("files.info for a file stub failed: %s", _why(exc))
            return file

    def _download(self, file: dict) -> bytes:
        """``url_private`` with the bot token; a sign-in page (no ``files:read``) is a DownloadError.  Whether the
        bytes are a usable picture is for the engine's ``decode_image`` to say (``BAD_IMAGE``/``TOO_LARGE``)."""
        size = str(file.get("size") or "0")
        if size.isdigit() and int(size) > MAX_DOWNLOAD_BYTES:
            raise DownloadError(T.TOO_LARGE.format(
                why=f"the file is {int(size) / 2**20:.0f} MB; the limit is {MAX_DOWNLOAD_BYTES / 2**20:.0f} MB"))
        url = file.get("url_private") or file.get("url_private_download")
        if not url:
            raise DownloadError(T.DOWNLOAD_FAILED.format(why="the event carried no file URL"))
        if why := C.file_url_refused(url, self.settings):  # never send the bot token anywhere but Slack, in clear
            raise DownloadError(T.DOWNLOAD_FAILED.format(why=why))
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.settings.slack_bot_token}"})
        opener = urllib.request.build_opener(_SlackOnlyRedirects(self._slack_host))
        try:
            with opener.open(req, timeout=DOWNLOAD_TIMEOUT_S) as resp:
                ctype = resp.headers.get_content_type()
                data = resp.read(MAX_DOWNLOAD_BYTES + 1)
        except urllib.error.HTTPError as exc:
            raise DownloadError(T.DOWNLOAD_FAILED.format(why=f"HTTP {exc.code}")) from None
        except (urllib.error.URLError, OSError) as exc:
            raise DownloadError(T.DOWNLOAD_FAILED.format(why=type(exc).__name__)) from None
        if len(data) > MAX_DOWNLOAD_BYTES:
            raise DownloadError(T.TOO_LARGE.format(why=f"the limit is {MAX_DOWNLOAD_BYTES / 2**20:.0f} MB"))
        if ctype == "text/html" or looks_like_html(data):
            log.warning("url_private answered an HTML page (missing files:read scope or a wrong token?)")
            raise DownloadError(T.LOGIN_PAGE)
        return data

    # -- running engine events -------------------------------------------------------------------------------------
    def _run(self, place: Place, event: Event, *, make: Callable[[], Event | Text] | None = None,
             ephemeral_to: str | None = None) -> None:
        """Quick events run here (Bolt already acked); generation is queued behind a status message."""
        make = make or (lambda: event)
        if not self.channel_ok(place.channel):  # a button or reaction in a channel taken off RESTYLE_CHANNELS
            return
        if not self.engine.needs_generation(event):
            self._execute(place, make, None, ephemeral_to)
            return
        status = self._start_status(place)
        if not self.jobs.submit(self._execute_in_turn, place, make, status, ephemeral_to):
            if status is not None:
                status.finish(T.BUSY)
            else:
                self._post(place, T.BUSY)

    def _start_status(self, place: Place) -> Status | None:
        """"On it…", or how many requests are ahead; the engine's progress replaces it as the work goes."""
        ahead = self.jobs.ahead()
        text = T.QUEUED.format(n=ahead, s="s" if ahead != 1 else "") if ahead else T.STARTING
        ts = self._post(place, text)
        return Status(self.client, place.channel, ts, text, fallback=lambda t: self._post(place, t)) if ts else None

    def _execute_in_turn(self, place: Place, *args) -> None:
        """A generation, after any other generation of the same thread (with several workers, threads run side by
        side; one thread's turns never interleave, on this replica or any other sharing its store: ``lease``)."""
        with self._locks_guard:
            lock = self._thread_locks.setdefault(place.thread, threading.Lock())
        with lock, self.store.lease(place.thread):
            self._execute(place, *args)

    def _execute(self, place: Place, make: Callable[[], Event | Text], status: Status | None,
                 ephemeral_to: str | None) -> None:
        try:
            event = make()
            replies = [event] if isinstance(event, Text) else self.engine.handle(
                event, status.progress if status else None)
        except Exception:  # the engine turns its own failures into Text; this is a last resort
            log.exception("handling a Slack event failed")
            replies = [Text(T.FAILED, kind="error")]
        self.deliver(place, replies, status=status, ephemeral_to=ephemeral_to)

    # -- rendering -------------------------------------------------------------------------------------------------
    def deliver(self, place: Place, replies: list[Reply], *, status: Status | None = None,
                ephemeral_to: str | None = None) -> None:
        for reply in replies:
            try:
                if isinstance(reply, Variations):
                    self._say(place, reply.text, status)
                    self._deliver_variations(place, reply)
                elif isinstance(reply, Question):
                    self._post(place, reply.text, blocks=question_blocks(reply))
                elif isinstance(reply, Files):  # a compare sheet; a lookbook PDF and its ZIP
                    self._say(place, reply.text, status)
                    self._upload_files(place, reply)
                elif isinstance(reply, FavoritesList):
                    self._say(place, reply.text, status)
                    if reply.sheet is not None:
                        self._upload_many(place, [(reply.sheet, "Favourites")])
                elif ephemeral_to and (status is None or status.closed):
                    self._ephemeral(place.channel, ephemeral_to, place.root, reply.text)
                else:
                    self._say(place, reply.text, status)
            except (SlackApiError, SlackClientError, OSError) as exc:
                log.warning("could not deliver a %s reply to %s: %s", type(reply).__name__, place.channel,
                            _why(exc))
        if status is not None:
            status.finish(T.DONE_STATUS)

    def _deliver_variations(self, place: Place, reply: Variations) -> None:
        """The sheet and mask, then each variation, each on its own: one failed upload costs that one picture, and
        the thread is told which ones it does not show (they are saved and still answer to their numbers)."""
        numbers = f"#{reply.items[0].number}–#{reply.items[-1].number}" if reply.items else ""
        parts: list[tuple[str, Callable[[], object]]] = [("the contact sheet", lambda: self._upload_many(
            place, [(p, title) for p, title in ((reply.sheet, f"Contact sheet {numbers}"),
                                                 (reply.mask_preview, "Mask")) if p is not None]))]
        parts += [(f"#{item.number}", lambda item=item: self._post_variation(place, item)) for item in reply.items]
        missing, why = [], ""
        for what, send in parts:
            try:
                send()
            except (SlackApiError, SlackClientError, OSError) as exc:
                log.warning("could not post %s to %s: %s", what, place.channel, _why(exc))
                missing.append(what)
                why = _why(exc)
        if missing:
            self._post(place, T.NOT_POSTED.format(what=", ".join(missing), why=why))

    def _upload_files(self, place: Place, reply: Files) -> None:
        """One upload for all of the reply's files; when it fails, the thread is told (nothing was posted)."""
        try:
            self._upload_many(place, reply.files)
        except (SlackApiError, SlackClientError, OSError) as exc:
            log.warning("could not upload the %s files to %s: %s", reply.kind, place.channel, _why(exc))
            what = "the comparison" if reply.kind == "compare" else "the lookbook"
            self._post(place, T.FILES_NOT_POSTED.format(what=what, why=_why(exc)))

    def _say(self, place: Place, text: str, status: Status | None) -> None:
        """The first reply of a job replaces its status message; later ones are new thread messages."""
        if status is not None and not status.closed:
            status.finish(text)
        else:
            self._post(place, text)

    def _post(self, place: Place, text: str, **kw) -> str | None:
        try:
            resp = self.client.chat_postMessage(channel=place.channel, thread_ts=place.root, text=text,
                                                unfurl_links=False, unfurl_media=False, **kw)
        except (SlackApiError, SlackClientError, OSError) as exc:
            log.warning("chat.postMessage to %s failed: %s", place.channel, _why(exc))
            return None
        return resp.get("ts")

    def _ephemeral(self, channel: str, user: str, root: str | None, text: str) -> None:
        try:
            self.client.chat_postEphemeral(channel=channel, user=user, text=text, thread_ts=root)
        except (SlackApiError, SlackClientError, OSError) as exc:
            log.warning("chat.postEphemeral to %s failed: %s", channel, _why(exc))

    def _upload_many(self, place: Place, files: list[tuple[Path, str]]) -> list[dict]:
        """One upload (one thread message) for several files.  Thread with the ROOT ts: a file's own
        timestamps are not message timestamps."""
        if not files:
            return []
        resp = self.client.files_upload_v2(
            channel=place.channel, thread_ts=place.root,
            file_uploads=[{"file": str(p), "filename": Path(p).name, "title": title[:250]} for p, title in files])
        return list(resp.get("files") or [])

    def _post_variation(self, place: Place, item: VariationOut) -> None:
        uploaded = self._upload_many(place, [(uploadable(item.path), item.caption)])
        permalink = uploaded[0].get("permalink") if uploaded else None
        ts = self._post(place, item.caption[:3000], blocks=variation_blocks(item, permalink))
        if ts:
            self.store.link_message(f"{place.channel}:{ts}", item.id)

    def sweep_retention(self, now: float | None = None) -> int:
        """``RESTYLE_RETENTION_DAYS``: delete idle threads' data and say so in each; how many."""
        gone = self.controls.sweep(now)
        for thread in gone:
            place = parse_thread(thread)
            if place is not None and (text := self.controls.forgotten_text(thread)):
                self._post(place, text)
        return len(gone)

    def start_retention(self, every_s: float = 3600.0) -> threading.Thread | None:
        """Sweep now and then every ``every_s`` seconds (a daemon thread); None when retention is off."""
        if self.settings.retention_days is None:
            return None

        def loop() -> None:
            while True:
                try:
                    self.sweep_retention()
                except Exception:  # noqa: BLE001 - a failed sweep is retried at the next one
                    log.exception("retention sweep failed")
                time.sleep(every_s)

        t = threading.Thread(target=loop, name="restyle-retention", daemon=True)
        t.start()
        return t

    def post_pending_notices(self) -> int:
        """At start-up: tell threads whose job a restart interrupted (other adapters' threads are skipped)."""
        n = 0
        for thread, text in self.engine.pending_notices(prefix="slack:"):
            place = parse_thread(thread)
            if place is not None:
                self._post(place, text.text)
                n += 1
        return n


class _SlackOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to a Slack host: urllib would otherwise carry the bot token anywhere."""

    def __init__(self, allowed: Callable[[str], bool]) -> None:
        self.allowed = allowed

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if not self.allowed(newurl):
            host = urllib.parse.urlsplit(newurl).hostname
            raise DownloadError(T.DOWNLOAD_FAILED.format(why=f"redirected to an unexpected host {host}"))
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def uploadable(path: Path) -> Path:
    """The file to upload for a variation: itself, or beside it a JPEG copy when it is over
    ``UPLOAD_PNG_MAX_PIXELS`` (made once, written atomically)."""
    from PIL import Image

    from model.images import encode_image

    with Image.open(path) as img:
        if img.width * img.height <= UPLOAD_PNG_MAX_PIXELS:
            return path
        jpeg = path.with_suffix(".jpg")
        if not jpeg.exists():
            tmp = jpeg.with_name(f".{jpeg.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_bytes(encode_image(img.convert("RGB"), "jpeg", quality=95))
            os.replace(tmp, jpeg)
    return jpeg


def question_blocks(question: Question) -> list[dict]:
    """restyle's question with its two answers; the buttons carry the question's id."""
    def button(text: str, action_id: str, **extra) -> dict:
        return {"type": "button", "action_id": action_id, "value": question.id,
                "text": {"type": "plain_text", "text": text, "emoji": True}, **extra}

    return [{"type": "section", "text": {"type": "mrkdwn", "text": question.text[:3000]}},
            {"type": "actions", "block_id": f"restyle_q_{question.id}"[:255], "elements": [
                button("Generate", ACTION_YES, style="primary"), button("Not that", ACTION_NO)]}]


def variation_blocks(item: VariationOut, permalink: str | None) -> list[dict]:
    caption = escape(item.caption)[:2500]
    if permalink:
        caption += f" · <{permalink}|full size>"

    def button(text: str, action_id: str, **extra) -> dict:
        return {"type": "button", "action_id": action_id, "value": item.id,
                "text": {"type": "plain_text", "text": text, "emoji": True}, **extra}

    return [
        {"type": "section", "text": {"type": "mrkdwn", "text": caption}},
        {"type": "actions", "block_id": f"restyle_{item.id}"[:255], "elements": [
            button("⭐ Favourite", ACTION_FAV, style="primary"),
            button("Use as base", ACTION_USE),
            button("More like this", ACTION_MORE),
            button("Upscale", ACTION_UPSCALE),
        ]},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": T.VARIATION_HINT}]},
    ]


# -- wiring --------------------------------------------------------------------------------------------------------
class _NoBodies(logging.Filter):
    """slack-sdk logs each request's body (message texts) at DEBUG: never, even at --log-level DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.INFO


class _QuietBolt(logging.Filter):
    """Bolt reads SLACK_BOT_TOKEN itself and warns that our (configured) client wins — which is intended."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("As you gave `client` as well")


def build_client(settings: Settings) -> WebClient:
    web_log = logging.getLogger("restyle.slack.web")
    if not any(isinstance(f, _NoBodies) for f in web_log.filters):
        web_log.addFilter(_NoBodies())
    client = WebClient(token=settings.slack_bot_token, base_url=settings.slack_api_url, logger=web_log)
    client.retry_handlers.append(RateLimitErrorRetryHandler(max_retry_count=2))
    return client


def build_app(engine, settings: Settings, *, client: WebClient | None = None, jobs: JobQueue | None = None) -> App:
    """The Bolt app.  Calls ``auth.test`` once (the bot's own user id).  ``app.restyle`` is the ``SlackBot``."""
    client = client or build_client(settings)
    if not any(isinstance(h, RateLimitErrorRetryHandler) for h in client.retry_handlers):
        client.retry_handlers.append(RateLimitErrorRetryHandler(max_retry_count=2))
    jobs = jobs or JobQueue(settings.job_workers, settings.job_queue)
    bot = SlackBot(engine, settings, client, jobs)
    bolt_log = logging.getLogger("restyle.slack.bolt")
    if not any(isinstance(f, _QuietBolt) for f in bolt_log.filters):
        bolt_log.addFilter(_QuietBolt())
    C.quiet_logs()  # before App(): Bolt copies this logger's level and filters to its own loggers
    # Bolt runs listeners on its own pool (5 threads by default) and acks from inside them: a listener posting a
    # reply or a status message holds its thread, so under a burst the next event's ack waited for a free one.  One
    # thread per worker that may be posting, and no fewer than the HTTP server's request threads.
    listener_threads = max(LISTENER_THREADS, settings.job_workers)
    listeners = ThreadPoolExecutor(max_workers=listener_threads, thread_name_prefix="restyle-listener")
    prestart(listeners, listener_threads)
    app = App(client=client, signing_secret=settings.slack_signing_secret or "", logger=bolt_log, name="restyle",
              listener_executor=listeners)
    try:
        bot.bot_user_id = client.auth_test().get("user_id")
    except (SlackApiError, SlackClientError, OSError) as exc:
        log.warning("auth.test failed (%s); the bot's user id comes from the first event", _why(exc))
    app.use(bot.dedupe)
    app.event("message")(bot.on_message)
    app.event("app_mention")(bot.on_mention)
    app.event("reaction_added")(bot.on_reaction)
    app.event("reaction_removed")(bot.on_reaction)
    app.event("file_shared")(bot.on_file_shared)
    app.action(re.compile("^(" + "|".join(ACTIONS) + ")$"))(bot.on_action)
    app.action(re.compile(f"^({ACTION_YES}|{ACTION_NO})$"))(bot.on_answer)
    app.command("/restyle")(bot.on_command)
    app.restyle = bot  # type: ignore[attr-defined]
    return app


def serve_http(app: App, host: str = "127.0.0.1", port: int = 3000, path: str = EVENTS_PATH, *,
               health=None):
    """The Events API on waitress through Bolt's WSGI adapter (``bot.http_server``): POST ``path`` → Bolt,
    GET /healthz → readiness.  Returns the (not yet serving) server; call ``serve_forever()`` on it (or
    ``start()`` for a thread)."""
    from bot.health import Health
    from bot.http_server import HttpServer, wsgi_app

    if health is None:
        bot = getattr(app, "restyle", None)
        health = Health(store=getattr(bot, "store", None), jobs=getattr(bot, "jobs", None))
    return HttpServer(wsgi_app(health, app, path), host, port)


def socket_mode_handler(app: App, app_token: str, *, ping_interval: float = PING_INTERVAL_S):
    """Bolt's built-in Socket Mode handler (no extra dependency): pings every ``ping_interval`` s and reconnects
    by itself when the connection goes quiet (no pong for 4 intervals) or drops."""
    from slack_bolt.adapter.socket_mode import SocketModeHandler

    return SocketModeHandler(app, app_token, auto_reconnect_enabled=True, ping_interval=ping_interval)


def main(argv: list[str], settings: Settings) -> int:
    ap = argparse.ArgumentParser(prog="restyle slack")
    ap.add_argument("--http", action="store_true", help="serve the Events API over HTTP instead of Socket Mode")
    ap.add_argument("--port", type=int, default=3000)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--health-port", type=int, default=settings.health_port)
    ap.add_argument("--ping-interval", type=float,
                    default=float(os.environ.get("RESTYLE_SLACK_PING_INTERVAL") or PING_INTERVAL_S))
    args = ap.parse_args(argv)
    for flag, port in (("--port", args.port), ("--health-port", args.health_port)):
        if port is not None and not 0 <= port <= 65535:
            print(f"restyle: {flag} must be from 0 to 65535, got {port}", file=sys.stderr)
            return 2
    from bot.settings import SecretError, with_slack_secret

    try:
        settings = with_slack_secret(settings)
    except SecretError as exc:
        print(f"restyle: {exc}", file=sys.stderr)
        return 2
    missing = [name for name, value in (("SLACK_BOT_TOKEN", settings.slack_bot_token),
                                        ("SLACK_SIGNING_SECRET" if args.http else "SLACK_APP_TOKEN",
                                         settings.slack_signing_secret if args.http else settings.slack_app_token))
               if not value]
    if missing:
        print(f"restyle: set {' and '.join(missing)} (see docs/slack.md)", file=sys.stderr)
        return 2
    if not args.http and not str(settings.slack_app_token).startswith("xapp-"):
        print("restyle: SLACK_APP_TOKEN must be an app-level token (xapp-…) with connections:write",
              file=sys.stderr)
        return 2

    from bot.engine import start_engine

    C.quiet_logs()  # before boto3/Bolt are set up: no bodies, prompts, tokens or image bytes in any log
    engine = start_engine(settings)
    if engine is None:
        return 2
    client = build_client(settings)
    try:
        client.auth_test()
    except SlackApiError as exc:
        print(f"restyle: SLACK_BOT_TOKEN was rejected by Slack ({exc.response.get('error')})", file=sys.stderr)
        return 2
    except (SlackClientError, OSError) as exc:
        print(f"restyle: cannot reach Slack at {settings.slack_api_url} ({type(exc).__name__})", file=sys.stderr)
        return 1
    from bot.health import run

    return run(engine, settings, client, http=args.http, host=args.host, port=args.port,
               health_port=args.health_port, ping_interval=args.ping_interval)
