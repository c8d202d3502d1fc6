"""Tiny, seeded, random checkpoints in Hugging Face layout — for tests, examples and CPU benchmarks.

``python -m model.tiny OUTDIR`` writes

* ``OUTDIR/clipseg`` — ``CLIPSegForImageSegmentation`` + ``CLIPSegProcessor`` (ViT image processor and a real CLIP
  BPE tokenizer), loadable exactly like ``CIDAS/clipseg-rd64-refined``;
* ``OUTDIR/inpaint`` — a diffusers ``StableDiffusionInpaintPipeline`` folder (UNet with 9 input channels, VAE, CLIP
  text encoder + tokenizer, DDIM scheduler), loadable like an SD inpainting Hub id through
  ``AutoPipelineForInpainting.from_pretrained``;
* ``OUTDIR/upscale`` — a diffusers ``StableDiffusionUpscalePipeline`` folder (UNet with 7 input channels and noise
  level class embeddings, VAE with factor 4, CLIP text encoder + tokenizer, DDPM low-res and DDIM schedulers),
  loadable like ``stabilityai/stable-diffusion-x4-upscaler``;
* ``OUTDIR/inpaint/ip_adapter`` — a tiny IP-Adapter (``ip-adapter.safetensors``: ``image_proj`` + ``ip_adapter``
  keys, as diffusers' own tests build one) and its ``image_encoder/`` (``CLIPVisionModelWithProjection``), random
  and seeded: ``model.loading.load_inpaint`` picks it up, so swatch requests (``reference``) run offline too;
* ``OUTDIR/looks/studio`` and ``OUTDIR/looks/resort`` — two brand looks: UNet LoRA adapters (random, seeded) in the
  file layout ``model.train.lora_inpaint`` writes, for ``RESTYLE_LORA="studio=OUTDIR/looks/studio,resort=…"``.

The weights are random (a fixed seed), so the pixels mean nothing; the shapes, file layout, tokenizer and code paths
are the real ones.  The tokenizer's vocabulary covers the fashion words restyle sends, so ordinary words become
real tokens rather than ``<|endoftext|>``.

One exception, so that offline flows can find a garment at all: the tiny CLIPSeg is fitted for a few
seconds (seeded, on the CPU, all of its tiny weights) to ``synthetic_photo`` images — a smooth gradient with one darker rectangle, the
"garment".  Garment words (``GARMENT_WORDS``) learn the rectangle, the protected regions (face, hands, hair) learn
nothing.  It knows nothing about real clothes: on a real photo its masks are arbitrary.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

#: Words the tiny BPE vocabulary builds whole-word merges for (everything else splits into characters).
WORDS = """
a an the of and with in on to for photo picture person model wearing woman man fashion photography detailed
fabric texture high quality studio lighting catalog product shot skirt dress jacket coat jeans pants shorts
t-shirt shirt blouse top sweater hoodie cardigan blazer vest suit jumpsuit shoes boots sneakers heels hat scarf
bag belt tie leggings face hands hair skin background red blue green yellow black white pink purple orange brown
grey gray beige navy pastel gold silver cream floral striped plaid checked polka dot leopard print denim leather
silk satin velvet linen cotton wool lace sequined knit suede maxi midi mini long short cropped fitted loose
oversized pleated wrap vintage elegant casual formal sks blurry lowres bad anatomy deformed watermark text
""".split()

GARMENT_WORDS = ["skirt", "dress", "pants", "jeans", "top", "jacket", "shirt", "coat", "t-shirt", "sweater",
                 "shorts", "blouse", "hoodie", "suit", "jumpsuit", "cardigan", "blazer", "vest", "leggings"]
PROTECTED_WORDS = ["face", "hands", "hair"]

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte → printable-unicode table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def write_clip_tokenizer_files(outdir: Path, words: list[str] = WORDS) -> int:
    """Write ``vocab.json`` + ``merges.txt`` in CLIP's format; return the vocabulary size."""
    symbols = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for s in symbols + [s + "</w>" for s in symbols]:
        vocab.setdefault(s, len(vocab))
    merges: list[str] = []
    for word in words:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        cur = pieces[0]
        for nxt in pieces[1:]:
            rule = f"{cur} {nxt}"
            if rule not in merges:
                merges.append(rule)
            cur = cur + nxt
            vocab.setdefault(cur, len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab.setdefault(special, len(vocab))
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (outdir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return len(vocab)


def _tokenizer(tmp: Path, max_length: int = 77):
    from transformers import CLIPTokenizer

    write_clip_tokenizer_files(tmp)
    # from_pretrained on the folder reads vocab.json + merges.txt the same way in transformers 4.x and 5.x
    return CLIPTokenizer.from_pretrained(str(tmp), pad_token="<|endoftext|>", model_max_length=max_length)


def synthetic_photo(width: int, height: int, box: tuple[int, int, int, int] | None = None, seed: int = 0):
    """A smooth gradient 'photo' with an optional darker rectangle ``box`` = (x0, y0, x1, y1): the garment."""
    import numpy as np
    from PIL import Image

    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([xx / width * 200 + 30, yy / height * 180 + 40, (xx + yy) / (width + height) * 220 + 20], -1)
    if box is not None:
        x0, y0, x1, y1 = box
        img[y0:y1, x0:x1] *= 0.45
    img += np.random.RandomState(seed).normal(0, 2, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def _fit_clipseg(model, processor, seed: int, steps: int = 1000) -> None:
    """A few seconds of seeded decoder fitting on synthetic photos (see the module docstring).

    On one thread: the float reductions then run in one order, so every machine gets the same weights whatever its
    core count (with 2 threads they differed from 1 thread's after 500 steps), and the tiny model is no slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _fit_steps(model, processor, seed, steps)
    finally:
        torch.set_num_threads(threads)


def _fit_steps(model, processor, seed: int, steps: int) -> None:
    import numpy as np

    rng = np.random.RandomState(seed)
    torch.manual_seed(seed)
    words = GARMENT_WORDS + PROTECTED_WORDS
    tok = processor.tokenizer(words, padding=True, return_tensors="pt")
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    # the rate decays to zero: the last steps settle instead of jumping around a minimum, so the fitted model does
    # not depend on where float rounding (which differs between CPUs) left the last few of its noisy steps
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    side = 64
    model.train()
    for _ in range(steps):
        images, targets, idx = [], [], []
        for _ in range(8):
            w, h = rng.randint(24, 56), rng.randint(24, 56)
            x0, y0 = rng.randint(0, side - w), rng.randint(0, side - h)
            has_box = rng.rand() > 0.25
            box = (x0, y0, x0 + w, y0 + h) if has_box else None
            images.append(synthetic_photo(side, side, box, seed=int(rng.randint(1 << 30))))
            # half the samples teach the protected words to stay empty, half teach garments the rectangle
            k = int(rng.randint(len(GARMENT_WORDS))) if rng.rand() < 0.5 else len(GARMENT_WORDS) + int(
                rng.randint(len(PROTECTED_WORDS)))
            target = np.zeros((side, side), np.float32)
            if has_box and words[k] in GARMENT_WORDS:
                target[y0:y0 + h, x0:x0 + w] = 1.0
            targets.append(target)
            idx.append(k)
        pixels = processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
        out = model(input_ids=tok["input_ids"][idx], attention_mask=tok["attention_mask"][idx], pixel_values=pixels)
        logits = out.logits.reshape(len(idx), side, side)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.from_numpy(np.stack(targets)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
    model.eval()


#: ``clipseg_model`` shapes: the tiny one ``build_clipseg`` fits and saves, and CIDAS/clipseg-rd64's (ViT-B/16 at 352,
#: text 49408 x 512, reduce_dim 64, extract_layers 3/6/9) that ``model.bench`` times.
CLIPSEG_SHAPES = ("tiny", "rd64")


def clipseg_model(tokenizer, shape: str = "tiny", seed: int = 0):
    """A CLIPSeg model with random weights (seeded) and its processor: ``(CLIPSegForImageSegmentation,
    CLIPSegProcessor)`` with ``tokenizer`` as the text side.  The one builder of in-memory CLIPSegs: ``build_clipseg``
    fits and saves the ``tiny`` one, ``model.bench`` times both shapes."""
    from transformers import (
        CLIPSegConfig,
        CLIPSegForImageSegmentation,
        CLIPSegProcessor,
        CLIPSegTextConfig,
        CLIPSegVisionConfig,
        ViTImageProcessor,
    )

    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id}
    if shape == "tiny":
        text = CLIPSegTextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                 num_attention_heads=4, max_position_embeddings=77, **ids)
        vision = CLIPSegVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=3, num_attention_heads=4,
                                     image_size=64, patch_size=8)
        config = CLIPSegConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=32,
                               extract_layers=[1, 2], reduce_dim=16, decoder_num_attention_heads=4,
                               decoder_intermediate_size=32)
    elif shape == "rd64":
        config = CLIPSegConfig()
        config.vision_config.image_size = 352
        for k, v in ids.items():
            setattr(config.text_config, k, v)
    else:
        raise ValueError(f"`shape` must be one of {', '.join(CLIPSEG_SHAPES)}, got {shape!r}")
    side = config.vision_config.image_size
    torch.manual_seed(seed)
    model = CLIPSegForImageSegmentation(config).eval()
    image_processor = ViTImageProcessor(do_resize=True, size={"height": side, "width": side}, resample=2,
                                        do_normalize=True, image_mean=CLIP_MEAN, image_std=CLIP_STD)
    return model, CLIPSegProcessor(image_processor=image_processor, tokenizer=tokenizer)


def build_clipseg(outdir: Path, seed: int = 0) -> Path:
    outdir = Path(outdir)
    model, processor = clipseg_model(_tokenizer(outdir / "_tok"), "tiny", seed)
    _fit_clipseg(model, processor, seed)
    model.save_pretrained(outdir)
    processor.save_pretrained(outdir)
    return outdir


def build_inpaint(outdir: Path, seed: int = 0) -> Path:
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    outdir = Path(outdir)
    tok = _tokenizer(outdir / "_tok")
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=1, sample_size=32, in_channels=9,
                                out_channels=4, cross_attention_dim=32, attention_head_dim=8,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), norm_num_groups=8)
    torch.manual_seed(seed)
    vae = AutoencoderKL(block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=8, sample_size=64)
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=37,
                                                num_hidden_layers=2, num_attention_heads=4,
                                                max_position_embeddings=77, bos_token_id=tok.bos_token_id,
                                                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionInpaintPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tok, unet=unet,
                                          scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                          requires_safety_checker=False)
    pipe.save_pretrained(outdir, safe_serialization=True)
    return outdir


#: The x4 upscaler's UNet layout (its public config): the ``small`` and ``x4`` shapes differ only in widths.
X4_UNET_LAYOUT = {"sample_size": 128, "in_channels": 7, "out_channels": 4, "num_class_embeds": 1000,
                  "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                       "CrossAttnDownBlock2D"),
                  "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                  "use_linear_projection": True, "only_cross_attention": (True, True, True, False)}


def upscale_pipeline(tokenizer, shape: str = "tiny", seed: int = 0):
    """A ``StableDiffusionUpscalePipeline`` with random weights (seeded): ``tiny`` (as diffusers' own tests,
    smaller), ``small`` (the x4's layout scaled down for a 2-core CPU) or ``x4`` — the architecture of
    stabilityai/stable-diffusion-x4-upscaler's public config (UNet (256, 512, 512, 1024), cross-attention 1024,
    attention_head_dim 8, 7 input channels, 1000 noise-level classes; VAE (128, 256, 512), latent 4, factor 4; the
    text encoder at its width but 2 layers: it runs once per call).  ``build_upscale`` saves the tiny one,
    ``model.bench`` times all three."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        DDPMScheduler,
        StableDiffusionUpscalePipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id}
    torch.manual_seed(seed)
    if shape == "tiny":
        unet = UNet2DConditionModel(block_out_channels=(16, 16, 32), layers_per_block=1, sample_size=32, in_channels=7,
                                    out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D",
                                                                      "CrossAttnDownBlock2D"),
                                    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                                    cross_attention_dim=32, attention_head_dim=8, use_linear_projection=True,
                                    only_cross_attention=(True, True, False), num_class_embeds=100, norm_num_groups=8)
        vae = AutoencoderKL(block_out_channels=(16, 16, 32), in_channels=3, out_channels=3, latent_channels=4,
                            down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                            norm_num_groups=8, scaling_factor=0.08333, mid_block_add_attention=False)
        text = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                              num_attention_heads=4, max_position_embeddings=77, **ids)
    elif shape == "small":  # the x4's layout scaled down for a 2-core CPU (model.bench's default mode)
        unet = UNet2DConditionModel(**X4_UNET_LAYOUT, layers_per_block=1, block_out_channels=(16, 32, 32, 32),
                                    norm_num_groups=8, cross_attention_dim=32, attention_head_dim=4)
        vae = AutoencoderKL(block_out_channels=(8, 16, 16), in_channels=3, out_channels=3, latent_channels=4,
                            layers_per_block=1, norm_num_groups=8, down_block_types=("DownEncoderBlock2D",) * 3,
                            up_block_types=("UpDecoderBlock2D",) * 3, scaling_factor=0.08333)
        text = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                              num_attention_heads=4, max_position_embeddings=77, **ids)
    elif shape == "x4":
        unet = UNet2DConditionModel(**X4_UNET_LAYOUT, layers_per_block=2, block_out_channels=(256, 512, 512, 1024),
                                    cross_attention_dim=1024, attention_head_dim=8)
        vae = AutoencoderKL(block_out_channels=(128, 256, 512), in_channels=3, out_channels=3, latent_channels=4,
                            layers_per_block=2, down_block_types=("DownEncoderBlock2D",) * 3,
                            up_block_types=("UpDecoderBlock2D",) * 3, scaling_factor=0.08333)
        text = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=1024, intermediate_size=4096,
                              num_hidden_layers=2, num_attention_heads=16, max_position_embeddings=77,
                              hidden_act="gelu", projection_dim=512, **ids)
    else:
        raise ValueError(f"`shape` must be tiny, small or x4, got {shape!r}")
    text_encoder = CLIPTextModel(text)
    low_res_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.0001,
                                      beta_end=0.02)
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.0001,
                              beta_end=0.02, prediction_type="v_prediction", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionUpscalePipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                          low_res_scheduler=low_res_scheduler, scheduler=scheduler,
                                          safety_checker=None, feature_extractor=None, watermarker=None,
                                          max_noise_level=350)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_upscale(outdir: Path, seed: int = 0) -> Path:
    outdir = Path(outdir)
    upscale_pipeline(_tokenizer(outdir / "_tok"), "tiny", seed).save_pretrained(outdir, safe_serialization=True)
    return outdir


#: Where a checkpoint folder keeps its own IP-Adapter (``model.loading`` looks there), and the weights file's name.
IP_ADAPTER_DIR, IP_ADAPTER_WEIGHTS = "ip_adapter", "ip-adapter.safetensors"


def build_ip_adapter(inpaint_dir: Path, outdir: Path, seed: int) -> Path:
    """A random IP-Adapter for the tiny UNet plus a tiny CLIP image encoder, in the layout ``load_ip_adapter`` reads
    (``outdir/ip-adapter.safetensors`` with ``image_proj.*`` and ``ip_adapter.*`` keys, ``outdir/image_encoder/``).

    The state dict mirrors diffusers' ``create_ip_adapter_state_dict`` (tests/models/unets/
    test_models_unet_2d_condition.py): ``to_k_ip``/``to_v_ip`` for each cross-attention processor, numbered as the
    original IP-Adapter numbers them (1, 3, 5 …), and an ``ImageProjection`` to four extra text tokens.
    """
    from diffusers import UNet2DConditionModel
    from diffusers.models.attention_processor import IPAdapterAttnProcessor
    from diffusers.models.embeddings import ImageProjection
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    outdir = Path(outdir)
    config = UNet2DConditionModel.load_config(inpaint_dir, subfolder="unet")
    channels, cross_dim = config["block_out_channels"], config["cross_attention_dim"]
    unet = UNet2DConditionModel.from_config(config)
    embed_dim = 32
    torch.manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    key_id = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):  # self-attention: no image tokens
            continue
        if name.startswith("mid_block"):
            hidden = channels[-1]
        elif name.startswith("up_blocks"):
            hidden = list(reversed(channels))[int(name[len("up_blocks.")])]
        else:
            hidden = channels[int(name[len("down_blocks.")])]
        sd = IPAdapterAttnProcessor(hidden_size=hidden, cross_attention_dim=cross_dim, scale=1.0).state_dict()
        tensors[f"ip_adapter.{key_id}.to_k_ip.weight"] = sd["to_k_ip.0.weight"]
        tensors[f"ip_adapter.{key_id}.to_v_ip.weight"] = sd["to_v_ip.0.weight"]
        key_id += 2
    sd = ImageProjection(cross_attention_dim=cross_dim, image_embed_dim=embed_dim, num_image_text_embeds=4).state_dict()
    for ours, theirs in (("proj.weight", "image_embeds.weight"), ("proj.bias", "image_embeds.bias"),
                         ("norm.weight", "norm.weight"), ("norm.bias", "norm.bias")):
        tensors[f"image_proj.{ours}"] = sd[theirs]
    outdir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(outdir / IP_ADAPTER_WEIGHTS))
    torch.manual_seed(seed)
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, intermediate_size=37, projection_dim=embed_dim, num_hidden_layers=2, num_attention_heads=4,
        image_size=32, patch_size=8))
    encoder.save_pretrained(outdir / "image_encoder", safe_serialization=True)
    return outdir


#: The tiny brand looks ``build_tiny`` writes under ``looks/``.
TINY_LOOKS = ("studio", "resort")


def build_look(inpaint_dir: Path, outdir: Path, seed: int, rank: int = 4) -> Path:
    """A random UNet LoRA adapter for the tiny pipeline, saved like ``model.train.lora_inpaint`` saves one."""
    from diffusers import StableDiffusionInpaintPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = UNet2DConditionModel.from_pretrained(inpaint_dir, subfolder="unet")
    torch.manual_seed(seed)
    # random A *and* B (init_lora_weights=False): unlike a fresh training adapter, it changes the pictures
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False,
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionInpaintPipeline.save_lora_weights(outdir, unet_lora_layers=layers, safe_serialization=True)
    return outdir


def build_tiny(outdir: str | Path, seed: int = 0) -> Path:
    """Write the three checkpoints under ``outdir`` (idempotent: an existing complete set is kept)."""
    import hashlib
    import shutil

    outdir = Path(outdir)
    done = outdir / ".complete"
    # the marker names this file's content and the seed: a changed recipe rebuilds, an unchanged one is reused
    stamp = hashlib.sha256(Path(__file__).read_bytes() + str(seed).encode()).hexdigest()[:16]
    if done.exists() and done.read_text().strip() == stamp:
        return outdir
    for name, build in (("clipseg", build_clipseg), ("inpaint", build_inpaint), ("upscale", build_upscale)):
        target = outdir / name
        if target.exists():
            shutil.rmtree(target)
        build(target, seed=seed)
        shutil.rmtree(target / "_tok", ignore_errors=True)
    build_ip_adapter(outdir / "inpaint", outdir / "inpaint" / IP_ADAPTER_DIR, seed=seed + 201)
    shutil.rmtree(outdir / "looks", ignore_errors=True)
    for i, name in enumerate(TINY_LOOKS):
        build_look(outdir / "inpaint", outdir / "looks" / name, seed=seed + 101 + i)
    done.write_text(stamp + "\n")
    return outdir


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m model.tiny", description=__doc__.splitlines()[0])
    ap.add_argument("outdir", help="folder to write clipseg/, inpaint/ and upscale/ into")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    out = build_tiny(args.outdir, seed=args.seed)
    print(f"tiny checkpoints in {out}/clipseg, {out}/inpaint (IP-Adapter in {out}/inpaint/{IP_ADAPTER_DIR}) and "
          f"{out}/upscale; looks in {out}/looks/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
