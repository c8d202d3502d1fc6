"""A restart — even kill -9 in the middle of a generation — loses no session and no favourite."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

from bot.backends import LocalBackend
from bot.engine import Engine
from bot.events import Message, Variations
from bot.settings import Settings
from bot.store import Store
from tests.conftest import make_photo

CHILD = textwrap.dedent("""
    import sys, time
    from bot.backends import LocalBackend
    from bot.engine import Engine
    from bot.events import Favorite, Message, Photo, Variations
    from bot.settings import Settings
    from bot.store import Store

    data, tiny, photo = sys.argv[1:4]
    settings = Settings.from_env({}, data_dir=data, steps=2, num_images=2)
    eng = Engine(Store(settings.data_dir), LocalBackend(tiny + "/clipseg", tiny + "/inpaint"), settings)
    eng.handle(Photo("k", "ana", open(photo, "rb").read()))
    first = [r for r in eng.handle(Message("k", "ana", "make the skirt red")) if isinstance(r, Variations)][0]
    eng.handle(Favorite("k", "ana", first.items[0].id, True))
    print("READY", flush=True)

    def progress(done, total, text):
        if done >= 1:
            print("GENERATING", flush=True)
            time.sleep(120)  # the parent kills us here, mid-generation

    eng.handle(Message("k", "ana", "make the skirt blue"), progress)
""")


def test_kill_9_mid_generation_loses_nothing(tmp_path, tiny_dir):
    photo = tmp_path / "photo.png"
    make_photo(96, 128).save(photo)
    data = tmp_path / "data"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(data), str(tiny_dir), str(photo)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line.strip())
            if line.strip() == "GENERATING":
                break
        assert lines[-2:] == ["READY", "GENERATING"], lines
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()

    with sqlite3.connect(data / "restyle.sqlite3") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    settings = Settings.from_env({}, data_dir=data, steps=2, num_images=2)
    eng = Engine(Store(data), LocalBackend(str(tiny_dir / "clipseg"), str(tiny_dir / "inpaint")), settings)
    assert eng.store.has_thread("k")
    kept = eng.store.variations("k")
    assert [v.number for v in kept] == [1, 2] and all(v.path.exists() for v in kept)
    assert [v.number for v in eng.store.favorites("k")] == [1]
    # the half-finished turn is reported in its thread, once
    replies = eng.handle(Message("k", "ana", "make the skirt green"))
    assert "interrupted" in replies[0].text and "make the skirt blue" in replies[0].text
    assert isinstance(replies[-1], Variations) and [v.number for v in replies[-1].items] == [3, 4]
    assert "interrupted" not in " ".join(getattr(r, "text", "") for r in eng.handle(Message("k", "ana", "help")))


def test_favourites_are_kept_per_source_and_old_data_dirs_migrate(tmp_path):
    """⭐ and ❤️ from one person are two marks: removing one keeps the favourite.  A data dir written before
    per-source marks (a ``favorites`` table keyed by variation and user) keeps its favourites."""
    con = sqlite3.connect(tmp_path / "restyle.sqlite3")
    con.execute("CREATE TABLE favorites (variation TEXT NOT NULL, user TEXT NOT NULL, created REAL, "
                "PRIMARY KEY (variation, user))")
    con.execute("INSERT INTO favorites VALUES ('v-old', 'ana', 1.0)")
    con.commit()
    con.close()
    store = Store(tmp_path)
    assert store._one("SELECT name FROM sqlite_master WHERE name = 'favorites'") is None
    assert store.set_favorite("v-old", "ana", False, "star") is True  # the migrated mark is not a ⭐
    assert store.set_favorite("v-old", "ana", False) is False  # words clear every mark
    assert store.set_favorite("v1", "ana", True, "star") is True
    assert store.set_favorite("v1", "ana", True, "heart") is True
    assert store.set_favorite("v1", "ana", False, "heart") is True
    store.set_favorite("v1", "bo", False, "star")  # someone else's removal leaves ana's marks alone
    assert store._one("SELECT COUNT(*) AS n FROM favorite_marks WHERE variation = 'v1' AND user = 'ana'")["n"] == 1
    assert store.set_favorite("v1", "ana", False, "star") is False
    Store(tmp_path)  # opening again: the migration has nothing left to do


def test_reactions_handled_out_of_order_end_as_they_happened(tmp_path):
    """Slack does not promise order: a ❤️ added at t=1 and removed at t=2 ends removed whichever is handled first;
    the late event changes nothing and says so (None)."""
    store = Store(tmp_path)
    assert store.set_favorite("v1", "ana", False, "heart", at=2.0) is False  # the removal arrives first
    assert store.set_favorite("v1", "ana", True, "heart", at=1.0) is None  # the older add is out of date
    assert store._one("SELECT COUNT(*) AS n FROM favorite_marks")["n"] == 0
    assert store.set_favorite("v1", "ana", True, "heart", at=3.0) is True  # added again later: on
    assert store.set_favorite("v1", "ana", True, "star", at=0.5) is True  # each reaction has its own clock
    assert store.set_favorite("v1", "ana", False, "heart", at=2.5) is None  # older than the re-add
    assert store.set_favorite("v1", "ana", False, "heart") is True  # no time (words, buttons): applied, ⭐ remains


NUMBERING_CHILD = textwrap.dedent("""
    import sys
    from PIL import Image
    from bot.store import Store

    data, n = sys.argv[1], int(sys.argv[2])
    store = Store(data)
    tile = Image.new("RGB", (8, 8))
    for i in range(n):
        turn = store.start_turn("shared", "u", "t", "restyle", {}, "p", "", store.original("shared"), 1.0, ["skirt"])
        store.finish_turn(turn, "shared", [(i, tile), (i + 1, tile)], {})
""")


def test_two_processes_finishing_turns_in_one_thread_number_them_without_a_clash(tmp_path):
    """Two replicas on one data dir finishing turns in the same thread at once: every variation gets its own
    number, #1 … #N with no gap and no IntegrityError (the next number is read inside the write transaction)."""
    from PIL import Image

    Store(tmp_path).create_thread("shared", "u", Image.new("RGB", (8, 8)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, "-c", NUMBERING_CHILD, str(tmp_path), "15"], env=env,
                              stderr=subprocess.PIPE) for _ in range(2)]
    errors = [p.communicate(timeout=120)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    numbers = sorted(v.number for v in Store(tmp_path).variations("shared"))
    assert numbers == list(range(1, 61))
