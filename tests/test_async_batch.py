"""Batches on the async endpoint: bot → boto3 InvokeEndpointAsync → model.serve, input and output on S3 (moto)."""

from __future__ import annotations

import json

import boto3
import pytest

from bot.backends import BackendError, SageMakerBackend
from bot.engine import Engine
from bot.events import Command, Photo, Variations
from bot.settings import Settings
from bot.store import Store
from model.schemas import InpaintRequest
from model.serve import ModelServer, start
from tests.conftest import b64, garment_mask, make_photo, moto_server, to_bytes

BUCKET = "restyle-test"
CREDS = {"region_name": "us-east-1", "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@pytest.fixture(scope="module")
def s3_url():
    with moto_server() as url:
        boto3.client("s3", endpoint_url=url, **CREDS).create_bucket(Bucket=BUCKET)
        yield url


@pytest.fixture(scope="module")
def async_server(tiny_dir, s3_url):
    s3 = boto3.client("s3", endpoint_url=s3_url, **CREDS)
    server = ModelServer({"clipseg": str(tiny_dir / "clipseg"), "inpaint": str(tiny_dir / "inpaint")},
                         async_output=f"s3://{BUCKET}/async-out", s3=s3)
    httpd = start(server, port=0)
    assert server.ready.wait(120), server.load_error
    yield server, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def backend(url: str, s3_url: str, s3=None, **kw) -> SageMakerBackend:
    runtime = boto3.client("sagemaker-runtime", endpoint_url=url, **CREDS)
    return SageMakerBackend(clipseg_endpoint="restyle-clipseg", inpaint_endpoint="restyle-inpaint",
                            async_endpoint="restyle-inpaint-async", async_bucket=BUCKET, client=runtime,
                            s3=s3 or boto3.client("s3", endpoint_url=s3_url, **CREDS), **kw)


def small_request(**kw) -> InpaintRequest:
    return InpaintRequest(image=b64(make_photo(64, 64)), mask=b64(garment_mask(64, 64)), prompt="a red skirt",
                          num_images=1, seed=1, steps=2, **kw)


def test_batch_runs_on_the_async_endpoint(tmp_path, async_server, s3_url):
    _, url = async_server
    settings = Settings.from_env({}, data_dir=tmp_path, steps=2, num_images=2, backend="sagemaker",
                                 async_bucket=BUCKET)
    eng = Engine(Store(tmp_path), backend(url, s3_url), settings)
    eng.handle(Photo("b", "u", to_bytes(make_photo(160, 240))))
    eng.handle(Command("b", "u", "settings seed=5"))
    out = [r for r in eng.handle(Command("b", "u", "batch 5 pastel skirt")) if isinstance(r, Variations)]
    assert out and [v.seed for v in out[0].items] == [5, 6, 7, 8, 9]
    s3 = boto3.client("s3", endpoint_url=s3_url, **CREDS)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert any(k.startswith("restyle/async-in/") for k in keys)
    outputs = [k for k in keys if k.startswith("async-out/") and k.endswith(".out") and "failures" not in k]
    assert outputs
    assert len(json.loads(s3.get_object(Bucket=BUCKET, Key=outputs[0])["Body"].read())["images"]) == 5


def test_batch_inputs_follow_the_deploy_prefix(async_server, s3_url):
    """RESTYLE_ASYNC_PREFIX (= deploy --prefix) names where batch inputs go, so the deploy's lifecycle rules and
    role cover them."""
    _, url = async_server
    settings = Settings.from_env({"RESTYLE_ASYNC_PREFIX": "shop", "RESTYLE_ASYNC_BUCKET": BUCKET,
                                  "RESTYLE_BACKEND": "sagemaker"})
    assert settings.async_prefix == "shop"
    out = backend(url, s3_url, async_prefix=settings.async_prefix).inpaint_many(small_request(), batch=True)
    assert len(out.images) == 1
    s3 = boto3.client("s3", endpoint_url=s3_url, **CREDS)
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix="shop/async-in/")["KeyCount"] == 1
    with pytest.raises(ValueError, match="RESTYLE_ASYNC_PREFIX must be an S3 key prefix"):
        Settings.from_env({"RESTYLE_ASYNC_PREFIX": "/"})


class DeniedReads:
    """S3 as seen by a bot role that may write batch inputs but not read results (moto enforces no IAM)."""

    def __init__(self, s3) -> None:
        self.s3 = s3
        self.reads = 0

    def put_object(self, **kw):
        return self.s3.put_object(**kw)

    def get_object(self, **kw):
        from botocore.exceptions import ClientError

        self.reads += 1
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"},
                           "ResponseMetadata": {"HTTPStatusCode": 403}}, "GetObject")


def test_access_denied_on_the_result_fails_at_once(async_server, s3_url):
    import time

    from bot.backends import BackendUnavailable

    _, url = async_server
    s3 = DeniedReads(boto3.client("s3", endpoint_url=s3_url, **CREDS))
    t0 = time.monotonic()
    with pytest.raises(BackendUnavailable) as err:
        backend(url, s3_url, s3=s3).inpaint_many(small_request(), batch=True)
    assert time.monotonic() - t0 < 10 and s3.reads == 1  # not an hour of "not ready yet"
    text = str(err.value)
    assert "\n" not in text and text.startswith("the bot could not read the batch result s3://")
    assert "Access Denied (AccessDenied)" in text


def test_async_failure_is_reported_not_retried(async_server, s3_url):
    _, url = async_server
    bad = InpaintRequest(image=b64(make_photo()), mask=b64(garment_mask(64, 64)), prompt="a red skirt",
                         num_images=1, seed=1, steps=2)  # mask size != image size: the model refuses it
    with pytest.raises(BackendError) as err:
        backend(url, s3_url).inpaint_many(bad, batch=True)
    assert err.value.code == "mask_size_mismatch"


@pytest.mark.parametrize("headers, code", [
    ({"X-Amzn-SageMaker-InputLocation": f"s3://{BUCKET}/"}, "invalid_input_location"),
    ({"X-Amzn-SageMaker-InputLocation": "s3:///key"}, "invalid_input_location"),
    ({"X-Amzn-SageMaker-InputLocation": f"s3://{BUCKET}/in/x.json",
      "X-Amzn-SageMaker-Inference-Id": "../../secret/x"}, "invalid_inference_id"),
    ({"X-Amzn-SageMaker-InputLocation": f"s3://{BUCKET}/in/x.json",
      "X-Amzn-SageMaker-Inference-Id": "failures/x"}, "invalid_inference_id"),
])
def test_async_request_that_would_write_elsewhere_is_refused(async_server, headers, code):
    """An empty bucket or key, or an inference id that would climb out of (or into failures/ of) the output
    prefix, is a 400 before anything is queued."""
    import urllib.error
    import urllib.request

    _, url = async_server
    req = urllib.request.Request(f"{url}/endpoints/restyle-inpaint-async/async-invocations", data=b"",
                                 headers=headers, method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=30)
    assert err.value.code == 400 and json.loads(err.value.read())["error"]["code"] == code
