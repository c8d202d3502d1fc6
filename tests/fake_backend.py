"""A fast test double of the model backend, for tests whose subject is the conversation (not the pixels).

It speaks the same contract as the real backends (``model.schemas`` requests and responses, base64 PNGs), so the
engine cannot tell it apart: segmentation answers the garment rectangle ``make_photo`` draws, for every prompt
it knows; inpainting fills the masked part of the crop with a colour that depends on the prompt and the seed.
Every call is recorded, so a test can assert that a message made *no* model call.
"""

from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image

from bot.backends import Backend
from model.images import b64decode, b64encode, decode_image, decode_mask, encode_image
from model.schemas import InpaintRequest, InpaintResponse, SegmentRequest, SegmentResponse

#: Fractions of the photo where ``tests.conftest.make_photo`` puts its garment (x0, y0, x1, y1).
GARMENT_BOX = (0.25, 0.5, 0.75, 0.875)


class FakeBackend(Backend):
    name = "fake"

    def __init__(self, missing: tuple[str, ...] = ()) -> None:
        self.missing = set(missing)  # garments this "segmenter" never finds
        self.segment_calls: list[list[str]] = []
        self.inpaint_calls: list[InpaintRequest] = []

    @property
    def prompts(self) -> list[str]:
        """The prompt of each inpainting call, in order."""
        return [r.prompt for r in self.inpaint_calls]

    def segment(self, req: SegmentRequest) -> SegmentResponse:
        self.segment_calls.append(list(req.prompts))
        img = decode_image(b64decode(req.image, field="image"), field="image")
        w, h = img.size
        x0, y0, x1, y1 = (round(f * s) for f, s in zip(GARMENT_BOX, (w, h, w, h), strict=True))
        box = np.zeros((h, w), dtype=bool)
        box[y0:y1, x0:x1] = True
        empty = np.zeros_like(box)
        masks = [empty if p in self.missing else box for p in req.prompts]
        return SegmentResponse(masks=[b64encode(encode_image(Image.fromarray(m.astype(np.uint8) * 255)))
                                      for m in masks],
                               scores=[float(m.any()) for m in masks], coverage=[float(m.mean()) for m in masks],
                               bboxes=[[x0, y0, x1, y1] if m.any() else None for m in masks],
                               found=[bool(m.any()) for m in masks], prompts=list(req.prompts), width=w, height=h)

    def inpaint(self, req: InpaintRequest, progress=None) -> InpaintResponse:
        self.inpaint_calls.append(req)
        crop = np.asarray(decode_image(b64decode(req.image, field="image"), field="image").convert("RGB")).copy()
        mask = decode_mask(b64decode(req.mask, field="mask"))
        seeds = list(req.seeds or [req.seed + i for i in range(req.num_images)])
        images = []
        for seed in seeds:
            colour = hashlib.sha1(f"{req.prompt}|{seed}".encode()).digest()[:3]
            out = crop.copy()
            out[mask] = np.frombuffer(colour, dtype=np.uint8)
            images.append(b64encode(encode_image(Image.fromarray(out), "png")))
            if progress:
                progress(len(images), len(seeds))
        h, w = crop.shape[:2]
        return InpaintResponse(images=images, seeds=seeds, width=w, height=h, format="png", crop_box=[0, 0, w, h],
                               look=None)
