"""One check that another device, dtype or compiler gives the inpainting of the fp32 eager CPU run.

``assert_matches_reference`` is used by tests/test_gpu.py (fp16 on CUDA) and, so that the check itself runs in CI, by
tests/test_model_engines.py (bf16 on the CPU, the compiled UNet, and wrong results that it must refuse).
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

from tests.conftest import garment_mask, make_photo

#: The parity case: a photo larger than the model's native size (so the crop is planned), four candidates.
SIZE = (256, 384)
SEEDS = [1, 2, 3, 4]
PROMPT = "a red skirt"
STEPS = 2
FEATHER = 8  # Inpainter's default
#: Mean absolute difference (0-255) allowed inside the mask against the same seed's reference.  Measured on the tiny
#: checkpoints: fp16 on the CPU 0.2, bf16 on the CPU 1.2; another seed's candidate is about 45 away.
TOLERANCE = 8.0

#: Requests after a compiled warm-up: new crop sizes, candidate counts, guidance off (half the batch) and every look
#: (``None``: the default one, ``"none"``: the base model) — (width, height), seeds, guidance, look.
COMPILE_REQUESTS = [((200, 300), [1], 7.5, "resort"), ((320, 240), [1, 2, 3], 7.5, None),
                    ((256, 256), [5, 6], 1.0, "none"), ((240, 320), [4], 7.5, "studio"),
                    ((200, 300), [2], 7.5, "resort")]


def parity_inputs(size: tuple[int, int] = SIZE) -> tuple[Image.Image, np.ndarray]:
    return make_photo(*size), garment_mask(*size)


def run_parity_case(engine, **kwargs):
    photo, mask = parity_inputs()
    return engine(photo, mask, PROMPT, seeds=SEEDS, steps=STEPS, **kwargs)


def assert_matches_reference(got, ref, photo: Image.Image, mask: np.ndarray, *, feather: int = FEATHER,
                             tolerance: float = TOLERANCE) -> None:
    """``got`` against ``ref``, the fp32 eager CPU run on the same photo, mask, prompt, seeds and steps.

    Fails unless: the reference accepted every candidate; ``got`` accepted the same seeds in the same order (at
    least one) and rejected none; crop box, generation size and look are the same; every candidate has the photo's
    size, its pixels outside the crop box or farther than ``feather`` from the mask are the photo's bit for bit, and
    inside the mask it repainted and lies within ``tolerance`` (mean absolute difference) of the reference's
    candidate with the same seed, and nearer to it than to any other seed's.
    """
    seeds = [c.seed for c in ref.candidates]
    assert seeds and not ref.rejected, f"the reference must accept every candidate: rejected {ref.rejected}"
    assert not got.rejected, f"rejected {got.rejected} (the reference accepted seeds {seeds})"
    assert [c.seed for c in got.candidates] == seeds, ([c.seed for c in got.candidates], seeds)
    assert got.crop_box == ref.crop_box, (got.crop_box, ref.crop_box)
    assert got.generation_size == ref.generation_size, (got.generation_size, ref.generation_size)
    assert got.look == ref.look, (got.look, ref.look)
    src = np.asarray(photo).astype(np.int16)
    x0, y0, x1, y1 = ref.crop_box
    far = ndimage.distance_transform_edt(~mask) > feather
    far[:y0] = far[y1:] = True
    far[:, :x0] = far[:, x1:] = True
    refs = [np.asarray(c.image).astype(np.int16) for c in ref.candidates]
    for i, cand in enumerate(got.candidates):
        assert cand.image.size == photo.size, (cand.seed, cand.image.size, photo.size)
        pixels = np.asarray(cand.image).astype(np.int16)
        moved = int((pixels[far] != src[far]).any(axis=-1).sum())
        assert moved == 0, f"seed {cand.seed}: {moved} pixels far from the mask changed"
        repainted = (pixels != src).any(axis=-1)[mask].mean()
        assert repainted > 0.9, f"seed {cand.seed}: only {repainted:.0%} of the mask repainted"
        gaps = [float(np.abs(pixels - r)[mask].mean()) for r in refs]
        assert gaps[i] <= tolerance, f"seed {cand.seed}: {gaps[i]:.2f} from the reference (tolerance {tolerance})"
        assert gaps[i] == min(gaps) and gaps.count(gaps[i]) == 1, \
            f"seed {cand.seed} is nearer another seed's reference: {[round(g, 2) for g in gaps]}"
