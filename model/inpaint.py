"""N inpainting candidates for one garment, generated on a crop around the mask and pasted back.

``Inpainter`` receives a loaded diffusers inpainting pipeline (SD 1.5, SD 2 or SDXL inpainting — whatever
``AutoPipelineForInpainting`` returns) and never downloads anything.  ``__call__`` reads top to bottom:

1. check inputs  2. plan the crop  3. crop and resize  4. pick the look, encode the prompt and the reference image
(both cached)  5. one generator per seed  6. one batched pipeline call (candidates and CFG in one batch)  7. reject
NaN/black/safety-checker outputs  8. paste each candidate back with a feathered edge (``edge``: the band outside the
mask, or inside it so every pixel outside the mask stays the original's).

Swatches and prints: when ``load_inpaint`` loaded an IP-Adapter (``references`` is True), a ``reference`` image is a
visual prompt weighted by ``reference_scale`` (0: ignored).  Without one the adapter runs at scale 0, which diffusers
skips: the pictures are the plain pipeline's.

Brand looks are LoRA adapters loaded by ``model.loading.load_inpaint``: one is fused into the weights (``looks``
has one name, ``switchable`` is False); several stay separate and each call activates the one it names.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from model import compose
from model.errors import RequestError
from model.images import from_unit_float
from model.masks import BBox
from model.schemas import DEFAULT_LOOK, EDGES, NO_LOOK, min_steps

#: Request name → diffusers scheduler class (built from the checkpoint's own scheduler config).
SCHEDULER_CLASSES = {
    "ddim": "DDIMScheduler",
    "pndm": "PNDMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "unipc": "UniPCMultistepScheduler",
    "lms": "LMSDiscreteScheduler",
}
#: A candidate whose brightest pixel is below this (0..1) is "black" (fp16 VAE overflow or a safety-checker hit).
BLACK_LEVEL = 2.0 / 255.0

Progress = Callable[[int, int], None]


class InvalidInput(RequestError):
    """``check_inputs``' verdict: a ``ValueError`` (and a 400 ``RequestError`` for the handlers)."""

    code = "invalid_request"


class UnknownLook(RequestError):
    code = "unknown_look"


class NoReferenceSupport(RequestError):
    code = "no_reference_support"


def has_ip_adapter(pipe) -> bool:
    """Whether diffusers' ``load_ip_adapter`` ran on this pipeline (its UNet projects image embeddings)."""
    unet = pipe.unet
    return getattr(unet, "encoder_hid_proj", None) is not None and \
        getattr(unet.config, "encoder_hid_dim_type", None) == "ip_image_proj"


class _MeanPosterior:
    """A VAE posterior whose ``sample`` is its mean, so encoding the photo draws no random numbers."""

    def __init__(self, dist) -> None:
        self._dist = dist

    def sample(self, generator=None):
        return self._dist.mode()

    def __getattr__(self, name: str):
        return getattr(self._dist, name)


@contextmanager
def _deterministic_vae_encode(vae) -> Iterator[None]:
    """Make the pipeline's VAE encodes use the posterior mean for the duration of one call.

    diffusers' inpainting pipelines sample the (masked) photo's latents with ``generator[0]`` only.  That draw
    shifts candidate 0's random stream and makes every candidate depend on candidate 0's seed, so seed ``s``
    would give different pixels alone and inside a batch.  With the mean, candidate ``i`` depends on
    ``seeds[i]`` alone (the posterior's std is tiny on real VAEs: the pictures are unaffected).
    """
    had = "encode" in vars(vae)
    original = vae.encode

    def encode(*args, **kwargs):
        out = original(*args, **kwargs)
        dist = getattr(out, "latent_dist", None)
        if dist is not None:
            out.latent_dist = _MeanPosterior(dist)
        return out

    vae.encode = encode
    try:
        yield
    finally:
        if had:
            vae.encode = original
        else:
            del vae.encode


@dataclass
class Candidate:
    seed: int
    image: Image.Image  # full photo size (the crop pasted back)
    crop: Image.Image  # the generated region at crop-box size, already blended


@dataclass
class InpaintResult:
    candidates: list[Candidate]
    rejected: list[tuple[int, str]]  # (seed, "nan" | "black" | "safety_checker")
    crop_box: BBox
    generation_size: tuple[int, int]
    look: str | None = None  # the adapter that ran; None: the base model
    timings_ms: dict[str, float] = field(default_factory=dict)


class Inpainter:
    def __init__(self, pipe, *, prompt_cache_size: int = 64, looks: tuple[str, ...] = (), switchable: bool = False,
                 look_scale: float = 1.0, reference_cache_size: int = 8) -> None:
        self.pipe = pipe
        self.looks = tuple(looks)  # the first is the default
        self.switchable = switchable and len(self.looks) > 1
        self._look_scale = look_scale
        self._active_look = self.looks[0] if self.looks else None
        pipe.set_progress_bar_config(disable=True)
        self.native = int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)
        self.multiple = int(pipe.vae_scale_factor) * 2 ** (len(pipe.unet.config.block_out_channels) - 1)
        self._default_scheduler = pipe.scheduler
        self._schedulers: dict[str, object] = {}
        self._prompt_cache: OrderedDict[tuple, dict] = OrderedDict()
        self._prompt_cache_size = prompt_cache_size
        self.references = has_ip_adapter(pipe)  # an IP-Adapter is loaded: requests may send a reference image
        self._reference_cache: OrderedDict[tuple, list] = OrderedDict()
        self._reference_cache_size = reference_cache_size
        self._ip_scale: float | None = None
        self._lock = threading.Lock()  # a pipeline holds per-call state: one call at a time

    @property
    def device(self) -> torch.device:
        return self.pipe.unet.device

    # 1. ------------------------------------------------------------------------------------------------------
    @staticmethod
    def check_inputs(image: Image.Image, mask: np.ndarray, prompt: str, seeds: list[int], steps: int,
                     strength: float, reference_scale: float = 0.6, edge: str = "outside") -> None:
        if mask.shape != (image.height, image.width):
            raise InvalidInput(f"`mask` must be {image.width}x{image.height} like `image`, "
                               f"got {mask.shape[1]}x{mask.shape[0]}")
        if not mask.any():
            raise InvalidInput("`mask` is empty (no white pixels): there is nothing to repaint")
        if not prompt.strip():
            raise InvalidInput("`prompt` must not be empty")
        if not seeds:
            raise InvalidInput("`seeds` must name at least one candidate")
        if steps < 1:
            raise InvalidInput(f"`steps` must be >= 1, got {steps}")
        if not 0 < strength <= 1:
            raise InvalidInput(f"`strength` must be in (0, 1], got {strength}")
        if int(steps * strength) < 1:  # diffusers runs int(steps * strength) denoising steps
            raise InvalidInput(f"`steps` x `strength` must give at least one denoising step: {steps} x {strength} "
                               f"= {steps * strength:g}; raise `steps` to {min_steps(strength)} or more")
        if not 0 <= reference_scale <= 1:
            raise InvalidInput(f"`reference_scale` must be in [0, 1], got {reference_scale}")
        if edge not in EDGES:
            raise InvalidInput(f"`edge` must be one of {', '.join(EDGES)}, got {edge!r}")

    def check_reference(self, reference: Image.Image | None) -> None:
        """A reference image needs an IP-Adapter on this endpoint: ``NoReferenceSupport`` says so otherwise."""
        if reference is not None and not self.references:
            raise NoReferenceSupport(
                "this endpoint has no IP-Adapter, so it cannot use a `reference` image (swatch or print): load one "
                "with RESTYLE_IP_ADAPTER, or send the request without `reference`")

    def resolve_look(self, look: str | None) -> str | None:
        """A request's ``look`` → the adapter to run (None: the base model), or ``UnknownLook`` saying what exists."""
        if look in (None, DEFAULT_LOOK):
            return self.looks[0] if self.looks else None
        if look in self.looks:
            return look
        if look == NO_LOOK and (self.switchable or not self.looks):
            return None
        if not self.looks:
            why = "this endpoint serves the base model only (RESTYLE_LORA is not set)"
        elif not self.switchable:
            why = (f"this endpoint's one look, {self.looks[0]!r}, is fused into its weights: it is always on "
                   f"(serve two or more looks to choose per request, '{NO_LOOK}' included)")
        else:
            why = f"this endpoint serves {', '.join(map(repr, self.looks))} and '{NO_LOOK}'"
        raise UnknownLook(f"unknown look {look!r}: {why}")

    def _activate(self, look: str | None) -> None:
        """Make ``look`` the active adapter (caller holds the lock); a no-op when it already is."""
        if not self.switchable or look == self._active_look:
            return
        if look is None:
            self.pipe.disable_lora()
        else:
            self.pipe.enable_lora()
            self.pipe.set_adapters([look], adapter_weights=[self._look_scale])
        self._active_look = look

    def _scheduler(self, name: str):
        if name in ("default", None):
            return self._default_scheduler
        if name not in self._schedulers:
            import diffusers

            cls = getattr(diffusers, SCHEDULER_CLASSES[name])
            # PNDM's Runge-Kutta warm-up needs more steps than a short request has (and diffusers' own SD configs
            # skip it); whatever the checkpoint's scheduler config, PNDM skips it here too
            extra = {"skip_prk_steps": True} if name == "pndm" else {}
            self._schedulers[name] = cls.from_config(self._default_scheduler.config, **extra)
        return self._schedulers[name]

    # 4. ------------------------------------------------------------------------------------------------------
    def _prompt_kwargs(self, prompt: str, negative_prompt: str, cfg: bool) -> dict:
        """Prompt embeddings for the pipeline, cached per (prompt, negative, cfg, look): a look may have trained
        the text encoder too."""
        if not hasattr(self.pipe, "encode_prompt"):
            return {"prompt": prompt, "negative_prompt": negative_prompt}
        key = (prompt, negative_prompt, cfg, self._active_look)
        hit = self._prompt_cache.get(key)
        if hit is None:
            with torch.inference_mode():
                out = self.pipe.encode_prompt(prompt=prompt, device=self.device, num_images_per_prompt=1,
                                              do_classifier_free_guidance=cfg, negative_prompt=negative_prompt)
            names = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds",
                     "negative_pooled_prompt_embeds")
            hit = {k: v for k, v in zip(names, out, strict=False) if v is not None}
            self._prompt_cache[key] = hit
            while len(self._prompt_cache) > self._prompt_cache_size:
                self._prompt_cache.popitem(last=False)
        self._prompt_cache.move_to_end(key)
        return dict(hit)

    def _reference_kwargs(self, reference: Image.Image | None, scale: float, cfg: bool) -> dict:
        """``ip_adapter_image_embeds`` for the pipeline and the adapter's scale; {} without an adapter.

        The reference is encoded once per (picture, cfg) and cached.  With no reference (or scale 0) the adapter
        gets zero embeddings at scale 0: diffusers' IP-Adapter attention skips a zero scale, so the pictures are
        the plain pipeline's.
        """
        if not self.references:
            return {}
        if reference is None or scale == 0:
            key, scale = (None, cfg), 0.0
        else:
            digest = hashlib.sha1(reference.tobytes()).hexdigest()
            key = (reference.size, reference.mode, digest, cfg)
        hit = self._reference_cache.get(key)
        if hit is None:
            picture = reference if key[0] is not None else Image.new("RGB", (8, 8))
            with torch.inference_mode():
                hit = self.pipe.prepare_ip_adapter_image_embeds(
                    ip_adapter_image=picture, ip_adapter_image_embeds=None, device=self.device,
                    num_images_per_prompt=1, do_classifier_free_guidance=cfg)
            if key[0] is None:  # the neutral embeddings: only their shapes matter at scale 0
                hit = [torch.zeros_like(e) for e in hit]
            self._reference_cache[key] = hit
            while len(self._reference_cache) > self._reference_cache_size:
                self._reference_cache.popitem(last=False)
        self._reference_cache.move_to_end(key)
        if scale != self._ip_scale:
            self.pipe.set_ip_adapter_scale(scale)
            self._ip_scale = scale
        return {"ip_adapter_image_embeds": list(hit)}

    def __call__(
        self,
        image: Image.Image,
        mask: np.ndarray,
        prompt: str,
        negative_prompt: str = "",
        *,
        seeds: list[int],
        steps: int = 30,
        guidance_scale: float = 7.5,
        strength: float = 1.0,
        scheduler: str = "default",
        crop: bool = True,
        padding: int = 32,
        feather: int = 8,
        progress: Progress | None = None,
        look: str | None = None,
        reference: Image.Image | None = None,
        reference_scale: float = 0.6,
        edge: str = "outside",
    ) -> InpaintResult:
        """``reference``: a swatch or print the garment should look like (needs an IP-Adapter), weighted by
        ``reference_scale`` in [0, 1].  ``edge``: where the ``feather`` band lies, ``"outside"`` the mask (soft
        seams around a garment) or ``"inside"`` it (every pixel outside the mask is the original's, bit-identical:
        a new background around a person)."""
        t0 = time.perf_counter()
        # 1. Check inputs
        self.check_inputs(image, mask, prompt, seeds, steps, strength, reference_scale, edge)
        self.check_reference(reference)
        adapter = self.resolve_look(look)
        # 2. Plan the crop: where to generate and at what size
        box, (gw, gh) = compose.plan_crop(mask, self.native, self.multiple, padding, feather, whole=not crop)
        # 3. Crop and resize image and mask to the generation size
        region = image.crop(box).resize((gw, gh), Image.LANCZOS)
        mask_img = Image.fromarray(mask[box[1]:box[3], box[0]:box[2]].astype(np.uint8) * 255)
        mask_img = mask_img.resize((gw, gh), Image.NEAREST)
        cfg = guidance_scale > 1.0
        with self._lock:
            # 4. Pick the look, encode the prompt and the reference (cached)
            self._activate(adapter)
            kwargs = self._prompt_kwargs(prompt, negative_prompt, cfg)
            kwargs.update(self._reference_kwargs(reference, reference_scale, cfg))
            # 5. One generator per candidate, on the CPU so a seed means the same noise on any device
            generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
            total = max(1, int(steps * strength))

            def on_step(pipe, i, t, cb_kwargs):
                if progress is not None:
                    progress(min(i + 1, total), total)
                return cb_kwargs

            # 6. One batched call: candidates x (cond, uncond)
            self.pipe.scheduler = self._scheduler(scheduler)
            t1 = time.perf_counter()
            try:
                with _deterministic_vae_encode(self.pipe.vae):
                    out = self.pipe(image=region, mask_image=mask_img, height=gh, width=gw,
                                    num_inference_steps=steps, guidance_scale=guidance_scale, strength=strength,
                                    num_images_per_prompt=len(seeds), generator=generators, output_type="np",
                                    callback_on_step_end=on_step, **kwargs)
            finally:
                self.pipe.scheduler = self._default_scheduler
        t2 = time.perf_counter()
        # 7. Reject what is not a picture
        arrays = out.images
        nsfw = getattr(out, "nsfw_content_detected", None) or [False] * len(seeds)
        kept, rejected = [], []
        for seed, arr, flagged in zip(seeds, arrays, nsfw, strict=True):
            reason = _reject_reason(arr, bool(flagged))
            if reason:
                rejected.append((int(seed), reason))
            else:
                kept.append((int(seed), from_unit_float(arr)))
        # 8. Paste back with a feathered edge (one blend plan for all); far pixels stay bit-identical
        fulls = compose.paste_all(image, [g for _, g in kept], mask, box, feather, inside=edge == "inside")
        candidates = [Candidate(seed=seed, image=full, crop=full.crop(box))
                      for (seed, _), full in zip(kept, fulls, strict=True)]
        t3 = time.perf_counter()
        timings = {"prepare": (t1 - t0) * 1e3, "generate": (t2 - t1) * 1e3, "paste": (t3 - t2) * 1e3}
        return InpaintResult(candidates=candidates, rejected=rejected, crop_box=box, generation_size=(gw, gh),
                             look=adapter, timings_ms=timings)


def _reject_reason(arr: np.ndarray, flagged: bool) -> str | None:
    if flagged:
        return "safety_checker"
    if not np.isfinite(arr).all():
        return "nan"
    if float(arr.max()) < BLACK_LEVEL:
        return "black"
    return None
