"""The CUDA fast path on tiny checkpoints: only where a GPU exists (never in CI; run them in a GPU session)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import garment_mask, make_photo
from tests.parity import assert_matches_reference, parity_inputs, run_parity_case

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_fp16_inpaint_on_cuda_matches_the_fp32_cpu_run(tiny_dir):
    """Same photo, mask, prompt and seeds on the CPU (fp32) and on CUDA (fp16): the same crop, every candidate
    accepted, far pixels untouched, and each candidate close to the CPU's with its seed (tests/parity.py)."""
    from model.loading import load_inpaint

    cpu = load_inpaint(str(tiny_dir / "inpaint"), device="cpu")
    gpu = load_inpaint(str(tiny_dir / "inpaint"), device="cuda")
    assert gpu.pipe.unet.dtype == torch.float16 and gpu.device.type == "cuda"
    assert_matches_reference(run_parity_case(gpu), run_parity_case(cpu), *parity_inputs())


def test_fp16_segmenter_on_cuda_agrees_with_fp32_cpu(tiny_dir):
    from model.loading import load_clipseg

    photo = make_photo(256, 384)
    cpu = load_clipseg(str(tiny_dir / "clipseg"), device="cpu")(photo, ["skirt"]).garments[0].mask
    gpu = load_clipseg(str(tiny_dir / "clipseg"), device="cuda")(photo, ["skirt"]).garments[0].mask
    assert 0.05 < cpu.mean() < 0.9  # the CPU found the garment, not nothing or everything
    iou = (cpu & gpu).sum() / max(1, (cpu | gpu).sum())
    assert iou > 0.9


def test_peak_memory_not_above_plain_diffusers(tiny_dir):
    """Crop-to-mask and VAE slicing keep the call's peak CUDA memory (above the resident weights) at or below the
    plain pipeline's on the same photo, mask, prompt and candidate count."""
    from diffusers import AutoPipelineForInpainting
    from PIL import Image

    from model.loading import load_inpaint

    ours = load_inpaint(str(tiny_dir / "inpaint"), device="cuda")
    plain = AutoPipelineForInpainting.from_pretrained(str(tiny_dir / "inpaint"), dtype=torch.float16).to("cuda")
    plain.set_progress_bar_config(disable=True)
    w, h = 512, 768
    photo, mask = make_photo(w, h), garment_mask(w, h)

    def peak(call) -> int:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        call()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before

    mask_img = Image.fromarray(mask.astype(np.uint8) * 255)
    plain_peak = peak(lambda: plain(prompt="a red skirt", image=photo, mask_image=mask_img, width=w, height=h,
                                    num_inference_steps=2, num_images_per_prompt=4))
    results = []
    ours_peak = peak(lambda: results.append(ours(photo, mask, "a red skirt", seeds=[1, 2, 3, 4], steps=2)))
    assert [c.seed for c in results[0].candidates] == [1, 2, 3, 4]  # the same work: four pictures, none rejected
    assert ours_peak <= plain_peak, (ours_peak, plain_peak)
