"""Lean by default: the bot installs, imports and starts without torch, diffusers or transformers.

A subprocess stands in for a lean install: a meta-path finder makes the heavy libraries unimportable (``import
torch`` raises ``ModuleNotFoundError`` exactly as on a machine without them), so these tests fail the moment a bot
module imports one of them at import time.  The dependency lists themselves are read from pyproject.toml.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "diffusers", "transformers", "peft", "accelerate", "matplotlib")
BOT_MODULES = ("bot.slack_app", "bot.__main__", "bot.settings", "bot.engine", "bot.backends", "bot.terminal")

#: Prepended to every child: the heavy libraries cannot be imported (as in a `pip install .` venv).
BLOCK = textwrap.dedent(f"""
    import sys
    HEAVY = {HEAVY!r}

    class _NotInstalled:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in HEAVY:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None

    sys.meta_path.insert(0, _NotInstalled())
""")


def _child(code: str, *, block: bool = True, env: dict[str, str] | None = None, timeout: float = 120
           ) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-c", (BLOCK if block else "") + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=timeout, env=full_env, cwd=ROOT)


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _names(requirements: list[str]) -> set[str]:
    import re

    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].strip().lower() for r in requirements}


def test_base_dependencies_are_lean_and_the_local_extra_has_the_models():
    project = _pyproject()["project"]
    base = _names(project["dependencies"])
    extras = {k: _names(v) for k, v in project["optional-dependencies"].items()}
    assert not base & set(HEAVY), f"heavy libraries in the base install: {sorted(base & set(HEAVY))}"
    assert {"torch", "diffusers", "transformers", "peft", "accelerate"} <= extras["local"]
    # what the bot itself needs stays in the base install
    assert {"slack-bolt", "slack-sdk", "boto3", "pydantic", "pillow", "numpy", "pyspellchecker"} <= base
    assert {"deploy", "dev"} <= set(extras)
    # `make setup` keeps installing everything
    makefile = (ROOT / "Makefile").read_text()
    assert "'.[local,dev,deploy]'" in makefile


def test_importing_the_bot_loads_no_heavy_library():
    """Not blocked here: the heavy libraries ARE installed in the test venv, and still none is imported."""
    r = _child(f"""
        import sys
        for m in {BOT_MODULES!r}:
            __import__(m)
        print(sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r}))
    """, block=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]", f"importing the bot imported: {r.stdout.strip()}"


def test_the_bot_imports_and_shows_help_without_the_heavy_libraries():
    r = _child(f"""
        for m in {BOT_MODULES!r}:
            __import__(m)
        from bot.__main__ import main
        try:
            main(["slack", "--help"])
        except SystemExit as exc:
            print("exit", exc.code)
    """)
    assert r.returncode == 0, r.stderr
    assert "--backend" in r.stdout and "exit 0" in r.stdout


@pytest.mark.parametrize("args", [["slack"], ["slack", "--backend", "local"], ["slack", "--tiny", "--backend",
                                                                             "sagemaker"]])
def test_asking_for_in_process_models_without_the_extra_is_one_line_naming_it(tmp_path, args):
    r = _child(f"""
        from bot.__main__ import main
        raise SystemExit(main({args!r}))
    """, env={"RESTYLE_DATA_DIR": str(tmp_path), "RESTYLE_BACKEND": ""})
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert 'pip install "restyle[local]"' in lines[0] and "torch" in lines[0]


def test_sagemaker_backend_starts_serves_and_stops_without_the_heavy_libraries(tmp_path):
    """``restyle slack --backend sagemaker --http`` against the Slack emulator with torch, diffusers and
    transformers unimportable: it starts, answers /healthz ready, and exits 0 on SIGTERM."""
    import json
    import re
    import signal
    import threading
    import urllib.request

    from tests.slack_emulator import BOT_TOKEN, SIGNING_SECRET, SlackEmulator

    emu = SlackEmulator().start()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RESTYLE_DATA_DIR": str(tmp_path), "SLACK_BOT_TOKEN": BOT_TOKEN,
           "SLACK_SIGNING_SECRET": SIGNING_SECRET, "SLACK_API_URL": emu.api_url, "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "RESTYLE_BACKEND": ""}
    code = BLOCK + textwrap.dedent(f"""
        import atexit, sys
        atexit.register(lambda: print("HEAVY", sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r}),
                                      file=sys.stderr, flush=True))
        from bot.__main__ import main
        raise SystemExit(main(["slack", "--backend", "sagemaker", "--http", "--port", "0"]))
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    port: list[int] = []
    ready = threading.Event()

    def read():
        for line in proc.stderr:
            lines.append(line)
            if m := re.search(r"http://127\.0\.0\.1:(\d+)/slack/events", line):
                port.append(int(m.group(1)))
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert ready.wait(60) and port, "".join(lines)
        with urllib.request.urlopen(f"http://127.0.0.1:{port[0]}/healthz", timeout=10) as r:
            assert r.status == 200 and json.loads(r.read())["ready"] is True
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
        emu.stop()
    time.sleep(0.2)  # the reader thread takes the last lines
    assert "HEAVY []\n" in lines, "".join(lines)


def test_the_bot_reaches_the_model_through_the_contract_only():
    """bot/ imports from model/ only the contract (schemas, errors), the torch-free picture code the contract's
    pictures follow (image codec, masks, crop-and-paste geometry, parallel map), and model.loading's defaults; the
    engines (segmentation, inpainting, handlers, serving, training) are reached through ``LocalBackend`` alone."""
    import ast

    contract = {"model.schemas", "model.errors", "model.images", "model.masks", "model.compose", "model.parallel",
                "model.checks", "model.loading", "model.tiny"}
    seen: dict[str, set[str]] = {}
    for path in sorted((ROOT / "bot").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "model":
                names = [f"model.{a.name}" for a in node.names] if node.module == "model" else [node.module]
                for name in names:
                    seen.setdefault(name, set()).add(path.name)
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] == "model":
                        seen.setdefault(a.name, set()).add(path.name)
    assert "model.schemas" in seen and "model.compose" in seen  # the scan sees the bot's imports
    outside = {name: files for name, files in seen.items() if name not in contract}
    assert not outside, f"bot/ imports model internals: {outside}"
