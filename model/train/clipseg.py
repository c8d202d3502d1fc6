"""Fine-tune the CLIPSeg decoder on a COCO-format segmentation set, and measure per-category IoU / mIoU.

    python -m model.train.clipseg train --data fashionpedia/ --base CIDAS/clipseg-rd64-refined --out clipseg-ft/
    python -m model.train.clipseg eval  --data fashionpedia-val/ --model clipseg-ft/ [--threshold 0.4] [--json]

``train``: category names are the prompts; CLIP stays frozen (``model.clip.requires_grad_(False)``), only the
decoder learns, with BCE + Dice on the logits against the masks resized to the model's output size.  The vision
encoder runs once per image and its activations serve all of that image's prompts (as ``model.segment`` does at
inference).  The whole model and its processor are saved with ``save_pretrained``, so
``model.loading.load_clipseg(OUT)`` loads it; ``loss.json``/``loss.png`` go next to it.

``eval``: for every image and every category the sigmoid map (``Segmenter.probabilities``, upsampled to the image)
is thresholded (``p > threshold``) and compared with the ground truth; IoU per category is
Σ intersection / Σ union over the whole set.  Conventions (see ``iou``/``IoU``): a category whose union is empty
(absent from both prediction and ground truth everywhere) has IoU ``None`` and is left out of the mIoU.

Also a SageMaker training script (``model/train/clipseg.py``; without a sub-command it trains): ``--data``/``--out``
default to ``SM_CHANNEL_TRAIN``/``SM_MODEL_DIR``.  See docs/train.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from collections import defaultdict
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
from model.train.common import CocoDataset, CocoImage, DataError, log  # noqa: E402

COMMANDS = ("train", "eval")
DEFAULT_EPOCHS = 5


# --- IoU --------------------------------------------------------------------------------------------------------
def iou(pred: np.ndarray, gt: np.ndarray) -> float | None:
    """|pred ∧ gt| / |pred ∨ gt| for two boolean masks of the same shape.

    Empty vs empty (nothing predicted, nothing there) is ``None`` — undefined, "nothing to score" — rather than 1.0,
    so that it can neither inflate nor deflate a mean.  Something vs empty (either way) is 0.0.
    """
    inter, union = overlap(pred, gt)
    return inter / union if union else None


def overlap(pred: np.ndarray, gt: np.ndarray, what: str = "") -> tuple[int, int]:
    """(|pred ∧ gt|, |pred ∨ gt|) of two boolean masks of the same shape (``what`` prefixes the shape error)."""
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"{what}prediction is {pred.shape}, ground truth {gt.shape}: they must match")
    return int(np.logical_and(pred, gt).sum()), int(np.logical_or(pred, gt).sum())


class IoU:
    """Per-category IoU accumulated over a data set: Σ intersection / Σ union (the semantic-segmentation
    convention, so big and small images weigh by their pixels).  ``miou`` is the plain mean over the categories
    whose union is non-empty; a category absent from both prediction and ground truth on every image scored is
    ``None`` and excluded."""

    def __init__(self, categories: list[str] | None = None) -> None:
        self.intersection: dict[str, int] = defaultdict(int)
        self.union: dict[str, int] = defaultdict(int)
        self.gt_images: dict[str, int] = defaultdict(int)  # images where the category is in the ground truth
        self.scored: dict[str, int] = defaultdict(int)  # images where the category was scored
        for c in categories or []:
            self.scored[c] += 0

    def add(self, category: str, pred: np.ndarray, gt: np.ndarray) -> None:
        inter, union = overlap(pred, gt, f"{category}: ")
        self.intersection[category] += inter
        self.union[category] += union
        self.gt_images[category] += int(np.any(gt))
        self.scored[category] += 1

    def per_category(self) -> dict[str, float | None]:
        return {c: (self.intersection[c] / self.union[c] if self.union[c] else None) for c in self.scored}

    def miou(self) -> float | None:
        values = [v for v in self.per_category().values() if v is not None]
        return float(np.mean(values)) if values else None


# --- CLI --------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from model.loading import DEFAULT_CLIPSEG

    p = argparse.ArgumentParser(prog="python -m model.train.clipseg", allow_abbrev=False,
                                description=__doc__.splitlines()[0],
                                epilog="Without a command, `train` is assumed (SageMaker). See docs/train.md.")
    sub = p.add_subparsers(dest="command", required=True, metavar="{train,eval}")
    t = sub.add_parser("train", allow_abbrev=False, help="fine-tune the decoder (CLIP frozen)")
    t.add_argument("--data", default=common.env("SM_CHANNEL_TRAIN"),
                   help="COCO data set folder (default: $SM_CHANNEL_TRAIN)")
    t.add_argument("--annotations", help="COCO json (default: DATA/annotations.json, or the only .json in DATA)")
    t.add_argument("--base", default=common.env("SM_CHANNEL_BASE") or DEFAULT_CLIPSEG,
                   help="CLIPSeg checkpoint to start from: Hub id or folder (default: $SM_CHANNEL_BASE or "
                        "%(default)s)")
    t.add_argument("--out", default=common.env("SM_MODEL_DIR"),
                   help="output folder for the model, processor, loss.json, loss.png (default: $SM_MODEL_DIR)")
    length = t.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int, help=f"passes over the images (default: {DEFAULT_EPOCHS})")
    length.add_argument("--steps", type=int, help="optimizer steps instead of --epochs")
    t.add_argument("--lr", type=common.finite_float, default=1e-4, help="AdamW learning rate (default: %(default)s)")
    t.add_argument("--batch-size", type=int, default=8,
                   help="images per step; each brings all its categories as prompts (default: %(default)s)")
    t.add_argument("--dice-weight", type=common.finite_float, default=1.0,
                   help="loss = BCE + w * Dice (default: %(default)s)")
    t.add_argument("--negatives", type=int, default=0,
                   help="per image and epoch, this many categories absent from it trained to an empty mask "
                        "(default: %(default)s)")
    t.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (default: %(default)s)")
    t.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")

    e = sub.add_parser("eval", allow_abbrev=False, help="per-category IoU and mIoU on a COCO data set")
    e.add_argument("--data", required=True, help="COCO data set folder")
    e.add_argument("--annotations", help="COCO json (default: DATA/annotations.json, or the only .json in DATA)")
    e.add_argument("--model", required=True, help="CLIPSeg checkpoint: folder (e.g. a train --out) or Hub id")
    e.add_argument("--threshold", type=common.finite_float, default=0.4,
                   help="mask = probability > this (default: %(default)s)")
    common.add_flag(e, "--json", help="print the result as JSON")
    return p


def check_train_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    common.require(parser, args, "data", "SM_CHANNEL_TRAIN")
    common.require(parser, args, "out", "SM_MODEL_DIR")
    for name in ("epochs", "steps", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.lr <= 0 or args.dice_weight < 0 or args.negatives < 0 or args.workers < 0:
        parser.error("--lr must be > 0; --dice-weight, --negatives and --workers >= 0")


# --- data -------------------------------------------------------------------------------------------------------
def read_dataset(data: str, annotations: str | None) -> CocoDataset:
    ds = common.read_coco(data, annotations)
    ds.report()
    log.info("%s: %d usable images, %d categories", ds.annotation_file, len(ds.images), len(ds.prompts))
    return ds


class ImageSet(torch.utils.data.Dataset):
    """One item per image: its pixel values and (prompt, target) pairs at the model's input size."""

    def __init__(self, ds: CocoDataset, image_processor, *, negatives: int = 0, seed: int = 0) -> None:
        self.images = [im for im in ds.images if im.segments or negatives]
        self.prompts = ds.prompts
        self.image_processor = image_processor
        self.negatives = negatives
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.images)

    def targets(self, im: CocoImage, index: int) -> list[str]:
        prompts = list(im.segments)
        if self.negatives:
            absent = [p for p in self.prompts if p not in im.segments and p not in im.excluded]
            rng = random.Random(f"{self.seed}/{self.epoch}/{index}")
            prompts += rng.sample(absent, min(self.negatives, len(absent)))
        return prompts

    def __getitem__(self, index: int) -> dict:
        im = self.images[index]
        img = common.load_image(im.path, im.name)
        pixels = self.image_processor(images=img, return_tensors="pt")["pixel_values"][0]
        size = (pixels.shape[-1], pixels.shape[-2])
        prompts = self.targets(im, index)
        masks = [resize_mask(im.mask(p), size) for p in prompts]
        return {"pixel_values": pixels, "prompts": prompts, "masks": torch.stack(masks) if masks else None}


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """Bool HxW → float (h, w) in [0, 1] by area averaging (edge pixels become soft targets)."""
    img = Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.BOX)
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)


def collate(items: list[dict]) -> list[dict]:
    return [it for it in items if it["prompts"]]


# --- model pieces -----------------------------------------------------------------------------------------------
def forward(model, processor, batch: list[dict], device, text_cache: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (N, h, w) for every (image, prompt) of the batch, and the targets (N, h, w).  The frozen CLIP parts
    run without gradients: one vision pass per image, one text pass per distinct prompt (cached)."""
    pixels = torch.stack([b["pixel_values"] for b in batch]).to(device)
    counts = torch.tensor([len(b["prompts"]) for b in batch], device=device)
    prompts = [p for b in batch for p in b["prompts"]]
    with torch.no_grad():
        vision = model.clip.vision_model(pixel_values=pixels, output_hidden_states=True,
                                         interpolate_pos_encoding=True)
        acts = [vision.hidden_states[i + 1].repeat_interleave(counts, dim=0) for i in model.extract_layers]
        missing = [p for p in dict.fromkeys(prompts) if p not in text_cache]
        if missing:
            tok = processor.tokenizer(missing, padding=True, return_tensors="pt")
            emb = model.get_conditional_embeddings(batch_size=len(missing), input_ids=tok["input_ids"].to(device),
                                                   attention_mask=tok["attention_mask"].to(device))
            text_cache.update(zip(missing, emb, strict=True))
        cond = torch.stack([text_cache[p] for p in prompts])
    logits = model.decoder(acts, cond).logits
    logits = logits.reshape(len(prompts), *logits.shape[-2:])
    targets = torch.cat([b["masks"] for b in batch]).to(device)
    if targets.shape[-2:] != logits.shape[-2:]:
        targets = F.interpolate(targets[:, None], size=logits.shape[-2:], mode="area")[:, 0]
    return logits, targets


def bce_dice(logits: torch.Tensor, targets: torch.Tensor, dice_weight: float = 1.0) -> torch.Tensor:
    """Mean BCE over pixels + ``dice_weight`` × mean soft-Dice loss over masks (smoothing 1: an empty target is
    met by an empty prediction)."""
    logits, targets = logits.float(), targets.float()
    bce = F.binary_cross_entropy_with_logits(logits, targets)
    if not dice_weight:
        return bce
    probs = torch.sigmoid(logits).flatten(1)
    flat = targets.flatten(1)
    dice = 1.0 - (2.0 * (probs * flat).sum(1) + 1.0) / (probs.sum(1) + flat.sum(1) + 1.0)
    return bce + dice_weight * dice.mean()


# --- train ------------------------------------------------------------------------------------------------------
def train(args: argparse.Namespace) -> dict:
    from model.loading import load_clipseg, pick_device

    t_start = time.perf_counter()
    ds = read_dataset(args.data, args.annotations)
    n_samples = sum(len(im.segments) for im in ds.images)
    if not n_samples and not (args.negatives and ds.images):
        raise DataError(f"no usable training samples in {args.data}: no image has a valid annotation "
                        f"({ds.image_skips.summary()}; {ds.annotation_skips.summary()})")
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    common.check_out(args.out)  # before the model loading and training, not after
    device = pick_device()
    with common.loading("--base", args.base, "CLIPSeg", "SM_CHANNEL_BASE"):
        seg = load_clipseg(args.base, device=str(device), dtype=torch.float32)
    model, processor = seg.model, seg.processor
    dataset = ImageSet(ds, processor.image_processor, negatives=args.negatives, seed=args.seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True, collate_fn=collate,
                                         num_workers=args.workers,
                                         generator=torch.Generator().manual_seed(args.seed))
    per_epoch = len(loader)
    steps = args.steps or per_epoch * (args.epochs or DEFAULT_EPOCHS)

    model.clip.requires_grad_(False)
    model.clip.eval()
    model.decoder.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr)
    log.info("training the CLIPSeg decoder of %s (%d parameters, CLIP frozen) on %s: %d images, %d samples, "
             "%d steps (%d per epoch), batch %d, lr %g", args.base, sum(p.numel() for p in params), device,
             len(dataset), n_samples, steps, per_epoch, args.batch_size, args.lr)
    losses: list[float] = []
    text_cache: dict = {}
    bar = common.progress(steps, "clipseg")
    epoch = 0
    while len(losses) < steps:
        dataset.epoch = epoch
        for batch in loader:
            if not batch:
                continue
            logits, targets = forward(model, processor, batch, device, text_cache)
            loss = bce_dice(logits, targets, args.dice_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = loss.item()
            if not np.isfinite(value):
                bar.close()
                raise FloatingPointError(f"the loss became {value} at step {len(losses) + 1}; lower --lr")
            losses.append(value)
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4f}", epoch=epoch + 1, refresh=False)
            if len(losses) >= steps:
                break
        epoch += 1
    bar.close()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.save_pretrained(out)
    processor.save_pretrained(out)
    common.save_loss(out, losses, title=f"CLIPSeg decoder fine-tuning ({len(ds.prompts)} categories)")
    info = {
        "base": args.base, "prompts": ds.prompts, "images": len(dataset), "samples": n_samples,
        "steps": len(losses), "epochs": epoch, "lr": args.lr, "batch_size": args.batch_size,
        "dice_weight": args.dice_weight, "negatives": args.negatives, "seed": args.seed,
        "final_loss": losses[-1], "seconds": round(time.perf_counter() - t_start, 1),
        "skipped": {"images": ds.image_skips.to_json(), "annotations": ds.annotation_skips.to_json()},
    }
    (out / "restyle_clipseg.json").write_text(json.dumps(info, indent=1))
    log.info("saved the fine-tuned CLIPSeg to %s (load it with load_clipseg(%r))", out, str(out))
    return {"losses": losses, "out": str(out)}


# --- eval -------------------------------------------------------------------------------------------------------
def evaluate(segmenter, ds: CocoDataset, threshold: float = 0.4) -> dict:
    """IoU per category and mIoU of ``segmenter`` (a ``model.segment.Segmenter``) on ``ds``.  Every image is scored
    on every category except those with a bad annotation there (see ``common.read_coco``); a category absent from
    an image's annotations is ground-truth empty there, so annotations are assumed exhaustive."""
    meter = IoU(ds.prompts)
    bar = common.progress(len(ds.images), "eval")
    for im in ds.images:
        prompts = [p for p in ds.prompts if p not in im.excluded]
        if not prompts:
            bar.update(1)
            continue
        img = common.load_image(im.path, im.name)
        probs = segmenter.probabilities(img, prompts)
        full = F.interpolate(probs[None].float(), size=(im.height, im.width), mode="bilinear",
                             align_corners=False)[0].cpu().numpy()
        for k, prompt in enumerate(prompts):
            meter.add(prompt, full[k] > threshold, im.mask(prompt))
        bar.update(1)
    bar.close()
    per = meter.per_category()
    return {
        "threshold": threshold,
        "images": len(ds.images),
        "iou": per,
        "miou": meter.miou(),
        "categories_scored": sum(v is not None for v in per.values()),
        "pixels": {c: {"intersection": meter.intersection[c], "union": meter.union[c],
                       "gt_images": meter.gt_images[c], "images": meter.scored[c]} for c in per},
        "skipped": {"images": ds.image_skips.to_json(), "annotations": ds.annotation_skips.to_json()},
    }


def format_result(result: dict) -> str:
    width = max([len("category")] + [len(c) for c in result["iou"]])
    lines = [f"{'category':<{width}}  {'IoU':>7}  {'GT images':>9}"]
    for c, v in result["iou"].items():
        shown = f"{v:7.4f}" if v is not None else f"{'—':>7}"
        lines.append(f"{c:<{width}}  {shown}  {result['pixels'][c]['gt_images']:>9}")
    miou = result["miou"]
    lines.append(f"mIoU {miou:.4f} over {result['categories_scored']} categories" if miou is not None
                 else "mIoU — (no category was present in prediction or ground truth)")
    lines.append(f"threshold {result['threshold']}, {result['images']} images; — = absent from both prediction "
                 f"and ground truth, excluded from the mIoU")
    return "\n".join(lines)


def run_eval(args: argparse.Namespace) -> int:
    from model.loading import load_clipseg

    ds = read_dataset(args.data, args.annotations)
    if not ds.images:
        raise DataError(f"no usable images in {args.data} ({ds.image_skips.summary()})")
    with common.loading("--model", args.model, "CLIPSeg"):
        segmenter = load_clipseg(args.model)
    result = evaluate(segmenter, ds, args.threshold)
    result["model"] = args.model
    print(json.dumps(result, indent=1) if args.json else format_result(result), flush=True)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (or SageMaker's ``--key value`` hyperparameters, where ``train`` is implied)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["train", *argv]  # SageMaker passes only hyperparameters; a mistyped command stays an error
    parser = build_parser()
    args = common.parse(parser, argv)
    if args.command == "train":
        check_train_args(parser, args)
    elif not 0.0 <= args.threshold < 1.0:
        parser.error("--threshold must be in [0, 1)")
    return args


def main(argv: list[str] | None = None) -> int:
    common.setup_logging()
    args = parse_args(argv)
    return common.run(lambda: train(args) if args.command == "train" else run_eval(args))


if __name__ == "__main__":
    logging.captureWarnings(True)
    raise SystemExit(main())
