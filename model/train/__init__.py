"""Training entry points (never imported by serving code; not shipped in the inference bundle).

* ``python -m model.train.lora_inpaint`` — DreamBooth-style LoRA on a Stable Diffusion inpainting checkpoint;
* ``python -m model.train.clipseg train|eval`` — fine-tune the CLIPSeg decoder on a COCO-format data set / mIoU.

Both also run as SageMaker training scripts (``python model/train/<name>.py --key value …``).  See docs/train.md.
"""
