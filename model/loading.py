"""Loading real or tiny checkpoints by Hub id or local path — the only place weights are read.

Everything else receives loaded objects.  On CUDA the fast path is on by default: fp16 (or ``RESTYLE_DTYPE``),
SDPA attention (diffusers' default processor), channels_last UNet/VAE, optional ``torch.compile`` with the
warm-up done here so no request pays for it.
"""

from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger(__name__)

DEFAULT_CLIPSEG = "CIDAS/clipseg-rd64-refined"
DEFAULT_INPAINT = "stable-diffusion-v1-5/stable-diffusion-inpainting"
DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
          "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


class ModelUnavailable(RuntimeError):
    """Weights could not be found locally nor downloaded; the message says which setting to change."""


def pick_device(device: str | None = None) -> torch.device:
    name = device or os.environ.get("RESTYLE_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def pick_dtype(device: torch.device, dtype: str | torch.dtype | None = None) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    name = dtype or os.environ.get("RESTYLE_DTYPE")
    if name:
        if name not in DTYPES:
            raise ValueError(f"RESTYLE_DTYPE must be one of {sorted(DTYPES)}, got {name!r}")
        return DTYPES[name]
    return torch.float16 if device.type == "cuda" else torch.float32


def _unavailable(what: str, ref: str, setting: str, exc: Exception) -> ModelUnavailable:
    return ModelUnavailable(
        f"could not load the {what} model {ref!r}: it is neither a local folder nor in the Hugging Face cache, "
        f"and it could not be downloaded ({type(exc).__name__}). Point {setting} at a local checkpoint folder, "
        f"or run with --tiny to try the whole flow on tiny random checkpoints.")


def load_clipseg(ref: str = DEFAULT_CLIPSEG, *, device: str | None = None, dtype=None):
    """``CLIPSegForImageSegmentation`` + processor → ``model.segment.Segmenter``."""
    from transformers import AutoProcessor, CLIPSegForImageSegmentation

    from model.segment import Segmenter

    dev = pick_device(device)
    dt = pick_dtype(dev, dtype)
    try:
        processor = AutoProcessor.from_pretrained(ref)
        model = CLIPSegForImageSegmentation.from_pretrained(ref, dtype=dt)
    except OSError as exc:
        raise _unavailable("segmentation", ref, "RESTYLE_CLIPSEG_MODEL / --clipseg", exc) from exc
    model.to(dev).eval()
    return Segmenter(model, processor)


def load_inpaint(ref: str = DEFAULT_INPAINT, *, device: str | None = None, dtype=None, lora: str | None = None,
                 lora_scale: float = 1.0, compile: bool | None = None):
    """Any diffusers inpainting checkpoint via ``AutoPipelineForInpainting`` → ``model.inpaint.Inpainter``."""
    from diffusers import AutoPipelineForInpainting

    from model.inpaint import Inpainter

    dev = pick_device(device)
    dt = pick_dtype(dev, dtype)
    try:
        pipe = AutoPipelineForInpainting.from_pretrained(ref, dtype=dt)
    except (OSError, ValueError) as exc:
        raise _unavailable("inpainting", ref, "RESTYLE_INPAINT_MODEL / --inpaint", exc) from exc
    if getattr(pipe, "safety_checker", None) is not None:
        log.info("safety checker active: flagged candidates are reported as rejected")
    if lora:
        pipe.load_lora_weights(lora)
        pipe.fuse_lora(lora_scale=lora_scale)
    pipe.to(dev)
    if dev.type == "cuda":
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    inpainter = Inpainter(pipe)
    if compile if compile is not None else os.environ.get("RESTYLE_COMPILE") == "1":
        pipe.unet = torch.compile(pipe.unet, mode="max-autotune-no-cudagraphs")
        warm_up(inpainter)
    return inpainter


def warm_up(inpainter, num_images: int = 4) -> None:
    """One small generation at the native size so compilation happens at load time, not on a request."""
    import numpy as np
    from PIL import Image

    side = inpainter.native
    image = Image.new("RGB", (side, side), (128, 128, 128))
    mask = np.zeros((side, side), dtype=bool)
    mask[side // 4: 3 * side // 4, side // 4: 3 * side // 4] = True
    inpainter(image, mask, "warm-up", seeds=list(range(num_images)), steps=2, padding=0, feather=0)
