"""Where the pixels are made: in-process (``local``, the embedded default) or on SageMaker endpoints.

Both speak the same contract — ``model.schemas`` request/response objects — so the engine cannot tell them apart.

* ``LocalBackend`` loads the models once (lazily, thread-safe) and calls ``model.handlers``' predict functions.
* ``SageMakerBackend`` calls ``invoke_endpoint`` on named endpoints with boto3 (``endpoint_url`` overridable, e.g.
  a loopback ``model.serve``).  botocore's *standard* retry mode retries throttling, 5xx and connection errors with
  backoff; a ``ModelError`` whose original status is 5xx is retried the same way; a 4xx is never retried.  Batches
  go to the async endpoint (input and output on S3) when ``RESTYLE_ASYNC_BUCKET`` is set.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable

from model.handlers import candidate_seeds, predict_inpaint, predict_segment
from model.schemas import InpaintRequest, InpaintResponse, SegmentRequest, SegmentResponse

log = logging.getLogger("restyle.backend")
Progress = Callable[[int, int], None]
#: Candidates per real-time call; more are split into several calls (each stays well under 60 s).
CHUNK = 4


class BackendError(Exception):
    """The request was refused (4xx): the message is the model's, for the user."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class BackendUnavailable(Exception):
    """The model could not be reached or kept failing (after retries)."""


class Backend:
    name = "abstract"

    def segment(self, req: SegmentRequest) -> SegmentResponse:
        raise NotImplementedError

    def inpaint(self, req: InpaintRequest, progress: Progress | None = None) -> InpaintResponse:
        raise NotImplementedError

    def looks(self) -> tuple[str, ...] | None:
        """The brand looks the inpainting model serves, or None where only the endpoint knows (it answers an
        unknown one with ``unknown_look``)."""
        return None

    def inpaint_many(self, req: InpaintRequest, seeds: list[int] | None = None, progress: Progress | None = None,
                     *, batch: bool = False) -> InpaintResponse:
        """Any number of candidates (``seeds``, default: the request's own): CHUNK-sized calls, one response."""
        seeds = seeds or candidate_seeds(req)
        chunks = [seeds[i:i + CHUNK] for i in range(0, len(seeds), CHUNK)]
        parts = []
        for k, chunk in enumerate(chunks):
            def chunk_progress(done: int, total: int, k: int = k) -> None:
                if progress:
                    progress(k * total + done, len(chunks) * total)

            parts.extend(self._inpaint_fitting(req, chunk, chunk_progress))
        return _merge(parts)

    def _inpaint_fitting(self, req: InpaintRequest, seeds: list[int], progress: Progress | None
                         ) -> list[InpaintResponse]:
        """One call for ``seeds``; when its answer would be over the endpoint's 6 MB, the seeds in halves (each
        candidate depends on its own seed only, so the pictures are the same)."""
        try:
            return [self.inpaint(_with_seeds(req, seeds), progress)]
        except BackendError as exc:
            if exc.code != "response_too_large" or len(seeds) == 1:
                raise
            log.info("answer for %d candidates over the payload limit: asking in halves", len(seeds))
            half = len(seeds) // 2
            return self._inpaint_fitting(req, seeds[:half], progress) + self._inpaint_fitting(req, seeds[half:],
                                                                                              progress)

    def warm(self) -> None:
        """Load/check models now (the terminal calls this before the first prompt)."""


class LocalBackend(Backend):
    name = "local"

    def __init__(self, clipseg: str, inpaint: str, *, lora: str | None = None, device: str | None = None) -> None:
        self.refs = {"clipseg": clipseg, "inpaint": inpaint}
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
                else:
                    self._models[role] = loading.load_inpaint(self.refs[role], device=self.device, lora=self.lora)
            return self._models[role]

    def warm(self) -> None:
        self._get("clipseg")
        self._get("inpaint")

    def looks(self) -> tuple[str, ...]:
        return self._get("inpaint").looks

    def segment(self, req: SegmentRequest) -> SegmentResponse:
        return _local_call(predict_segment, req, self._get("clipseg"))

    def inpaint(self, req: InpaintRequest, progress: Progress | None = None) -> InpaintResponse:
        return _local_call(predict_inpaint, req, self._get("inpaint"), progress=progress)


def _local_call(fn, req, engine, **kw):
    from model.errors import RequestError

    try:
        return fn(req, engine, **kw)
    except RequestError as exc:  # the caller's fault (check_inputs included); anything else is ours and propagates
        raise BackendError(exc.code, exc.message) from None


class SageMakerBackend(Backend):
    name = "sagemaker"

    def __init__(self, *, clipseg_endpoint: str, inpaint_endpoint: str, async_endpoint: str | None = None,
                 async_bucket: str | None = None, endpoint_url: str | None = None, timeout_s: float = 60.0,
                 retries: int = 3, client=None, s3=None) -> None:
        import boto3
        from botocore.config import Config

        cfg = Config(retries={"mode": "standard", "max_attempts": retries + 1}, read_timeout=timeout_s,
                     connect_timeout=min(10.0, timeout_s))
        self.client = client or boto3.client("sagemaker-runtime", endpoint_url=endpoint_url, config=cfg)
        self.endpoints = {"clipseg": clipseg_endpoint, "inpaint": inpaint_endpoint}
        self.async_endpoint = async_endpoint
        self.async_bucket = async_bucket
        self._s3 = s3
        self.retries = retries

    def _invoke(self, role: str, body: bytes) -> dict:
        from botocore.exceptions import BotoCoreError, ClientError

        endpoint = self.endpoints[role]
        for attempt in range(self.retries + 1):
            try:
                resp = self.client.invoke_endpoint(EndpointName=endpoint, ContentType="application/json",
                                                   Accept="application/json", Body=body)
                return json.loads(resp["Body"].read())
            except ClientError as exc:
                err = exc.response.get("Error", {})
                status = exc.response.get("OriginalStatusCode")
                if err.get("Code") != "ModelError":
                    # throttling/5xx were already retried by botocore's standard mode; 4xx (e.g. unknown
                    # endpoint) will not get better by retrying
                    raise BackendUnavailable(f"{endpoint}: {err.get('Code')} {err.get('Message', '')}"[:300]) from None
                if status is not None and int(status) < 500:
                    code, message = _model_error(exc.response)
                    raise BackendError(code, message) from None
                if attempt == self.retries:  # the container itself failed: retry with backoff, then give up
                    raise BackendUnavailable(f"{endpoint}: the model failed ({status}) {self.retries + 1} times") from None
            except BotoCoreError as exc:  # connection refused, timeouts (after botocore's own retries)
                raise BackendUnavailable(f"{endpoint}: {type(exc).__name__}") from None
            time.sleep(min(8.0, 0.5 * 2**attempt) * (0.5 + random.random()))
        raise AssertionError("unreachable")

    def segment(self, req: SegmentRequest) -> SegmentResponse:
        return SegmentResponse.model_validate(self._invoke("clipseg", req.model_dump_json().encode()))

    def inpaint(self, req: InpaintRequest, progress: Progress | None = None) -> InpaintResponse:
        out = InpaintResponse.model_validate(self._invoke("inpaint", req.model_dump_json().encode()))
        if progress:
            progress(req.steps, req.steps)
        return out

    def inpaint_many(self, req: InpaintRequest, seeds: list[int] | None = None, progress: Progress | None = None,
                     *, batch: bool = False) -> InpaintResponse:
        if batch and self.async_endpoint and self.async_bucket:
            return self._inpaint_async(req, seeds or candidate_seeds(req), progress)
        return super().inpaint_many(req, seeds, progress, batch=batch)

    # -- async inference: input and output on S3 --------------------------------------------------------------
    def _inpaint_async(self, req: InpaintRequest, seeds: list[int], progress: Progress | None, poll_s: float = 1.0,
                       deadline_s: float = 3600.0) -> InpaintResponse:
        """Each chunk of ≤ MAX_IMAGES candidates: request JSON to S3 → InvokeEndpointAsync → poll the output
        (or failure) object; one merged response."""
        import boto3
        from botocore.exceptions import ClientError

        from model.schemas import MAX_IMAGES

        s3 = self._s3 or boto3.client("s3")
        pending = []
        for i in range(0, len(seeds), MAX_IMAGES):
            chunk = _with_seeds(req, seeds[i:i + MAX_IMAGES])
            key = f"restyle/async-in/{uuid.uuid4().hex}.json"
            s3.put_object(Bucket=self.async_bucket, Key=key, Body=chunk.model_dump_json().encode(),
                          ContentType="application/json")
            resp = self.client.invoke_endpoint_async(EndpointName=self.async_endpoint,
                                                     InputLocation=f"s3://{self.async_bucket}/{key}",
                                                     ContentType="application/json", Accept="application/json")
            pending.append((resp["OutputLocation"], resp.get("FailureLocation")))
        results: list[InpaintResponse] = []
        start = time.monotonic()
        while pending:
            if time.monotonic() - start > deadline_s:
                raise BackendUnavailable(f"{self.async_endpoint}: no result after {deadline_s:.0f} s")
            output, failure = pending[0]
            body = _s3_read(s3, output, ClientError)
            if body is not None:
                results.append(InpaintResponse.model_validate(json.loads(body)))
                pending.pop(0)
                if progress:
                    progress(len(results), len(results) + len(pending))
                continue
            err = _s3_read(s3, failure, ClientError) if failure else None
            if err is not None:
                code, message = _model_error({"OriginalMessage": err.decode("utf-8", "replace")})
                raise BackendError(code, message)
            time.sleep(poll_s)
        return _merge(results)


def _s3_read(s3, uri: str, missing: type[Exception]) -> bytes | None:
    bucket, key = _split_s3(uri)
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except missing:
        return None


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


def _model_error(response: dict) -> tuple[str, str]:
    original = response.get("OriginalMessage") or ""
    try:
        err = json.loads(original)["error"]
        return err.get("code", "model_error"), err.get("message", original)
    except (ValueError, KeyError, TypeError):
        return "model_error", original[:500] or response.get("Error", {}).get("Message", "model error")


def build_backend(settings) -> Backend:
    if settings.backend == "sagemaker":
        return SageMakerBackend(clipseg_endpoint=settings.clipseg_endpoint, inpaint_endpoint=settings.inpaint_endpoint,
                                async_endpoint=settings.async_endpoint, async_bucket=settings.async_bucket,
                                endpoint_url=settings.sagemaker_endpoint_url, timeout_s=settings.timeout_s,
                                retries=settings.retries)
    if settings.tiny:
        settings = settings.with_tiny_models()
    return LocalBackend(settings.clipseg_model, settings.inpaint_model, lora=settings.lora, device=settings.device)
