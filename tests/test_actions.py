"""What a design team does next with a variation (issue #14): catalogue resolution (``upscale #3``), backgrounds
("put her on a plain white background") and swatches ("use this print on the dress").

Pixels are checked on the real in-process models (tiny checkpoints: CLIPSeg, SD inpainting with its tiny IP-Adapter,
the x4 upscaler): what must stay bit-identical does, what must change does.  The conversation around them — what is
understood, asked, restated, numbered — runs on the fast double, through the engine, the terminal and the Slack
emulator.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bot import messages as T
from bot import slack_app
from bot.backends import LocalBackend
from bot.engine import Engine
from bot.events import Message, Photo, Question, Swatch, Variations
from bot.settings import Settings
from bot.store import Store
from model.images import decode_mask
from model.masks import grow
from tests.conftest import make_photo, to_bytes
from tests.fake_backend import FakeBackend

PHOTO = make_photo(160, 240)


def swatch_image(seed: int = 0) -> bytes:
    """A striped 'print' (a swatch photo as a designer would share it)."""
    rng = np.random.RandomState(seed)
    arr = np.zeros((96, 96, 3), np.uint8)
    colours = rng.randint(0, 256, (2, 3))
    for y in range(96):
        arr[y, :] = colours[(y // 8) % 2]
    return to_bytes(Image.fromarray(arr))


@pytest.fixture(scope="module")
def tiny_backend(tiny_dir) -> LocalBackend:
    return LocalBackend(str(tiny_dir / "clipseg"), str(tiny_dir / "inpaint"), upscale=str(tiny_dir / "upscale"))


def engine_on(tmp_path: Path, backend) -> Engine:
    settings = Settings.from_env({}, data_dir=tmp_path, steps=2, num_images=2, max_batch=8)
    return Engine(Store(tmp_path), backend, settings)


def only(replies, kind):
    found = [r for r in replies if isinstance(r, kind)]
    assert found, f"expected a {kind.__name__} in {replies}"
    return found[-1]


def text(replies) -> str:
    return " | ".join(r.text for r in replies)


def stored_mask(eng: Engine, thread: str, garment_file_count: int = 1) -> np.ndarray:
    files = sorted((eng.store.thread_dir(thread) / "masks").glob("*.png"))
    assert len(files) == garment_file_count, files
    return decode_mask(files[0].read_bytes())


# -- backgrounds -----------------------------------------------------------------------------------------------------
def test_a_new_background_leaves_the_person_bit_identical(tmp_path, tiny_backend):
    eng = engine_on(tmp_path, tiny_backend)
    eng.handle(Photo("bg", "ana", to_bytes(PHOTO)))
    out = only(eng.handle(Message("bg", "ana", "put her on a plain white background")), Variations)
    assert [v.number for v in out.items] == [1, 2]
    assert "_plain white background_ on the background" in out.text  # restated: the scene, and where it went
    background = stored_mask(eng, "bg")
    person = ~background
    assert person.any() and background.any()
    original = np.asarray(Image.open(eng.store.original("bg")))
    for item in out.items:
        var = np.asarray(Image.open(item.path))
        assert var.shape == original.shape
        assert (var[person] == original[person]).all()  # every pixel of the person (CLIPSeg's, grown) untouched
        assert (var[background] != original[background]).any()
    turn = eng.store.turn(out.turn_id)
    assert turn.garments == ["background"] and turn.prompt.startswith("plain white background, photo background")
    # like any turn: numbered, and "#1 info" says how it was made
    assert "plain white background" in text(eng.handle(Message("bg", "ana", "#1 info")))


def test_a_background_that_is_a_guess_is_asked_first(tmp_path):
    fake = FakeBackend()
    eng = engine_on(tmp_path, fake)
    eng.handle(Photo("q", "ana", to_bytes(PHOTO)))
    assert text(eng.handle(Message("q", "ana", "can you blur the background"))) == T.UNSUPPORTED["background"]
    for ask in ("remove the background", "background in pink?"):  # the second question replaces the first
        question = only(eng.handle(Message("q", "ana", ask)), Question)
        assert "background" in question.text and not fake.inpaint_calls
    only(eng.handle(Message("q", "ana", "yes")), Variations)  # the pink one, once confirmed
    assert fake.inpaint_calls[-1].prompt.startswith("pink background") and fake.inpaint_calls[-1].edge == "inside"


# -- swatches --------------------------------------------------------------------------------------------------------
def test_a_swatch_steers_the_garment_and_can_be_followed_less(tmp_path, tiny_backend):
    eng = engine_on(tmp_path, tiny_backend)
    eng.handle(Photo("sw", "ana", to_bytes(PHOTO)))
    assert text(eng.handle(Message("sw", "ana", "use this print on the skirt"))) == T.NO_SWATCH
    assert text(eng.handle(Swatch("sw", "ana", swatch_image(), "print.png"))) == T.GOT_SWATCH
    eng.handle(Message("sw", "ana", "settings seed=7"))
    plain = only(eng.handle(Message("sw", "ana", "make the skirt red")), Variations)
    eng.handle(Message("sw", "ana", "start over"))
    printed = only(eng.handle(Message("sw", "ana", "use this print on the red skirt")), Variations)
    assert "after the swatch (at 0.6)" in printed.text
    turn = eng.store.turn(printed.turn_id)
    assert turn.prompt == eng.store.turn(plain.turn_id).prompt  # the same words and seeds: only the swatch differs
    assert [v.seed for v in printed.items] == [v.seed for v in plain.items]
    mask = stored_mask(eng, "sw")
    a, b = (np.asarray(Image.open(v.path)) for v in (plain.items[0], printed.items[0]))
    assert (a[mask] != b[mask]).any()
    assert (a[~grow(mask, 9)] == b[~grow(mask, 9)]).all()  # away from the garment both are the original
    assert turn.intent["made_with"]["swatch"]["scale"] == 0.6
    softer = only(eng.handle(Message("sw", "ana", "a bit less like the swatch")), Variations)
    assert eng.store.turn(softer.turn_id).intent["made_with"]["swatch"]["scale"] == 0.4
    c = np.asarray(Image.open(softer.items[0].path))
    assert (c[mask] != b[mask]).any()
    # a newer swatch replaces it; the turns made with the old one still name theirs
    eng.handle(Swatch("sw", "ana", swatch_image(1), "print2.png"))
    assert Path(turn.intent["made_with"]["swatch"]["path"]).exists()
    assert eng.store.swatch("sw") != Path(turn.intent["made_with"]["swatch"]["path"])


def test_a_swatch_shared_with_its_request_is_used_at_once(tmp_path):
    fake = FakeBackend()
    eng = engine_on(tmp_path, fake)
    eng.handle(Photo("now", "ana", to_bytes(PHOTO)))
    shared = Swatch("now", "ana", swatch_image(), "print.png", text="use this print on the skirt")
    assert eng.needs_generation(shared)  # adapters queue it behind a status message, as any generation
    steps = []
    out = only(eng.handle(shared, lambda done, total, what: steps.append(done)), Variations)
    assert len(out.items) == 2 and steps and fake.inpaint_calls[-1].reference is not None
    kept = eng.store.swatch("now")
    assert kept is not None
    # a swatch too small to be a picture of anything is refused with the reason, and the kept one stays
    tiny = Swatch("now", "ana", to_bytes(Image.new("RGB", (8, 8))), "dot.png")
    assert "8x8" in text(eng.handle(tiny)) and not eng.needs_generation(tiny)
    assert eng.store.swatch("now") == kept


# -- upscale ---------------------------------------------------------------------------------------------------------
def test_upscale_brings_the_garment_to_the_photos_resolution_as_a_new_variation(tmp_path, tiny_backend):
    eng = engine_on(tmp_path, tiny_backend)
    photo = make_photo(320, 480)
    eng.handle(Photo("up", "ana", to_bytes(photo)))
    first = only(eng.handle(Message("up", "ana", "make the skirt red")), Variations)
    one = first.items[0]
    out = only(eng.handle(Message("up", "ana", "#1 in full res please")), Variations)
    (item,) = out.items
    assert item.number == 3 and out.text == T.UPSCALED.format(new=3, number=1, size="320x480")
    before, after = np.asarray(Image.open(one.path)), np.asarray(Image.open(item.path))
    assert after.shape == before.shape == (480, 320, 3)  # the photo's full size
    mask = eng.painted_mask(eng.store.variation(one.id), (320, 480))
    far = ~grow(mask, 9)
    assert far.any() and (after[far] == before[far]).all()  # pixels away from the garment: #1's own, bit-identical
    assert (after[mask] != before[mask]).any()
    assert out.sheet is not None and out.sheet.exists()  # the close-up, before and after
    # the thread moved to #3 and knows where its garment is: "#3 in denim" edits there
    assert eng.store.base("up")[1].number == 3
    assert eng.painted_mask(eng.store.variation(item.id), (320, 480)) is not None
    denim = only(eng.handle(Message("up", "ana", "#3 in denim")), Variations)
    assert eng.store.turn(denim.turn_id).base == str(item.path)
    # the original photo is its own full resolution; a missing number is said as such
    eng.handle(Message("up", "ana", "start over"))
    assert text(eng.handle(Message("up", "ana", "upscale it"))) == T.UPSCALE_WHICH
    assert "#9" in text(eng.handle(Message("up", "ana", "upscale #9")))


# -- the terminal and Slack ------------------------------------------------------------------------------------------
def test_restyle_chat_tiny_takes_a_swatch_upscales_and_repaints_backgrounds(tmp_path, tiny_dir):
    """``restyle chat --tiny``: the three actions on the tiny models, in a terminal (``swatch PATH`` shares one)."""
    import os
    import shutil
    import subprocess
    import sys

    data = tmp_path / "data"
    shutil.copytree(tiny_dir, data / "tiny")  # `--tiny` finds the checkpoints already built
    photo, swatch = tmp_path / "look.png", tmp_path / "print.png"
    make_photo(160, 240).save(photo)
    swatch.write_bytes(swatch_image())
    env = {**os.environ, "RESTYLE_DATA_DIR": str(data), "RESTYLE_STEPS": "2", "RESTYLE_NUM_IMAGES": "2"}
    script = (f"make the skirt red\nswatch {swatch}\nuse this print on the skirt\nupscale #3\n"
              f"put her on a studio grey backdrop\nswatch {tmp_path / 'missing.png'}\nquit\n")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "bot", "chat", str(photo), "--tiny", "--out", str(out)],
                          input=script.encode(), capture_output=True, timeout=300, env=env)
    said = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert "keep this as the thread's swatch" in said and "after the swatch (at 0.6)" in said
    assert "Here is #5: #3 with its garment brought to the photo's full resolution (160x240)" in said
    assert "studio grey backdrop on the background" in said  # Slack's _markup_ is plain text in a terminal
    assert "I can't read" in said and "missing.png" in said and "went wrong" not in said
    assert [p.name for p in sorted(out.glob("variation-*.png"))] == [f"variation-{n:03d}.png" for n in range(1, 8)]
    assert Image.open(out / "variation-005.png").size == (160, 240)


def test_slack_swatch_upload_upscale_button_and_background(tmp_path):
    from tests.slack_emulator import BOT_USER_ID, file_share, message
    from tests.test_slack import CH, running_bot

    fake = FakeBackend()
    with running_bot(tmp_path, fake) as h:
        root = h.share_photo(text="make the skirt red")
        h.wait_variations(root, 2)
        # an image shared to restyle in the thread is the thread's swatch (a new photo starts its own thread)
        f = h.emu.host_file(swatch_image(), "print.png", "image/png")
        assert h.slack.event(file_share(CH, [f], thread_ts=root, text=f"<@{BOT_USER_ID}> the mill's print")
                             ).status == 200
        h.wait_text(root, "keep this as the thread's swatch")
        h.slack.event(message(CH, "use this print on the skirt", thread_ts=root))
        msgs = h.wait_variations(root, 4)
        assert fake.inpaint_calls[-1].reference is not None
        # the Upscale button under #4
        buttons = [e["action_id"] for b in msgs[-1]["blocks"] if b["type"] == "actions" for e in b["elements"]]
        assert slack_app.ACTION_UPSCALE in buttons
        vid = h.engine.store.variation_for_message(f"{CH}:{msgs[-1]['ts']}")
        number = h.engine.store.variation(vid).number
        h.slack.action(slack_app.ACTION_UPSCALE, vid, channel=CH, message_ts=msgs[-1]["ts"], thread_ts=root)
        h.wait_text(root, f"Here is #5: #{number} with its garment brought to the photo's full resolution")
        h.wait_variations(root, 5)
        h.slack.event(message(CH, "put her on a plain white background", thread_ts=root))
        h.wait_variations(root, 7)
        assert fake.inpaint_calls[-1].edge == "inside" and fake.upscale_calls
