"""model.images: odd-but-valid files decode to upright 8-bit RGB; bad bytes fail with a specific 4xx error."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from model.errors import ImageTooLarge, InvalidImage, RequestError
from model.images import (
    MAX_PIXELS,
    b64decode,
    decode_image,
    decode_mask,
    encode_b64,
    encode_image,
    load_image_b64,
)
from tests.conftest import garment_mask, make_photo, to_bytes


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR claims ``width``x``height`` (a decompression bomb costs nothing to build)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


def pixels(img: Image.Image) -> np.ndarray:
    assert img.mode == "RGB"
    return np.asarray(img).astype(int)


# -- odd but valid ---------------------------------------------------------------------------------------------
def test_cmyk_jpeg_becomes_rgb():
    data = to_bytes(Image.new("CMYK", (40, 30), (0, 255, 255, 0)), "JPEG", quality=95)  # pure red in CMYK
    img = decode_image(data)
    assert img.size == (40, 30)
    assert np.abs(pixels(img).reshape(-1, 3).mean(0) - [255, 0, 0]).max() < 4


def test_16bit_png_is_scaled_not_clipped():
    arr = np.linspace(0, 65535, 64 * 32).reshape(32, 64).astype(np.uint16)
    data = to_bytes(Image.fromarray(arr), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")  # really a 16-bit file
    img = decode_image(data)
    assert img.size == (64, 32)
    got = pixels(img)
    assert (got[..., 0] == got[..., 1]).all() and (got[..., 0] == got[..., 2]).all()
    expected = np.round(arr / 65535.0 * 255.0)
    assert np.abs(got[..., 0] - expected).max() <= 1
    assert 120 <= got[16, 32, 0] <= 136  # mid-grey stays mid-grey (clipping would give 255)
    # a dark 16-bit file stays dark: 200/65535 is black, not 200/255
    dark = decode_image(to_bytes(Image.fromarray(np.full((8, 8), 200, np.uint16)), "PNG"))
    assert pixels(dark).max() <= 1


def test_rgba_png_is_flattened_on_white():
    arr = np.zeros((20, 30, 4), np.uint8)
    arr[:, :10] = (255, 0, 0, 255)  # opaque red
    arr[:, 10:20] = (255, 0, 0, 128)  # half-transparent red
    arr[:, 20:] = (0, 0, 255, 0)  # fully transparent blue
    img = decode_image(to_bytes(Image.fromarray(arr, "RGBA"), "PNG"))
    assert img.size == (30, 20)
    got = pixels(img)
    assert (got[:, :10] == [255, 0, 0]).all()
    assert np.abs(got[:, 10:20] - [255, 127, 127]).max() <= 1
    assert (got[:, 20:] == 255).all()


def test_palette_png_with_transparency():
    pal = Image.new("P", (16, 8), 0)
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0, 0, 0] * 254)
    pal.paste(1, (8, 0, 16, 8))
    data = to_bytes(pal, "PNG", transparency=1)  # index 1 (blue) is transparent
    assert Image.open(io.BytesIO(data)).mode == "P"
    got = pixels(decode_image(data))
    assert (got[:, :8] == [255, 0, 0]).all()
    assert (got[:, 8:] == [255, 255, 255]).all()


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (24, 12), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert getattr(Image.open(io.BytesIO(buf.getvalue())), "n_frames", 1) == 3
    img = decode_image(buf.getvalue())
    assert img.size == (24, 12)
    assert np.abs(pixels(img) - [255, 0, 0]).max() <= 2


def test_exif_rotated_jpeg_is_upright():
    src = Image.new("RGB", (40, 20), (255, 0, 0))
    src.paste((0, 0, 255), (20, 0, 40, 20))  # left red, right blue, as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    img = decode_image(to_bytes(src, "JPEG", quality=95, exif=exif.tobytes()))
    assert img.size == (20, 40)  # width and height swapped
    got = pixels(img)
    assert np.abs(got[5, 10] - [255, 0, 0]).max() < 8  # the stored left half is now the top
    assert np.abs(got[-5, 10] - [0, 0, 255]).max() < 8


@pytest.mark.parametrize("mode", ["L", "LA", "1", "I", "F", "RGB"])
def test_other_modes_become_rgb(mode):
    src = make_photo(20, 10).convert(mode)
    fmt = "TIFF" if mode in ("I", "F") else "PNG"
    img = decode_image(to_bytes(src, fmt))
    assert img.mode == "RGB" and img.size == (20, 10)


def test_webp_bmp_tiff_photos():
    photo = make_photo(32, 24)
    for fmt in ("WEBP", "BMP", "TIFF", "JPEG"):
        img = decode_image(to_bytes(photo, fmt))
        assert img.size == (32, 24) and img.mode == "RGB", fmt


# -- masks ---------------------------------------------------------------------------------------------------
def test_decode_mask_grey_rgba_and_size_check():
    m = garment_mask(32, 24)
    assert (decode_mask(to_bytes(m, "PNG"), size=(32, 24)) == m).all()
    grey = np.where(m, 200, 60).astype(np.uint8)  # threshold at 128
    assert (decode_mask(to_bytes(grey, "PNG")) == m).all()
    rgba = np.zeros((24, 32, 4), np.uint8)
    rgba[..., 3] = m * 255  # flat colour: alpha is the mask
    assert (decode_mask(to_bytes(Image.fromarray(rgba, "RGBA"), "PNG")) == m).all()
    with pytest.raises(RequestError) as exc:
        decode_mask(to_bytes(m, "PNG"), size=(33, 24))
    assert exc.value.code == "mask_size_mismatch" and "32x24" in exc.value.message and "33x24" in exc.value.message


# -- bad bytes -----------------------------------------------------------------------------------------------
PNG = to_bytes(make_photo(64, 48), "PNG")
JPEG = to_bytes(make_photo(64, 48), "JPEG")


@pytest.mark.parametrize(
    "data, error, status, fragment",
    [
        (b"", InvalidImage, 400, "empty (0 bytes)"),
        (b"hello, this is text and not a picture", InvalidImage, 400, "not an image"),
        (PNG[: len(PNG) // 2], InvalidImage, 400, "truncated"),
        (JPEG[: len(JPEG) // 2], InvalidImage, 400, "truncated"),
        (PNG[:40], InvalidImage, 400, "`image`"),
        (png_claiming(20_000, 20_000), ImageTooLarge, 413, "pixels"),
        (png_claiming(7_000, 7_000), ImageTooLarge, 413, "pixels"),  # PIL's warning level, not its error level
    ],
    ids=["empty", "text", "truncated-png", "truncated-jpeg", "header-only", "bomb", "bomb-warning-level"],
)
def test_bad_bytes(data, error, status, fragment):
    with pytest.raises(error) as exc:
        decode_image(data)
    assert exc.value.status == status
    assert fragment in exc.value.message


def test_bomb_is_refused_even_when_pil_guard_is_off(monkeypatch):
    """Our own pixel limit must surface as ImageTooLarge (413), not be swallowed as a 'corrupt file' (400)."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with pytest.raises(ImageTooLarge) as exc:
        decode_image(png_claiming(7_000, 7_000))
    assert "7000x7000" in exc.value.message and f"{MAX_PIXELS:,}" in exc.value.message


def test_bomb_mask_names_the_field():
    with pytest.raises(ImageTooLarge) as exc:
        decode_mask(png_claiming(20_000, 20_000))
    assert "`mask`" in exc.value.message


def test_a_48_megapixel_jpeg_upload_is_decoded_at_half_size_and_a_request_is_refused():
    """shrink=True (a person's upload): libjpeg's DCT scaling decodes an 8000x6000 JPEG at 4000x3000; the same
    bytes in a model request are still refused (413)."""
    photo = Image.new("RGB", (8000, 6000), (180, 60, 90))
    photo.paste((20, 20, 200), (6000, 4000, 8000, 6000))  # the bottom-right corner
    data = to_bytes(photo, "JPEG", quality=90)
    img = decode_image(data, field="camera.jpg", shrink=True)
    assert img.size == (4000, 3000) and img.mode == "RGB" and img.info["source_size"] == (8000, 6000)
    px = img.load()
    assert max(abs(a - b) for a, b in zip(px[100, 100], (180, 60, 90), strict=True)) <= 3
    assert max(abs(a - b) for a, b in zip(px[3900, 2900], (20, 20, 200), strict=True)) <= 3  # same place, scaled
    with pytest.raises(ImageTooLarge) as exc:
        decode_image(data)
    assert f"{MAX_PIXELS:,}" in exc.value.message and exc.value.status == 413
    assert "source_size" not in decode_image(to_bytes(make_photo(64, 48), "JPEG")).info


def test_shrink_has_limits(monkeypatch):
    """Only JPEG has DCT scaling (a huge PNG is refused), and only up to twice the limit."""
    import model.images as images

    monkeypatch.setattr(images, "MAX_PIXELS", 100_000)
    big = make_photo(500, 400)  # 200,000 pixels: twice the (patched) limit
    assert decode_image(to_bytes(big, "JPEG"), shrink=True).size == (250, 200)
    with pytest.raises(ImageTooLarge) as exc:
        decode_image(to_bytes(big, "PNG"), field="scan.png", shrink=True)
    assert "`scan.png` is 500x400" in exc.value.message and "JPEG photos up to twice" in exc.value.message
    with pytest.raises(ImageTooLarge):
        decode_image(png_claiming(20_000, 20_000), shrink=True)  # PIL's own hard limit still applies


# -- base64 --------------------------------------------------------------------------------------------------
def test_b64decode_accepts_data_urls_whitespace_and_urlsafe():
    raw = bytes(range(256)) * 3
    std = base64.b64encode(raw).decode()
    assert b64decode(std, field="image") == raw
    assert b64decode("data:image/png;base64," + std, field="image") == raw
    assert b64decode("\n".join(std[i:i + 76] for i in range(0, len(std), 76)), field="image") == raw
    assert b64decode(base64.urlsafe_b64encode(raw).decode(), field="image") == raw


@pytest.mark.parametrize("text", ["not base64 at all!", "abc", "ab-!cdefg", "ab-/cdef", "ÿÿÿÿ"])
def test_b64decode_rejects(text):
    with pytest.raises(RequestError) as exc:
        b64decode(text, field="image")
    assert exc.value.code == "invalid_base64" and "`image`" in exc.value.message


def test_b64decode_rejects_non_strings():
    with pytest.raises(RequestError, match="must be a base64 string, got int"):
        b64decode(42, field="mask")  # type: ignore[arg-type]


# -- encode --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt, pil", [("png", "PNG"), ("jpeg", "JPEG"), ("jpg", "JPEG"), ("webp", "WEBP")])
def test_encode_formats(fmt, pil):
    photo = make_photo(40, 30)
    out = Image.open(io.BytesIO(encode_image(photo, fmt)))
    assert out.format == pil and out.size == (40, 30)


def test_encode_roundtrips():
    photo = make_photo(40, 30)
    assert (np.asarray(load_image_b64(encode_b64(photo))) == np.asarray(photo)).all()  # PNG is lossless
    m = garment_mask(40, 30)
    assert (decode_mask(encode_image(m)) == m).all()
    with pytest.raises(RequestError) as exc:
        encode_image(photo, "gif")
    assert exc.value.code == "invalid_format"
