"""Team controls end to end: the real Bolt app over HTTP on loopback, signed requests, the Slack emulator, and the
fast model double (``FakeBackend``) — quotas, caps and admins, allowed channels, replayed requests, usage, log
hygiene and the download policy.  The subject is the bot's policy, not the pixels."""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import threading
import time
import urllib.parse
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bot import controls as C
from bot import messages as T
from bot import slack_app
from bot.backends import endpoint_seconds
from bot.settings import Settings
from model.schemas import InpaintRequest, SegmentRequest
from tests.fake_backend import FakeBackend, FakeEndpoint
from tests.slack_emulator import APP_ID, BOT_TOKEN, BOT_USER_ID, TEAM_ID, file_share, message, user_ts
from tests.test_slack import CH, PHOTO, running_bot

# the shared-state fixtures (tests/test_store_aws.py; moto's server is conftest's moto_url), for the DynamoDB test
from tests.test_store_aws import aws, dynamo, state  # noqa: F401 - fixtures

OTHER = "C0ELSEWHERE"
ADMIN = "U0BOSS"


class TimedBackend(FakeBackend):
    """The fast double, reporting 1 s of model time per picture."""

    def paint(self, image, mask, paint, seeds, progress=None, *, batch=False):
        painted = super().paint(image, mask, paint, seeds, progress, batch=batch)
        return replace(painted, gpu_s=1.0 * len(painted.pictures))


def ack_text(resp) -> str:
    return json.loads(resp.body)["text"] if resp.body.startswith("{") else resp.body


def thread_texts(h, root: str, channel: str = CH) -> list[str]:
    return [m["text"] for m in h.emu.thread_messages(channel, root)]


# -- 1. quotas -------------------------------------------------------------------------------------------------------
def test_over_quota_is_refused_before_any_model_call(tmp_path):
    fake = FakeBackend()
    with running_bot(tmp_path, fake, user_daily_images=2) as h:
        root = h.share_photo(text="make the skirt red")
        h.wait_variations(root, 2)
        assert h.bot.jobs.join(timeout=60)
        calls = (len(fake.segment_calls), len(fake.inpaint_calls))
        h.slack.event(message(CH, "make the skirt blue", thread_ts=root))
        refusal = h.wait_text(root, "your daily limit of 2 pictures")
        assert "(2 of 2 used today)" in refusal["text"] and "midnight UTC" in refusal["text"]
        assert re.search(r"in \d+ h \d+ min|in \d+ min", refusal["text"])
        assert h.bot.jobs.join(timeout=60)
        assert (len(fake.segment_calls), len(fake.inpaint_calls)) == calls  # no model call at all
        # the slash command is refused in its ack, and nothing is queued
        resp = h.slack.command("batch 4 pastel", channel=CH)
        assert "your daily limit of 2 pictures" in ack_text(resp)
        assert h.bot.jobs.join(timeout=60)
        assert len(fake.inpaint_calls) == calls[1]
        # another person still has their own quota
        h.slack.event(message(CH, "make the skirt green", thread_ts=root, user="U0SECOND"))
        h.wait_variations(root, 4)
        assert h.engine.store.usage_total(C.day_start(), user="U0DESIGNER") == (2, pytest.approx(
            h.engine.store.usage_total(C.day_start(), user="U0DESIGNER")[1]))
        assert h.engine.store.usage_total(C.day_start())[0] == 4


def test_over_quota_is_refused_on_the_shared_dynamodb_state(state, tmp_path, monkeypatch):  # noqa: F811
    """The same refusal with the bot on DynamoDB + S3 (RESTYLE_STATE): usage recorded there counts, and a limit an
    admin set from Slack is read from there."""
    import tests.test_slack
    from bot.store_aws import DynamoStore

    monkeypatch.setattr(tests.test_slack, "Store", lambda data_dir: dynamo(tmp_path, "bot"))
    fake = FakeBackend()
    with running_bot(tmp_path, fake, user_daily_images=10, admins=ADMIN) as h:
        assert isinstance(h.engine.store, DynamoStore)
        assert "`user_daily_images=2`" in ack_text(h.slack.command("limits user_daily_images=2", channel=CH,
                                                                   user=ADMIN))
        root = h.share_photo(text="make the skirt red")
        h.wait_variations(root, 2)
        assert h.bot.jobs.join(timeout=60)
        assert h.engine.store.usage_total(C.day_start(), user="U0DESIGNER")[0] == 2
        calls = len(fake.inpaint_calls)
        h.slack.event(message(CH, "make the skirt blue", thread_ts=root))
        refusal = h.wait_text(root, "your daily limit of 2 pictures")
        assert "(2 of 2 used today)" in refusal["text"]
        assert h.bot.jobs.join(timeout=60)
        assert len(fake.inpaint_calls) == calls  # no model call
        # a second store on the same table (another replica) sees the same usage and limit
        other = dynamo(tmp_path, "other")
        try:
            assert other.usage_total(C.day_start(), channel=CH) == h.engine.store.usage_total(C.day_start())
            assert other.limits() == {"user_daily_images": "2"}
        finally:
            other.close()


def test_batch_that_would_cross_the_quota_is_trimmed_and_says_so(tmp_path):
    fake = FakeBackend()
    with running_bot(tmp_path, fake, user_daily_images=5) as h:
        root = h.share_photo(text="make the skirt red")
        h.wait_variations(root, 2)
        assert h.bot.jobs.join(timeout=60)
        before = len(fake.inpaint_calls)
        resp = h.slack.command("batch 8 pastel", channel=CH)
        text = ack_text(resp)
        assert text.startswith("Starting a batch of 3 ") and "Only 3 of the 8 asked for" in text, text
        assert "capped at" not in text
        h.wait_variations(root, 5)
        assert h.bot.jobs.join(timeout=60)
        made = sum(len(r.seeds or [r.seed]) for r in fake.inpaint_calls[before:])
        assert made == 3
        summary = next(t for t in thread_texts(h, root) if t.startswith("Here are 3 variations"))
        assert "Only 3 of the 8 asked for" in summary and "your daily limit of 5 pictures" in summary
        assert "the most I make" not in summary
        # the quota is now used up: colourways are refused too
        h.slack.event(message(CH, "the skirt in navy, olive and rust", thread_ts=root))
        h.wait_text(root, "(5 of 5 used today)")


def test_gpu_budget_counts_the_endpoints_own_time(tmp_path):
    """RESTYLE_DAILY_GPU_SECONDS counts each call's timings_ms (1 s a picture here), chunked calls included."""
    fake = TimedBackend()
    with running_bot(tmp_path, fake, daily_gpu_seconds=6.0) as h:
        root = h.share_photo(text="make the skirt red")
        h.wait_variations(root, 2)
        assert h.bot.jobs.join(timeout=60)
        assert h.engine.store.usage_total(C.day_start()) == (2, pytest.approx(2.0))
        h.slack.command("batch 6 pastel", channel=CH)  # two calls (4 + 2 candidates)
        h.wait_variations(root, 8)
        assert h.bot.jobs.join(timeout=60)
        assert h.engine.store.usage_total(C.day_start()) == (8, pytest.approx(8.0))
        calls = len(fake.inpaint_calls)
        h.slack.event(message(CH, "make the skirt blue", thread_ts=root))
        refusal = h.wait_text(root, "daily GPU budget is spent")
        assert "8 of 6 GPU-seconds" in refusal["text"]
        assert h.bot.jobs.join(timeout=60)
        assert len(fake.inpaint_calls) == calls


def test_metering_falls_back_to_wall_time():
    from model.schemas import InpaintResponse

    res = InpaintResponse(images=[], seeds=[], width=1, height=1, format="png", crop_box=[0, 0, 1, 1])
    assert endpoint_seconds(res, 2.5) == 2.5
    timed = res.model_copy(update={"timings_ms": {"decode": 10.0, "generate": 1490.0}})
    assert endpoint_seconds(timed, 9.0) == pytest.approx(1.5)


def test_trim_keeps_as_many_colourways_as_it_can():
    from bot.engine import Job

    def job(n: int, way: str) -> Job:
        return Job("slack:C1:1.0", "U1", "t", None, ["skirt"], None, [], "p", "", Path("x"), 1.0, n, colourway=way)

    out = C.trim([job(2, "navy"), job(2, "olive"), job(2, "rust")], 4)
    assert [(j.colourway, j.count) for j in out] == [("navy", 2), ("olive", 1), ("rust", 1)]
    out = C.trim([job(2, "navy"), job(2, "olive"), job(2, "rust")], 2)
    assert [(j.colourway, j.count) for j in out] == [("navy", 1), ("olive", 1)]


# -- 2. admins and caps ----------------------------------------------------------------------------------------------
def test_admin_changes_a_limit_from_slack_and_is_exempt(tmp_path):
    fake = FakeBackend()
    with running_bot(tmp_path, fake, admins=f"{ADMIN} U0OTHERADMIN", user_daily_images=2) as h:
        root = h.share_photo(text="make the skirt red")
        h.wait_variations(root, 2)
        assert h.bot.jobs.join(timeout=60)
        # not an admin: may look, may not change
        assert "`user_daily_images` = 2" in ack_text(h.slack.command("limits", channel=CH))
        assert ack_text(h.slack.command("limits user_daily_images=50", channel=CH)) == \
            T.ADMINS_ONLY.format(what="change limits")
        # an admin: bad input gets a specific answer, a good one is stored and used at once
        bad = ack_text(h.slack.command("limits user_daily_images=lots", channel=CH, user=ADMIN))
        assert "whole number from 0 to" in bad
        assert "max_steps is a cap" in ack_text(h.slack.command("limits max_steps=none", channel=CH, user=ADMIN))
        assert "the limits are" in ack_text(h.slack.command("limits steps=5", channel=CH, user=ADMIN))
        ok = ack_text(h.slack.command("limits user_daily_images=4 max_steps=60", channel=CH, user=ADMIN))
        assert ok == T.LIMITS_SET.format(user=ADMIN, changes="`user_daily_images=4`, `max_steps=60`")
        h.slack.event(message(CH, "make the skirt blue", thread_ts=root))
        h.wait_variations(root, 4)  # 2 more allowed now
        assert h.bot.jobs.join(timeout=60)
        h.slack.event(message(CH, "make the skirt green", thread_ts=root))
        h.wait_text(root, "your daily limit of 4 pictures")
        # the admin is exempt from quotas
        h.slack.event(message(CH, "make the skirt yellow", thread_ts=root, user=ADMIN))
        h.wait_variations(root, 6)
        # unlimited again
        h.slack.command("limits user_daily_images=none", channel=CH, user=ADMIN)
        assert h.bot.controls.limits()["user_daily_images"] is None


def test_caps_for_everyone_but_admins(tmp_path):
    fake = FakeBackend()
    with running_bot(tmp_path, fake, admins=ADMIN, cap_steps=20, cap_count=3, cap_batch=4) as h:
        root = h.share_photo()
        h.wait_text(root, T.GOT_PHOTO)
        h.slack.command("settings steps=150 guidance=30", channel=CH)
        h.wait_text(root, "`steps=150` is above the team's cap of 20")
        assert h.engine.store.settings(f"slack:{CH}:{root}") == {}
        h.slack.command("settings steps=40", channel=CH, user=ADMIN)  # admins may
        h.wait_text(root, "steps=40")
        assert ack_text(h.slack.command("batch 8 pastel skirt", channel=CH)).startswith("Starting a batch of 4 ")
        h.wait_variations(root, 4)
        assert h.bot.jobs.join(timeout=60)
        assert fake.inpaint_calls[-1].steps == 20  # the admin's steps=40 is capped for others
        h.slack.event(message(CH, "8 more like that", thread_ts=root))
        h.wait_variations(root, 7)  # count capped at 3
        assert h.bot.jobs.join(timeout=60)
        h.slack.event(message(CH, "8 more like that", thread_ts=root, user=ADMIN))
        h.wait_variations(root, 15)
        assert fake.inpaint_calls[-1].steps == 40


# -- 3. allowed channels ---------------------------------------------------------------------------------------------
def test_silence_outside_the_allowed_channels(tmp_path):
    fake = FakeBackend()
    with running_bot(tmp_path, fake, channels=f"#design-team {CH[:-1]}X", allow_dms=False) as h:
        emu = h.emu
        emu.channel_names[CH] = "design-team"  # listed by name
        # a photo in a channel not on the list: not downloaded, no reply, no thread
        f = emu.host_file(PHOTO, "look.jpg", "image/jpeg")
        root = user_ts()
        h.slack.event(file_share(OTHER, [f], ts=root, text="make the skirt red"))
        h.slack.event(message(OTHER, "make the skirt red"))
        # a direct mention gets one private note, once
        for _ in range(2):
            h.slack.event(message(OTHER, f"<@{BOT_USER_ID}> hello"))
        h.slack.event({"type": "app_mention", "channel": OTHER, "user": "U0DESIGNER", "text": f"<@{BOT_USER_ID}> hi",
                       "ts": user_ts(), "channel_type": "channel"})
        note = h.wait_ephemeral("isn't enabled in this channel")
        assert note["channel"] == OTHER and "#design-team" in note["text"]
        resp = h.slack.command("batch 4", channel=OTHER, channel_name="random")
        assert "isn't enabled in this channel" in ack_text(resp)
        # a DM: RESTYLE_ALLOW_DMS=0
        dm = emu.host_file(PHOTO, "dm.jpg", "image/jpeg")
        h.slack.event(file_share("D0DM00001", [dm], channel_type="im", text="make the skirt red"))
        # the listed channel works (by name)
        ok = h.share_photo(text="make the skirt red")
        h.wait_variations(ok, 2)
        assert h.bot.jobs.join(timeout=60)
        assert emu.count("chat.postEphemeral") == 1
        assert not any(m["channel"] in (OTHER, "D0DM00001") for m in emu.messages)
        downloads = [p for p in emu.calls if p.startswith("/files-pri/")]
        assert len(downloads) == 1 and f["id"] not in downloads[0] and dm["id"] not in downloads[0]
        assert h.engine.store.latest_thread(f"slack:{OTHER}:") is None
        assert len(fake.inpaint_calls) == 1


# -- 4. replay -------------------------------------------------------------------------------------------------------
def test_replayed_command_and_action_run_once(tmp_path):
    fake = FakeBackend()
    with running_bot(tmp_path, fake) as h:
        root = h.share_photo(text="make the skirt red")
        msgs = h.wait_variations(root, 2)
        assert h.bot.jobs.join(timeout=60)
        calls = len(fake.inpaint_calls)
        form = urllib.parse.urlencode({
            "token": "legacy-verification-token", "team_id": TEAM_ID, "channel_id": CH, "channel_name": "design",
            "user_id": "U0DESIGNER", "command": "/restyle", "text": "batch 2 pastel", "api_app_id": APP_ID,
            "response_url": "https://hooks.slack.com/commands/T0RESTYLE/1/abc", "trigger_id": "4242.1.replayed"})
        ts = int(time.time())
        first = h.slack.post(form, "application/x-www-form-urlencoded", timestamp=ts)
        assert first.status == 200 and "Starting a batch of 2" in ack_text(first)
        for _ in range(2):  # the same signed body and timestamp: a replay
            again = h.slack.post(form, "application/x-www-form-urlencoded", timestamp=ts)
            assert again.status == 200 and again.body == ""
        h.wait_variations(root, 4)
        assert h.bot.jobs.join(timeout=60)
        assert len(fake.inpaint_calls) == calls + 1
        # a button click replayed: "More like this" once
        vid = next(b for b in msgs[0]["blocks"] if b["type"] == "actions")["elements"][0]["value"]
        payload = {"type": "block_actions", "team": {"id": TEAM_ID}, "user": {"id": "U0DESIGNER"},
                   "api_app_id": APP_ID, "trigger_id": "4242.2.click", "channel": {"id": CH},
                   "container": {"type": "message", "message_ts": msgs[0]["ts"], "channel_id": CH,
                                 "thread_ts": root},
                   "message": {"type": "message", "ts": msgs[0]["ts"], "thread_ts": root, "text": "v"},
                   "actions": [{"type": "button", "action_id": slack_app.ACTION_MORE, "block_id": "b",
                                "value": vid, "action_ts": "1764600000.000001"}]}
        body = urllib.parse.urlencode({"payload": json.dumps(payload)})
        ts = int(time.time())
        for _ in range(3):
            assert h.slack.post(body, "application/x-www-form-urlencoded", timestamp=ts).status == 200
        h.wait_variations(root, 6)
        assert h.bot.jobs.join(timeout=60)
        assert len(fake.inpaint_calls) == calls + 2
        assert len(h.variation_messages(root)) == 6


# -- 5. usage --------------------------------------------------------------------------------------------------------
def test_usage_table_and_admin_csv(tmp_path):
    fake = TimedBackend()
    with running_bot(tmp_path, fake, admins=ADMIN) as h:
        root = h.share_photo(text="make the skirt red")
        h.wait_variations(root, 2)
        h.slack.event(message(CH, "make the skirt blue", thread_ts=root, user=ADMIN))
        h.wait_variations(root, 4)
        assert h.bot.jobs.join(timeout=60)
        resp = json.loads(h.slack.command("usage", channel=CH).body)
        sections = [b for b in resp["blocks"] if b["type"] == "section" and "text" in b]
        rows = {b["text"]["text"]: [f["text"] for f in b["fields"]] for b in sections}
        assert rows == {"*You*": ["2 pictures · 2.0 GPU-s"] * 2, f"*<#{CH}>*": ["4 pictures · 4.0 GPU-s"] * 2}
        assert ack_text(h.slack.command("usage csv", channel=CH)) == \
            T.ADMINS_ONLY.format(what="download the usage CSV")
        admin = json.loads(h.slack.command("usage", channel=CH, user=ADMIN).body)
        assert any(b.get("text", {}).get("text") == "*Everyone*" for b in admin["blocks"])
        assert ack_text(h.slack.command("usage csv", channel=CH, user=ADMIN)) == T.USAGE_CSV.format(n=2)
        with h.emu._lock:
            (upload,) = [f for f in h.emu.files.values() if f.name.startswith("restyle-usage-")]
        assert upload.channel == CH
        table = list(csv.DictReader(io.StringIO(upload.content.decode())))
        assert [(r["user"], r["channel"], r["pictures"], r["gpu_seconds"]) for r in table] == \
            [("U0DESIGNER", CH, "2", "2.000"), (ADMIN, CH, "2", "2.000")]


# -- 6. logs ---------------------------------------------------------------------------------------------------------
class _Runtime:
    """A loopback SageMaker Runtime (``POST /endpoints/{name}/invocations``) answering with the fast double, so the
    real boto3/botocore/urllib3 stack carries prompts and base64 images."""

    def __init__(self, fake: FakeEndpoint) -> None:
        runtime = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if "/restyle-clipseg/" in self.path:
                    out = fake.segment(SegmentRequest.model_validate_json(body))
                else:
                    out = fake.inpaint(InpaintRequest.model_validate_json(body))
                data = out.model_dump_json().encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        runtime.fake = fake


def test_debug_log_has_no_prompt_token_body_or_image(tmp_path):
    import boto3

    from bot.backends import SageMakerBackend

    fake = FakeEndpoint()
    rt = _Runtime(fake)
    log_file = tmp_path / "debug.log"
    handler = logging.FileHandler(log_file)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    levels = {name: logging.getLogger(name).level for name in C.NOISY}
    canary, prompt_canary = "zebracanary", "houndstooth"  # in the message text / in the prompt sent to the model
    try:
        for name in C.NOISY:  # a fresh process started with --log-level DEBUG
            logging.getLogger(name).setLevel(logging.NOTSET)
        C.quiet_logs()  # as `restyle slack` does before it builds the backend
        client = boto3.client("sagemaker-runtime", endpoint_url=rt.url, region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        backend = SageMakerBackend(clipseg_endpoint="restyle-clipseg", inpaint_endpoint="restyle-inpaint",
                                   client=client)
        with running_bot(tmp_path / "data", backend) as h:
            thread_root = h.share_photo(text=f"make the skirt {canary} {prompt_canary}")
            h.wait_variations(thread_root, 2)
            h.slack.command(f"batch 2 {canary} {prompt_canary} skirt", channel=CH)
            h.wait_variations(thread_root, 4)
            h.slack.event(message(CH, f"make the skirt {canary} blue", thread_ts=thread_root),
                          signature="v0=" + "1" * 64)  # Bolt logs a request with a bad signature
            assert h.bot.jobs.join(timeout=60)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        handler.close()
        rt.httpd.shutdown()
    assert len(fake.inpaint_calls) == 2 and all(prompt_canary in r.prompt for r in fake.inpaint_calls)  # it did travel
    text = log_file.read_text()
    assert "PIL.PngImagePlugin DEBUG" in text  # DEBUG did flow …
    fragments = [fake.inpaint_calls[0].image[200:240], fake.inpaint_calls[0].mask[100:140]]
    assert canary not in text and prompt_canary not in text
    assert BOT_TOKEN not in text and "Bearer" not in text
    assert not any(f in text for f in fragments)
    assert "Invalid request signature" in text and "[request content withheld]" in text
    assert not re.search(r"^(botocore|boto3|urllib3|slack_sdk|slack_bolt|restyle\.slack\.(bolt|web))\S* DEBUG", text,
                         re.MULTILINE)  # … but not from the libraries that log bodies


# -- 7. downloads and the manifest ----------------------------------------------------------------------------------
def test_download_policy():
    s = Settings.from_env({}, slack_api_url="http://127.0.0.1:9/api/")
    assert C.file_url_refused("https://files.slack.com/files-pri/T1-F1/a.jpg", s) is None
    assert "not https" in C.file_url_refused("http://files.slack.com/files-pri/T1-F1/a.jpg", s)
    assert "not https (file)" in C.file_url_refused("file:///etc/passwd", s)
    assert C.file_url_refused("https://evil.example/a.jpg", s) == "unexpected file host evil.example"
    assert C.file_url_refused("https://files.slack.com.evil.example/a.jpg", s).startswith("unexpected file host")
    assert "not https" in C.file_url_refused("http://127.0.0.1:9/files-pri/a.jpg", s)  # off by default
    test = Settings.from_env({"RESTYLE_TEST_LOOPBACK_FILES": "1"}, slack_api_url="http://127.0.0.1:9/api/")
    assert C.file_url_refused("http://127.0.0.1:9/files-pri/a.jpg", test) is None
    assert C.file_url_refused("http://localhost:9/a.jpg", test) is not None  # another host
    assert C.file_url_refused("file:///etc/passwd", test) is not None
    remote = Settings.from_env({"RESTYLE_TEST_LOOPBACK_FILES": "1"}, slack_api_url="http://slack.example/api/")
    assert C.file_url_refused("http://slack.example/files-pri/a.jpg", remote) is not None  # loopback only


def test_plain_http_download_is_refused_without_the_test_setting(tmp_path):
    with running_bot(tmp_path, FakeBackend(), test_loopback_files=False) as h:
        root = h.share_photo()
        h.wait_text(root, "the file URL is not https (http)")
        assert not any(p.startswith("/files-pri/") for p in h.emu.calls)


def test_manifest_asks_only_for_scopes_the_code_uses():
    import yaml

    manifest = yaml.safe_load((Path(slack_app.__file__).parent / "slack_manifest.yaml").read_text())
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert "im:write" not in scopes
    code = "\n".join(p.read_text() for p in Path(slack_app.__file__).parent.glob("*.py"))
    uses = {"chat:write": "chat_post", "files:write": "files_upload_v2", "files:read": "files_info",
            "reactions:read": "reaction_added", "commands": '"/restyle"', "app_mentions:read": "app_mention",
            "channels:read": "conversations_info", "groups:read": "conversations_info",
            "channels:history": '"message"', "groups:history": '"message"', "im:history": '"message"',
            "mpim:history": '"message"'}
    assert scopes == set(uses)
    assert all(needle in code for needle in uses.values())


# -- 8. only asked-about photos, retention, forget -----------------------------------------------------------------
def test_only_photos_restyle_is_asked_about_are_downloaded(tmp_path):
    fake = FakeBackend()
    with running_bot(tmp_path, fake) as h:
        emu = h.emu
        f = emu.host_file(PHOTO, "look.jpg", "image/jpeg")
        root = user_ts()
        h.slack.event(emu.user_post(file_share(CH, [f], ts=root, text="new lookbook shot, thoughts?")))
        chat = emu.host_file(PHOTO, "other.jpg", "image/jpeg")
        h.slack.event(emu.user_post(file_share(CH, [chat], ts=user_ts())))
        h.slack.event(message(CH, "love it", thread_ts=root))  # people talking: still nothing fetched
        time.sleep(0.5)
        assert h.bot.jobs.join(timeout=30)
        assert not any(p.startswith("/files-pri/") for p in emu.calls) and emu.count("chat.postMessage") == 0
        # a request in the photo's thread: now (and only now) the photo is fetched, and the request runs
        h.slack.event(message(CH, "make the skirt red", thread_ts=root))
        h.wait_variations(root, 2)
        fetched = [p for p in emu.calls if p.startswith("/files-pri/")]
        assert len(fetched) == 1 and f["id"] in fetched[0]
        assert h.engine.store.has_thread(f"slack:{CH}:{root}") and len(fake.inpaint_calls) == 1


def test_retention_deletes_idle_threads_and_says_so(tmp_path):
    fake = FakeBackend()
    with running_bot(tmp_path, fake, retention_days=2.0) as h:
        root = h.share_photo(text="make the skirt red")
        h.wait_variations(root, 2)
        assert h.bot.jobs.join(timeout=60)
        thread = f"slack:{CH}:{root}"
        folder = h.engine.store.thread_dir(thread)
        assert any(folder.rglob("*.png"))
        assert h.bot.sweep_retention(now=time.time() + 86400) == 0  # one day idle: kept
        assert h.bot.sweep_retention(now=time.time() + 3 * 86400) == 1
        assert not folder.exists() and not h.engine.store.has_thread(thread)
        h.wait_text(root, "nothing happened here for 2 days")
        calls = len(fake.inpaint_calls)
        h.slack.event(message(CH, "use 1", thread_ts=root))
        h.slack.event(message(CH, "#1 but in blue", thread_ts=root))
        h.emu.wait_until(lambda: sum("I've deleted this thread's photo" in t for t in thread_texts(h, root)) == 3,
                         what="the deletion said to each reference")
        assert h.bot.jobs.join(timeout=60)
        assert len(fake.inpaint_calls) == calls
        assert h.engine.store.forgotten(thread) == "retention"


def test_forget_a_thread(tmp_path):
    fake = FakeBackend()
    with running_bot(tmp_path, fake, admins=ADMIN) as h:
        root = h.share_photo(text="make the skirt red")
        msgs = h.wait_variations(root, 2)
        assert h.bot.jobs.join(timeout=60)
        thread = f"slack:{CH}:{root}"
        assert ack_text(h.slack.command("forget", channel=CH, user="U0SOMEONE")) == T.FORGET_DENIED
        assert h.engine.store.has_thread(thread)
        assert ack_text(h.slack.command("forget", channel=CH)) == T.FORGOTTEN["forget"]  # the photo's sharer
        assert not h.engine.store.thread_dir(thread).exists() and not h.engine.store.has_thread(thread)
        # its buttons do nothing now, and say so
        vid = next(b for b in msgs[0]["blocks"] if b["type"] == "actions")["elements"][0]["value"]
        h.slack.action(slack_app.ACTION_MORE, vid, channel=CH, message_ts=msgs[0]["ts"], thread_ts=root)
        h.wait_ephemeral(T.GONE_VARIATION)
        # "@restyle forget" in another thread, by an admin
        other = h.share_photo(text="make the skirt blue")
        h.wait_variations(other, 2)
        assert h.bot.jobs.join(timeout=60)
        h.slack.event(message(CH, f"<@{BOT_USER_ID}> forget this thread", thread_ts=other, user=ADMIN))
        h.wait_text(other, "are deleted (`/restyle forget`)")
        assert not h.engine.store.has_thread(f"slack:{CH}:{other}")
        assert len(fake.inpaint_calls) == 2


def test_bad_control_settings_are_named_at_start():
    for env, needle in (({"RESTYLE_USER_DAILY_IMAGES": "-1"}, "RESTYLE_USER_DAILY_IMAGES must be from 0"),
                        ({"RESTYLE_DAILY_GPU_SECONDS": "nan"}, "RESTYLE_DAILY_GPU_SECONDS must be from 0"),
                        ({"RESTYLE_CAP_STEPS": "500"}, "RESTYLE_CAP_STEPS must be from 1 to 150"),
                        ({"RESTYLE_CHANNEL_DAILY_IMAGES": "many"}, "RESTYLE_CHANNEL_DAILY_IMAGES must be a int"),
                        ({"RESTYLE_PHOTOS": "some"}, "RESTYLE_PHOTOS must be 'asked' or 'all'")):
        with pytest.raises(ValueError, match=re.escape(needle)):
            Settings.from_env(env)
    s = Settings.from_env({"RESTYLE_ADMINS": "U1, U2 U3", "RESTYLE_ALLOW_DMS": "off", "RESTYLE_CHANNELS": "#design C0ABCDEF1"})
    assert C.parse_list(s.admins) == ["U1", "U2", "U3"] and not s.allow_dms
    policy = C.ChannelPolicy(s, client=None)
    assert policy.ids == {"C0ABCDEF1"} and policy.names == {"design"}
    assert not policy.allowed("D0DM00001", is_dm=True) and policy.allowed("C0ABCDEF1", is_dm=False)
    assert policy.allowed("C0ZZZZZZZ", is_dm=False, name="Design")
