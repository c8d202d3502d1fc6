"""Fast test doubles of the model, for tests whose subject is the conversation (not the pixels).

* ``FakeBackend`` speaks the engine's picture-level interface (``bot.backends.Backend``): segmentation finds the
  garment rectangle ``make_photo`` draws, for every prompt it knows; painting fills the mask with a colour that
  depends on the prompt and the seed.  Every call is recorded, so a test can assert that a message made *no* model
  call.
* ``FakeEndpoint`` answers the contract's requests (``model.schemas``, base64 pictures) the same way, for tests that
  run the real SageMaker backend and boto3 against a loopback runtime.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from types import SimpleNamespace

import numpy as np
from PIL import Image

from bot.backends import Backend, Paint, Painted
from model.images import b64decode, b64encode, decode_image, decode_mask, encode_image
from model.masks import bbox
from model.schemas import InpaintRequest, InpaintResponse, SegmentRequest, SegmentResponse, candidate_seeds

#: Fractions of the photo where ``tests.conftest.make_photo`` puts its garment (x0, y0, x1, y1).
GARMENT_BOX = (0.25, 0.5, 0.75, 0.875)


def garment_mask(size: tuple[int, int]) -> np.ndarray:
    """The rectangle ``make_photo`` draws its garment in, as a mask of ``size`` (w, h)."""
    w, h = size
    x0, y0, x1, y1 = (round(f * s) for f, s in zip(GARMENT_BOX, (w, h, w, h), strict=True))
    box = np.zeros((h, w), dtype=bool)
    box[y0:y1, x0:x1] = True
    return box


def fill(image: Image.Image, mask: np.ndarray, prompt: str, seed: int, reference: Image.Image | None = None,
         scale: float = 0.0) -> Image.Image:
    """``image`` with ``mask`` filled by the colour ``prompt`` and ``seed`` (and a swatch, at its scale) pick."""
    swatch = hashlib.sha1(reference.tobytes()).hexdigest() + f"@{scale:g}" if reference is not None else ""
    colour = hashlib.sha1(f"{prompt}|{seed}|{swatch}".encode()).digest()[:3]
    out = np.asarray(image.convert("RGB")).copy()
    out[mask] = np.frombuffer(colour, dtype=np.uint8)
    return Image.fromarray(out)


class FakeBackend(Backend):
    name = "fake"

    def __init__(self, missing: tuple[str, ...] = ()) -> None:
        self.missing = set(missing)  # garments this "segmenter" never finds
        self.segment_calls: list[list[str]] = []
        #: one entry per ``paint`` call: the Paint's fields, plus ``seeds``, ``seed`` (the first) and ``num_images``
        self.inpaint_calls: list[SimpleNamespace] = []
        self.upscale_calls: list[SimpleNamespace] = []

    @property
    def prompts(self) -> list[str]:
        """The prompt of each inpainting call, in order."""
        return [r.prompt for r in self.inpaint_calls]

    def _segment(self, small: Image.Image, garments: list[str], grow: int, threshold: float, protect: bool = True
                 ) -> dict[str, np.ndarray]:
        self.segment_calls.append(list(garments))
        box = garment_mask(small.size)
        return {g: box for g in garments if g not in self.missing}

    def paint(self, image: Image.Image, mask: np.ndarray, paint: Paint, seeds: list[int], progress=None, *,
              batch: bool = False) -> Painted:
        self.inpaint_calls.append(SimpleNamespace(**asdict(paint), seeds=list(seeds), seed=seeds[0],
                                                  num_images=len(seeds), batch=batch))
        pictures = []
        for seed in seeds:  # only the mask changes, whichever side its edge is: the rest stays bit-identical
            pictures.append((seed, fill(image, mask, paint.prompt, seed, paint.reference, paint.reference_scale)))
            if progress:
                progress(len(pictures), len(seeds))
        return Painted(pictures, 0, paint.look, 0.0)

    def upscale(self, image: Image.Image, mask: np.ndarray, paint: Paint, seed: int, progress=None) -> Painted:
        """"Upscaled": the mask's pixels one step brighter (a visible change there, none anywhere else)."""
        self.upscale_calls.append(SimpleNamespace(**asdict(paint), seed=seed, mask=mask))
        out = np.asarray(image.convert("RGB")).copy()
        out[mask] = np.minimum(out[mask].astype(np.int16) + 1, 255).astype(np.uint8)
        if progress:
            progress(paint.steps, paint.steps)
        return Painted([(seed, Image.fromarray(out))], 0, None, 0.0)


class FakeEndpoint:
    """The same double behind the contract: ``segment(SegmentRequest)`` and ``inpaint(InpaintRequest)``."""

    def __init__(self) -> None:
        self.segment_calls: list[SegmentRequest] = []
        self.inpaint_calls: list[InpaintRequest] = []

    def segment(self, req: SegmentRequest) -> SegmentResponse:
        self.segment_calls.append(req)
        img = decode_image(b64decode(req.image, field="image"), field="image")
        box = garment_mask(img.size)
        masks = [box for _ in req.prompts]
        return SegmentResponse(masks=[b64encode(encode_image(Image.fromarray(m.astype(np.uint8) * 255)))
                                      for m in masks],
                               scores=[1.0 for _ in masks], coverage=[float(m.mean()) for m in masks],
                               bboxes=[list(bbox(m)) for m in masks], found=[True for _ in masks],
                               prompts=list(req.prompts), width=img.width, height=img.height)

    def inpaint(self, req: InpaintRequest, progress=None) -> InpaintResponse:
        self.inpaint_calls.append(req)
        crop = decode_image(b64decode(req.image, field="image"), field="image")
        mask = decode_mask(b64decode(req.mask, field="mask"))
        seeds = candidate_seeds(req)
        images = [b64encode(encode_image(fill(crop, mask, req.prompt, s), "png")) for s in seeds]
        return InpaintResponse(images=images, seeds=seeds, width=crop.width, height=crop.height, format="png",
                               crop_box=[0, 0, crop.width, crop.height], look=None)
