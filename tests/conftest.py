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

    cache = os.environ.get("RESTYLE_TINY_CACHE")  # reuse across runs (rebuilt when model/tiny.py changes)
    return build_tiny(Path(cache) if cache else tmp_path_factory.mktemp("tiny"))


def garment_box(width: int, height: int) -> tuple[int, int, int, int]:
    """Where ``make_photo`` puts its garment (x0, y0, x1, y1): lower middle, about a quarter of the photo."""
    return width // 4, height // 2, width * 3 // 4, height * 7 // 8


def make_photo(width: int = 96, height: int = 128, seed: int = 0, garment: bool = True) -> Image.Image:
    """A smooth synthetic 'photo' with a darker garment rectangle (what the tiny CLIPSeg learned to find)."""
    from model.tiny import synthetic_photo

    return synthetic_photo(width, height, garment_box(width, height) if garment else None, seed=seed)


def garment_mask(width: int = 96, height: int = 128) -> np.ndarray:
    m = np.zeros((height, width), dtype=bool)
    x0, y0, x1, y1 = garment_box(width, height)
    m[y0:y1, x0:x1] = True
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


@pytest.fixture(scope="module")
def moto_url():
    """moto's server on a free loopback port, for one test module (the AWS control plane, S3, DynamoDB)."""
    from moto import server as moto_server

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
