"""Smoke test of ``python -m model.bench``: tiny models, every row present, the JSON shaped as documented.

No timing assertions: speed is what the benchmark shows (docs/bench.md), not what a test on a shared CPU can prove.
"""

from __future__ import annotations

import json

import pytest

from model import bench

REQUIRED = ["segment_1", "segment_16", "segment_endpoint_overhead", "inpaint_512_4x", "inpaint_1024x1536_4x",
            "inpaint_1024x1536_4x_crop", "upscale"]


def check_row(row: dict) -> None:
    assert {"name", "baseline_s", "restyle_s", "speedup", "baseline", "restyle", "baseline_runs",
            "restyle_runs"} <= set(row)
    assert row["baseline_s"] > 0 and row["restyle_s"] > 0, row
    assert row["speedup"] == pytest.approx(row["baseline_s"] / row["restyle_s"], rel=1e-2)
    assert row["baseline_runs"] and all(t > 0 for t in row["baseline_runs"] + row["restyle_runs"])
    assert row["baseline"].strip() and row["restyle"].strip()


TOOLKIT_ROW = "segment_endpoint_overhead_toolkit"


def test_tiny_run_writes_every_row(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(bench.TOOLKIT_ENV, raising=False)  # the toolkit row has its own (slow) test below
    out = tmp_path / "bench.json"
    result = bench.run(["--tiny", "--out", str(out)])
    data = json.loads(out.read_text())
    assert data["rows"] == json.loads(json.dumps(result["rows"]))
    names = [r["name"] for r in data["rows"]]
    if TOOLKIT_ROW in names:  # the toolkit is importable in this very environment
        names.remove(TOOLKIT_ROW)
    else:  # skipped, and the report says why
        (skip,) = data["skipped"]
        assert skip["name"] == TOOLKIT_ROW and "toolkit stack cannot run here" in skip["reason"]
    assert names == REQUIRED
    for row in data["rows"]:
        check_row(row)
    seg16 = next(r for r in data["rows"] if r["name"] == "segment_16")
    assert set(seg16["baseline_variants"]) == {"loop_s", "batched_s"}
    assert seg16["baseline_s"] == pytest.approx(min(seg16["baseline_variants"].values()), rel=1e-3)
    endpoint = next(r for r in data["rows"] if r["name"] == "segment_endpoint_overhead")
    assert endpoint["overhead"] == pytest.approx(endpoint["restyle_s"] / endpoint["baseline_s"], rel=1e-2)
    assert {"decode", "forward", "postprocess", "encode"} <= set(endpoint["server_timings_ms"])
    assert {"cpu", "cores"} <= set(data["machine"]) and data["machine"]["cores"] >= 1
    assert {"torch", "diffusers", "transformers"} <= set(data["versions"])
    assert {"steps", "reps", "dtype", "mode", "segment_photo", "inpaint_sizes"} <= set(data["settings"])
    assert data["settings"]["mode"] == "tiny" and data["complete"] is True
    for name in ("segment_1", "segment_16"):
        stages = next(r for r in data["rows"] if r["name"] == name)["restyle_stages_ms"]
        assert set(stages) == {"forward", "postprocess"} and all(v > 0 for v in stages.values())
    printed = capsys.readouterr().out
    assert "| row | baseline (s) | restyle (s) | speedup |" in printed
    assert all(f"`{name}`" in printed for name in REQUIRED)


def test_full_tiny_adds_the_sdxl_row(tmp_path):
    out = tmp_path / "full.json"
    bench.run(["--tiny", "--full", "--rows", "inpaint_sdxl_4x", "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert [r["name"] for r in rows] == ["inpaint_sdxl_4x"]
    check_row(rows[0])


def test_unknown_rows_are_refused():
    with pytest.raises(SystemExit) as exc:
        bench.run(["--tiny", "--rows", "segment_1,nope"])
    assert exc.value.code == 2  # argparse's usage error, before any model is built


def test_garment_maps_are_garment_shaped():
    """The hook's maps: one soft blob per garment, small ones for protected regions, different per prompt."""
    import torch

    skirt, face = torch.sigmoid(bench.garment_logits("skirt", 64)), torch.sigmoid(bench.garment_logits("face", 64))
    assert 0.1 < (skirt > 0.4).float().mean() < 0.4
    assert 0.0 < (face > 0.4).float().mean() < 0.05
    assert not torch.equal(bench.garment_logits("dress", 64), bench.garment_logits("coat", 64))


def test_a_stopped_run_keeps_the_rows_it_finished(tmp_path, monkeypatch):
    """--out is rewritten after every row, so a run killed by a time limit (a GPU lease) still leaves its rows."""
    out = tmp_path / "partial.json"

    def killed(self):
        raise KeyboardInterrupt  # as a timeout's signal would, after the segmentation rows

    monkeypatch.setattr(bench.Bench, "inpaint", killed)
    with pytest.raises(KeyboardInterrupt):
        bench.run(["--tiny", "--rows", "segment_1,inpaint_512_4x", "--out", str(out)])
    data = json.loads(out.read_text())
    assert data["complete"] is False
    assert [r["name"] for r in data["rows"]] == ["segment_1"]
    check_row(data["rows"][0])
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.slow
def test_endpoint_overhead_through_the_real_toolkit(tmp_path):
    """The sibling row: the same request through the packed model under the SageMaker toolkit + multi-model-server."""
    import os

    from deploy import local

    why = local.missing_requirements(os.environ.get(bench.TOOLKIT_ENV))
    if why:
        pytest.skip(f"the toolkit stack cannot run here: {why}")
    out = tmp_path / "toolkit.json"
    bench.run(["--tiny", "--rows", TOOLKIT_ROW, "--out", str(out)])
    data = json.loads(out.read_text())
    (row,) = data["rows"]
    check_row(row)
    assert row["name"] == TOOLKIT_ROW and data["skipped"] == []
    assert row["overhead"] == pytest.approx(row["restyle_s"] / row["baseline_s"], rel=1e-2)
    assert {"decode", "forward", "postprocess", "encode"} <= set(row["server_timings_ms"])
    assert "multi-model-server" in row["restyle"]
