"""Lookbook: "make a lookbook of the favourites", ``/restyle lookbook`` → a PDF and a ZIP, uploaded into the thread.

The PDF (A4 pages drawn with Pillow, no other dependency): a cover with the original photo, the thread's title and
the date, then one page per favourite — the whole picture, a close-up of the garment (the mask it was painted in),
the prompt, seed, look and who picked it.  The ZIP holds each favourite's full-resolution PNG as restyle saved it.
Never generates, never moves the thread's picture.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageOps

from bot import messages as T
from bot.engine import Engine, close_up_box
from bot.events import Files, Text
from bot.intent import plain_prompt
from bot.render import font
from bot.store import Store, Variation

#: A4 portrait at 150 dpi
PAGE = (1240, 1754)
DPI = 150
MARGIN = 90
INK, GREY, RULE = (20, 20, 20), (110, 110, 110), (200, 200, 200)


@dataclass
class Entry:
    """What one favourite's page says."""

    number: int
    picture: Path
    prompt: str
    seed: int
    look: str
    picked_by: list[str]
    source: str  # "the original photo" or "#3"
    how: str  # "steps 30, guidance 7.5, strength 1"
    close_up: tuple[int, int, int, int] | None  # the garment's box in the picture


def lookbook(engine: Engine, thread: str) -> Files | Text:
    """The thread's favourites as a PDF and a ZIP (under the thread's ``exports/``), or why there is none."""
    store = engine.store
    favs = store.favorites(thread)
    if not favs:
        return Text(T.NO_FAVORITES_LOOKBOOK)
    entries = [_entry(engine, v) for v in favs]
    title = thread_title(store, thread)
    now = dt.datetime.now(dt.UTC)
    folder = store.thread_dir(thread) / "exports"
    stem = f"lookbook-{now:%Y%m%d-%H%M%S}"
    pdf = write_pdf(folder / f"{stem}.pdf", store.original(thread), title, now.date(), entries)
    archive = write_zip(folder / f"{stem}.zip", entries)
    numbers = ", ".join(f"#{e.number}" for e in entries)
    text = T.LOOKBOOK.format(n=len(entries), s="s" if len(entries) != 1 else "", numbers=numbers)
    return Files(text, [(pdf, f"Lookbook {numbers} (PDF)"), (archive, f"Lookbook {numbers} (full-resolution PNGs)")],
                 kind="lookbook")


def thread_title(store: Store, thread: str) -> str:
    """A thread has no title of its own: the first thing asked in it ("make the skirt a red floral maxi")."""
    row = store._one("SELECT text FROM turns WHERE thread = ? AND text != '' ORDER BY created LIMIT 1", (thread,))
    return str(row["text"]).strip() if row else "restyle"


def picked_by(store: Store, variation: Variation) -> list[str]:
    """Who marked ``variation`` as a favourite (⭐, ❤️, 👍, the button or "fav 2"), first picker first."""
    rows = store._all("SELECT user FROM favorite_marks WHERE variation = ? GROUP BY user ORDER BY MIN(created)",
                      (variation.id,))
    return [str(r["user"]) for r in rows]


def _entry(engine: Engine, v: Variation) -> Entry:
    store = engine.store
    turn = store.turn(v.turn)
    made = turn.intent.get("made_with", {}) if turn else {}
    source = store.variation_by_path(v.thread, turn.base) if turn else None
    how = ", ".join([f"{k} {made[k]:g}" for k in ("steps", "guidance") if k in made] +
                    ([f"strength {turn.strength:g}"] if turn else []))
    with Image.open(v.path) as im:
        size = im.size
    mask = engine.painted_mask(v, size)
    return Entry(number=v.number, picture=v.path, prompt=plain_prompt(turn.prompt) if turn else "", seed=v.seed,
                 look=made.get("look") or "default", picked_by=picked_by(store, v),
                 source=f"#{source.number}" if source else "the original photo", how=how,
                 close_up=close_up_box(mask, max_fraction=1.0) if mask is not None else None)


# -- pages ---------------------------------------------------------------------------------------------------------
def write_pdf(path: Path, original: Path, title: str, date: dt.date, entries: list[Entry]) -> Path:
    """The cover, then one page per entry, as one PDF at ``path`` (written whole, then moved into place)."""
    total = len(entries) + 1
    pages = [cover_page(original, title, date, entries, total)]
    pages += [entry_page(e, title, i + 2, total) for i, e in enumerate(entries)]
    return _atomic(path, lambda tmp: pages[0].save(tmp, "PDF", save_all=True, append_images=pages[1:],
                                                   resolution=DPI, title=f"Lookbook: {title}"[:200],
                                                   author="restyle"))


def write_zip(path: Path, entries: list[Entry]) -> Path:
    """Each entry's picture, untouched, as ``variation-NNN.png``."""
    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as z:  # PNGs are compressed already
            for e in entries:
                z.write(e.picture, f"variation-{e.number:03d}.png")
    return _atomic(path, write)


def cover_page(original: Path, title: str, date: dt.date, entries: list[Entry], total: int) -> Image.Image:
    page, draw = _blank()
    y = MARGIN
    draw.text((MARGIN, y), "Lookbook", fill=GREY, font=font(34))
    y += 56
    y = _paragraph(draw, title, (MARGIN, y), PAGE[0] - 2 * MARGIN, font(56), INK, max_lines=3) + 16
    n = len(entries)
    meta = (f"{date:%d %B %Y}  ·  {n} favourite{'s' if n != 1 else ''}: "
            + ", ".join(f"#{e.number}" for e in entries))
    y = _paragraph(draw, meta, (MARGIN, y), PAGE[0] - 2 * MARGIN, font(30), GREY, max_lines=2) + 40
    with Image.open(original) as im:
        _place(page, im, (MARGIN, y, PAGE[0] - MARGIN, PAGE[1] - MARGIN - 60))
    _footer(draw, "the original photo", 1, total)
    return page


def entry_page(e: Entry, title: str, number: int, total: int) -> Image.Image:
    page, draw = _blank()
    width = PAGE[0] - 2 * MARGIN
    draw.text((MARGIN, MARGIN), f"#{e.number}", fill=INK, font=font(64))
    _paragraph(draw, f"Lookbook · {title}", (MARGIN + 170, MARGIN + 26), width - 170, font(28), GREY, max_lines=1)
    top, bottom = MARGIN + 110, PAGE[1] - MARGIN - 470
    gap = 30
    with Image.open(e.picture) as im:
        im = im.convert("RGB")
        if e.close_up is not None:
            split = MARGIN + round(width * 0.58)
            _place(page, im, (MARGIN, top, split - gap // 2, bottom))
            below = _place(page, im.crop(e.close_up), (split + gap // 2, top, PAGE[0] - MARGIN, bottom - 40))
            draw.text((split + gap // 2, below + 8), "close-up", fill=GREY, font=font(24))
        else:
            _place(page, im, (MARGIN, top, PAGE[0] - MARGIN, bottom))
    y = bottom + 50
    draw.line((MARGIN, y, PAGE[0] - MARGIN, y), fill=RULE, width=2)
    y += 24
    rows = [("Prompt", e.prompt or "—"), ("Seed", str(e.seed)), ("Look", e.look),
            ("Picked by", ", ".join(e.picked_by) or "—"), ("Made from", e.source), ("Settings", e.how or "—")]
    label_w = 220
    for label, value in rows:
        draw.text((MARGIN, y), label, fill=GREY, font=font(28))
        y = _paragraph(draw, value, (MARGIN + label_w, y), width - label_w, font(28), INK, max_lines=3) + 14
    _footer(draw, f"#{e.number} · full resolution in the ZIP as variation-{e.number:03d}.png", number, total)
    return page


def _blank() -> tuple[Image.Image, ImageDraw.ImageDraw]:
    page = Image.new("RGB", PAGE, "white")
    return page, ImageDraw.Draw(page)


def _place(page: Image.Image, im: Image.Image, box: tuple[int, int, int, int]) -> int:
    """``im`` scaled to fit ``box`` (up or down, its shape kept), centred at the top of it; the y below it."""
    x0, y0, x1, y1 = box
    fitted = ImageOps.contain(im.convert("RGB"), (max(1, x1 - x0), max(1, y1 - y0)), Image.LANCZOS)
    page.paste(fitted, (x0 + (x1 - x0 - fitted.width) // 2, y0))
    return y0 + fitted.height


def _paragraph(draw: ImageDraw.ImageDraw, text: str, at: tuple[int, int], width: int, face, fill,
               max_lines: int = 4) -> int:
    """``text`` wrapped to ``width`` pixels (at most ``max_lines``, the last cut with "…"); the y below it."""
    words, lines, line = text.split(), [], ""
    for word in words:
        trial = f"{line} {word}".strip()
        if draw.textlength(trial, font=face) <= width or not line:
            line = trial
        else:
            lines.append(line)
            line = word
    if line:
        lines.append(line)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        while lines[-1] and draw.textlength(lines[-1] + " …", font=face) > width:
            lines[-1] = lines[-1][:-1]
        lines[-1] += " …"
    x, y = at
    step = round(getattr(face, "size", 12) * 1.3)
    for ln in lines:
        draw.text((x, y), ln, fill=fill, font=face)
        y += step
    return y


def _footer(draw: ImageDraw.ImageDraw, text: str, number: int, total: int) -> None:
    y = PAGE[1] - MARGIN + 20
    draw.text((MARGIN, y), text, fill=GREY, font=font(22))
    right = f"{number} / {total}"
    draw.text((PAGE[0] - MARGIN - draw.textlength(right, font=font(22)), y), right, fill=GREY, font=font(22))


def _atomic(path: Path, write) -> Path:
    """Write through a temporary file beside ``path``, then move it into place: no half-written export."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
