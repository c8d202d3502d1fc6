"""Start-up checks the bot's and the model's command lines share (standard library only, no torch).

Each answers *why not*, or None: callers word the message with their own flag names.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

#: torch device names the tools accept: ``cpu``, ``cuda``, ``cuda:N``, ``mps``.
DEVICE_PATTERN = re.compile(r"cpu|mps|cuda(?::\d+)?")


def bad_device(name: str) -> str | None:
    return None if DEVICE_PATTERN.fullmatch(name) else f"must be cpu, cuda, cuda:N or mps, got {name!r}"


def unwritable(folder: str | Path) -> OSError | None:
    """Create ``folder`` if need be and write and remove a probe file in it: None when that works, else the error —
    checked before minutes of model loading or training."""
    folder = Path(folder)
    probe = folder / f".restyle-probe-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        return exc
    return None
