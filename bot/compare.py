"""Compare: "#2 vs #5" → one picture with the variations side by side at the same scale, labelled, and below them
a close-up row of the garment region (the masks they were painted in).  Never generates, never moves the thread's
picture: it only reads the variations restyle already made."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

from bot import messages as T
from bot.engine import Engine, close_up_box
from bot.events import Files, Text
from bot.intent import plain_prompt
from bot.render import contact_sheet
from bot.store import Variation, save_png
from model.masks import resize as resize_mask

#: At most this many variations go side by side (more would make each too small to judge)
MAX_COMPARE = 6
#: Pixels whose channels differ by more than this between two variations count as changed (JPEG-free PNGs, so a
#: small margin is plenty)
CHANGED = 12
#: Without stored masks, the variations are compared on copies at most this many pixels a side
DIFF_SIDE = 512


def compare(engine: Engine, thread: str, numbers: list[int]) -> Files | Text:
    """The compare sheet of variations ``numbers`` of ``thread`` (their order kept), or why there is none."""
    store = engine.store
    numbers = list(dict.fromkeys(numbers))
    if len(numbers) < 2:
        return Text(T.COMPARE_TWO, kind="error")
    found = {n: store.variation_by_number(thread, n) for n in numbers}
    missing = [n for n, v in found.items() if v is None]
    if missing:
        return Text(T.COMPARE_MISSING.format(missing=_numbers(missing), why=_why_missing(store.variations(thread),
                                                                                          missing)), kind="error")
    shown: list[Variation] = [v for v in found.values() if v is not None][:MAX_COMPARE]
    left = numbers[MAX_COMPARE:]
    with Image.open(shown[0].path) as first:
        size = first.size  # variations of one thread share the photo's size; any other is scaled to it
    region, what = garment_region(engine, shown, size)
    box = close_up_box(region, max_fraction=0.8) if region is not None else None
    thumb = 512 if len(shown) <= 2 else 416 if len(shown) <= 4 else 320
    tile = (thumb, max(1, round(thumb * size[1] / size[0])))  # contact_sheet's tile: each picture scaled once
    wholes, close_ups = [], []
    for v in shown:  # one full-size picture in memory at a time
        with Image.open(v.path) as im:
            im = im.convert("RGB")
            im = im if im.size == size else im.resize(size, Image.LANCZOS)
            if box is not None:
                close_ups.append(ImageOps.contain(im.crop(box), tile, Image.LANCZOS))
            wholes.append(ImageOps.contain(im, tile, Image.LANCZOS))
    labels = [f"#{v.number}" + (" ⭐" if v.favorite else "") + f" · seed {v.seed}" for v in shown]
    tiles = wholes + close_ups
    tile_labels = labels + [f"#{v.number} close-up" for v in shown][:len(close_ups)]
    title = " vs ".join(f"#{v.number}" for v in shown)
    sheet = contact_sheet(tiles, tile_labels, thumb=thumb, columns=len(shown), title=title)
    path = save_png(sheet, store.thread_dir(thread) / f"compare-{'-'.join(str(v.number) for v in shown)}.png")
    text = T.COMPARED.format(numbers=_numbers([v.number for v in shown]),
                             close=T.COMPARE_CLOSE.format(what=what) if box is not None else "",
                             details="; ".join(_describe(engine, v) for v in shown), first=shown[0].number)
    if left:
        text += T.COMPARE_CAPPED.format(cap=MAX_COMPARE, left=_numbers(left))
    return Files(text, [(path, f"Compare {title}")], kind="compare")


def garment_region(engine: Engine, variations: list[Variation],
                   size: tuple[int, int]) -> tuple[np.ndarray | None, str]:
    """Where the variations were painted, at ``size`` (the union of their stored masks), and what to call it
    ("skirt"); where they differ from each other when no mask is kept.  (None, …) when they are one picture."""
    masks = [m for v in variations if (m := engine.painted_mask(v, size)) is not None]
    garments: list[str] = []
    for v in variations:
        turn = engine.store.turn(v.turn)
        garments += [g for g in (turn.garments if turn else []) if g not in garments]
    what = " and ".join(garments) or "garment"
    if masks:
        return np.logical_or.reduce(masks), what
    scale = min(1.0, DIFF_SIDE / max(size))  # compared on small copies: where they differ, not each pixel
    small = (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))
    pictures = []
    for v in variations:
        with Image.open(v.path) as im:
            pictures.append(np.asarray(im.convert("RGB").resize(small, Image.BILINEAR), dtype=np.int16))
    changed = np.zeros((small[1], small[0]), dtype=bool)
    for picture in pictures[1:]:
        changed |= (np.abs(picture - pictures[0]) > CHANGED).any(axis=2)
    return (resize_mask(changed, size) if changed.any() else None), what


def _describe(engine: Engine, v: Variation) -> str:
    """"#2: _a red skirt_ (seed 7, from the original photo)": how a variation was made, in a few words."""
    turn = engine.store.turn(v.turn)
    if turn is None:
        return f"#{v.number} (seed {v.seed})"
    source = engine.store.variation_by_path(v.thread, turn.base)
    return (f"#{v.number}: _{plain_prompt(turn.prompt)}_ (seed {v.seed}, from "
            f"{f'#{source.number}' if source else 'the original photo'})")


def _numbers(numbers: list[int]) -> str:
    """#2, #5 and #7"""
    tags = [f"#{n}" for n in numbers]
    return tags[0] if len(tags) == 1 else f"{', '.join(tags[:-1])} and {tags[-1]}"


def _why_missing(existing: list[Variation], missing: list[int]) -> str:
    if not existing:
        return "this thread has no variations yet — describe a change first, e.g. _make the skirt red_"
    have = [v.number for v in existing]
    span = f"#{have[0]}–#{have[-1]}" if have == list(range(have[0], have[-1] + 1)) else _numbers(have)
    verb = "is" if len(missing) == 1 else "are"
    return f"{'it' if len(missing) == 1 else 'they'} {verb} not in this thread (it has {span})"
