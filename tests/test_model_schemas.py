"""model.schemas and model.handlers without a model: the contract, its export, its docs, the handler stages."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from model import handlers
from model.errors import NotAcceptable, PayloadTooLarge, RequestError, UnsupportedMediaType
from model.handlers import (
    MAX_PAYLOAD,
    LoadedModel,
    candidate_seeds,
    detect_role,
    handle,
    input_fn,
    negotiate,
    output_fn,
)
from model.schemas import REQUESTS, RESPONSES, InpaintRequest, export_schemas, parse_request

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


# -- schemas -------------------------------------------------------------------------------------------------
def test_schema_export_cli(tmp_path):
    out = subprocess.run([sys.executable, "-m", "model.schemas", str(tmp_path)], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=True)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(["clipseg.request.schema.json", "clipseg.response.schema.json",
                            "inpaint.request.schema.json", "inpaint.response.schema.json",
                            "upscale.request.schema.json", "upscale.response.schema.json", "error.schema.json"])
    assert len(out.stdout.split()) == 7
    schema = json.loads((tmp_path / "inpaint.request.schema.json").read_text())
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"image", "mask", "prompt"}
    assert schema["properties"]["num_images"] == {"default": 4, "maximum": 16, "minimum": 1, "title": "Num Images",
                                                  "type": "integer"}


def test_committed_schemas_are_current(tmp_path):
    written = export_schemas(tmp_path)
    for path in written:
        committed = DOCS / "schemas" / path.name
        assert committed.exists(), f"run: python -m model.schemas docs/schemas ({path.name} is missing)"
        assert json.loads(committed.read_text()) == json.loads(path.read_text()), (
            f"docs/schemas/{path.name} is stale: run python -m model.schemas docs/schemas")


def test_api_doc_covers_every_field_code_and_flag():
    doc = (DOCS / "api.md").read_text()
    for cls in (*REQUESTS.values(), *RESPONSES.values()):
        for name in cls.model_fields:
            assert f"`{name}`" in doc, f"{cls.__name__}.{name} is not documented in docs/api.md"
    codes = set()
    for src in (ROOT / "model").glob("*.py"):
        text = src.read_text()
        codes |= set(re.findall(r'\bcode\s*=\s*"([a-z_]+)"', text))
        codes |= set(re.findall(r'_error\(\s*"([a-z_]+)"', text))
        codes |= set(re.findall(r'_sm_error\(\d+, "\w+", "([a-z_]+)"', text))
        codes |= set(re.findall(r'"code": "([a-z_]+)"', text))
    assert {"invalid_request", "empty_mask", "internal_error", "ambiguous_model"} <= codes
    missing = sorted(c for c in codes if f"`{c}`" not in doc)
    assert not missing, f"error codes not in docs/api.md: {missing}"
    flags = set(re.findall(r'add_argument\("(--[a-z-]+)"', (ROOT / "model" / "serve.py").read_text()))
    assert {"--clipseg", "--inpaint", "--port", "--tiny"} <= flags
    for flag in flags:
        assert f"`{flag}" in doc, f"{flag} is not documented in docs/api.md"


def test_parse_request_from_dict_bytes_and_str():
    body = {"image": "aGk=", "prompts": [" skirt "]}
    for data in (body, json.dumps(body), json.dumps(body).encode()):
        req = parse_request("clipseg", data)
        assert req.prompts == ["skirt"]  # stripped
        assert req.negative_prompts is None and req.threshold == 0.4 and req.dilate == 8


def test_messages_name_field_rule_and_value():
    with pytest.raises(RequestError) as exc:
        parse_request("inpaint", {"image": "x", "mask": "y", "prompt": "p", "num_images": 99, "steps": "x" * 200})
    msg = exc.value.message
    assert exc.value.status == 400 and exc.value.code == "invalid_request"
    assert "`num_images`" in msg and "16" in msg and "99" in msg
    assert "`steps`" in msg and "..." in msg and len(msg) < 300  # long values are truncated
    with pytest.raises(RequestError, match=r"`seeds.1`.*2147483648"):
        parse_request("inpaint", {"image": "x", "mask": "y", "prompt": "p", "seeds": [1, 2**31]})


def test_numbers_accept_ints_but_not_strings_or_bools():
    base = {"image": "x", "mask": "y", "prompt": "p"}
    assert parse_request("inpaint", {**base, "guidance_scale": 7, "strength": 1}).guidance_scale == 7.0
    for bad in ({"seed": True}, {"num_images": 2.0}, {"crop": "yes"}, {"scheduler": "turbo"}):
        with pytest.raises(RequestError):
            parse_request("inpaint", {**base, **bad})


def test_candidate_seeds():
    base = {"image": "x", "mask": "y", "prompt": "p"}
    assert candidate_seeds(InpaintRequest(**base, seed=5, num_images=3)) == [5, 6, 7]
    assert candidate_seeds(InpaintRequest(**base, seed=2**31 - 1, num_images=2)) == [2**31 - 1, 0]
    assert candidate_seeds(InpaintRequest(**base, seed=5, num_images=3, seeds=[9, 1])) == [9, 1]
    random = candidate_seeds(InpaintRequest(**base, num_images=4))
    assert len(random) == 4 and all(0 <= s < 2**31 for s in random)
    assert random == list(range(random[0], random[0] + 4))


# -- handler stages ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("accept", [None, "", "*/*", "application/json", "application/json; charset=utf-8",
                                    "text/html, application/*;q=0.8", "image/png, */*;q=0.1"])
def test_negotiate_json(accept):
    assert negotiate(accept) == "application/json"
    assert json.loads(output_fn({"a": 1}, accept)) == {"a": 1}


@pytest.mark.parametrize("accept", ["image/png", "text/csv, text/html"])
def test_negotiate_refuses(accept):
    with pytest.raises(NotAcceptable) as exc:
        negotiate(accept)
    assert exc.value.status == 406 and accept in exc.value.message


def test_input_fn():
    assert input_fn(b'{"a": 1}', "application/json; charset=utf-8") == {"a": 1}
    assert input_fn('{"a": 1}', None) == {"a": 1}  # no Content-Type means JSON
    with pytest.raises(UnsupportedMediaType, match="image/png"):
        input_fn(b"{}", "image/png")
    with pytest.raises(PayloadTooLarge, match="6 MB"):
        input_fn(b" " * (MAX_PAYLOAD + 1), "application/json")
    for body, fragment in [(b"", "empty"), (b"[1]", "JSON object"), (b"{", "not valid JSON"),
                           (b"\xff\xfe", "not valid JSON"), (b"null", "JSON object")]:
        with pytest.raises(RequestError, match=fragment) as exc:
            input_fn(body, "application/json")
        assert exc.value.code == "malformed_json"


def test_response_over_6mb_is_refused(monkeypatch):
    monkeypatch.setitem(handlers.PREDICTORS, "clipseg", lambda data, engine: {"masks": ["A" * (MAX_PAYLOAD + 1)]})
    status, out, _ = handle(LoadedModel("clipseg", None, "x"), b'{"image": "x"}', "application/json", None)
    err = json.loads(out)["error"]
    assert status == 413 and err["code"] == "response_too_large" and "return_crop" in err["message"]


def test_detect_role(tmp_path, tiny_dir):
    assert detect_role(tiny_dir / "clipseg") == "clipseg"
    assert detect_role(tiny_dir / "inpaint") == "inpaint"
    with pytest.raises(RuntimeError, match="RESTYLE_ROLE"):
        detect_role(tmp_path)


def test_model_fn_reads_the_environment(monkeypatch, tiny_dir):
    monkeypatch.delenv("RESTYLE_MODEL_ID", raising=False)
    monkeypatch.delenv("RESTYLE_LORA", raising=False)
    monkeypatch.setenv("RESTYLE_ROLE", "clipseg")
    model = handlers.model_fn(str(tiny_dir / "clipseg"))
    assert model.role == "clipseg" and model.ref == str(tiny_dir / "clipseg")
    monkeypatch.setenv("RESTYLE_ROLE", "sdxl")
    with pytest.raises(RuntimeError, match="RESTYLE_ROLE"):
        handlers.model_fn(str(tiny_dir / "clipseg"))
