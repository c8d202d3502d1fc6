# restyle — see README.md.  Everything runs from a local virtual environment in .venv.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TINY   ?= .cache/tiny
PHOTO  ?=
ARGS   ?=

.PHONY: setup test lint chat tiny bench lean-check clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# The CPU wheel of torch lies on this disk; install it first so nothing pulls a CUDA build.
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[local,dev,deploy]'
	touch $@

setup: $(VENV)/.installed

lint: setup
	$(VENV)/bin/ruff check bot model deploy tests

test: setup
	$(VENV)/bin/ruff check bot model deploy tests
	$(VENV)/bin/pytest -q

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
