"""Mask refinement and mask geometry — the only place masks are thresholded, cleaned, grown or measured.

CLIPSeg gives a soft, low-resolution probability map; a garment mask good enough for inpainting wants: a threshold,
no holes (a belt buckle is still the skirt), no specks (a red bag across the room is not the skirt), a margin so
the new garment can be a different shape, and the protected regions (face, hands, hair) taken out again.
"""

from __future__ import annotations

import numpy as np
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
    window = mask[wy0:wy1, wx0:wx1]
    dist = ndimage.distance_transform_edt(~window)
    out = mask.copy()
    out[wy0:wy1, wx0:wx1] = dist <= pixels
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
    keep = sizes >= min_pixels
    keep[int(sizes.argmax())] = True
    keep[0] = False
    return keep[labels]


def refine(
    prob: np.ndarray,
    threshold: float,
    *,
    exclude: np.ndarray | None = None,
    dilate: int = 0,
    min_area: float = 0.0,
) -> np.ndarray:
    """Probability map (HxW float) → clean boolean mask: threshold, fill holes, drop specks, grow, exclude."""
    mask = prob > threshold
    if exclude is not None:
        mask &= ~exclude
    mask = ndimage.binary_fill_holes(mask)
    mask = drop_specks(mask, int(min_area * mask.size))
    mask = grow(mask, dilate)
    if exclude is not None:
        mask &= ~exclude
    return mask


def bbox(mask: np.ndarray) -> BBox | None:
    """Tight box around the True pixels, or None for an empty mask (reject it before cropping)."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def coverage(mask: np.ndarray) -> float:
    return float(mask.mean()) if mask.size else 0.0
