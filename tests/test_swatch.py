"""Swatches and prints (IP-Adapter reference images) and the inside-the-mask paste edge (issue #14, items 4-5).

The tiny checkpoint carries a tiny random IP-Adapter (``inpaint/ip_adapter``), loaded by diffusers' own
``load_ip_adapter``; the pixels mean nothing, but which pixels change and which stay bit-identical do.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from model import compose
from model.handlers import LoadedModel, handle
from model.images import MAX_PIXELS
from model.inpaint import NoReferenceSupport
from model.loading import DEFAULT_IP_ADAPTER, ip_adapter_source, load_inpaint
from tests.conftest import b64, garment_mask, make_photo, to_bytes

W, H = 64, 96
RUN = {"seeds": [3], "steps": 2}


@pytest.fixture(scope="module")
def swatch_inpainter(tiny_dir):
    """The tiny pipeline with its IP-Adapter (picked up from ``inpaint/ip_adapter``)."""
    return load_inpaint(str(tiny_dir / "inpaint"), device="cpu")


@pytest.fixture(scope="module")
def plain_inpainter(tiny_dir):
    """The same weights without an IP-Adapter (``ip_adapter="none"``)."""
    return load_inpaint(str(tiny_dir / "inpaint"), device="cpu", ip_adapter="none")


def swatch(seed: int) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 256, (40, 56, 3), dtype=np.uint8))


def pixels(engine, **kw) -> np.ndarray:
    res = engine(make_photo(W, H), garment_mask(W, H), "a floral dress", **RUN, **kw)
    return np.asarray(res.candidates[0].image).astype(np.int16)


# -- loading -------------------------------------------------------------------------------------------------
def test_tiny_ip_adapter_loads_through_diffusers(tiny_dir, swatch_inpainter, plain_inpainter):
    from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0
    from transformers import CLIPVisionModelWithProjection

    folder = tiny_dir / "inpaint" / "ip_adapter"
    assert ip_adapter_source(str(tiny_dir / "inpaint")) == ((str(folder), "", "ip-adapter.safetensors"), True)
    pipe = swatch_inpainter.pipe
    assert swatch_inpainter.references and not plain_inpainter.references
    assert isinstance(pipe.image_encoder, CLIPVisionModelWithProjection)
    kinds = {type(p) for name, p in pipe.unet.attn_processors.items() if name.endswith("attn2.processor")}
    assert kinds == {IPAdapterAttnProcessor2_0}
    assert plain_inpainter.pipe.unet.encoder_hid_proj is None


def test_ip_adapter_setting(tmp_path, monkeypatch):
    monkeypatch.delenv("RESTYLE_IP_ADAPTER", raising=False)
    assert ip_adapter_source(str(tmp_path)) == (DEFAULT_IP_ADAPTER, False)  # a real model: the SD 1.5 default
    assert ip_adapter_source(str(tmp_path), "none") == (None, True)
    assert ip_adapter_source("x", "me/ip") == (("me/ip", "models", "ip-adapter_sd15.safetensors"), True)
    assert ip_adapter_source("x", "me/ip:sdxl_models:a.bin") == (("me/ip", "sdxl_models", "a.bin"), True)
    monkeypatch.setenv("RESTYLE_IP_ADAPTER", "NONE")
    assert ip_adapter_source(str(tmp_path)) == (None, True)
    with pytest.raises(ValueError, match="REF\\[:subfolder"):
        ip_adapter_source("x", "a:b:c:d")
    (tmp_path / "a.safetensors").write_bytes(b"")
    (tmp_path / "b.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="exactly one IP-Adapter weights file"):
        ip_adapter_source("x", str(tmp_path))


def test_an_explicit_adapter_that_cannot_load_says_which_setting(tiny_dir, tmp_path):
    from model.loading import ModelUnavailable

    with pytest.raises(ModelUnavailable, match="RESTYLE_IP_ADAPTER"):
        load_inpaint(str(tiny_dir / "inpaint"), device="cpu", ip_adapter=str(tmp_path / "missing"))


# -- reference images ------------------------------------------------------------------------------------------
def test_reference_steers_the_garment_and_none_is_the_plain_pipeline(swatch_inpainter, plain_inpainter):
    plain = pixels(plain_inpainter)
    without = pixels(swatch_inpainter)
    first, second = pixels(swatch_inpainter, reference=swatch(1)), pixels(swatch_inpainter, reference=swatch(2))
    weaker = pixels(swatch_inpainter, reference=swatch(1), reference_scale=0.3)
    zero = pixels(swatch_inpainter, reference=swatch(1), reference_scale=0.0)
    assert np.array_equal(without, plain)  # the adapter loaded but no reference: the plain pipeline's pixels
    assert np.array_equal(zero, without)  # scale 0 ignores the reference
    mask = garment_mask(W, H)
    far = ndimage.distance_transform_edt(~mask) > 8
    for with_ref in (first, second, weaker):
        assert np.abs(with_ref - without)[mask].max() > 5  # the garment changes ...
        assert np.array_equal(with_ref[far], without[far])  # ... and only the garment
    assert np.abs(first - second)[mask].max() > 5 and np.abs(first - weaker)[mask].max() > 5
    assert np.array_equal(pixels(swatch_inpainter, reference=swatch(1)), first)  # cached embeddings, same pixels


def test_a_reference_needs_an_ip_adapter(plain_inpainter):
    with pytest.raises(NoReferenceSupport, match="RESTYLE_IP_ADAPTER") as info:
        pixels(plain_inpainter, reference=swatch(1))
    assert info.value.code == "no_reference_support" and info.value.status == 400


def body(**kw) -> bytes:
    req = {"image": b64(make_photo(W, H)), "mask": b64(garment_mask(W, H)), "prompt": "a floral dress",
           "seeds": [3], "steps": 2, **kw}
    return json.dumps(req).encode()


def answer(engine, **kw) -> tuple[int, dict]:
    status, out, ctype = handle(LoadedModel("inpaint", engine, "tiny"), body(**kw), "application/json", None)
    assert ctype == "application/json"
    return status, json.loads(out)


def test_reference_through_the_handlers(swatch_inpainter, plain_inpainter):
    status, plain = answer(swatch_inpainter)
    status_ref, with_ref = answer(swatch_inpainter, reference=b64(swatch(1)), reference_scale=0.8)
    assert (status, status_ref) == (200, 200) and with_ref["images"] != plain["images"]
    status, err = answer(plain_inpainter, reference=b64(swatch(1)))
    assert (status, err["error"]["code"]) == (400, "no_reference_support")


@pytest.mark.parametrize(("kw", "status", "code", "fragment"), [
    ({"reference": b64(b"not a picture at all")}, 400, "invalid_image", "`reference`"),
    ({"reference": "%%%"}, 400, "invalid_base64", "`reference`"),
    ({"reference": b64(to_bytes(Image.new("1", (6001, MAX_PIXELS // 6001 + 1))))}, 413, "image_too_large",
     "`reference`"),
    ({"reference_scale": 1.5}, 400, "invalid_request", "`reference_scale`"),
    ({"edge": "middle"}, 400, "invalid_request", "`edge`"),
], ids=["not-an-image", "not-base64", "too-large", "scale-above-1", "unknown-edge"])
def test_bad_reference_is_a_4xx(swatch_inpainter, kw, status, code, fragment):
    got, out = answer(swatch_inpainter, **kw)
    assert (got, out["error"]["code"]) == (status, code), out
    assert fragment in out["error"]["message"] and out["error"]["retryable"] is False


# -- edge="inside": the person stays bit-identical -------------------------------------------------------------
def person(w: int, h: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return ((xx - w * 0.45) / (w * 0.22)) ** 2 + ((yy - h * 0.55) / (h * 0.4)) ** 2 <= 1.0


@pytest.mark.parametrize("feather", [0, 1, 6, 12])
def test_feather_alpha_inside(feather):
    background = ~person(90, 70)
    alpha = compose.feather_alpha(background, feather, inside=True)
    assert (alpha[~background] == 0.0).all()  # exactly zero outside the mask
    depth = ndimage.distance_transform_edt(background)
    assert (alpha[depth >= max(feather, 1)] == 1.0).all()  # deep inside: fully generated
    if feather:
        ramp = background & (depth < feather)
        np.testing.assert_allclose(alpha[ramp], depth[ramp] / feather, atol=1e-6)
    assert (compose.feather_alpha(np.ones((5, 7), bool), feather, inside=True) == 1.0).all()


def test_paste_inside_keeps_every_pixel_outside_the_mask():
    w, h, feather = 1200, 1600, 8
    photo = make_photo(w, h, seed=4)
    background = ~person(w, h)
    box = (0, 0, w, h)
    generated = Image.fromarray(np.random.RandomState(0).randint(0, 256, (512, 384, 3), dtype=np.uint8))
    src = np.asarray(photo)
    inside = np.asarray(compose.paste(photo, generated, background, box, feather, inside=True))
    assert np.array_equal(inside[~background], src[~background])
    deep = ndimage.distance_transform_edt(background) >= feather
    assert np.array_equal(inside[deep], np.asarray(generated.resize((w, h), Image.LANCZOS))[deep])
    outside = np.asarray(compose.paste(photo, generated, background, box, feather))  # the default band
    assert not np.array_equal(outside[~background], src[~background])  # ... would have touched the person


def test_inpainter_edge_inside_repaints_the_background_only(swatch_inpainter):
    w, h, feather = 768, 1024, 8
    photo = make_photo(w, h, seed=5)
    background = ~person(w, h)
    src = np.asarray(photo)
    for crop in (True, False):
        res = swatch_inpainter(photo, background, "plain white background", seeds=[1], steps=2, feather=feather,
                               edge="inside", crop=crop)
        assert res.crop_box == (0, 0, w, h)  # a background reaches the borders: the whole photo is the crop
        got = np.asarray(res.candidates[0].image)
        assert np.array_equal(got[~background], src[~background])  # the person: bit-identical
        deep = ndimage.distance_transform_edt(background) >= feather
        assert (got != src).any(axis=-1)[deep].mean() > 0.95
    with pytest.raises(ValueError, match="`edge`"):
        swatch_inpainter(photo, background, "white", seeds=[1], steps=2, edge="around")
