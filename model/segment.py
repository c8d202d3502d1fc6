"""Garment masks from CLIPSeg: every prompt (garments + protected regions) in one batched forward.

``Segmenter`` receives a loaded ``CLIPSegForImageSegmentation`` and its processor (``model.loading`` loads them);
it never downloads anything.  The vision encoder runs once per image and its activations are shared by all
prompts; text embeddings are cached per prompt, so 16 prompts cost one ViT pass plus 16 small decoder passes.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from model import masks as M
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

    # -- model pieces -------------------------------------------------------------------------------------------
    def _text_embeddings(self, prompts: list[str]) -> torch.Tensor:
        missing = [p for p in dict.fromkeys(prompts) if p not in self._text_cache]
        if missing:
            tok = self.processor.tokenizer(missing, padding=True, return_tensors="pt")
            emb = self.model.get_conditional_embeddings(
                batch_size=len(missing), input_ids=tok["input_ids"].to(self.device),
                attention_mask=tok["attention_mask"].to(self.device))
            with self._lock:
                for p, e in zip(missing, emb, strict=True):
                    self._text_cache[p] = e
                    self._text_cache.move_to_end(p)
                while len(self._text_cache) > self._cache_size:
                    self._text_cache.popitem(last=False)
        return torch.stack([self._text_cache[p] for p in prompts])

    @torch.inference_mode()
    def probabilities(self, image: Image.Image, prompts: list[str]) -> torch.Tensor:
        """Sigmoid probabilities (len(prompts), h, w) at CLIPSeg's own resolution."""
        pixels = self.processor.image_processor(images=image, return_tensors="pt")["pixel_values"]
        pixels = pixels.to(self.device, self.dtype)
        vision = self.model.clip.vision_model(pixel_values=pixels, output_hidden_states=True,
                                              interpolate_pos_encoding=True)
        n = len(prompts)
        acts = [vision.hidden_states[i + 1].expand(n, -1, -1) for i in self.model.extract_layers]
        cond = self._text_embeddings(prompts).to(self.dtype)
        logits = self.model.decoder(acts, cond).logits
        return torch.sigmoid(logits.float().reshape(n, *logits.shape[-2:]))

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
        probs = self.probabilities(image, list(prompts) + negatives)
        t1 = time.perf_counter()
        # 2. up to image resolution in one interpolate call (bilinear on probabilities, like CLIPSeg's demo)
        full = F.interpolate(probs[None], size=(h, w), mode="bilinear", align_corners=False)[0].cpu().numpy()
        t2 = time.perf_counter()
        neg_thr = threshold if negative_threshold is None else negative_threshold
        exclude = (full[len(prompts):] > neg_thr).any(axis=0) if negatives else None
        garments = []
        for i, prompt in enumerate(prompts):
            mask = M.refine(full[i], threshold, exclude=exclude, dilate=dilate, min_area=min_area)
            cov = M.coverage(mask)
            found = cov >= min_coverage and cov > 0
            core = mask & (full[i] > threshold)
            score = float(full[i][core].mean()) if core.any() else 0.0
            garments.append(GarmentMask(prompt=prompt, mask=mask if found else np.zeros_like(mask),
                                        score=score if found else 0.0, coverage=cov if found else 0.0,
                                        bbox=M.bbox(mask) if found else None, found=bool(found)))
        t3 = time.perf_counter()
        timings = {"forward": (t1 - t0) * 1e3, "upsample": (t2 - t1) * 1e3, "refine": (t3 - t2) * 1e3}
        return Segmentation(garments=garments, width=w, height=h, timings_ms=timings)
