"""Pictures for people: contact sheets of variations and mask overlays (PNG)."""

from __future__ import annotations

import math

from PIL import Image, ImageDraw, ImageFont, ImageOps


def font(size: int) -> ImageFont.ImageFont:
    """Pillow's own font at ``size`` pixels (a bitmap font on Pillow < 10.1)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def contact_sheet(images: list[Image.Image], labels: list[str], *, thumb: int = 384, columns: int | None = None,
                  title: str | None = None) -> Image.Image:
    """A grid of thumbnails, each labelled (e.g. "#3"), optionally with a title bar."""
    if not images:
        raise ValueError("contact_sheet needs at least one image")
    n = len(images)
    cols = columns or (2 if n == 4 else 3 if n in (5, 6, 9) else min(4, n))
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    aspect = images[0].height / images[0].width
    tw, th = thumb, max(1, round(thumb * aspect))
    gap, label_h = 8, max(18, thumb // 12)
    top = label_h + gap if title else 0
    sheet = Image.new("RGB", (cols * (tw + gap) + gap, top + rows * (th + label_h + gap) + gap), "white")
    draw = ImageDraw.Draw(sheet)
    face = font(max(12, label_h - 4))
    if title:
        draw.text((gap, gap // 2), title[:120], fill="black", font=face)
    for i, (img, label) in enumerate(zip(images, labels, strict=True)):
        r, c = divmod(i, cols)
        x, y = gap + c * (tw + gap), top + gap + r * (th + label_h + gap)
        t = ImageOps.contain(img.convert("RGB"), (tw, th), Image.LANCZOS)  # small photos are scaled up too
        sheet.paste(t, (x + (tw - t.width) // 2, y))
        draw.text((x, y + th + 2), label, fill="black", font=face)
    return sheet
