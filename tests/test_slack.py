"""The Slack adapter end to end: the real Bolt app served over HTTP on loopback, a real WebClient talking to the
Slack emulator, requests signed like Slack signs them, and the engine on tiny checkpoints (steps=2)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

from bot import messages as T
from bot import slack_app
from bot.backends import LocalBackend
from bot.engine import Engine
from bot.events import Message, Photo
from bot.jobs import JobQueue
from bot.settings import Settings
from bot.store import Store
from tests.conftest import make_photo, to_bytes
from tests.slack_emulator import (
    BOT_ID,
    BOT_TOKEN,
    BOT_USER_ID,
    SIGNING_SECRET,
    SignedClient,
    SlackEmulator,
    file_share,
    message,
    reaction,
    user_ts,
)

CH = "C0DESIGN"
MENTION = f"<@{BOT_USER_ID}>"
PHOTO = to_bytes(make_photo(160, 240), "JPEG", quality=95)
BUTTONS = [slack_app.ACTION_FAV, slack_app.ACTION_USE, slack_app.ACTION_MORE, slack_app.ACTION_UPSCALE]


@pytest.fixture(scope="module")
def backend(tiny_dir) -> LocalBackend:
    return LocalBackend(str(tiny_dir / "clipseg"), str(tiny_dir / "inpaint"))


@dataclass
class Harness:
    emu: SlackEmulator
    slack: SignedClient
    app: object
    bot: slack_app.SlackBot
    engine: Engine

    # -- conveniences --------------------------------------------------------------------------------------------
    def texts(self, root: str) -> list[str]:
        return [m["text"] for m in self.emu.thread_messages(CH, root)]

    def wait_text(self, root: str, needle: str, timeout: float = 30.0) -> dict:
        return self.emu.wait_until(
            lambda: next((m for m in self.emu.thread_messages(CH, root) if needle in m["text"]), None),
            timeout, what=f"a thread message containing {needle!r}")

    def variation_messages(self, root: str) -> list[dict]:
        return [m for m in self.emu.thread_messages(CH, root)
                if any(b.get("type") == "actions" for b in m["blocks"])]

    def wait_variations(self, root: str, n: int, timeout: float = 60.0) -> list[dict]:
        """Until ``n`` variation messages are posted AND linked (the link is stored right after the post)."""
        def ready():
            msgs = self.variation_messages(root)
            linked = all(self.engine.store.variation_for_message(f"{CH}:{m['ts']}") for m in msgs)
            return msgs if len(msgs) >= n and linked else None

        return self.emu.wait_until(ready, timeout, what=f"{n} linked variation messages")

    def wait_ephemeral(self, needle: str, timeout: float = 30.0) -> dict:
        return self.emu.wait_until(
            lambda: next((b for b in self.emu.bodies("chat.postEphemeral") if needle in b.get("text", "")), None),
            timeout, what=f"an ephemeral message containing {needle!r}")

    def share_photo(self, data: bytes = PHOTO, *, text: str = "", name: str = "look.jpg",
                    mimetype: str = "image/jpeg", **kw) -> str:
        root = user_ts()
        f = self.emu.host_file(data, name, mimetype)
        text = text or f"<@{BOT_USER_ID}>"  # RESTYLE_PHOTOS=asked: a photo without a request is shared *to* restyle
        assert self.slack.event(file_share(CH, [f], ts=root, text=text), **kw).status == 200
        return root


@contextlib.contextmanager
def running_bot(tmp_path, model_backend, **overrides):
    """The real Bolt app served over HTTP on loopback, its WebClient pointed at a fresh Slack emulator."""
    emu = SlackEmulator().start()
    settings = Settings.from_env({}, data_dir=tmp_path, steps=2, num_images=2, max_batch=8,
                                 slack_bot_token=BOT_TOKEN, slack_signing_secret=SIGNING_SECRET,
                                 slack_api_url=emu.api_url, **{"test_loopback_files": True, **overrides})
    engine = Engine(Store(settings.data_dir), model_backend, settings)
    app = slack_app.build_app(engine, settings)
    server = slack_app.serve_http(app, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}{slack_app.EVENTS_PATH}"
    h = Harness(emu, SignedClient(url, SIGNING_SECRET), app, app.restyle, engine)
    try:
        yield h
    finally:
        h.bot.jobs.join(timeout=60)
        h.bot.jobs.shutdown()
        server.shutdown()
        server.server_close()
        emu.stop()
        engine.store.close()


@pytest.fixture
def harness(tmp_path, backend):
    with running_bot(tmp_path, backend) as h:
        yield h


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (no pixel data): 'too large' without allocating it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + \
        chunk(b"IEND", b"")


# -- 1. the whole conversation ---------------------------------------------------------------------------------------
def test_scenario_photo_prompt_reaction_vary_batch_favorites(harness):
    h, emu = harness, harness.emu
    root = h.share_photo()
    h.wait_text(root, T.GOT_PHOTO)
    downloads = [c for c in emu.calls if c.startswith("/files-pri/")]
    assert downloads and all(c.authorized for p in downloads for c in emu.calls[p])

    # a prompt in the thread: acked at once; status message, updated in place, then sheet + one per variation
    started = time.monotonic()
    assert h.slack.event(message(CH, "make the skirt red floral", thread_ts=root)).status == 200
    assert time.monotonic() - started < 3.0  # Slack's ack deadline: generation runs on the job queue
    first = h.wait_variations(root, 2)
    status = next(m for m in emu.messages if m["text"].startswith("Here are 2 variations"))
    assert status["edits"] and status["thread_ts"] == root  # chat.update, not a new message
    assert any(b["ts"] == status["ts"] for b in emu.bodies("chat.update"))
    posted = emu.bodies("chat.postMessage")
    assert posted[1]["text"] == T.STARTING  # [0] is GOT_PHOTO; a worker was free
    assert all(b["thread_ts"] == root for b in posted)
    assert emu.count("files.getUploadURLExternal") == 4  # sheet + mask, then each variation
    completes = emu.bodies("files.completeUploadExternal")
    assert len(completes) == 3 and all(c["channel_id"] == CH and c["thread_ts"] == root for c in completes)
    numbers = []
    for m in first:
        actions = next(b for b in m["blocks"] if b["type"] == "actions")
        assert [e["action_id"] for e in actions["elements"]] == BUTTONS
        vid = actions["elements"][0]["value"]
        assert {e["value"] for e in actions["elements"]} == {vid}
        assert h.engine.store.variation_for_message(f"{CH}:{m['ts']}") == vid  # the reaction target
        numbers.append(h.engine.store.variation(vid).number)
    assert numbers == [1, 2]

    # ⭐ on #2's message → favourite (confirmed to the reacting user only)
    assert h.slack.event(reaction(CH, first[1]["ts"], "star")).status == 200
    h.wait_ephemeral(T.FAVORITED.format(number=2))

    # "#2 but longer" → #3, #4 from #2
    h.slack.event(message(CH, "#2 but longer", thread_ts=root))
    second = h.wait_variations(root, 4)
    assert [m["text"].split(" ")[0] for m in second[2:]] == ["#3", "#4"]

    # /restyle batch 8 pastel (slash command, signed form body) → the channel's latest photo thread
    resp = h.slack.command("batch 8 pastel", channel=CH)
    assert resp.status == 200 and "Starting a batch of 8" in resp.body  # the ephemeral ack
    h.wait_variations(root, 12, timeout=90)

    # /restyle favorites lists #2
    resp = h.slack.command("favorites", channel=CH)
    assert resp.status == 200
    h.wait_text(root, T.FAVORITES.format(numbers="#2"))
    emu.wait_until(lambda: any(c["files"] and "Favourites" in c["files"] for c in
                               emu.bodies("files.completeUploadExternal")), what="the favourites sheet")
    assert all(b["thread_ts"] == root for b in emu.bodies("chat.postMessage"))


def test_scenario_through_model_serve_over_boto3(tmp_path, tiny_dir):
    """The same Slack flow with the models behind SageMaker's Runtime API: boto3 → loopback model.serve."""
    import boto3

    from bot.backends import SageMakerBackend
    from model.serve import ModelServer, start

    server = ModelServer({"clipseg": str(tiny_dir / "clipseg"), "inpaint": str(tiny_dir / "inpaint")})
    httpd = start(server, port=0)
    assert server.ready.wait(120), server.load_error
    runtime = boto3.client("sagemaker-runtime", endpoint_url=f"http://127.0.0.1:{httpd.server_address[1]}",
                           region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    backend = SageMakerBackend(clipseg_endpoint="restyle-clipseg", inpaint_endpoint="restyle-inpaint",
                               client=runtime)
    try:
        with running_bot(tmp_path, backend, backend="sagemaker") as h:
            root = h.share_photo(text="make the skirt a red floral maxi")
            msgs = h.wait_variations(root, 2)
            assert [m["text"].split(" ")[0] for m in msgs] == ["#1", "#2"]
            assert h.slack.event(reaction(CH, msgs[0]["ts"], "heart")).status == 200
            h.wait_ephemeral(T.FAVORITED.format(number=1))
    finally:
        httpd.shutdown()


# -- 2. request verification -----------------------------------------------------------------------------------------
def test_forged_or_stale_requests_are_rejected(harness):
    h, emu = harness, harness.emu
    f = emu.host_file(PHOTO, "look.jpg", "image/jpeg")
    forged = h.slack.event(file_share(CH, [f], text=MENTION), signature="v0=" + "0" * 64)
    assert forged.status == 401
    stale = h.slack.event(file_share(CH, [f], text=MENTION), timestamp=int(time.time()) - 6 * 60)  # correctly signed, old
    assert stale.status == 401
    bad_cmd = h.slack.command("batch 8 pastel", channel=CH, signature="v0=deadbeef")
    assert bad_cmd.status == 401
    # a correctly signed request still works, and nothing above reached a listener
    ok = h.slack.command("help", channel=CH)
    assert ok.status == 200 and "/restyle batch" in ok.body
    assert emu.count("chat.postMessage") == 0
    assert not any(p.startswith("/files-pri/") for p in emu.calls)
    assert h.engine.store.latest_thread("slack:") is None


# -- 3. de-duplication -----------------------------------------------------------------------------------------------
def test_retried_event_generates_once(harness):
    h, emu = harness, harness.emu
    f = emu.host_file(PHOTO, "look.jpg", "image/jpeg")
    ev = file_share(CH, [f], text="make the skirt blue")
    root = ev["ts"]
    assert h.slack.event(ev, event_id="Ev0DUPLICATE").status == 200
    assert h.slack.event(ev, event_id="Ev0DUPLICATE", retry_num=1).status == 200
    h.wait_variations(root, 2)
    # the same message as `message` and as `app_mention` (two event ids): still one generation
    h.slack.event(message(CH, f"<@{BOT_USER_ID}> 2 more like that", thread_ts=root, ts="1700000000.000777"))
    h.slack.event({**message(CH, f"<@{BOT_USER_ID}> 2 more like that", thread_ts=root, ts="1700000000.000777"),
                   "type": "app_mention"})
    h.wait_variations(root, 4)
    assert h.bot.jobs.join(timeout=60)
    assert len(h.variation_messages(root)) == 4
    assert emu.count("files.completeUploadExternal") == 2 + 2 * 2
    working = [b for b in emu.bodies("chat.postMessage") if b["text"] == T.STARTING or b["text"].startswith("Queued")]
    assert len(working) == 2
    assert len([c for p, cs in emu.calls.items() if p.startswith("/files-pri/") for c in cs]) == 1


def test_a_request_behind_busy_workers_says_where_it_is_in_the_queue(harness):
    h, emu = harness, harness.emu
    root = h.share_photo()
    h.wait_text(root, T.GOT_PHOTO)
    gate = threading.Event()
    assert h.bot.jobs.submit(gate.wait, 30)  # someone else's long generation holds the only worker
    h.slack.event(message(CH, "make the skirt red", thread_ts=root))
    queued = h.wait_text(root, T.QUEUED.format(n=1, s=""))
    gate.set()
    h.wait_variations(root, 2)
    status = next(m for m in emu.messages if m["ts"] == queued["ts"])
    assert status["text"].startswith("Here are 2 variations")  # the same message, edited as the work went


# -- 4. files that are not photos --------------------------------------------------------------------------------------
def test_non_image_login_page_and_too_large_get_friendly_replies(harness):
    h, emu = harness, harness.emu
    pdf = h.share_photo(b"%PDF-1.4 not a photo", name="brief.pdf", mimetype="application/pdf")
    h.wait_text(pdf, "isn't an image")
    junk = h.share_photo(b"not really a jpeg", name="fake.jpg", mimetype="image/jpeg")  # decode_image refuses it
    h.wait_text(junk, "couldn't read that file as a photo")
    login = emu.host_file(PHOTO, "look.jpg", "image/jpeg", login_page=True)  # e.g. no files:read scope
    root = user_ts()
    h.slack.event(file_share(CH, [login], ts=root, text=MENTION))
    h.wait_text(root, "sign-in page")
    big = h.share_photo(png_header_only(9000, 9000), name="huge.png", mimetype="image/png")
    h.wait_text(big, "too large")
    assert h.engine.store.latest_thread("slack:") is None  # no thread was started by any of them
    # and the app is still fine
    ok = h.share_photo()
    h.wait_text(ok, T.GOT_PHOTO)


def test_file_stubs_hidden_files_and_redirects_off_slack(harness):
    """A `check_file_info` stub is looked up with files.info and used; a file Slack hides says so; a url_private
    that redirects to a host that is not Slack's is refused before the bot token could travel there."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    h, emu = harness, harness.emu
    full = emu.host_file(PHOTO, "look.jpg", "image/jpeg")
    stub = {"id": full["id"], "file_access": "check_file_info", "created": full["created"], "user": "U0DESIGNER"}
    root = user_ts()
    h.slack.event(file_share(CH, [stub], ts=root, text=MENTION))
    h.wait_text(root, T.GOT_PHOTO)
    assert emu.count("files.info") == 1
    hidden = user_ts()
    h.slack.event(file_share(CH, [{"id": "F0HIDDEN", "mode": "hidden_by_limit"}], ts=hidden, text=MENTION))
    h.wait_text(hidden, T.FILE_HIDDEN)

    seen: list[dict] = []

    class Elsewhere(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen.append(dict(self.headers))
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(PHOTO)))
            self.end_headers()
            self.wfile.write(PHOTO)

        def log_message(self, *args):
            pass

    other = ThreadingHTTPServer(("127.0.0.1", 0), Elsewhere)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        moved = emu.host_file(PHOTO, "moved.jpg", "image/jpeg",
                              redirect_to=f"http://localhost:{other.server_address[1]}/moved.jpg")
        root = user_ts()
        h.slack.event(file_share(CH, [moved], ts=root, text=MENTION))
        h.wait_text(root, "redirected to an unexpected host localhost")
        assert seen == []  # the token never left for a non-Slack host
        # a redirect within Slack's hosts is followed
        same = emu.host_file(PHOTO, "same.jpg", "image/jpeg", redirect_to=full["url_private"])
        root = user_ts()
        h.slack.event(file_share(CH, [same], ts=root, text=MENTION))
        h.wait_text(root, T.GOT_PHOTO)
    finally:
        other.shutdown()
        other.server_close()


def test_failed_uploads_and_status_edits_lose_nothing(harness):
    """One failed upload costs that picture only, and the thread is told; a status message that can no longer be
    edited gets its text posted anew."""
    h, emu = harness, harness.emu
    root = h.share_photo()
    h.wait_text(root, T.GOT_PHOTO)
    emu.fail_next("files.getUploadURLExternal", 200, {"ok": False, "error": "not_in_channel"})  # the sheet's
    h.slack.event(message(CH, "make the skirt red", thread_ts=root))
    h.wait_variations(root, 2)
    h.wait_text(root, T.NOT_POSTED.format(what="the contact sheet", why="Slack error not_in_channel"))
    emu.fail_next("chat.update", 200, {"ok": False, "error": "message_not_found"}, times=50)
    h.slack.event(message(CH, "make the skirt green", thread_ts=root))
    h.wait_variations(root, 4)
    assert h.bot.jobs.join(timeout=60)
    summaries = [m for m in emu.thread_messages(CH, root) if m["text"].startswith("Here are 2 variations")]
    assert len(summaries) == 2 and not summaries[1].get("edits")  # the second summary is a message of its own


def test_chatter_mentions_with_labels_and_batch_answers(harness):
    """"love it!" among people is not for the bot (with a mention it gets a word); `<@BOT|name>` is a mention;
    `/restyle batch` answers with what the engine will really make, and refuses counts below 1."""
    h, emu = harness, harness.emu
    root = h.share_photo(text="make the skirt pastel")
    h.wait_variations(root, 2)
    assert h.bot.jobs.join(timeout=60)
    before = len(emu.thread_messages(CH, root))
    h.slack.event(message(CH, "love it!", thread_ts=root))
    h.slack.event(message(CH, "thanks!", thread_ts=root))
    h.slack.event(message(CH, f"<@{BOT_USER_ID}|restyle> love it!", thread_ts=root))
    h.wait_text(root, T.GLAD)
    assert len(emu.thread_messages(CH, root)) == before + 1  # only the mention was answered
    assert h.engine.store.favorites(f"slack:{CH}:{root}") == []
    for text in ("batch 0 pastel skirt", "batch -3 pastel skirt"):
        assert T.BATCH_USAGE in h.slack.command(text, channel=CH).body
    assert "Starting a batch of 2 for _a pastel skirt_" in h.slack.command("batch 2 hello", channel=CH).body


# -- 5. what must be ignored -------------------------------------------------------------------------------------------
def test_ignored_events_and_reaction_removed(harness):
    h, emu = harness, harness.emu
    root = h.share_photo(text="make the skirt green")
    msgs = h.wait_variations(root, 2)
    posts_before = emu.count("chat.postMessage")
    # the bot's own message, an edit, a reaction on a file, on an unknown message, and a non-favourite emoji
    h.slack.event(message(CH, "make the skirt red", thread_ts=root, user=BOT_USER_ID, bot_id=BOT_ID))
    h.slack.event(message(CH, "", thread_ts=root, subtype="message_changed",
                          message={"text": "make the skirt red", "user": "U0DESIGNER"}))
    h.slack.event(reaction(CH, "F0FILE", "star", item_type="file"))
    h.slack.event(reaction(CH, "1600000000.000001", "heart"))
    h.slack.event(reaction(CH, msgs[0]["ts"], "tada"))
    h.slack.event(message(CH, "looks great team", ts=user_ts()))  # top-level channel chatter
    # a sentinel that is answered proves the app is idle, then nothing above changed anything
    h.slack.event(message(CH, "help", thread_ts=root))
    h.wait_text(root, "restyle")
    assert emu.count("chat.postMessage") == posts_before + 1
    assert emu.count("chat.postEphemeral") == 0
    assert h.engine.store.favorites(h.engine.store.latest_thread("slack:")) == []
    # 👍 then remove it: marked, then unmarked
    h.slack.event(reaction(CH, msgs[0]["ts"], "+1::skin-tone-3"))
    h.wait_ephemeral(T.FAVORITED.format(number=1))
    h.slack.event(reaction(CH, msgs[0]["ts"], "+1", added=False))
    h.wait_ephemeral(T.UNFAVORITED.format(number=1))
    assert h.engine.store.favorites(f"slack:{CH}:{root}") == []
    # ⭐ and ❤️ on the same variation, then ❤️ removed: still a favourite, and nothing is said about it
    h.slack.event(reaction(CH, msgs[1]["ts"], "star"))
    emu.wait_until(lambda: emu.count("chat.postEphemeral") >= 3 or None, 30, what="the ⭐ answer")
    h.slack.event(reaction(CH, msgs[1]["ts"], "heart"))
    emu.wait_until(lambda: emu.count("chat.postEphemeral") >= 4 or None, 30, what="the ❤️ answer")
    heart_off = reaction(CH, msgs[1]["ts"], "heart", added=False)
    h.slack.event(heart_off)
    wait_clock(h, "heart", float(heart_off["event_ts"]))
    assert [v.number for v in h.engine.store.favorites(f"slack:{CH}:{root}")] == [2]
    h.slack.event(reaction(CH, msgs[1]["ts"], "star", added=False))
    h.wait_ephemeral(T.UNFAVORITED.format(number=2))
    assert h.engine.store.favorites(f"slack:{CH}:{root}") == []
    assert emu.count("chat.postEphemeral") == 5  # 👍 on, 👍 off, ⭐ on, ❤️ on, ⭐ off; ❤️ off said nothing


def wait_clock(h: Harness, source: str, at: float) -> None:
    """Until the store has handled a ``source`` reaction made at ``at`` (Slack's event_ts)."""
    h.emu.wait_until(lambda: h.engine.store._one("SELECT 1 FROM favorite_clock WHERE source = ? AND at = ?",
                                                 (source, at)), 30, what=f"the {source} reaction at {at}")


def test_reactions_delivered_out_of_order_end_as_they_happened(harness, caplog):
    """Slack promises no order: a ⭐ removed after it was added, delivered removal first, ends removed — the late
    add is recognised by its event_ts and changes nothing, says nothing."""
    h, emu = harness, harness.emu
    root = h.share_photo(text="make the skirt green")
    (first, *_) = h.wait_variations(root, 2)
    added, removed = reaction(CH, first["ts"], "star"), reaction(CH, first["ts"], "star", added=False)
    assert float(added["event_ts"]) < float(removed["event_ts"])
    h.slack.event(removed)
    wait_clock(h, "star", float(removed["event_ts"]))
    with caplog.at_level(logging.INFO, logger="restyle.engine"):
        h.slack.event(added)
        emu.wait_until(lambda: any("out-of-date mark" in r.getMessage() for r in caplog.records) or None, 30,
                       what="the late ⭐ to be handled")
    assert h.engine.store.favorites(f"slack:{CH}:{root}") == []
    assert [b["text"] for b in emu.bodies("chat.postEphemeral")] == [T.UNFAVORITED.format(number=1)]  # removal only


def test_buttons_favourite_use_and_more(harness):
    h = harness
    root = h.share_photo(text="make the skirt green")
    msgs = h.wait_variations(root, 2)
    vid = h.engine.store.variation_for_message(f"{CH}:{msgs[1]['ts']}")
    for action in (slack_app.ACTION_FAV, slack_app.ACTION_USE):
        resp = h.slack.action(action, vid, channel=CH, message_ts=msgs[1]["ts"], thread_ts=root)
        assert resp.status == 200
    h.wait_ephemeral(T.FAVORITED.format(number=2))
    h.wait_text(root, T.USING.format(number=2))
    h.slack.action(slack_app.ACTION_MORE, vid, channel=CH, message_ts=msgs[1]["ts"], thread_ts=root)
    h.wait_variations(root, 4)


def test_slash_command_settings_unknown_and_no_thread(harness):
    h = harness
    no_thread = h.slack.command("batch 8 pastel", channel=CH)
    assert no_thread.status == 200 and T.NO_THREAD in no_thread.body
    unknown = h.slack.command("dance", channel=CH)
    assert unknown.status == 200 and "I don't know `/restyle dance`" in unknown.body and "/restyle batch" in unknown.body
    root = h.share_photo()
    h.wait_text(root, T.GOT_PHOTO)
    assert h.slack.command("settings steps=3 seed=7", channel=CH).status == 200
    h.wait_text(root, "Settings for this thread: steps=3")
    assert h.slack.command("settings model=sdxl", channel=CH).status == 200
    h.wait_text(root, "I can't use `model=sdxl`")
    assert h.engine.store.settings(f"slack:{CH}:{root}") == {"steps": 3, "seed": 7}
    # "/restyle batch 2" alone: usage while the thread has no look yet, then the last look again
    assert T.BATCH_USAGE in h.slack.command("batch 2", channel=CH).body
    h.slack.event(message(CH, "make the skirt red", thread_ts=root))
    h.wait_variations(root, 2)
    resp = h.slack.command("batch 2", channel=CH)
    assert "Starting a batch of 2 for _a red skirt_" in resp.body
    h.wait_variations(root, 4)
    turns = h.engine.store._all("SELECT prompt FROM turns WHERE thread = ? ORDER BY created", (f"slack:{CH}:{root}",))
    assert len(turns) == 2 and turns[0]["prompt"] == turns[1]["prompt"]


# -- 6. rate limits ----------------------------------------------------------------------------------------------------
def test_rate_limited_post_is_retried(harness):
    h, emu = harness, harness.emu
    emu.rate_limit_next("chat.postMessage", retry_after=1)
    root = h.share_photo()
    h.wait_text(root, T.GOT_PHOTO)
    assert emu.count("chat.postMessage") == 2  # the 429, then the retry after Retry-After: 1


def test_one_thread_generates_one_turn_at_a_time_even_with_several_workers(tmp_path, backend, monkeypatch):
    """RESTYLE_WORKERS=2: two threads may generate side by side, but one thread's turns never overlap (its base,
    context and numbering move turn by turn)."""
    with running_bot(tmp_path, backend, workers=2) as h:
        active: dict[str, int] = {}
        overlaps = []
        lock = threading.Lock()
        real = h.engine.handle

        def handle(event, progress=None):
            with lock:
                active[event.thread] = active.get(event.thread, 0) + 1
                overlaps.append(active[event.thread])
            try:
                return real(event, progress)
            finally:
                with lock:
                    active[event.thread] -= 1

        monkeypatch.setattr(h.engine, "handle", handle)
        root = h.share_photo()
        h.wait_text(root, T.GOT_PHOTO)
        for colour in ("red", "blue", "green"):
            h.slack.event(message(CH, f"make the skirt {colour}", thread_ts=root))
        h.wait_variations(root, 6)
        assert h.bot.jobs.join(timeout=60)
        assert overlaps and max(overlaps) == 1


def test_busy_queue_says_so(tmp_path, backend):
    emu = SlackEmulator().start()
    try:
        settings = Settings.from_env({}, data_dir=tmp_path, steps=2, num_images=2, slack_bot_token=BOT_TOKEN,
                                     slack_signing_secret=SIGNING_SECRET, slack_api_url=emu.api_url)
        engine = Engine(Store(settings.data_dir), backend, settings)
        jobs = JobQueue(workers=1, max_pending=1)
        gate = threading.Event()
        assert jobs.submit(gate.wait, 30)  # the only slot is taken
        bot = slack_app.build_app(engine, settings, jobs=jobs).restyle
        place = slack_app.Place(CH, user_ts())
        engine.handle(Photo(place.thread, "U1", PHOTO))
        bot._run(place, Message(place.thread, "U1", "make the skirt red"))
        msgs = emu.thread_messages(CH, place.root)
        assert [m["text"] for m in msgs] == [T.BUSY]  # the status message became the busy notice
        gate.set()
        jobs.join(timeout=10)
        engine.store.close()
    finally:
        emu.stop()


# -- 7. secrets never reach the logs -----------------------------------------------------------------------------------
def test_no_token_in_logs(harness, caplog):
    caplog.set_level(logging.DEBUG)
    h = harness
    root = h.share_photo(text="make the skirt red")
    msgs = h.wait_variations(root, 2)
    h.slack.event(reaction(CH, msgs[0]["ts"], "star"))
    h.wait_ephemeral(T.FAVORITED.format(number=1))
    h.slack.event(message(CH, "make it blue"), signature="v0=" + "1" * 64)  # a rejected request is logged
    login = h.emu.host_file(PHOTO, "x.jpg", "image/jpeg", login_page=True)
    r2 = user_ts()
    h.slack.event(file_share(CH, [login], ts=r2, text=MENTION))
    h.wait_text(r2, "sign-in page")
    assert h.bot.jobs.join(timeout=60)
    # slack-sdk's DEBUG lines carry each request's body (message texts): never logged, even at DEBUG
    assert "Sending a request" not in caplog.text and "make the skirt red" not in caplog.text
    assert any(r.name.startswith("restyle.slack") for r in caplog.records)  # our own logging still flows
    assert BOT_TOKEN not in caplog.text
    assert SIGNING_SECRET not in caplog.text


# -- start-up (offline) ------------------------------------------------------------------------------------------------
def test_socket_mode_handler_and_main_checks(harness, tmp_path, capsys):
    handler = slack_app.socket_mode_handler(harness.app, "xapp-1-A0RESTYLE-offline", ping_interval=3)
    try:
        assert handler.client.ping_interval == 3 and handler.client.auto_reconnect_enabled
        # the app's client, with its 429 retry handler (a bare WebClient already has a connection-error one)
        assert any(isinstance(r, RateLimitErrorRetryHandler) for r in handler.client.web_client.retry_handlers)
    finally:
        handler.close()
    bare = Settings.from_env({}, data_dir=tmp_path)
    assert slack_app.main([], bare) == 2
    assert "SLACK_BOT_TOKEN and SLACK_APP_TOKEN" in capsys.readouterr().err
    assert slack_app.main(["--http"], Settings.from_env({}, data_dir=tmp_path, slack_bot_token="xoxb-1")) == 2
    assert "SLACK_SIGNING_SECRET" in capsys.readouterr().err


def test_manifest_matches_the_app():
    import yaml

    manifest = yaml.safe_load((Path(slack_app.__file__).parent / "slack_manifest.yaml").read_text())
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert {"chat:write", "files:read", "files:write", "reactions:read", "app_mentions:read", "commands",
            "channels:history", "groups:history", "im:history", "mpim:history"} <= scopes
    events = set(manifest["settings"]["event_subscriptions"]["bot_events"])
    assert {"message.channels", "message.groups", "message.im", "message.mpim", "app_mention",
            "reaction_added", "reaction_removed", "file_shared"} <= events
    assert [c["command"] for c in manifest["features"]["slash_commands"]] == ["/restyle"]
    assert manifest["settings"]["interactivity"]["is_enabled"] and manifest["settings"]["socket_mode_enabled"]
    json.dumps(manifest)  # plain data


def test_big_variations_are_uploaded_as_jpeg_small_ones_as_png(harness, monkeypatch):
    """Over UPLOAD_PNG_MAX_PIXELS a variation goes to Slack as a quality-95 JPEG (a 24 MP PNG is ~17 MB); the
    lossless PNG stays in the data dir."""
    monkeypatch.setattr(slack_app, "UPLOAD_PNG_MAX_PIXELS", 20_000)  # the 160x240 test photo counts as big
    h, emu = harness, harness.emu
    root = h.share_photo(text="make the skirt green")
    h.wait_variations(root, 2)
    with emu._lock:
        uploads = {f.name: f.content for f in emu.files.values() if f.channel == CH and f.content}
    jpegs = sorted(n for n in uploads if n.endswith(".jpg"))
    assert len(jpegs) == 2 and all(uploads[n][:3] == b"\xff\xd8\xff" for n in jpegs)
    for name in jpegs:
        (png,) = h.engine.store.root.rglob(name.removesuffix(".jpg") + ".png")
        sent = Image.open(io.BytesIO(uploads[name]))
        assert sent.size == Image.open(png).size
        diff = np.abs(np.asarray(sent).astype(int) - np.asarray(Image.open(png).convert("RGB")).astype(int))
        assert diff.mean() < 3  # quality 95, 4:4:4
    assert any(n.startswith("sheet-") and n.endswith(".png") for n in uploads)  # contact sheet and mask as before


# -- asking before spending GPU time ---------------------------------------------------------------------------------
def test_an_unclear_message_gets_generate_and_not_that_buttons(tmp_path):
    """"hmm maybe velvet?" in a thread: restyle posts what it understood with Generate / Not that; Generate runs that
    message (once, the buttons replaced by who answered), Not that runs nothing.  The conversation is under test, so
    the model is the fast test double."""
    from tests.fake_backend import FakeBackend

    fake = FakeBackend()
    with running_bot(tmp_path, fake) as h:
        root = h.share_photo(text="make the skirt red")
        h.wait_variations(root, 2)
        assert h.bot.jobs.join(timeout=60)
        calls = len(fake.inpaint_calls)

        def ask(text: str) -> dict:
            h.slack.event(message(CH, text, thread_ts=root))
            q = h.emu.wait_until(lambda: next((m for m in h.emu.thread_messages(CH, root) if text.split()[-1].strip("?")
                                               in m["text"] and m["text"].startswith("Just checking")
                                               and m["blocks"] and not m.get("edits")), None),
                                 30, what="a question")
            buttons = next(b for b in q["blocks"] if b["type"] == "actions")["elements"]
            assert [b["action_id"] for b in buttons] == [slack_app.ACTION_YES, slack_app.ACTION_NO]
            return q

        q = ask("hmm maybe velvet?")
        assert len(fake.inpaint_calls) == calls  # nothing spent yet
        qid = q["blocks"][1]["elements"][1]["value"]
        h.slack.action(slack_app.ACTION_NO, qid, channel=CH, message_ts=q["ts"], thread_ts=root,
                      message_text=q["text"])
        h.wait_text(root, T.CANCELLED)
        assert len(fake.inpaint_calls) == calls

        q = ask("hmm maybe in velvet?")
        qid = q["blocks"][1]["elements"][0]["value"]
        h.slack.action(slack_app.ACTION_YES, qid, channel=CH, message_ts=q["ts"], thread_ts=root,
                       message_text=q["text"])
        h.wait_variations(root, 4)
        assert h.bot.jobs.join(timeout=60)
        assert "velvet" in fake.prompts[-1] and len(fake.inpaint_calls) == calls + 1
        answered = next(m for m in h.emu.thread_messages(CH, root) if m["ts"] == q["ts"])
        assert answered["text"] == q["text"] and not any(b["type"] == "actions" for b in answered["blocks"])
        assert "<@U0DESIGNER>: Generate" in json.dumps(answered["blocks"])
        # the same click again (a double click, or a second person): the question is answered, nothing runs
        h.slack.action(slack_app.ACTION_YES, qid, channel=CH, message_ts=q["ts"], thread_ts=root)
        h.wait_text(root, T.QUESTION_GONE)
        assert len(fake.inpaint_calls) == calls + 1
