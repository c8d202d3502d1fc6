"""Loading real or tiny checkpoints by Hub id or local path — the only place weights are read.

Everything else receives loaded objects.  On CUDA the fast path is on by default: fp16 (or ``RESTYLE_DTYPE``),
SDPA attention (diffusers' and transformers' default), channels_last UNet/VAE (on the CPU too), VAE slicing (16 candidates decode
one by one: the peak memory of one picture), optional VAE tiling (``RESTYLE_VAE_TILING=1``) and optional
``torch.compile`` (``RESTYLE_COMPILE=1``) with the warm-up done here so no request pays for it.

Swatches and prints: ``load_inpaint`` also loads an IP-Adapter (``RESTYLE_IP_ADAPTER`` / ``ip_adapter``, see
``ip_adapter_source``) with diffusers' own ``load_ip_adapter``; its CLIP image encoder joins the inpainting pipeline,
and a request's ``reference`` image becomes a visual prompt.

``prepare_clipseg`` / ``prepare_inpaint`` / ``prepare_upscale`` apply the same settings to models built in memory (``model.bench`` uses
them on full-size random models), so a benchmark measures exactly what ``load_*`` serves.

torch is imported inside the functions that use it, never at import: the bot (lean install, no torch) reads
``DEFAULT_CLIPSEG`` / ``DEFAULT_INPAINT`` / ``DEFAULT_UPSCALE`` and catches ``ModelUnavailable`` from here.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import TYPE_CHECKING

from model.schemas import NO_LOOK, parse_looks

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

DEFAULT_CLIPSEG = "CIDAS/clipseg-rd64-refined"
DEFAULT_INPAINT = "stable-diffusion-v1-5/stable-diffusion-inpainting"
DEFAULT_UPSCALE = "stabilityai/stable-diffusion-x4-upscaler"
#: The IP-Adapter an SD 1.x checkpoint gets unless ``RESTYLE_IP_ADAPTER`` says otherwise: (ref, subfolder, weights).
DEFAULT_IP_ADAPTER = ("h94/IP-Adapter", "models", "ip-adapter_sd15.safetensors")
IP_ADAPTER_ENV = "RESTYLE_IP_ADAPTER"
#: A checkpoint folder's own IP-Adapter: ``<ref>/ip_adapter/`` (what ``model.tiny`` writes), used when present.
IP_ADAPTER_DIR = "ip_adapter"
#: ``RESTYLE_DTYPE`` names → torch dtype attribute names (``torch.float16`` …).
DTYPES = {"fp32": "float32", "float32": "float32", "fp16": "float16", "float16": "float16",
          "bf16": "bfloat16", "bfloat16": "bfloat16"}


class ModelUnavailable(RuntimeError):
    """Weights could not be found locally nor downloaded; the message says which setting to change."""


def pick_device(device: str | None = None) -> torch.device:
    import torch

    name = device or os.environ.get("RESTYLE_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def pick_dtype(device: torch.device, dtype: str | torch.dtype | None = None) -> torch.dtype:
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    name = dtype or os.environ.get("RESTYLE_DTYPE")
    if name:
        if name not in DTYPES:
            raise ValueError(f"RESTYLE_DTYPE must be one of {sorted(DTYPES)}, got {name!r}")
        return getattr(torch, DTYPES[name])
    return torch.float16 if device.type == "cuda" else torch.float32


def _unavailable(what: str, ref: str, setting: str, exc: Exception) -> ModelUnavailable:
    return ModelUnavailable(
        f"could not load the {what} model {ref!r}: it is neither a local folder nor in the Hugging Face cache, "
        f"and it could not be downloaded ({type(exc).__name__}). Point {setting} at a local checkpoint folder, "
        f"or run with --tiny to try the whole flow on tiny random checkpoints.")


def _pipeline(cls, ref: str, what: str, setting: str, device, dtype):
    """``cls.from_pretrained(ref)`` on the chosen device's dtype — ``(pipe, device, dtype)`` — or ``ModelUnavailable``
    naming ``setting`` (in seconds when the Hub cannot be reached: ``check_reachable``)."""
    dev = pick_device(device)
    dt = pick_dtype(dev, dtype)
    check_reachable(ref, what, setting)
    try:
        return cls.from_pretrained(ref, dtype=dt), dev, dt
    except (OSError, ValueError) as exc:
        raise _unavailable(what, ref, setting, exc) from exc


def check_reachable(ref: str, what: str, setting: str, timeout_s: float = 3.0) -> None:
    """Fail in seconds, not minutes, when ``ref`` is a Hub id that is not cached and the Hub cannot be reached.

    A local folder, a cached snapshot or ``HF_HUB_OFFLINE=1`` pass straight to ``from_pretrained``; otherwise one
    TCP connection to the Hub endpoint (``HF_ENDPOINT`` honoured) decides, instead of huggingface_hub's retries.
    """
    import os
    import socket
    from pathlib import Path
    from urllib.parse import urlsplit

    if Path(ref).exists() or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return
    from huggingface_hub import constants, snapshot_download

    try:
        snapshot_download(ref, local_files_only=True)
        return
    except Exception:
        pass
    url = urlsplit(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout_s).close()
    except OSError as exc:
        raise _unavailable(what, ref, setting, exc) from None


def load_clipseg(ref: str = DEFAULT_CLIPSEG, *, device: str | None = None, dtype=None):
    """``CLIPSegForImageSegmentation`` + processor → ``model.segment.Segmenter``."""
    from transformers import AutoProcessor, CLIPSegForImageSegmentation

    dev = pick_device(device)
    dt = pick_dtype(dev, dtype)
    check_reachable(ref, "segmentation", "RESTYLE_CLIPSEG_MODEL / --clipseg")
    try:
        processor = AutoProcessor.from_pretrained(ref)
        model = CLIPSegForImageSegmentation.from_pretrained(ref, dtype=dt)
    except OSError as exc:
        raise _unavailable("segmentation", ref, "RESTYLE_CLIPSEG_MODEL / --clipseg", exc) from exc
    return prepare_clipseg(model, processor, device=dev, dtype=dt)


def prepare_clipseg(model, processor, *, device: str | torch.device | None = None, dtype=None):
    """A loaded CLIPSeg model on its device and dtype → ``model.segment.Segmenter``."""
    import torch

    from model.segment import Segmenter

    dev = torch.device(device) if device is not None else pick_device()
    model.to(device=dev, dtype=pick_dtype(dev, dtype)).eval()
    return Segmenter(model, processor)


def ip_adapter_source(ref: str, spec: str | None = None) -> tuple[tuple[str, str, str] | None, bool]:
    """Which IP-Adapter ``load_inpaint(ref)`` loads: ``((ref, subfolder, weight_name) | None, explicit)``.

    ``spec`` (else ``RESTYLE_IP_ADAPTER``): ``none`` (no adapter), a local folder holding one ``*.safetensors`` /
    ``*.bin`` weights file and ``image_encoder/``, or ``REF[:subfolder[:weight_name]]`` (a Hub id or a path; the
    parts left out default to ``DEFAULT_IP_ADAPTER``'s, e.g. ``h94/IP-Adapter:models:ip-adapter_sd15.safetensors``).
    Unset: ``<ref>/ip_adapter/`` when the checkpoint folder has one, else ``DEFAULT_IP_ADAPTER`` (not explicit:
    ``load_inpaint`` then skips it when it does not fit or cannot be fetched, instead of failing).
    """
    from pathlib import Path

    if spec is None:
        spec = os.environ.get(IP_ADAPTER_ENV) or None
    if spec is None:
        own = Path(ref) / IP_ADAPTER_DIR
        return (_local_ip_adapter(own), True) if own.is_dir() else (DEFAULT_IP_ADAPTER, False)
    spec = spec.strip()
    if spec.lower() in ("none", ""):
        return None, True
    if Path(spec).is_dir():
        return _local_ip_adapter(Path(spec)), True
    parts = spec.split(":")
    if len(parts) > 3 or not parts[0]:
        raise ValueError(f"{IP_ADAPTER_ENV} must be 'none', a folder or REF[:subfolder[:weight_name]], got {spec!r}")
    parts += list(DEFAULT_IP_ADAPTER[len(parts):])
    return (parts[0], parts[1], parts[2]), True


def _local_ip_adapter(folder) -> tuple[str, str, str]:
    weights = sorted(p.name for p in folder.iterdir() if p.suffix in (".safetensors", ".bin") and p.is_file())
    if len(weights) != 1:
        raise ValueError(f"{IP_ADAPTER_ENV}: {folder} must hold exactly one IP-Adapter weights file (*.safetensors "
                         f"or *.bin) next to image_encoder/, found {weights or 'none'}")
    return str(folder), "", weights[0]


def load_ip_adapter(pipe, source: tuple[str, str, str], *, explicit: bool = True) -> bool:
    """``pipe.load_ip_adapter`` (the image encoder comes from ``<subfolder>/image_encoder``); True once loaded.

    An explicit adapter that cannot be loaded is ``ModelUnavailable``; the default one is skipped with a warning
    (an SD 2 / SDXL checkpoint, no network): that endpoint then answers ``reference`` with ``no_reference_support``.
    """
    ref, subfolder, weight_name = source
    name = ":".join(p for p in source if p)
    if not explicit and int(pipe.unet.config.cross_attention_dim) != 768:
        log.info("no IP-Adapter: the default %s fits SD 1.x; set %s for this checkpoint", name, IP_ADAPTER_ENV)
        return False
    try:
        check_reachable(ref, "IP-Adapter", f"{IP_ADAPTER_ENV}")
        pipe.load_ip_adapter(ref, subfolder=subfolder, weight_name=weight_name)
    except (OSError, ValueError, ModelUnavailable) as exc:
        if explicit:
            raise _unavailable("IP-Adapter", name, f"{IP_ADAPTER_ENV} ('none' disables it)", exc) from exc
        log.warning("no IP-Adapter (%s could not be loaded: %s); reference images are refused. Set %s to a "
                    "local copy, or to 'none' to silence this", name, type(exc).__name__, IP_ADAPTER_ENV)
        return False
    log.info("IP-Adapter %s loaded: requests may send a reference image (swatch, print)", name)
    return True


def load_inpaint(ref: str = DEFAULT_INPAINT, *, device: str | None = None, dtype=None, lora: str | None = None,
                 lora_scale: float = 1.0, compile: bool | None = None, ip_adapter: str | None = None):
    """Any diffusers inpainting checkpoint via ``AutoPipelineForInpainting`` → ``model.inpaint.Inpainter``.

    ``lora``: brand looks (``parse_looks``).  One look is fused into the weights (no cost per step, always on);
    several stay separate PEFT adapters that each request picks by name (``look``), or turns off (``none``).
    ``ip_adapter``: the IP-Adapter for reference images (``ip_adapter_source``; ``"none"``: no adapter).
    """
    from diffusers import AutoPipelineForInpainting

    pipe, dev, dt = _pipeline(AutoPipelineForInpainting, ref, "inpainting", "RESTYLE_INPAINT_MODEL / --inpaint",
                              device, dtype)
    if getattr(pipe, "safety_checker", None) is not None:
        log.info("safety checker active: flagged candidates are reported as rejected")
    looks = parse_looks(lora)
    for name, look_ref in looks.items():
        try:
            with warnings.catch_warnings():  # several adapters in one model is the point here
                warnings.filterwarnings("ignore", message="Already found a `peft_config`")
                pipe.load_lora_weights(look_ref, adapter_name=name)
        except (OSError, ValueError) as exc:
            raise _unavailable(f"LoRA look {name!r}", look_ref, "RESTYLE_LORA / --lora", exc) from exc
    if len(looks) == 1:
        pipe.fuse_lora(lora_scale=lora_scale, adapter_names=list(looks))
    elif looks:
        pipe.set_adapters([next(iter(looks))], adapter_weights=[lora_scale])
    source, explicit = ip_adapter_source(ref, ip_adapter)
    if source is not None:
        load_ip_adapter(pipe, source, explicit=explicit)
    return prepare_inpaint(pipe, device=dev, dtype=dt, compile=compile, looks=tuple(looks),
                           switchable=len(looks) > 1, look_scale=lora_scale)


def prepare_inpaint(pipe, *, device: str | torch.device | None = None, dtype=None, compile: bool | None = None,
                    looks: tuple[str, ...] = (), switchable: bool = False, look_scale: float = 1.0):
    """A diffusers inpainting pipeline → ``model.inpaint.Inpainter``, with the CUDA fast path applied."""
    import torch

    from model.inpaint import Inpainter

    dev = torch.device(device) if device is not None else pick_device()
    pipe.to(device=dev, dtype=pick_dtype(dev, dtype))
    # channels_last: cuDNN's fp16 convolutions want it; on the CPU oneDNN is ~10% (UNet) to ~20% (VAE) faster too
    pipe.unet.to(memory_format=torch.channels_last)
    pipe.vae.to(memory_format=torch.channels_last)
    if dev.type == "cuda":
        pipe.vae.enable_slicing()
        if os.environ.get("RESTYLE_VAE_TILING") == "1":
            pipe.vae.enable_tiling()
    inpainter = Inpainter(pipe, looks=looks, switchable=switchable, look_scale=look_scale)
    if compile if compile is not None else os.environ.get("RESTYLE_COMPILE") == "1":
        # dynamic: crop-to-mask generates at many sizes and batch sizes; one graph serves them all
        # in place (nn.Module.compile): the UNet stays a UNet2DConditionModel, so diffusers still finds its LoRA
        # adapters (a torch.compile wrapper hides them from set_adapters)
        pipe.unet.compile(dynamic=True)
        warm_up(inpainter)
    return inpainter


def load_upscale(ref: str = DEFAULT_UPSCALE, *, device: str | None = None, dtype=None):
    """A diffusers ``StableDiffusionUpscalePipeline`` checkpoint (the x4 upscaler) → ``model.upscale.Upscaler``."""
    from diffusers import StableDiffusionUpscalePipeline

    pipe, dev, dt = _pipeline(StableDiffusionUpscalePipeline, ref, "upscaling", "RESTYLE_UPSCALE_MODEL / --upscale",
                              device, dtype)
    return prepare_upscale(pipe, device=dev, dtype=dt)


def prepare_upscale(pipe, *, device: str | torch.device | None = None, dtype=None):
    """A diffusers x4 upscaling pipeline → ``model.upscale.Upscaler``, with the settings ``prepare_inpaint`` uses."""
    import torch

    from model.upscale import Upscaler

    dev = torch.device(device) if device is not None else pick_device()
    pipe.to(device=dev, dtype=pick_dtype(dev, dtype))
    pipe.unet.to(memory_format=torch.channels_last)
    pipe.vae.to(memory_format=torch.channels_last)
    if dev.type == "cuda" and os.environ.get("RESTYLE_VAE_TILING") == "1":
        pipe.vae.enable_tiling()  # the decode is at 4x the input: 2048x2048 for a 512x512 region
    return Upscaler(pipe)


def warm_up(inpainter, num_images: int = 4) -> None:
    """Small generations so compilation happens at load time, not on a request.

    Two calls with different sizes and batch sizes: the second makes the compiled graph dynamic in both.
    """
    import numpy as np
    from PIL import Image

    side = inpainter.native
    for (w, h), n in (((side, side), num_images), ((side, side + side // 2), max(1, num_images // 2))):
        image = Image.new("RGB", (w, h), (128, 128, 128))
        mask = np.zeros((h, w), dtype=bool)
        mask[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = True
        inpainter(image, mask, "warm-up", seeds=list(range(n)), steps=2, padding=0, feather=0, crop=False)
    if inpainter.references:  # a reference image runs the adapter's attention too: its graph compiles here
        inpainter(image, mask, "warm-up", seeds=[0], steps=2, padding=0, feather=0, crop=False, reference=image)
    if inpainter.switchable:  # each look (and none) compiles its own graph: here, not on a request
        for look in (*inpainter.looks[1:], NO_LOOK):
            inpainter(image, mask, "warm-up", seeds=[0], steps=2, padding=0, feather=0, crop=False, look=look)
