"""The SageMaker inference contract for restyle's endpoints, ``clipseg``, ``inpaint`` and ``upscale``.

Packed as ``code/inference.py`` (``from model.handlers import model_fn, input_fn, predict_fn, output_fn``) for the
Hugging Face inference container, and called by ``model.serve`` and by the bot's in-process backend.

* ``model_fn(model_dir)`` — the only stage that loads weights.  The endpoint's role comes from ``RESTYLE_ROLE``
  (``clipseg`` | ``inpaint`` | ``upscale``; else detected from ``model_dir``), the weights from ``RESTYLE_MODEL_ID`` (Hub id or
  path; else ``model_dir`` itself), optional brand looks (LoRA adapters) from ``RESTYLE_LORA`` (``name=ref,…`` or
  one bare ref; each a path, relative to ``model_dir`` or absolute, or a Hub id), the IP-Adapter for reference
  images from ``RESTYLE_IP_ADAPTER`` (``model.loading.ip_adapter_source``; a path may be relative to ``model_dir``).
* ``input_fn(body, content_type)`` — bytes → dict; ``application/json`` only (415 otherwise), ≤ 6 MB (413).
* ``predict_fn(data, model)`` — validate against ``model.schemas``, decode images, run, encode images.
* ``output_fn(prediction, accept)`` — JSON bytes (a missing or ``*/*`` Accept means JSON; 406 otherwise).

A ``RequestError`` anywhere is the caller's fault (4xx with ``{"error": {"code", "message", "retryable": false}}``);
anything else is ours (500, ``"retryable": true``, traceback logged, a generic message in the response).

``transform_fn`` is the same chain for the Hugging Face inference toolkit, which answers every exception with 400
and ``str(exception)``: a non-200 answer is raised as ``ErrorReply`` whose ``str`` is our JSON body, so the code
and ``retryable`` reach the caller through that stack too (``code/inference.py`` exports ``model_fn`` and
``transform_fn`` only; the toolkit refuses ``transform_fn`` next to the other three).
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from model.errors import (
    ClientGone,
    ErrorReply,
    NotAcceptable,
    PayloadTooLarge,
    RequestError,
    UnsupportedMediaType,
    error_body,
)
from model.images import encode_b64, load_image_b64, load_mask_b64
from model.schemas import (
    DEFAULT_NEGATIVE_PROMPT,
    InpaintRequest,
    InpaintResponse,
    Rejected,
    SegmentRequest,
    SegmentResponse,
    UpscaleRequest,
    UpscaleResponse,
    candidate_seeds,
    parse_request,
)

log = logging.getLogger("restyle.model")

ROLES = ("clipseg", "inpaint", "upscale")
ROLE_ENV, MODEL_ENV, LORA_ENV = "RESTYLE_ROLE", "RESTYLE_MODEL_ID", "RESTYLE_LORA"
JSON = "application/json"
#: SageMaker real-time endpoints accept and return at most 6 MB.
MAX_PAYLOAD = 6 * 1024 * 1024


GENERIC_FAILURE = "the model failed on this request; see the logs"


class ModelFailure(RuntimeError):
    """Our own failure while predicting; the traceback is in the log, never in the response."""


@dataclass
class LoadedModel:
    role: str
    engine: Any  # model.segment.Segmenter | model.inpaint.Inpainter | model.upscale.Upscaler
    ref: str


# -- load ----------------------------------------------------------------------------------------------------------
def detect_role(model_dir: str | Path) -> str:
    """A diffusers folder is ``upscale`` when its pipeline is the x4 upscaler, else ``inpaint``; a transformers
    folder whose config names CLIPSeg is ``clipseg``."""
    d = Path(model_dir)
    index = d / "model_index.json"
    if index.exists():
        try:
            pipeline = json.loads(index.read_text()).get("_class_name")
        except (ValueError, AttributeError):
            pipeline = None
        return "upscale" if pipeline == "StableDiffusionUpscalePipeline" else "inpaint"
    cfg = d / "config.json"
    if cfg.exists() and "clipseg" in cfg.read_text().lower():
        return "clipseg"
    raise RuntimeError(f"set {ROLE_ENV}=clipseg|inpaint|upscale: cannot tell the role of {model_dir}")


def load_model(role: str, ref: str, *, lora: str | None = None, device: str | None = None,
               ip_adapter: str | None = None) -> LoadedModel:
    from model import loading

    if role == "clipseg":
        return LoadedModel(role, loading.load_clipseg(ref, device=device), ref)
    if role == "inpaint":
        return LoadedModel(role, loading.load_inpaint(ref, device=device, lora=lora, ip_adapter=ip_adapter), ref)
    if role == "upscale":
        return LoadedModel(role, loading.load_upscale(ref, device=device), ref)
    raise RuntimeError(f"{ROLE_ENV} must be one of {ROLES}, got {role!r}")


def model_fn(model_dir: str, context: Any = None) -> LoadedModel:
    from model.loading import IP_ADAPTER_ENV
    from model.schemas import format_looks, parse_looks

    role = os.environ.get(ROLE_ENV) or detect_role(model_dir)
    ref = os.environ.get(MODEL_ENV) or str(model_dir)
    looks = parse_looks(os.environ.get(LORA_ENV))  # paths may be relative to the model dir (model.tar.gz)
    looks = {name: str(Path(model_dir) / r) if (Path(model_dir) / r).exists() else r for name, r in looks.items()}
    ip_adapter = os.environ.get(IP_ADAPTER_ENV) or None
    if ip_adapter and (Path(model_dir) / ip_adapter.split(":")[0]).exists():
        ip_adapter = str(Path(model_dir) / ip_adapter)
    return load_model(role, ref, lora=format_looks(looks) or None, ip_adapter=ip_adapter)


# -- decode / encode tables ----------------------------------------------------------------------------------------
def _decode_json(body: bytes | str) -> dict:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(f"the body is not valid JSON ({exc})", code="malformed_json") from None
    except RecursionError:
        raise RequestError("the body nests JSON arrays/objects too deeply", code="malformed_json") from None
    if not isinstance(data, dict):
        raise RequestError(f"the body must be a JSON object, got {type(data).__name__}", code="malformed_json")
    return data


DECODERS = {JSON: _decode_json}
ENCODERS = {JSON: lambda p: p.model_dump_json().encode() if isinstance(p, BaseModel) else json.dumps(p).encode()}


def _media_type(value: str | None) -> str:
    return (value or "").split(";")[0].strip().lower()


def input_fn(input_data: bytes | str, content_type: str | None, context: Any = None) -> dict:
    ctype = _media_type(content_type) or JSON
    if ctype not in DECODERS:
        raise UnsupportedMediaType(f"Content-Type {ctype!r} is not supported; send {JSON}")
    size = len(input_data.encode("utf-8", "surrogatepass")) if isinstance(input_data, str) else len(input_data)
    if size > MAX_PAYLOAD:
        raise PayloadTooLarge(f"the request is {size:,} bytes; SageMaker's limit is {MAX_PAYLOAD:,} bytes (6 MB) "
                              "(send a smaller or JPEG-encoded photo)")
    if size == 0:
        raise RequestError("the request body is empty", code="malformed_json")
    return DECODERS[ctype](input_data)


def output_fn(prediction: Any, accept: str | None, context: Any = None) -> bytes:
    return ENCODERS[negotiate(accept)](prediction)


def negotiate(accept: str | None) -> str:
    options = [_media_type(a) for a in (accept or "").split(",") if a.strip()]
    if not options or any(a in (JSON, "*/*", "application/*") for a in options):
        return JSON
    raise NotAcceptable(f"Accept {accept!r} cannot be served; this endpoint answers {JSON}")


# -- predict -------------------------------------------------------------------------------------------------------
def predict_segment(data: dict | SegmentRequest, segmenter) -> SegmentResponse:
    req = data if isinstance(data, SegmentRequest) else parse_request("clipseg", data)
    t0 = time.perf_counter()
    image = load_image_b64(req.image)
    t1 = time.perf_counter()
    seg = segmenter(image, req.prompts, req.negative_prompts, threshold=req.threshold,
                    negative_threshold=req.negative_threshold, dilate=req.dilate, min_area=req.min_area,
                    min_coverage=req.min_coverage)
    t2 = time.perf_counter()
    masks = [encode_b64(g.mask) for g in seg.garments]
    found = [i for i, g in enumerate(seg.garments) if g.found]
    if not req.include_union:
        union = None
    elif len(found) == 1:  # the union of one mask is that mask: reuse its encoding
        union = masks[found[0]]
    else:
        union = encode_b64(seg.union)
    timings = {"decode": (t1 - t0) * 1e3, **seg.timings_ms, "encode": (time.perf_counter() - t2) * 1e3}
    return SegmentResponse(
        masks=masks, scores=[round(g.score, 4) for g in seg.garments],
        coverage=[round(g.coverage, 6) for g in seg.garments],
        bboxes=[list(g.bbox) if g.bbox else None for g in seg.garments], found=[g.found for g in seg.garments],
        prompts=[g.prompt for g in seg.garments], width=seg.width, height=seg.height, union=union,
        timings_ms={k: round(v, 2) for k, v in timings.items()})


def predict_inpaint(data: dict | InpaintRequest, inpainter, progress=None) -> InpaintResponse:
    req = data if isinstance(data, InpaintRequest) else parse_request("inpaint", data)
    t0 = time.perf_counter()
    image = load_image_b64(req.image)
    mask = load_mask_b64(req.mask, size=image.size)
    if not mask.any():
        raise RequestError("`mask` is empty (no white pixels): there is nothing to repaint", code="empty_mask")
    reference = load_image_b64(req.reference, field="reference") if req.reference is not None else None
    t1 = time.perf_counter()
    result = inpainter(image, mask, req.prompt,
                       DEFAULT_NEGATIVE_PROMPT if req.negative_prompt is None else req.negative_prompt,
                       seeds=candidate_seeds(req), steps=req.steps, guidance_scale=req.guidance_scale,
                       strength=req.strength, scheduler=req.scheduler, crop=req.crop, padding=req.padding,
                       feather=req.feather, progress=progress, look=req.look, reference=reference,
                       reference_scale=req.reference_scale, edge=req.edge)
    t2 = time.perf_counter()
    pictures = [c.crop if req.return_crop else c.image for c in result.candidates]
    encoded = [encode_b64(p, req.format, quality=req.quality) for p in pictures]
    box = result.crop_box
    w, h = (box[2] - box[0], box[3] - box[1]) if req.return_crop else image.size
    timings = {"decode": (t1 - t0) * 1e3, **result.timings_ms, "encode": (time.perf_counter() - t2) * 1e3}
    return InpaintResponse(
        images=encoded, seeds=[c.seed for c in result.candidates],
        rejected=[Rejected(seed=s, reason=r) for s, r in result.rejected], width=w, height=h, format=req.format,
        offset=[box[0], box[1]] if req.return_crop else None, crop_box=list(box), look=result.look,
        timings_ms={k: round(v, 2) for k, v in timings.items()})


def predict_upscale(data: dict | UpscaleRequest, upscaler, progress=None) -> UpscaleResponse:
    """The low-res region in the request → ``upscaler.factor`` times its width and height."""
    req = data if isinstance(data, UpscaleRequest) else parse_request("upscale", data)
    t0 = time.perf_counter()
    image = load_image_b64(req.image)
    t1 = time.perf_counter()
    seed = req.seed if req.seed is not None else random.SystemRandom().randrange(0, 2**31)
    result = upscaler(image, req.prompt,
                      DEFAULT_NEGATIVE_PROMPT if req.negative_prompt is None else req.negative_prompt,
                      seed=seed, steps=req.steps, guidance_scale=req.guidance_scale, noise_level=req.noise_level,
                      progress=progress)
    t2 = time.perf_counter()
    encoded = encode_b64(result.image, req.format, quality=req.quality)
    timings = {"decode": (t1 - t0) * 1e3, **result.timings_ms, "encode": (time.perf_counter() - t2) * 1e3}
    return UpscaleResponse(image=encoded, width=result.image.width, height=result.image.height, format=req.format,
                           seed=result.seed, timings_ms={k: round(v, 2) for k, v in timings.items()})


PREDICTORS = {"clipseg": predict_segment, "inpaint": predict_inpaint, "upscale": predict_upscale}
#: The roles whose predictor takes a ``progress`` callback (diffusion steps: a gone client stops the work).
STEPPED = ("inpaint", "upscale")


def _stopping(should_stop: Callable[[], bool] | None):
    """A progress callback that raises ``ClientGone`` between diffusion steps once ``should_stop()`` is true."""
    if should_stop is None:
        return None

    def progress(done: int, total: int) -> None:
        if should_stop():
            raise ClientGone(f"the client went away after step {done} of {total}")

    return progress


def predict_fn(data: dict, model: LoadedModel, context: Any = None,
               should_stop: Callable[[], bool] | None = None) -> BaseModel:
    # The caller's mistakes arrive as ``RequestError`` (schemas, images, ``Inpainter.check_inputs``).  Any other
    # exception, a bare ``ValueError`` from numpy/torch/diffusers included, is our bug: logged here with its
    # traceback and replaced by a generic ``ModelFailure`` (a 500 from ``handle``), so no internal text reaches a
    # caller — not even in the Hugging Face container, which answers every exception with 400 and ``str(exc)``.
    try:
        if model.role in STEPPED and should_stop is not None:
            return PREDICTORS[model.role](data, model.engine, progress=_stopping(should_stop))
        return PREDICTORS[model.role](data, model.engine)
    except (RequestError, ClientGone):
        raise
    except Exception as exc:
        log.error("%s failed:\n%s", model.role, traceback.format_exc())
        raise ModelFailure(GENERIC_FAILURE) from exc


# -- the whole chain, as the container runs it -----------------------------------------------------------------
def handle(model: LoadedModel, body: bytes | str, content_type: str | None, accept: str | None,
           should_stop: Callable[[], bool] | None = None) -> tuple[int, bytes, str]:
    """input_fn → predict_fn → output_fn with per-stage milliseconds logged; errors mapped to 4xx/5xx JSON.

    ``should_stop`` is asked between diffusion steps; once it answers True (the client has gone) the work stops
    and the answer is 499 ``client_gone`` (which nobody is left to read)."""
    stages: dict[str, float] = {}
    try:
        t = time.perf_counter()
        negotiate(accept)  # refuse an impossible Accept before spending GPU time
        data = input_fn(body, content_type)
        stages["input"] = time.perf_counter() - t
        t = time.perf_counter()
        prediction = predict_fn(data, model, should_stop=should_stop)
        stages["predict"] = time.perf_counter() - t
        t = time.perf_counter()
        out = output_fn(prediction, accept)
        stages["output"] = time.perf_counter() - t
        if len(out) > MAX_PAYLOAD:
            raise PayloadTooLarge(
                f"the response would be {len(out):,} bytes, over SageMaker's {MAX_PAYLOAD:,} (6 MB): ask for "
                "format=jpeg or webp, return_crop=true, or fewer images", code="response_too_large")
    except RequestError as exc:
        log.info("%s %d %s: %s", model.role, exc.status, exc.code, exc.message)
        return exc.status, json.dumps(exc.to_dict()).encode(), JSON
    except ClientGone as exc:
        log.warning("%s stopped: %s", model.role, exc)
        return 499, json.dumps(error_body("client_gone", str(exc))).encode(), JSON
    except Exception as exc:
        if not isinstance(exc, ModelFailure):  # predict_fn already logged its own
            log.error("%s failed:\n%s", model.role, traceback.format_exc())
        return 500, json.dumps(error_body("internal_error", GENERIC_FAILURE, retryable=True)).encode(), JSON
    log.info("%s 200 %s", model.role, " ".join(f"{k}={v * 1e3:.1f}ms" for k, v in stages.items()))
    return 200, out, JSON


def transform_fn(model: LoadedModel, input_data: bytes | str, content_type: str | None, accept: str | None,
                 context: Any = None) -> bytes:
    """The whole chain for the Hugging Face inference toolkit: the answer's bytes, or ``ErrorReply`` carrying our
    JSON error body (the toolkit turns any exception into a 400 whose message is ``str(exception)``)."""
    status, out, _ = handle(model, input_data, content_type, accept)
    if status != 200:
        raise ErrorReply(status, out)
    return out
