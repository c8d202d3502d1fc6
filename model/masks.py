"""Mask refinement and mask geometry — the only place masks are thresholded, cleaned, grown, resized or measured.

CLIPSeg gives a soft, low-resolution probability map; a garment mask good enough for inpainting wants: a threshold,
no holes (a belt buckle is still the skirt), no specks (a red bag across the room is not the skirt), a margin so
the new garment can be a different shape, and the protected regions (face, hands, hair) taken out again.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image
from scipy import ndimage

BBox = tuple[int, int, int, int]  # x0, y0, x1, y1 — x1/y1 exclusive


def grow(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Dilate a boolean mask by a disc of radius ``pixels`` (exact Euclidean distance)."""
    if pixels <= 0 or not mask.any():
        return mask.copy()
    box = bbox(mask)
    assert box is not None
    x0, y0, x1, y1 = box
    h, w = mask.shape
    # Only the neighbourhood of the mask can change: work on that window (big photos, small garments).
    wx0, wy0 = max(0, x0 - pixels), max(0, y0 - pixels)
    wx1, wy1 = min(w, x1 + pixels), min(h, y1 + pixels)
    out = mask.copy()
    out[wy0:wy1, wx0:wx1] = _disc_dilate(mask[wy0:wy1, wx0:wx1], pixels)
    return out


def _disc_dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """True where a True pixel lies within Euclidean distance ``r`` — ``distance_transform_edt(~mask) <= r``.

    A pixel is within ``r`` of the mask iff for some row offset ``dy`` (|dy| <= r) row ``y + dy`` has a True pixel
    at most ``isqrt(r² - dy²)`` columns away.  So: widen the rows step by step (shifted ORs) and OR each widening
    into the rows ``dy`` away that need it — exact, and ~10x faster than the distance transform for the usual
    radii (memory-bound ORs; for very large radii the distance transform wins).
    """
    h, w = mask.shape
    if r > 64:
        return ndimage.distance_transform_edt(~mask) <= r
    offsets: dict[int, list[int]] = {}
    for dy in range(-min(r, h - 1), min(r, h - 1) + 1):
        offsets.setdefault(math.isqrt(r * r - dy * dy), []).append(dy)
    wide = mask.copy()  # rows widened by k columns on both sides
    out = np.zeros_like(mask)
    k = 0
    for need in sorted(offsets):
        while k < need:
            k += 1
            if k < w:
                wide[:, k:] |= mask[:, :-k]
                wide[:, :-k] |= mask[:, k:]
        for dy in offsets[need]:
            if dy >= 0:
                out[: h - dy] |= wide[dy:]
            else:
                out[-dy:] |= wide[: h + dy]
    return out


def drop_specks(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    """Remove connected components smaller than ``min_pixels`` (always keeps the largest one)."""
    if min_pixels <= 1 or not mask.any():
        return mask
    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    small = sizes < min_pixels
    small[0] = False
    small[int(sizes.argmax())] = False
    return _set_components(mask, labels, np.flatnonzero(small), False)


def _set_components(mask: np.ndarray, labels: np.ndarray, which: np.ndarray, value: bool) -> np.ndarray:
    """``mask`` with the pixels of components ``which`` set to ``value``.

    A few components: only their bounding boxes are touched; many: one lookup over the label image.
    """
    if which.size == 0:
        return mask
    if which.size > 8:
        table = np.zeros(int(labels.max()) + 1, dtype=bool)
        table[which] = True
        return mask | table[labels] if value else mask & ~table[labels]
    out = mask.copy()
    slices = ndimage.find_objects(labels, max_label=int(which.max()))
    for k in which:
        sl = slices[k - 1]
        out[sl][labels[sl] == k] = value
    return out


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill the background regions not connected to the border — ``ndimage.binary_fill_holes``' result.

    One labelling pass over the background (4-connected, like ``binary_fill_holes``' default structure) instead of
    an iterated dilation: the same mask, several times faster on photo-sized masks.
    """
    if not mask.any():
        return mask.copy()
    labels, n = ndimage.label(~mask)
    hole = np.ones(n + 1, dtype=bool)
    for edge in (labels[0], labels[-1], labels[:, 0], labels[:, -1]):
        hole[edge] = False
    hole[0] = False
    return _set_components(mask, labels, np.flatnonzero(hole), True) if hole.any() else mask.copy()


def refine(
    prob: np.ndarray,
    threshold: float,
    *,
    exclude: np.ndarray | None = None,
    dilate: int = 0,
    min_area: float = 0.0,
    min_pixels: int | None = None,
) -> np.ndarray:
    """Probability map (HxW float) → clean boolean mask: threshold, fill holes, drop specks, grow, exclude.

    Specks are components under ``min_area`` of ``prob``'s pixels, or under ``min_pixels`` when given (a caller
    refining a window of a larger image passes the image's own count).
    """
    mask = prob > threshold
    if exclude is not None:
        mask &= ~exclude
    mask = fill_holes(mask)
    mask = drop_specks(mask, int(min_area * mask.size) if min_pixels is None else int(min_pixels))
    mask = grow(mask, dilate)
    if exclude is not None:
        mask &= ~exclude
    return mask


def resize(mask: np.ndarray, size: tuple[int, int], *, cover: bool = False) -> np.ndarray:
    """A boolean mask at ``size`` (w, h): nearest neighbour, or with ``cover`` every output pixel that any input
    pixel of the mask touches (scaling down never cuts the mask short)."""
    if (mask.shape[1], mask.shape[0]) == tuple(size):
        return mask
    img = Image.fromarray(mask.astype(np.uint8) * 255)
    if cover:
        return np.asarray(img.resize(size, Image.BOX)) > 0
    return np.asarray(img.resize(size, Image.NEAREST)) > 127


def bbox(mask: np.ndarray) -> BBox | None:
    """Tight box around the True pixels, or None for an empty mask (reject it before cropping)."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def coverage(mask: np.ndarray) -> float:
    return float(mask.mean()) if mask.size else 0.0
