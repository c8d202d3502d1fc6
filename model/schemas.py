"""The one contract between bot/ and model/: request/response bodies of the ``clipseg``, ``inpaint`` and ``upscale``
endpoints.

Images travel as base64 strings.  ``python -m model.schemas DIR`` writes the JSON Schemas (documented in
docs/api.md).  Validation failures become a 400 whose message names the field, the rule and the value received.
"""

from __future__ import annotations

import json
import math
import random
import re
import sys
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from model.errors import RequestError

#: What CLIPSeg is told to keep out of a garment mask unless the request says otherwise.
DEFAULT_PROTECT = ["face", "hands", "hair"]
#: Sent to SD when the request has no negative prompt.
DEFAULT_NEGATIVE_PROMPT = (
    "blurry, lowres, deformed, bad anatomy, extra limbs, watermark, text, logo, jpeg artifacts, duplicate"
)
MAX_PROMPTS = 32
MAX_IMAGES = 16
MAX_STEPS = 150
#: The largest low-res region the ``upscale`` endpoint takes (its answer has 16x the pixels: a 2048x2048 picture).
MAX_UPSCALE_PIXELS = 512 * 512
#: The x4 upscaler's own limit on the noise added to the low-res image (``max_noise_level`` of its pipeline).
MAX_NOISE_LEVEL = 350
SCHEDULERS = ("default", "ddim", "pndm", "euler", "euler_a", "dpm++", "unipc", "lms")
ImageFormat = Literal["png", "jpeg", "webp"]
#: Where the feathered band of the paste-back lies: around the mask (soft seams) or within it (outside untouched).
EDGES = ("outside", "inside")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def _clean_prompt(value: str, field: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError(f"`{field}` must not be empty or blank")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\ud800"): JSON allows it, no tokenizer does
        raise ValueError(f"`{field}` is not valid Unicode text (it holds a lone surrogate)") from None
    return value


def min_steps(strength: float) -> int:
    """The fewest ``steps`` that run at least one denoising step at ``strength`` (diffusers runs
    ``int(steps * strength)`` of them)."""
    steps = max(1, math.ceil(1 / strength))
    while int(steps * strength) < 1:
        steps += 1
    return steps


#: A look's name: what ``RESTYLE_LORA="ss27=…,resort=…"`` calls an adapter and a request's ``look`` names.
LOOK_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,39}$"
#: Look names a request uses for "the endpoint's default look" and "the base model, no LoRA".
DEFAULT_LOOK, NO_LOOK = "default", "none"


def parse_looks(spec: str | None) -> dict[str, str]:
    """``RESTYLE_LORA`` / ``--lora``: ``"ss27=path,resort=s3://bucket/resort/"`` → ``{"ss27": "path", ...}``.

    A single bare reference (``"path/to/ss27-lora"``, a Hub id) is named after its last part.  The first look is
    the endpoint's default.  Names follow ``model.schemas.LOOK_PATTERN``; ``default`` and ``none`` are reserved.
    """
    looks: dict[str, str] = {}
    for part in (p.strip() for p in (spec or "").split(",")):
        if not part:
            continue
        name, sep, ref = part.partition("=")
        if not sep:  # a bare reference: "s3://b/looks/ss27/" → "ss27"
            ref = part
            name = re.sub(r"[^a-z0-9_-]+", "-", ref.rstrip("/").rsplit("/", 1)[-1].lower()).strip("-_") or "look"
        name, ref = name.strip().lower(), ref.strip()
        if not re.fullmatch(LOOK_PATTERN, name) or name in (DEFAULT_LOOK, NO_LOOK):
            raise ValueError(f"RESTYLE_LORA: {name!r} is not a usable look name (a-z, 0-9, '-', '_'; not "
                             f"'{DEFAULT_LOOK}' or '{NO_LOOK}')")
        if not ref or name in looks:
            raise ValueError(f"RESTYLE_LORA: look {name!r} is {'empty' if not ref else 'named twice'} in {spec!r}")
        looks[name] = ref
    return looks


def format_looks(looks: dict[str, str]) -> str:
    """The inverse of ``parse_looks``."""
    return ",".join(f"{name}={ref}" for name, ref in looks.items())


class SegmentRequest(_Body):
    """``clipseg`` endpoint: find garments by name."""

    image: str = Field(description="base64 photo (PNG, JPEG, WebP, GIF, BMP, TIFF)")
    prompts: list[str] = Field(min_length=1, max_length=MAX_PROMPTS,
                               description="garments to find, one mask each, e.g. ['skirt']")
    negative_prompts: list[str] | None = Field(
        default=None, max_length=MAX_PROMPTS,
        description=f"regions removed from every mask; default {DEFAULT_PROTECT}; [] protects nothing")
    threshold: float = Field(default=0.4, gt=0.0, lt=1.0, description="probability above which a pixel is garment")
    negative_threshold: float | None = Field(default=None, gt=0.0, lt=1.0,
                                             description="threshold for negative prompts (default: threshold)")
    dilate: int = Field(default=8, ge=0, le=256, description="grow each mask by this many pixels")
    min_area: float = Field(default=0.0005, ge=0.0, lt=1.0,
                            description="drop specks smaller than this fraction of the image")
    min_coverage: float = Field(default=0.002, ge=0.0, lt=1.0,
                                description="below this fraction of the image a garment is 'not found'")
    include_union: bool = Field(default=True, description="also return the union of found masks")

    @field_validator("prompts", "negative_prompts")
    @classmethod
    def _prompts(cls, value: list[str] | None, info) -> list[str] | None:
        if value is None:
            return value
        return [_clean_prompt(v, f"{info.field_name}[{i}]") for i, v in enumerate(value)]


class SegmentResponse(_Body):
    masks: list[str] = Field(description="base64 PNG per prompt, image size, white = garment")
    scores: list[float] = Field(description="mean probability inside each mask (0 when not found)")
    coverage: list[float] = Field(description="fraction of the image each mask covers")
    bboxes: list[list[int] | None] = Field(description="[x0, y0, x1, y1] (x1/y1 exclusive) or null")
    found: list[bool] = Field(description="coverage >= min_coverage")
    prompts: list[str]
    width: int
    height: int
    union: str | None = Field(default=None, description="base64 PNG union of the found masks")
    timings_ms: dict[str, float] = Field(default_factory=dict)


class InpaintRequest(_Body):
    """``inpaint`` endpoint: N candidates for the masked region."""

    image: str = Field(description="base64 photo")
    mask: str = Field(description="base64 mask, same size as the image, white = repaint")
    prompt: str = Field(max_length=2000, description="what the new garment looks like")
    negative_prompt: str | None = Field(default=None, max_length=2000,
                                        description="default: a generic quality negative prompt")
    num_images: int = Field(default=4, ge=1, le=MAX_IMAGES)
    seed: int | None = Field(default=None, ge=0, lt=2**31,
                             description="candidate i uses seed+i; random when omitted (returned in `seeds`)")
    seeds: list[Annotated[int, Field(ge=0, lt=2**31)]] | None = Field(
        default=None, min_length=1, max_length=MAX_IMAGES,
        description="explicit seed per candidate (each in [0, 2**31)); overrides seed/num_images")
    steps: int = Field(default=30, ge=1, le=MAX_STEPS)
    guidance_scale: float = Field(default=7.5, ge=0.0, le=30.0)
    strength: float = Field(default=1.0, gt=0.0, le=1.0)
    scheduler: Literal[SCHEDULERS] = "default"  # type: ignore[valid-type]
    crop: bool = Field(default=True, description="generate on a padded crop around the mask (fast, sharp)")
    padding: int = Field(default=32, ge=0, le=1024, description="context pixels around the mask's bbox")
    feather: int = Field(default=8, ge=0, le=256, description="width of the soft edge when pasting back")
    edge: Literal[EDGES] = Field(  # type: ignore[valid-type]
        default="outside",
        description="where the `feather` band lies: 'outside' the mask (soft seams around a garment) or 'inside' it "
                    "(every pixel outside the mask is the original's, bit-identical: e.g. a new background "
                    "around a person)")
    reference: str | None = Field(
        default=None, description="base64 swatch or print (same formats and size limit as `image`): the garment is "
                                  "repainted with it as a visual prompt (needs an endpoint with an IP-Adapter; "
                                  "error `no_reference_support` otherwise)")
    reference_scale: float = Field(default=0.6, ge=0.0, le=1.0,
                                   description="how strongly `reference` steers the picture; 0 ignores it")
    return_crop: bool = Field(default=False, description="return only the crop (see `offset`), not the photo")
    format: ImageFormat = "png"
    quality: int = Field(default=92, ge=1, le=100, description="JPEG/WebP quality")
    look: str | None = Field(default=None, pattern=LOOK_PATTERN,
                             description="a brand look (LoRA adapter) the endpoint serves, by name; null or "
                                         "'default' = the endpoint's default look; 'none' = the base model")

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: str) -> str:
        return _clean_prompt(value, "prompt")


def candidate_seeds(req: InpaintRequest) -> list[int]:
    if req.seeds:
        return list(req.seeds)
    base = req.seed if req.seed is not None else random.SystemRandom().randrange(0, 2**31 - MAX_IMAGES)
    return [(base + i) % 2**31 for i in range(req.num_images)]


class Rejected(_Body):
    seed: int
    reason: Literal["nan", "black", "safety_checker"]


class InpaintResponse(_Body):
    images: list[str] = Field(description="base64 images (photo size, or the crop when return_crop)")
    seeds: list[int] = Field(description="the seed of each returned image")
    rejected: list[Rejected] = Field(default_factory=list, description="candidates not returned, and why")
    width: int
    height: int
    format: ImageFormat
    offset: list[int] | None = Field(default=None, description="[x, y] of the crop in the photo (return_crop)")
    crop_box: list[int] = Field(description="[x0, y0, x1, y1] region that was generated")
    look: str | None = Field(default=None, description="the look applied; null = the base model")
    timings_ms: dict[str, float] = Field(default_factory=dict)


class UpscaleRequest(_Body):
    """``upscale`` endpoint: a low-res region brought to 4x its width and height (the x4 upscaler)."""

    image: str = Field(description="base64 low-res region (the garment's crop box scaled down by 4: "
                                   "model.compose.plan_upscale), at most "
                                   f"{MAX_UPSCALE_PIXELS:,} pixels, at least 8 on each side")
    prompt: str = Field(default="", max_length=2000, description="what the region shows (guides the detail); "
                                                                 "may be empty")
    negative_prompt: str | None = Field(default=None, max_length=2000,
                                        description="default: a generic quality negative prompt")
    seed: int | None = Field(default=None, ge=0, lt=2**31, description="random when omitted (returned in `seed`)")
    steps: int = Field(default=20, ge=1, le=MAX_STEPS)
    guidance_scale: float = Field(default=9.0, ge=0.0, le=30.0)
    noise_level: int = Field(default=20, ge=0, le=MAX_NOISE_LEVEL,
                             description="noise added to the low-res image first: more lets the model invent more")
    format: ImageFormat = "png"
    quality: int = Field(default=92, ge=1, le=100, description="JPEG/WebP quality")

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: str) -> str:
        return _clean_prompt(value, "prompt") if value.strip() else ""


class UpscaleResponse(_Body):
    image: str = Field(description="base64 image, 4x the request's width and height")
    width: int
    height: int
    format: ImageFormat
    seed: int = Field(description="the seed used")
    timings_ms: dict[str, float] = Field(default_factory=dict)


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


REQUESTS = {"clipseg": SegmentRequest, "inpaint": InpaintRequest, "upscale": UpscaleRequest}
RESPONSES = {"clipseg": SegmentResponse, "inpaint": InpaintResponse, "upscale": UpscaleResponse}


def describe_validation_error(exc: ValidationError) -> str:
    """One readable line per problem: field, rule and the value received (truncated)."""
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "body"
        value = err.get("input")
        shown = repr(value)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            parts.append(f"`{loc}` is required")
        elif err["type"] == "extra_forbidden":
            parts.append(f"`{loc}` is not a known field")
        else:
            parts.append(f"`{loc}`: {msg} (got {shown})")
    return "; ".join(parts)


def parse_request(role: str, data: dict | bytes | str):
    """Validate a request body for ``role``; raise ``RequestError`` (400) naming what is wrong."""
    cls = REQUESTS[role]
    try:
        if isinstance(data, (bytes, str)):
            return cls.model_validate_json(data)
        return cls.model_validate(data)
    except ValidationError as exc:
        raise RequestError(describe_validation_error(exc), code="invalid_request") from None


def export_schemas(outdir: Path) -> list[Path]:
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, cls in [*((f"{k}.request", v) for k, v in REQUESTS.items()),
                      *((f"{k}.response", v) for k, v in RESPONSES.items()), ("error", ErrorResponse)]:
        path = outdir / f"{name}.schema.json"
        path.write_text(json.dumps(cls.model_json_schema(), indent=2) + "\n")
        written.append(path)
    return written


if __name__ == "__main__":
    for p in export_schemas(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/schemas")):
        print(p)
