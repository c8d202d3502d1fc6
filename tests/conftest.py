"""Shared fixtures: tiny seeded checkpoints (built once per session) and small synthetic photos."""

from __future__ import annotations

import base64
import contextlib
import io
import os
import threading
from collections.abc import Iterator
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
    from filelock import FileLock

    from model.tiny import build_tiny

    cache = os.environ.get("RESTYLE_TINY_CACHE")  # reuse across runs (rebuilt when model/tiny.py changes)
    if cache:
        root = Path(cache)
    elif os.environ.get("PYTEST_XDIST_WORKER"):  # pytest -n: one build per run, shared by the workers
        root = tmp_path_factory.getbasetemp().parent / "tiny"
    else:
        root = tmp_path_factory.mktemp("tiny")
    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{root}.lock"):  # the first worker builds; the others wait, then find it complete
        return build_tiny(root)


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


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """moto's server on a free loopback port, applying one request at a time; yields its URL.

    DynamoDB applies each write and each transaction atomically, moto's backends do not: a TransactWriteItems whose
    condition fails restores a copy of the whole table taken before it began, undoing a write another request made
    meanwhile (two replicas both claimed one interrupted turn under ``make test``'s parallel load).  Requests are
    still read and answered on their own threads; only moto's own work is serialized."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    app = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()

    def one_at_a_time(environ, start_response):
        with lock:
            return list(app(environ, start_response))

    server = make_server("127.0.0.1", 0, one_at_a_time, threaded=True, request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, name="moto", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)


@pytest.fixture(scope="module")
def moto_url():
    """moto's server (``moto_server``) for one test module: the AWS control plane, S3, DynamoDB."""
    with moto_server() as url:
        yield url
