"""Crop-to-mask geometry and compositing: where to generate (or upscale), and how to put the result back.

Generating on the whole catalog photo is slow and soft (SD works at ~512 px).  Instead: take the mask's bbox, pad it
with context, widen it to an aspect ratio the model handles, resize that crop to the model's native resolution,
generate, resize back and paste with a feathered edge.  Pixels farther than ``feather`` from the mask are copied
from the input unchanged — bit-identical at any input size.  With ``inside=True`` the feathered band lies within the
mask instead: every pixel outside the mask is the input's (a new background around a person who stays untouched).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image
from scipy import ndimage

from model import parallel
from model.masks import BBox, bbox
from model.schemas import MAX_UPSCALE_PIXELS


def crop_box(mask_box: BBox, image_size: tuple[int, int], padding: int, aspect: float | None = None) -> BBox:
    """Pad ``mask_box`` by ``padding`` and (optionally) widen it towards ``aspect`` (w/h), inside the image."""
    w, h = image_size
    x0, y0, x1, y1 = mask_box
    x0, y0, x1, y1 = x0 - padding, y0 - padding, x1 + padding, y1 + padding
    if aspect is not None:
        bw, bh = x1 - x0, y1 - y0
        if bw / bh < aspect:  # too tall: widen
            grow_w = math.ceil(bh * aspect) - bw
            x0 -= grow_w // 2
            x1 += grow_w - grow_w // 2
        else:  # too wide: heighten
            grow_h = math.ceil(bw / aspect) - bh
            y0 -= grow_h // 2
            y1 += grow_h - grow_h // 2
    # shift back inside the image, then clamp what still sticks out
    if x0 < 0:
        x1, x0 = x1 - x0, 0
    if y0 < 0:
        y1, y0 = y1 - y0, 0
    if x1 > w:
        x0, x1 = max(0, x0 - (x1 - w)), w
    if y1 > h:
        y0, y1 = max(0, y0 - (y1 - h)), h
    return int(x0), int(y0), int(x1), int(y1)


def generation_size(box: BBox, native: int, multiple: int) -> tuple[int, int]:
    """Size (w, h) to generate a crop at: at most ``native``² pixels, the crop's aspect, multiples of ``multiple``."""
    bw, bh = box[2] - box[0], box[3] - box[1]
    aspect = bw / bh
    gw = math.sqrt(native * native * aspect)
    gh = gw / aspect
    # keep either side within [native/2, 2*native] so SD 1.5 / SDXL stay in their comfort zone
    def snap(v: float) -> int:
        v = min(max(v, native / 2), native * 2)
        return max(multiple, int(round(v / multiple)) * multiple)

    w, h = snap(gw), snap(gh)
    # Rounding both sides up would generate more pixels than the model's native area (slower, no sharper):
    # step a side down, whichever keeps the aspect closer, until it fits.
    floor = snap(native / 2)
    while w * h > native * native:
        options = [(w2, h2) for w2, h2 in ((w - multiple, h), (w, h - multiple)) if min(w2, h2) >= floor]
        if not options:
            break
        w, h = min(options, key=lambda s: abs(math.log(s[0] / s[1] / aspect)))
    return w, h


def plan_crop(mask: np.ndarray, native: int, multiple: int, padding: int, feather: int,
              whole: bool = False) -> tuple[BBox, tuple[int, int]]:
    """Crop box in the photo and the size to generate it at.  ``whole`` generates on the entire photo."""
    h, w = mask.shape
    mb = bbox(mask)
    if mb is None:
        raise ValueError("empty mask: nothing to inpaint")
    if whole:
        box: BBox = (0, 0, w, h)
    else:
        pad = max(padding, feather + 2)
        # first a padded box, then widen it to the aspect the model will generate at
        rough = crop_box(mb, (w, h), pad)
        gw, gh = generation_size(rough, native, multiple)
        box = crop_box(mb, (w, h), pad, aspect=gw / gh)
    return box, generation_size(box, native, multiple)


def feather_alpha(mask: np.ndarray, feather: int, inside: bool = False) -> np.ndarray:
    """Float alpha in [0, 1]: 1 on the mask, falling linearly to exactly 0 at ``feather`` pixels outside it.

    ``inside``: the band lies within the mask instead — exactly 0 everywhere outside it, rising to 1 at ``feather``
    pixels in from its edge (the array's border is not an edge: a mask that reaches it stays 1 there).
    """
    if feather <= 0 or (inside and mask.all()):  # (scipy measures an all-True array from a corner outside it)
        return mask.astype(np.float32)
    if inside:
        return np.clip(ndimage.distance_transform_edt(mask) / float(feather), 0.0, 1.0).astype(np.float32)
    dist = ndimage.distance_transform_edt(~mask)
    return np.clip(1.0 - dist / float(feather), 0.0, 1.0).astype(np.float32)


def _blend_plan(mask_crop: np.ndarray, feather: int, inside_band: bool = False
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(alpha, opaque, band): alpha as ``feather_alpha``; where it is exactly 1; flat indices where 0 < alpha < 1."""
    alpha = feather_alpha(mask_crop, feather, inside_band)
    opaque = alpha >= 1.0
    band = np.flatnonzero((alpha > 0) & ~opaque)
    return alpha, opaque, band


def paste_all(original: Image.Image, generated: list[Image.Image], mask: np.ndarray, box: BBox,
              feather: int, inside: bool = False) -> list[Image.Image]:
    """Resize each of ``generated`` into ``box`` and blend it over ``original`` with a feathered ``mask``.

    ``inside``: the feathered band lies within the mask (``feather_alpha``), so every pixel outside the mask is the
    original's, bit-identical.

    The blend plan (one distance transform) is made once for all candidates.  Outside the feathered mask alpha is
    exactly 0 and the original's bytes are copied, not recomputed; where alpha is 1 the generated bytes are copied;
    only the feathered band is blended.
    """
    x0, y0, x1, y1 = box
    region = np.asarray(original.crop(box), dtype=np.uint8)
    alpha, opaque, band = _blend_plan(mask[y0:y1, x0:x1], feather, inside)
    channels = region.shape[2] if region.ndim == 3 else 1
    where_opaque = opaque.reshape(opaque.shape + (1,) * (region.ndim - 2))
    a = alpha.reshape(-1)[band][:, None]
    r = region.reshape(-1, channels)[band].astype(np.float32)

    def one(generated_i: Image.Image) -> Image.Image:
        gen = generated_i if generated_i.size == (x1 - x0, y1 - y0) else \
            generated_i.resize((x1 - x0, y1 - y0), Image.LANCZOS)
        gen_arr = np.asarray(gen, dtype=np.uint8)
        out_region = region.copy()
        np.copyto(out_region, gen_arr, where=where_opaque)
        if band.size:
            g = gen_arr.reshape(-1, channels)[band].astype(np.float32)
            out_region.reshape(-1, channels)[band] = np.clip(r * (1.0 - a) + g * a + 0.5, 0, 255).astype(np.uint8)
        full = original.copy()
        full.paste(Image.fromarray(out_region), (x0, y0))
        return full

    return parallel.map_all(one, generated)  # candidates side by side (PIL and numpy release the GIL)


def paste(original: Image.Image, generated: Image.Image, mask: np.ndarray, box: BBox, feather: int,
          inside: bool = False) -> Image.Image:
    """``paste_all`` for one picture."""
    return paste_all(original, [generated], mask, box, feather, inside)[0]


def overlay(image: Image.Image, mask: np.ndarray, color: tuple[int, int, int] = (255, 0, 96),
            opacity: float = 0.45) -> Image.Image:
    """A picture of a mask: the photo with the masked region tinted (for Slack/terminal previews)."""
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    tint = np.array(color, dtype=np.float32)
    a = mask[..., None].astype(np.float32) * opacity
    return Image.fromarray(np.clip(base * (1 - a) + tint * a + 0.5, 0, 255).astype(np.uint8))


# -- upscaling the garment region to the photo's own resolution ------------------------------------------------------
#: The x4 upscaler's factor: its output has 4x the input's width and height.
UPSCALE_FACTOR = 4
#: The largest low-res region sent to the upscaler (its output is ``UPSCALE_FACTOR``² times that): bounds memory.
MAX_UPSCALE_LOW_PIXELS = MAX_UPSCALE_PIXELS


def plan_upscale(mask: np.ndarray, image_size: tuple[int, int], *, factor: int = UPSCALE_FACTOR, padding: int = 32,
                 feather: int = 8, max_low_pixels: int = MAX_UPSCALE_LOW_PIXELS,
                 multiple: int = 8) -> tuple[BBox, tuple[int, int]]:
    """Where to upscale and at what size to feed the upscaler: ``(box, low_size)``.

    ``box`` is the mask's bbox in the full-resolution photo, padded by ``padding`` (at least ``feather + 2``) and
    kept inside the photo; ``low_size`` (w, h) is the box divided by ``factor``, scaled down to at most
    ``max_low_pixels`` pixels when the box is larger (memory stays bounded; the upscaler's output is then resized up
    to the box), in multiples of ``multiple`` (the upscaler's UNet downsamples by 8).
    """
    w, h = image_size
    if mask.shape != (h, w):
        raise ValueError(f"`mask` must be {w}x{h} like the photo, got {mask.shape[1]}x{mask.shape[0]}")
    mb = bbox(mask)
    if mb is None:
        raise ValueError("empty mask: nothing to upscale")
    if factor < 1:
        raise ValueError(f"`factor` must be >= 1, got {factor}")
    box = crop_box(mb, (w, h), max(padding, feather + 2))
    bw, bh = box[2] - box[0], box[3] - box[1]
    lw, lh = bw / factor, bh / factor
    if lw * lh > max_low_pixels:
        k = math.sqrt(max_low_pixels / (lw * lh))
        lw, lh = lw * k, lh * k

    def snap(v: float) -> int:  # down to a multiple (never up: the area cap holds), at least one multiple
        return max(multiple, int(v // multiple) * multiple)

    return box, (snap(lw), snap(lh))


def needs_upscale(box: BBox, native: int) -> bool:
    """Whether a crop ``box`` holds more pixels than a ``native``² generation gave it, i.e. the garment was scaled up
    into it and upscaling can add detail.  At or below ``native``² the garment already has the photo's resolution."""
    return (box[2] - box[0]) * (box[3] - box[1]) > native * native


def upscale_region(image: Image.Image, mask: np.ndarray, upscale_fn, *, padding: int = 32, feather: int = 8,
                   factor: int = UPSCALE_FACTOR, max_low_pixels: int = MAX_UPSCALE_LOW_PIXELS, multiple: int = 8,
                   native: int | None = None) -> Image.Image:
    """The garment region of ``image`` brought to the photo's own resolution by ``upscale_fn``, pasted back.

    1. ``plan_upscale``: the padded box around ``mask`` and the low-res size; 2. crop the box and resize it down to
    that size; 3. ``upscale_fn(low) -> Image`` (in process: ``Upscaler``; SageMaker: an endpoint call carrying only
    the low-res region); 4. resize its answer to the box and ``paste`` it with a ``feather``-pixel edge: pixels
    farther than ``feather`` from the mask are bit-identical to ``image``, and the result has ``image``'s size.

    ``native``: the side of the generation size the garment was made at; when given and the box holds no more than
    ``native``² pixels (``needs_upscale``), ``AlreadyFullResolution`` is raised before any work.
    """
    from model.errors import AlreadyFullResolution

    # 1. Plan
    box, low_size = plan_upscale(mask, image.size, factor=factor, padding=padding, feather=feather,
                                 max_low_pixels=max_low_pixels, multiple=multiple)
    if native is not None and not needs_upscale(box, native):
        raise AlreadyFullResolution(
            f"the garment region is {box[2] - box[0]}x{box[3] - box[1]} pixels, no more than the {native}x{native} "
            "it was generated at: it is already at the photo's resolution, there is nothing to upscale")
    # 2. Crop, and bring the region down to the upscaler's input size
    low = image.crop(box).convert("RGB").resize(low_size, Image.LANCZOS)
    # 3. Upscale
    high = upscale_fn(low)
    # 4. Resize to the box and paste with a feathered edge (``paste`` resizes with LANCZOS)
    return paste(image, high.convert(image.mode), mask, box, feather)
