"""Compare sheets and lookbooks (issue #14, items 1 and 2): what restyle makes from the variations it already has.

The files are under test here — the sheet's layout and close-up row, the PDF's pages, the ZIP's pictures — and that
neither action ever spends GPU time or moves the thread's picture; the model is the fast test double.  The Slack
test drives the real Bolt app against the Slack emulator, like tests/test_slack.py.
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bot import compare as compare_mod
from bot import lookbook as lookbook_mod
from bot import messages as T
from bot.engine import Engine
from bot.events import Command, Favorite, Files, Message, Photo, Text, Variations
from bot.settings import Settings
from bot.store import Store
from bot.terminal import TerminalChat
from tests.conftest import make_photo, to_bytes
from tests.fake_backend import GARMENT_BOX, FakeBackend

W, H = 200, 300
PHOTO = to_bytes(make_photo(W, H))


class Thread:
    """One photo thread on the fast backend double; ``say`` checks that nothing was generated unless expected."""

    def __init__(self, tmp_path: Path) -> None:
        self.backend = FakeBackend()
        self.engine = Engine(Store(tmp_path), self.backend,
                             Settings.from_env({}, data_dir=tmp_path, steps=2, num_images=4, max_batch=16))
        self.id = "exp:1"
        self.engine.handle(Photo(self.id, "ana", PHOTO))

    def make(self, text: str) -> Variations:
        (out,) = [r for r in self.engine.handle(Message(self.id, "ana", text)) if isinstance(r, Variations)]
        return out

    def say(self, text: str, user: str = "ana") -> list:
        event = Message(self.id, user, text)
        calls, base = len(self.backend.inpaint_calls), self.engine.store.base(self.id)[0]
        assert not self.engine.needs_generation(event), text
        replies = self.engine.handle(event)
        # compare and lookbook only read what is there: no model call, the thread stays on its picture
        assert len(self.backend.inpaint_calls) == calls and self.engine.store.base(self.id)[0] == base, text
        return replies

    def variation(self, number: int):
        return self.engine.store.variation_by_number(self.id, number)


@pytest.fixture
def thread(tmp_path) -> Thread:
    return Thread(tmp_path)


def garment_colour(path: Path) -> np.ndarray:
    """The colour the fake backend painted the garment of a variation in (the centre of its box)."""
    x0, y0, x1, y1 = GARMENT_BOX
    return np.asarray(Image.open(path).convert("RGB"))[round((y0 + y1) / 2 * H), round((x0 + x1) / 2 * W)]


def share_of(tile: np.ndarray, colour: np.ndarray) -> float:
    """How much of ``tile`` is (near) ``colour``."""
    return float((np.abs(tile.astype(int) - colour.astype(int)).max(axis=2) < 10).mean())


# -- compare ---------------------------------------------------------------------------------------------------------
def test_compare_puts_the_variations_side_by_side_and_their_garment_close_up_below(thread):
    thread.make("make the skirt red")
    (reply,) = thread.say("#2 vs #4")
    assert isinstance(reply, Files) and reply.kind == "compare"
    ((path, title),) = reply.files
    assert title == "Compare #2 vs #4" and path.exists()
    assert "#2 and #4 side by side" in reply.text and "close-up of the skirt" in reply.text
    assert "_fav 2_" in reply.text and "_a red skirt_" in reply.text  # which to keep, and how each was made

    sheet = np.asarray(Image.open(path).convert("RGB"))
    thumb, gap, label_h = 512, 8, max(18, 512 // 12)
    th = round(thumb * H / W)
    top = label_h + gap  # the title bar
    assert sheet.shape[1] == 2 * (thumb + gap) + gap  # two columns, the same scale
    assert sheet.shape[0] == top + 2 * (th + label_h + gap) + gap  # the whole pictures, then the close-ups

    def tile(row: int, col: int) -> np.ndarray:
        x, y = gap + col * (thumb + gap), top + gap + row * (th + label_h + gap)
        return sheet[y:y + th, x:x + thumb]

    for col, number in enumerate((2, 4)):
        colour = garment_colour(thread.variation(number).path)
        whole, close = share_of(tile(0, col), colour), share_of(tile(1, col), colour)
        assert 0.1 < whole < close  # each column is its own variation; the close-up shows its garment larger
    assert not np.array_equal(garment_colour(thread.variation(2).path), garment_colour(thread.variation(4).path))


def test_compare_names_what_it_cannot_show(thread):
    assert thread.say("#1 vs #2") == [Text(T.COMPARE_MISSING.format(
        missing="#1 and #2", why="this thread has no variations yet — describe a change first, e.g. _make the skirt "
                                 "red_"), kind="error")]
    thread.make("make the skirt red")
    (reply,) = thread.say("compare 2 and 9")
    assert reply == Text(T.COMPARE_MISSING.format(missing="#9", why="it is not in this thread (it has #1–#4)"),
                         kind="error")
    (reply,) = thread.say("which of these would sell better")  # no numbers: how to ask, and that it's their call
    assert reply.text == T.UNSUPPORTED["compare"]
    assert compare_mod.compare(thread.engine, thread.id, [3, 3]) == Text(T.COMPARE_TWO, kind="error")


def test_compare_across_turns_says_how_each_was_made_and_caps_how_many(thread):
    thread.make("make the skirt red")
    thread.make("try #2 in denim")  # #5–#8, from #2
    (reply,) = thread.say("put #1 and #6 next to each other")
    assert "#1: _a red skirt_" in reply.text and "#6: _a red denim skirt_" in reply.text and "from #2" in reply.text
    (reply,) = thread.say("rank #1-#8 for me")
    assert reply.files[0][1] == "Compare #1 vs #2 vs #3 vs #4 vs #5 vs #6"
    assert reply.text.endswith(T.COMPARE_CAPPED.format(cap=6, left="#7 and #8"))


def test_compare_without_stored_masks_closes_up_on_what_differs(thread):
    thread.make("make the skirt red")
    for mask in (thread.engine.store.thread_dir(thread.id) / "masks").iterdir():
        mask.unlink()  # an older data dir, or masks cleared: the variations still show where they differ
    two, three = thread.variation(2), thread.variation(3)
    region, what = compare_mod.garment_region(thread.engine, [two, three], (W, H))
    x0, y0, x1, y1 = (round(f * s) for f, s in zip(GARMENT_BOX, (W, H, W, H), strict=True))
    assert what == "skirt" and region is not None and region[y0 + 2:y1 - 2, x0 + 2:x1 - 2].all()
    assert not region[: y0 - 8].any()  # far from the garment nothing changed
    (reply,) = thread.say("#2 vs #3")
    assert "close-up of the skirt" in reply.text


# -- lookbook --------------------------------------------------------------------------------------------------------
def pdf_pages(data: bytes) -> int:
    assert data.startswith(b"%PDF-")
    return len(re.findall(rb"/Type\s*/Page\b", data))


def test_lookbook_is_a_pdf_with_a_cover_and_a_page_per_favourite_and_a_zip_of_the_pngs(thread):
    thread.make("make the skirt red")
    (reply,) = thread.say("make a lookbook of the favourites")
    assert reply == Text(T.NO_FAVORITES_LOOKBOOK)
    thread.make("try #2 in denim")
    thread.say("fav 2")
    six = thread.variation(6)
    thread.engine.handle(Favorite(thread.id, "ben", six.id, True, "star"))  # ⭐ by someone else
    thread.engine.handle(Favorite(thread.id, "ana", six.id, True, "heart"))

    calls = len(thread.backend.inpaint_calls)
    (reply,) = thread.engine.handle(Command(thread.id, "ana", "lookbook"))  # /restyle lookbook
    assert len(thread.backend.inpaint_calls) == calls
    assert isinstance(reply, Files) and reply.kind == "lookbook"
    assert reply.text == T.LOOKBOOK.format(n=2, s="s", numbers="#2, #6")
    (pdf, pdf_title), (archive, zip_title) = reply.files
    assert pdf.suffix == ".pdf" and archive.suffix == ".zip" and "#2, #6" in pdf_title
    data = pdf.read_bytes()
    assert pdf_pages(data) == 3  # the cover, #2, #6
    assert "Lookbook: make the skirt red".encode("utf-16-be") in data  # the thread's title, in the PDF's metadata
    with zipfile.ZipFile(archive) as z:
        assert z.namelist() == ["variation-002.png", "variation-006.png"]
        for name, number in zip(z.namelist(), (2, 6), strict=True):  # the full-resolution pictures, untouched
            assert z.read(name) == thread.variation(number).path.read_bytes()
            assert Image.open(io.BytesIO(z.read(name))).size == (W, H)

    # what each page says
    two, six = (lookbook_mod._entry(thread.engine, thread.variation(n)) for n in (2, 6))
    assert (two.prompt, two.seed, two.picked_by, two.source, two.look) == (
        "a red skirt", thread.variation(2).seed, ["ana"], "the original photo", "default")
    assert (six.prompt, six.picked_by, six.source) == ("a red denim skirt", ["ben", "ana"], "#2")
    assert "strength 0.65" in six.how
    x0, y0, x1, y1 = (round(f * s) for f, s in zip(GARMENT_BOX, (W, H, W, H), strict=True))
    cx0, cy0, cx1, cy1 = six.close_up  # the close-up holds the whole garment and less than the whole picture
    assert cx0 <= x0 and cy0 <= y0 and cx1 >= x1 and cy1 >= y1 and (cx1 - cx0) * (cy1 - cy0) < W * H
    page = np.asarray(lookbook_mod.entry_page(six, "make the skirt red", 3, 3))
    assert page.shape == (lookbook_mod.PAGE[1], lookbook_mod.PAGE[0], 3)
    assert share_of(page, garment_colour(thread.variation(6).path)) > 0.05  # the picture and its close-up


def test_lookbook_unfavourited_variations_leave_it(thread):
    thread.make("make the skirt red")
    thread.say("fav 1")
    thread.say("fav 3")
    thread.engine.handle(Favorite(thread.id, "ana", thread.variation(1).id, False))
    (reply,) = thread.say("pdf of the shortlist pls")
    with zipfile.ZipFile(reply.files[1][0]) as z:
        assert z.namelist() == ["variation-003.png"]
    assert pdf_pages(reply.files[0][0].read_bytes()) == 2


def test_chatter_about_a_lookbook_makes_none(thread):
    thread.make("make the skirt red")
    thread.say("fav 1")
    assert thread.say("the lookbook shoot is next week") == [Text(T.UNKNOWN, kind="chatter")]
    (reply,) = thread.say("email #2 to the factory")
    assert reply.text == T.UNSUPPORTED["lookbook"]


# -- terminal --------------------------------------------------------------------------------------------------------
def test_restyle_chat_copies_the_compare_sheet_and_the_lookbook_to_its_out_dir(tmp_path):
    photo = tmp_path / "look.png"
    photo.write_bytes(PHOTO)
    engine = Engine(Store(tmp_path / "data"), FakeBackend(),
                    Settings.from_env({}, data_dir=tmp_path / "data", steps=2, num_images=2))
    out = tmp_path / "out"
    script = "make the skirt red\n#1 vs #2\nfav 2\nlookbook\nquit\n"
    stdout = io.StringIO()
    assert TerminalChat(engine, out, stdin=io.StringIO(script), stdout=stdout, progress=False).start(photo) == 0
    said = stdout.getvalue()
    names = sorted(p.name for p in out.iterdir())
    assert "compare-1-2.png" in names and f"  Compare #1 vs #2: {out / 'compare-1-2.png'}" in said
    pdf = next(out.glob("lookbook-*.pdf"))
    assert pdf_pages(pdf.read_bytes()) == 2 and next(out.glob("lookbook-*.zip")).exists()
    assert "Say fav 1 or react ⭐" in said  # Slack's _markup_ is plain text in a terminal


# -- Slack -----------------------------------------------------------------------------------------------------------
def test_slack_compare_and_lookbook_upload_into_the_thread(tmp_path):
    """"#1 vs #2" in a thread posts the compare sheet there; ``/restyle lookbook`` uploads the PDF and the ZIP."""
    from tests.slack_emulator import message
    from tests.test_slack import CH, running_bot

    fake = FakeBackend()
    with running_bot(tmp_path, fake) as h:
        root = h.share_photo(text="make the skirt red")
        h.wait_variations(root, 2)
        assert h.bot.jobs.join(timeout=60)
        calls = len(fake.inpaint_calls)

        def uploads(suffix: str) -> list:
            return [f for f in h.emu.files.values() if f.name.endswith(suffix) and f.thread_ts == root]

        h.slack.event(message(CH, "#1 vs #2", thread_ts=root))
        h.wait_text(root, "Here are #1 and #2 side by side")
        (sheet,) = h.emu.wait_until(lambda: uploads("compare-1-2.png") or None, 30, what="the compare sheet")
        assert sheet.title == "Compare #1 vs #2" and sheet.content.startswith(b"\x89PNG")

        h.slack.event(message(CH, "fav 2", thread_ts=root))
        h.wait_text(root, T.FAVORITED.format(number=2))
        resp = h.slack.command("lookbook", channel=CH)
        assert resp.status == 200 and "I don't know" not in resp.body
        h.wait_text(root, T.LOOKBOOK.format(n=1, s="", numbers="#2"))
        (pdf,) = h.emu.wait_until(lambda: uploads(".pdf") or None, 30, what="the lookbook PDF")
        (archive,) = h.emu.wait_until(lambda: uploads(".zip") or None, 30, what="the lookbook ZIP")
        assert pdf_pages(pdf.content) == 2
        with zipfile.ZipFile(io.BytesIO(archive.content)) as z:
            assert z.namelist() == ["variation-002.png"]
        assert len(fake.inpaint_calls) == calls  # neither spent GPU time

        # an upload Slack refuses: the thread is told, nothing else is lost
        h.emu.fail_next("files.getUploadURLExternal", 200, {"ok": False, "error": "not_in_channel"})
        h.slack.event(message(CH, "compare 2 and 1", thread_ts=root))
        h.wait_text(root, T.FILES_NOT_POSTED.format(what="the comparison", why="Slack error not_in_channel"))
