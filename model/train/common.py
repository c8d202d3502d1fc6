"""What both trainers share — one place each: SageMaker/CLI handling, data reading with per-file error reports,
the progress bar and the loss curve.

Data problems never crash a run: every unreadable image, missing file or bad annotation is logged as one warning
line naming the file, skipped, and summed up as ``skipped 2 of 14 images: bad.jpg (…), gone.jpg (file not found)``.
Only an empty data set (after skipping) stops the run, with ``DataError`` → exit code 2 (as do an unusable
``--out`` and an unusable checkpoint, checked before any training).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as coco_mask

from model.checks import unwritable
from model.errors import RequestError
from model.images import decode_image

log = logging.getLogger("model.train")

#: Files read as pictures by ``read_image_folder``; other files (captions, .json, .DS_Store …) are ignored.
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
#: Exit code for bad usage and for a data set that is empty after skipping (argparse uses 2 too).
EXIT_DATA = 2
#: Exit code when the base weights cannot be found/downloaded, or the training diverged.
EXIT_FAILED = 1


class DataError(Exception):
    """The data set cannot be used at all (nothing left after skipping, no annotation file …), or another input
    is unusable (an ``--out`` that cannot be written, a checkpoint of the wrong kind): exit code 2."""


# --- logging ----------------------------------------------------------------------------------------------------
class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at emit time (pytest's capture swaps it between tests)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup_logging(level: int = logging.INFO) -> None:
    """``LEVEL message`` lines on stderr for the ``model.train`` logger (idempotent; still propagates)."""
    if not any(isinstance(h, _StderrHandler) for h in log.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        log.addHandler(handler)
    log.setLevel(level)


# --- skip reports -----------------------------------------------------------------------------------------------
@dataclass
class Skips:
    """Collects what was skipped and why; every ``skip`` logs one warning line naming the file."""

    what: str = "images"
    total: int = 0
    items: list[tuple[str, str]] = field(default_factory=list)

    def skip(self, name: str, reason: str) -> None:
        name = name if name.isprintable() else repr(name)  # no raw control characters in the log
        self.items.append((name, reason))
        log.warning("skipping %s: %s", name, reason)

    def __len__(self) -> int:
        return len(self.items)

    def summary(self) -> str:
        if not self.items:
            return f"skipped 0 of {self.total} {self.what}"
        listed = ", ".join(f"{name} ({reason})" for name, reason in self.items[:20])
        more = f", … and {len(self.items) - 20} more" if len(self.items) > 20 else ""
        return f"skipped {len(self.items)} of {self.total} {self.what}: {listed}{more}"

    def report(self) -> None:
        """Log the summary: a warning when something was skipped, info otherwise."""
        (log.warning if self.items else log.info)(self.summary())

    def to_json(self) -> list[dict]:
        return [{"name": n, "reason": r} for n, r in self.items]


# --- images -----------------------------------------------------------------------------------------------------
def load_image(path: Path, name: str | None = None) -> Image.Image:
    """A training picture from disk through ``model.images.decode_image`` (EXIF, CMYK, 16-bit … handled the same
    way as everywhere else).  Raises ``InvalidImage`` (or ``ImageTooLarge``) / ``OSError`` with a clear message."""
    data = Path(path).read_bytes()
    return decode_image(data, field=name or Path(path).name)


def image_error(exc: Exception, name: str | None = None) -> str:
    """One short reason for a skip line (which names the file already)."""
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, RequestError):
        message = exc.message
        if name:
            message = message.replace(f"`{name}`", "the file")
        return message.replace("`", "")
    return f"{type(exc).__name__}: {exc}"


def read_image_folder(root: str | Path) -> tuple[list[tuple[str, Image.Image]], Skips]:
    """All pictures directly inside ``root`` (not its subfolders), sorted by name, decoded; unreadable ones are
    reported and skipped.  Files whose extension is not in ``IMAGE_EXTENSIONS`` and hidden files are ignored."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder")
    skips = Skips("images")
    images = []
    for path in sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith(".")):
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        skips.total += 1
        try:
            images.append((path.name, load_image(path)))
        except (ValueError, OSError) as exc:  # InvalidImage/ImageTooLarge are ValueErrors
            skips.skip(path.name, image_error(exc, path.name))
    return images, skips


# --- COCO -------------------------------------------------------------------------------------------------------
def prompt_for(category_name: str) -> str:
    """A category name as a CLIPSeg prompt: underscores become spaces (DeepFashion2's ``short_sleeved_shirt``)."""
    return " ".join(str(category_name).replace("_", " ").split())


@dataclass
class CocoImage:
    """One usable image of a COCO data set: its file and the valid segmentations per prompt."""

    path: Path
    name: str  # file_name as written in the annotation file
    width: int
    height: int
    segments: dict[str, list] = field(default_factory=dict)  # prompt → segmentations (validated)
    excluded: set[str] = field(default_factory=set)  # prompts with a bad annotation here: not scored, not trained

    def mask(self, prompt: str) -> np.ndarray:
        """Union of this prompt's segmentations as a bool HxW mask (all False when the prompt is absent)."""
        out = np.zeros((self.height, self.width), dtype=bool)
        for seg in self.segments.get(prompt, []):
            out |= segmentation_mask(seg, self.height, self.width)
        return out


@dataclass
class CocoDataset:
    root: Path
    annotation_file: Path
    images: list[CocoImage]
    prompts: list[str]  # every category, in category-id order (duplicates merged)
    image_skips: Skips
    annotation_skips: Skips

    def report(self) -> None:
        self.image_skips.report()
        self.annotation_skips.report()


def find_annotations(root: Path, annotations: str | Path | None) -> Path:
    if annotations is not None:
        path = Path(annotations)
        if not path.is_absolute() and not path.exists():
            path = root / path
        if not path.is_file():
            raise DataError(f"annotation file {annotations} not found")
        return path
    default = root / "annotations.json"
    if default.is_file():
        return default
    candidates = sorted(root.glob("*.json")) or sorted((root / "annotations").glob("*.json"))
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise DataError(f"no annotations.json in {root}; pass --annotations FILE")
    raise DataError(f"{root} has several .json files ({', '.join(p.name for p in candidates)}); "
                    f"pass --annotations FILE")


def _number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _integral(v):
    """64.0 → 64 (some exporters write sizes as floats); anything else unchanged."""
    return int(v) if _number(v) and float(v).is_integer() else v


def _tolerance(side: int) -> float:
    """How far a coordinate may stray outside the image (rounding in real annotation files)."""
    return max(1.0, 0.01 * side)


def check_bbox(bbox, h: int, w: int) -> str | None:
    if not isinstance(bbox, list | tuple) or len(bbox) != 4 or not all(_number(v) for v in bbox):
        return f"bbox {bbox!r} is not [x, y, width, height]"
    x, y, bw, bh = bbox
    if bw < 0 or bh < 0:
        return f"bbox {list(bbox)} has a negative size"
    tx, ty = _tolerance(w), _tolerance(h)
    if x < -tx or y < -ty or x + bw > w + tx or y + bh > h + ty:
        return f"bbox {list(bbox)} is outside the {w}x{h} image"
    return None


def check_segmentation(seg, h: int, w: int) -> str | None:
    """Why ``seg`` (polygons or RLE) is unusable for an ``h``x``w`` image, or None when it is fine."""
    if isinstance(seg, list):
        if not seg:
            return "empty segmentation"
        for poly in seg:
            if not isinstance(poly, list) or not all(_number(v) for v in poly):
                return "polygon is not a list of numbers"
            if len(poly) % 2:
                return f"polygon has an odd number of coordinates ({len(poly)})"
            if len(poly) < 6:
                return f"polygon with {len(poly) // 2} point{'s' if len(poly) != 2 else ''} (needs at least 3)"
            xs, ys = np.asarray(poly[0::2], dtype=float), np.asarray(poly[1::2], dtype=float)
            tx, ty = _tolerance(w), _tolerance(h)
            if xs.min() < -tx or ys.min() < -ty or xs.max() > w + tx or ys.max() > h + ty:
                return (f"polygon outside the {w}x{h} image (x {xs.min():g}..{xs.max():g}, "
                        f"y {ys.min():g}..{ys.max():g})")
        return None
    if isinstance(seg, dict) and "counts" in seg:
        size = seg.get("size")
        if not isinstance(size, list | tuple) or len(size) != 2 or not all(_number(v) for v in size) \
                or [int(v) for v in size] != [h, w]:
            return f"RLE size {size!r} does not match the {w}x{h} image (expects [height, width])"
        try:
            counts = rle_counts(seg["counts"])
        except ValueError as exc:
            return f"RLE counts unreadable ({exc})"
        if (counts < 0).any():
            return "RLE has negative counts"
        if int(counts.sum()) != h * w:
            return f"RLE covers {int(counts.sum())} pixels, the image has {h * w}"
        return None
    return f"segmentation is neither polygons nor RLE ({type(seg).__name__})"


def rle_counts(counts) -> np.ndarray:
    """RLE run lengths from an uncompressed list or a COCO compressed string, for ``check_segmentation``: pycocotools
    decodes whatever counts it is given (one pixel written per count, no bounds check), so they are read and summed
    here first."""
    if isinstance(counts, str | bytes):
        return rle_decode_string(counts.decode("ascii") if isinstance(counts, bytes) else counts)
    if isinstance(counts, list) and all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
        try:
            return np.asarray(counts, dtype=np.int64)
        except OverflowError:
            raise ValueError("a count does not fit in 64 bits") from None
    raise ValueError("counts must be a list of integers or a compressed string")


def rle_decode_string(s: str) -> np.ndarray:
    """COCO's compressed RLE string → run lengths (pycocotools' ``rleFrString``, which has no Python API), refusing
    what that C reader would read past: characters outside its alphabet, a truncated last number."""
    counts: list[int] = []
    p = 0
    while p < len(s):
        x = k = 0
        more = True
        while more:
            if p >= len(s):
                raise ValueError("truncated compressed RLE string")
            c = ord(s[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"invalid character {s[p]!r} in compressed RLE")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return np.asarray(counts, dtype=np.int64)


def rle_encode_string(counts: Sequence[int]) -> str:
    """Run lengths → COCO compressed RLE string (pycocotools' ``rleToString``)."""
    total = sum(int(c) for c in counts)
    rle = coco_mask.frPyObjects({"size": [total, 1], "counts": [int(c) for c in counts]}, total, 1)
    return rle["counts"].decode("ascii")


def rle_encode(mask: np.ndarray) -> list[int]:
    """Bool HxW mask → uncompressed COCO run lengths (column-major, starting with a run of zeros): pycocotools'
    ``encode``, read back by ``rle_decode_string``."""
    rle = coco_mask.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return rle_decode_string(rle["counts"].decode("ascii")).tolist()


def polygon_mask(poly: Sequence[float], h: int, w: int) -> np.ndarray:
    """A COCO polygon ``[x0, y0, x1, y1, …]`` → bool HxW mask by pixel centres: pixel (x, y) is inside when its
    centre (x + 0.5, y + 0.5) is (even-odd rule; a centre exactly on a left/top edge is in, on a right/bottom edge
    out).  A box from (16, 32) to (48, 56) covers exactly 32x24 pixels, as pycocotools counts it.  Scanline fill in
    numpy: pycocotools' ``frPoly`` rasterises on a 5x grid instead and differs from this rule on slanted edges (on
    random 7-point polygons in 64x64, 2 to 24 edge pixels each)."""
    out = np.zeros((h, w), dtype=bool)
    xy = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
    y_lo, y_hi = max(0, math.floor(xy[:, 1].min())), min(h, math.ceil(xy[:, 1].max()))
    if y_hi <= y_lo or xy[:, 0].max() <= 0 or xy[:, 0].min() >= w:
        return out
    x0, y0 = xy[:, 0], xy[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    cy = np.arange(y_lo, y_hi, dtype=np.float64)[:, None] + 0.5  # rows' centre lines
    crosses = ((y0 <= cy) & (cy < y1)) | ((y1 <= cy) & (cy < y0))  # half-open: each vertex counted once
    with np.errstate(divide="ignore", invalid="ignore"):
        xs = x0 + (cy - y0) * (x1 - x0) / (y1 - y0)
    xs = np.sort(np.where(crosses, xs, np.inf), axis=1)  # crossings per row, left to right, then inf
    n = int(crosses.sum(axis=1).max(initial=0))
    if n < 2:
        return out
    # spans between crossings 0-1, 2-3, …: pixel x is in when xa <= x + 0.5 < xb
    starts = np.clip(np.ceil(xs[:, 0:n - 1:2] - 0.5), 0, w)
    ends = np.clip(np.ceil(xs[:, 1:n:2] - 0.5), 0, w)
    valid = np.isfinite(xs[:, 1:n:2])
    rows = np.broadcast_to(np.arange(y_hi - y_lo)[:, None], starts.shape)
    delta = np.zeros((y_hi - y_lo, w + 1), dtype=np.int32)
    np.add.at(delta, (rows[valid], starts[valid].astype(np.int64)), 1)
    np.add.at(delta, (rows[valid], ends[valid].astype(np.int64)), -1)
    out[y_lo:y_hi] = np.cumsum(delta, axis=1)[:, :w] > 0
    return out


def segmentation_mask(seg, h: int, w: int) -> np.ndarray:
    """A segmentation → bool HxW mask: the union of its polygons, or its RLE (column-major run lengths starting with
    background, as COCO stores them) decoded by pycocotools.  ``ValueError`` when ``check_segmentation`` finds it
    unusable: pycocotools would decode counts that do not add up to the image past the end of its buffer."""
    problem = check_segmentation(seg, h, w)
    if problem is not None:
        raise ValueError(problem)
    if isinstance(seg, list):
        out = np.zeros((h, w), dtype=bool)
        for poly in seg:
            out |= polygon_mask(poly, h, w)
        return out
    counts = seg["counts"]
    rle = {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    if isinstance(counts, list):
        rle = coco_mask.frPyObjects(rle, h, w)
    with warnings.catch_warnings():  # pycocotools' mask object predates numpy 2's __array__(copy=…): harmless
        warnings.filterwarnings("ignore", message="__array__ implementation doesn't accept a copy keyword",
                                category=DeprecationWarning)
        return coco_mask.decode(rle).astype(bool)


def _resolve_image(root: Path, file_name: str) -> Path:
    for base in (root, root / "images"):
        candidate = base / file_name
        if candidate.is_file():
            return candidate
    return root / file_name


def read_coco(root: str | Path, annotations: str | Path | None = None, *,
              check_images: bool = True) -> CocoDataset:
    """Read a COCO-format segmentation set (Fashionpedia / DeepFashion2 style).

    Images are looked up as ``root/file_name`` then ``root/images/file_name``.  With ``check_images`` every image
    is decoded once (through ``decode_image``) so corrupt or missing files are reported now rather than
    mid-training, and its size is compared with the annotation file's ``width``/``height``.  A bad annotation
    takes its category out of that one image (neither trained nor scored there); the image's other categories stay.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder")
    ann_path = find_annotations(root, annotations)
    try:
        doc = json.loads(ann_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{ann_path.name} is not readable JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise DataError(f"{ann_path.name} has no `images` list; is it a COCO annotation file?")
    for key in ("categories", "annotations"):
        if not isinstance(doc.get(key) or [], list):
            raise DataError(f"`{key}` in {ann_path.name} is not a list")
    categories: dict[int, str] = {}
    prompts: list[str] = []
    for cat in sorted((c for c in doc.get("categories") or [] if isinstance(c, dict)),
                      key=lambda c: (not isinstance(c.get("id"), int), c.get("id") or 0)):
        if isinstance(cat.get("id"), int) and isinstance(cat.get("name"), str) and prompt_for(cat["name"]):
            categories[cat["id"]] = prompt_for(cat["name"])
            if categories[cat["id"]] not in prompts:
                prompts.append(categories[cat["id"]])
        else:
            log.warning("ignoring category %r in %s: it needs an integer id and a name", cat, ann_path.name)
    if not categories:
        raise DataError(f"{ann_path.name} defines no categories (each needs an integer `id` and a `name`)")

    image_skips = Skips("images", total=len(doc["images"]))
    entries: dict[int, CocoImage] = {}
    for i, entry in enumerate(doc["images"]):
        name = entry.get("file_name") if isinstance(entry, dict) else None
        label = str(name) if name else f"images[{i}]"
        if not isinstance(name, str) or not name:
            image_skips.skip(label, "no file_name")
            continue
        img_id = entry.get("id")
        if not isinstance(img_id, int) or img_id in entries:
            image_skips.skip(label, f"missing or duplicate image id {img_id!r}")
            continue
        path = _resolve_image(root, name)
        width, height = (_integral(entry.get(k)) for k in ("width", "height"))
        if check_images:
            try:
                with_size = load_image(path, name).size
            except (ValueError, OSError) as exc:  # InvalidImage/ImageTooLarge are ValueErrors
                image_skips.skip(name, image_error(exc, name))
                continue
            if width is None or height is None:
                width, height = with_size
            elif tuple(with_size) != (width, height):
                image_skips.skip(name, f"the file is {with_size[0]}x{with_size[1]} (after EXIF rotation) but "
                                       f"{ann_path.name} says {width}x{height}")
                continue
        elif not path.is_file():  # (is_file is False for names with NUL bytes too)
            image_skips.skip(name, "file not found")
            continue
        if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
            image_skips.skip(name, f"bad width/height {width!r}x{height!r}")
            continue
        entries[img_id] = CocoImage(path=path, name=name, width=width, height=height)

    anns = doc.get("annotations") or []
    ann_skips = Skips("annotations", total=len(anns))
    declared_ids = {e.get("id") for e in doc["images"] if isinstance(e, dict) and isinstance(e.get("id"), int)}
    for i, ann in enumerate(anns):
        if not isinstance(ann, dict):
            ann_skips.skip(f"annotations[{i}]", "not an object")
            continue
        label = f"annotation {ann.get('id', f'#{i}')}"
        image_id = ann.get("image_id")
        image = entries.get(image_id) if isinstance(image_id, int) else None
        if image is None:
            if not isinstance(image_id, int) or image_id not in declared_ids:
                ann_skips.skip(label, f"unknown image id {ann.get('image_id')!r}")
            continue  # the image itself was skipped (and reported) already
        label = f"{label} on {image.name}"
        category_id = ann.get("category_id")
        prompt = categories.get(category_id) if isinstance(category_id, int) else None
        if prompt is None:
            ann_skips.skip(label, f"unknown category id {ann.get('category_id')!r}")
            continue
        problem = None
        if ann.get("bbox") is not None:
            problem = check_bbox(ann["bbox"], image.height, image.width)
        if problem is None:
            problem = check_segmentation(ann.get("segmentation"), image.height, image.width)
        if problem is not None:
            ann_skips.skip(label, f"{problem}; {prompt!r} not used for this image")
            image.excluded.add(prompt)
            continue
        image.segments.setdefault(prompt, []).append(ann["segmentation"])
    for image in entries.values():
        for prompt in image.excluded:
            image.segments.pop(prompt, None)
    return CocoDataset(root=root, annotation_file=ann_path, images=list(entries.values()), prompts=prompts,
                       image_skips=image_skips, annotation_skips=ann_skips)


# --- CLI / SageMaker --------------------------------------------------------------------------------------------
def env(*names: str) -> str | None:
    """The first of the environment variables ``names`` that is set and non-empty."""
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


def str2bool(value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "y", "on"):
        return True
    if text in ("0", "false", "no", "n", "off", "none", ""):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {value!r}")


def add_flag(parser, *names: str, help: str) -> None:
    """A boolean flag: ``--x`` alone means true; ``--x true|false`` (what SageMaker passes) works too."""
    parser.add_argument(*names, nargs="?", const=True, default=False, type=str2bool, metavar="BOOL", help=help)


def normalize_argv(argv: Sequence[str]) -> list[str]:
    """``--instance_prompt`` → ``--instance-prompt``: SageMaker hyperparameter names may use either spelling."""
    out = []
    for arg in argv:
        if arg.startswith("--") and len(arg) > 2:
            name, eq, value = arg.partition("=")
            arg = name.replace("_", "-") + eq + value
        out.append(arg)
    return out


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse, tolerating unknown arguments (SageMaker injects some): they are logged and ignored."""
    args, unknown = parser.parse_known_args(normalize_argv(sys.argv[1:] if argv is None else argv))
    if unknown:
        log.warning("ignoring unknown arguments: %s", " ".join(unknown))
    return args


def require(parser: argparse.ArgumentParser, args: argparse.Namespace, name: str, env_name: str) -> None:
    if getattr(args, name.replace("-", "_")) in (None, ""):
        parser.error(f"--{name} is required (or set {env_name})")


def finite_float(value) -> float:
    """argparse ``type`` for every float flag: NaN and ±inf are usage errors (``lr <= 0`` lets NaN through)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {value!r}")
    return number


def check_out(out: str | Path) -> Path:
    """Make sure ``--out`` can hold the results before anything is loaded or trained: create the folder, write and
    remove a probe file.  ``DataError`` (exit 2) when it cannot."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise DataError(f"--out {out} is an existing file, not a folder: pass a folder to create or reuse")
    if exc := unwritable(path):
        reason = exc.strerror or f"{type(exc).__name__}: {exc}"
        where = f" ({exc.filename})" if exc.filename and path not in (Path(exc.filename), Path(exc.filename).parent) else ""
        raise DataError(f"--out {out} cannot be created or written: {reason}{where}")
    return path


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    text = text if len(text) <= limit else text[:limit - 1] + "…"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextmanager
def loading(flag: str, ref: str, what: str, env_name: str | None = None) -> Iterator[None]:
    """Wrap the ``model.loading`` call that reads the checkpoint given by ``flag``, so its failures name the trainer's
    own flag (``model.loading``'s messages name the bot's settings): an existing path that does not load as a
    ``what`` checkpoint → ``DataError`` (exit 2); weights that cannot be found or downloaded → ``ModelUnavailable``
    (exit 1) naming ``flag``."""
    from model.loading import ModelUnavailable

    try:
        yield
    except (ModelUnavailable, OSError, ValueError) as exc:
        cause = exc.__cause__ if isinstance(exc, ModelUnavailable) and exc.__cause__ is not None else exc
        path = Path(ref)
        if path.exists() and not path.is_dir():
            raise DataError(f"{flag} {ref} is a file, not a {what} checkpoint folder") from exc
        if path.exists() or not isinstance(exc, ModelUnavailable):
            raise DataError(f"{flag} {ref} is not a usable {what} checkpoint ({_first_line(cause)})") from exc
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
        also = f" (or set {env_name})" if env_name else ""
        raise ModelUnavailable(
            f"could not load the {what} checkpoint {ref!r} ({flag}): it is neither a local folder nor in the Hugging "
            f"Face cache, and it could not be downloaded ({type(cause).__name__}"
            f"{'; HF_HUB_OFFLINE is set' if offline else ''}). Point {flag} at a local checkpoint folder{also}, or "
            f"at a Hub id that is cached or reachable.") from exc


def run(main: Callable[[], object]) -> int:
    """Call a trainer's body: data/usage problems → exit 2, unavailable weights or a diverging loss → exit 1, each
    with one clear line (no traceback); otherwise the body's int result (or 0)."""
    from model.loading import ModelUnavailable

    try:
        result = main()
    except DataError as exc:
        log.error("%s", exc)
        return EXIT_DATA
    except (ModelUnavailable, FloatingPointError) as exc:
        log.error("%s", exc)
        return EXIT_FAILED
    return result if isinstance(result, int) else 0


# --- progress and loss curve ------------------------------------------------------------------------------------
def progress(total: int, desc: str):
    """A tqdm bar on stderr; in logs (no terminal, e.g. SageMaker/CloudWatch) it updates every 30 s instead."""
    from tqdm.auto import tqdm

    tty = sys.stderr.isatty()
    return tqdm(total=total, desc=desc, dynamic_ncols=tty, mininterval=0.1 if tty else 30.0, ascii=not tty,
                file=sys.stderr)


def save_loss(out: str | Path, losses: Iterable[float], *, title: str = "training loss",
              extra: dict[str, list[float]] | None = None) -> tuple[Path, Path | None]:
    """Write ``loss.json`` (``{"loss": [...], ...extra}`` per step) and ``loss.png`` (raw + moving average; the
    Agg backend, no display needed).  Without matplotlib the PNG is skipped with a warning — never the weights."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    losses = [float(v) for v in losses]
    data = {"loss": losses, **{k: [float(v) for v in vals] for k, vals in (extra or {}).items()}}
    json_path = out / "loss.json"
    json_path.write_text(json.dumps(data, indent=1))
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        log.warning("matplotlib is not installed: no loss.png (the losses are in %s)", json_path)
        return json_path, None
    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    steps = np.arange(1, len(losses) + 1)
    ax.plot(steps, losses, lw=0.8, alpha=0.45, label="loss")
    window = max(1, min(50, len(losses) // 10))
    if window > 1:
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1:], smooth, lw=1.8, label=f"mean of {window} steps")
    for name, vals in (extra or {}).items():
        if vals:
            ax.plot(np.arange(1, len(vals) + 1), vals, lw=0.8, alpha=0.6, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    fig.tight_layout()
    png_path = out / "loss.png"
    fig.savefig(png_path, format="png")
    return json_path, png_path
