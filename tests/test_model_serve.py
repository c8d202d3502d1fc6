"""model.serve + model.handlers end to end: the real boto3 SageMaker Runtime client → loopback server → tiny models.

One server per module (both endpoints loaded).  Every bad input is sent on both server paths:

* the container contract, ``POST /invocations?model=...`` → 4xx ``{"error": {"code", "message", "retryable"}}``;
* the SageMaker Runtime path through boto3 → ``ClientError``: ``ModelError`` carrying ``OriginalStatusCode`` and
  ``OriginalMessage``, or ``ValidationError`` for an unknown endpoint / an oversized payload;
* ``transform_fn``, the chain the Hugging Face toolkit runs → ``ErrorReply`` whose text is the same JSON body.

A generation slower than the bot's timeout is computed once: the bot does not resend it, and the server stops it
at the next diffusion step once the client has gone.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import boto3
import numpy as np
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from PIL import Image

from model.errors import error_body
from model.handlers import MAX_PAYLOAD, LoadedModel, handle
from model.serve import ModelServer, _HTTPServer, make_handler, start
from tests.conftest import b64, garment_mask, make_photo, to_bytes
from tests.test_model_images import png_claiming

W, H = 64, 48  # small: every good request runs the tiny models at 2 steps


# -- fixtures and helpers --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_server(tiny_dir):
    srv = ModelServer({"clipseg": str(tiny_dir / "clipseg"), "inpaint": str(tiny_dir / "inpaint")}, device="cpu")
    httpd = start(srv, port=0)
    assert srv.ready.wait(300), srv.load_error
    yield srv, httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def server(model_server):
    return model_server[1]


@pytest.fixture(scope="module")
def runtime(server):
    return boto3.client("sagemaker-runtime", endpoint_url=f"http://127.0.0.1:{server}", region_name="us-east-1",
                        aws_access_key_id="x", aws_secret_access_key="y",
                        config=Config(retries={"total_max_attempts": 1}, read_timeout=120))


def post(port: int, path: str, body: bytes, headers: dict | None = None, method: str = "POST"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.read(), {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def invoke(runtime, endpoint: str, payload: dict | bytes, **kw) -> dict:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    resp = runtime.invoke_endpoint(EndpointName=endpoint, Body=body, **{"ContentType": "application/json", **kw})
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert resp["ContentType"] == "application/json"
    return json.loads(resp["Body"].read())


def decode(b64text: str) -> Image.Image:
    img = Image.open(io.BytesIO(base64.b64decode(b64text)))
    img.load()
    return img


def segment_body(**kw) -> dict:
    return {"image": b64(make_photo(W, H)), "prompts": ["skirt", "dress"], **kw}


def inpaint_body(**kw) -> dict:
    return {"image": b64(make_photo(W, H)), "mask": b64(garment_mask(W, H)), "prompt": "red floral skirt",
            "num_images": 1, "seed": 3, "steps": 2, **kw}


# -- the container contract ------------------------------------------------------------------------------------
def test_ping_200_once_loaded(server):
    status, body, headers = post(server, "/ping", b"", method="GET")
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(body) == {"status": "ok", "models": ["clipseg", "inpaint"]}
    status, body, _ = post(server, "/ping", b"", method="HEAD")
    assert status == 200 and body == b""


def test_ping_503_before_loading_and_not_ready_invocations():
    srv = ModelServer({"clipseg": "/nonexistent/clipseg"})  # load() never called
    status, body, _ = srv.route("GET", "/ping", {}, b"")
    assert status == 503 and json.loads(body)["status"] == "loading"
    status, body, _ = srv.route("POST", "/invocations", {"content-type": "application/json"}, b"{}")
    assert status == 503 and json.loads(body)["error"]["code"] == "not_ready"
    status, body, hdrs = srv.route("POST", "/endpoints/restyle-clipseg/invocations", {}, b"{}")
    assert status == 503 and hdrs["x-amzn-ErrorType"] == "ServiceUnavailable"


def test_ping_500_when_loading_failed(caplog):
    srv = ModelServer({"clipseg": "/nonexistent/clipseg"})
    with caplog.at_level(logging.ERROR, logger="restyle.serve"):
        srv.load()
    status, body, _ = srv.route("GET", "/ping", {}, b"")
    assert status == 500 and json.loads(body)["error"]["code"] == "load_failed"
    assert "ModelUnavailable" in json.loads(body)["error"]["message"]


def test_invocations_by_query_and_by_custom_attributes(server):
    status, body, _ = post(server, "/invocations?model=clipseg", json.dumps(segment_body()).encode())
    assert status == 200 and json.loads(body)["prompts"] == ["skirt", "dress"]
    status, body, _ = post(server, "/invocations", json.dumps(inpaint_body()).encode(),
                           {"X-Amzn-SageMaker-Custom-Attributes": "trace=1, model=Inpaint"})
    assert status == 200 and json.loads(body)["seeds"] == [3]


def test_invocations_routing_errors(server):
    status, body, _ = post(server, "/invocations", json.dumps(segment_body()).encode())
    assert status == 400 and json.loads(body)["error"]["code"] == "ambiguous_model"
    status, body, _ = post(server, "/invocations?model=sdxl", b"{}")
    assert status == 404 and json.loads(body)["error"]["code"] == "unknown_model"
    status, body, _ = post(server, "/invocations?model=clipseg", b"", method="GET")
    assert status == 405 and json.loads(body)["error"]["code"] == "method_not_allowed"
    status, body, _ = post(server, "/nowhere", b"", method="GET")
    assert status == 404 and json.loads(body)["error"]["code"] == "not_found"


def test_body_over_hard_limit_is_refused_unread(server):
    """A Content-Length far over the limit is answered at once (SageMaker-shaped on the runtime path)."""
    with socket.create_connection(("127.0.0.1", server), timeout=30) as sock:
        sock.sendall(b"POST /endpoints/restyle-clipseg/invocations HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413")
    assert b"x-amzn-ErrorType: ValidationError" in head
    assert json.loads(body)["error"]["code"] == "payload_too_large"


def raw_http(port: int, request: bytes) -> tuple[bytes, dict]:
    """Send ``request`` as it is; the status line and the JSON body of the answer (the server closes after it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0], json.loads(body)


@pytest.mark.parametrize("request_bytes, status, code", [
    (b"POST /invocations?model=clipseg HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
     b"411", "length_required"),
    (b"POST /invocations?model=clipseg HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", b"400",
     "bad_content_length"),
    (b"POST /invocations?model=clipseg HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", b"400",
     "bad_content_length"),
    (b"HELLO\r\n\r\n", b"400", "bad_http_request"),
    (b"DELETE /invocations HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"405", "method_not_allowed"),
    (b"POST /ping HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", b"405",
     "method_not_allowed"),
])
def test_http_level_mistakes_get_json_answers(server, request_bytes, status, code):
    """What the standard library would answer with an HTML page, or misread (a chunked body read as the next
    request), is a JSON error, and the connection closes cleanly."""
    line, body = raw_http(server, request_bytes)
    assert status in line and body["error"]["code"] == code


def test_a_burst_of_connections_is_queued_not_reset(tiny_dir):
    """64 clients connecting at the same moment all get an answer (the standard library's backlog is 5)."""
    from model.serve import _HTTPServer, make_handler

    srv = ModelServer({"clipseg": str(tiny_dir / "clipseg")}, device="cpu")
    httpd = _HTTPServer(("127.0.0.1", 0), make_handler(srv))  # listening, not yet accepting
    port = httpd.server_address[1]
    socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(64)]
    for s in socks:
        s.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        for s in socks:
            with s:
                assert s.recv(64).startswith(b"HTTP/1.1 503")  # answered ("loading": nothing was loaded)
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_long_prompts_and_few_pndm_steps_are_served(runtime):
    """CLIP reads 77 tokens: a longer garment prompt is cut there, not a 500; PNDM works at 2 steps."""
    out = invoke(runtime, "restyle-clipseg", segment_body(prompts=[" ".join(["red"] * 120), "skirt"]))
    assert len(out["masks"]) == 2
    out = invoke(runtime, "restyle-inpaint", inpaint_body(scheduler="pndm", steps=2))
    assert len(out["images"]) == 1


# -- boto3 end to end ------------------------------------------------------------------------------------------
def test_boto3_clipseg(runtime):
    out = invoke(runtime, "restyle-clipseg", segment_body(prompts=["skirt", "dress", "jacket"], min_coverage=0.0,
                                                          threshold=0.3))
    assert out["prompts"] == ["skirt", "dress", "jacket"]
    assert (out["width"], out["height"]) == (W, H)
    for key in ("masks", "scores", "coverage", "bboxes", "found"):
        assert len(out[key]) == 3, key
    union = np.zeros((H, W), bool)
    for m64, cov, box, found, score in zip(out["masks"], out["coverage"], out["bboxes"], out["found"],
                                           out["scores"], strict=True):
        img = decode(m64)
        assert img.format == "PNG" and img.size == (W, H)
        mask = np.asarray(img.convert("L"))
        assert set(np.unique(mask)) <= {0, 255}
        mask = mask > 0
        assert cov == pytest.approx(mask.mean(), abs=1e-6)
        assert found == bool(mask.any())
        assert 0.0 <= score <= 1.0
        if found:
            ys, xs = np.nonzero(mask)
            assert box == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            union |= mask
        else:
            assert box is None
    assert (np.asarray(decode(out["union"]).convert("L")) > 0).tolist() == union.tolist()
    assert "forward" in out["timings_ms"]
    # the tiny CLIPSeg is fitted to make_photo's garment: the "skirt" mask lands on it
    skirt = np.asarray(decode(out["masks"][0]).convert("L")) > 0
    truth = garment_mask(W, H)
    assert out["found"][0] and (skirt & truth).sum() / truth.sum() > 0.9
    assert invoke(runtime, "restyle-clipseg", segment_body(include_union=False))["union"] is None


def test_boto3_inpaint(runtime):
    out = invoke(runtime, "restyle-inpaint", inpaint_body(num_images=2, seed=7))
    assert out["seeds"] == [7, 8] and len(out["images"]) == 2 and out["rejected"] == []
    assert (out["width"], out["height"], out["format"], out["offset"]) == (W, H, "png", None)
    x0, y0, x1, y1 = out["crop_box"]
    assert 0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H
    for img in map(decode, out["images"]):
        assert img.format == "PNG" and img.size == (W, H) and img.mode == "RGB"
    # a random seed is chosen and returned when none is given
    assert len(invoke(runtime, "inpaint", inpaint_body(seed=None) | {"num_images": 1})["seeds"]) == 1


@pytest.mark.parametrize("fmt, pil", [("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP")])
def test_boto3_inpaint_formats(runtime, fmt, pil):
    out = invoke(runtime, "restyle-inpaint", inpaint_body(format=fmt, quality=80))
    img = decode(out["images"][0])
    assert out["format"] == fmt and img.format == pil and img.size == (W, H)


def test_boto3_return_crop(runtime):
    w, h = 160, 120
    photo, mask = make_photo(w, h), np.zeros((h, w), bool)
    mask[40:70, 60:100] = True
    body = {"image": b64(photo), "mask": b64(mask), "prompt": "skirt", "seeds": [4], "steps": 2, "padding": 8}
    full = invoke(runtime, "restyle-inpaint", body)
    crop = invoke(runtime, "restyle-inpaint", {**body, "return_crop": True})
    x0, y0, x1, y1 = crop["crop_box"]
    assert crop["crop_box"] == full["crop_box"] and crop["offset"] == [x0, y0]
    assert (crop["width"], crop["height"]) == (x1 - x0, y1 - y0)
    assert (x1 - x0, y1 - y0) != (w, h)  # really a crop
    assert x0 <= 60 - 8 and y0 <= 40 - 8 and x1 >= 100 + 8 and y1 >= 70 + 8
    piece = decode(crop["images"][0])
    assert piece.size == (x1 - x0, y1 - y0)
    # the crop is exactly that region of the full answer
    assert (np.asarray(piece) == np.asarray(decode(full["images"][0]).crop((x0, y0, x1, y1)))).all()


# -- seeds -----------------------------------------------------------------------------------------------------
def test_same_request_same_pixels(runtime):
    body = inpaint_body(num_images=2, seed=21)
    assert invoke(runtime, "restyle-inpaint", body)["images"] == invoke(runtime, "restyle-inpaint", body)["images"]


def test_candidate_equals_single_seed_request(runtime):
    many = invoke(runtime, "restyle-inpaint", inpaint_body(seeds=[30, 31, 32]))
    assert many["seeds"] == [30, 31, 32]
    by_seed = invoke(runtime, "restyle-inpaint", inpaint_body(seed=30, num_images=3))
    assert by_seed["seeds"] == [30, 31, 32]
    pixels = [np.asarray(decode(i)).astype(int) for i in many["images"]]
    for i in range(3):
        assert np.abs(pixels[i] - np.asarray(decode(by_seed["images"][i])).astype(int)).max() <= 2
    # the last candidate alone (every position is checked on the Inpainter in test_model_engines.py)
    alone = np.asarray(decode(invoke(runtime, "restyle-inpaint", inpaint_body(seeds=[32]))["images"][0]))
    assert np.abs(pixels[2] - alone.astype(int)).max() <= 2
    assert np.abs(pixels[0] - pixels[1]).max() > 10  # different seeds, different pixels
    assert np.abs(pixels[1] - pixels[2]).max() > 10


# -- the bad input table ---------------------------------------------------------------------------------------
PNG = to_bytes(make_photo(W, H), "PNG")
JPEG = to_bytes(make_photo(W, H), "JPEG")
OVERSIZE = b'{"image": "' + b"A" * (MAX_PAYLOAD + 10) + b'"}'


@dataclass
class Bad:
    id: str
    role: str
    body: Any  # dict (JSON-encoded) or raw bytes
    status: int
    code: str
    fragment: str  # the message must say this
    headers: dict = field(default_factory=dict)
    runtime_error: str = "ModelError"  # the boto3 error code on the SageMaker Runtime path
    endpoint: str | None = None


BAD = [
    Bad("not-base64", "clipseg", segment_body(image="this is not base64!"), 400, "invalid_base64",
        "`image` is not valid base64"),
    Bad("not-an-image", "clipseg", segment_body(image=b64(b"just some text, no picture here")), 400,
        "invalid_image", "not an image"),
    Bad("zero-bytes", "clipseg", segment_body(image=""), 400, "invalid_image", "`image` is empty (0 bytes)"),
    Bad("truncated-png", "clipseg", segment_body(image=b64(PNG[: len(PNG) // 2])), 400, "invalid_image",
        "truncated"),
    Bad("truncated-jpeg", "inpaint", inpaint_body(image=b64(JPEG[: len(JPEG) // 2])), 400, "invalid_image",
        "truncated"),
    Bad("bomb", "clipseg", segment_body(image=b64(png_claiming(20_000, 20_000))), 413, "image_too_large",
        "pixels"),
    Bad("bomb-mask", "inpaint", inpaint_body(mask=b64(png_claiming(20_000, 20_000))), 413, "image_too_large",
        "`mask`"),
    Bad("missing-image", "clipseg", {"prompts": ["skirt"]}, 400, "invalid_request", "`image` is required"),
    Bad("missing-mask-prompt", "inpaint", {"image": b64(PNG)}, 400, "invalid_request", "`mask` is required"),
    Bad("num-images-str", "inpaint", inpaint_body(num_images="4"), 400, "invalid_request", "`num_images`"),
    Bad("prompts-str", "clipseg", segment_body(prompts="skirt"), 400, "invalid_request", "`prompts`"),
    Bad("prompts-empty", "clipseg", segment_body(prompts=[]), 400, "invalid_request", "at least 1"),
    Bad("prompt-blank", "inpaint", inpaint_body(prompt="   "), 400, "invalid_request", "must not be empty"),
    Bad("prompts-blank-item", "clipseg", segment_body(prompts=["skirt", " "]), 400, "invalid_request",
        "`prompts[1]`"),
    Bad("num-images-0", "inpaint", inpaint_body(num_images=0), 400, "invalid_request", "`num_images`"),
    Bad("num-images-17", "inpaint", inpaint_body(num_images=17), 400, "invalid_request", "less than or equal"),
    Bad("steps-0", "inpaint", inpaint_body(steps=0), 400, "invalid_request", "`steps`"),
    Bad("steps-151", "inpaint", inpaint_body(steps=151), 400, "invalid_request", "`steps`"),
    Bad("threshold-1", "clipseg", segment_body(threshold=1.0), 400, "invalid_request", "`threshold`"),
    Bad("bad-format", "inpaint", inpaint_body(format="gif"), 400, "invalid_request", "`format`"),
    Bad("unknown-field", "inpaint", inpaint_body(colour="red"), 400, "invalid_request",
        "`colour` is not a known field"),
    Bad("malformed-json", "clipseg", b'{"image": "abc", "prompts": [', 400, "malformed_json", "not valid JSON"),
    Bad("json-array", "clipseg", b'[{"image": "abc"}]', 400, "malformed_json", "must be a JSON object"),
    Bad("not-utf8", "inpaint", b"\xff\xfe\x00garbage", 400, "malformed_json", "not valid JSON"),
    Bad("empty-body", "clipseg", b"", 400, "malformed_json", "empty"),
    Bad("content-type", "clipseg", segment_body(), 415, "unsupported_media_type", "text/plain",
        headers={"Content-Type": "text/plain"}),
    Bad("accept", "inpaint", inpaint_body(), 406, "not_acceptable", "image/png", headers={"Accept": "image/png"}),
    Bad("mask-size", "inpaint", inpaint_body(mask=b64(garment_mask(W + 1, H))), 400, "mask_size_mismatch",
        "must match"),
    Bad("mask-empty", "inpaint", inpaint_body(mask=b64(np.zeros((H, W), bool))), 400, "empty_mask",
        "nothing to repaint"),
    Bad("oversize", "clipseg", OVERSIZE, 413, "payload_too_large", "6 MB", runtime_error="ValidationError"),
    Bad("no-denoising-step", "inpaint", inpaint_body(steps=2, strength=0.01), 400, "invalid_request",
        "at least one denoising step"),
    Bad("nested-json", "clipseg", b"[" * 100_000, 400, "malformed_json", "too deeply"),
    Bad("lone-surrogate", "clipseg", json.dumps(segment_body(prompts=["skirt", "@"])).replace('"@"', '"\\ud800"')
        .encode(), 400, "invalid_request", "lone surrogate"),
    Bad("lab-mask", "inpaint", inpaint_body(mask=b64(to_bytes(make_photo(W, H).convert("LAB"), "TIFF"))), 400,
        "invalid_image", "colour mode LAB"),
    Bad("unknown-look", "inpaint", inpaint_body(look="studio"), 400, "unknown_look", "base model only"),
    Bad("bad-look-name", "inpaint", inpaint_body(look="Studio Look"), 400, "invalid_request", "`look`"),
    Bad("unknown-endpoint", "sdxl", segment_body(), 404, "unknown_model", "sdxl",
        runtime_error="ValidationError", endpoint="restyle-sdxl"),
]


def _raw(case: Bad) -> bytes:
    return case.body if isinstance(case.body, bytes) else json.dumps(case.body).encode()


def _check_error(status: int, body: bytes | str, case: Bad) -> None:
    text = body.decode() if isinstance(body, bytes) else body
    assert "Traceback" not in text and 'File "' not in text
    err = json.loads(text)["error"]
    assert set(err) == {"code", "message", "retryable"} and err["retryable"] is False
    assert (status, err["code"]) == (case.status, case.code), err["message"]
    assert case.fragment in err["message"]


@pytest.mark.parametrize("case", BAD, ids=[c.id for c in BAD])
def test_bad_input_container_path(server, case):
    status, body, headers = post(server, f"/invocations?model={case.role}", _raw(case), case.headers)
    assert 400 <= status < 500
    assert headers["content-type"] == "application/json"
    _check_error(status, body, case)


@pytest.mark.parametrize("case", BAD, ids=[c.id for c in BAD])
def test_bad_input_runtime_path(runtime, case):
    kw = {"ContentType": case.headers.get("Content-Type", "application/json")}
    if "Accept" in case.headers:
        kw["Accept"] = case.headers["Accept"]
    with pytest.raises(ClientError) as info:
        runtime.invoke_endpoint(EndpointName=case.endpoint or f"restyle-{case.role}", Body=_raw(case), **kw)
    resp = info.value.response
    assert 400 <= resp["ResponseMetadata"]["HTTPStatusCode"] < 500
    assert resp["Error"]["Code"] == case.runtime_error
    if case.runtime_error == "ModelError":
        assert resp["ResponseMetadata"]["HTTPStatusCode"] == 424
        assert resp["OriginalStatusCode"] == case.status
        _check_error(resp["OriginalStatusCode"], resp["OriginalMessage"], case)
        assert case.code in resp["Error"]["Message"]
    elif case.id == "oversize":
        assert resp["ResponseMetadata"]["HTTPStatusCode"] == 413
        assert "6 MB" in resp["Error"]["Message"]
    else:
        assert resp["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert "restyle-sdxl" in resp["Error"]["Message"] and "restyle-inpaint" in resp["Error"]["Message"]


@pytest.mark.parametrize("case", [c for c in BAD if c.runtime_error == "ModelError"],
                         ids=[c.id for c in BAD if c.runtime_error == "ModelError"])
def test_bad_input_through_transform_fn(model_server, case):
    """The Hugging Face toolkit's path: our JSON body is the text of the exception it turns into a 400, and the
    bot reads the code and ``retryable`` out of the toolkit's wrapper."""
    from bot.backends import model_error
    from model.errors import ErrorReply
    from model.handlers import transform_fn

    srv, _ = model_server
    with pytest.raises(ErrorReply) as info:
        transform_fn(srv.models[case.role], _raw(case), case.headers.get("Content-Type", "application/json"),
                     case.headers.get("Accept"))
    _check_error(info.value.status, str(info.value), case)
    # what the toolkit's model server answers: its own JSON, ours escaped inside its message, always 400
    wrapper = json.dumps({"code": 400, "type": "InternalServerException", "message": str(info.value)})
    assert model_error({"OriginalMessage": wrapper}, 400) == (case.code, json.loads(str(info.value))["error"]
                                                              ["message"], False)


def test_server_still_healthy_after_the_table(server, runtime):
    status, body, _ = post(server, "/ping", b"", method="GET")
    assert status == 200 and json.loads(body)["status"] == "ok"
    assert len(invoke(runtime, "restyle-inpaint", inpaint_body())["images"]) == 1
    assert len(invoke(runtime, "restyle-clipseg", segment_body())["masks"]) == 2


# -- our failures: 500, generic message, traceback in the log ----------------------------------------------------
class Broken:
    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def __call__(self, *args, **kwargs):
        raise self.exc


@pytest.mark.parametrize("exc", [RuntimeError("CUDA error: device-side assert"), ValueError("operands could not "
                                                                                             "be broadcast")])
def test_broken_model_is_a_500_with_the_traceback_in_the_log(caplog, exc):
    model = LoadedModel("clipseg", Broken(exc), "broken")
    body = json.dumps(segment_body()).encode()
    with caplog.at_level(logging.ERROR, logger="restyle.model"):
        status, out, ctype = handle(model, body, "application/json", None)
    assert status == 500 and ctype == "application/json"
    err = json.loads(out)["error"]
    assert err == {"code": "internal_error", "message": "the model failed on this request; see the logs",
                   "retryable": True}
    assert "Traceback" not in out.decode() and str(exc) not in out.decode()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "Traceback (most recent call last)" in logged and f"{type(exc).__name__}: {exc}" in logged

    # the same through the router, on both paths
    srv = ModelServer({"clipseg": "broken"})
    srv.models["clipseg"] = model
    srv.ready.set()
    status, out, _ = srv.route("POST", "/invocations", {"content-type": "application/json"}, body)
    assert status == 500 and json.loads(out)["error"]["code"] == "internal_error"
    status, out, hdrs = srv.route("POST", "/endpoints/restyle-clipseg/invocations",
                                  {"content-type": "application/json"}, body)
    assert status == 424 and hdrs["x-amzn-ErrorType"] == "ModelError"
    sm = json.loads(out)
    assert sm["OriginalStatusCode"] == 500 and json.loads(sm["OriginalMessage"])["error"]["code"] == "internal_error"
    assert "Traceback" not in out.decode()


@pytest.mark.parametrize("argv, says", [
    (["--clipseg", "x", "--port", "99999"], "--port must be 0-65535"),
    (["--clipseg", "x", "--prefix", "Bad_Prefix!"], "--prefix must be lowercase"),
    (["--clipseg", "x", "--device", "nonsense"], "--device must be cpu, cuda"),
    (["--clipseg", "x", "--async-output", "notS3"], "--async-output must be an s3://"),
    (["--inpaint", "x", "--lora", "none=/x"], "'none' is not a usable look name"),
    (["--clipseg", "x", "--log-level", "LOUD"], "invalid choice: 'LOUD'"),
])
def test_serve_flags_are_checked_before_anything_loads(argv, says, capsys):
    from model.serve import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and says in capsys.readouterr().err


def test_serve_on_a_taken_port_says_so(server, capsys):
    from model.serve import main

    assert main(["--clipseg", "x", "--port", str(server)]) == 2
    assert f"cannot listen on 127.0.0.1:{server}" in capsys.readouterr().err


# -- a generation slower than the timeout is computed once ---------------------------------------------------------
class SlowSteps:
    """The real tiny inpainter, each diffusion step made slow; counts calls and the steps that ran."""

    def __init__(self, engine, step_s: float) -> None:
        self.engine, self.step_s = engine, step_s
        self.calls = 0
        self.steps_run = 0
        self.looks = getattr(engine, "looks", ())

    def __call__(self, *args, progress=None, **kwargs):
        self.calls += 1

        def slow(done: int, total: int) -> None:
            time.sleep(self.step_s)
            self.steps_run += 1
            if progress is not None:
                progress(done, total)

        return self.engine(*args, progress=slow, **kwargs)


@pytest.fixture
def aws_env(monkeypatch):
    """Dummy credentials and a region, so the backend builds its own boto3 client (with its own retry rules)."""
    for var, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": "/dev/null",
                       "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}.items():
        monkeypatch.setenv(var, value)
    for var in ("AWS_PROFILE", "AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)


def test_slow_generation_is_computed_once_and_stopped_when_the_client_leaves(tiny_dir, caplog, aws_env):
    from bot.backends import BackendUnavailable, SageMakerBackend
    from model.handlers import load_model
    from model.schemas import InpaintRequest

    srv = ModelServer({"inpaint": str(tiny_dir / "inpaint")}, device="cpu")
    real = load_model("inpaint", str(tiny_dir / "inpaint"), device="cpu")
    slow = SlowSteps(real.engine, step_s=0.2)
    srv.models["inpaint"] = LoadedModel("inpaint", slow, real.ref)
    srv.ready.set()
    httpd = _HTTPServer(("127.0.0.1", 0), make_handler(srv))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        backend = SageMakerBackend(clipseg_endpoint="restyle-clipseg", inpaint_endpoint="restyle-inpaint",
                                   endpoint_url=f"http://127.0.0.1:{httpd.server_address[1]}", timeout_s=1.0,
                                   retries=3)
        req = InpaintRequest(image=b64(make_photo(W, H)), mask=b64(garment_mask(W, H)), prompt="a red skirt",
                             num_images=1, seed=1, steps=30)  # 30 steps x 0.2 s: far over the 1 s timeout
        t0 = time.monotonic()
        with caplog.at_level(logging.INFO), pytest.raises(BackendUnavailable) as info:
            backend.inpaint_call(req)
        elapsed = time.monotonic() - t0
        print(f"\nread timeout 1 s: failed after {elapsed:.2f} s")
        assert 1.0 <= elapsed < 1.8, elapsed  # told within about one timeout, not 4 x 1 s plus backoff
        assert slow.calls == 1  # sent once: a read timeout is never retried
        text = str(info.value)
        assert "did not answer within 1 seconds" in text and "Error" not in text  # plain words, no class names
        # the server notices the client has gone and stops at the next step, long before step 30
        deadline = time.monotonic() + 5
        while "stopped: the client went away" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "stopped: the client went away" in caplog.text
        ran = slow.steps_run
        time.sleep(1.0)
        print(f"engine calls {slow.calls}, steps run {ran} of 30")
        assert slow.steps_run == ran < 15  # nothing more runs after the stop
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_unreachable_endpoint_reads_as_plain_words(aws_env):
    from bot.backends import BackendUnavailable, SageMakerBackend
    from model.schemas import SegmentRequest

    backend = SageMakerBackend(clipseg_endpoint="restyle-clipseg", inpaint_endpoint="restyle-inpaint",
                               endpoint_url="http://127.0.0.1:9", timeout_s=2.0, retries=1)
    with pytest.raises(BackendUnavailable) as info:
        backend.segment_call(SegmentRequest(image=b64(make_photo(W, H)), prompts=["skirt"]))
    assert str(info.value) == "the clipseg endpoint restyle-clipseg could not be reached after 2 tries"


# -- the bot decides from the body, whatever status the serving stack chose ---------------------------------------
class ToolkitLike(ModelServer):
    """Answers errors the way the Hugging Face toolkit behind SageMaker does: always 400, our JSON escaped inside
    the toolkit's own ``{"code", "type", "message"}``.  ``crash`` answers that many requests with a retryable
    ``internal_error``; a request for more than ``max_seeds`` candidates gets ``response_too_large``."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.crash = 0
        self.max_seeds = 16
        self.calls: list[int] = []

    def route(self, method, path, headers, body):
        if path.endswith("/invocations") and "inpaint" in path:
            seeds = json.loads(body).get("seeds") or [0]
            self.calls.append(len(seeds))
            if self.crash > 0:
                self.crash -= 1
                return self._model_error(500, json.dumps(error_body("internal_error", "boom", True)).encode())
            if len(seeds) > self.max_seeds:
                return self._model_error(413, json.dumps(error_body("response_too_large", "too big")).encode())
        return super().route(method, path, headers, body)

    def _model_error(self, status, out):
        wrapper = json.dumps({"code": 400, "type": "InternalServerException", "message": out.decode()})
        return super()._model_error(400, wrapper.encode())


def test_retries_and_halving_follow_the_body_through_a_toolkit_400(tiny_dir, aws_env):
    from bot.backends import BackendError, SageMakerBackend
    from model.schemas import InpaintRequest

    srv = ToolkitLike({"inpaint": str(tiny_dir / "inpaint")}, device="cpu")
    httpd = start(srv, port=0)
    assert srv.ready.wait(300), srv.load_error
    try:
        backend = SageMakerBackend(clipseg_endpoint="restyle-clipseg", inpaint_endpoint="restyle-inpaint",
                                   endpoint_url=f"http://127.0.0.1:{httpd.server_address[1]}", retries=2)
        req = InpaintRequest(image=b64(make_photo(W, H)), mask=b64(garment_mask(W, H)), prompt="a red skirt",
                             num_images=1, seed=1, steps=2)
        srv.crash = 1  # a 400 whose body says internal_error, retryable: sent again, then it works
        assert len(backend.inpaint_call(req).images) == 1 and srv.calls == [1, 1]
        srv.calls.clear()
        srv.max_seeds = 1  # response_too_large in a 400: asked again in halves, down to one candidate a call
        out = backend.inpaint_many(req, seeds=[1, 2, 3, 4])
        assert out.seeds == [1, 2, 3, 4] and srv.calls == [4, 2, 1, 1, 2, 1, 1]
        srv.calls.clear()
        with pytest.raises(BackendError) as info:  # a caller's error in a 400: never sent again
            backend.inpaint_call(req.model_copy(update={"look": "nope"}))
        assert info.value.code == "unknown_look" and srv.calls == [1]
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize("original, status, want", [
    ('{"error": {"code": "unknown_look", "message": "no", "retryable": false}}', 400, ("unknown_look", "no", False)),
    ('{"error": {"code": "internal_error", "message": "boom", "retryable": true}}', 400,
     ("internal_error", "boom", True)),  # the toolkit's 400 does not make a crash final
    ('{"error": {"code": "internal_error", "message": "boom"}}', 400, ("internal_error", "boom", True)),  # older
    ('{"error": {"code": "empty_mask", "message": "m"}}', 500, ("empty_mask", "m", True)),  # older model, 5xx
    ('{"code": 400, "type": "InternalServerException", "message": "{\\"error\\": {\\"code\\": \\"invalid_image\\", '
     '\\"message\\": \\"x\\", \\"retryable\\": false}} : 400"}', 400, ("invalid_image", "x", False)),
    ("upstream timed out", None, ("model_error", "upstream timed out", False)),  # not ours, no status: final
    ("<html>bad gateway</html>", 502, ("model_error", "<html>bad gateway</html>", True)),
    ("odd", "n/a", ("model_error", "odd", False)),
])
def test_model_error_reads_the_body_first(original, status, want):
    from bot.backends import model_error

    assert model_error({"OriginalMessage": original}, status) == want
