"""model.masks and model.compose: refinement, crop planning, feathering and pasting — pure numpy, no model."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from model import compose
from model import masks as M
from tests.conftest import make_photo


def disc(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return xx * xx + yy * yy <= radius * radius


def blobs(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.RandomState(seed)
    return ndimage.gaussian_filter(rng.rand(h, w), 3) > 0.53


# -- masks ---------------------------------------------------------------------------------------------------
def test_bbox_and_coverage():
    m = np.zeros((10, 20), bool)
    assert M.bbox(m) is None
    assert M.coverage(m) == 0.0
    m[2:5, 3:9] = True
    assert M.bbox(m) == (3, 2, 9, 5)  # x1/y1 exclusive
    assert M.coverage(m) == pytest.approx(18 / 200)
    assert M.bbox(np.ones((4, 6), bool)) == (0, 0, 6, 4)


def test_refine_fills_holes():
    prob = np.zeros((40, 40), np.float32)
    prob[5:35, 5:35] = 0.9
    prob[15:25, 15:25] = 0.1  # a belt buckle
    mask = M.refine(prob, 0.5)
    assert mask[5:35, 5:35].all()
    assert mask.sum() == 30 * 30


def test_refine_drops_specks_but_keeps_the_largest():
    prob = np.zeros((100, 100), np.float32)
    prob[10:60, 10:60] = 0.9  # 2500 px: the garment
    prob[80:83, 80:83] = 0.9  # 9 px: a speck
    prob[70:78, 20:28] = 0.9  # 64 px: kept at min_area 0.005 (50 px)
    mask = M.refine(prob, 0.5, min_area=0.005)
    assert mask[10:60, 10:60].all() and mask[70:78, 20:28].all()
    assert not mask[80:83, 80:83].any()
    # even when every component is below min_area, the largest one survives
    tiny = M.refine(prob, 0.5, min_area=0.5)
    assert tiny.sum() == 2500


@pytest.mark.parametrize("radius", [1, 3, 8, 20])
def test_grow_is_an_exact_disc_dilation(radius):
    mask = blobs(60, 80, seed=radius)
    mask[0, 0] = mask[-1, -1] = True  # touching the borders
    expected = ndimage.binary_dilation(mask, structure=disc(radius))
    assert (M.grow(mask, radius) == expected).all()
    assert (M.grow(mask, 0) == mask).all()
    assert not M.grow(np.zeros((5, 5), bool), 3).any()


def test_refine_dilation_matches_grow():
    prob = np.zeros((60, 60), np.float32)
    prob[20:40, 25:35] = 0.8
    mask = M.refine(prob, 0.5, dilate=6)
    assert (mask == ndimage.binary_dilation(prob > 0.5, structure=disc(6))).all()


def test_refine_respects_exclusion_after_dilation():
    prob = np.zeros((60, 60), np.float32)
    prob[10:50, 10:50] = 0.9
    exclude = np.zeros((60, 60), bool)
    exclude[:25, :] = True  # a face above the garment
    exclude[30:35, 30:35] = True  # a hand inside it
    mask = M.refine(prob, 0.5, exclude=exclude, dilate=10)
    assert not (mask & exclude).any()
    assert mask[40:58, 10:50].all()  # grown where nothing is protected
    assert mask.sum() > 0


# -- compose: crop planning ------------------------------------------------------------------------------------
def test_crop_box_pads_shifts_and_clamps():
    assert compose.crop_box((10, 20, 30, 40), (100, 100), 5) == (5, 15, 35, 45)
    # at the left/top edge the box is shifted inside, keeping its size
    assert compose.crop_box((0, 0, 10, 10), (100, 100), 5) == (0, 0, 20, 20)
    # at the right/bottom edge too
    assert compose.crop_box((90, 95, 100, 100), (100, 100), 5) == (80, 85, 100, 100)
    # bigger than the image: the whole image
    assert compose.crop_box((0, 0, 100, 50), (100, 50), 30) == (0, 0, 100, 50)
    # widened to the aspect ratio (w/h) around the box
    assert compose.crop_box((40, 10, 60, 90), (100, 100), 0, aspect=1.0) == (10, 10, 90, 90)
    assert compose.crop_box((10, 40, 90, 60), (100, 100), 0, aspect=1.0) == (10, 10, 90, 90)


def test_crop_box_contains_the_padded_box_inside_the_image():
    rng = np.random.RandomState(0)
    for _ in range(500):
        w, h = rng.randint(8, 300, size=2)
        x0, x1 = sorted(rng.randint(0, w + 1, size=2))
        y0, y1 = sorted(rng.randint(0, h + 1, size=2))
        x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
        if x1 > w or y1 > h:
            continue
        pad = int(rng.randint(0, 60))
        aspect = None if rng.rand() < 0.3 else float(rng.uniform(0.3, 3.0))
        bx0, by0, bx1, by1 = compose.crop_box((x0, y0, x1, y1), (w, h), pad, aspect=aspect)
        assert 0 <= bx0 < bx1 <= w and 0 <= by0 < by1 <= h
        assert bx0 <= max(0, x0 - pad) and by0 <= max(0, y0 - pad)
        assert bx1 >= min(w, x1 + pad) and by1 >= min(h, y1 + pad)


def test_generation_size_is_snapped():
    for box in [(0, 0, 100, 100), (0, 0, 1000, 100), (0, 0, 30, 900), (5, 7, 517, 911)]:
        gw, gh = compose.generation_size(box, 512, 64)
        assert gw % 64 == 0 and gh % 64 == 0
        assert 256 <= gw <= 1024 and 256 <= gh <= 1024
    assert compose.generation_size((0, 0, 512, 512), 512, 8) == (512, 512)


@pytest.mark.parametrize("padding, feather", [(32, 8), (0, 8), (4, 0), (100, 30)])
def test_plan_crop(padding, feather):
    mask = np.zeros((300, 200), bool)
    mask[120:200, 60:150] = True
    box, (gw, gh) = compose.plan_crop(mask, 64, 8, padding, feather)
    x0, y0, x1, y1 = box
    pad = max(padding, feather + 2)  # the whole feathered edge is inside the crop
    assert 0 <= x0 <= max(0, 60 - pad) and 0 <= y0 <= max(0, 120 - pad)
    assert min(200, 150 + pad) <= x1 <= 200 and min(300, 200 + pad) <= y1 <= 300
    assert gw % 8 == 0 and gh % 8 == 0
    # the crop's aspect follows the generation size (up to rounding)
    assert abs((x1 - x0) / (y1 - y0) - gw / gh) < 0.1
    assert compose.plan_crop(mask, 64, 8, padding, feather, whole=True)[0] == (0, 0, 200, 300)


def test_plan_crop_rejects_an_empty_mask():
    with pytest.raises(ValueError, match="empty mask"):
        compose.plan_crop(np.zeros((10, 10), bool), 64, 8, 4, 2)


# -- compose: feathering and pasting ---------------------------------------------------------------------------
@pytest.mark.parametrize("feather", [1, 4, 12])
def test_feather_alpha(feather):
    mask = blobs(70, 90, seed=feather)
    alpha = compose.feather_alpha(mask, feather)
    dist = ndimage.distance_transform_edt(~mask)
    assert alpha.dtype == np.float32 and alpha.shape == mask.shape
    assert (alpha[mask] == 1.0).all()
    assert (alpha[dist >= feather] == 0.0).all()  # exactly zero, not 1e-8
    ramp = (dist > 0) & (dist < feather)
    assert ((alpha[ramp] > 0) & (alpha[ramp] < 1)).all()
    np.testing.assert_allclose(alpha[ramp], 1 - dist[ramp] / feather, atol=1e-6)


def test_feather_zero_is_the_mask():
    mask = blobs(30, 30, seed=1)
    assert (compose.feather_alpha(mask, 0) == mask.astype(np.float32)).all()


@pytest.mark.parametrize("feather", [0, 6])
def test_paste_keeps_far_pixels_bit_identical(feather):
    photo = make_photo(120, 90, seed=3)
    mask = np.zeros((90, 120), bool)
    mask[30:60, 40:90] = True
    box = (20, 10, 110, 80)
    generated = Image.fromarray(np.random.RandomState(0).randint(0, 256, (48, 64, 3), dtype=np.uint8))
    out = compose.paste(photo, generated, mask, box, feather)
    assert out.size == photo.size and out.mode == "RGB"
    a, b = np.asarray(photo), np.asarray(out)
    far = ndimage.distance_transform_edt(~mask) >= max(feather, 1)
    assert (a[far] == b[far]).all()
    resized = np.asarray(generated.resize((90, 70), Image.LANCZOS))
    assert (b[30:60, 40:90] == resized[20:50, 20:70]).all()  # inside the mask: the generated pixels


def test_overlay_tints_only_the_mask():
    photo = make_photo(40, 30)
    mask = np.zeros((30, 40), bool)
    mask[10:20, 10:20] = True
    out = np.asarray(compose.overlay(photo, mask))
    assert (out[~mask] == np.asarray(photo)[~mask]).all()
    assert (out[mask] != np.asarray(photo)[mask]).any()


def test_paste_all_on_the_pool_equals_one_by_one(monkeypatch):
    """Candidates are pasted side by side on model.parallel's pool: the same bytes, in order, as serially."""
    from model import parallel

    photo = make_photo(200, 300)
    mask = np.zeros((300, 200), dtype=bool)
    mask[120:260, 50:150] = True
    box = (30, 100, 170, 280)
    rng = np.random.RandomState(3)
    gens = [Image.fromarray(rng.randint(0, 256, (96, 80, 3), dtype=np.uint8)) for _ in range(5)]
    pooled = compose.paste_all(photo, gens, mask, box, feather=6)
    monkeypatch.setattr(parallel, "workers", lambda: 1)
    serial = compose.paste_all(photo, gens, mask, box, feather=6)
    assert len(pooled) == 5
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(pooled, serial, strict=True))
    assert not np.array_equal(np.asarray(pooled[0]), np.asarray(pooled[1]))  # each its own candidate


@pytest.mark.timeout(60)  # without the guard this deadlocks: fail in a minute, not at the suite's 600 s
def test_map_all_runs_nested_calls_serially():
    """A pooled task that itself calls map_all must not wait on the pool it occupies."""
    from model import parallel

    out = parallel.map_all(lambda i: parallel.map_all(lambda j: i * 10 + j, range(3)), range(12))
    assert out == [[i * 10 + j for j in range(3)] for i in range(12)]


def test_mask_resize_nearest_and_cover():
    mask = np.zeros((30, 20), dtype=bool)
    mask[10:11, 7:8] = True  # one pixel
    assert M.resize(mask, (20, 30)) is mask
    big = M.resize(mask, (40, 60))
    assert big.shape == (60, 40) and big.sum() == 4 and big[20:22, 14:16].all()
    small = M.resize(mask, (7, 10), cover=True)  # a 1-pixel garment survives scaling down by ~3
    assert small.shape == (10, 7) and small.sum() >= 1
    shifted = np.zeros((30, 20), dtype=bool)
    shifted[11:12, 8:9] = True  # a pixel no nearest-neighbour sample lands on
    assert not M.resize(shifted, (7, 10)).any() and M.resize(shifted, (7, 10), cover=True).any()
