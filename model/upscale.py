"""The garment region brought to the photo's own resolution by a diffusion upscaler (``StableDiffusionUpscalePipeline``).

The garment is generated at about the model's native size (``Inpainter``: at most native² pixels) and scaled up into
its crop box, so on a 4000-pixel studio photo it is softer than the rest.  ``Upscaler`` receives a loaded diffusers
x4 upscaler (``stabilityai/stable-diffusion-x4-upscaler`` or any checkpoint of that pipeline) and turns a low-res
region into one ``factor`` times larger; ``model.compose.upscale_region`` plans the region, feeds it and pastes the
answer back (pixels away from the mask bit-identical).  ``__call__`` reads top to bottom:

1. check inputs  2. one CPU generator for the seed  3. one pipeline call (progress per step)  4. the answer at
exactly ``factor`` times the input's size.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from PIL import Image

from model.errors import ImageTooLarge
from model.images import from_unit_float
from model.inpaint import InvalidInput, Progress
from model.schemas import MAX_UPSCALE_PIXELS


@dataclass
class UpscaleResult:
    image: Image.Image  # ``factor`` x the input's width and height
    seed: int
    timings_ms: dict[str, float] = field(default_factory=dict)


class Upscaler:
    def __init__(self, pipe, *, max_pixels: int = MAX_UPSCALE_PIXELS) -> None:
        self.pipe = pipe
        pipe.set_progress_bar_config(disable=True)
        #: output side / input side (the VAE decodes latents at the input's size to ``factor`` x that)
        self.factor = int(pipe.vae_scale_factor)
        #: input sides are best multiples of this (the UNet downsamples the low-res latents by it)
        self.multiple = 2 ** (len(pipe.unet.config.block_out_channels) - 1)
        self.max_noise_level = int(pipe.config.max_noise_level)
        self.max_pixels = max_pixels
        self._lock = threading.Lock()  # a pipeline holds per-call state: one call at a time

    @property
    def device(self) -> torch.device:
        return self.pipe.unet.device

    # 1. ------------------------------------------------------------------------------------------------------
    def check_inputs(self, image: Image.Image, steps: int, guidance_scale: float, noise_level: int) -> None:
        w, h = image.size
        if min(w, h) < self.multiple:
            raise InvalidInput(f"`image` must be at least {self.multiple} pixels on each side, got {w}x{h}")
        if w * h > self.max_pixels:
            raise ImageTooLarge(f"`image` is {w}x{h} = {w * h:,} pixels; the upscaler takes at most "
                                f"{self.max_pixels:,} (its answer is {self.factor}x each side): send a smaller "
                                "low-res region (model.compose.plan_upscale sizes it)")
        if steps < 1:
            raise InvalidInput(f"`steps` must be >= 1, got {steps}")
        if guidance_scale < 0:
            raise InvalidInput(f"`guidance_scale` must be >= 0, got {guidance_scale}")
        if not 0 <= noise_level <= self.max_noise_level:
            raise InvalidInput(f"`noise_level` must be in [0, {self.max_noise_level}], got {noise_level}")

    def __call__(
        self,
        image: Image.Image,
        prompt: str = "",
        negative_prompt: str = "",
        *,
        seed: int,
        steps: int = 20,
        guidance_scale: float = 9.0,
        noise_level: int = 20,
        progress: Progress | None = None,
    ) -> UpscaleResult:
        """``image`` (the low-res region) → ``factor`` times its width and height, guided by ``prompt``."""
        t0 = time.perf_counter()
        # 1. Check inputs
        self.check_inputs(image, steps, guidance_scale, noise_level)
        image = image.convert("RGB")
        target = (image.width * self.factor, image.height * self.factor)

        def on_step(step: int, t, latents) -> None:
            if progress is not None:
                progress(min(step + 1, steps), steps)

        with self._lock:
            # 2. One generator, on the CPU so a seed means the same noise on any device
            generator = torch.Generator("cpu").manual_seed(int(seed))
            t1 = time.perf_counter()
            # 3. One pipeline call: noise the low-res image to ``noise_level``, denoise ``steps`` times, decode
            out = self.pipe(prompt=prompt, image=image, negative_prompt=negative_prompt or None,
                            num_inference_steps=steps, guidance_scale=guidance_scale, noise_level=noise_level,
                            generator=generator, output_type="np", callback=on_step, callback_steps=1)
        t2 = time.perf_counter()
        # 4. Exactly ``factor`` x the input (diffusers rounds odd sizes down to its VAE's multiple first)
        high = from_unit_float(out.images[0])
        if high.size != target:
            high = high.resize(target, Image.LANCZOS)
        t3 = time.perf_counter()
        return UpscaleResult(image=high, seed=int(seed), timings_ms={
            "prepare": (t1 - t0) * 1e3, "generate": (t2 - t1) * 1e3, "finish": (t3 - t2) * 1e3})

    def upscale_fn(self, prompt: str = "", negative_prompt: str = "", **kwargs) -> Callable[[Image.Image], Image.Image]:
        """``low -> high`` for ``model.compose.upscale_region`` (``kwargs``: ``seed``, ``steps``, … as ``__call__``)."""
        return lambda low: self(low, prompt, negative_prompt, **kwargs).image
