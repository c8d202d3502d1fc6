"""The conversation engine end to end on tiny checkpoints: in-process and through model.serve over boto3."""

from __future__ import annotations

import base64
import json
import shutil
import threading
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from bot import messages as T
from bot.backends import BackendError, BackendUnavailable, LocalBackend, SageMakerBackend
from bot.engine import Engine
from bot.events import Command, Favorite, FavoritesList, Message, MoreLike, Photo, Use, Variations
from bot.intent import plain_prompt
from bot.jobs import JobQueue
from bot.settings import Settings
from bot.store import Store
from model.errors import ImageTooLarge
from model.images import decode_mask, load_image_b64
from model.masks import grow
from model.serve import ModelServer, start
from tests.conftest import garment_box, make_photo, to_bytes


@pytest.fixture(scope="module")
def local_backend(tiny_dir) -> LocalBackend:
    return LocalBackend(str(tiny_dir / "clipseg"), str(tiny_dir / "inpaint"))


def make_engine(tmp_path: Path, model_backend, **overrides) -> Engine:
    settings = Settings.from_env({}, data_dir=tmp_path, steps=2, num_images=2, **overrides)
    return Engine(Store(settings.data_dir), model_backend, settings)


def texts(replies) -> str:
    return " | ".join(r.text for r in replies)


def only(replies, kind):
    found = [r for r in replies if isinstance(r, kind)]
    assert found, f"expected a {kind.__name__} in {replies}"
    return found[-1]


PHOTO = make_photo(160, 240)


def assert_far_pixels_untouched(eng: Engine, thread: str, variation: Path) -> np.ndarray:
    """Pixels farther than the feather from the garment mask are the original's bytes; inside, new ones."""
    original = np.asarray(Image.open(eng.store.original(thread)))
    var = np.asarray(Image.open(variation))
    (mask_file,) = (eng.store.thread_dir(thread) / "masks").glob("*.png")
    mask = decode_mask(mask_file.read_bytes())
    far = ~grow(mask, 9)
    assert var.shape == original.shape
    assert far.any() and (var[far] == original[far]).all()
    assert (var[mask] != original[mask]).any()
    return mask


def test_scenario_restyle_favorite_vary_batch(tmp_path, local_backend):
    eng = make_engine(tmp_path, local_backend)
    th = "test:1"
    replies = eng.handle(Photo(thread=th, user="ana", image=to_bytes(PHOTO, "JPEG", quality=95)))
    assert texts(replies) == T.GOT_PHOTO

    steps_seen = []
    assert eng.needs_generation(Message(th, "ana", "make the skirt red floral"))
    out = only(eng.handle(Message(th, "ana", "make the skirt red floral"),
                          lambda d, t, s: steps_seen.append((d, t))), Variations)
    assert [v.number for v in out.items] == [1, 2]
    assert steps_seen and steps_seen[-1][0] == steps_seen[-1][1]
    assert {t for _, t in steps_seen} == {2} and all(0 <= d <= t for d, t in steps_seen)  # one total: one bar
    for item in out.items:
        img = Image.open(item.path)
        assert img.size == PHOTO.size
    assert Image.open(out.sheet).format == "PNG"
    from bot.render import contact_sheet  # the sheet leads with the picture the variations came from

    assert Image.open(out.sheet).size == contact_sheet([PHOTO] * 3, ["original", "#1", "#2"], title="t").size
    assert out.mask_preview.exists()
    # the bot's composite keeps far pixels from the stored original bit-identical
    mask = assert_far_pixels_untouched(eng, th, out.items[0].path)
    x0, y0, x1, y1 = garment_box(*PHOTO.size)
    assert mask[(y0 + y1) // 2, (x0 + x1) // 2]  # the tiny CLIPSeg found the synthetic garment

    second = out.items[1]
    assert "⭐ #2" in texts(eng.handle(Favorite(th, "ana", second.id, True)))
    vary_seen = []
    vary = only(eng.handle(Message(th, "ana", "#2 but longer"), lambda d, t, s: vary_seen.append((d, t))),
                Variations)
    assert [v.number for v in vary.items] == [3, 4]
    # an iteration starts part-way: progress counts the denoising steps it really runs, the same total throughout
    assert {t for _, t in vary_seen} == {max(1, int(2 * eng.settings.vary_strength))}
    assert vary_seen[-1][0] == vary_seen[-1][1]
    turn = eng.store.turn(vary.turn_id)
    assert turn.base == str(second.path) and turn.strength == pytest.approx(eng.settings.vary_strength)
    assert "long" in turn.prompt
    assert eng.store.base(th)[0] == second.path  # the thread is on #2 now: a refinement continues from it

    more = only(eng.handle(Message(th, "ana", "3 more like that")), Variations)
    assert len(more.items) == 3
    batch = only(eng.handle(Command(th, "ana", "batch 5 pastel")), Variations)
    assert len(batch.items) == 5 and "pastel" in eng.store.turn(batch.turn_id).prompt

    favs = only(eng.handle(Command(th, "ana", "favorites")), FavoritesList)
    assert [v.number for v in favs.items] == [2] and favs.sheet.exists()
    assert "removed" in texts(eng.handle(Favorite(th, "ana", second.id, False)))
    assert eng.store.favorites(th) == []

    assert "#2" in texts(eng.handle(Use(th, "ana", second.id)))
    assert eng.store.base(th)[0] == second.path
    assert "original" in texts(eng.handle(Message(th, "ana", "undo")))
    assert "Nothing to undo" in texts(eng.handle(Message(th, "ana", "undo")))

    mlt = only(eng.handle(MoreLike(th, "ana", second.id)), Variations)
    assert eng.store.turn(mlt.turn_id).base == str(second.path)


def test_start_over_goes_back_to_the_original_from_any_depth(tmp_path, local_backend):
    eng = make_engine(tmp_path, local_backend)
    eng.handle(Photo("s", "u", to_bytes(PHOTO)))
    first = only(eng.handle(Message("s", "u", "make the skirt black")), Variations)
    eng.handle(Message("s", "u", "use 1"))
    eng.handle(Message("s", "u", "use 2"))
    assert eng.store.base("s")[0] == first.items[1].path
    assert texts(eng.handle(Message("s", "u", "let's start over"))) == T.UNDONE.format(what="the original photo")
    assert eng.store.base("s") == (eng.store.original("s"), None)
    assert texts(eng.handle(Message("s", "u", "back to the original photo"))) == T.NOTHING_TO_UNDO


def test_small_talk_removal_and_caps_get_straight_answers(tmp_path, local_backend):
    eng = make_engine(tmp_path, local_backend, max_batch=3)
    eng.handle(Photo("c", "u", to_bytes(PHOTO)))
    assert texts(eng.handle(Message("c", "u", "thank you so much!"))) == T.WELCOME
    assert texts(eng.handle(Message("c", "u", "love it!"))) == T.GLAD  # praise, not "show favourites"
    assert isinstance(eng.handle(Message("c", "u", "show my favourites"))[0], FavoritesList)
    assert "`steps=`" in texts(eng.handle(Message("c", "u", "settings steps=")))
    assert texts(eng.handle(Message("c", "u", "remove the belt"))) == T.CANT_REMOVE.format(what="belt")
    assert eng.store.variations("c") == []
    out = only(eng.handle(Message("c", "u", "make 5 variations of the skirt in red")), Variations)
    assert len(out.items) == 3 and out.text.endswith(T.CAPPED.format(cap=3))
    assert not only(eng.handle(Message("c", "u", "2 more like that")), Variations).text.endswith(")")


def spy_segment(backend, monkeypatch, *, miss: bool = False) -> list:
    """Record what each segmentation asks (``prompts``, ``dilate``, ``threshold``); ``miss``: answer as a CLIPSeg
    that finds none of the garments."""
    sent = []
    real = backend._segment

    def segment(small, garments, grow, threshold, protect=True):
        sent.append(SimpleNamespace(prompts=list(garments), dilate=grow, threshold=threshold))
        found = real(small, garments, grow, threshold, protect)
        return {} if miss else found

    monkeypatch.setattr(backend, "_segment", segment)
    return sent


def test_repeats_of_a_two_garment_turn_regenerate_both_garments(tmp_path, local_backend, monkeypatch):
    """"more like that", "more like #1" and "batch 2" after "the top white and the skirt black" repeat the whole
    look: both masks and the two-garment prompt (the thread's context names only the first garment)."""
    eng = make_engine(tmp_path, local_backend)
    eng.handle(Photo("two", "u", to_bytes(PHOTO)))
    first = only(eng.handle(Message("two", "u", "make the top white and the skirt black")), Variations)
    look = eng.store.turn(first.turn_id)
    assert look.garments == ["top", "skirt"] and "white top" in look.prompt and "black skirt" in look.prompt
    sent = spy_segment(local_backend, monkeypatch)
    repeats = [only(eng.handle(event), Variations) for event in
               (Message("two", "u", "2 more like that"), MoreLike("two", "u", first.items[0].id),
                Command("two", "u", "batch 2"))]
    for out in repeats:
        turn = eng.store.turn(out.turn_id)
        assert (turn.garments, turn.prompt) == (look.garments, look.prompt), turn.text
        # the reply restates what was made: the look, both garments, the picture it came from, the real numbers
        first_number = out.items[0].number
        assert out.text == T.DONE.format(n=2, s="s", numbers=", ".join(f"#{v.number}" for v in out.items),
                                         prompt=plain_prompt(look.prompt), what="top and skirt",
                                         source=eng._source_name("two", turn.base), look="", first=first_number,
                                         other="denim")
    # the original's masks were kept per garment: only #1 (a new base) was segmented, for both garments at once
    assert [r.prompts for r in sent] == [["top", "skirt"]]
    # naming one of the garments, or adding a style, is not a repeat: the named one, or the context's first one
    skirts = eng.store.turn(only(eng.handle(Message("two", "u", "3 more skirts like that")), Variations).turn_id)
    assert skirts.garments == ["skirt"] and "top" not in skirts.prompt
    pastel = eng.store.turn(only(eng.handle(Command("two", "u", "batch 2 pastel")), Variations).turn_id)
    assert pastel.garments == ["skirt"] and "pastel skirt" in pastel.prompt


def test_a_variation_the_segmenter_misses_is_edited_in_the_region_restyle_painted(tmp_path, local_backend,
                                                                                  monkeypatch):
    """"try #1 in denim": #1's new skirt may not look like a skirt to CLIPSeg; the mask #1 was painted in is where
    its skirt is, so the iteration goes ahead there instead of answering "I couldn't find a skirt"."""
    eng = make_engine(tmp_path, local_backend)
    eng.handle(Photo("it", "u", to_bytes(PHOTO)))
    first = only(eng.handle(Message("it", "u", "make the skirt black")), Variations)
    original_mask = decode_mask(next((eng.store.thread_dir("it") / "masks").glob("*.png")).read_bytes())
    sent_masks, _ = spy_inpaint(local_backend, monkeypatch)
    asked = spy_segment(local_backend, monkeypatch, miss=True)
    out = only(eng.handle(Message("it", "u", "try #1 in denim")), Variations)
    assert [r.prompts for r in asked] == [["skirt"]]  # CLIPSeg was asked on #1 and missed
    assert eng.store.turn(out.turn_id).base == str(first.items[0].path)
    sent = sent_mask(sent_masks[0])
    assert sent.sum() == original_mask.sum() and sent.any()  # the painted region, cropped
    # chains: #3 (made from #1 in that region) is edited there too, with no second miss reported
    assert only(eng.handle(Message("it", "u", "#3 but longer")), Variations)
    # a garment restyle never painted on that base is still "not found"
    eng.handle(Message("it", "u", "use 1"))
    assert "couldn't find a top" in texts(eng.handle(Message("it", "u", "make the top white")))


def test_how_a_variation_was_made_and_use_without_a_number(tmp_path, local_backend):
    eng = make_engine(tmp_path, local_backend)
    eng.handle(Photo("i", "u", to_bytes(PHOTO)))
    out = only(eng.handle(Message("i", "u", "make the skirt red, no stripes")), Variations)
    eng.handle(Message("i", "u", "steps=3"))
    vary = only(eng.handle(Message("i", "u", "#2 but longer")), Variations)
    first, third = out.items[1], vary.items[0]
    info = texts(eng.handle(Message("i", "u", "what's the seed of #2?")))
    assert info == T.INFO.format(number=2, seed=first.seed, base="the original photo", garments="skirt",
                                 prompt=eng.store.turn(out.turn_id).prompt, negative=" (avoiding: striped)",
                                 how="steps=2, guidance=7.5, strength=1")
    later = texts(eng.handle(Message("i", "u", "#3 info")))
    assert f"seed {third.seed}, made from #2" in later and "steps=3" in later and "strength=0.65" in later
    assert "There is no #9" in texts(eng.handle(Message("i", "u", "#9 info")))
    before = eng.store.base("i")
    assert before[1] is not None and before[1].number == 2  # "#2 but longer" left the thread on #2
    assert texts(eng.handle(Message("i", "u", "use a higher guidance"))) == T.WHICH
    assert eng.store.base("i") == before  # neither question changed anything


def test_same_seed_same_pixels_and_settings(tmp_path, local_backend):
    eng = make_engine(tmp_path, local_backend)
    eng.handle(Photo("t", "u", to_bytes(PHOTO)))
    assert "seed=11" in texts(eng.handle(Message("t", "u", "steps=3 guidance=5 seed=11")))
    a = only(eng.handle(Message("t", "u", "make the skirt black")), Variations)
    b = only(eng.handle(Message("t", "u", "make the skirt black")), Variations)
    assert [i.seed for i in a.items] == [11, 12] == [i.seed for i in b.items]
    assert np.array_equal(np.asarray(Image.open(a.items[0].path)), np.asarray(Image.open(b.items[0].path)))
    bad = texts(eng.handle(Message("t", "u", "steps=900")))
    assert bad == T.BAD_SETTING.format(key="steps", value=900, why="it must be a whole number from 1 to 150")
    assert "a number from 0.0 to 30.0" in texts(eng.handle(Message("t", "u", "guidance=lots")))


@pytest.mark.parametrize("payload, expected", [
    (b"", "0 bytes"),
    (b"%PDF-1.7 not a photo", "not an image"),
    (to_bytes(make_photo(64, 64))[:60], "truncated"),
    (to_bytes(make_photo(48, 200)), "only 48x200 pixels"),
])
def test_bad_photo_gets_a_friendly_reply_and_no_thread(tmp_path, local_backend, payload, expected):
    eng = make_engine(tmp_path, local_backend)
    replies = eng.handle(Photo("bad", "u", payload, filename="x.png"))
    assert len(replies) == 1 and replies[0].kind == "error" and expected in replies[0].text
    assert not eng.store.has_thread("bad")


def test_a_photo_over_the_pixel_limit_is_edited_at_half_size_and_said_so(tmp_path, local_backend, monkeypatch):
    """A 48 MP camera JPEG is not refused: the thread works on a half-size copy and the reply says so."""
    import model.images as images

    monkeypatch.setattr(images, "MAX_PIXELS", 30_000)  # a 320x240 photo plays the 48 MP one
    eng = make_engine(tmp_path, local_backend)
    replies = eng.handle(Photo("cam", "u", to_bytes(make_photo(240, 320), "JPEG", quality=95), filename="a.jpg",
                               text="make the skirt red"))
    assert "240x320" in texts(replies) and "120x160 copy" in texts(replies)
    out = only(replies, Variations)
    assert Image.open(eng.store.original("cam")).size == (120, 160)
    assert all(Image.open(i.path).size == (120, 160) for i in out.items)
    with pytest.raises(ImageTooLarge):  # the model side keeps its strict limit for requests
        images.decode_image(to_bytes(make_photo(240, 320), "JPEG"))


def test_garment_not_found_and_unknown_thread(tmp_path, local_backend):
    eng = make_engine(tmp_path, local_backend)
    eng.handle(Photo("plain", "u", to_bytes(make_photo(96, 128, garment=False))))
    assert "couldn't find a skirt" in texts(eng.handle(Message("plain", "u", "make the skirt red")))
    assert eng.store.variations("plain") == []
    assert texts(eng.handle(Message("nowhere", "u", "make the skirt red"))) == T.NO_THREAD
    assert "#7" in texts(eng.handle(Message("plain", "u", "fav 7")))
    assert T.NO_GARMENT == texts(eng.handle(Message("plain", "u", "make it red")))


def test_job_queue_is_bounded():
    q = JobQueue(workers=1, max_pending=2)
    gate = threading.Event()
    assert q.ahead() == 0
    assert q.submit(gate.wait, 5) and q.submit(gate.wait, 5)
    assert q.ahead() == 2  # one running, one waiting
    assert not q.submit(gate.wait, 5)  # full: the adapter answers "busy" instead of queueing forever
    gate.set()
    assert q.join(timeout=5)
    assert q.submit(lambda: None)
    q.shutdown()


# -- SageMaker backend: real boto3 client → loopback model.serve --------------------------------------------------
class FlakyServer(ModelServer):
    """model.serve whose first ``fail`` inpaint invocations answer like a crashed container (500)."""

    def __init__(self, *a, fail: int = 0, **kw) -> None:
        super().__init__(*a, **kw)
        self.fail = fail
        self.calls: dict[str, int] = {}

    def route(self, method, path, headers, body):
        self.calls[path] = self.calls.get(path, 0) + 1
        if "inpaint" in path and self.fail > 0:
            self.fail -= 1
            return self._model_error(500, b'{"error": {"code": "internal_error", "message": "boom"}}')
        return super().route(method, path, headers, body)


@pytest.fixture(scope="module")
def model_server(tiny_dir):
    server = FlakyServer({"clipseg": str(tiny_dir / "clipseg"), "inpaint": str(tiny_dir / "inpaint")})
    httpd = start(server, port=0)
    assert server.ready.wait(120), server.load_error
    yield server, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def sm_backend(url: str, **kw) -> SageMakerBackend:
    import boto3

    client = boto3.client("sagemaker-runtime", endpoint_url=url, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    return SageMakerBackend(clipseg_endpoint="restyle-clipseg", inpaint_endpoint="restyle-inpaint", client=client,
                            retries=kw.pop("retries", 2), **kw)


def spy_inpaint(backend, monkeypatch) -> tuple[list, list]:
    """Record each inpainting the backend is asked for and each answer (the real call still runs): the contract's
    requests and responses for the SageMaker backend, the pictures for the local one (``mask``: a boolean array)."""
    sent, answers = [], []
    if isinstance(backend, SageMakerBackend):
        real = backend.inpaint_call

        def inpaint(req, progress=None):
            sent.append(req)
            out = real(req, progress)
            answers.append(out)
            return out

        monkeypatch.setattr(backend, "inpaint_call", inpaint)
        return sent, answers
    real_paint = backend.paint

    def paint(image, mask, paint, seeds, progress=None, *, batch=False):
        sent.append(SimpleNamespace(**asdict(paint), mask=mask, image=image, seeds=seeds))
        out = real_paint(image, mask, paint, seeds, progress, batch=batch)
        answers.append(out)
        return out

    monkeypatch.setattr(backend, "paint", paint)
    return sent, answers


def sent_mask(r) -> np.ndarray:
    """The mask of a recorded inpainting: a boolean array (local) or the request's base64 PNG (SageMaker)."""
    return r.mask if isinstance(r.mask, np.ndarray) else decode_mask(base64.b64decode(r.mask))


def test_conversation_through_model_serve_over_boto3(tmp_path, model_server, monkeypatch):
    from bot import backends as backends_mod

    server, url = model_server
    # this crop travels at full size and as JPEG (scaled-down crops have their own test below)
    monkeypatch.setattr(backends_mod, "SEND_MAX_PIXELS", 4_000_000)
    monkeypatch.setattr(backends_mod, "SEND_PNG_PIXELS", 100_000)
    backend = sm_backend(url)
    sent, _ = spy_inpaint(backend, monkeypatch)
    eng = make_engine(tmp_path, backend, backend="sagemaker")
    eng.handle(Photo("sm", "u", to_bytes(make_photo(1024, 1536), "JPEG", quality=92)))
    before = dict(server.calls)
    out = only(eng.handle(Message("sm", "u", "make the skirt a red floral maxi")), Variations)
    assert len(out.items) == 2
    assert server.calls["/endpoints/restyle-clipseg/invocations"] > before.get("/endpoints/restyle-clipseg/invocations", 0)
    assert server.calls["/endpoints/restyle-inpaint/invocations"] > before.get("/endpoints/restyle-inpaint/invocations", 0)
    assert Image.open(out.items[0].path).size == (1024, 1536)
    assert base64.b64decode(sent[0].image)[:3] == b"\xff\xd8\xff"  # the crop went as JPEG
    assert_far_pixels_untouched(eng, "sm", out.items[0].path)  # despite JPEG transport of the crop


def test_sagemaker_retries_5xx_not_4xx(model_server, tiny_dir):
    from model.schemas import InpaintRequest
    from tests.conftest import b64, garment_mask

    server, url = model_server
    backend = sm_backend(url, retries=2)
    req = InpaintRequest(image=b64(make_photo()), mask=b64(garment_mask()), prompt="a red skirt", num_images=1,
                         seed=1, steps=2)
    path = "/endpoints/restyle-inpaint/invocations"
    server.fail, n0 = 2, server.calls.get(path, 0)
    assert len(backend.inpaint_call(req).images) == 1  # two crashes, then success
    assert server.calls[path] - n0 == 3
    server.fail, n0 = 5, server.calls[path]
    with pytest.raises(BackendUnavailable):
        backend.inpaint_call(req)
    assert server.calls[path] - n0 == 3  # gave up after retries
    server.fail = 0
    n0 = server.calls[path]
    bad = req.model_copy(update={"mask": b64(np.zeros((128, 96), bool))})
    with pytest.raises(BackendError) as err:
        backend.inpaint_call(bad)
    assert err.value.code == "empty_mask" and server.calls[path] - n0 == 1  # a 4xx is never retried


def test_endpoint_down_is_a_clear_thread_message(tmp_path):
    eng = make_engine(tmp_path, sm_backend("http://127.0.0.1:9", retries=0), backend="sagemaker")
    eng.handle(Photo("down", "u", to_bytes(make_photo())))
    replies = eng.handle(Message("down", "u", "make the skirt red"))
    assert replies[-1].kind == "error" and "not reachable" in replies[-1].text


# -- the terminal twin ----------------------------------------------------------------------------------------------
def test_terminal_chat_walks_the_flow(tmp_path, tiny_dir):
    import os
    import subprocess
    import sys

    data = tmp_path / "data"
    shutil.copytree(tiny_dir, data / "tiny")  # `--tiny` finds the checkpoints already built
    photo = tmp_path / "model.png"
    make_photo(96, 128).save(photo)
    env = {**os.environ, "RESTYLE_DATA_DIR": str(data), "RESTYLE_STEPS": "2", "RESTYLE_NUM_IMAGES": "2"}
    # a byte that is not UTF-8 in a line is replaced, not a failed turn
    script = b"make the skirt red floral\nfav 2\n2 more like that \xff\nfavorites\nhelp\nquit\n"
    out = tmp_path / "my_out"  # printed paths keep their underscores (only Slack's _markup_ is plain text)
    proc = subprocess.run([sys.executable, "-m", "bot", "chat", str(photo), "--tiny", "--out", str(out)],
                          input=script, capture_output=True, timeout=300, env=env)
    stdout, stderr = proc.stdout.decode(), proc.stderr.decode()
    assert proc.returncode == 0, stderr
    assert "contact sheet:" in stdout and "#2 saved to favourites" in stdout and "went wrong" not in stdout
    assert f"#2: {out / 'variation-002.png'}" in stdout and "say use 1, try #1 in denim" in stdout
    assert (out / "variation-002.png").exists()
    assert (out / "variation-004.png").exists()
    assert "generating" in stderr  # the tqdm bar
    # a second session on the same photo: its own folder by default, so no path shows the first session's #1
    proc = subprocess.run([sys.executable, "-m", "bot", "chat", str(photo), "--tiny"], input=b"quit\n",
                          capture_output=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0 and (tmp_path / "restyle-out" / "model").is_dir()
    (tmp_path / "restyle-out" / "model" / "variation-001.png").write_bytes(b"an earlier session's picture")
    proc = subprocess.run([sys.executable, "-m", "bot", "chat", str(photo), "--tiny"],
                          input=b"make the skirt red\nquit\n", capture_output=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0 and "restyle-out/model-2/variation-001.png" in proc.stdout.decode()


def test_terminal_refuses_an_unusable_photo_before_loading_anything(tmp_path):
    import os
    import subprocess
    import sys

    for name, data, says in [("icon.png", to_bytes(make_photo(16, 16)), "only 16x16 pixels"),
                             ("brief.png", b"%PDF-1.7", "couldn't read that file as a photo")]:
        (tmp_path / name).write_bytes(data)
        proc = subprocess.run([sys.executable, "-m", "bot", "chat", str(tmp_path / name)], input="",
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, "RESTYLE_DATA_DIR": str(tmp_path)})
        assert proc.returncode == 2 and says in proc.stderr and "loading models" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("args, env, says", [
    (["--device", "nonsense"], {}, "--device / RESTYLE_DEVICE must be cpu, cuda"),
    (["--log-level", "LOUD"], {}, "invalid choice: 'LOUD'"),
    (["--lora", "none=/x"], {}, "'none' is not a usable look name"),
    ([], {"RESTYLE_GUIDANCE": "nan"}, "RESTYLE_GUIDANCE must be from 0.0 to 30.0"),
    (["--count", "99"], {}, "--count / RESTYLE_NUM_IMAGES must be from 1 to 16"),
    (["--out", "{photo}"], {}, "--out: cannot write to"),
    (["--data-dir", "{photo}"], {}, "--data-dir / RESTYLE_DATA_DIR: cannot write to"),
])
def test_terminal_refuses_unusable_settings_before_loading_anything(tmp_path, args, env, says):
    """One line on stderr and exit 2, before minutes of model loading — never a traceback mid-conversation."""
    import os
    import subprocess
    import sys

    photo = tmp_path / "p.png"
    make_photo().save(photo)
    argv = [a.format(photo=photo) for a in args]
    proc = subprocess.run([sys.executable, "-m", "bot", "chat", str(photo), *argv], input="", capture_output=True,
                          text=True, timeout=120, env={**os.environ, "RESTYLE_DATA_DIR": str(tmp_path), **env})
    assert proc.returncode == 2 and says in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and "loading models" not in proc.stderr


def test_terminal_says_plainly_when_weights_are_missing(tmp_path):
    import os
    import subprocess
    import sys

    photo = tmp_path / "p.png"
    make_photo().save(photo)
    env = {**os.environ, "RESTYLE_DATA_DIR": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "bot", "chat", str(photo), "--inpaint", str(tmp_path / "nope"),
                           "--clipseg", str(tmp_path / "nope2")], input="", capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 2
    assert "RESTYLE_CLIPSEG_MODEL" in proc.stderr and "--tiny" in proc.stderr


def test_settings_from_env_are_typed_and_checked(tmp_path):
    s = Settings.from_env({"RESTYLE_STEPS": "12", "RESTYLE_TINY": "yes", "SLACK_BOT_TOKEN": "xoxb-secret",
                           "RESTYLE_DATA_DIR": str(tmp_path)})
    assert s.steps == 12 and s.tiny and s.data_dir == tmp_path
    assert "xoxb-secret" not in json.dumps(s.redacted())
    with pytest.raises(ValueError, match="RESTYLE_STEPS"):
        Settings.from_env({"RESTYLE_STEPS": "many"})
    with pytest.raises(ValueError, match="RESTYLE_BACKEND"):
        Settings.from_env({"RESTYLE_BACKEND": "cloud"})


def test_uncached_hub_id_without_network_fails_fast_and_says_what_to_set(monkeypatch):
    import time

    from huggingface_hub import constants

    from model.loading import ModelUnavailable, load_inpaint

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    start = time.monotonic()
    with pytest.raises(ModelUnavailable) as err:
        load_inpaint("restyle-tests/never-cached-inpainting")
    assert time.monotonic() - start < 10
    assert "RESTYLE_INPAINT_MODEL" in str(err.value) and "--tiny" in str(err.value)


def test_a_huge_photo_travels_scaled_down_and_comes_back_full_size(tmp_path, model_server, monkeypatch):
    """Crops over SEND_MAX_PIXELS are sent scaled down (a 24-megapixel photo would break SageMaker's 6 MB); the
    answers are scaled back up and pasted into the full-resolution photo, far pixels untouched."""
    from bot import backends as backends_mod

    server, url = model_server
    monkeypatch.setattr(backends_mod, "SEND_MAX_PIXELS", 60_000)
    backend = sm_backend(url)
    sent, _ = spy_inpaint(backend, monkeypatch)
    eng = make_engine(tmp_path, backend, backend="sagemaker")
    photo = make_photo(480, 720)
    eng.handle(Photo("huge", "u", to_bytes(photo)))
    out = only(eng.handle(Message("huge", "u", "make the skirt a red floral maxi")), Variations)
    assert len(out.items) == 2 and sent
    small = load_image_b64(sent[0].image)
    assert small.width * small.height <= 60_000
    assert decode_mask(base64.b64decode(sent[0].mask)).shape == (small.height, small.width)
    original = np.asarray(Image.open(eng.store.original("huge")))
    (mask_file,) = (eng.store.thread_dir("huge") / "masks").glob("*.png")
    mask = decode_mask(mask_file.read_bytes())
    for item in out.items:
        var = np.asarray(Image.open(item.path))
        assert var.shape == original.shape
        far = ~grow(mask, 40)  # the feather is 8 px at the sent scale: wider at full resolution
        assert (var[far] == original[far]).all()
        assert (var[mask] != original[mask]).any()


def test_an_answer_over_6_mb_is_asked_for_in_halves_with_the_same_pictures(tmp_path, model_server, monkeypatch):
    from model import handlers

    server, url = model_server
    backend = sm_backend(url)
    _, answers = spy_inpaint(backend, monkeypatch)

    def turn(folder: str) -> list[np.ndarray]:
        eng = make_engine(tmp_path / folder, backend, backend="sagemaker")
        eng.handle(Photo("t", "u", to_bytes(PHOTO)))
        assert "count=4" in texts(eng.handle(Message("t", "u", "seed=5 count=4")))
        out = only(eng.handle(Message("t", "u", "make the skirt black")), Variations)
        return [np.asarray(Image.open(i.path)) for i in out.items]

    whole = turn("whole")
    assert len(answers) == 1 and len(answers[0].images) == 4
    monkeypatch.setattr(handlers, "MAX_PAYLOAD", int(len(answers[0].model_dump_json()) * 0.45))
    answers.clear()
    halves = turn("halves")
    assert [len(a.images) for a in answers] == [1, 1, 1, 1]  # 4 refused, 2 + 2 refused, then one by one
    # each candidate depends on its own seed only (batch numerics move a pixel by at most 2 levels)
    assert len(halves) == 4
    assert all(np.abs(a.astype(int) - b).max() <= 2 for a, b in zip(whole, halves, strict=True))


def test_mask_preview_is_small_and_tints_the_mask():
    from bot.engine import mask_preview

    photo = make_photo(2048, 3072)
    mask = np.zeros((3072, 2048), dtype=bool)
    mask[1500:2500, 500:1500] = True
    small = mask_preview(photo, mask)
    assert small.size == (683, 1024)
    arr, plain = np.asarray(small).astype(int), np.asarray(photo.resize(small.size)).astype(int)
    inside, outside = (666, 333), (100, 100)  # (y, x) at preview scale
    assert arr[inside][0] - plain[inside][0] > 30  # tinted towards (255, 0, 96)
    assert np.abs(arr[outside] - plain[outside]).max() <= 3
    assert mask_preview(make_photo(96, 128), np.ones((128, 96), dtype=bool)).size == (96, 128)


def test_contact_sheets_close_up_on_a_small_garment():
    """A skirt that is a small part of the photo is what the sheet shows (with the photo's shape and some context
    around it); a garment filling most of the photo keeps the whole picture."""
    from bot.engine import close_up_box

    mask = np.zeros((1536, 1024), dtype=bool)
    mask[900:1300, 350:650] = True
    x0, y0, x1, y1 = close_up_box(mask)
    assert x0 <= 350 - 100 and y0 <= 900 - 100 and x1 >= 650 + 100 and y1 >= 1300 + 100  # a quarter of 400 around
    assert (x1 - x0) / (y1 - y0) == pytest.approx(1024 / 1536, abs=0.01)  # tiles keep the photo's shape
    assert (x1 - x0) * (y1 - y0) <= 0.5 * 1024 * 1536
    big = np.zeros((1536, 1024), dtype=bool)
    big[200:1400, 100:900] = True
    assert close_up_box(big) is None and close_up_box(np.zeros((8, 8), dtype=bool)) is None


def test_a_thread_picks_a_brand_look(tmp_path, tiny_dir, monkeypatch):
    """`settings look=resort` (or "use the resort look"): the thread's next requests name it; the settings reply
    lists the looks; an unknown one is refused up front with what exists; `#N info` says which look made it."""
    looks = ",".join(f"{n}={tiny_dir / 'looks' / n}" for n in ("studio", "resort"))
    backend = LocalBackend(str(tiny_dir / "clipseg"), str(tiny_dir / "inpaint"), lora=looks)
    sent, answers = spy_inpaint(backend, monkeypatch)
    eng = make_engine(tmp_path, backend)
    eng.handle(Photo("l", "u", to_bytes(PHOTO)))
    assert "look=default" in texts(eng.handle(Message("l", "u", "settings")))
    only(eng.handle(Message("l", "u", "make the skirt red")), Variations)
    assert sent[-1].look is None and answers[-1].look == "studio"  # the endpoint's default look
    refused = texts(eng.handle(Message("l", "u", "settings look=autumn")))
    assert "`look=autumn`" in refused and "studio, resort" in refused
    assert "look=resort" in texts(eng.handle(Message("l", "u", "use the resort look")))
    out = only(eng.handle(Message("l", "u", "make the skirt blue")), Variations)
    assert sent[-1].look == "resort" and answers[-1].look == "resort"
    assert "look=resort" in texts(eng.handle(Message("l", "u", f"#{out.items[0].number} info")))
    eng.handle(Message("l", "u", "settings look=none"))
    only(eng.handle(Message("l", "u", "make the skirt green")), Variations)
    assert sent[-1].look == "none" and answers[-1].look is None


def test_the_mask_can_be_grown_or_tightened_per_thread(tmp_path, local_backend, monkeypatch):
    """"make the mask bigger" / "tighter mask" / `grow=` / `threshold=` change how CLIPSeg's mask is made for the
    thread; masks are kept per setting, and a variation is still edited where it was painted after a change."""
    eng = make_engine(tmp_path, local_backend)
    eng.handle(Photo("m", "u", to_bytes(PHOTO)))
    sent_masks, _ = spy_inpaint(local_backend, monkeypatch)
    asked = spy_segment(local_backend, monkeypatch)
    first = only(eng.handle(Message("m", "u", "make the skirt black")), Variations)
    assert "grow=24" in texts(eng.handle(Message("m", "u", "the mask is too small")))
    only(eng.handle(Message("m", "u", "make the skirt black")), Variations)
    assert [(r.dilate, r.threshold) for r in asked] == [(8, 0.4), (24, 0.4)]  # asked again: a new setting
    small, big = (sent_mask(r) for r in sent_masks)
    assert big.sum() > small.sum()
    assert "grow=16" in texts(eng.handle(Message("m", "u", "tighter mask please")))
    assert "it must be a whole number from 0 to 128" in texts(eng.handle(Message("m", "u", "settings grow=300")))
    eng.handle(Message("m", "u", "settings grow=8"))
    only(eng.handle(Message("m", "u", "make the skirt red")), Variations)
    assert len(asked) == 2  # back to the first setting: its masks were kept
    # #1 was painted with grow=8; under grow=40 CLIPSeg misses on it, and #1's own mask is used
    eng.handle(Message("m", "u", "settings grow=40"))
    spy_segment(local_backend, monkeypatch, miss=True)
    only(eng.handle(Message("m", "u", f"#{first.items[0].number} in denim")), Variations)
    assert sent_mask(sent_masks[-1]).sum() == small.sum()
    assert "grow=40" in texts(eng.handle(Message("m", "u", f"#{eng.store.variations('m')[-1].number} info")))
