"""The ``upscale`` role: the tiny x4 upscaler, the geometry that feeds it, the paste-back, and its endpoint.

The tiny upscaler's weights are random, so its pixels mean nothing; what is tested is the wiring: sizes, seeds,
exactness away from the mask, and the errors a caller gets.
"""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from model import compose, handlers, loading
from model.errors import AlreadyFullResolution
from model.handlers import LoadedModel, detect_role, handle
from model.serve import ModelServer
from model.upscale import Upscaler
from tests.conftest import b64, garment_mask, make_photo

STEPS = 2


@pytest.fixture(scope="module")
def upscaler(tiny_dir) -> Upscaler:
    return loading.load_upscale(str(tiny_dir / "upscale"), device="cpu")


@pytest.fixture(scope="module")
def loaded(upscaler, tiny_dir) -> LoadedModel:
    return LoadedModel("upscale", upscaler, str(tiny_dir / "upscale"))


def decode(text: str) -> Image.Image:
    img = Image.open(io.BytesIO(base64.b64decode(text)))
    img.load()
    return img


def body(**kw) -> dict:
    return {"image": b64(make_photo(24, 16)), "prompt": "red silk skirt", "seed": 5, "steps": STEPS, **kw}


# -- loading and role detection --------------------------------------------------------------------------------
def test_tiny_upscaler_loads_through_from_pretrained(upscaler, tiny_dir):
    assert type(upscaler.pipe).__name__ == "StableDiffusionUpscalePipeline"
    assert upscaler.factor == 4  # 3 VAE levels
    assert upscaler.max_noise_level == 350
    assert json.loads((tiny_dir / "upscale" / "model_index.json").read_text())["_class_name"] == \
        "StableDiffusionUpscalePipeline"
    assert detect_role(tiny_dir / "upscale") == "upscale"
    assert detect_role(tiny_dir / "inpaint") == "inpaint"  # any other diffusers pipeline stays inpainting


def test_missing_checkpoint_names_the_setting(tmp_path):
    with pytest.raises(loading.ModelUnavailable, match="RESTYLE_UPSCALE_MODEL"):
        loading.load_upscale(str(tmp_path / "nowhere"), device="cpu")


# -- the engine ------------------------------------------------------------------------------------------------
def test_output_is_four_times_the_input_and_a_seed_fixes_it(upscaler):
    low = make_photo(20, 16)
    a = upscaler(low, "red skirt", seed=7, steps=STEPS)
    b = upscaler(low, "red skirt", seed=7, steps=STEPS)
    c = upscaler(low, "red skirt", seed=8, steps=STEPS)
    assert a.image.size == (80, 64) and a.seed == 7
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert not np.array_equal(np.asarray(a.image), np.asarray(c.image))


def test_progress_is_reported_per_step(upscaler):
    seen = []
    upscaler(make_photo(16, 16), seed=0, steps=3, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 3), (2, 3), (3, 3)]


# -- geometry --------------------------------------------------------------------------------------------------
def test_plan_upscale_pads_the_mask_and_bounds_the_low_res_size():
    w, h = 1600, 2400
    mask = garment_mask(w, h)  # x 400..1200, y 1200..2100
    box, (lw, lh) = compose.plan_upscale(mask, (w, h), padding=32, feather=8)
    assert box == (368, 1168, 1232, 2132)
    assert (lw, lh) == (216, 240)  # the box / 4, in multiples of 8
    box2, (lw2, lh2) = compose.plan_upscale(mask, (w, h), padding=32, max_low_pixels=96 * 96)
    assert box2 == box and lw2 * lh2 <= 96 * 96 and lw2 % 8 == 0 and lh2 % 8 == 0
    assert abs(lw2 / lh2 - (box[2] - box[0]) / (box[3] - box[1])) < 0.1  # the box's aspect, roughly
    with pytest.raises(ValueError, match="empty mask"):
        compose.plan_upscale(np.zeros((h, w), bool), (w, h))
    with pytest.raises(ValueError, match="like the photo"):
        compose.plan_upscale(mask, (h, w))


def test_needs_upscale_compares_the_box_with_the_generation_area():
    assert compose.needs_upscale((0, 0, 1100, 1000), native=1024)
    assert not compose.needs_upscale((0, 0, 1000, 1000), native=1024)


# -- upscale_region on a studio-sized photo --------------------------------------------------------------------
def test_upscale_region_changes_only_the_garment_at_full_size(upscaler):
    w, h, feather = 1600, 2400, 8
    photo = make_photo(w, h, seed=3)
    mask = garment_mask(w, h)
    kw = {"feather": feather, "max_low_pixels": 40 * 48, "multiple": upscaler.multiple}
    out = compose.upscale_region(photo, mask, upscaler.upscale_fn("red silk skirt", seed=1, steps=STEPS), **kw)
    assert out.size == photo.size and out.mode == photo.mode
    src, got = np.asarray(photo), np.asarray(out)
    far = ndimage.distance_transform_edt(~mask) > feather
    assert np.array_equal(got[far], src[far])  # bit-identical away from the mask
    assert not np.array_equal(got[mask], src[mask])
    # the plain way: the same low-res region scaled up with LANCZOS, pasted the same way
    plain = compose.upscale_region(photo, mask, lambda low: low.resize((low.width * 4, low.height * 4),
                                                                       Image.LANCZOS), **kw)
    assert np.abs(got[mask].astype(int) - np.asarray(plain)[mask].astype(int)).mean() > 1.0


def test_upscale_region_refuses_a_region_already_at_full_resolution():
    photo, mask = make_photo(96, 128), garment_mask(96, 128)
    called = []
    with pytest.raises(AlreadyFullResolution) as err:
        compose.upscale_region(photo, mask, lambda low: called.append(low) or low, native=512)
    assert err.value.code == "already_full_resolution" and err.value.status == 422
    assert not called  # refused before any work


# -- the endpoint ----------------------------------------------------------------------------------------------
def test_handle_round_trip_and_seed(loaded):
    status, out, ctype = handle(loaded, json.dumps(body(format="webp", quality=90)), "application/json", None)
    assert status == 200 and ctype == "application/json"
    resp = json.loads(out)
    assert (resp["width"], resp["height"], resp["seed"], resp["format"]) == (96, 64, 5, "webp")
    assert decode(resp["image"]).size == (96, 64) and decode(resp["image"]).format == "WEBP"
    assert {"decode", "generate", "encode"} <= set(resp["timings_ms"])
    again = json.loads(handle(loaded, json.dumps(body(format="webp", quality=90)), "application/json", None)[1])
    assert again["image"] == resp["image"]
    random_seed = handlers.predict_upscale(body(seed=None), loaded.engine)
    assert 0 <= random_seed.seed < 2**31


@pytest.mark.parametrize("change, status, code", [
    ({"image": b64(make_photo(600, 600))}, 413, "image_too_large"),
    ({"image": b64(make_photo(2, 40))}, 400, "invalid_request"),
    ({"image": "not base64!"}, 400, "invalid_base64"),
    ({"image": base64.b64encode(b"not a picture").decode()}, 400, "invalid_image"),
    ({"noise_level": 351}, 400, "invalid_request"),
    ({"steps": 0}, 400, "invalid_request"),
    ({"format": "gif"}, 400, "invalid_request"),
    ({"mask": "aGk="}, 400, "invalid_request"),
])
def test_bad_input_is_a_4xx_json_error(loaded, change, status, code):
    got, out, _ = handle(loaded, json.dumps(body(**change)), "application/json", None)
    err = json.loads(out)["error"]
    assert (got, err["code"], err["retryable"]) == (status, code, False), err
    assert err["message"]


def test_a_gone_client_stops_the_upscale(loaded):
    status, out, _ = handle(loaded, json.dumps(body()), "application/json", None, should_stop=lambda: True)
    assert status == 499 and json.loads(out)["error"]["code"] == "client_gone"


def test_model_serve_serves_the_upscale_endpoint(tiny_dir):
    srv = ModelServer({"upscale": str(tiny_dir / "upscale")}, device="cpu")
    srv.load()
    assert srv.ready.is_set(), srv.load_error
    status, out, _ = srv.route("POST", "/endpoints/restyle-upscale/invocations",
                               {"content-type": "application/json"}, json.dumps(body()).encode())
    assert status == 200 and json.loads(out)["width"] == 96
    status, out, _ = srv.route("POST", "/invocations", {"content-type": "application/json"},
                               json.dumps(body(noise_level=-1)).encode())
    assert status == 400 and json.loads(out)["error"]["code"] == "invalid_request"
