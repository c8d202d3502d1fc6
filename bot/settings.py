"""Configuration, read once from the environment into one typed object (every variable is in the README)."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from model.loading import DEFAULT_CLIPSEG, DEFAULT_INPAINT, DEFAULT_UPSCALE

#: ``RESTYLE_WORKERS`` / ``RESTYLE_QUEUE``: a whole number, or ``auto`` (the default: sized for the backend).
AUTO_INT = "int|auto"
#: backend → (workers, queue) when ``auto``.  ``local``: the in-process model is one CPU/GPU, so one generation at a
#: time; the queue holds a burst.  ``sagemaker``: a worker spends its turn waiting on an endpoint (a thread costs
#: almost nothing then), so enough workers to keep the endpoints' own capacity busy — 32 is 8 instances taking 4
#: requests each, or a serverless endpoint's MaxConcurrency of 32 — and a queue that only a runaway bursts; "busy"
#: is then the endpoints' to say (throttling), not the bot's.  docs/operate.md "Sizing workers" says how to choose.
AUTO_SIZES = {"local": (1, 16), "sagemaker": (32, 256)}

#: env var → (field, type).  Types: str, int, float, bool, path, AUTO_INT.
ENV = {
    "RESTYLE_BACKEND": ("backend", str),
    "RESTYLE_DATA_DIR": ("data_dir", Path),
    "RESTYLE_STATE": ("state", str),
    "RESTYLE_MEDIA": ("media", str),
    "RESTYLE_CLIPSEG_MODEL": ("clipseg_model", str),
    "RESTYLE_INPAINT_MODEL": ("inpaint_model", str),
    "RESTYLE_UPSCALE_MODEL": ("upscale_model", str),
    "RESTYLE_LORA": ("lora", str),
    "RESTYLE_TINY": ("tiny", bool),
    "RESTYLE_DEVICE": ("device", str),
    "RESTYLE_SAGEMAKER_ENDPOINT_URL": ("sagemaker_endpoint_url", str),
    "RESTYLE_CLIPSEG_ENDPOINT": ("clipseg_endpoint", str),
    "RESTYLE_INPAINT_ENDPOINT": ("inpaint_endpoint", str),
    "RESTYLE_UPSCALE_ENDPOINT": ("upscale_endpoint", str),
    "RESTYLE_ASYNC_ENDPOINT": ("async_endpoint", str),
    "RESTYLE_ASYNC_BUCKET": ("async_bucket", str),
    "RESTYLE_ASYNC_PREFIX": ("async_prefix", str),
    "RESTYLE_TIMEOUT": ("timeout_s", float),
    "RESTYLE_RETRIES": ("retries", int),
    "RESTYLE_STEPS": ("steps", int),
    "RESTYLE_GUIDANCE": ("guidance", float),
    "RESTYLE_NUM_IMAGES": ("num_images", int),
    "RESTYLE_MAX_BATCH": ("max_batch", int),
    "RESTYLE_VARY_STRENGTH": ("vary_strength", float),
    "RESTYLE_WORKERS": ("workers", AUTO_INT),
    "RESTYLE_QUEUE": ("queue_size", AUTO_INT),
    "SLACK_BOT_TOKEN": ("slack_bot_token", str),
    "SLACK_APP_TOKEN": ("slack_app_token", str),
    "SLACK_SIGNING_SECRET": ("slack_signing_secret", str),
    "SLACK_API_URL": ("slack_api_url", str),
    "RESTYLE_SLACK_SECRET_ID": ("slack_secret_id", str),
    "RESTYLE_DRAIN_S": ("drain_s", float),
    "RESTYLE_HEALTH_PORT": ("health_port", int),
    # team controls (bot/controls.py, docs/slack.md "Team controls")
    "RESTYLE_USER_DAILY_IMAGES": ("user_daily_images", int),
    "RESTYLE_CHANNEL_DAILY_IMAGES": ("channel_daily_images", int),
    "RESTYLE_DAILY_GPU_SECONDS": ("daily_gpu_seconds", float),
    "RESTYLE_ADMINS": ("admins", str),
    "RESTYLE_CAP_STEPS": ("cap_steps", int),
    "RESTYLE_CAP_COUNT": ("cap_count", int),
    "RESTYLE_CAP_BATCH": ("cap_batch", int),
    "RESTYLE_CAP_GUIDANCE": ("cap_guidance", float),
    "RESTYLE_CHANNELS": ("channels", str),
    "RESTYLE_ALLOW_DMS": ("allow_dms", bool),
    "RESTYLE_RETENTION_DAYS": ("retention_days", float),
    "RESTYLE_PHOTOS": ("photos", str),
    "RESTYLE_TEST_LOOPBACK_FILES": ("test_loopback_files", bool),
}


#: What the in-process models (``--backend local``, ``--tiny``) import; ``pip install "restyle[local]"`` adds them.
LOCAL_MODULES = ("torch", "transformers", "diffusers")
LOCAL_EXTRA_HINT = 'pip install "restyle[local]"'


def missing_local_modules() -> list[str]:
    """The heavy libraries the local backend needs that this install lacks (found without importing them)."""
    out = []
    for name in LOCAL_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            out.append(name)
    return out


def _default_data_dir() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "restyle"


@dataclass(frozen=True)
class Settings:
    backend: str = "local"  # local | sagemaker
    data_dir: Path = field(default_factory=_default_data_dir)
    clipseg_model: str = DEFAULT_CLIPSEG
    inpaint_model: str = DEFAULT_INPAINT
    upscale_model: str = DEFAULT_UPSCALE  # the x4 upscaler ("upscale #3"), loaded on first use
    lora: str | None = None
    tiny: bool = False
    device: str | None = None
    sagemaker_endpoint_url: str | None = None
    clipseg_endpoint: str = "restyle-clipseg"
    inpaint_endpoint: str = "restyle-inpaint"
    upscale_endpoint: str | None = None  # "restyle-upscale" once `deploy up --upscale-model` made it; None: no upscale
    async_endpoint: str = "restyle-inpaint-async"
    async_bucket: str | None = None
    async_prefix: str = "restyle"  # = python -m deploy --prefix: batch inputs go under <prefix>/async-in/
    timeout_s: float = 60.0
    retries: int = 3
    steps: int = 30
    guidance: float = 7.5
    num_images: int = 4
    max_batch: int = 16
    vary_strength: float = 0.65
    workers: int | None = None  # None: auto (``job_workers``)
    queue_size: int | None = None  # None: auto (``job_queue``)
    slack_bot_token: str | None = None
    slack_app_token: str | None = None
    slack_signing_secret: str | None = None
    slack_api_url: str = "https://slack.com/api/"
    slack_secret_id: str | None = None  # AWS Secrets Manager: a JSON secret with the Slack tokens
    drain_s: float = 30.0  # on SIGTERM, running turns get this long to finish
    health_port: int | None = None  # Socket Mode: serve /healthz on this port
    # team controls: quotas (None: unlimited), admins, caps for everyone else, allowed channels, retention
    user_daily_images: int | None = None
    channel_daily_images: int | None = None
    daily_gpu_seconds: float | None = None
    admins: str = ""
    cap_steps: int = 50
    cap_count: int = 8
    cap_batch: int = 16
    cap_guidance: float = 15.0
    channels: str = ""
    allow_dms: bool = True
    retention_days: float | None = None
    photos: str = "asked"  # asked: download only photos restyle is asked to work on | all: every shared photo
    #: test-only: photo downloads over plain http from SLACK_API_URL's host when it is a loopback address
    test_loopback_files: bool = False
    state: str | None = None  # dynamodb://TABLE: shared state for several replicas (default: SQLite in data_dir)
    media: str | None = None  # s3://BUCKET/PREFIX: the pictures, with RESTYLE_STATE

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> Settings:
        env = os.environ if env is None else env
        values: dict = {}
        for var, (name, typ) in ENV.items():
            raw = env.get(var)
            if raw is None or raw == "":
                continue
            try:
                if typ is bool:
                    values[name] = raw.strip().lower() in ("1", "true", "yes", "on")
                elif typ is AUTO_INT:
                    values[name] = None if raw.strip().lower() == "auto" else int(raw)
                else:
                    values[name] = typ(raw)
            except ValueError:
                kind = "whole number or 'auto'" if typ is AUTO_INT else typ.__name__
                raise ValueError(f"{var} must be a {kind}, got {raw!r}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "data_dir" in values:
            values["data_dir"] = Path(values["data_dir"])
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        """Every setting usable, or a ValueError naming its flag/variable: found at start-up, not at the first
        prompt."""
        if self.backend not in ("local", "sagemaker"):
            raise ValueError(f"RESTYLE_BACKEND must be 'local' or 'sagemaker', got {self.backend!r}")
        if (self.backend == "local" or self.tiny) and (missing := missing_local_modules()):
            what = "--tiny" if self.backend != "local" else "the local backend (in-process models)"
            raise ValueError(f"{what} needs the 'local' extra, which this install lacks ({', '.join(missing)} "
                             f"missing): {LOCAL_EXTRA_HINT}, or use --backend sagemaker / RESTYLE_BACKEND=sagemaker")
        names = {name: var for var, (name, _) in ENV.items()}
        for name, lo, hi in (("steps", 1, 150), ("num_images", 1, 16), ("max_batch", 1, 64), ("job_workers", 1, 256),
                             ("job_queue", 1, 10_000), ("retries", 0, 10), ("guidance", 0.0, 30.0),
                             ("vary_strength", 0.05, 1.0), ("timeout_s", 1.0, 3600.0), ("drain_s", 0.0, 3600.0)):
            v = getattr(self, name)
            if not lo <= v <= hi:  # NaN fails this too
                flag = {"steps": "--steps", "num_images": "--count"}.get(name)
                var = {"job_workers": "RESTYLE_WORKERS", "job_queue": "RESTYLE_QUEUE"}.get(name) or names.get(name)
                label = f"{flag} / {var}" if flag else var or name
                raise ValueError(f"{label} must be from {lo} to {hi}, got {v}")
        if self.job_queue < self.job_workers:  # both set: auto sizes always fit
            raise ValueError(f"RESTYLE_QUEUE (requests queued or running) must be at least RESTYLE_WORKERS "
                             f"({self.job_workers}), got {self.job_queue}: the workers past it would never run")
        if self.health_port is not None and not 0 <= self.health_port <= 65535:
            raise ValueError(f"--health-port / RESTYLE_HEALTH_PORT must be from 0 to 65535, got {self.health_port}")
        for name, lo, hi in (("user_daily_images", 0, 10**9), ("channel_daily_images", 0, 10**9),
                             ("daily_gpu_seconds", 0.0, 1e12), ("cap_steps", 1, 150), ("cap_count", 1, 16),
                             ("cap_batch", 1, 64), ("cap_guidance", 0.0, 30.0), ("retention_days", 0.0, 36500.0)):
            v = getattr(self, name)
            if v is not None and not lo <= v <= hi:  # NaN fails this too
                raise ValueError(f"{names.get(name, name)} must be from {lo} to {hi}, got {v}")
        if self.photos not in ("asked", "all"):
            raise ValueError(f"RESTYLE_PHOTOS must be 'asked' or 'all', got {self.photos!r}")
        if self.state or self.media:
            from bot.store_aws import parse_media, parse_state  # boto3 is imported only when the store opens

            if not self.state:
                raise ValueError("RESTYLE_MEDIA is used only with RESTYLE_STATE=dynamodb://TABLE (SQLite keeps its "
                                 "pictures under RESTYLE_DATA_DIR)")
            parse_state(self.state)
            if not self.media:
                raise ValueError("RESTYLE_STATE=dynamodb://… needs RESTYLE_MEDIA=s3://BUCKET/PREFIX for the pictures")
            parse_media(self.media)
        if not self.async_prefix.strip("/") or any(c.isspace() for c in self.async_prefix):
            raise ValueError(f"RESTYLE_ASYNC_PREFIX must be an S3 key prefix like 'restyle' (the deploy --prefix), "
                             f"got {self.async_prefix!r}")
        if self.lora:
            from model.schemas import parse_looks

            parse_looks(self.lora)  # "RESTYLE_LORA: 'none' is not a usable look name …"
        if self.device:
            from model.checks import bad_device

            if why := bad_device(self.device):
                raise ValueError(f"--device / RESTYLE_DEVICE {why}")

    @property
    def job_workers(self) -> int:
        """Generations run at once: ``RESTYLE_WORKERS``, or ``AUTO_SIZES`` for the backend (never more than a
        ``RESTYLE_QUEUE`` that is set: the workers past it would never run)."""
        if self.workers is not None:
            return self.workers
        auto = AUTO_SIZES.get(self.backend, AUTO_SIZES["local"])[0]
        return auto if self.queue_size is None else max(1, min(auto, self.queue_size))

    @property
    def job_queue(self) -> int:
        """Generations held, queued or running, before the bot itself says it is busy: ``RESTYLE_QUEUE``, or
        ``AUTO_SIZES`` for the backend (never fewer than the workers)."""
        if self.queue_size is not None:
            return self.queue_size
        return max(AUTO_SIZES.get(self.backend, AUTO_SIZES["local"])[1], self.job_workers)

    @property
    def job_sizing(self) -> str:
        """How ``job_workers``/``job_queue`` were chosen, for /healthz and the start-up log."""
        if self.workers is not None and self.queue_size is not None:
            return "set"
        return f"auto ({self.backend} backend)" + ("" if self.workers is None and self.queue_size is None
                                                   else ", partly set")

    def with_tiny_models(self) -> Settings:
        """Point both models at tiny random checkpoints (built once under the data dir), with the two tiny brand
        looks unless ``--lora`` names others — so the offline flow has looks to choose from too."""
        from model.tiny import TINY_LOOKS, build_tiny

        root = build_tiny(self.data_dir / "tiny")
        lora = self.lora or ",".join(f"{name}={root / 'looks' / name}" for name in TINY_LOOKS)
        return replace(self, clipseg_model=str(root / "clipseg"), inpaint_model=str(root / "inpaint"),
                       upscale_model=str(root / "upscale"), lora=lora)

    def redacted(self) -> dict:
        """For logs: every field, secrets masked."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = ("***" if v else None) if ("token" in f.name or "secret" in f.name) else str(v)
        return out


class SecretError(ValueError):
    """The Slack secret in AWS Secrets Manager could not be read or has the wrong shape."""


#: Keys read from the ``RESTYLE_SLACK_SECRET_ID`` JSON secret (either spelling), → Settings fields.
SECRET_KEYS = {"SLACK_BOT_TOKEN": "slack_bot_token", "bot_token": "slack_bot_token",
               "SLACK_APP_TOKEN": "slack_app_token", "app_token": "slack_app_token",
               "SLACK_SIGNING_SECRET": "slack_signing_secret", "signing_secret": "slack_signing_secret"}


def with_slack_secret(settings: Settings, client=None) -> Settings:
    """When ``RESTYLE_SLACK_SECRET_ID`` names a secret, the Slack tokens it holds fill the settings the environment
    left unset (a variable that is set wins).  The secret is JSON: ``{"SLACK_BOT_TOKEN": "xoxb-…",
    "SLACK_APP_TOKEN": "xapp-…", "SLACK_SIGNING_SECRET": "…"}`` (``bot_token``/``app_token``/``signing_secret``
    work too).  Credentials and region come from the standard AWS chain; ``AWS_ENDPOINT_URL`` is honoured."""
    import json

    if not settings.slack_secret_id:
        return settings
    sid = settings.slack_secret_id
    try:
        if client is None:
            import boto3

            client = boto3.client("secretsmanager")
        resp = client.get_secret_value(SecretId=sid)
    except Exception as exc:  # botocore's ClientError, NoRegionError, NoCredentialsError, EndpointConnectionError
        code = getattr(exc, "response", {}).get("Error", {}).get("Code") if hasattr(exc, "response") else None
        raise SecretError(f"RESTYLE_SLACK_SECRET_ID: cannot read the secret {sid!r} "
                          f"({code or type(exc).__name__}: {exc})") from None
    raw = resp.get("SecretString")
    try:
        data = json.loads(raw) if raw is not None else None
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        raise SecretError(f"RESTYLE_SLACK_SECRET_ID: the secret {sid!r} must be a JSON object with "
                          f"SLACK_BOT_TOKEN, SLACK_APP_TOKEN and/or SLACK_SIGNING_SECRET")
    values = {}
    for key, name in SECRET_KEYS.items():
        value = data.get(key)
        if isinstance(value, str) and value and not getattr(settings, name) and name not in values:
            values[name] = value
    if not any(data.get(k) for k in SECRET_KEYS):
        raise SecretError(f"RESTYLE_SLACK_SECRET_ID: the secret {sid!r} has none of SLACK_BOT_TOKEN, "
                          f"SLACK_APP_TOKEN, SLACK_SIGNING_SECRET")
    return replace(settings, **values)
