#!/usr/bin/env bash
# The GPU checks of the speed work (docs/bench.md, "GPU") as one prepared run on a lent H100/H200.
#
#   here (with network to the package registry):  bash bench/gpu.sh wheels
#       downloads the pure-Python packages the device image lacks (diffusers, pydantic, boto3 …) into .whl/
#       (git-ignored) for its Python 3.12.
#   on the device (the library's `device` tool):    run(command="bash bench/gpu.sh run", carry=[".whl"], timeout_s=600)
#       installs them into /tmp/site, then, each under its own time limit so one hang cannot eat the rest:
#       1. python -m model.bench --full             (SD 1.5 + SDXL full size, fp16, 30 steps)  -> $OUT/<gpu>_full.json
#       2. python -m model.bench --full --compile   (512 and crop rows, torch.compile both sides) -> $OUT/<gpu>_full_compile.json
#       3. pytest -m gpu tests/test_gpu.py          (fp16 CUDA paths against the CPU, tiny checkpoints)
#       and copies the logs to $OUT.  Commit the JSON files under bench/results/ and list them in its README.
set -uo pipefail
cd "$(dirname "$0")/.."

WHEELS=(diffusers==0.42.1 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
        importlib-metadata==6.11.0 typing-extensions==4.16.0
        boto3==1.44.8 botocore==1.44.8 s3transfer==0.19.3 jmespath==1.1.0)

case "${1:-}" in
wheels)
    grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    rm -rf .whl && mkdir -p .whl
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "${WHEELS[@]}"
    ls -la .whl
    ;;
run)
    : "${OUT:?run this on the device machine, where OUT is set}"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
    gpu=$(python3 -c "import torch; n = torch.cuda.get_device_name(); print('h200' if 'H200' in n else 'h100' if 'H100' in n else 'gpu')")
    python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/gpu.txt"
    # most important first; --out is rewritten after every row, so a run cut by its limit keeps what it finished
    timeout 240 python3 -m model.bench --full --out "$OUT/${gpu}_full.json" 2>&1 | tee "$OUT/bench_full.log"
    timeout 250 python3 -m model.bench --full --compile --rows inpaint_512_4x,inpaint_1024x1536_4x_crop \
        --out "$OUT/${gpu}_full_compile.json" 2>&1 | tee "$OUT/bench_full_compile.log"
    timeout 70 python3 -m pytest -m gpu tests/test_gpu.py -p no:cacheprovider -q 2>&1 | tee "$OUT/pytest_gpu.log"
    ls -la "$OUT"
    ;;
*)
    sed -n '2,13p' "$0"
    exit 2
    ;;
esac
