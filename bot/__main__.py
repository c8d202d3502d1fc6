"""``restyle`` / ``python -m bot``: ``chat PHOTO`` (terminal) or ``slack`` (Socket Mode / HTTP)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from bot.settings import Settings


def _common(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--tiny", action="store_true", default=None,
                    help="use tiny random checkpoints (walks the whole flow offline; pixels are noise)")
    ap.add_argument("--backend", choices=["local", "sagemaker"], help="env RESTYLE_BACKEND (default local)")
    ap.add_argument("--data-dir", type=Path, help="env RESTYLE_DATA_DIR: sessions + images")
    ap.add_argument("--clipseg", dest="clipseg_model", help="env RESTYLE_CLIPSEG_MODEL: Hub id or folder")
    ap.add_argument("--inpaint", dest="inpaint_model", help="env RESTYLE_INPAINT_MODEL: Hub id or folder")
    ap.add_argument("--upscale", dest="upscale_model",
                    help="env RESTYLE_UPSCALE_MODEL: the x4 upscaler's Hub id or folder (loaded on first 'upscale #N')")
    ap.add_argument("--lora", help="env RESTYLE_LORA: LoRA adapter folder or Hub id")
    ap.add_argument("--device", help="env RESTYLE_DEVICE: cpu, cuda …")
    ap.add_argument("--steps", type=int, help="env RESTYLE_STEPS (default 30)")
    ap.add_argument("--count", dest="num_images", type=int, help="env RESTYLE_NUM_IMAGES: variations per prompt")
    ap.add_argument("--log-level", default="WARNING", type=str.upper,
                    choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog="restyle", description="restyle: garment variations from a photo")
    sub = ap.add_subparsers(dest="cmd", required=True)
    chat = sub.add_parser("chat", help="talk to restyle in the terminal about one photo")
    chat.add_argument("photo", type=Path)
    chat.add_argument("--out", type=Path, help="folder for variations and contact sheets (default ./restyle-out/STEM)")
    _common(chat)
    slack = sub.add_parser("slack", help="run the Slack bot (Socket Mode; --http for the Events API)")
    slack.add_argument("--http", action="store_true", help="serve the Events API over HTTP instead of Socket Mode")
    slack.add_argument("--port", type=int, default=3000, help="HTTP mode: the Events API port (default 3000)")
    slack.add_argument("--host", default="127.0.0.1",
                       help="bind address for --http and --health-port (default 127.0.0.1; 0.0.0.0 in a container)")
    slack.add_argument("--health-port", type=int,
                       help="env RESTYLE_HEALTH_PORT: serve GET /healthz on this port (Socket Mode's only port; "
                            "HTTP mode serves it on --port as well)")
    _common(slack)
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if logging.getLogger().getEffectiveLevel() >= logging.WARNING:
        # transformers/diffusers warn about things a restyle user cannot act on (no torchvision, dtype casts);
        # --log-level INFO or DEBUG shows them again
        # (the libraries read these when they set up their loggers, on import)
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    overrides = {k: getattr(args, k) for k in ("tiny", "backend", "data_dir", "clipseg_model", "inpaint_model",
                                               "upscale_model", "lora", "device", "steps", "num_images")}
    try:
        settings = Settings.from_env(**overrides)
        _writable(settings.data_dir, "--data-dir / RESTYLE_DATA_DIR")
    except ValueError as exc:
        print(f"restyle: {exc}", file=sys.stderr)
        return 2
    logging.getLogger("restyle").info("settings: %s", settings.redacted())  # tokens and secrets masked
    if settings.backend == "local" and logging.getLogger().getEffectiveLevel() >= logging.WARNING:
        # "loading models…" is our one line: not the libraries' loading/saving progress bars
        from diffusers.utils import logging as diffusers_logging
        from transformers.utils import logging as transformers_logging

        diffusers_logging.disable_progress_bar()
        transformers_logging.disable_progress_bar()
    if args.cmd == "chat":
        return _chat(args, settings)
    from bot import slack_app

    argv = ["--host", args.host, "--port", str(args.port)] + (["--http"] if args.http else [])
    if args.health_port is not None:
        argv += ["--health-port", str(args.health_port)]
    return slack_app.main(argv, settings)


def _writable(folder: Path, what: str) -> None:
    """``folder`` exists (created if need be) and takes files — checked before minutes of model loading."""
    from model.checks import unwritable

    if exc := unwritable(folder):
        raise ValueError(f"{what}: cannot write to {folder} ({exc.strerror or type(exc).__name__})")


def _fresh_out(stem: str) -> Path:
    """``./restyle-out/STEM``, or ``STEM-2``, ``STEM-3``… when an earlier session already filled it (its
    variation-001.png is another picture than this session's #1)."""
    root = Path("restyle-out")
    for i in range(1, 1000):
        out = root / (stem if i == 1 else f"{stem}-{i}")
        if not out.exists() or not any(out.iterdir()):
            return out
    return root / stem


def _chat(args, settings: Settings) -> int:
    from bot.engine import read_photo, start_engine
    from bot.events import Text
    from bot.terminal import TerminalChat, plain

    if not args.photo.is_file():
        print(f"restyle: no such photo: {args.photo}", file=sys.stderr)
        return 2
    photo = read_photo(args.photo.read_bytes(), args.photo.name)  # before minutes of model loading
    if isinstance(photo, Text):
        print(f"restyle: {plain(photo.text)}", file=sys.stderr)
        return 2
    out = args.out or _fresh_out(args.photo.stem)
    try:
        _writable(out, "--out")
    except ValueError as exc:
        print(f"restyle: {exc}", file=sys.stderr)
        return 2
    engine = start_engine(settings)
    if engine is None:
        return 2
    if hasattr(sys.stdin, "reconfigure"):  # a stray byte that is not UTF-8 becomes "�", not a failed turn
        sys.stdin.reconfigure(errors="replace")
    return TerminalChat(engine, out).start(args.photo)


if __name__ == "__main__":
    raise SystemExit(main())
