"""Garment masks from CLIPSeg: every prompt (garments + protected regions) in one batched forward.

``Segmenter`` receives a loaded ``CLIPSegForImageSegmentation`` and its processor (``model.loading`` loads them);
it never downloads anything.  The vision encoder runs once per image and its activations are shared by all
prompts; text embeddings are cached per prompt, so 16 prompts cost one ViT pass plus 16 small decoder passes.
The ViT stops at the last layer the decoder reads (layer 10 of 12 for rd64), and the image is resized to CLIPSeg's
input size and normalized without the processor's per-call overhead (checked to give its exact pixels).

Post-processing never touches the whole photo: CLIPSeg's map is ~352x352, so a garment's mask can only be True
where some low-resolution probability is over the threshold.  Each mask is upsampled (bilinear, as
``F.interpolate``), thresholded and cleaned inside that window (plus the dilation margin) only, and the protected
regions are upsampled only where they overlap it — the same masks as doing all of it at full resolution, at a
fraction of the cost on a 1024x1536 photo.
"""

from __future__ import annotations

import functools
import inspect
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from model import masks as M
from model import parallel
from model.schemas import DEFAULT_PROTECT


@dataclass
class GarmentMask:
    prompt: str
    mask: np.ndarray  # bool HxW at image resolution
    score: float
    coverage: float
    bbox: M.BBox | None
    found: bool


@dataclass
class Segmentation:
    garments: list[GarmentMask]
    width: int
    height: int
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def union(self) -> np.ndarray:
        out = np.zeros((self.height, self.width), dtype=bool)
        for g in self.garments:
            if g.found:
                out |= g.mask
        return out


class Segmenter:
    def __init__(self, model, processor, *, cache_size: int = 256) -> None:
        self.model = model.eval()
        self.processor = processor
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self._text_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._input_size = _fixed_input_size(processor.image_processor)
        self._layers = _vision_layers_needed(model)

    # -- model pieces -------------------------------------------------------------------------------------------
    def _text_embeddings(self, prompts: list[str]) -> torch.Tensor:
        """Conditional embeddings per prompt; cached (LRU), safe to call from several threads."""
        with self._lock:
            known = {p: self._text_cache[p] for p in dict.fromkeys(prompts) if p in self._text_cache}
        missing = [p for p in dict.fromkeys(prompts) if p not in known]
        if missing:
            # CLIP reads at most 77 tokens: a longer prompt is cut there (its first words matter most)
            tok = self.processor.tokenizer(missing, padding=True, truncation=True, return_tensors="pt",
                                           max_length=self.model.config.text_config.max_position_embeddings)
            emb = self.model.get_conditional_embeddings(
                batch_size=len(missing), input_ids=tok["input_ids"].to(self.device),
                attention_mask=tok["attention_mask"].to(self.device))
            known.update(zip(missing, emb, strict=True))
            with self._lock:
                for p in missing:
                    self._text_cache[p] = known[p]
                    self._text_cache.move_to_end(p)
                while len(self._text_cache) > self._cache_size:
                    self._text_cache.popitem(last=False)
        return torch.stack([known[p] for p in prompts])

    def pixels(self, image: Image.Image) -> torch.Tensor:
        """The processor's ``pixel_values`` (1, 3, h, w) for ``image``, on the model's device and dtype."""
        if self._input_size is not None:
            # The processor's own steps, done directly: PIL resize, rescale in float64, normalize in float32.
            size, resample, scale, mean, std = self._input_size
            if image.mode == "RGB":
                small = image if image.size == size else image.resize(size, resample)
                arr = (np.asarray(small).astype(np.float64) * scale).astype(np.float32)
                arr = (arr - mean) / std
                return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))[None]).to(self.device, self.dtype)
        pixels = self.processor.image_processor(images=image, return_tensors="pt")["pixel_values"]
        return pixels.to(self.device, self.dtype)

    def _vision_states(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        """The ViT hidden states the decoder reads (``extract_layers``), skipping the layers after the last one."""
        vm = self.model.clip.vision_model
        if self._layers is None:
            out = vm(pixel_values=pixels, output_hidden_states=True, interpolate_pos_encoding=True)
            return [out.hidden_states[i + 1] for i in self.model.extract_layers]
        h = vm.pre_layrnorm(vm.embeddings(pixels, interpolate_pos_encoding=True))
        states = {}
        for i, layer in enumerate(vm.encoder.layers[: self._layers]):
            h = _run_layer(layer, h)
            states[i] = h
        return [states[i] for i in self.model.extract_layers]

    @torch.inference_mode()
    def forward(self, pixels: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """Sigmoid probabilities (len(prompts), h, w) at CLIPSeg's own resolution for prepared ``pixels``."""
        n = len(prompts)
        acts = [a.expand(n, -1, -1) for a in self._vision_states(pixels)]
        cond = self._text_embeddings(prompts).to(self.dtype)
        logits = self.model.decoder(acts, cond).logits
        return torch.sigmoid(logits.float().reshape(n, *logits.shape[-2:]))

    def probabilities(self, image: Image.Image, prompts: list[str]) -> torch.Tensor:
        """Sigmoid probabilities (len(prompts), h, w) at CLIPSeg's own resolution."""
        return self.forward(self.pixels(image), prompts)

    # -- post-processing ----------------------------------------------------------------------------------------
    @staticmethod
    def _interp(out_len: int, in_len: int) -> tuple[np.ndarray, ...]:
        return _bilinear_taps(out_len, in_len)

    def _upsample(self, prob: np.ndarray, size: tuple[int, int], box: M.BBox) -> np.ndarray:
        """``F.interpolate(prob, size=(h, w), mode="bilinear")[y0:y1, x0:x1]``, computing only that window."""
        (w, h), (x0, y0, x1, y1) = size, box
        r0, r1, ry = (t[y0:y1] for t in self._interp(h, prob.shape[0]))
        c0, c1, cx = (t[x0:x1] for t in self._interp(w, prob.shape[1]))
        rows = prob[r0] + (prob[r1] - prob[r0]) * ry[:, None]
        return rows[:, c0] + (rows[:, c1] - rows[:, c0]) * cx

    def _reach(self, prob: np.ndarray, threshold: float, size: tuple[int, int]) -> M.BBox | None:
        """Full-resolution box outside which the upsampled ``prob`` cannot exceed ``threshold``, or None."""
        # bilinear values are convex combinations of their taps: over the threshold needs a tap over it
        low = M.bbox(prob > threshold - 1e-6)
        if low is None:
            return None
        (w, h), (lx0, ly0, lx1, ly1) = size, low
        r0, r1, _ = self._interp(h, prob.shape[0])
        c0, c1, _ = self._interp(w, prob.shape[1])
        ys = np.flatnonzero((r1 >= ly0) & (r0 < ly1))
        xs = np.flatnonzero((c1 >= lx0) & (c0 < lx1))
        if ys.size == 0 or xs.size == 0:  # shrinking: those rows/columns are never sampled
            return None
        return int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1

    def _garment(self, prompt: str, prob_low: np.ndarray, size: tuple[int, int], *, threshold: float,
                 negatives: list[tuple[np.ndarray, M.BBox]], negative_threshold: float, dilate: int,
                 min_pixels: int, min_coverage: float) -> GarmentMask:
        """One prompt's low-resolution probabilities → its clean mask at ``size``, computed in its window only."""
        w, h = size
        missing = GarmentMask(prompt=prompt, mask=np.zeros((h, w), dtype=bool), score=0.0, coverage=0.0, bbox=None,
                              found=False)
        reach = self._reach(prob_low, threshold, size)
        if reach is None:
            return missing
        margin = max(dilate, 0) + 1  # room to grow, and a background ring so hole filling sees the outside
        x0, y0 = max(0, reach[0] - margin), max(0, reach[1] - margin)
        x1, y1 = min(w, reach[2] + margin), min(h, reach[3] + margin)
        prob = self._upsample(prob_low, size, (x0, y0, x1, y1))
        exclude = None
        for neg, nb in negatives:  # protected regions, only where they overlap this window
            ix0, iy0, ix1, iy1 = max(x0, nb[0]), max(y0, nb[1]), min(x1, nb[2]), min(y1, nb[3])
            if ix0 >= ix1 or iy0 >= iy1:
                continue
            if exclude is None:
                exclude = np.zeros(prob.shape, dtype=bool)
            exclude[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] |= (
                self._upsample(neg, size, (ix0, iy0, ix1, iy1)) > negative_threshold)
        part = M.refine(prob, threshold, exclude=exclude, dilate=dilate, min_pixels=min_pixels)
        count = int(np.count_nonzero(part))
        cov = count / float(w * h)
        if count == 0 or cov < min_coverage:
            return missing
        core = part & (prob > threshold)
        score = float(prob[core].mean()) if core.any() else 0.0
        mask = np.zeros((h, w), dtype=bool)
        mask[y0:y1, x0:x1] = part
        bx0, by0, bx1, by1 = M.bbox(part)  # type: ignore[misc]
        return GarmentMask(prompt=prompt, mask=mask, score=score, coverage=cov,
                           bbox=(bx0 + x0, by0 + y0, bx1 + x0, by1 + y0), found=True)

    # -- the public call ----------------------------------------------------------------------------------------
    def __call__(
        self,
        image: Image.Image,
        prompts: list[str],
        negative_prompts: list[str] | None = None,
        *,
        threshold: float = 0.4,
        negative_threshold: float | None = None,
        dilate: int = 8,
        min_area: float = 0.0005,
        min_coverage: float = 0.002,
    ) -> Segmentation:
        t0 = time.perf_counter()
        negatives = DEFAULT_PROTECT if negative_prompts is None else negative_prompts
        negatives = [n for n in negatives if n not in prompts]
        w, h = image.size
        probs = self.probabilities(image, list(prompts) + negatives).cpu().numpy()
        t1 = time.perf_counter()
        neg_thr = threshold if negative_threshold is None else negative_threshold
        neg_maps = [(p, box) for p in probs[len(prompts):]
                    if (box := self._reach(p, neg_thr, (w, h))) is not None]
        settings = {"threshold": threshold, "negatives": neg_maps, "negative_threshold": neg_thr,
                    "dilate": dilate, "min_pixels": int(min_area * w * h), "min_coverage": min_coverage}
        jobs = [functools.partial(self._garment, prompt, probs[i], (w, h), **settings)
                for i, prompt in enumerate(prompts)]
        # Masks are independent and numpy/scipy release the GIL on big arrays: several prompts are cleaned in
        # parallel (each result is the same as alone, order kept; 16 masks at 1024x1536 on 2 cores: 102 → 61 ms).
        garments = parallel.map_all(lambda job: job(), jobs)
        t2 = time.perf_counter()
        timings = {"forward": (t1 - t0) * 1e3, "postprocess": (t2 - t1) * 1e3}
        return Segmentation(garments=garments, width=w, height=h, timings_ms=timings)


@functools.lru_cache(maxsize=64)  # photo sizes repeat; bounded so a long-running server does not grow
def _bilinear_taps(out_len: int, in_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of ``F.interpolate(mode="bilinear", align_corners=False)`` along one axis."""
    scale = np.float32(in_len / out_len)
    src = np.maximum((np.arange(out_len, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5), 0)
    i0 = np.minimum(src.astype(np.int64), in_len - 1)
    i1 = np.minimum(i0 + 1, in_len - 1)
    frac = np.clip(src - i0, 0, 1).astype(np.float32)
    return i0, i1, frac


def _fixed_input_size(image_processor):
    """((w, h), PIL resample, rescale factor, mean, std) when the processor PIL-resizes to one size, then rescales
    and normalizes — and doing those steps directly gives exactly its pixels (checked once on a small image) — else
    None (the processor is then called as it is)."""
    ip = image_processor
    size = getattr(ip, "size", None)
    if isinstance(size, dict):  # transformers 4.x; 5.x has a SizeDict with attributes
        height, width = size.get("height"), size.get("width")
    else:
        height, width = getattr(size, "height", None), getattr(size, "width", None)
    if not (getattr(ip, "do_resize", False) and getattr(ip, "do_rescale", False) and getattr(ip, "do_normalize", False)) \
            or getattr(ip, "do_center_crop", False) or getattr(ip, "do_pad", False) or not (height and width):
        return None
    try:
        wh = (int(width), int(height))
        plan = (wh, int(ip.resample), float(ip.rescale_factor), np.asarray(ip.image_mean, dtype=np.float32),
                np.asarray(ip.image_std, dtype=np.float32))
        probe = Image.fromarray(np.random.RandomState(0).randint(0, 256, (wh[1] + 37, wh[0] + 21, 3), np.uint8))
        ref = ip(images=probe, return_tensors="pt")["pixel_values"]
        arr = (np.asarray(probe.resize(wh, plan[1])).astype(np.float64) * plan[2]).astype(np.float32)
        fast = torch.from_numpy(np.ascontiguousarray(((arr - plan[3]) / plan[4]).transpose(2, 0, 1))[None])
        return plan if ref.dtype == fast.dtype and torch.equal(ref, fast) else None
    except Exception:  # noqa: BLE001 - any surprise means: let the processor do all of it
        return None


def _run_layer(layer, hidden: torch.Tensor) -> torch.Tensor:
    if "causal_attention_mask" in inspect.signature(layer.forward).parameters:  # transformers 4.x
        out = layer(hidden, None, None)
    else:
        out = layer(hidden, None)
    return out[0] if isinstance(out, tuple) else out


@torch.inference_mode()
def _vision_layers_needed(model) -> int | None:
    """How many ViT layers the decoder needs, when running only those reproduces the model's own states."""
    vm = model.clip.vision_model
    layers = max(model.extract_layers) + 1
    if layers >= len(vm.encoder.layers):
        return None
    try:
        p = next(model.parameters())
        side = 2 * vm.config.patch_size  # 4 patches: cheap, and it exercises the same layers
        pixels = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(0)).to(p.device, p.dtype)
        ref = vm(pixel_values=pixels, output_hidden_states=True, interpolate_pos_encoding=True).hidden_states
        h = vm.pre_layrnorm(vm.embeddings(pixels, interpolate_pos_encoding=True))
        for i, layer in enumerate(vm.encoder.layers[:layers]):
            h = _run_layer(layer, h)
            if i in model.extract_layers and not torch.allclose(h, ref[i + 1], rtol=1e-3, atol=1e-4):
                return None
        return layers
    except Exception:  # noqa: BLE001 - internals changed: run the whole ViT
        return None
