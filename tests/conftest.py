"""Shared fixtures: tiny seeded checkpoints (built once per session) and small synthetic photos."""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """``clipseg/`` and ``inpaint/`` tiny random checkpoints in Hugging Face layout (python -m model.tiny)."""
    from model.tiny import build_tiny

    return build_tiny(tmp_path_factory.mktemp("tiny"))


def make_photo(width: int = 96, height: int = 128, seed: int = 0) -> Image.Image:
    """A smooth synthetic 'photo' (gradients + a darker garment-shaped block) that compresses like a real one."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    rng = np.random.RandomState(seed)
    img = np.stack([xx / width * 200 + 30, yy / height * 180 + 40, (xx + yy) / (width + height) * 220 + 20], -1)
    img[height // 2: height * 7 // 8, width // 4: width * 3 // 4] *= 0.5  # the "skirt"
    img += rng.normal(0, 2, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def garment_mask(width: int = 96, height: int = 128) -> np.ndarray:
    m = np.zeros((height, width), dtype=bool)
    m[height // 2: height * 7 // 8, width // 4: width * 3 // 4] = True
    return m


def to_bytes(img: Image.Image | np.ndarray, fmt: str = "PNG", **kw) -> bytes:
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img.astype(np.uint8) * 255 if img.dtype == bool else img)
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def b64(data: bytes | Image.Image | np.ndarray) -> str:
    if not isinstance(data, bytes):
        data = to_bytes(data)
    return base64.b64encode(data).decode()


@pytest.fixture
def photo() -> Image.Image:
    return make_photo()
