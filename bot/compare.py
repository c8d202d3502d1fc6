"""Compare: "#2 vs #5" → one picture with the variations side by side at the same scale, labelled, and below them
a close-up row of the garment region (the masks they were painted in).  Never generates, never moves the thread's
picture: it only reads the variations restyle already made."""

from __future__ import annotations

import numpy as np
from PIL import Image

from bot import messages as T
from bot.engine import Engine, close_up_box
from bot.events import Files, Text
from bot.intent import plain_prompt
from bot.render import contact_sheet
from bot.store import Variation, save_png

#: At most this many variations go side by side (more would make each too small to judge)
MAX_COMPARE = 6
#: Pixels whose channels differ by more than this between two variations count as changed (JPEG-free PNGs, so a
#: small margin is plenty)
CHANGED = 12


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
    images = [Image.open(v.path).convert("RGB") for v in shown]
    size = images[0].size
    images = [im if im.size == size else im.resize(size, Image.LANCZOS) for im in images]  # one scale for all
    region, what = garment_region(engine, shown, images)
    box = close_up_box(region, max_fraction=0.8) if region is not None else None
    labels = [f"#{v.number}" + (" ⭐" if v.favorite else "") + f" · seed {v.seed}" for v in shown]
    tiles, tile_labels = list(images), list(labels)
    if box is not None:
        tiles += [im.crop(box) for im in images]
        tile_labels += [f"#{v.number} close-up" for v in shown]
    thumb = 512 if len(shown) <= 2 else 416 if len(shown) <= 4 else 320
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
                   images: list[Image.Image]) -> tuple[np.ndarray | None, str]:
    """Where the variations were painted (the union of their stored masks) and what to call it ("skirt"); where
    they differ from each other when no mask is kept.  (None, …) when they are the same picture."""
    size = images[0].size
    masks = [m for v in variations if (m := engine.painted_mask(v, size)) is not None]
    garments: list[str] = []
    for v in variations:
        turn = engine.store.turn(v.turn)
        garments += [g for g in (turn.garments if turn else []) if g not in garments]
    what = " and ".join(garments) or "garment"
    if masks:
        return np.logical_or.reduce(masks), what
    first = np.asarray(images[0], dtype=np.int16)
    changed = np.zeros(first.shape[:2], dtype=bool)
    for im in images[1:]:
        changed |= (np.abs(np.asarray(im, dtype=np.int16) - first) > CHANGED).any(axis=2)
    return (changed if changed.any() else None), what


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
