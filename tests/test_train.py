"""model/train: LoRA inpainting and CLIPSeg fine-tuning on the tiny checkpoints, IoU, bad data, SageMaker mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from model.train import clipseg as cs
from model.train import common
from model.train import lora_inpaint as li
from tests.conftest import garment_mask, make_photo

ROOT = Path(__file__).resolve().parents[1]
W = H = 64
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SKIRT_BOX = (16, 32, 48, 56)  # x0, y0, x1, y1 of the skirt polygon: 32x24 pixels
TOP = (slice(8, 32), slice(20, 44))  # rows, cols of the top's RLE: 24x24 pixels


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one thread is as fast, and far faster when other processes share the two cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def box_polygon(x0, y0, x1, y1) -> list[list[float]]:
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


@pytest.fixture(scope="module")
def photos_dir(tmp_path_factory) -> Path:
    """6 instance photos, one corrupt JPEG, a caption file (ignored) and class images in class/."""
    root = tmp_path_factory.mktemp("photos")
    for i in range(6):
        make_photo(W, H, seed=i).save(root / f"p{i}.png")
    (root / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "captions.txt").write_text("a photo of sks skirt\n")
    (root / "class").mkdir()
    for i in range(3):
        make_photo(W, H, seed=10 + i).save(root / "class" / f"c{i}.png")
    return root


@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory) -> Path:
    """6 images with a polygon skirt and an RLE top (one compressed), plus: a corrupt image, a missing file, a
    2-point polygon, an unknown category id and a bbox outside the image."""
    root = tmp_path_factory.mktemp("coco")
    images, anns = [], []
    top = np.zeros((H, W), dtype=bool)
    top[TOP] = True
    for i in range(6):
        make_photo(W, H, seed=i).save(root / f"p{i}.png")
        images.append({"id": i + 1, "file_name": f"p{i}.png", "width": W, "height": H})
        anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1,
                     "segmentation": box_polygon(*SKIRT_BOX), "bbox": [16, 32, 32, 24], "iscrowd": 0})
        counts = common.rle_encode(top)
        rle = {"size": [H, W], "counts": common.rle_encode_string(counts) if i == 1 else counts}
        anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 2, "segmentation": rle, "iscrowd": 1})
    (root / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    images.append({"id": 7, "file_name": "bad.jpg", "width": W, "height": H})
    images.append({"id": 8, "file_name": "gone.jpg", "width": W, "height": H})
    anns.append({"id": 100, "image_id": 3, "category_id": 2, "segmentation": [[1, 1, 5, 5]]})  # p2: 2 points
    anns.append({"id": 101, "image_id": 4, "category_id": 9, "segmentation": box_polygon(1, 1, 9, 9)})  # p3
    anns.append({"id": 102, "image_id": 5, "category_id": 1, "segmentation": box_polygon(1, 1, 9, 9),
                 "bbox": [50, 50, 40, 40]})  # p4: bbox outside
    cats = [{"id": 1, "name": "skirt"}, {"id": 2, "name": "top"}, {"id": 3, "name": "hat"}]
    (root / "annotations.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return root


def losses(out: Path) -> list[float]:
    return json.loads((out / "loss.json").read_text())["loss"]


# --- 1. LoRA inpainting -----------------------------------------------------------------------------------------
def test_lora_inpaint_learns_saves_and_loads(tiny_dir, photos_dir, tmp_path, capsys):
    from model.loading import load_inpaint

    out = tmp_path / "lora"
    rc = li.main(["--data", str(photos_dir), "--base", str(tiny_dir / "inpaint"), "--out", str(out),
                  "--instance-prompt", "a photo of sks skirt", "--masks", "boxes", "--steps", "40",
                  "--lr", "1e-2", "--seed", "0"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "skipping bad.jpg: " in err and "skipped 1 of 7 images: bad.jpg (" in err
    curve = losses(out)
    assert len(curve) == 40
    assert np.mean(curve[-10:]) < np.mean(curve[:10]) - 0.03, curve
    assert (out / "pytorch_lora_weights.safetensors").is_file()
    assert (out / "loss.png").read_bytes()[:8] == PNG_MAGIC
    info = json.loads((out / "restyle_lora.json").read_text())
    assert info["resolution"] == 64 and info["images"] == [f"p{i}.png" for i in range(6)]

    photo, mask = make_photo(W, H, seed=3), garment_mask(W, H)
    results = []
    for lora in (None, str(out)):
        inpainter = load_inpaint(str(tiny_dir / "inpaint"), device="cpu", lora=lora)
        res = inpainter(photo, mask, "a photo of sks skirt", seeds=[7], steps=2)
        results.append(np.asarray(res.candidates[0].image, dtype=np.float64))
    base, tuned = results
    assert np.abs(base - tuned).max() > 5  # the adapter changes the generation at the same seed


def test_lora_prior_preservation_text_encoder_and_clipseg_masks(tiny_dir, photos_dir, tmp_path, capsys):
    from safetensors.torch import load_file

    out = tmp_path / "lora"
    rc = li.main(["--data", str(photos_dir), "--base", str(tiny_dir / "inpaint"), "--out", str(out),
                  "--instance_prompt", "a photo of sks skirt", "--masks", "clipseg",
                  "--clipseg", str(tiny_dir / "clipseg"), "--mask-prompt", "skirt",
                  "--prior_preservation", "true", "--class-prompt", "a photo of a skirt",
                  "--train-text-encoder", "--random-flip", "--steps", "3", "--batch-size", "2",
                  "--sagemaker_injected", "x"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "class: 3 images" in err  # DATA/class/ by default, and not read as instance images
    assert "ignoring unknown arguments: --sagemaker-injected x" in err
    data = json.loads((out / "loss.json").read_text())
    assert len(data["loss"]) == len(data["prior_loss"]) == len(data["instance_loss"]) == 3
    keys = list(load_file(out / "pytorch_lora_weights.safetensors"))
    assert any(k.startswith("unet.") for k in keys) and any(k.startswith("text_encoder.") for k in keys)
    info = json.loads((out / "restyle_lora.json").read_text())
    assert info["prior_preservation"] and info["train_text_encoder"] and info["masks"] == "clipseg"
    if li.text_lora_unloadable() is None:
        from model.loading import load_inpaint

        load_inpaint(str(tiny_dir / "inpaint"), device="cpu", lora=str(out))  # UNet and text-encoder parts
    else:  # transformers refuses this peft version for load_adapter: the run says so up front
        assert "cannot load it back" in err


def test_lora_cli_values_and_usage_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("SM_CHANNEL_TRAIN", "/data/train")
    monkeypatch.setenv("SM_MODEL_DIR", "/opt/ml/model")
    args = li.parse_args(["--instance_prompt", "a photo of sks skirt", "--train_text_encoder", "False",
                          "--prior-preservation", "--class_prompt", "a skirt", "--lr", "0.001"])
    assert (args.data, args.out) == ("/data/train", "/opt/ml/model")
    assert args.train_text_encoder is False and args.prior_preservation is True and args.lr == 1e-3
    with pytest.raises(SystemExit) as exc:
        li.parse_args(["--instance-prompt", "x", "--masks", "clipseg"])  # needs --mask-prompt
    assert exc.value.code == 2


def test_lora_empty_data_exits_2(tmp_path, capsys):
    (tmp_path / "bad.jpg").write_bytes(b"")
    rc = li.main(["--data", str(tmp_path), "--instance-prompt", "x", "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "no usable instance images" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def lora_argv(photos_dir: Path, base: Path | str, out: Path | str, *extra: str) -> list[str]:
    return ["--data", str(photos_dir), "--base", str(base), "--out", str(out), "--instance-prompt", "a photo of sks",
            "--steps", "3", *extra]


def clipseg_argv(coco_dir: Path, base: Path | str, out: Path | str, *extra: str) -> list[str]:
    return ["train", "--data", str(coco_dir), "--base", str(base), "--out", str(out), "--steps", "3",
            "--batch-size", "2", *extra]


@pytest.mark.parametrize("trainer", ["lora", "clipseg"])
def test_unusable_out_fails_before_any_loading(trainer, tiny_dir, photos_dir, coco_dir, tmp_path, capsys,
                                               monkeypatch):
    import model.loading

    def no_loading(*args, **kwargs):
        raise AssertionError("--out must be checked before the models are loaded")

    monkeypatch.setattr(model.loading, "load_inpaint", no_loading)
    monkeypatch.setattr(model.loading, "load_clipseg", no_loading)
    a_file = tmp_path / "taken"
    a_file.write_text("not a folder")
    for out, says in ((a_file, "is an existing file"), (a_file / "sub", "cannot be created or written")):
        if trainer == "lora":
            rc = li.main(lora_argv(photos_dir, tiny_dir / "inpaint", out))
        else:
            rc = cs.main(clipseg_argv(coco_dir, tiny_dir / "clipseg", out))
        assert rc == 2
        err = capsys.readouterr().err
        assert f"ERROR --out {out} {says}" in err, err
    assert a_file.read_text() == "not a folder"
    # a usable --out is created by the check, and the probe file does not stay behind
    out = tmp_path / "new" / "deeper"
    assert common.check_out(out) == out and out.is_dir() and not list(out.iterdir())


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
def test_non_finite_float_flags_are_usage_errors(value, capsys):
    cases = [(li.parse_args, ["--data", "d", "--out", "o", "--instance-prompt", "x"], flag)
             for flag in ("--lr", "--prior-loss-weight")]
    cases += [(cs.parse_args, ["train", "--data", "d", "--out", "o"], flag) for flag in ("--lr", "--dice-weight")]
    cases += [(cs.parse_args, ["eval", "--data", "d", "--model", "m"], "--threshold")]
    for parse, argv, flag in cases:
        with pytest.raises(SystemExit) as exc:
            parse([*argv, f"{flag}={value}"])
        assert exc.value.code == 2, (flag, value)
        assert f"argument {flag}: expected a finite number" in capsys.readouterr().err


def test_diverging_loss_is_one_error_line(tiny_dir, photos_dir, coco_dir, tmp_path, capsys):
    """A finite but absurd --lr: the loss turns NaN; main returns 1 with one ERROR line (no FloatingPointError)."""
    rc = li.main(lora_argv(photos_dir, tiny_dir / "inpaint", tmp_path / "lora", "--lr", "1e30"))
    assert rc == 1
    err = capsys.readouterr().err
    assert "ERROR the loss became nan at step " in err and "lower --lr" in err, err
    rc = cs.main(clipseg_argv(coco_dir, tiny_dir / "clipseg", tmp_path / "clipseg", "--lr", "1e30"))
    assert rc == 1
    err = capsys.readouterr().err
    assert "ERROR the loss became nan at step " in err and "lower --lr" in err, err


def test_missing_checkpoint_names_the_trainers_flag(photos_dir, coco_dir, tmp_path, capsys):
    missing = str(tmp_path / "no-such-checkpoint")
    runs = [(li.main, lora_argv(photos_dir, missing, tmp_path / "o1"), "--base"),
            (cs.main, clipseg_argv(coco_dir, missing, tmp_path / "o2"), "--base"),
            (cs.main, ["eval", "--data", str(coco_dir), "--model", missing], "--model")]
    for main, argv, flag in runs:
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert f"({flag}): it is neither a local folder nor in the Hugging Face cache" in err, err
        assert f"Point {flag} at a local checkpoint folder" in err
        assert "--tiny" not in err and "RESTYLE_" not in err and "--inpaint" not in err


def test_wrong_kind_of_checkpoint_exits_2(tiny_dir, photos_dir, coco_dir, tmp_path, capsys):
    runs = [(li.main, lora_argv(photos_dir, tiny_dir / "clipseg", tmp_path / "o1"),
             f"--base {tiny_dir / 'clipseg'} is not a usable Stable Diffusion inpainting checkpoint ("),
            (li.main, lora_argv(photos_dir, tiny_dir / "inpaint", tmp_path / "o2", "--masks", "clipseg",
                                "--mask-prompt", "skirt", "--clipseg", str(tiny_dir / "inpaint")),
             f"--clipseg {tiny_dir / 'inpaint'} is not a usable CLIPSeg checkpoint ("),
            (cs.main, clipseg_argv(coco_dir, tiny_dir / "inpaint", tmp_path / "o3"),
             f"--base {tiny_dir / 'inpaint'} is not a usable CLIPSeg checkpoint ("),
            (cs.main, ["eval", "--data", str(coco_dir), "--model", str(tiny_dir / "inpaint")],
             f"--model {tiny_dir / 'inpaint'} is not a usable CLIPSeg checkpoint ("),
            (cs.main, clipseg_argv(coco_dir, coco_dir / "annotations.json", tmp_path / "o4"),
             f"--base {coco_dir / 'annotations.json'} is a file, not a CLIPSeg checkpoint folder")]
    for main, argv, says in runs:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"ERROR {says}" in err, err
        assert "neither a local folder" not in err


def test_blank_prompts_and_mistyped_command_are_usage_errors(capsys):
    base = ["--data", "d", "--out", "o"]
    for argv in ([*base, "--instance-prompt", ""], [*base, "--instance-prompt", "  "],
                 [*base, "--instance-prompt", "x", "--masks", "clipseg", "--mask-prompt", " "],
                 [*base, "--instance-prompt", "x", "--prior-preservation", "--class-prompt", ""],
                 [*base, "--instance-prompt", "x", "--prior-loss-weight", "-1"]):
        with pytest.raises(SystemExit) as exc:
            li.parse_args(argv)
        assert exc.value.code == 2, argv
    assert "--instance-prompt must not be blank" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cs.parse_args(["bogus", *base])
    assert exc.value.code == 2
    assert "invalid choice: 'bogus'" in capsys.readouterr().err
    assert cs.parse_args(base).command == "train"  # SageMaker: hyperparameters only


# --- 2. CLIPSeg fine-tuning -------------------------------------------------------------------------------------
def test_clipseg_train_learns_saves_and_loads(tiny_dir, coco_dir, tmp_path, capsys):
    from model.loading import load_clipseg

    out = tmp_path / "clipseg"
    rc = cs.main(["train", "--data", str(coco_dir), "--base", str(tiny_dir / "clipseg"), "--out", str(out),
                  "--steps", "30", "--batch-size", "3", "--lr", "1e-3", "--seed", "0"])
    assert rc == 0
    curve = losses(out)
    assert len(curve) == 30
    assert np.mean(curve[-10:]) < np.mean(curve[:10]) - 0.03, curve
    assert (out / "loss.png").read_bytes()[:8] == PNG_MAGIC
    info = json.loads((out / "restyle_clipseg.json").read_text())
    assert info["prompts"] == ["skirt", "top", "hat"] and info["samples"] == 10

    # 4. the bad data was reported by name, skipped, and the run completed
    err = capsys.readouterr().err
    assert "skipping bad.jpg: " in err and "skipping gone.jpg: file not found" in err
    assert "skipped 2 of 8 images: bad.jpg (" in err
    assert "skipping annotation 100 on p2.png: polygon with 2 points" in err
    assert "skipping annotation 101 on p3.png: unknown category id 9" in err
    assert "skipping annotation 102 on p4.png: bbox [50, 50, 40, 40] is outside the 64x64 image" in err
    assert "skipped 3 of 15 annotations: " in err

    photo = make_photo(W, H, seed=0)
    base, tuned = load_clipseg(str(tiny_dir / "clipseg"), device="cpu"), load_clipseg(str(out), device="cpu")
    p_base, p_tuned = base.probabilities(photo, ["skirt", "top"]), tuned.probabilities(photo, ["skirt", "top"])
    assert p_base.shape == p_tuned.shape
    assert (p_base - p_tuned).abs().max() > 1e-3
    clip_base = base.model.clip.state_dict()
    assert all(torch.equal(clip_base[k], v) for k, v in tuned.model.clip.state_dict().items())  # CLIP frozen


def test_clipseg_nothing_usable_exits_2(tiny_dir, tmp_path, capsys):
    make_photo(W, H).save(tmp_path / "a.png")
    doc = {"images": [{"id": 1, "file_name": "a.png", "width": W, "height": H}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[0, 0, 1, 1]]}],
           "categories": [{"id": 1, "name": "skirt"}]}
    (tmp_path / "annotations.json").write_text(json.dumps(doc))
    rc = cs.main(["train", "--data", str(tmp_path), "--base", str(tiny_dir / "clipseg"), "--out", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "skipping annotation 1 on a.png: polygon with 2 points" in err and "no usable training samples" in err


def test_clipseg_parse_sagemaker_style():
    args = cs.parse_args(["--epochs", "2", "--batch_size", "4", "--data", "d", "--out", "o", "--model_dir", "s3://x"])
    assert (args.command, args.epochs, args.batch_size, args.steps) == ("train", 2, 4, None)
    with pytest.raises(SystemExit) as exc:
        cs.parse_args(["train", "--data", "d", "--out", "o", "--epochs", "1", "--steps", "3"])
    assert exc.value.code == 2


# --- 3. IoU -----------------------------------------------------------------------------------------------------
def test_iou_on_hand_made_masks():
    a = np.zeros((4, 4), dtype=bool)
    a[0:2, 0:2] = True  # 4 pixels
    b = np.zeros((4, 4), dtype=bool)
    b[1:3, 1:3] = True  # 4 pixels, overlapping a in one
    empty = np.zeros((4, 4), dtype=bool)
    assert cs.iou(a, b) == 1 / 7
    assert cs.iou(a, a) == 1.0
    assert cs.iou(a, empty) == 0.0 and cs.iou(empty, b) == 0.0
    assert cs.iou(empty, empty) is None  # nothing to score
    with pytest.raises(ValueError):
        cs.iou(a, np.zeros((4, 5), dtype=bool))

    meter = cs.IoU(["skirt", "hat", "top"])
    meter.add("skirt", a, b)  # I 1, U 7
    meter.add("skirt", b, b)  # I 4, U 4
    meter.add("hat", empty, empty)
    meter.add("hat", empty, empty)
    meter.add("top", a, empty)  # a false positive: I 0, U 4
    per = meter.per_category()
    assert per == {"skirt": 5 / 11, "hat": None, "top": 0.0}  # pooled over images, not a mean of 1/7 and 1
    assert meter.miou() == (5 / 11 + 0.0) / 2  # hat (absent from both everywhere) is excluded
    assert cs.IoU(["hat"]).miou() is None


def constant_clipseg(tiny_dir: Path, out: Path, logit: float) -> Path:
    """The tiny CLIPSeg with its last decoder layer replaced by a constant: every probability sigmoid(logit)."""
    from model.loading import load_clipseg

    seg = load_clipseg(str(tiny_dir / "clipseg"), device="cpu")
    last = [m for m in seg.model.decoder.modules() if isinstance(m, torch.nn.ConvTranspose2d)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(logit)
    seg.model.save_pretrained(out)
    seg.processor.save_pretrained(out)
    return out


def test_eval_cli_exact_iou(tiny_dir, coco_dir, tmp_path, capsys):
    model_dir = constant_clipseg(tiny_dir, tmp_path / "all", 10.0)  # predicts every category everywhere
    assert cs.main(["eval", "--data", str(coco_dir), "--model", str(model_dir), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    # skirt: scored on the 5 images without a bad skirt annotation, 32x24 of 64x64 each; top: 5 images, 24x24;
    # hat: scored on all 6, never there → 0.0 (a false positive everywhere), still counted in the mIoU
    assert result["iou"] == {"skirt": 768 / 4096, "top": 576 / 4096, "hat": 0.0}
    assert result["pixels"]["skirt"] == {"intersection": 5 * 768, "union": 5 * 4096, "gt_images": 5, "images": 5}
    assert result["miou"] == pytest.approx((768 / 4096 + 576 / 4096 + 0.0) / 3, abs=1e-15)
    assert result["images"] == 6 and result["categories_scored"] == 3
    assert [s["name"] for s in result["skipped"]["images"]] == ["bad.jpg", "gone.jpg"]

    model_dir = constant_clipseg(tiny_dir, tmp_path / "none", -10.0)  # predicts nothing
    assert cs.main(["eval", "--data", str(coco_dir), "--model", str(model_dir)]) == 0
    text = capsys.readouterr().out
    assert "mIoU 0.0000 over 2 categories" in text  # hat: absent from both → excluded
    assert [line.split()[:2] for line in text.splitlines()[1:4]] == [["skirt", "0.0000"], ["top", "0.0000"],
                                                                       ["hat", "—"]]


# --- data reading -----------------------------------------------------------------------------------------------
def test_rle_formats():
    mask = np.array([[0, 1], [1, 1], [0, 0]], dtype=bool)  # column-major: 0 1 0 | 1 1 0
    assert common.rle_encode(mask) == [1, 1, 1, 2, 1]
    assert common.rle_encode(np.ones((2, 2), dtype=bool)) == [0, 4]
    # compressed strings worked out by hand from pycocotools' rleToString
    assert common.rle_encode_string([1, 1, 1, 2, 1]) == "11110"
    assert common.rle_encode_string([3, 10, 5, 4]) == "3:5J"  # 4 - 10 = -6 → 'J'
    assert common.rle_encode_string([100]) == "T3"
    assert common.rle_decode_string("T3").tolist() == [100]
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 5000, size=50).tolist()
    assert common.rle_decode_string(common.rle_encode_string(counts)).tolist() == counts
    for counts in ([1, 1, 1, 2, 1], "11110"):
        seg = {"size": [3, 2], "counts": counts}
        assert common.check_segmentation(seg, 3, 2) is None
        assert np.array_equal(common.segmentation_mask(seg, 3, 2), mask)
    assert "covers 5 pixels" in common.check_segmentation({"size": [3, 2], "counts": [1, 4]}, 3, 2)
    assert "does not match" in common.check_segmentation({"size": [2, 3], "counts": [6]}, 3, 2)
    poly = common.segmentation_mask(box_polygon(*SKIRT_BOX), H, W)
    assert poly.sum() == 32 * 24 and poly[32:56, 16:48].all()


def test_polygons_rasterise_by_pixel_centres():
    from matplotlib.path import Path as MplPath

    gx, gy = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    centres = np.column_stack([gx.ravel(), gy.ravel()])
    rng = np.random.default_rng(1)
    for _ in range(40):  # random, partly outside, often self-intersecting: the even-odd rule as matplotlib has it
        poly = np.column_stack([rng.uniform(-5, W + 5, 7), rng.uniform(-5, H + 5, 7)])
        expected = MplPath(poly).contains_points(centres).reshape(H, W)
        assert np.array_equal(common.polygon_mask(poly.ravel().tolist(), H, W), expected)
    # centre (x + .5, y + .5) inside when x + y < 3; the centres with x + y = 3 lie on the hypotenuse (a right
    # edge): out
    tri = common.polygon_mask([0, 0, 4, 0, 0, 4], 4, 4)
    assert tri.astype(int).tolist() == [[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]


def _third_party_imports(files: list[Path]) -> set[str]:
    """Distribution names (normalised) of everything ``files`` import, lazily or not, outside the stdlib and model."""
    import ast
    import re
    from importlib.metadata import packages_distributions

    dists = packages_distributions()
    out = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for top in {n.split(".")[0] for n in names} - set(sys.stdlib_module_names) - {"model"}:
                out.update(re.sub(r"[-_.]+", "-", d).lower() for d in dists.get(top, [top]))
    return out


def _requirement_names(txt: bytes) -> set[str]:
    import re

    # PEP 503 names ("huggingface_hub" and "huggingface-hub" are one package), as _with_dependencies writes them
    return {re.sub(r"[-_.]+", "-", re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0]).lower() for line in txt.decode().split()}


def _with_dependencies(names: set[str], extras: tuple[str, ...] = ("torch",)) -> set[str]:
    """``names`` and everything they require, as installed here (their ``extras`` too: diffusers and transformers
    load weights through accelerate, their "torch" extra)."""
    import re
    from importlib.metadata import PackageNotFoundError, requires

    from packaging.requirements import Requirement

    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            reqs = requires(name) or []
        except PackageNotFoundError:
            continue
        for line in reqs:
            req = Requirement(line)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in ("", *extras)):
                todo.append(re.sub(r"[-_.]+", "-", req.name).lower())
    return seen


def test_the_endpoint_installs_only_what_inference_uses():
    """deploy.package: the endpoint's model.tar.gz requirements are all used by the serving code (imported by it, or
    required by what it imports), so nothing training-only such as matplotlib's loss curve; the training sourcedir's
    requirements name every package model/train imports (the container brings torch and numpy)."""
    import io
    import tarfile

    from deploy import package

    def requirements(bundle, name: str) -> set[str]:
        with tarfile.open(fileobj=io.BytesIO(bundle.data)) as tar:
            return _requirement_names(tar.extractfile(name).read())

    endpoint = requirements(package.model_tarball(), "code/requirements.txt")
    training = requirements(package.sourcedir_tarball(), "requirements.txt")
    model = ROOT / "model"
    serving = _third_party_imports([p for p in sorted(model.rglob("*.py"))
                                    if "train" not in p.relative_to(model).parts and p.name != "bench.py"])
    trainers = _third_party_imports(sorted((model / "train").glob("*.py"))) - {"torch", "numpy"}
    used = _with_dependencies(serving)
    assert {"diffusers", "transformers", "peft", "accelerate", "tqdm"} <= used  # (the walk itself works)
    assert endpoint <= used, f"the endpoint installs what inference does not use: {sorted(endpoint - used)}"
    assert {"matplotlib", "pycocotools"} <= trainers - used
    assert trainers <= training, f"the trainers import what training does not install: {sorted(trainers - training)}"


def test_sagemaker_script_mode(tiny_dir, coco_dir, tmp_path, monkeypatch):
    model_dir = tmp_path / "opt-ml-model"
    monkeypatch.setenv("SM_CHANNEL_TRAIN", str(coco_dir))
    monkeypatch.setenv("SM_MODEL_DIR", str(model_dir))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("PYTHONPATH", raising=False)
    proc = subprocess.run([sys.executable, "model/train/clipseg.py", "train", "--steps", "3",
                           "--base", str(tiny_dir / "clipseg"), "--batch_size", "2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "skipped 2 of 8 images" in proc.stderr
    assert (model_dir / "config.json").is_file() and (model_dir / "model.safetensors").is_file()
    assert len(losses(model_dir)) == 3 and (model_dir / "loss.png").is_file()


def test_read_coco_survives_garbage(tmp_path):
    make_photo(W, H).save(tmp_path / "a.png")
    good = {"image_id": 1, "category_id": 1}
    doc = {
        "images": [{"id": 1, "file_name": "a.png", "width": 64.0, "height": 64},  # float size: fine
                   42, {"id": 2}, {"id": 1, "file_name": "a.png"}, {"id": 3, "file_name": "nul\x00.png"},
                   {"id": [4], "file_name": "a.png"}],
        "annotations": [
            42, {"image_id": [1], "category_id": 1}, {"image_id": 1, "category_id": [2]}, {"image_id": 99},
            {**good, "segmentation": {"size": ["a", "b"], "counts": [4096]}},
            {**good, "segmentation": {"size": [64, 64], "counts": [4096.0]}},
            {**good, "segmentation": {"size": [64, 64], "counts": [2 ** 70]}},
            {**good, "segmentation": {"size": [64, 64], "counts": "\x01\x02"}},
            {**good, "segmentation": [[0, 0, "x", 1, 2, 2]]}, {**good, "segmentation": [[0, 0, float("nan"), 1, 2, 2]]},
            {**good, "segmentation": None}, {**good, "segmentation": [[0, 0, 9, 0, 9, 9]], "bbox": "abc"},
            {"image_id": 1, "category_id": 2, "segmentation": [[0, 0, 9, 0, 9, 9]]},  # the one good annotation
        ],
        "categories": [{"id": "x", "name": "bad"}, 5, {"id": 1, "name": "skirt"}, {"id": 2, "name": "long_dress"}],
    }
    (tmp_path / "annotations.json").write_text(json.dumps(doc))
    ds = common.read_coco(tmp_path)
    assert [(im.name, im.width, im.height) for im in ds.images] == [("a.png", 64, 64)]
    assert ds.prompts == ["skirt", "long dress"]
    assert len(ds.image_skips) == 5 and len(ds.annotation_skips) == 12
    assert list(ds.images[0].segments) == ["long dress"] and ds.images[0].excluded == {"skirt"}
    assert ds.images[0].mask("long dress").sum() > 0 and not ds.images[0].mask("skirt").any()
    assert ds.annotation_skips.summary().startswith("skipped 12 of 13 annotations: annotations[0] (not an object), ")
