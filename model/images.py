"""The one place where bytes become pictures and pictures become bytes.

Every decoder in restyle (HTTP handlers, the bot's Slack downloads, the terminal, training data) goes through
``decode_image``/``decode_mask`` so odd-but-valid files are handled the same way everywhere:

* EXIF orientation is applied (phones store portrait photos sideways);
* CMYK, 16-bit, palette, LA/RGBA (flattened on white) become 8-bit RGB;
* an animated GIF/WebP/APNG contributes its first frame;
* 0 bytes, non-images, truncated files and decompression bombs are refused with a specific ``InvalidImage`` /
  ``ImageTooLarge`` message; a person's upload (``shrink=True``) that is a JPEG of up to twice the pixel limit is
  decoded at reduced scale instead.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from model.errors import ImageTooLarge, InvalidImage, RequestError

#: Largest image we decode, in pixels (a 6000x6000 photo). Above this PIL's decompression-bomb guard trips too.
MAX_PIXELS = 36_000_000
#: Formats we return; the key is the request's ``format`` value.
ENCODINGS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}

Image.MAX_IMAGE_PIXELS = MAX_PIXELS
ImageFile.LOAD_TRUNCATED_IMAGES = False


def b64decode(data: str, *, field: str) -> bytes:
    """Strict base64 (standard or URL-safe alphabet; a ``data:...;base64,`` prefix is accepted)."""
    if not isinstance(data, str):
        raise RequestError(f"`{field}` must be a base64 string, got {type(data).__name__}", code="invalid_base64")
    if data.startswith("data:") and "," in data:
        data = data.split(",", 1)[1]
    data = "".join(data.split())
    try:
        if "-" in data or "_" in data:  # URL-safe alphabet, validated like the standard one
            if "+" in data or "/" in data:
                raise binascii.Error("mixes the standard (+/) and URL-safe (-_) alphabets")
            data = data.translate(str.maketrans("-_", "+/"))
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(f"`{field}` is not valid base64 ({exc})", code="invalid_base64") from None


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _open(data: bytes, field: str, *, shrink: bool = False) -> Image.Image:
    """PIL's lazy open + load, guarded.  ``shrink``: a JPEG over ``MAX_PIXELS`` (up to twice that, PIL's own hard
    limit) is decoded at 1/2, 1/4 or 1/8 scale by libjpeg's DCT scaling — never holding the full-size pixels."""
    if not data:
        raise InvalidImage(f"`{field}` is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore" if shrink else "error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > MAX_PIXELS:
                k = next((k for k in (2, 4, 8) if (w / k) * (h / k) <= MAX_PIXELS), None)
                if shrink and img.format == "JPEG" and k is not None:
                    img.draft(None, (-(-w // k), -(-h // k)))
                    img.info["source_size"] = (w, h)
                if img.width * img.height > MAX_PIXELS:
                    raise ImageTooLarge(f"`{field}` is {w}x{h} = {w * h:,} pixels; the limit is {MAX_PIXELS:,}"
                                        + (" (JPEG photos up to twice that are scaled down)" if shrink else ""))
            img.seek(0)  # animated GIF/WebP/APNG: the first frame
            img.load()
    except RequestError:  # our own ImageTooLarge is a ValueError: it must not become "corrupt" below
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        limit = 2 * MAX_PIXELS if shrink else MAX_PIXELS
        raise ImageTooLarge(f"`{field}` is larger than {limit:,} pixels") from None
    except UnidentifiedImageError:
        raise InvalidImage(f"`{field}` is not an image PIL can read (PNG, JPEG, WebP, GIF, BMP, TIFF …)") from None
    except Exception as exc:  # noqa: BLE001 - untrusted bytes: whatever a decoder raises, the file is bad
        raise InvalidImage(f"`{field}` could not be decoded, the file looks truncated or corrupt "
                           f"({type(exc).__name__}: {exc})") from None
    if img.width < 1 or img.height < 1:
        raise InvalidImage(f"`{field}` has no pixels")
    return img


@contextmanager
def _converting(img: Image.Image, field: str) -> Iterator[None]:
    """Mode conversions after decoding: a mode PIL cannot turn into RGB/L (LAB as a mask…) is the caller's file."""
    mode = img.mode
    try:
        yield
    except RequestError:
        raise
    except (ValueError, OSError) as exc:
        raise InvalidImage(f"`{field}` uses the colour mode {mode}, which cannot be converted here ({exc}); send "
                           "an RGB or greyscale image") from None


def _to_8bit(img: Image.Image) -> Image.Image:
    """16/32-bit integer and float modes scaled down to 8 bits (PIL's convert clips them instead)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        return Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        top = 1.0 if arr.max() <= 1.0 else 255.0
        return Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    return img


def decode_image(data: bytes, *, field: str = "image", shrink: bool = False) -> Image.Image:
    """Bytes → an upright 8-bit RGB ``PIL.Image``; raises ``InvalidImage``/``ImageTooLarge`` with a clear message.

    ``shrink=True`` (a person's upload, not a model request): a JPEG of up to ``2 * MAX_PIXELS`` — a 48 or 61
    megapixel camera — comes back scaled down by 2, 4 or 8 to fit ``MAX_PIXELS`` instead of being refused;
    ``image.info["source_size"]`` then holds the file's own (width, height).
    """
    img = _open(data, field, shrink=shrink)
    source = img.info.get("source_size")
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block must not cost the picture
        pass
    with _converting(img, field):
        img = _to_8bit(img)
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            img = Image.alpha_composite(white, rgba)
        img = img.convert("RGB")  # CMYK too: Adobe CMYK JPEGs are stored inverted; PIL handles the flag
    if source is not None:
        img.info["source_size"] = source
    return img


def decode_mask(data: bytes, *, size: tuple[int, int] | None = None, field: str = "mask") -> np.ndarray:
    """Bytes → a boolean HxW mask (white = edit). RGBA masks use alpha when the colour is flat."""
    img = _open(data, field)
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:
        pass
    with _converting(img, field):
        img = _to_8bit(img)
        if img.mode in ("RGBA", "LA"):
            alpha = np.asarray(img.getchannel("A"))
            gray = np.asarray(img.convert("L"))
            arr = alpha if gray.min() == gray.max() else gray
        else:
            arr = np.asarray(img.convert("L"))
    mask = arr >= 128
    if size is not None and (mask.shape[1], mask.shape[0]) != tuple(size):
        raise RequestError(
            f"`{field}` is {mask.shape[1]}x{mask.shape[0]} but the image is {size[0]}x{size[1]}; they must match",
            code="mask_size_mismatch",
        )
    return mask


def load_image_b64(data: str, *, field: str = "image") -> Image.Image:
    return decode_image(b64decode(data, field=field), field=field)


def load_mask_b64(data: str, *, size: tuple[int, int] | None = None, field: str = "mask") -> np.ndarray:
    return decode_mask(b64decode(data, field=field), size=size, field=field)


def from_unit_float(arr: np.ndarray) -> Image.Image:
    """A picture diffusers returned with ``output_type="np"`` (H×W×3 floats in [0, 1]) as 8-bit RGB, rounded; a NaN
    reads as 0."""
    return Image.fromarray((np.clip(np.nan_to_num(arr, nan=0.0), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))


def encode_image(img: Image.Image | np.ndarray, fmt: str = "png", *, quality: int = 92) -> bytes:
    """PIL image or uint8/bool array → PNG/JPEG/WebP bytes. Masks (bool arrays) become 1-bit PNGs (small, fast;
    every decoder reads them as black/white)."""
    if isinstance(img, np.ndarray):
        if img.dtype == bool and fmt.lower() == "png":
            img = Image.fromarray(img)  # mode "1"
        else:
            img = Image.fromarray(img.astype(np.uint8) * 255 if img.dtype == bool else img)
    key = fmt.lower()
    if key == "jpg":
        key = "jpeg"
    if key not in ENCODINGS:
        raise RequestError(f"`format` must be one of {sorted(ENCODINGS)}, got {fmt!r}", code="invalid_format")
    buf = io.BytesIO()
    if key == "png":
        img.save(buf, "PNG", compress_level=1)
    elif key == "jpeg":
        img.convert("RGB").save(buf, "JPEG", quality=quality, subsampling=0 if quality >= 90 else 2)
    else:
        img.save(buf, "WEBP", quality=quality, method=4)
    return buf.getvalue()


def encode_b64(img: Image.Image | np.ndarray, fmt: str = "png", *, quality: int = 92) -> str:
    return b64encode(encode_image(img, fmt, quality=quality))
