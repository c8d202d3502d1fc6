"""restyle's production path against the plain way, in one process, on the same inputs.

``python -m model.bench [--full] [--tiny] [--out FILE] [--reps N] [--steps N] [--rows a,b] [--compile]``

The plain way is what ``../shared/bench/baseline_diffusers.py`` measures: diffusers'
``StableDiffusionInpaintPipeline`` on the photo (or with its own ``padding_mask_crop``) and transformers' CLIPSeg the
way its documentation shows.  restyle's path is the production code: ``model.segment.Segmenter``,
``model.inpaint.Inpainter`` (crop-to-mask + feathered paste) and ``model.serve`` over HTTP, each built by
``model.loading.prepare_*`` — the same settings ``load_*`` serves with.

Models are built from configs with random weights (nothing is downloaded; speed does not depend on weight values):

* default — CLIPSeg full size (ViT-B/16 at 352, rd64) and an SD-shaped inpainting model scaled down for a 2-core CPU
  (4 levels, VAE factor 8, native 512, 9 input channels, cross-attention at levels 1-2), 4 steps, float32;
* ``--full`` — SD 1.5 inpainting (configs as in ``baseline_diffusers.py``), 30 steps, fp16 on CUDA, plus SDXL
  inpainting at 1024x1024 (UNet/VAE as in ``baseline_diffusers_more.py``);
* ``--tiny`` — tiny models and photos (seconds; the smoke test and ``--full --tiny`` exercise every row).

The ``upscale`` row (issue #14, catalogue resolution) times ``compose.upscale_region`` with ``Upscaler`` (the garment's
padded box scaled down by 4, upscaled x4, pasted back) against diffusers' ``StableDiffusionUpscalePipeline`` on the
whole photo scaled down by 4; the x4 upscaler is ``model.tiny.upscale_pipeline``'s ``tiny``, ``small`` (default) or
``x4`` (``--full``: stabilityai/stable-diffusion-x4-upscaler's architecture, a 2000x3000 photo).

Random CLIPSeg weights give probability maps that are noise covering the whole photo, which would make mask
post-processing cost unlike a real request; a forward hook on the decoder therefore replaces its logits with a fixed
garment-shaped map per prompt (a blob with a hole, a speck, soft edges; small blobs for face/hands/hair).  The decoder
still runs; both sides see the same maps.  Every timing is the median of ``--reps`` runs after one warm-up, and each
baseline run is interleaved with the restyle run it is compared to, so a busy machine slows both alike.
"""

from __future__ import annotations

import argparse
import base64
import copy
import gc
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from model.images import decode_image
from model.schemas import DEFAULT_NEGATIVE_PROMPT, DEFAULT_PROTECT

GARMENTS_16 = ["skirt", "dress", "jacket", "coat", "jeans", "pants", "shorts", "t-shirt", "shirt", "blouse",
               "sweater", "hoodie", "cardigan", "blazer", "vest", "jumpsuit"]
PROMPT = "a red pleated silk skirt"
SEEDS = [0, 1, 2, 3]
ROWS = ["segment_1", "segment_16", "segment_endpoint_overhead", "segment_endpoint_overhead_toolkit",
        "inpaint_512_4x", "inpaint_1024x1536_4x", "inpaint_1024x1536_4x_crop", "inpaint_sdxl_4x", "upscale"]
#: Photo sizes of the ``upscale`` row per mode: a catalogue photo in ``full``.
UPSCALE_PHOTO = {"tiny": (128, 192), "default": (512, 768), "full": (2000, 3000)}
#: Where ``segment_endpoint_overhead_toolkit`` finds the SageMaker toolkit stack (``python -m deploy local``).
TOOLKIT_ENV = "RESTYLE_TOOLKIT_DIR"


# -- timing ---------------------------------------------------------------------------------------------------------
def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _run(fn: Callable[[], object]) -> tuple[float, float | None]:
    """Seconds for one call, and the call's peak CUDA memory above what was allocated before it (GB)."""
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    t = time.perf_counter()
    fn()
    _sync()
    dt = time.perf_counter() - t
    return dt, ((torch.cuda.max_memory_allocated() - before) / 1e9 if cuda else None)


def interleaved(fns: dict[str, Callable[[], object]], reps: int, warmup: int = 1) -> dict[str, dict]:
    """Warm each callable up, then run them in turn ``reps`` times; per name: runs, median, peak memory."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    runs: dict[str, list[float]] = {k: [] for k in fns}
    peaks: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            dt, peak = _run(fn)
            runs[name].append(dt)
            if peak is not None:
                peaks[name].append(peak)
    return {k: {"runs": [round(v, 5) for v in runs[k]], "median": statistics.median(runs[k]),
                "peak_gb": round(max(peaks[k]), 3) if peaks[k] else None} for k in fns}


def row(name: str, base: dict, rest: dict, baseline: str, restyle: str, **extra) -> dict:
    out = {"name": name, "baseline_s": round(base["median"], 5), "restyle_s": round(rest["median"], 5),
           "speedup": round(base["median"] / rest["median"], 3), "baseline": baseline, "restyle": restyle,
           "baseline_runs": base["runs"], "restyle_runs": rest["runs"]}
    if base.get("peak_gb") is not None:
        out["baseline_peak_gb"], out["restyle_peak_gb"] = base["peak_gb"], rest["peak_gb"]
    out.update(extra)
    return out


# -- inputs ---------------------------------------------------------------------------------------------------------
def photo(width: int, height: int, box: tuple[int, int, int, int], seed: int = 0) -> Image.Image:
    """A smooth 'catalog photo': gradients, a darker garment in ``box``, a little sensor noise."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([xx / width * 200 + 30, yy / height * 180 + 40, (xx + yy) / (width + height) * 220 + 20], -1)
    x0, y0, x1, y1 = box
    img[y0:y1, x0:x1] *= 0.5
    img += np.random.RandomState(seed).normal(0, 2, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def garment_box(width: int, height: int) -> tuple[int, int, int, int]:
    """Half the width and half the height: a garment covering a quarter of the photo."""
    return width // 4, int(height * 0.4), width * 3 // 4, int(height * 0.4) + height // 2


def box_mask(width: int, height: int, box: tuple[int, int, int, int]) -> np.ndarray:
    m = np.zeros((height, width), dtype=bool)
    m[box[1]:box[3], box[0]:box[2]] = True
    return m


BLOBS = {"face": [(0.5, 0.11, 0.07, 0.05)], "hair": [(0.5, 0.07, 0.11, 0.07)],
         "hands": [(0.22, 0.52, 0.04, 0.03), (0.78, 0.52, 0.04, 0.03)], "skirt": [(0.5, 0.65, 0.25, 0.25)]}


def garment_logits(prompt: str, size: int) -> torch.Tensor:
    """A CLIPSeg-like logit map for ``prompt``: soft blob(s), a hole (a buckle), a distant speck, some noise."""
    rng = np.random.RandomState(zlib.crc32(prompt.encode()))
    blobs = BLOBS.get(prompt) or [(rng.uniform(.3, .7), rng.uniform(.3, .7), rng.uniform(.12, .3),
                                   rng.uniform(.1, .25))]
    yy, xx = (np.mgrid[0:size, 0:size] + 0.5) / size
    logit = np.full((size, size), -8.0)
    for cx, cy, rx, ry in blobs:
        logit = np.maximum(logit, 6.0 * (1.0 - ((xx - cx) / rx) ** 2 - ((yy - cy) / ry) ** 2))
    for cells, amp in ((12, 1.5), (22, 1.0)):  # low-frequency wobble + CLIPSeg's 22x22 patch texture
        noise = torch.from_numpy(rng.randn(1, 1, cells, cells))
        logit += amp * F.interpolate(noise, size=(size, size), mode="bicubic")[0, 0].numpy()
    if prompt not in BLOBS or prompt == "skirt":
        cx, cy = blobs[0][:2]
        logit -= 9.0 * np.exp(-(((xx - cx) / 0.02) ** 2 + ((yy - cy) / 0.015) ** 2))
        sx, sy = rng.uniform(.05, .95), rng.uniform(.05, .95)
        logit = np.maximum(logit, 4.0 * (1 - ((xx - sx) / 0.015) ** 2 - ((yy - sy) / 0.01) ** 2))
    return torch.from_numpy(logit.astype(np.float32))


class GarmentMaps:
    """Forward hook on CLIPSeg's decoder: its logits become ``garment_logits`` of the prompts in ``self.prompts``."""

    def __init__(self, model) -> None:
        self.prompts: list[str] = []
        self._cache: dict[tuple[str, int], torch.Tensor] = {}
        self.handle = model.decoder.register_forward_hook(self)

    def __call__(self, module, args, output):
        logits = output.logits
        n, size = len(self.prompts), logits.shape[-1]
        if logits.reshape(-1, size, size).shape[0] != n:
            raise RuntimeError(f"GarmentMaps: decoder batch {logits.shape} but {n} prompts set")
        maps = []
        for p in self.prompts:
            key = (p, size)
            if key not in self._cache:
                self._cache[key] = garment_logits(p, size).to(logits.device, logits.dtype)
            maps.append(self._cache[key])
        output.logits = torch.stack(maps).reshape(logits.shape)
        return output


# -- models ---------------------------------------------------------------------------------------------------------
def tokenizer(max_length: int = 77):
    """The tiny CLIP BPE tokenizer of ``model.tiny`` (real CLIP format; restyle's words are whole tokens)."""
    from model.tiny import _tokenizer

    with tempfile.TemporaryDirectory(prefix="restyle-bench-tok-") as folder:
        return _tokenizer(Path(folder), max_length)


def build_clipseg(tiny: bool):
    """CLIPSeg with random weights: ``model.tiny``'s tiny shape, or CIDAS/clipseg-rd64's (ViT-B/16 at 352)."""
    from model.tiny import clipseg_model

    return clipseg_model(tokenizer(), "tiny" if tiny else "rd64")


def build_sd(mode: str, device: torch.device):
    """SD inpainting pipeline (9-channel UNet, VAE, CLIP text encoder, DDIM) with random weights."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tok = tokenizer()
    ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    torch.manual_seed(0)
    with torch.device(device):
        if mode == "tiny":
            unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=1, sample_size=32, in_channels=9,
                                        out_channels=4, cross_attention_dim=32, attention_head_dim=8,
                                        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), norm_num_groups=8)
            vae = AutoencoderKL(block_out_channels=(32, 64), latent_channels=4, norm_num_groups=8, sample_size=64,
                                down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
            te = CLIPTextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                num_attention_heads=4, max_position_embeddings=77, **ids)
        elif mode == "default":  # SD-shaped, scaled down for a 2-core CPU (see docs/bench.md)
            unet = UNet2DConditionModel(sample_size=64, in_channels=9, out_channels=4, layers_per_block=1,
                                        block_out_channels=(16, 32, 32, 32), norm_num_groups=8,
                                        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D",
                                                          "CrossAttnDownBlock2D", "DownBlock2D"),
                                        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                                                        "UpBlock2D"),
                                        cross_attention_dim=32, attention_head_dim=4)
            vae = AutoencoderKL(block_out_channels=(8, 16, 16, 16), latent_channels=4, layers_per_block=1,
                                norm_num_groups=8, sample_size=512, down_block_types=("DownEncoderBlock2D",) * 4,
                                up_block_types=("UpDecoderBlock2D",) * 4)
            te = CLIPTextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                num_attention_heads=4, max_position_embeddings=77, **ids)
        else:  # SD 1.5 inpainting, as ../shared/bench/baseline_diffusers.py
            unet = UNet2DConditionModel(sample_size=64, in_channels=9, out_channels=4, cross_attention_dim=768,
                                        attention_head_dim=8, block_out_channels=(320, 640, 1280, 1280),
                                        layers_per_block=2)
            vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), latent_channels=4, layers_per_block=2,
                                sample_size=512, down_block_types=("DownEncoderBlock2D",) * 4,
                                up_block_types=("UpDecoderBlock2D",) * 4)
            te = CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                                projection_dim=768, **ids)
        text_encoder = CLIPTextModel(te)
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                          set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionInpaintPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tok, unet=unet,
                                          scheduler=sched, safety_checker=None, feature_extractor=None,
                                          requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_sdxl(tiny: bool, device: torch.device):
    """SDXL inpainting (UNet/VAE as ``baseline_diffusers_more.py``).  Text encoders have SDXL's widths but 2 layers:
    neither side runs them in the timed calls (embeddings are passed in / cached)."""
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLInpaintPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    tok = tokenizer()
    ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    torch.manual_seed(0)
    with torch.device(device):
        if tiny:
            unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=1, sample_size=32, in_channels=9,
                                        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
                                        use_linear_projection=True, addition_embed_type="text_time",
                                        addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
                                        projection_class_embeddings_input_dim=80, cross_attention_dim=64)
            vae = AutoencoderKL(block_out_channels=(32, 64), latent_channels=4, sample_size=64,
                                down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
            widths = (32, 32, 32)  # text encoder 1, text encoder 2, pooled projection
        else:
            unet = UNet2DConditionModel(sample_size=128, in_channels=9, out_channels=4, layers_per_block=2,
                                        block_out_channels=(320, 640, 1280),
                                        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                                        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                                        transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20),
                                        cross_attention_dim=2048, use_linear_projection=True,
                                        addition_embed_type="text_time", addition_time_embed_dim=256,
                                        projection_class_embeddings_input_dim=2816)
            vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), latent_channels=4, layers_per_block=2,
                                sample_size=1024, scaling_factor=0.13025,
                                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
            widths = (768, 1280, 1280)
        te1 = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=widths[0], intermediate_size=4 * widths[0],
                                           num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
                                           **ids))
        te2 = CLIPTextModelWithProjection(CLIPTextConfig(vocab_size=49408, hidden_size=widths[1],
                                                         intermediate_size=4 * widths[1], num_hidden_layers=2,
                                                         num_attention_heads=4, max_position_embeddings=77,
                                                         projection_dim=widths[2], **ids))
    sched = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1)
    pipe = StableDiffusionXLInpaintPipeline(vae=vae, text_encoder=te1, text_encoder_2=te2, tokenizer=tok,
                                            tokenizer_2=tok, unet=unet, scheduler=sched,
                                            requires_aesthetics_score=False, force_zeros_for_empty_prompt=True,
                                            add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# -- the rows -------------------------------------------------------------------------------------------------------
class Bench:
    def __init__(self, args) -> None:
        from model import loading

        self.args = args
        self.mode = "tiny" if args.tiny else ("full" if args.full else "default")
        self.device = loading.pick_device(args.device)
        self.dtype = loading.pick_dtype(self.device, args.dtype)
        self.steps = args.steps or {"tiny": 2, "default": 4, "full": 30}[self.mode]
        self.reps = args.reps or {"tiny": 1, "default": 3, "full": 5}[self.mode]
        self.seg_size = (96, 144) if args.tiny else (1024, 1536)
        self.small = 64 if args.tiny else 512
        self.hires = (128, 192) if args.tiny else (1024, 1536)
        self.rows: list[dict] = []
        self.skipped: list[dict] = []  # rows that could not run here, each with its reason
        self.notes: list[str] = [
            "random weights (speed does not depend on weight values); CLIPSeg's decoder logits are replaced by "
            "garment-shaped maps through a forward hook (the decoder still runs) so mask post-processing does "
            "realistic work",
            "speedup = baseline_s / restyle_s; for segment_endpoint_overhead the baseline is restyle's own raw "
            "forward, so its speedup is below 1 by construction: the target is overhead = restyle_s / baseline_s "
            "<= 1.2",
        ]
        self.wanted = set(args.rows.split(",")) if args.rows else None
        self.started, self.load_before = time.perf_counter(), _loadavg()

    def want(self, name: str) -> bool:
        return self.wanted is None or name in self.wanted

    def log(self, msg: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    def add(self, r: dict) -> None:
        self.rows.append(r)
        self.log(f"{r['name']}: baseline {r['baseline_s']:.4f} s, restyle {r['restyle_s']:.4f} s, "
                 f"x{r['speedup']:.2f}")
        self.save(complete=False)  # a run stopped by a time limit keeps the rows it finished

    def save(self, complete: bool) -> dict:
        result = self.report(complete)
        if self.args.out:
            out = Path(self.args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(out.name + ".tmp")
            tmp.write_text(json.dumps(result, indent=1) + "\n")
            tmp.replace(out)
        return result

    # -- segmentation ---------------------------------------------------------------------------------------------
    def segment(self) -> None:
        from model import loading
        from model.parallel import workers

        names = ("segment_1", "segment_16", "segment_endpoint_overhead", "segment_endpoint_overhead_toolkit")
        if not any(self.want(n) for n in names):
            return
        self.log("building CLIPSeg")
        model, processor = build_clipseg(self.mode == "tiny")
        segmenter = loading.prepare_clipseg(model, processor, device=self.device, dtype=self.dtype)
        maps = GarmentMaps(model)
        w, h = self.seg_size
        jpeg = io.BytesIO()
        photo(w, h, garment_box(w, h)).save(jpeg, "JPEG", quality=90)
        image = decode_image(jpeg.getvalue())  # what the endpoint decodes, decoded the way it does
        dev, dt = self.device, self.dtype

        def plain(prompts: list[str], batched: bool) -> np.ndarray:
            """transformers' documented CLIPSeg usage → probability maps at the photo's resolution."""
            groups = [prompts] if batched else [[p] for p in prompts]
            out = []
            for group in groups:
                maps.prompts = group
                inputs = processor(text=group, images=[image] * len(group), padding=True, return_tensors="pt")
                inputs = {k: v.to(dev) for k, v in inputs.items()}
                inputs["pixel_values"] = inputs["pixel_values"].to(dt)
                with torch.inference_mode():
                    logits = model(**inputs).logits
                logits = logits.reshape(len(group), 1, *logits.shape[-2:]).float()
                probs = F.interpolate(torch.sigmoid(logits), size=(h, w), mode="bilinear", align_corners=False)
                out.append(probs[:, 0].cpu().numpy())
            return np.concatenate(out)

        stages: dict[str, list[float]] = {}  # Segmenter's own forward / postprocess split, per prompt count

        def ours(prompts: list[str]) -> Callable[[], object]:
            def call():
                maps.prompts = prompts
                seg = segmenter(image, prompts, negative_prompts=[])
                for k, v in seg.timings_ms.items():
                    stages.setdefault(f"{len(prompts)}:{k}", []).append(v)
                return seg
            return call

        def split(n: int) -> dict[str, float]:
            """Median milliseconds of each Segmenter stage over the calls with ``n`` prompts."""
            return {k.split(":")[1]: round(float(np.median(v)), 2) for k, v in stages.items()
                    if k.startswith(f"{n}:")}

        what_base = "transformers CLIPSeg the documented way: processor(text, images) + model(**inputs) + sigmoid " \
                    f"+ bilinear upsampling to the photo: probability maps at {w}x{h}"
        what_ours = "Segmenter(image, prompts, negative_prompts=[]): shared ViT pass, cached text embeddings, " \
                    f"masks thresholded, hole-filled, de-specked, dilated 8 px at {w}x{h} (more work than the " \
                    f"baseline's bare maps), several masks cleaned in parallel on {workers()} threads"
        if self.want("segment_1"):
            self.log("segment_1")
            t = interleaved({"base": lambda: plain(["skirt"], True), "ours": ours(["skirt"])}, self.reps)
            self.add(row("segment_1", t["base"], t["ours"], what_base + ", 1 prompt", what_ours + ", 1 prompt",
                         photo=[w, h], restyle_stages_ms=split(1)))
        if self.want("segment_16"):
            self.log("segment_16")
            t = interleaved({"loop": lambda: plain(GARMENTS_16, False), "batched": lambda: plain(GARMENTS_16, True),
                             "ours": ours(GARMENTS_16)}, self.reps)
            best = min(("loop", "batched"), key=lambda k: t[k]["median"])
            self.add(row("segment_16", t[best], t["ours"],
                         what_base + f", 16 prompts; the better of one prompt at a time "
                         f"({t['loop']['median']:.4f} s) and the docs' batch with the photo repeated 16x "
                         f"({t['batched']['median']:.4f} s): {best}", what_ours + ", 16 prompts", photo=[w, h],
                         restyle_stages_ms=split(len(GARMENTS_16)),
                         baseline_variants={"loop_s": round(t["loop"]["median"], 5),
                                            "batched_s": round(t["batched"]["median"], 5)}))
        if self.want("segment_endpoint_overhead"):
            self.endpoint(segmenter, maps, image, jpeg.getvalue())
        if self.want("segment_endpoint_overhead_toolkit"):
            self.endpoint_toolkit(model, processor, segmenter, maps, image, jpeg.getvalue())
        maps.handle.remove()

    def endpoint(self, segmenter, maps: GarmentMaps, image: Image.Image, jpeg: bytes) -> None:
        from model.handlers import LoadedModel
        from model.serve import ModelServer, start

        self.log("segment_endpoint_overhead")
        server = ModelServer({"clipseg": "bench"})
        server.models["clipseg"] = LoadedModel("clipseg", segmenter, "bench")
        server.load = server.ready.set  # the model is already in memory
        httpd = start(server, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        prompts = ["skirt"]
        all_prompts = prompts + DEFAULT_PROTECT
        last: dict = {}
        try:
            import boto3
            from botocore.config import Config

            client = boto3.client("sagemaker-runtime", endpoint_url=url, region_name="us-east-1",
                                  aws_access_key_id="bench", aws_secret_access_key="bench",
                                  config=Config(retries={"max_attempts": 1}))

            def send(body: bytes) -> bytes:
                resp = client.invoke_endpoint(EndpointName="restyle-clipseg", ContentType="application/json",
                                              Accept="application/json", Body=body)
                return resp["Body"].read()
            how = "boto3 sagemaker-runtime invoke_endpoint"
        except ImportError:  # pragma: no cover - boto3 is a dependency; plain HTTP keeps the row meaningful
            import http.client

            conn = http.client.HTTPConnection("127.0.0.1", httpd.server_address[1])

            def send(body: bytes) -> bytes:
                conn.request("POST", "/endpoints/restyle-clipseg/invocations", body,
                             {"Content-Type": "application/json", "Accept": "application/json"})
                return conn.getresponse().read()
            how = "http.client POST /endpoints/restyle-clipseg/invocations"

        def request():
            maps.prompts = all_prompts
            body = json.dumps({"image": base64.b64encode(jpeg).decode(), "prompts": prompts}).encode()
            out = json.loads(send(body))
            if "masks" not in out:
                raise RuntimeError(f"endpoint answered {str(out)[:300]}")
            last.update(out)
            return out

        pixels = segmenter.pixels(image)

        def raw():
            maps.prompts = all_prompts
            return segmenter.forward(pixels, all_prompts)

        try:
            reps = max(self.reps, 10) if self.mode != "tiny" else 2
            t = interleaved({"raw": raw, "ours": request}, reps)
        finally:
            httpd.shutdown()
            httpd.server_close()
        ratio = t["ours"]["median"] / t["raw"]["median"]
        w, h = image.size
        self.add(row("segment_endpoint_overhead", t["raw"], t["ours"],
                     f"the raw model forward: Segmenter.forward(pixels, {len(all_prompts)} prompts) — one ViT pass + "
                     "decoder on a prepared pixel tensor, cached text embeddings, no I/O",
                     f"p50 of a full request through model.serve over HTTP ({how}): JSON + base64 JPEG {w}x{h} "
                     f"({len(jpeg):,} bytes), prompts {prompts} + default protected {DEFAULT_PROTECT}, decode, "
                     "preprocess, forward, masks at full resolution, PNG+base64 of mask and union, JSON response",
                     overhead=round(ratio, 3), target="restyle_s <= 1.2 x baseline_s",
                     meets_target=bool(ratio <= 1.2), server_timings_ms=last.get("timings_ms")))

    def endpoint_toolkit(self, model, processor, segmenter, maps: GarmentMaps, image: Image.Image,
                         jpeg: bytes) -> None:
        """``segment_endpoint_overhead`` through the stack the SageMaker image runs: the packed ``model.tar.gz``
        under the Hugging Face inference toolkit and multi-model-server (``deploy.local``), on loopback."""
        import http.client

        from deploy import local, package

        name = "segment_endpoint_overhead_toolkit"
        toolkit = os.environ.get(TOOLKIT_ENV)
        why = local.missing_requirements(toolkit)
        if why:
            self.skip(name, f"the toolkit stack cannot run here ({TOOLKIT_ENV}={toolkit or 'unset'}): {why}")
            return
        self.log(name)
        prompts = ["skirt"]
        all_prompts = prompts + DEFAULT_PROTECT
        body = json.dumps({"image": base64.b64encode(jpeg).decode(), "prompts": prompts}).encode()
        last: dict = {}
        pixels = segmenter.pixels(image)

        def raw():
            maps.prompts = all_prompts
            return segmenter.forward(pixels, all_prompts)

        reps = max(self.reps, 10) if self.mode != "tiny" else 2
        # The baseline runs before the model server starts (not interleaved), so the server's Java frontend and
        # Python worker cannot take CPU from this process while it is timed.
        t = interleaved({"raw": raw}, reps)
        with tempfile.TemporaryDirectory(prefix="restyle-bench-toolkit-") as tmp:
            weights = Path(tmp, "clipseg")
            model.save_pretrained(weights)  # the same random weights; the worker loads them as model_fn does
            processor.save_pretrained(weights)
            port = local.free_port()
            server = local.serve(package.model_tarball().data, role="clipseg", port=port, workdir=Path(tmp, "work"),
                                 model_id=str(weights), toolkit=toolkit, log_file=Path(tmp, "server.log"))
            try:
                local.wait_ready(server, timeout=600)
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)

                def request():
                    conn.request("POST", "/invocations", body,
                                 {"Content-Type": "application/json", "Accept": "application/json"})
                    resp = conn.getresponse()
                    out = json.loads(resp.read())
                    if resp.status != 200 or "masks" not in out:
                        raise RuntimeError(f"the toolkit answered {resp.status}: {str(out)[:300]}")
                    last.update(out)
                    return out

                t.update(interleaved({"ours": request}, reps))
                conn.close()
            finally:
                server.stop()
        ratio = t["ours"]["median"] / t["raw"]["median"]
        w, h = image.size
        self.add(row(name, t["raw"], t["ours"],
                     f"the raw model forward in this process: Segmenter.forward(pixels, {len(all_prompts)} prompts), "
                     "as in segment_endpoint_overhead, timed before the model server starts (not interleaved)",
                     f"p50 of a full request to POST /invocations of the packed model.tar.gz under the SageMaker "
                     f"Hugging Face inference toolkit and multi-model-server (Java frontend, one Python worker; "
                     f"python -m deploy local): JSON + base64 JPEG {w}x{h} ({len(jpeg):,} bytes), prompts {prompts} "
                     f"+ default protected {DEFAULT_PROTECT}. The worker loads the same random weights without the "
                     "garment-map hook, so its masks come from the raw (noise) maps",
                     overhead=round(ratio, 3), target="restyle_s <= 1.2 x baseline_s",
                     meets_target=bool(ratio <= 1.2), server_timings_ms=last.get("timings_ms")))

    def skip(self, name: str, reason: str) -> None:
        self.skipped.append({"name": name, "reason": reason})
        self.log(f"{name}: skipped: {reason}")

    # -- inpainting -----------------------------------------------------------------------------------------------
    def inpaint(self) -> None:
        from model import loading

        names = ("inpaint_512_4x", "inpaint_1024x1536_4x", "inpaint_1024x1536_4x_crop")
        if not any(self.want(n) for n in names):
            return
        self.log(f"building the {self.mode} SD inpainting pipeline")
        base = build_sd(self.mode, self.device)
        ours = loading.prepare_inpaint(copy.deepcopy(base), device=self.device, dtype=self.dtype,
                                       compile=self.args.compile)
        base.to(device=self.device, dtype=self.dtype)
        if self.args.compile:  # the plain way's own best: channels_last + torch.compile, as baseline_diffusers.py
            base.unet.to(memory_format=torch.channels_last)
            base.unet = torch.compile(base.unet, fullgraph=True)
        with torch.inference_mode():
            pe, ne = base.encode_prompt(PROMPT, self.device, 1, True, DEFAULT_NEGATIVE_PROMPT)
        native = ours.native

        def plain(image, mask, **kw):
            mask_img = Image.fromarray(mask.astype(np.uint8) * 255)
            size = {"height": image.height, "width": image.width}
            size.update(kw)
            return lambda: base(prompt_embeds=pe, negative_prompt_embeds=ne, image=image, mask_image=mask_img,
                                num_inference_steps=self.steps, num_images_per_prompt=len(SEEDS),
                                guidance_scale=7.5, output_type="pil", **size)

        def restyle(image, mask):
            return lambda: ours(image, mask, PROMPT, DEFAULT_NEGATIVE_PROMPT, seeds=SEEDS, steps=self.steps,
                                guidance_scale=7.5)

        common = f"{len(SEEDS)} candidates, {self.steps} steps, CFG 7.5, {str(self.dtype).removeprefix('torch.')}"
        ours_what = "Inpainter.__call__ (built by model.loading.prepare_inpaint: channels_last; fp16 + VAE slicing " \
                    "on CUDA): crop to the mask (+32 px context), generated at the crop's aspect in at most " \
                    f"{native}² pixels, one batch for candidates x CFG, feathered paste into the photo; " + common
        if self.want("inpaint_512_4x"):
            s = self.small
            img, m = photo(s, s, (s // 4, s // 4, 3 * s // 4, 3 * s // 4)), box_mask(s, s, (s // 4, s // 4,
                                                                                            3 * s // 4, 3 * s // 4))
            self.log("inpaint_512_4x")
            t = interleaved({"base": plain(img, m), "ours": restyle(img, m)}, self.reps)
            self.add(row("inpaint_512_4x", t["base"], t["ours"],
                         f"StableDiffusionInpaintPipeline on the whole {s}x{s} photo; " + common, ours_what,
                         photo=[s, s], mask="centre square, a quarter of the photo"))
        w, h = self.hires
        box = garment_box(w, h)
        img, m = photo(w, h, box), box_mask(w, h, box)
        extra = {"photo": [w, h], "mask": f"garment box {list(box)}, a quarter of the photo"}
        if self.want("inpaint_1024x1536_4x"):
            self.log("inpaint_1024x1536_4x")
            t = interleaved({"base": plain(img, m), "ours": restyle(img, m)}, self.reps)
            self.add(row("inpaint_1024x1536_4x", t["base"], t["ours"],
                         f"StableDiffusionInpaintPipeline on the whole {w}x{h} photo; " + common, ours_what, **extra))
        if self.want("inpaint_1024x1536_4x_crop"):
            self.log("inpaint_1024x1536_4x_crop")
            t = interleaved({"base": plain(img, m, padding_mask_crop=32, height=native, width=native),
                             "ours": restyle(img, m)}, self.reps)
            self.add(row("inpaint_1024x1536_4x_crop", t["base"], t["ours"],
                         f"StableDiffusionInpaintPipeline with its own padding_mask_crop=32, generating the crop at "
                         f"{native}x{native} and pasting it back (the best plain usage); " + common, ours_what,
                         **extra))

    def sdxl(self) -> None:
        from model import loading

        if not (self.args.full and self.want("inpaint_sdxl_4x")):
            return
        self.log("building SDXL inpainting")
        base = build_sdxl(self.mode == "tiny", self.device)
        ours = loading.prepare_inpaint(copy.deepcopy(base), device=self.device, dtype=self.dtype,
                                       compile=self.args.compile)
        base.to(device=self.device, dtype=self.dtype)
        with torch.inference_mode():
            pe, ne, pp, npp = base.encode_prompt(PROMPT, device=self.device, do_classifier_free_guidance=True,
                                                 negative_prompt=DEFAULT_NEGATIVE_PROMPT)
        s = ours.native
        box = (s // 4, s // 4, 3 * s // 4, 3 * s // 4)
        img, m = photo(s, s, box), box_mask(s, s, box)
        mask_img = Image.fromarray(m.astype(np.uint8) * 255)
        strength = 0.99  # as baseline_diffusers_more.py

        def plain():
            return base(image=img, mask_image=mask_img, height=s, width=s, num_inference_steps=self.steps,
                        num_images_per_prompt=len(SEEDS), guidance_scale=7.5, strength=strength, prompt_embeds=pe,
                        negative_prompt_embeds=ne, pooled_prompt_embeds=pp, negative_pooled_prompt_embeds=npp)

        def restyle():
            return ours(img, m, PROMPT, DEFAULT_NEGATIVE_PROMPT, seeds=SEEDS, steps=self.steps, guidance_scale=7.5,
                        strength=strength)

        self.log("inpaint_sdxl_4x")
        t = interleaved({"base": plain, "ours": restyle}, self.reps)
        common = f"{len(SEEDS)} candidates, {self.steps} steps x strength {strength}, CFG 7.5, " \
                 f"{str(self.dtype).removeprefix('torch.')}"
        self.add(row("inpaint_sdxl_4x", t["base"], t["ours"],
                     f"StableDiffusionXLInpaintPipeline on the whole {s}x{s} photo; " + common,
                     f"Inpainter.__call__ (crop to the mask, generated in at most {s}² pixels, paste); " + common,
                     photo=[s, s], mask="centre square, a quarter of the photo"))

    def upscale(self) -> None:
        """The garment region brought to the photo's resolution (``compose.upscale_region`` + ``Upscaler``) against
        the plain way: the x4 upscaler on the whole photo scaled down by 4."""
        from model import compose, loading
        from model.tiny import upscale_pipeline

        if not self.want("upscale"):
            return
        shape = {"tiny": "tiny", "default": "small", "full": "x4"}[self.mode]
        self.log(f"building the {shape} x4 upscaler")
        base = upscale_pipeline(tokenizer(), shape)
        ours = loading.prepare_upscale(copy.deepcopy(base), device=self.device, dtype=self.dtype)
        base.to(device=self.device, dtype=self.dtype)
        w, h = UPSCALE_PHOTO[self.mode]
        box = garment_box(w, h)
        img, m = photo(w, h, box), box_mask(w, h, box)
        whole_low = img.resize((w // ours.factor, h // ours.factor), Image.LANCZOS)
        plan, low = compose.plan_upscale(m, (w, h), factor=ours.factor, multiple=ours.multiple)
        guidance, noise = 9.0, 20

        def plain():
            return base(prompt=PROMPT, image=whole_low, negative_prompt=DEFAULT_NEGATIVE_PROMPT,
                        num_inference_steps=self.steps, guidance_scale=guidance, noise_level=noise,
                        generator=torch.Generator("cpu").manual_seed(0)).images[0]

        def restyle():
            return compose.upscale_region(img, m, ours.upscale_fn(PROMPT, DEFAULT_NEGATIVE_PROMPT, seed=0,
                                                                  steps=self.steps, guidance_scale=guidance,
                                                                  noise_level=noise), multiple=ours.multiple)

        self.log("upscale")
        t = interleaved({"base": plain, "ours": restyle}, self.reps)
        common = f"{self.steps} steps, CFG {guidance}, noise_level {noise}, {str(self.dtype).removeprefix('torch.')}"
        self.add(row("upscale", t["base"], t["ours"],
                     f"StableDiffusionUpscalePipeline on the whole {w}x{h} photo scaled down by {ours.factor} "
                     f"({whole_low.width}x{whole_low.height} in, {w}x{h} out); " + common,
                     f"compose.upscale_region with Upscaler.__call__ (built by model.loading.prepare_upscale): the "
                     f"garment's padded box {list(plan)} scaled down to {low[0]}x{low[1]}, upscaled x{ours.factor}, "
                     "resized to the box and pasted with a feathered edge (far pixels bit-identical); " + common,
                     photo=[w, h], mask=f"garment box {list(box)}, a quarter of the photo", low_res=list(low)))

    # -- report ---------------------------------------------------------------------------------------------------
    def report(self, complete: bool = True) -> dict:
        import diffusers
        import transformers

        cuda = self.device.type == "cuda"
        return {
            "rows": self.rows,
            "skipped": self.skipped,
            "machine": {
                "cpu": _cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                "gpu": torch.cuda.get_device_name(self.device) if cuda else None, "platform": platform.platform(),
                "loadavg_before": self.load_before, "loadavg_after": _loadavg(),
            },
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "diffusers": diffusers.__version__, "transformers": transformers.__version__,
                         "numpy": np.__version__},
            "settings": {
                "mode": self.mode, "device": str(self.device), "dtype": str(self.dtype).removeprefix("torch."),
                "steps": self.steps, "reps": self.reps, "candidates": len(SEEDS), "guidance_scale": 7.5,
                "compile": bool(self.args.compile), "segment_photo": list(self.seg_size),
                "inpaint_sizes": [[self.small, self.small], list(self.hires)],
                "clipseg": "tiny" if self.mode == "tiny" else "CLIPSegConfig() with vision image_size 352 "
                           "(CIDAS/clipseg-rd64 shape), tiny CLIP tokenizer",
                "inpaint_model": {"tiny": "tiny SD (2 levels)",
                                  "default": "SD-shaped, scaled down: UNet block_out_channels (16, 32, 32, 32), "
                                             "layers_per_block 1, cross-attention at levels 1-2, 9 input channels; "
                                             "VAE (8, 16, 16, 16), 4 levels (factor 8, native 512); "
                                             "text encoder width 32",
                                  "full": "SD 1.5 inpainting architecture; SDXL inpainting for inpaint_sdxl_4x"}[self.mode],
                "upscale_photo": list(UPSCALE_PHOTO[self.mode]),
                "upscale_model": {"tiny": "tiny x4 upscaler (model.tiny)",
                                  "default": "x4 upscaler layout scaled down: UNet (16, 32, 32, 32), 7 input channels, "
                                             "1000 noise classes; VAE (8, 16, 16), factor 4",
                                  "full": "stabilityai/stable-diffusion-x4-upscaler architecture: UNet (256, 512, 512, "
                                          "1024), cross-attention 1024; VAE (128, 256, 512), factor 4"}[self.mode],
                "timing": "median of reps after one warm-up; baseline and restyle runs interleaved",
            },
            "command": "python -m model.bench " + " ".join(sys.argv[1:]),
            "wall_s": round(time.perf_counter() - self.started, 1),
            "complete": complete,
            "notes": self.notes,
        }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _loadavg() -> tuple[float, ...] | None:
    try:
        return tuple(round(v, 2) for v in os.getloadavg())
    except OSError:
        return None


def table(rows: list[dict]) -> str:
    lines = ["| row | baseline (s) | restyle (s) | speedup |", "|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| `{r['name']}` | {r['baseline_s']:.3f} | {r['restyle_s']:.3f} | {r['speedup']:.2f}x |")
    return "\n".join(lines)


def run(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m model.bench", description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="full-size SD 1.5 (+ SDXL row), 30 steps, fp16 on CUDA")
    ap.add_argument("--tiny", action="store_true", help="tiny models and photos: a smoke run in seconds")
    ap.add_argument("--out", help="write the JSON here")
    ap.add_argument("--reps", type=int, help="timed runs per side (default: 3, full 5, tiny 1)")
    ap.add_argument("--steps", type=int, help="denoising steps (default: 4, full 30, tiny 2)")
    ap.add_argument("--rows", help=f"comma-separated subset of {','.join(ROWS)}")
    ap.add_argument("--device", help="cpu, cuda, cuda:1 … (default: cuda when available)")
    ap.add_argument("--dtype", help="fp32, fp16, bf16 (default: fp16 on CUDA, fp32 on CPU)")
    ap.add_argument("--compile", action="store_true",
                    help="torch.compile both UNets (restyle: model.loading's path with warm-up at load)")
    args = ap.parse_args(argv)
    if args.rows and (unknown := set(args.rows.split(",")) - set(ROWS)):
        ap.error(f"unknown rows {sorted(unknown)}; choose from {ROWS}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    bench = Bench(args)
    if args.full and bench.device.type != "cuda" and not args.tiny:
        bench.log("warning: --full without CUDA runs full-size models on the CPU: expect hours")
    for phase in (bench.segment, bench.inpaint, bench.sdxl, bench.upscale):
        phase()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    result = bench.save(complete=True)
    print(table(result["rows"]))
    if args.out:
        bench.log(f"wrote {args.out}")
    return result


def main(argv: list[str] | None = None) -> int:
    run(argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
