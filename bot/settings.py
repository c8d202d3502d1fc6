"""Configuration, read once from the environment into one typed object (every variable is in the README)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from model.loading import DEFAULT_CLIPSEG, DEFAULT_INPAINT

#: env var → (field, type).  Types: str, int, float, bool, path.
ENV = {
    "RESTYLE_BACKEND": ("backend", str),
    "RESTYLE_DATA_DIR": ("data_dir", Path),
    "RESTYLE_CLIPSEG_MODEL": ("clipseg_model", str),
    "RESTYLE_INPAINT_MODEL": ("inpaint_model", str),
    "RESTYLE_LORA": ("lora", str),
    "RESTYLE_TINY": ("tiny", bool),
    "RESTYLE_DEVICE": ("device", str),
    "RESTYLE_SAGEMAKER_ENDPOINT_URL": ("sagemaker_endpoint_url", str),
    "RESTYLE_CLIPSEG_ENDPOINT": ("clipseg_endpoint", str),
    "RESTYLE_INPAINT_ENDPOINT": ("inpaint_endpoint", str),
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
    "RESTYLE_WORKERS": ("workers", int),
    "RESTYLE_QUEUE": ("queue_size", int),
    "SLACK_BOT_TOKEN": ("slack_bot_token", str),
    "SLACK_APP_TOKEN": ("slack_app_token", str),
    "SLACK_SIGNING_SECRET": ("slack_signing_secret", str),
    "SLACK_API_URL": ("slack_api_url", str),
}


def _default_data_dir() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "restyle"


@dataclass(frozen=True)
class Settings:
    backend: str = "local"  # local | sagemaker
    data_dir: Path = field(default_factory=_default_data_dir)
    clipseg_model: str = DEFAULT_CLIPSEG
    inpaint_model: str = DEFAULT_INPAINT
    lora: str | None = None
    tiny: bool = False
    device: str | None = None
    sagemaker_endpoint_url: str | None = None
    clipseg_endpoint: str = "restyle-clipseg"
    inpaint_endpoint: str = "restyle-inpaint"
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
    workers: int = 1
    queue_size: int = 16
    slack_bot_token: str | None = None
    slack_app_token: str | None = None
    slack_signing_secret: str | None = None
    slack_api_url: str = "https://slack.com/api/"

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
                else:
                    values[name] = typ(raw)
            except ValueError:
                raise ValueError(f"{var} must be a {typ.__name__}, got {raw!r}") from None
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
        names = {name: var for var, (name, _) in ENV.items()}
        for name, lo, hi in (("steps", 1, 150), ("num_images", 1, 16), ("max_batch", 1, 64), ("workers", 1, 64),
                             ("queue_size", 1, 10_000), ("retries", 0, 10), ("guidance", 0.0, 30.0),
                             ("vary_strength", 0.05, 1.0), ("timeout_s", 1.0, 3600.0)):
            v = getattr(self, name)
            if not lo <= v <= hi:  # NaN fails this too
                flag = {"steps": "--steps", "num_images": "--count"}.get(name)
                label = f"{flag} / {names.get(name)}" if flag else names.get(name, name)
                raise ValueError(f"{label} must be from {lo} to {hi}, got {v}")
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

    def with_tiny_models(self) -> Settings:
        """Point both models at tiny random checkpoints (built once under the data dir), with the two tiny brand
        looks unless ``--lora`` names others — so the offline flow has looks to choose from too."""
        from model.tiny import TINY_LOOKS, build_tiny

        root = build_tiny(self.data_dir / "tiny")
        lora = self.lora or ",".join(f"{name}={root / 'looks' / name}" for name in TINY_LOOKS)
        return replace(self, clipseg_model=str(root / "clipseg"), inpaint_model=str(root / "inpaint"), lora=lora)

    def redacted(self) -> dict:
        """For logs: every field, secrets masked."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = ("***" if v else None) if ("token" in f.name or "secret" in f.name) else str(v)
        return out
