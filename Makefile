# restyle — see README.md.  Everything runs from a local virtual environment in .venv.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TINY   ?= .cache/tiny
PHOTO  ?=
ARGS   ?=

.PHONY: setup toolkit test lint chat tiny bench lean-check clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# The CPU wheel of torch lies on this disk; install it first so nothing pulls a CUDA build.
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -c constraints.txt -e '.[local,dev,deploy]'
	touch $@

setup: $(VENV)/.installed

# The serving stack the SageMaker Hugging Face image runs (`python -m deploy local`, tests/test_deploy.py's toolkit
# tests): installed with --target so its own version pins stay out of .venv.  Java 17 comes from the system
# (`apt-get install default-jre-headless`; .ci/run installs it where it is missing).
TOOLKIT ?= .cache/toolkit
$(TOOLKIT)/.installed:
	$(PIP) install --quiet --no-deps --target $(TOOLKIT) sagemaker-huggingface-inference-toolkit==2.6.0 \
		sagemaker-inference==1.10.1 multi-model-server==1.1.11 model-archiver retrying==1.3.4 future six psutil \
		'setuptools<81'
	touch $@

toolkit: setup $(TOOLKIT)/.installed

lint: setup
	$(VENV)/bin/ruff check bot model deploy tests

# pytest-xdist: one worker per core (the tiny checkpoints are built once and shared); then the tests marked
# `serial` (the Slack ack latency under load) alone, on a quiet machine.
TEST_WORKERS ?= auto
test: setup toolkit
	$(VENV)/bin/ruff check bot model deploy tests
	RESTYLE_TOOLKIT_DIR=$(abspath $(TOOLKIT)) $(VENV)/bin/pytest -q -n $(TEST_WORKERS) --dist worksteal -m "not serial"
	RESTYLE_TOOLKIT_DIR=$(abspath $(TOOLKIT)) $(VENV)/bin/pytest -q -m serial

tiny: setup
	$(PY) -m model.tiny $(TINY)

chat: setup
	@if [ -z "$(PHOTO)" ]; then echo "usage: make chat PHOTO=path/to/photo.jpg [ARGS='--tiny']"; exit 2; fi
	$(VENV)/bin/restyle chat "$(PHOTO)" $(ARGS)

bench: setup
	$(PY) -m model.bench --out bench/results/cpu.json $(ARGS)

# What `pip install .` gives a team that only runs the bot: a fresh venv with no extras (PyPI needed), no torch,
# the bot imported without the heavy libraries, `restyle slack --help`, and the venv's size in MB.
LEAN ?= .cache/lean
lean-check:
	rm -rf $(LEAN) && $(PYTHON) -m venv $(LEAN)
	$(LEAN)/bin/python -m pip install --quiet --upgrade pip
	$(LEAN)/bin/python -m pip install --quiet .
	rm -rf build
	! $(LEAN)/bin/python -c "import torch" 2>/dev/null
	cd $(LEAN) && bin/python -c "import sys, bot.slack_app, bot.engine, bot.__main__; \
	  heavy = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]; assert not heavy, heavy"
	$(LEAN)/bin/restyle slack --help > /dev/null
	du -sm $(LEAN)

clean:
	rm -rf $(VENV) .cache .pytest_cache
