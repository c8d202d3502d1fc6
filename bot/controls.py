"""Team controls: quotas, admins and caps, allowed channels, usage, replay keys, log hygiene and download policy.

A design team shares one bill for GPU endpoints and keeps unreleased designs confidential.  This module holds every
rule for that; ``bot.engine`` and ``bot.slack_app`` call it at a few hooks:

* **Quotas** (``RESTYLE_USER_DAILY_IMAGES``, ``RESTYLE_CHANNEL_DAILY_IMAGES``, ``RESTYLE_DAILY_GPU_SECONDS``) are
  checked when a generation is planned, before any model call: a request over a limit is refused, one that would
  cross it is trimmed to what is left.  Days are UTC days.  Unset = unlimited.
* **GPU seconds** are what each inpainting call took on the endpoint: the sum of the response's ``timings_ms`` (the
  model's own decode → generate → encode time) for each real-time call, or the call's wall time when a response
  carries none (an async batch: submit to last result).  Segmentation is not counted (small, and cached per photo).
* **Admins** (``RESTYLE_ADMINS``) are exempt from quotas and caps and may change limits from Slack
  (``/restyle limits key=value``); everyone else is capped per setting (steps, count, batch, guidance).
* Controls govern Slack threads only: the terminal (``restyle chat``) is one person on their own machine.
"""

from __future__ import annotations

import csv
import hashlib
import io
import ipaddress
import logging
import re
import time
import urllib.parse
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from bot import messages as T
from bot.events import Text

if TYPE_CHECKING:
    from bot.engine import Job
    from bot.settings import Settings
    from bot.store import Store

log = logging.getLogger("restyle.controls")

#: limit key (as typed in ``/restyle limits``) → (Settings field, type, what it is called in replies)
LIMITS: dict[str, tuple[str, type, str]] = {
    "user_daily_images": ("user_daily_images", int, "your daily limit of {max} pictures"),
    "channel_daily_images": ("channel_daily_images", int, "this channel's daily limit of {max} pictures"),
    "daily_gpu_seconds": ("daily_gpu_seconds", float, "the team's daily GPU budget of {max} GPU-seconds"),
    "max_steps": ("cap_steps", int, "the cap on steps"),
    "max_count": ("cap_count", int, "the cap on variations per request"),
    "max_batch": ("cap_batch", int, "the cap on a batch"),
    "max_guidance": ("cap_guidance", float, "the cap on guidance"),
}
#: quotas may be unlimited ("none"); caps always have a value
QUOTAS = ("user_daily_images", "channel_daily_images", "daily_gpu_seconds")
RANGES = {"user_daily_images": (0, 10**9), "channel_daily_images": (0, 10**9), "daily_gpu_seconds": (0.0, 1e12),
          "max_steps": (1, 150), "max_count": (1, 16), "max_batch": (1, 64), "max_guidance": (0.0, 30.0)}
#: thread setting → the cap that bounds it
SETTING_CAPS = {"steps": "max_steps", "guidance": "max_guidance", "count": "max_count"}
#: Slack's conversation ids: C… (channels), G… (private / group), D… (DMs)
CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{6,}$")
#: hosts Slack serves ``url_private`` from; a photo is downloaded over https from these only
SLACK_FILE_HOSTS = ("files.slack.com", "slack-files.com")


def parse_list(raw: str | None) -> list[str]:
    """``"U1, U2 U3"`` → ``["U1", "U2", "U3"]``."""
    return [p for p in re.split(r"[\s,]+", raw or "") if p]


def day_start(now: float | None = None) -> float:
    """Midnight UTC of ``now``'s day (quotas count from here)."""
    d = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    return d.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def month_start(now: float | None = None) -> float:
    d = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    return d.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()


def until_reset(now: float | None = None) -> str:
    """How long until the next midnight UTC, for people: ``"3 h 12 min"``."""
    now = time.time() if now is None else now
    left = int(day_start(now) + 86400 - now)
    h, m = divmod(max(60, left) // 60, 60)
    return f"{h} h {m} min" if h else f"{m} min"


def slack_channel(thread: str) -> str | None:
    """``"slack:C1:17.01"`` → ``"C1"``; None for the terminal's threads."""
    parts = thread.split(":", 2)
    return parts[1] if len(parts) == 3 and parts[0] == "slack" else None


def _fmt(v) -> str:
    return "—" if v is None else (f"{v:g}" if isinstance(v, float) else str(v))


class Controls:
    """The team's limits applied to one engine's requests (state lives in the ``Store``)."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.admins = frozenset(parse_list(settings.admins))

    # -- who and where ---------------------------------------------------------------------------------------------
    def is_admin(self, user: str) -> bool:
        return user in self.admins

    def governs(self, thread: str | None, user: str) -> bool:
        """Do quotas and caps apply to ``user`` in ``thread``?  Slack threads, people other than admins."""
        return bool(thread) and slack_channel(thread) is not None and not self.is_admin(user)

    # -- limits ----------------------------------------------------------------------------------------------------
    def limits(self) -> dict[str, int | float | None]:
        """Every limit now: the environment's, with what admins set from Slack on top."""
        out: dict[str, int | float | None] = {k: getattr(self.settings, f) for k, (f, _, _) in LIMITS.items()}
        for key, raw in self.store.limits().items():
            if key in LIMITS:
                out[key] = None if raw is None else LIMITS[key][1](raw)
        return out

    def limits_summary(self) -> str:
        return "\n".join(f"• `{k}` = {_fmt(v)}" for k, v in self.limits().items())

    def set_limits(self, user: str, text: str) -> str:
        """``/restyle limits user_daily_images=50 max_steps=60`` (admins only): the reply."""
        items = parse_list(text)
        if not items:
            return T.LIMITS.format(summary=self.limits_summary())
        if not self.is_admin(user):
            return T.ADMINS_ONLY.format(what="change limits")
        changes: dict[str, str | None] = {}
        for item in items:
            key, eq, raw = item.partition("=")
            key = key.lower()
            if key not in LIMITS or not eq:
                return T.BAD_LIMIT.format(item=item, why=f"the limits are {', '.join(LIMITS)} (as `key=value`)")
            typ, (lo, hi) = LIMITS[key][1], RANGES[key]
            if raw.lower() in ("none", "off", "unlimited"):
                if key not in QUOTAS:
                    return T.BAD_LIMIT.format(item=item, why=f"{key} is a cap and needs a value from {lo} to {hi}")
                changes[key] = None
                continue
            try:
                value = typ(raw)
            except ValueError:
                value = None
            if value is None or not lo <= value <= hi:  # NaN fails this too
                kind = "a whole number" if typ is int else "a number"
                unlimited = " or `none` (unlimited)" if key in QUOTAS else ""
                return T.BAD_LIMIT.format(item=item, why=f"it must be {kind} from {lo} to {hi}{unlimited}")
            changes[key] = str(value)
        for key, value in changes.items():
            self.store.set_limit(key, value, user)
        log.info("limits changed by %s: %s", user, ", ".join(changes))
        return T.LIMITS_SET.format(user=user, changes=", ".join(f"`{k}={v or 'none'}`" for k, v in changes.items()))

    # -- hooks for the engine ---------------------------------------------------------------------------------------
    def count_cap(self, thread: str, user: str, cap: int, *, batch: bool) -> int:
        """The most pictures one request of ``user`` may ask for (a batch or a colourway set: ``max_batch``)."""
        if not self.governs(thread, user):
            return cap
        lim = self.limits()
        return max(1, min(cap, int(lim["max_batch"] if batch else lim["max_count"])))

    def capped(self, thread: str, user: str, effective: dict) -> dict:
        """A thread's effective settings with ``user``'s caps applied (a thread an admin set steps=150 in still
        runs at most ``max_steps`` for everyone else)."""
        if not self.governs(thread, user):
            return effective
        lim = self.limits()
        out = dict(effective)
        for key, cap in SETTING_CAPS.items():
            if key in out and isinstance(out[key], int | float):
                out[key] = type(out[key])(min(out[key], lim[cap]))
        return out

    def refuse_setting(self, thread: str, user: str, values: dict) -> Text | None:
        """``settings steps=150`` from someone capped at 50: the reply; None when every value is within caps."""
        if not self.governs(thread, user):
            return None
        lim = self.limits()
        for key, cap in SETTING_CAPS.items():
            if key not in values:
                continue
            try:
                v = float(values[key])
            except (TypeError, ValueError):
                continue  # the engine answers a malformed value itself
            if v > float(lim[cap]):
                return Text(T.CAP_SETTING.format(key=key, value=values[key], cap=_fmt(lim[cap])), kind="error")
        return None

    def admit(self, jobs: list[Job]) -> list[Job] | Text:
        """Quotas, before any model call: ``jobs`` as they may run (trimmed, the first job carrying a note that
        says so), or the refusal."""
        first = jobs[0]
        if not self.governs(first.thread, first.user):
            return jobs
        lim = self.limits()
        now = time.time()
        since = day_start(now)
        reset = until_reset(now)
        budget = lim["daily_gpu_seconds"]
        if budget is not None:
            _, spent = self.store.usage_total(since)
            if spent >= budget:
                return Text(T.GPU_REFUSED.format(used=f"{spent:.0f}", max=_fmt(budget), reset=reset), kind="error")
        left, which = None, ""
        channel = slack_channel(first.thread)
        for key, scope in (("user_daily_images", {"user": first.user}), ("channel_daily_images", {"channel": channel})):
            cap = lim[key]
            if cap is None:
                continue
            used, _ = self.store.usage_total(since, **scope)
            if left is None or cap - used < left:
                left, which = max(0, int(cap) - used), LIMITS[key][2].format(max=_fmt(cap))
                used_of = (used, cap)
        if left is None:
            return jobs
        if left <= 0:
            return Text(T.QUOTA_REFUSED.format(limit=which, used=used_of[0], max=_fmt(used_of[1]), reset=reset),
                        kind="error")
        asked = sum(j.count for j in jobs)
        if asked <= left:
            return jobs
        trimmed = trim(jobs, left)
        trimmed[0] = replace(trimmed[0], note=trimmed[0].note + T.QUOTA_TRIMMED.format(
            n=left, asked=asked, limit=which, reset=reset))
        return trimmed

    def record(self, job: Job, images: int, gpu_s: float) -> None:
        """What one job generated and what it took on the endpoint."""
        self.store.record_usage(job.user, slack_channel(job.thread) or "", job.thread, images, gpu_s)

    # -- retention ---------------------------------------------------------------------------------------------------
    def sweep(self, now: float | None = None) -> list[str]:
        """``RESTYLE_RETENTION_DAYS``: delete the Slack threads nothing happened in for that long (photo, masks,
        sheets, variations and rows); the threads deleted."""
        days = self.settings.retention_days
        if days is None:
            return []
        before = (time.time() if now is None else now) - days * 86400
        gone = [t for t in self.store.idle_threads(before, prefix="slack:") if self.store.forget_thread(t, "retention")]
        if gone:
            log.info("retention: deleted %d thread(s) idle for %g days", len(gone), days)
        return gone

    def forget(self, thread: str, user: str) -> str:
        """``/restyle forget``: the thread's starter or an admin deletes its data now; the reply."""
        owner = self.store.thread_owner(thread)
        if owner is None:
            return T.FORGOTTEN["forget"] if self.store.forgotten(thread) else T.NO_THREAD
        if user != owner and not self.is_admin(user):
            return T.FORGET_DENIED
        self.store.forget_thread(thread, "forget")
        return T.FORGOTTEN["forget"]

    def forgotten_text(self, thread: str) -> str | None:
        why = self.store.forgotten(thread)
        return None if why is None else T.FORGOTTEN[why].format(days=_fmt(self.settings.retention_days))

    # -- usage -------------------------------------------------------------------------------------------------------
    def usage(self, user: str, channel: str, now: float | None = None) -> list[tuple[str, tuple[int, float],
                                                                                 tuple[int, float]]]:
        """Rows (who, today's (pictures, GPU s), this month's): the person, their channel, and for admins everyone."""
        day, month = day_start(now), month_start(now)
        rows = [("You", {"user": user}), ("This DM" if channel.startswith("D") else f"<#{channel}>",
                                          {"channel": channel})]
        if self.is_admin(user):
            rows.append(("Everyone", {}))
        return [(who, self.store.usage_total(day, **scope), self.store.usage_total(month, **scope))
                for who, scope in rows]

    def usage_blocks(self, user: str, channel: str) -> tuple[str, list[dict]]:
        """``/restyle usage`` as a Block Kit table: a header row, then one section per row, its fields the columns."""
        def cell(n: int, s: float) -> str:
            return f"{n} picture{'s' if n != 1 else ''} · {s:.1f} GPU-s"

        rows = self.usage(user, channel)
        blocks: list[dict] = [{"type": "header", "text": {"type": "plain_text", "text": T.USAGE_TITLE[:150]}},
                              {"type": "section", "fields": [{"type": "mrkdwn", "text": "*Today*"},
                                                             {"type": "mrkdwn", "text": "*This month*"}]}]
        text = []
        for who, today, month in rows:
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*{who}*"},
                           "fields": [{"type": "mrkdwn", "text": cell(*today)},
                                      {"type": "mrkdwn", "text": cell(*month)}]})
            text.append(f"{who}: today {cell(*today)}; this month {cell(*month)}")
        lim = self.limits()
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": (
            f"Limits: {_fmt(lim['user_daily_images'])} per person a day, {_fmt(lim['channel_daily_images'])} per "
            f"channel a day, {_fmt(lim['daily_gpu_seconds'])} GPU-s a day (— = unlimited). Resets at midnight UTC "
            f"(in {until_reset()}).")}]})
        return "\n".join(text), blocks

    def usage_csv(self, now: float | None = None) -> tuple[str, int]:
        """This month's generations as CSV (UTC time, user, channel, thread, pictures, GPU seconds) and their count."""
        rows = self.store.usage_rows(month_start(now))
        out = io.StringIO()
        w = csv.writer(out)
        w.writerow(["time_utc", "user", "channel", "thread", "pictures", "gpu_seconds"])
        for r in rows:
            w.writerow([datetime.fromtimestamp(r["at"], UTC).isoformat(timespec="seconds"), r["user"], r["channel"],
                        r["thread"], r["images"], f"{r['gpu_s']:.3f}"])
        return out.getvalue(), len(rows)


def trim(jobs: list[Job], total: int) -> list[Job]:
    """``jobs`` cut to ``total`` pictures in all: the largest job loses one at a time (the last first), so a
    colourway set keeps as many colourways as it can; jobs left with none are dropped."""
    counts = [j.count for j in jobs]
    while sum(counts) > total:
        i = max(range(len(counts)), key=lambda k: (counts[k], k))
        counts[i] -= 1
    return [replace(j, count=n) for j, n in zip(jobs, counts, strict=True) if n > 0]


# -- allowed channels ------------------------------------------------------------------------------------------------
class ChannelPolicy:
    """``RESTYLE_CHANNELS`` (ids or names; empty: every channel the bot is in) and ``RESTYLE_ALLOW_DMS``.

    Names are matched through ``conversations.info`` (``channels:read``/``groups:read``), once per channel."""

    def __init__(self, settings: Settings, client) -> None:
        entries = parse_list(settings.channels)
        self.ids = {e for e in entries if CHANNEL_ID.match(e)}
        self.names = {e.lstrip("#").lower() for e in entries if not CHANNEL_ID.match(e)}
        self.allow_dms = settings.allow_dms
        self.client = client
        self._names: dict[str, str | None] = {}

    @property
    def listed(self) -> str:
        return ", ".join([f"<#{c}>" for c in sorted(self.ids)] + [f"#{n}" for n in sorted(self.names)]) or "none"

    def allowed(self, channel: str, *, is_dm: bool, name: str | None = None) -> bool:
        if is_dm or channel.startswith("D"):
            return self.allow_dms
        if not self.ids and not self.names:
            return True
        if channel in self.ids:
            return True
        if not self.names:
            return False
        return (name or self._name(channel) or "").lower() in self.names

    def _name(self, channel: str) -> str | None:
        if channel not in self._names:
            try:
                self._names[channel] = (self.client.conversations_info(channel=channel).get("channel") or {}).get("name")
            except Exception as exc:  # noqa: BLE001 - a missing scope or network error: the channel is not matched
                log.warning("conversations.info for %s failed (%s): it is treated as not listed", channel,
                            type(exc).__name__)
                return None
        return self._names[channel]


# -- replayed requests -----------------------------------------------------------------------------------------------
def replay_key(body: dict, raw_body: str, headers: dict) -> str | None:
    """The key a slash command or block action is claimed by: the signed body and its timestamp (a replay within
    Slack's 5-minute signature window carries both unchanged; a new invocation has its own trigger_id/action_ts).
    None for anything else (events have their ``event_id``)."""
    if not (body.get("command") or body.get("type") in ("block_actions", "view_submission", "shortcut")):
        return None
    ts = headers.get("x-slack-request-timestamp") or ""
    ts = ts[0] if isinstance(ts, list | tuple) else ts
    return "replay:" + hashlib.sha256(f"{ts}\n{raw_body}".encode()).hexdigest()


# -- downloads -----------------------------------------------------------------------------------------------------
def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def file_url_refused(url: str, settings: Settings) -> str | None:
    """Why the bot token must not be sent to ``url`` (None: it is Slack's file host over https).

    Test-only: ``RESTYLE_TEST_LOOPBACK_FILES`` lets plain http through to SLACK_API_URL's host when that is a
    loopback address (the Slack emulator)."""
    parts = urllib.parse.urlsplit(url)
    host = (parts.hostname or "").lower()
    if settings.test_loopback_files and parts.scheme == "http":
        api_host = (urllib.parse.urlsplit(settings.slack_api_url).hostname or "").lower()
        if host == api_host and _loopback(host):
            return None
    if parts.scheme != "https":
        return f"the file URL is not https ({parts.scheme or 'no scheme'})"
    if host in SLACK_FILE_HOSTS or host.endswith(".slack.com"):
        return None
    return f"unexpected file host {host}"


# -- logs ----------------------------------------------------------------------------------------------------------
#: Libraries that log request/response bodies, headers or payloads at DEBUG (botocore: InvokeEndpoint parameters;
#: urllib3: URLs; slack_sdk: API bodies and Socket Mode payloads; slack_bolt: request and response bodies).
NOISY = ("botocore", "boto3", "s3transfer", "urllib3", "slack_sdk", "slack_bolt", "restyle.slack.bolt",
         "restyle.slack.web")
_BODY = re.compile(r"(?is)\b(body|payload|request body|params|headers)\b\s*[:=]")


class NoBodies(logging.Filter):
    """Drops DEBUG records and withholds anything after a ``body:``/``payload:`` in the rest (Bolt logs a request
    with a bad signature, whole, at INFO)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.INFO:
            return False
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record: say nothing of it
            msg = str(record.msg)
        m = _BODY.search(msg)
        if m or len(msg) > 2000:
            cut = msg[:m.start()] if m else msg[:300]
            record.msg, record.args = cut.rstrip(" (,") + " [request content withheld]", None
        return True


def quiet_logs(loggers: Iterable[str] = NOISY) -> None:
    """No request body, prompt, token or image bytes from the HTTP and Slack libraries at any level: their DEBUG is
    off (even at ``--log-level DEBUG``) and their INFO and above is stripped of bodies.  Idempotent."""
    for name in loggers:
        lg = logging.getLogger(name)
        if lg.level == logging.NOTSET or lg.level < logging.INFO:
            lg.setLevel(logging.INFO if logging.getLogger().getEffectiveLevel() <= logging.INFO
                        else logging.getLogger().getEffectiveLevel())
        if not any(isinstance(f, NoBodies) for f in lg.filters):
            lg.addFilter(NoBodies())


def day_label(offset_days: int = 0, now: float | None = None) -> str:
    """``"2026-12-02"`` (UTC), for file names."""
    d = datetime.fromtimestamp(time.time() if now is None else now, UTC) + timedelta(days=offset_days)
    return d.strftime("%Y-%m-%d")
