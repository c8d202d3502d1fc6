"""Thread sessions on disk: SQLite for state, image files for pictures, nothing half-written.

Pictures are written to a temporary name and renamed into place before the row that names them is committed, so
a crash (even ``kill -9``) leaves either the old state or the new one.  A turn is recorded as ``running`` before
generation starts; on the next start any ``running`` turn becomes ``interrupted`` and is reported to its thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from model import parallel

SCHEMA = """
CREATE TABLE IF NOT EXISTS threads (
    id TEXT PRIMARY KEY, created REAL, user TEXT, original TEXT NOT NULL,
    base_stack TEXT NOT NULL DEFAULT '[]', context TEXT NOT NULL DEFAULT '{}', settings TEXT NOT NULL DEFAULT '{}',
    next_number INTEGER NOT NULL DEFAULT 1);
CREATE TABLE IF NOT EXISTS swatches (
    thread TEXT PRIMARY KEY, path TEXT NOT NULL, created REAL, user TEXT);
CREATE TABLE IF NOT EXISTS turns (
    id TEXT PRIMARY KEY, thread TEXT NOT NULL, created REAL, user TEXT, text TEXT, action TEXT, intent TEXT,
    prompt TEXT, negative_prompt TEXT, base TEXT, strength REAL, garments TEXT, status TEXT NOT NULL,
    error TEXT, reported INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS variations (
    id TEXT PRIMARY KEY, thread TEXT NOT NULL, turn TEXT NOT NULL, number INTEGER NOT NULL, seed INTEGER,
    path TEXT NOT NULL, created REAL, UNIQUE(thread, number));
CREATE TABLE IF NOT EXISTS favorite_marks (variation TEXT NOT NULL, user TEXT NOT NULL, source TEXT NOT NULL,
    created REAL, PRIMARY KEY (variation, user, source));
CREATE TABLE IF NOT EXISTS favorite_clock (variation TEXT NOT NULL, user TEXT NOT NULL, source TEXT NOT NULL,
    at REAL NOT NULL, PRIMARY KEY (variation, user, source));
CREATE TABLE IF NOT EXISTS messages (key TEXT PRIMARY KEY, variation TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (id TEXT PRIMARY KEY, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS pending (thread TEXT PRIMARY KEY, data TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS turns_thread ON turns(thread, created);
CREATE INDEX IF NOT EXISTS variations_thread ON variations(thread, number);
"""

#: Team controls (bot/controls.py): pictures and GPU time per generation, limits admins set from Slack, one-time
#: notices already given.
CONTROLS_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (at REAL NOT NULL, user TEXT NOT NULL, channel TEXT NOT NULL, thread TEXT NOT NULL,
    images INTEGER NOT NULL, gpu_s REAL NOT NULL);
CREATE INDEX IF NOT EXISTS usage_at ON usage(at);
CREATE TABLE IF NOT EXISTS limits (key TEXT PRIMARY KEY, value TEXT, by TEXT, at REAL);
CREATE TABLE IF NOT EXISTS notices (key TEXT PRIMARY KEY, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS forgotten (thread TEXT PRIMARY KEY, at REAL NOT NULL, reason TEXT NOT NULL);
"""

#: Event ids are remembered this long for de-duplication (Slack retries for up to ~1 hour; we keep 2).
EVENT_TTL_S = 2 * 3600


@dataclass
class Variation:
    id: str
    thread: str
    turn: str
    number: int
    seed: int
    path: Path
    favorite: bool = False


@dataclass
class Turn:
    id: str
    thread: str
    text: str
    action: str
    intent: dict
    prompt: str
    negative_prompt: str
    base: str
    strength: float
    garments: list[str]
    status: str
    error: str | None


def _slug(thread: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", thread)[:120]


def save_png(img: Image.Image, path: Path) -> Path:
    """Atomic write: a temp file in the same folder, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as fh:
        img.save(fh, "PNG", compress_level=1)  # ~1.5x faster than 3 for ~10 % more bytes (24 MP: 1.0 s)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


class LeaseTimeout(TimeoutError):
    """``lease(thread, timeout=…)`` could not take the thread's lease in time (another worker or replica holds it)."""


class StateStore(Protocol):
    """What the engine and the adapters need from the state, whichever implementation holds it: ``Store`` (SQLite +
    files under one data dir, the embedded default) or ``bot.store_aws.DynamoStore`` (DynamoDB + S3, shared by
    several replicas).  Pictures are always handed out as local paths the engine can open.

    Threads, turns and variations are named by string ids; a variation's ``number`` is unique and contiguous in
    its thread, whichever replica finished the turn."""

    # -- threads
    def thread_dir(self, thread: str) -> Path:
        """A local folder for files derived from ``thread``'s pictures (masks, sheets, previews)."""
        ...

    def close(self) -> None: ...

    def create_thread(self, thread: str, user: str, image: Image.Image) -> Path:
        """Store ``image`` as the thread's original photo (the picture is saved before the row naming it)."""
        ...

    def has_thread(self, thread: str) -> bool: ...

    def set_swatch(self, thread: str, user: str, image: Image.Image) -> Path:
        """Keep ``image`` as the thread's swatch or print ("use this print on the dress"); it replaces an earlier
        one (whose file stays for the variations made with it)."""
        ...

    def swatch(self, thread: str, name: str | None = None) -> Path | None:
        """The thread's current swatch — or, by ``name`` (a swatch file's name, as turns record it), an earlier one —
        as a local path (fetched on a miss), or None."""
        ...

    def latest_thread(self, prefix: str) -> str | None:
        """The most recently created thread whose id starts with ``prefix``."""
        ...

    def original(self, thread: str) -> Path: ...

    def base(self, thread: str) -> tuple[Path, Variation | None]:
        """The picture edits start from: the last 'use'd variation, else the original photo."""
        ...

    def push_base(self, thread: str, variation_id: str) -> None: ...

    def pop_base(self, thread: str) -> str | None:
        """Undo the last 'use': the variation id popped, or None when the stack was empty."""
        ...

    def clear_base(self, thread: str) -> bool: ...

    def context(self, thread: str) -> dict: ...

    def set_context(self, thread: str, context: dict) -> None: ...

    def pending(self, thread: str) -> dict | None: ...

    def set_pending(self, thread: str, data: dict | None) -> None: ...

    def take_pending(self, thread: str, question: str | None = None) -> dict | None:
        """The pending question, removed atomically (only one taker ever gets it)."""
        ...

    def settings(self, thread: str) -> dict: ...

    def update_settings(self, thread: str, values: dict) -> dict:
        """Merge ``values`` into the thread's settings; the merged settings."""
        ...

    # -- turns
    def start_turn(self, thread: str, user: str, text: str, action: str, intent: dict, prompt: str,
                   negative_prompt: str, base: Path, strength: float, garments: list[str]) -> str:
        """Record a turn as ``running`` before generation starts; its id."""
        ...

    def finish_turn(self, turn: str, thread: str, images: list[tuple[int, Image.Image]], context: dict,
                    intent_update: dict | None = None) -> list[Variation]:
        """Save the pictures, number them (unique, contiguous per thread), add their rows, mark the turn done."""
        ...

    def fail_turn(self, turn: str, error: str) -> None: ...

    def turn(self, turn: str) -> Turn | None: ...

    def last_turn(self, thread: str, status: str = "done") -> Turn | None: ...

    def mark_interrupted(self) -> int:
        """At start-up: turns left ``running`` by a crashed process become ``interrupted``; how many."""
        ...

    def unreported_interruptions(self, thread: str | None = None) -> list[Turn]: ...

    def mark_reported(self, turn: str) -> bool:
        """Claim the telling of an interrupted (or draining) turn: True for the one caller that marks it reported,
        False when it already was (another replica, or an earlier call, told it): post the notice only on True."""
        ...

    # -- variations, favourites
    def variation(self, variation_id: str) -> Variation | None: ...

    def variation_by_number(self, thread: str, number: int) -> Variation | None: ...

    def variation_by_path(self, thread: str, path: Path | str) -> Variation | None: ...

    def variations(self, thread: str, turn: str | None = None) -> list[Variation]: ...

    def set_favorite(self, variation_id: str, user: str, on: bool, source: str = "",
                     at: float | None = None) -> bool | None:
        """See ``Store.set_favorite``: per-source marks, and ``at`` orders out-of-order events."""
        ...

    def favorites(self, thread: str) -> list[Variation]: ...

    # -- adapter helpers
    def link_message(self, key: str, variation_id: str) -> None: ...

    def variation_for_message(self, key: str) -> str | None: ...

    def claim_event(self, event_id: str) -> bool:
        """True the first time ``event_id`` is seen by any process sharing this state; False for a retry."""
        ...

    def lease(self, thread: str, timeout: float | None = None) -> contextlib.AbstractContextManager[None]:
        """Hold ``thread`` exclusively (across processes/replicas) for a generation; blocks until free, or raises
        ``LeaseTimeout`` after ``timeout`` seconds.  A crashed holder's lease is released (process exit / expiry)."""
        ...

    # -- team controls (bot/controls.py): quotas, usage, limits, one-time notes, retention and /restyle forget
    def record_usage(self, user: str, channel: str, thread: str, images: int, gpu_s: float,
                     at: float | None = None) -> None:
        """One generation: its pictures and the GPU seconds it took, at ``at`` (default: now)."""
        ...

    def usage_total(self, since: float, *, user: str | None = None, channel: str | None = None) -> tuple[int, float]:
        """(pictures, GPU seconds) recorded at or after ``since`` (Unix time), for one user and/or one channel
        (both: rows matching both), or everyone; (0, 0.0) when there is none."""
        ...

    def usage_rows(self, since: float) -> list[Any]:
        """Every generation at or after ``since``, oldest first; each row is read by column name: ``at``,
        ``user``, ``channel``, ``thread``, ``images``, ``gpu_s`` (``sqlite3.Row`` or ``dict``)."""
        ...

    def limits(self) -> dict[str, str | None]:
        """Limits set from Slack (``/restyle limits``): key → value as text (None: unlimited)."""
        ...

    def set_limit(self, key: str, value: str | None, by: str) -> None:
        """Set (replace) one limit; ``by``: the admin who set it."""
        ...

    def claim_notice(self, key: str) -> bool:
        """True the first time ``key`` is claimed by anyone sharing this state, ever; False after that."""
        ...

    def thread_owner(self, thread: str) -> str | None:
        """Who shared the thread's photo; None for no such thread."""
        ...

    def idle_threads(self, before: float, prefix: str = "") -> list[str]:
        """Threads whose id starts with ``prefix``, created before ``before``, with no turn started at or after
        ``before`` (what retention deletes)."""
        ...

    def forget_thread(self, thread: str, reason: str) -> bool:
        """Delete everything of ``thread`` (pictures wherever they are kept, its turns, variations, favourites,
        message links and pending question; not its usage rows) and remember ``reason`` (``retention`` or
        ``forget``) for ``forgotten``; False when there was no such thread."""
        ...

    def forgotten(self, thread: str) -> str | None:
        """Why ``thread``'s data was deleted, or None when it was not."""
        ...


class Store(StateStore):
    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.root / "restyle.sqlite3", check_same_thread=False, isolation_level=None,
                                   timeout=30.0)  # another process's write transaction: wait for it
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        # WAL with synchronous=NORMAL (SQLite's advice for WAL): a commit survives the bot crashing or being killed
        # and the file is never corrupted; only a power loss or OS crash can undo the last commits before a
        # checkpoint.  FULL flushed the disk on every commit (~5 ms, under ``_lock``), so a Slack ack — which
        # claims its event_id here — waited behind every worker's writes (issue #11: ack p99 over 1 s).
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._db.executescript(CONTROLS_SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Data dirs from before per-source favourites: their ``favorites`` rows become ``favorite_marks``."""
        old = self._one("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'favorites'")
        if old is not None:
            self._tx([("INSERT OR IGNORE INTO favorite_marks (variation, user, source, created) "
                       "SELECT variation, user, '', created FROM favorites", ()),
                      ("DROP TABLE favorites", ())])

    # -- plumbing ------------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _transaction(self):
        """One write transaction, taken before anything is read (``BEGIN IMMEDIATE``): a number read inside it is
        still free when it is written, even with several processes on one data dir."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _tx(self, statements: list[tuple[str, tuple]]) -> None:
        with self._transaction() as db:
            for sql, args in statements:
                db.execute(sql, args)

    def _one(self, sql: str, args: tuple = ()) -> sqlite3.Row | None:
        with self._lock:
            return self._db.execute(sql, args).fetchone()

    def _all(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def thread_dir(self, thread: str) -> Path:
        return self.root / "threads" / _slug(thread)

    @contextlib.contextmanager
    def lease(self, thread: str, timeout: float | None = None) -> Iterator[None]:
        """An exclusive ``flock`` on ``leases/<thread>.lock``: every process (and worker) on this data dir waits
        for it; the kernel drops it when its holder exits, however it exits."""
        path = self.root / "leases" / f"{_slug(thread)}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        deadline = None if timeout is None else time.monotonic() + timeout
        with open(path, "a") as fh:
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | (fcntl.LOCK_NB if deadline is not None else 0))
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:  # type: ignore[operator]
                        raise LeaseTimeout(f"thread {thread!r} is busy on another worker") from None
                    time.sleep(0.02)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- threads -------------------------------------------------------------------------------------------------
    def create_thread(self, thread: str, user: str, image: Image.Image) -> Path:
        path = save_png(image, self.thread_dir(thread) / "original.png")
        self._tx([("INSERT OR REPLACE INTO threads (id, created, user, original) VALUES (?, ?, ?, ?)",
                   (thread, time.time(), user, str(path)))])
        return path

    def has_thread(self, thread: str) -> bool:
        return self._one("SELECT 1 FROM threads WHERE id = ?", (thread,)) is not None

    def set_swatch(self, thread: str, user: str, image: Image.Image) -> Path:
        path = save_png(image, self.thread_dir(thread) / f"swatch-{uuid.uuid4().hex[:8]}.png")
        self._tx([("INSERT OR REPLACE INTO swatches (thread, path, created, user) VALUES (?, ?, ?, ?)",
                   (thread, str(path), time.time(), user))])
        return path

    def swatch(self, thread: str, name: str | None = None) -> Path | None:
        if name is not None:
            path = self.thread_dir(thread) / Path(name).name
            return path if path.exists() else None
        row = self._one("SELECT path FROM swatches WHERE thread = ?", (thread,))
        return Path(row["path"]) if row else None

    def latest_thread(self, prefix: str) -> str | None:
        row = self._one("SELECT id FROM threads WHERE substr(id, 1, ?) = ? ORDER BY created DESC LIMIT 1",
                        (len(prefix), prefix))
        return row["id"] if row else None

    def original(self, thread: str) -> Path:
        return Path(self._one("SELECT original FROM threads WHERE id = ?", (thread,))["original"])

    def base(self, thread: str) -> tuple[Path, Variation | None]:
        """The image edits start from: the last 'use'd variation, else the original photo."""
        stack = json.loads(self._one("SELECT base_stack FROM threads WHERE id = ?", (thread,))["base_stack"])
        if stack:
            v = self.variation(stack[-1])
            if v is not None:
                return v.path, v
        return self.original(thread), None

    def push_base(self, thread: str, variation_id: str) -> None:
        with self._lock:
            stack = json.loads(self._one("SELECT base_stack FROM threads WHERE id = ?", (thread,))["base_stack"])
            stack.append(variation_id)
            self._tx([("UPDATE threads SET base_stack = ? WHERE id = ?", (json.dumps(stack), thread))])

    def pop_base(self, thread: str) -> str | None:
        with self._lock:
            stack = json.loads(self._one("SELECT base_stack FROM threads WHERE id = ?", (thread,))["base_stack"])
            if not stack:
                return None
            popped = stack.pop()
            self._tx([("UPDATE threads SET base_stack = ? WHERE id = ?", (json.dumps(stack), thread))])
            return popped

    def clear_base(self, thread: str) -> bool:
        """Edits start from the original photo again; False when they already did."""
        with self._lock:
            stack = json.loads(self._one("SELECT base_stack FROM threads WHERE id = ?", (thread,))["base_stack"])
            if stack:
                self._tx([("UPDATE threads SET base_stack = '[]' WHERE id = ?", (thread,))])
            return bool(stack)

    def context(self, thread: str) -> dict:
        return json.loads(self._one("SELECT context FROM threads WHERE id = ?", (thread,))["context"])

    def set_context(self, thread: str, context: dict) -> None:
        """The look follow-ups refine ("make it longer"): set by each finished turn, and by "use #N"."""
        self._tx([("UPDATE threads SET context = ? WHERE id = ?", (json.dumps(context), thread))])

    def pending(self, thread: str) -> dict | None:
        """The question restyle asked in ``thread`` and is waiting on ("Generate …?"), or None."""
        row = self._one("SELECT data FROM pending WHERE thread = ?", (thread,))
        return json.loads(row["data"]) if row else None

    def set_pending(self, thread: str, data: dict | None) -> None:
        """Remember the question (``data``: what answering yes runs), or forget it (None)."""
        if data is None:
            self._tx([("DELETE FROM pending WHERE thread = ?", (thread,))])
        else:
            self._tx([("INSERT OR REPLACE INTO pending (thread, data, at) VALUES (?, ?, ?)",
                       (thread, json.dumps(data), time.time()))])

    def take_pending(self, thread: str, question: str | None = None) -> dict | None:
        """The pending question, removed (answered once, whoever answers first); with ``question``, only if it is
        still that one."""
        with self._transaction() as db:
            row = db.execute("SELECT data FROM pending WHERE thread = ?", (thread,)).fetchone()
            data = json.loads(row["data"]) if row else None
            if data is None or (question is not None and data.get("id") != question):
                return None
            db.execute("DELETE FROM pending WHERE thread = ?", (thread,))
            return data

    def settings(self, thread: str) -> dict:
        return json.loads(self._one("SELECT settings FROM threads WHERE id = ?", (thread,))["settings"])

    def update_settings(self, thread: str, values: dict) -> dict:
        with self._lock:
            merged = {**self.settings(thread), **values}
            self._tx([("UPDATE threads SET settings = ? WHERE id = ?", (json.dumps(merged), thread))])
            return merged

    # -- turns ---------------------------------------------------------------------------------------------------
    def start_turn(self, thread: str, user: str, text: str, action: str, intent: dict, prompt: str,
                   negative_prompt: str, base: Path, strength: float, garments: list[str]) -> str:
        turn = uuid.uuid4().hex[:12]
        self._tx([("INSERT INTO turns (id, thread, created, user, text, action, intent, prompt, negative_prompt, "
                   "base, strength, garments, status) VALUES (?,?,?,?,?,?,?,?,?,?,?,?, 'running')",
                   (turn, thread, time.time(), user, text, action, json.dumps(intent), prompt, negative_prompt,
                    str(base), strength, json.dumps(garments)))])
        return turn

    def finish_turn(self, turn: str, thread: str, images: list[tuple[int, Image.Image]], context: dict,
                    intent_update: dict | None = None) -> list[Variation]:
        """Write the pictures, then in ONE transaction: number them, add their rows, mark the turn done (adding
        ``intent_update`` to the turn's intent: what was learnt while generating, e.g. the look that ran)."""
        folder = self.thread_dir(thread) / "variations"
        named = [(uuid.uuid4().hex[:12], seed, img) for seed, img in images]
        # PNG encoding releases the GIL: a 24-megapixel photo's variations are written side by side
        paths = parallel.map_all(lambda n: save_png(n[2], folder / f"{turn}-{n[0]}.png"), named)
        staged = [(vid, seed, path) for (vid, seed, _), path in zip(named, paths, strict=True)]
        with self._transaction() as db:
            first = db.execute("SELECT next_number FROM threads WHERE id = ?", (thread,)).fetchone()["next_number"]
            out = []
            for i, (vid, seed, path) in enumerate(staged):
                db.execute("INSERT INTO variations (id, thread, turn, number, seed, path, created) VALUES (?,?,?,?,?,?,?)",
                           (vid, thread, turn, first + i, seed, str(path), time.time()))
                out.append(Variation(vid, thread, turn, first + i, seed, path))
            db.execute("UPDATE threads SET next_number = ?, context = ? WHERE id = ?",
                       (first + len(staged), json.dumps(context), thread))
            db.execute("UPDATE turns SET status = 'done' WHERE id = ?", (turn,))
            if intent_update:
                row = db.execute("SELECT intent FROM turns WHERE id = ?", (turn,)).fetchone()
                db.execute("UPDATE turns SET intent = ? WHERE id = ?",
                           (json.dumps({**json.loads(row["intent"] or "{}"), **intent_update}), turn))
        return out

    def fail_turn(self, turn: str, error: str) -> None:
        self._tx([("UPDATE turns SET status = 'failed', error = ?, reported = 1 WHERE id = ?", (error, turn))])

    def turn(self, turn: str) -> Turn | None:
        row = self._one("SELECT * FROM turns WHERE id = ?", (turn,))
        if row is None:
            return None
        return Turn(row["id"], row["thread"], row["text"], row["action"], json.loads(row["intent"] or "{}"),
                    row["prompt"], row["negative_prompt"], row["base"], row["strength"],
                    json.loads(row["garments"] or "[]"), row["status"], row["error"])

    def last_turn(self, thread: str, status: str = "done") -> Turn | None:
        row = self._one("SELECT id FROM turns WHERE thread = ? AND status = ? ORDER BY created DESC LIMIT 1",
                        (thread, status))
        return self.turn(row["id"]) if row else None

    def mark_interrupted(self) -> int:
        """At start-up: turns left 'running' by a crash become 'interrupted' (reported later, not dropped)."""
        with self._lock:
            n = self._db.execute("UPDATE turns SET status = 'interrupted' WHERE status = 'running'").rowcount
        return n

    def unreported_interruptions(self, thread: str | None = None) -> list[Turn]:
        sql = "SELECT id FROM turns WHERE status = 'interrupted' AND reported = 0"
        args: tuple = ()
        if thread is not None:
            sql += " AND thread = ?"
            args = (thread,)
        return [t for r in self._all(sql + " ORDER BY created", args) if (t := self.turn(r["id"])) is not None]

    def mark_reported(self, turn: str) -> bool:
        """True when this call marked ``turn`` reported; False when it already was (or there is no such turn)."""
        with self._transaction() as db:
            return db.execute("UPDATE turns SET reported = 1 WHERE id = ? AND reported = 0", (turn,)).rowcount == 1

    # -- variations and favourites -------------------------------------------------------------------------------
    def _variation(self, row: sqlite3.Row | None) -> Variation | None:
        if row is None:
            return None
        fav = self._one("SELECT 1 FROM favorite_marks WHERE variation = ?", (row["id"],)) is not None
        return Variation(row["id"], row["thread"], row["turn"], row["number"], row["seed"], Path(row["path"]), fav)

    def variation(self, variation_id: str) -> Variation | None:
        return self._variation(self._one("SELECT * FROM variations WHERE id = ?", (variation_id,)))

    def variation_by_number(self, thread: str, number: int) -> Variation | None:
        return self._variation(self._one("SELECT * FROM variations WHERE thread = ? AND number = ?", (thread, number)))

    def variation_by_path(self, thread: str, path: Path | str) -> Variation | None:
        return self._variation(self._one("SELECT * FROM variations WHERE thread = ? AND path = ?", (thread, str(path))))

    def variations(self, thread: str, turn: str | None = None) -> list[Variation]:
        sql, args = "SELECT * FROM variations WHERE thread = ?", (thread,)
        if turn:
            sql, args = sql + " AND turn = ?", (thread, turn)
        return [v for r in self._all(sql + " ORDER BY number", args) if (v := self._variation(r))]

    def set_favorite(self, variation_id: str, user: str, on: bool, source: str = "",
                     at: float | None = None) -> bool | None:
        """Mark or unmark ``variation_id`` as ``user``'s favourite; returns whether it still is one, or None when
        ``at`` is older than the last change of the same mark (nothing changes).

        Each way of marking (``source``: a reaction's name, ``button``, or ``""`` for words) is kept apart, so
        removing ❤️ leaves the ⭐ the same person also put on it.  Unmarking without a source clears them all.
        ``at`` (a reaction's ``event_ts``) orders events that arrive out of order: Slack does not promise order,
        and a ❤️ removed a moment after it was added must not leave the ❤️ on when the removal is handled first.
        """
        key = (variation_id, user, source)
        with self._lock:
            if at is not None:
                last = self._one("SELECT at FROM favorite_clock WHERE variation = ? AND user = ? AND source = ?", key)
                if last is not None and last["at"] > at:
                    return None
            statements = [] if at is None else [
                ("INSERT OR REPLACE INTO favorite_clock (variation, user, source, at) VALUES (?,?,?,?)", (*key, at))]
            if on:
                statements.append(("INSERT OR IGNORE INTO favorite_marks (variation, user, source, created) "
                                   "VALUES (?,?,?,?)", (*key, time.time())))
            elif source:
                statements.append(("DELETE FROM favorite_marks WHERE variation = ? AND user = ? AND source = ?", key))
            else:
                statements.append(("DELETE FROM favorite_marks WHERE variation = ? AND user = ?", key[:2]))
            self._tx(statements)
            return self._one("SELECT 1 FROM favorite_marks WHERE variation = ? AND user = ?",
                             (variation_id, user)) is not None

    def favorites(self, thread: str) -> list[Variation]:
        rows = self._all("SELECT DISTINCT v.* FROM variations v JOIN favorite_marks f ON f.variation = v.id "
                         "WHERE v.thread = ? ORDER BY v.number", (thread,))
        return [v for r in rows if (v := self._variation(r))]

    # -- adapter helpers -----------------------------------------------------------------------------------------
    def link_message(self, key: str, variation_id: str) -> None:
        self._tx([("INSERT OR REPLACE INTO messages (key, variation) VALUES (?, ?)", (key, variation_id))])

    def variation_for_message(self, key: str) -> str | None:
        row = self._one("SELECT variation FROM messages WHERE key = ?", (key,))
        return row["variation"] if row else None

    def claim_event(self, event_id: str) -> bool:
        """True the first time ``event_id`` is seen (within EVENT_TTL_S); False for a retry/re-delivery."""
        now = time.time()
        with self._lock:
            self._db.execute("DELETE FROM events WHERE at < ?", (now - EVENT_TTL_S,))
            cur = self._db.execute("INSERT OR IGNORE INTO events (id, at) VALUES (?, ?)", (event_id, now))
            return cur.rowcount == 1

    # -- team controls (bot/controls.py) -------------------------------------------------------------------------
    def record_usage(self, user: str, channel: str, thread: str, images: int, gpu_s: float,
                     at: float | None = None) -> None:
        """One generation's pictures and the GPU seconds it took."""
        self._tx([("INSERT INTO usage (at, user, channel, thread, images, gpu_s) VALUES (?,?,?,?,?,?)",
                   (time.time() if at is None else at, user, channel, thread, int(images), float(gpu_s)))])

    def usage_total(self, since: float, *, user: str | None = None, channel: str | None = None) -> tuple[int, float]:
        """(pictures, GPU seconds) since ``since`` (Unix time), for one user and/or channel, or everyone."""
        sql, args = "SELECT COALESCE(SUM(images), 0) AS n, COALESCE(SUM(gpu_s), 0) AS s FROM usage WHERE at >= ?", [since]
        if user is not None:
            sql, args = sql + " AND user = ?", [*args, user]
        if channel is not None:
            sql, args = sql + " AND channel = ?", [*args, channel]
        row = self._one(sql, tuple(args))
        return int(row["n"]), float(row["s"])

    def usage_rows(self, since: float) -> list[sqlite3.Row]:
        """Every generation since ``since``, oldest first (for the admins' CSV)."""
        return self._all("SELECT at, user, channel, thread, images, gpu_s FROM usage WHERE at >= ? ORDER BY at",
                         (since,))

    def limits(self) -> dict[str, str | None]:
        """Limits set from Slack (``/restyle limits``): key → value (None: unlimited), over the environment's."""
        return {r["key"]: r["value"] for r in self._all("SELECT key, value FROM limits")}

    def set_limit(self, key: str, value: str | None, by: str) -> None:
        self._tx([("INSERT OR REPLACE INTO limits (key, value, by, at) VALUES (?,?,?,?)",
                   (key, value, by, time.time()))])

    def claim_notice(self, key: str) -> bool:
        """True the first time ``key`` is claimed, ever (a note restyle gives once)."""
        with self._lock:
            cur = self._db.execute("INSERT OR IGNORE INTO notices (key, at) VALUES (?, ?)", (key, time.time()))
            return cur.rowcount == 1

    def thread_owner(self, thread: str) -> str | None:
        """Who shared the thread's photo."""
        row = self._one("SELECT user FROM threads WHERE id = ?", (thread,))
        return row["user"] if row else None

    def idle_threads(self, before: float, prefix: str = "") -> list[str]:
        """Threads (ids starting with ``prefix``) with no photo or turn since ``before`` (retention)."""
        rows = self._all("SELECT t.id FROM threads t WHERE substr(t.id, 1, ?) = ? AND t.created < ? AND NOT EXISTS "
                         "(SELECT 1 FROM turns u WHERE u.thread = t.id AND u.created >= ?)",
                         (len(prefix), prefix, before, before))
        return [r["id"] for r in rows]

    def forget_thread(self, thread: str, reason: str) -> bool:
        """Delete everything of ``thread`` — its photo, masks, sheets and variations on disk, and its rows — and
        remember that (and why) it was deleted; False when there was no such thread."""
        with self._lock:
            if not self.has_thread(thread):
                return False
            variations = "SELECT id FROM variations WHERE thread = ?"
            self._tx([(f"DELETE FROM favorite_marks WHERE variation IN ({variations})", (thread,)),
                      (f"DELETE FROM favorite_clock WHERE variation IN ({variations})", (thread,)),
                      (f"DELETE FROM messages WHERE variation IN ({variations})", (thread,)),
                      ("DELETE FROM variations WHERE thread = ?", (thread,)),
                      ("DELETE FROM turns WHERE thread = ?", (thread,)),
                      ("DELETE FROM pending WHERE thread = ?", (thread,)),
                      ("DELETE FROM swatches WHERE thread = ?", (thread,)),
                      ("DELETE FROM threads WHERE id = ?", (thread,)),
                      ("INSERT OR REPLACE INTO forgotten (thread, at, reason) VALUES (?,?,?)",
                       (thread, time.time(), reason))])
        shutil.rmtree(self.thread_dir(thread), ignore_errors=True)
        return True

    def forgotten(self, thread: str) -> str | None:
        """Why ``thread``'s data was deleted (``RESTYLE_RETENTION_DAYS``, ``/restyle forget``), or None."""
        row = self._one("SELECT reason FROM forgotten WHERE thread = ?", (thread,))
        return row["reason"] if row else None
