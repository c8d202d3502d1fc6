"""Where the pixels are made: in-process (``local``, the embedded default) or on SageMaker endpoints.

The engine speaks pictures to a backend, never bytes: ``segment(photo, garments, …)`` answers a boolean mask per
garment found, at the photo's size; ``paint(photo, mask, Paint(...), seeds)`` answers the photo repainted, one
picture per seed, at the photo's full size with every pixel away from the mask unchanged.  How the pixels are made
is each backend's business:

* ``LocalBackend`` loads the models once (lazily, thread-safe) and calls the segmenter and the inpainter directly
  (PIL in, PIL out: no PNG or base64 on the way).  The inpainter crops around the mask, generates at its native
  size and pastes back (``model.compose.plan_crop`` / ``paste_all``).
* ``SageMakerBackend`` owns all transport: it ships the very box ``model.compose.plan_crop`` chooses (scaled down
  when huge, PNG or JPEG to fit SageMaker's 6 MB), as ``model.schemas`` requests with base64 pictures; CHUNK-sized
  calls, halving on ``response_too_large``; batches to the async endpoint through S3; then pastes the answers into
  the full-resolution photo with ``model.compose.paste_all``.  So there is one crop-and-paste policy (model.compose)
  whichever backend runs.  botocore's own retries are off; this backend retries, with backoff, only what is known
  not to have run or to have failed without a result: a connection that was never made, throttling or "not ready"
  answers, and model errors whose body says ``"retryable": true``.  A read timeout is never retried (the model may
  still be computing it): one clear failure within about one timeout.  Whether to retry and what to answer is read
  from the error *body* (``{"error": {"code", "message", "retryable"}}``), which survives the Hugging Face
  toolkit's habit of answering every exception with 400.  Batches go to the async endpoint (input and output on
  S3, under ``RESTYLE_ASYNC_PREFIX``) when ``RESTYLE_ASYNC_BUCKET`` is set.

The ``str`` of ``BackendUnavailable`` and the ``message`` of ``BackendError`` are shown to people: plain words,
never exception class names.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image

from model import compose
from model.images import b64decode, b64encode, decode_image, decode_mask, encode_image
from model.masks import grow
from model.masks import resize as resize_mask
from model.schemas import (
    DEFAULT_NEGATIVE_PROMPT,
    MAX_IMAGES,
    InpaintRequest,
    InpaintResponse,
    SegmentRequest,
    SegmentResponse,
    UpscaleRequest,
    UpscaleResponse,
    candidate_seeds,
)

log = logging.getLogger("restyle.backend")
Progress = Callable[[int, int], None]
#: Candidates per call; more are split into several calls (each stays well under SageMaker's 60 s).
CHUNK = 4
#: Segmentation runs on a copy no larger than this (the masks are scaled back up): CLIPSeg reads 352² anyway, so a
#: larger copy adds bytes and time, not detail.  The ``grow`` setting is in pixels of this copy.
SEGMENT_MAX_SIDE = 1024
#: Segmentation defaults (the contract's): the minimum area and coverage a found garment needs.
_SEG = SegmentRequest.model_fields
#: The crop the SageMaker backend ships for inpainting is scaled down to at most this many pixels (SDXL's native
#: 1024², 4x SD 1.5's 512²): the endpoint generates at its native area anyway, so a larger crop adds bytes, not detail.
#: The answers are scaled back up and pasted into the full-resolution photo.  4 JPEG answers of 1 MP stay far under
#: 6 MB.
SEND_MAX_PIXELS = 1_048_576
#: Crops above this many pixels travel as JPEG (quality 95); only the garment and its feathered edge are kept.
SEND_PNG_PIXELS = 1_000_000
#: Above this many crop pixels x candidates, ask the endpoint for JPEG so the response stays under 6 MB.
PNG_PIXEL_BUDGET = 1_200_000
#: The generation size the SageMaker backend plans its crop for (SD 1.5 inpainting: 512², sides multiples of 64).
#: The endpoint generates the whole crop it is sent at its own native size; a model with another native size gets a
#: crop whose aspect is a few percent off its own choice, which only changes how the crop is resized.
TRANSPORT_NATIVE, TRANSPORT_MULTIPLE = 512, 64
#: A swatch travels at most this many pixels a side (the IP-Adapter's image encoder reads 224²)
REFERENCE_MAX_SIDE = 512


@dataclass(frozen=True)
class Paint:
    """What to paint: the typed settings of one inpainting turn (the pictures and seeds travel beside it)."""

    prompt: str
    negative_prompt: str | None = None  # None: the model's default negative prompt
    steps: int = 30
    guidance_scale: float = 7.5
    strength: float = 1.0
    look: str | None = None  # None: the endpoint's default look
    padding: int = int(InpaintRequest.model_fields["padding"].default)
    feather: int = int(InpaintRequest.model_fields["feather"].default)
    reference: Image.Image | None = None  # a swatch or print to paint after (IP-Adapter)
    reference_scale: float = float(InpaintRequest.model_fields["reference_scale"].default)
    #: where the feathered edge lies: "outside" the mask (garments) or "inside" it (a background: every pixel
    #: outside the mask — the person — stays bit-identical)
    edge: str = "outside"


@dataclass
class Painted:
    """What ``paint`` made: (seed, full-size photo) per picture kept, how many were rejected (black, NaN, safety
    checker), the look that ran, and the model seconds it took (for usage metering)."""

    pictures: list[tuple[int, Image.Image]]
    rejected: int
    look: str | None
    gpu_s: float


class BackendError(Exception):
    """The request was refused (4xx): the message is the model's, for the user."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class BackendUnavailable(Exception):
    """The model could not be reached or kept failing (after retries); ``str()`` is plain words for people."""


class BackendBusy(BackendUnavailable):
    """The endpoints throttled or were not ready through every retry: their own capacity is exhausted."""


#: SageMaker Runtime error codes that say the request was not run (safe to send again).
NOT_RUN_CODES = {"ThrottlingException", "Throttling", "TooManyRequestsException", "ServiceUnavailable",
                 "ServiceUnavailableException", "ModelNotReadyException", "ModelNotReady"}
#: Our own error codes that mean the model side failed (not the request's fault).
SERVER_SIDE_CODES = {"internal_error", "load_failed", "not_ready", "model_error", "client_gone"}


class Backend:
    """The picture-level interface the engine uses.  Subclasses implement ``_segment`` and ``paint``."""

    name = "abstract"

    def segment(self, image: Image.Image, garments: list[str], *, grow: int = int(_SEG["dilate"].default),
                threshold: float = float(_SEG["threshold"].default), protect: bool = True) -> dict[str, np.ndarray]:
        """The garments found on ``image``: name → boolean mask at the image's size (missing ones are absent).

        Segmentation runs on a copy of at most SEGMENT_MAX_SIDE a side (``grow`` is in pixels of that copy);
        the masks are scaled back up to the photo.  ``protect``: garment masks leave out face, hands and hair (the
        model's protected regions); off when the person's own parts are asked for."""
        small = image
        if max(image.size) > SEGMENT_MAX_SIDE:
            small = image.copy()
            small.thumbnail((SEGMENT_MAX_SIDE, SEGMENT_MAX_SIDE), Image.LANCZOS)
        found = self._segment(small.convert("RGB"), list(garments), int(grow), float(threshold), protect)
        return {g: m if m.shape == (image.height, image.width) else resize_mask(m, image.size)
                for g, m in found.items() if m.any()}

    def _segment(self, small: Image.Image, garments: list[str], grow: int, threshold: float, protect: bool = True
                 ) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def upscale(self, image: Image.Image, mask: np.ndarray, paint: Paint, seed: int,
                progress: Progress | None = None) -> Painted:
        """``image`` with the region around ``mask`` brought to the photo's own resolution by the x4 upscaler
        (``model.compose.upscale_region``: far pixels bit-identical); ``BackendError("already_full_resolution")``
        when the region has no more pixels than it was generated with."""
        raise BackendError("no_upscaler", f"the {self.name} backend has no upscaler")

    def paint(self, image: Image.Image, mask: np.ndarray, paint: Paint, seeds: list[int],
              progress: Progress | None = None, *, batch: bool = False) -> Painted:
        """``image`` repainted inside ``mask`` per ``paint``, one picture per seed (each depends on its own seed
        only).  ``batch``: bulk work, which may go to an async endpoint."""
        raise NotImplementedError

    def looks(self) -> tuple[str, ...] | None:
        """The brand looks the inpainting model serves, or None where only the endpoint knows (it answers an
        unknown one with ``unknown_look``)."""
        return None

    def warm(self) -> None:
        """Load/check models now (the terminal calls this before the first prompt)."""


def chunked(seeds: list[int], progress: Progress | None) -> Iterator[tuple[list[int], Progress | None]]:
    """``seeds`` in CHUNK-sized calls, each with a progress callback counting over all of them."""
    chunks = [seeds[i:i + CHUNK] for i in range(0, len(seeds), CHUNK)]
    for k, chunk in enumerate(chunks):
        def chunk_progress(done: int, total: int, k: int = k) -> None:
            if progress:
                progress(k * total + done, len(chunks) * total)

        yield chunk, chunk_progress


class LocalBackend(Backend):
    name = "local"

    def __init__(self, clipseg: str, inpaint: str, *, lora: str | None = None, device: str | None = None,
                 upscale: str | None = None) -> None:
        self.refs = {"clipseg": clipseg, "inpaint": inpaint, "upscale": upscale}
        self.lora = lora
        self.device = device
        self._models: dict[str, object] = {}
        self._lock = threading.Lock()

    def _get(self, role: str):
        with self._lock:
            if role not in self._models:
                from model import loading

                if role == "clipseg":
                    self._models[role] = loading.load_clipseg(self.refs[role], device=self.device)
                elif role == "upscale":
                    self._models[role] = loading.load_upscale(self.refs[role] or loading.DEFAULT_UPSCALE,
                                                              device=self.device)  # on first "upscale"
                else:
                    self._models[role] = loading.load_inpaint(self.refs[role], device=self.device, lora=self.lora)
            return self._models[role]

    def warm(self) -> None:
        self._get("clipseg")
        self._get("inpaint")

    def looks(self) -> tuple[str, ...]:
        return self._get("inpaint").looks

    def _segment(self, small: Image.Image, garments: list[str], grow: int, threshold: float, protect: bool = True
                 ) -> dict[str, np.ndarray]:
        with _refusals():
            seg = self._get("clipseg")(small, garments, None if protect else [], threshold=threshold, dilate=grow,
                                       min_area=float(_SEG["min_area"].default),
                                       min_coverage=float(_SEG["min_coverage"].default))
        return {name: g.mask for name, g in zip(garments, seg.garments, strict=True) if g.found}

    def paint(self, image: Image.Image, mask: np.ndarray, paint: Paint, seeds: list[int],
              progress: Progress | None = None, *, batch: bool = False) -> Painted:
        inpainter = self._get("inpaint")
        negative = DEFAULT_NEGATIVE_PROMPT if paint.negative_prompt is None else paint.negative_prompt
        pictures: list[tuple[int, Image.Image]] = []
        rejected, look, seconds = 0, None, 0.0
        for chunk, chunk_progress in chunked(seeds, progress):
            t0 = time.monotonic()
            with _refusals():
                result = inpainter(image, mask, paint.prompt, negative, seeds=chunk, steps=paint.steps,
                                   guidance_scale=paint.guidance_scale, strength=paint.strength,
                                   padding=paint.padding, feather=paint.feather, progress=chunk_progress,
                                   look=paint.look, reference=paint.reference,
                                   reference_scale=paint.reference_scale, edge=paint.edge)
            seconds += time.monotonic() - t0
            pictures += [(c.seed, c.image) for c in result.candidates]
            rejected += len(result.rejected)
            look = result.look
        return Painted(pictures, rejected, look, seconds)

    def upscale(self, image: Image.Image, mask: np.ndarray, paint: Paint, seed: int,
                progress: Progress | None = None) -> Painted:
        upscaler = self._get("upscale")
        inpainter_native = self._get("inpaint").native
        negative = DEFAULT_NEGATIVE_PROMPT if paint.negative_prompt is None else paint.negative_prompt
        t0 = time.monotonic()
        with _refusals():
            picture = compose.upscale_region(
                image, mask, lambda low: upscaler(low, paint.prompt, negative, seed=seed, steps=paint.steps,
                                                  guidance_scale=paint.guidance_scale, progress=progress).image,
                padding=paint.padding, feather=paint.feather, native=inpainter_native)
        return Painted([(seed, picture)], 0, None, time.monotonic() - t0)


@contextlib.contextmanager
def _refusals() -> Iterator[None]:
    """The model's ``RequestError`` (the caller's fault, ``check_inputs`` included) as a ``BackendError``; anything
    else is ours and propagates."""
    from model.errors import RequestError

    try:
        yield
    except RequestError as exc:
        raise BackendError(exc.code, exc.message) from None


class SageMakerBackend(Backend):
    name = "sagemaker"

    def __init__(self, *, clipseg_endpoint: str, inpaint_endpoint: str, upscale_endpoint: str | None = None,
                 async_endpoint: str | None = None,
                 async_bucket: str | None = None, async_prefix: str = "restyle", endpoint_url: str | None = None,
                 timeout_s: float = 60.0, retries: int = 3, client=None, s3=None, connections: int = 10) -> None:
        import boto3
        from botocore.config import Config

        # botocore's retries are off: its standard mode would resend a request whose answer timed out (the
        # generation runs again, up to 4 times); ``_invoke`` retries only what is known not to have run.
        # one pooled connection per worker that may be waiting on an endpoint at once
        cfg = Config(retries={"total_max_attempts": 1}, read_timeout=timeout_s,
                     connect_timeout=min(10.0, timeout_s), max_pool_connections=max(10, connections))
        self.client = client or boto3.client("sagemaker-runtime", endpoint_url=endpoint_url, config=cfg)
        self.endpoints = {"clipseg": clipseg_endpoint, "inpaint": inpaint_endpoint, "upscale": upscale_endpoint}
        self.async_endpoint = async_endpoint
        self.async_bucket = async_bucket
        self.async_prefix = async_prefix.strip("/")
        self._s3 = s3
        self.retries = retries
        self.timeout_s = timeout_s

    def _invoke(self, role: str, body: bytes) -> dict:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectionError,
            NoCredentialsError,
            NoRegionError,
            PartialCredentialsError,
            ReadTimeoutError,
        )

        endpoint = self.endpoints[role]
        what = f"the {role} endpoint {endpoint}"
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                resp = self.client.invoke_endpoint(EndpointName=endpoint, ContentType="application/json",
                                                   Accept="application/json", Body=body)
                return json.loads(resp["Body"].read())
            except ReadTimeoutError:
                # it may still be computing: sending it again would compute it again
                log.warning("%s: no answer within the %g s read timeout; not retried", endpoint, self.timeout_s)
                raise BackendUnavailable(f"{what} did not answer within {self.timeout_s:g} seconds, so the "
                                         "request was stopped rather than sent again") from None
            except ConnectionError:  # refused, DNS, connect timeout: the request never reached the model
                if last:
                    raise BackendUnavailable(f"{what} could not be reached after {self.retries + 1} "
                                             "tries") from None
            except (NoCredentialsError, PartialCredentialsError, NoRegionError):
                raise BackendUnavailable("the bot has no usable AWS credentials or region for SageMaker (set "
                                         "AWS_REGION and credentials the standard AWS way)") from None
            except BotoCoreError as exc:  # e.g. the connection broke after the request was sent
                log.warning("%s: %s (%s); not retried", endpoint, exc, type(exc).__name__)
                raise BackendUnavailable(f"the connection to {what} broke before it answered") from None
            except ClientError as exc:
                err = exc.response.get("Error", {})
                aws_code = str(err.get("Code", ""))
                http = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if aws_code == "ModelError":
                    status = exc.response.get("OriginalStatusCode")
                    code, message, retryable = model_error(exc.response, status)
                    if not retryable:
                        if code in SERVER_SIDE_CODES:
                            raise BackendUnavailable(f"{what} failed: {message}") from None
                        raise BackendError(code, message) from None
                    if last:
                        raise BackendUnavailable(f"{what} failed {self.retries + 1} times in a row "
                                                 f"({message})") from None
                elif aws_code in NOT_RUN_CODES or http in (429, 503):
                    if last:
                        raise BackendBusy(f"{what} is busy or not ready; still so after "
                                          f"{self.retries + 1} tries") from None
                else:  # e.g. an unknown endpoint or missing permissions: retrying will not help
                    message = _plain(str(err.get("Message") or aws_code or "no reason given"))
                    raise BackendUnavailable(f"SageMaker refused the call to {what}: {message}") from None
            time.sleep(min(8.0, 0.5 * 2**attempt) * (0.5 + random.random()))
        raise AssertionError("unreachable")

    # -- pictures: the Backend interface -------------------------------------------------------------------------
    def _segment(self, small: Image.Image, garments: list[str], grow: int, threshold: float, protect: bool = True
                 ) -> dict[str, np.ndarray]:
        fmt = "png" if small.width * small.height <= 600_000 else "jpeg"
        res = self.segment_call(SegmentRequest(image=b64encode(encode_image(small, fmt, quality=92)),
                                               prompts=garments, include_union=False, dilate=grow,
                                               threshold=threshold, negative_prompts=None if protect else []))
        return {g: decode_mask(b64decode(data, field="mask"))
                for g, found, data in zip(garments, res.found, res.masks, strict=True) if found}

    def paint(self, image: Image.Image, mask: np.ndarray, paint: Paint, seeds: list[int],
              progress: Progress | None = None, *, batch: bool = False) -> Painted:
        """Ship the crop ``model.compose.plan_crop`` chooses (scaled down when huge), then paste the answers into
        the full-resolution photo with ``model.compose.paste_all``."""
        box, _ = compose.plan_crop(mask, TRANSPORT_NATIVE, TRANSPORT_MULTIPLE, paint.padding, paint.feather)
        crop, crop_mask = image.crop(box), mask[box[1]:box[3], box[0]:box[2]]
        scale = min(1.0, (SEND_MAX_PIXELS / (crop.width * crop.height)) ** 0.5)
        if scale < 1.0:  # a 24-megapixel photo: the request and the answers must stay under SageMaker's 6 MB
            size = (max(8, int(crop.width * scale)), max(8, int(crop.height * scale)))  # within the budget
            crop = crop.resize(size, Image.LANCZOS)
            crop_mask = resize_mask(crop_mask, size, cover=True)  # the mask is never cut short
        area = crop.width * crop.height
        req = InpaintRequest(image=b64encode(encode_image(crop, "png" if area <= SEND_PNG_PIXELS else "jpeg",
                                                          quality=95)),
                             mask=b64encode(encode_image(crop_mask)), prompt=paint.prompt,
                             negative_prompt=paint.negative_prompt, num_images=min(len(seeds), MAX_IMAGES),
                             seeds=list(seeds[:MAX_IMAGES]), steps=paint.steps, guidance_scale=paint.guidance_scale,
                             strength=paint.strength, look=paint.look, crop=False, feather=paint.feather,
                             edge=paint.edge, reference=_reference_b64(paint.reference),
                             reference_scale=paint.reference_scale,
                             format="png" if area * min(len(seeds), CHUNK) <= PNG_PIXEL_BUDGET else "jpeg",
                             quality=95)
        res, seconds = self.inpaint_metered(req, list(seeds), progress, batch=batch)
        full = (box[2] - box[0], box[3] - box[1])
        returned = []
        for data in res.images:
            img = decode_image(b64decode(data, field="variation"), field="variation")
            returned.append(img if img.size == full else img.resize(full, Image.LANCZOS))
        inside = paint.edge == "inside"
        if scale == 1.0:
            # the endpoint already feathered its edge against this crop: copy its pixels where that edge is non-zero
            # (outside: the mask grown by the feather; inside: the mask itself)
            pasted = compose.paste_all(image, returned, mask if inside else grow(mask, paint.feather), box, feather=0)
        else:
            # scaled-up answers: blend them in over the whole (scaled) feather at full resolution, so neither a seam
            # nor a ring of the scaled-down original shows
            pasted = compose.paste_all(image, returned, mask, box, feather=int(np.ceil((paint.feather + 1) / scale)),
                                       inside=inside)
        return Painted(list(zip(res.seeds, pasted, strict=True)), len(res.rejected), res.look, seconds)

    def upscale(self, image: Image.Image, mask: np.ndarray, paint: Paint, seed: int,
                progress: Progress | None = None) -> Painted:
        """The same ``model.compose.upscale_region`` as in process; the endpoint gets only the low-res region."""
        if not self.endpoints.get("upscale"):
            raise BackendUnavailable("no upscaling endpoint is configured (set RESTYLE_UPSCALE_ENDPOINT; "
                                     "`python -m deploy up --upscale-model …` creates one)")
        seconds = 0.0

        def call(low: Image.Image) -> Image.Image:
            nonlocal seconds
            req = UpscaleRequest(image=b64encode(encode_image(low, "png")), prompt=paint.prompt,
                                 negative_prompt=paint.negative_prompt, seed=seed, steps=paint.steps,
                                 guidance_scale=paint.guidance_scale, format="jpeg", quality=95)
            t0 = time.monotonic()
            res = UpscaleResponse.model_validate(self._invoke("upscale", req.model_dump_json().encode()))
            seconds += endpoint_seconds(res, time.monotonic() - t0)
            if progress:
                progress(paint.steps, paint.steps)
            return decode_image(b64decode(res.image, field="upscaled"), field="upscaled")

        picture = compose.upscale_region(image, mask, call, padding=paint.padding, feather=paint.feather,
                                         native=TRANSPORT_NATIVE)
        return Painted([(seed, picture)], 0, None, seconds)

    # -- transport: contract requests and responses ----------------------------------------------------------------
    def segment_call(self, req: SegmentRequest) -> SegmentResponse:
        """One real-time call to the clipseg endpoint."""
        return SegmentResponse.model_validate(self._invoke("clipseg", req.model_dump_json().encode()))

    def inpaint_call(self, req: InpaintRequest, progress: Progress | None = None) -> InpaintResponse:
        """One real-time call to the inpaint endpoint."""
        out = InpaintResponse.model_validate(self._invoke("inpaint", req.model_dump_json().encode()))
        if progress:
            progress(req.steps, req.steps)
        return out

    def inpaint_metered(self, req: InpaintRequest, seeds: list[int], progress: Progress | None = None, *,
                        batch: bool = False) -> tuple[InpaintResponse, float]:
        """``inpaint_many`` and the endpoint seconds it took: each real-time call's own ``timings_ms`` (else its
        wall time); an async batch's wall time from submit to the last result."""
        if batch and self.async_endpoint and self.async_bucket:
            t0 = time.monotonic()
            return self._inpaint_async(req, seeds, progress), time.monotonic() - t0
        seconds = 0.0
        parts = []
        for chunk, chunk_progress in chunked(seeds, progress):
            for part, s in self._inpaint_fitting(req, chunk, chunk_progress):
                parts.append(part)
                seconds += s
        return _merge(parts), seconds

    def inpaint_many(self, req: InpaintRequest, seeds: list[int] | None = None, progress: Progress | None = None,
                     *, batch: bool = False) -> InpaintResponse:
        """Any number of candidates (``seeds``, default: the request's own) in one response: CHUNK-sized real-time
        calls, or the async endpoint for a ``batch`` when one is configured."""
        return self.inpaint_metered(req, seeds or candidate_seeds(req), progress, batch=batch)[0]

    def _inpaint_fitting(self, req: InpaintRequest, seeds: list[int], progress: Progress | None
                         ) -> list[tuple[InpaintResponse, float]]:
        """One call for ``seeds``; when its answer would be over the endpoint's 6 MB, the seeds in halves (each
        candidate depends on its own seed only, so the pictures are the same)."""
        try:
            t0 = time.monotonic()
            res = self.inpaint_call(_with_seeds(req, seeds), progress)
            return [(res, endpoint_seconds(res, time.monotonic() - t0))]
        except BackendError as exc:
            if exc.code != "response_too_large" or len(seeds) == 1:
                raise
            log.info("answer for %d candidates over the payload limit: asking in halves", len(seeds))
            half = len(seeds) // 2
            return self._inpaint_fitting(req, seeds[:half], progress) + self._inpaint_fitting(req, seeds[half:],
                                                                                              progress)

    # -- async inference: input and output on S3 --------------------------------------------------------------
    def _inpaint_async(self, req: InpaintRequest, seeds: list[int], progress: Progress | None, poll_s: float = 1.0,
                       deadline_s: float = 3600.0) -> InpaintResponse:
        """Each chunk of ≤ MAX_IMAGES candidates: request JSON to S3 → InvokeEndpointAsync → poll the output
        (or failure) object; one merged response."""
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError

        from model.schemas import MAX_IMAGES

        s3 = self._s3 or boto3.client("s3")
        pending = []
        for i in range(0, len(seeds), MAX_IMAGES):
            chunk = _with_seeds(req, seeds[i:i + MAX_IMAGES])
            key = f"{self.async_prefix}/async-in/{uuid.uuid4().hex}.json"
            with _s3_errors(f"write the batch request to s3://{self.async_bucket}/{key}"):
                s3.put_object(Bucket=self.async_bucket, Key=key, Body=chunk.model_dump_json().encode(),
                              ContentType="application/json")
            try:
                resp = self.client.invoke_endpoint_async(EndpointName=self.async_endpoint,
                                                         InputLocation=f"s3://{self.async_bucket}/{key}",
                                                         ContentType="application/json", Accept="application/json")
            except ClientError as exc:
                message = _plain(str(exc.response.get("Error", {}).get("Message") or "no reason given"))
                raise BackendUnavailable(f"SageMaker refused the batch for {self.async_endpoint}: "
                                         f"{message}") from None
            except BotoCoreError:
                raise BackendUnavailable(f"the batch endpoint {self.async_endpoint} could not be "
                                         "reached") from None
            pending.append((resp["OutputLocation"], resp.get("FailureLocation")))
        results: list[InpaintResponse] = []
        start = time.monotonic()
        while pending:
            if time.monotonic() - start > deadline_s:
                raise BackendUnavailable(f"{self.async_endpoint}: no result after {deadline_s:.0f} s")
            output, failure = pending[0]
            body = _s3_read(s3, output)
            if body is not None:
                results.append(InpaintResponse.model_validate(json.loads(body)))
                pending.pop(0)
                if progress:
                    progress(len(results), len(results) + len(pending))
                continue
            err = _s3_read(s3, failure) if failure else None
            if err is not None:
                code, message, _ = model_error({"OriginalMessage": err.decode("utf-8", "replace")}, None)
                if code in SERVER_SIDE_CODES:
                    raise BackendUnavailable(f"the batch endpoint {self.async_endpoint} failed: {message}")
                raise BackendError(code, message)
            time.sleep(poll_s)
        return _merge(results)


#: S3 answers that mean "not written yet" while polling for an async result; anything else fails at once.
_S3_MISSING = {"NoSuchKey", "404", "NotFound"}


def _s3_read(s3, uri: str) -> bytes | None:
    """The object at ``uri``, or None while it does not exist; any other S3 failure (AccessDenied, a missing
    bucket…) is a ``BackendUnavailable`` now, not an hour of "not ready yet"."""
    from botocore.exceptions import ClientError

    bucket, key = _split_s3(uri)
    with _s3_errors(f"read the batch result {uri}"):
        try:
            return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in _S3_MISSING:
                return None
            raise


@contextlib.contextmanager
def _s3_errors(doing: str) -> Iterator[None]:
    """S3 failures as one plain ``BackendUnavailable`` line: what the bot tried, and S3's own words."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        err = exc.response.get("Error", {})
        code = str(err.get("Code") or "")
        reason = _plain(str(err.get("Message") or code or "no reason given"))
        if code and code not in reason:
            reason = f"{reason} ({code})"
        log.error("could not %s: %s", doing, reason)
        raise BackendUnavailable(f"the bot could not {doing}: {reason}") from None
    except BotoCoreError as exc:
        log.error("could not %s: %s", doing, exc)
        raise BackendUnavailable(f"the bot could not {doing}: S3 could not be reached") from None


def endpoint_seconds(res: InpaintResponse, wall_s: float) -> float:
    """What one call took on the endpoint: its own ``timings_ms``, else the wall time measured here."""
    timings = [v for v in (res.timings_ms or {}).values() if isinstance(v, int | float) and v >= 0]
    return sum(timings) / 1000.0 if timings else wall_s


def _reference_b64(reference: Image.Image | None) -> str | None:
    """A swatch for the request: at most REFERENCE_MAX_SIDE a side (the image encoder reads 224²), PNG."""
    if reference is None:
        return None
    small = reference.convert("RGB")
    if max(small.size) > REFERENCE_MAX_SIDE:
        small = small.copy()
        small.thumbnail((REFERENCE_MAX_SIDE, REFERENCE_MAX_SIDE), Image.LANCZOS)
    return b64encode(encode_image(small, "png"))


def _with_seeds(req: InpaintRequest, seeds: list[int]) -> InpaintRequest:
    return req.model_copy(update={"seeds": list(seeds), "num_images": len(seeds)})


def _merge(parts: list[InpaintResponse]) -> InpaintResponse:
    """Several chunk responses → one, in order."""
    return parts[0].model_copy(update={"images": [i for p in parts for i in p.images],
                                       "seeds": [s for p in parts for s in p.seeds],
                                       "rejected": [r for p in parts for r in p.rejected]})


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def _plain(text: str, limit: int = 300) -> str:
    """One line of at most ``limit`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def find_error_body(text: str) -> dict | None:
    """Our ``{"error": {...}}`` object in ``text``: the whole text, or nested in a serving stack's own wrapper
    (the Hugging Face toolkit's ``{"code": 400, "type": ..., "message": "<our JSON>"}``)."""
    decoder = json.JSONDecoder()
    start = text.find('{"error"')
    while start != -1:
        try:
            obj, _ = decoder.raw_decode(text, start)
        except ValueError:
            obj = None
        if isinstance(obj, dict) and isinstance(obj.get("error"), dict):
            return obj["error"]
        start = text.find('{"error"', start + 1)
    try:
        outer = json.loads(text)
    except ValueError:
        return None
    if isinstance(outer, dict):
        if isinstance(outer.get("error"), dict):
            return outer["error"]
        if isinstance(outer.get("message"), str):  # JSON escaped inside the wrapper's message
            return find_error_body(outer["message"])
    return None


def _server_status(status: int | str | None) -> bool:
    try:
        return status is not None and int(status) >= 500
    except (TypeError, ValueError):
        return False


def model_error(response: dict, status: int | str | None) -> tuple[str, str, bool]:
    """(code, message, retryable) of a model's error answer, from its body; the status only where the body is
    not ours (then a 5xx is retried, anything else is not)."""
    original = str(response.get("OriginalMessage") or "")
    err = find_error_body(original)
    if err is not None:
        code = str(err.get("code") or "model_error")
        message = str(err.get("message") or code)[:500]  # the model's own words, as it wrote them
        retryable = err.get("retryable")
        if not isinstance(retryable, bool):  # an older model without the field: its status decides
            retryable = code in ("internal_error", "not_ready") or _server_status(status)
        return code, message, retryable
    message = _plain(original, 500) or _plain(str(response.get("Error", {}).get("Message") or "no reason given"))
    return "model_error", message, _server_status(status)


def build_backend(settings) -> Backend:
    if settings.backend == "sagemaker":
        return SageMakerBackend(clipseg_endpoint=settings.clipseg_endpoint, inpaint_endpoint=settings.inpaint_endpoint,
                                upscale_endpoint=settings.upscale_endpoint,
                                async_endpoint=settings.async_endpoint, async_bucket=settings.async_bucket,
                                async_prefix=settings.async_prefix,
                                endpoint_url=settings.sagemaker_endpoint_url, timeout_s=settings.timeout_s,
                                retries=settings.retries, connections=settings.job_workers)
    if settings.tiny:
        settings = settings.with_tiny_models()
    return LocalBackend(settings.clipseg_model, settings.inpaint_model, lora=settings.lora, device=settings.device,
                        upscale=settings.upscale_model)
