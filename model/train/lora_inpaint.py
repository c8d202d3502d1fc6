"""DreamBooth-style LoRA on a Stable Diffusion *inpainting* checkpoint (SD 1.x / 2.x, UNet with 9 input channels).

The recipe of diffusers' ``examples/dreambooth/train_dreambooth_lora.py`` with the inpainting input: peft LoRA
(``to_q/to_k/to_v/to_out.0``) added to the UNet with ``unet.add_adapter`` (and optionally to the text encoder),
noise-prediction MSE (v-prediction for v-models) on ``noisy latents ⊕ mask ⊕ masked-image latents``; masks come
from CLIPSeg (``--masks clipseg --mask-prompt skirt``) or are random boxes drawn anew every step.  Optional prior
preservation with class images.  The adapter is saved with ``StableDiffusionInpaintPipeline.save_lora_weights`` as
``OUT/pytorch_lora_weights.safetensors``, so ``model.loading.load_inpaint(base, lora=OUT)`` loads it; ``loss.json``
and ``loss.png`` go next to it.

    python -m model.train.lora_inpaint --data photos/ --base stable-diffusion-v1-5/stable-diffusion-inpainting \\
        --instance-prompt "a photo of sks skirt" --masks clipseg --mask-prompt skirt --out lora/

Also a SageMaker training script (``model/train/lora_inpaint.py``): ``--data``/``--out`` default to
``SM_CHANNEL_TRAIN``/``SM_MODEL_DIR``.  See docs/train.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

if not __package__:  # run as a script (SageMaker's sagemaker_program): make `import model` work
    _ROOT = str(Path(__file__).resolve().parents[2])
    if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
        sys.path[0] = _ROOT  # not model/train/ itself: its module names would shadow top-level ones
    elif _ROOT not in sys.path:
        sys.path.insert(0, _ROOT)

from model.train import common  # noqa: E402
from model.train.common import DataError, log  # noqa: E402

UNET_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
MAX_GRAD_NORM = 1.0
#: Random boxes cover this fraction range of each side of the training square.
BOX_RANGE = (0.25, 0.75)


# --- CLI --------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from model.loading import DEFAULT_CLIPSEG, DEFAULT_INPAINT

    p = argparse.ArgumentParser(prog="python -m model.train.lora_inpaint", allow_abbrev=False,
                                description=__doc__.splitlines()[0],
                                epilog="Hyperparameter names may use _ or -. See docs/train.md.")
    p.add_argument("--data", default=common.env("SM_CHANNEL_TRAIN"),
                   help="folder of instance photos, top level only (default: $SM_CHANNEL_TRAIN)")
    p.add_argument("--base", default=common.env("SM_CHANNEL_BASE") or DEFAULT_INPAINT,
                   help="SD inpainting checkpoint: Hub id or folder (default: $SM_CHANNEL_BASE or %(default)s)")
    p.add_argument("--instance-prompt", required=True, help='e.g. "a photo of sks skirt"')
    p.add_argument("--out", default=common.env("SM_MODEL_DIR"),
                   help="output folder for the adapter, loss.json, loss.png (default: $SM_MODEL_DIR)")
    p.add_argument("--masks", choices=["boxes", "clipseg"], default="boxes",
                   help="inpainting masks: random boxes every step, or CLIPSeg's mask of --mask-prompt "
                        "(default: %(default)s)")
    p.add_argument("--clipseg", default=common.env("SM_CHANNEL_CLIPSEG") or DEFAULT_CLIPSEG,
                   help="CLIPSeg checkpoint for --masks clipseg (default: $SM_CHANNEL_CLIPSEG or %(default)s)")
    p.add_argument("--mask-prompt", help="what CLIPSeg segments with --masks clipseg, e.g. skirt")
    common.add_flag(p, "--prior-preservation", help="add the class-image prior loss (needs --class-prompt)")
    p.add_argument("--class-data", default=common.env("SM_CHANNEL_CLASS"),
                   help="folder of class images (default: $SM_CHANNEL_CLASS, else DATA/class/)")
    p.add_argument("--class-prompt", help='e.g. "a photo of a skirt"')
    p.add_argument("--prior-loss-weight", type=common.finite_float, default=1.0, help="(default: %(default)s)")
    common.add_flag(p, "--train-text-encoder", help="also put LoRA on the CLIP text encoder")
    p.add_argument("--rank", type=int, default=4, help="LoRA rank, also its alpha (default: %(default)s)")
    p.add_argument("--steps", type=int, default=500, help="optimizer steps (default: %(default)s)")
    p.add_argument("--lr", type=common.finite_float, default=1e-4, help="AdamW learning rate (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=1,
                   help="instance images per step; prior preservation adds as many class images (default: 1)")
    p.add_argument("--resolution", type=int, default=None,
                   help="training square in pixels (default: the UNet's native size, 512 for SD 1.5)")
    common.add_flag(p, "--random-flip", help="flip image and mask horizontally at random")
    p.add_argument("--mixed-precision", choices=["auto", "no", "fp16", "bf16"], default="auto",
                   help="auto: bf16 (or fp16) on a GPU, no on the CPU (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    return p


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    common.require(parser, args, "data", "SM_CHANNEL_TRAIN")
    common.require(parser, args, "out", "SM_MODEL_DIR")
    if not args.instance_prompt.strip():
        parser.error("--instance-prompt must not be blank (e.g. \"a photo of sks skirt\")")
    if args.masks == "clipseg" and not (args.mask_prompt or "").strip():
        parser.error("--masks clipseg needs --mask-prompt (e.g. --mask-prompt skirt)")
    if args.prior_preservation and not (args.class_prompt or "").strip():
        parser.error("--prior-preservation needs --class-prompt (e.g. \"a photo of a skirt\")")
    for name in ("rank", "steps", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.lr <= 0:  # (finite_float has refused NaN and inf already)
        parser.error("--lr must be > 0")
    if args.prior_loss_weight < 0:
        parser.error("--prior-loss-weight must be >= 0")
    if args.resolution is not None and args.resolution < 8:
        parser.error("--resolution must be >= 8")


def pick_mixed_precision(requested: str, cuda: bool) -> str:
    if requested == "auto":
        if not cuda:
            return "no"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if requested != "no" and not cuda:
        log.warning("--mixed-precision %s needs a GPU; training in fp32 on the CPU", requested)
        return "no"
    return requested


# --- data -------------------------------------------------------------------------------------------------------
@dataclass
class Example:
    name: str
    pixels: torch.Tensor  # 3xRxR in [-1, 1]
    mask: torch.Tensor | None  # 1xRxR in {0, 1}, or None: a random box every step


def fit(img: Image.Image, res: int, resample=Image.BICUBIC) -> Image.Image:
    """Resize the shorter side to ``res`` and centre-crop a ``res`` square (the DreamBooth preprocessing)."""
    w, h = img.size
    scale = res / min(w, h)
    nw, nh = max(res, round(w * scale)), max(res, round(h * scale))
    img = img.resize((nw, nh), resample)
    left, top = (nw - res) // 2, (nh - res) // 2
    return img.crop((left, top, left + res, top + res))


def to_pixels(img: Image.Image, res: int) -> torch.Tensor:
    arr = np.asarray(fit(img, res), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def to_mask(mask: np.ndarray, res: int) -> torch.Tensor:
    img = fit(Image.fromarray(mask.astype(np.uint8) * 255), res, Image.NEAREST)
    return torch.from_numpy((np.asarray(img) >= 128).astype(np.float32))[None]


def random_box(res: int, gen: torch.Generator) -> torch.Tensor:
    lo, hi = BOX_RANGE
    u = lo + (hi - lo) * torch.rand(2, generator=gen)
    bw, bh = max(1, int(res * u[0])), max(1, int(res * u[1]))
    x0 = int(torch.randint(0, res - bw + 1, (1,), generator=gen))
    y0 = int(torch.randint(0, res - bh + 1, (1,), generator=gen))
    mask = torch.zeros(1, res, res)
    mask[:, y0:y0 + bh, x0:x0 + bw] = 1.0
    return mask


def clipseg_masks(sets: list[list[tuple[str, Image.Image]]], ref: str, prompt: str,
                  device) -> list[list[np.ndarray | None]]:
    """CLIPSeg's mask of ``prompt`` on every photo of every set, as the bot computes it (threshold, holes filled,
    grown, protected regions — face, hands, hair — taken out).  None where nothing was found."""
    from model.loading import load_clipseg

    with common.loading("--clipseg", ref, "CLIPSeg", "SM_CHANNEL_CLIPSEG"):
        seg = load_clipseg(ref, device=str(device), dtype=torch.float32)
    out: list[list[np.ndarray | None]] = []
    for images in sets:
        masks: list[np.ndarray | None] = []
        for name, img in images:
            garment = seg(img, [prompt]).garments[0]
            if garment.found:
                masks.append(garment.mask)
            else:
                log.warning("no %r mask in %s: it trains with random boxes instead", prompt, name)
                masks.append(None)
        out.append(masks)
    return out


def make_examples(images, masks, res: int) -> list[Example]:
    return [Example(name, to_pixels(img, res), None if m is None else to_mask(m, res))
            for (name, img), m in zip(images, masks, strict=True)]


class Sampler:
    """Endless shuffled passes over the examples, ``batch`` at a time, with boxes and flips from one generator."""

    def __init__(self, examples: list[Example], batch: int, gen: torch.Generator, *, flip: bool) -> None:
        self.examples, self.batch, self.gen, self.flip = examples, batch, gen, flip
        self._order: list[int] = []

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor]:
        pixels, masks = [], []
        for _ in range(self.batch):
            if not self._order:
                self._order = torch.randperm(len(self.examples), generator=self.gen).tolist()
            ex = self.examples[self._order.pop()]
            res = ex.pixels.shape[-1]
            px, mask = ex.pixels, ex.mask if ex.mask is not None else random_box(res, self.gen)
            if self.flip and bool(torch.rand(1, generator=self.gen) < 0.5):
                px, mask = px.flip(-1), mask.flip(-1)
            pixels.append(px)
            masks.append(mask)
        return torch.stack(pixels), torch.stack(masks)


# --- training ---------------------------------------------------------------------------------------------------
def text_lora_unloadable() -> str | None:
    """Why ``pipe.load_lora_weights`` could not load a text-encoder LoRA here (transformers gates
    ``load_adapter`` on a minimum peft version), or None."""
    try:
        from transformers.integrations import peft as hf_peft
        from transformers.utils.peft_utils import check_peft_version

        check_peft_version(min_version=hf_peft.MIN_PEFT_VERSION)
    except (ImportError, AttributeError):
        return None
    except ValueError as exc:
        return str(exc)
    return None


def load_pipeline(ref: str, device):
    from diffusers import StableDiffusionInpaintPipeline

    from model.loading import load_inpaint

    with common.loading("--base", ref, "Stable Diffusion inpainting", "SM_CHANNEL_BASE"):
        pipe = load_inpaint(ref, device=str(device), dtype=torch.float32, compile=False, ip_adapter="none").pipe
    if not isinstance(pipe, StableDiffusionInpaintPipeline):
        raise DataError(f"{ref} loads as {type(pipe).__name__}; this trainer handles SD 1.x/2.x inpainting "
                        f"checkpoints (StableDiffusionInpaintPipeline)")
    if pipe.unet.config.in_channels != 9:
        raise DataError(f"{ref} has a UNet with {pipe.unet.config.in_channels} input channels, not 9: "
                        f"it is not an inpainting checkpoint")
    return pipe


def read_photos(folder, what: str) -> list[tuple[str, Image.Image]]:
    images, skips = common.read_image_folder(folder)
    skips.report()
    if not images:
        raise DataError(f"no usable {what} images in {folder} ({skips.summary()})")
    log.info("%s: %d images from %s", what, len(images), folder)
    return images


def train(args: argparse.Namespace) -> dict:
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from diffusers import DDPMScheduler, StableDiffusionInpaintPipeline
    from diffusers.training_utils import cast_training_params
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    from model.loading import pick_device

    t_start = time.perf_counter()
    out = Path(args.out)
    instance = read_photos(args.data, "instance")
    classes = None
    if args.prior_preservation:
        class_dir = args.class_data or (Path(args.data) / "class")
        if not Path(class_dir).is_dir():
            raise DataError(f"--prior-preservation needs class images: pass --class-data DIR "
                            f"(or set SM_CHANNEL_CLASS, or put them in {Path(args.data) / 'class'})")
        classes = read_photos(class_dir, "class")
    common.check_out(out)  # before the (slow) model loading and training, not after

    cpu = pick_device().type != "cuda"
    mixed = pick_mixed_precision(args.mixed_precision, not cpu)
    accelerator = Accelerator(mixed_precision=mixed, cpu=cpu)
    set_seed(args.seed)
    device = accelerator.device
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)

    pipe = load_pipeline(args.base, device)
    unet, vae, text_encoder, tokenizer = pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    del pipe  # frees what training does not use (safety checker, feature extractor)
    vae_scale = 2 ** (len(vae.config.block_out_channels) - 1)
    multiple = vae_scale * 2 ** (len(unet.config.block_out_channels) - 1)
    res = args.resolution or int(unet.config.sample_size) * vae_scale
    if res % multiple:
        raise DataError(f"--resolution {res} must be a multiple of {multiple} for this checkpoint")

    # masks and tensors, once
    masks: list = [None] * len(instance)
    class_masks: list = [None] * len(classes or [])
    if args.masks == "clipseg":
        masks, class_masks = clipseg_masks([instance, classes or []], args.clipseg, args.mask_prompt, device)
    gen = torch.Generator().manual_seed(args.seed)
    sample = Sampler(make_examples(instance, masks, res), args.batch_size, gen, flip=args.random_flip)
    sample_class = (Sampler(make_examples(classes, class_masks, res), args.batch_size, gen, flip=args.random_flip)
                    if classes else None)

    # models: everything frozen, LoRA trainable (kept in fp32 under mixed precision, as diffusers does)
    for m in (unet, vae, text_encoder):
        m.requires_grad_(False)
    if weight_dtype != torch.float32:  # frozen weights in half precision; LoRA stays fp32 (below)
        unet.to(dtype=weight_dtype)
        text_encoder.to(dtype=weight_dtype)
    vae.to(device)  # stays fp32 (loaded so): the SD VAE overflows in fp16; it only encodes here
    unet.add_adapter(LoraConfig(r=args.rank, lora_alpha=args.rank, init_lora_weights="gaussian",
                                target_modules=UNET_TARGETS))
    trained = [unet]
    if args.train_text_encoder:
        # peft directly (what transformers' add_adapter does, minus its peft version gate)
        text_encoder = inject_adapter_in_model(
            LoraConfig(r=args.rank, lora_alpha=args.rank, init_lora_weights="gaussian", target_modules=TEXT_TARGETS),
            text_encoder)
        trained.append(text_encoder)
        problem = text_lora_unloadable()
        if problem:
            log.warning("the text-encoder LoRA will be saved, but this environment cannot load it back "
                        "(diffusers loads it through transformers: %s)", problem)
    cast_training_params(trained, dtype=torch.float32)
    params = [p for m in trained for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
    if args.train_text_encoder:
        unet, text_encoder, optimizer = accelerator.prepare(unet, text_encoder, optimizer)
    else:
        unet, optimizer = accelerator.prepare(unet, optimizer)

    def tokens(prompt: str) -> torch.Tensor:
        return tokenizer(prompt, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                         return_tensors="pt").input_ids.to(device)

    ids = {"instance": tokens(args.instance_prompt)}
    if classes:
        ids["class"] = tokens(args.class_prompt)
    cached = {}
    if not args.train_text_encoder:
        with torch.no_grad():
            cached = {k: text_encoder(v)[0] for k, v in ids.items()}

    def embed(kind: str, n: int) -> torch.Tensor:
        emb = cached[kind] if kind in cached else text_encoder(ids[kind])[0]
        return emb.expand(n, -1, -1)

    scaling = vae.config.scaling_factor
    shift = getattr(vae.config, "shift_factor", None) or 0.0

    def encode(px: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return (vae.encode(px).latent_dist.sample() - shift) * scaling

    log.info("training LoRA rank %d on %s: %d steps, batch %d, %dpx, lr %g, masks %s, mixed precision %s, %s",
             args.rank, args.base, args.steps, args.batch_size, res, args.lr, args.masks, mixed, device)
    losses, instance_losses, prior_losses = [], [], []
    unet.train()
    if args.train_text_encoder:
        text_encoder.train()
    bar = common.progress(args.steps, "lora")
    for _ in range(args.steps):
        pixels, mask = sample()
        n_inst = pixels.shape[0]
        if sample_class is not None:
            cp, cm = sample_class()
            pixels, mask = torch.cat([pixels, cp]), torch.cat([mask, cm])
        pixels, mask = pixels.to(device), mask.to(device)
        masked = pixels * (mask < 0.5)
        latents_both = encode(torch.cat([pixels, masked]))
        latents, masked_latents = latents_both.chunk(2)
        mask_latents = F.interpolate(mask, size=latents.shape[-2:])
        noise = torch.randn_like(latents)
        t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],), device=device)
        noisy = noise_scheduler.add_noise(latents, noise, t)
        model_in = torch.cat([noisy, mask_latents, masked_latents], dim=1).to(weight_dtype)
        with accelerator.autocast():
            cond = embed("instance", n_inst)
            if sample_class is not None:
                cond = torch.cat([cond, embed("class", pixels.shape[0] - n_inst)])
            pred = unet(model_in, t, cond.to(weight_dtype)).sample
        if noise_scheduler.config.prediction_type == "v_prediction":
            target = noise_scheduler.get_velocity(latents, noise, t)
        else:
            target = noise
        if sample_class is not None:
            p_inst, p_cls = pred.float().split([n_inst, pred.shape[0] - n_inst])
            t_inst, t_cls = target.float().split([n_inst, target.shape[0] - n_inst])
            inst_loss = F.mse_loss(p_inst, t_inst)
            prior_loss = F.mse_loss(p_cls, t_cls)
            loss = inst_loss + args.prior_loss_weight * prior_loss
            instance_losses.append(inst_loss.item())
            prior_losses.append(prior_loss.item())
        else:
            loss = F.mse_loss(pred.float(), target.float())
        accelerator.backward(loss)
        if accelerator.sync_gradients:
            accelerator.clip_grad_norm_(params, MAX_GRAD_NORM)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        value = loss.item()
        if not np.isfinite(value):
            bar.close()
            raise FloatingPointError(f"the loss became {value} at step {len(losses) + 1}; lower --lr "
                                     f"or use --mixed-precision bf16/no")
        losses.append(value)
        bar.update(1)
        bar.set_postfix(loss=f"{value:.4f}", refresh=False)
    bar.close()

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        unet_layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(accelerator.unwrap_model(unet)))
        text_layers = None
        if args.train_text_encoder:
            text_layers = convert_state_dict_to_diffusers(
                get_peft_model_state_dict(accelerator.unwrap_model(text_encoder)))
        out.mkdir(parents=True, exist_ok=True)  # (checked writable up front; may have been removed since)
        StableDiffusionInpaintPipeline.save_lora_weights(out, unet_lora_layers=unet_layers,
                                                         text_encoder_lora_layers=text_layers,
                                                         safe_serialization=True)
        extra = {"instance_loss": instance_losses, "prior_loss": prior_losses} if prior_losses else None
        common.save_loss(out, losses, title=f"LoRA inpainting: {args.instance_prompt}", extra=extra)
        info = {
            "base": args.base, "instance_prompt": args.instance_prompt, "class_prompt": args.class_prompt,
            "prior_preservation": bool(classes), "train_text_encoder": args.train_text_encoder,
            "rank": args.rank, "steps": args.steps, "lr": args.lr, "batch_size": args.batch_size,
            "resolution": res, "masks": args.masks, "mask_prompt": args.mask_prompt,
            "mixed_precision": mixed, "seed": args.seed, "images": [name for name, _ in instance],
            "final_loss": losses[-1], "seconds": round(time.perf_counter() - t_start, 1),
        }
        (out / "restyle_lora.json").write_text(json.dumps(info, indent=1))
        log.info("saved the LoRA to %s (load it with load_inpaint(%r, lora=%r))", out, args.base, str(out))
    return {"losses": losses, "out": str(out), "resolution": res}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (or SageMaker's ``--key value`` hyperparameters); bad usage exits with code 2."""
    parser = build_parser()
    args = common.parse(parser, argv)
    check_args(parser, args)
    return args


def main(argv: list[str] | None = None) -> int:
    common.setup_logging()
    args = parse_args(argv)
    return common.run(lambda: train(args))


if __name__ == "__main__":
    logging.captureWarnings(True)
    raise SystemExit(main())
