"""The CUDA fast path on tiny checkpoints: only where a GPU exists (never in CI; run them in a GPU session)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import garment_mask, make_photo

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_fp16_inpaint_on_cuda_matches_the_cpu_geometry(tiny_dir):
    from model.loading import load_inpaint

    gpu = load_inpaint(str(tiny_dir / "inpaint"), device="cuda")
    assert gpu.pipe.unet.dtype == torch.float16
    photo, mask = make_photo(256, 384), garment_mask(256, 384)
    out = gpu(photo, mask, "a red skirt", seeds=[1, 2, 3, 4], steps=2)
    assert len(out.candidates) + len(out.rejected) == 4
    for c in out.candidates:
        arr, orig = np.asarray(c.image), np.asarray(photo)
        far = np.ones_like(mask)
        x0, y0, x1, y1 = out.crop_box
        far[y0:y1, x0:x1] = False
        assert (arr[far] == orig[far]).all()


def test_fp16_segmenter_on_cuda_agrees_with_fp32_cpu(tiny_dir):
    from model.loading import load_clipseg

    photo = make_photo(256, 384)
    cpu = load_clipseg(str(tiny_dir / "clipseg"), device="cpu")(photo, ["skirt"]).garments[0].mask
    gpu = load_clipseg(str(tiny_dir / "clipseg"), device="cuda")(photo, ["skirt"]).garments[0].mask
    iou = (cpu & gpu).sum() / max(1, (cpu | gpu).sum())
    assert iou > 0.9
