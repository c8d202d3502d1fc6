"""``restyle chat PHOTO``: the Slack conversation in a terminal, models in-process (the embedded default)."""

from __future__ import annotations

import re
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from bot.engine import Engine
from bot.events import FavoritesList, Files, Message, Photo, Question, Reply, Swatch, Text, Variations

QUIT = {"quit", "exit", "q", ":q", "bye"}
#: Slack's markup around words (_italic_, *bold*, `code`) — not the underscores inside names and paths
_MARKUP = re.compile(r"(?<![\w/.])([_*`])(?=\S)(.+?)(?<=\S)\1(?![\w/]|\.\w)")


def plain(text: str) -> str:
    """A reply as terminal text: ``_use 2_`` → ``use 2``; ``RESTYLE_LORA`` and ``o_one/x.png`` stay as they are."""
    return _MARKUP.sub(r"\2", text)


class TerminalChat:
    def __init__(self, engine: Engine, out_dir: Path, *, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout,
                 progress: bool = True) -> None:
        self.engine = engine
        self.out_dir = out_dir
        self.stdin, self.stdout = stdin, stdout
        self.show_progress = progress
        self.thread = ""

    def say(self, text: str) -> None:
        print(plain(text), file=self.stdout, flush=True)

    def render(self, replies: list[Reply]) -> None:
        for r in replies:
            if isinstance(r, Variations | FavoritesList):
                self.say(r.text)
                self.out_dir.mkdir(parents=True, exist_ok=True)
                for item in r.items:
                    dest = self.out_dir / f"variation-{item.number:03d}.png"
                    shutil.copyfile(item.path, dest)  # this thread's #N, even where an earlier session left one
                    print(f"  #{item.number}: {dest}  (seed {item.seed})", file=self.stdout, flush=True)
                if r.sheet:
                    dest = self.out_dir / r.sheet.name
                    shutil.copyfile(r.sheet, dest)
                    print(f"  contact sheet: {dest}", file=self.stdout, flush=True)
                if isinstance(r, Variations) and r.mask_preview:
                    dest = self.out_dir / r.mask_preview.name
                    shutil.copyfile(r.mask_preview, dest)
                    print(f"  mask: {dest}", file=self.stdout, flush=True)
            elif isinstance(r, Files):  # a compare sheet, a lookbook PDF and ZIP
                self.say(r.text)
                self.out_dir.mkdir(parents=True, exist_ok=True)
                for path, title in r.files:
                    dest = self.out_dir / path.name
                    shutil.copyfile(path, dest)
                    print(f"  {title}: {dest}", file=self.stdout, flush=True)
            elif isinstance(r, Question):  # "Generate …?": the next line answers it (y / n)
                self.say(r.text.replace("(say _yes_ or _no_, or use the buttons)", "[y/n]"))
            elif isinstance(r, Text):
                self.say(r.text)

    def run_event(self, event) -> None:
        bar: tqdm | None = None

        def progress(done: int, total: int, text: str) -> None:
            nonlocal bar
            if not self.show_progress:
                return
            if bar is None:
                bar = tqdm(total=total, desc="generating", unit="step", file=sys.stderr, leave=False)
            elif bar.total != total:  # a batch in chunks, or async progress counted in candidates: one bar, resized
                bar.total = total
            bar.set_postfix_str(text[:40], refresh=False)
            bar.n = min(done, total)
            bar.refresh()

        try:
            replies = self.engine.handle(event, progress)
        finally:
            if bar is not None:
                bar.close()
        self.render(replies)

    def swatch(self, path: Path) -> None:
        """``swatch PATH``: the image at PATH becomes the thread's swatch (as sharing it in a Slack thread does)."""
        try:
            data = path.read_bytes()
        except OSError as exc:
            self.say(f"I can't read {path}: {exc.strerror or exc}")
            return
        self.run_event(Swatch(thread=self.thread, user="you", image=data, filename=path.name))

    def start(self, photo: Path) -> int:
        # unique even for two chats started in the same second on one data dir
        self.thread = f"term:{photo.stem}-{int(time.time())}-{uuid.uuid4().hex[:6]}"
        self.run_event(Photo(thread=self.thread, user="you", image=photo.read_bytes(), filename=photo.name))
        if not self.engine.store.has_thread(self.thread):
            return 2
        self.say("(type 'help' for commands, 'swatch PATH' to share a swatch or print, 'quit' to leave)")
        while True:
            print("you> ", end="", file=self.stdout, flush=True)
            line = self.stdin.readline()
            if not line:
                break
            text = line.strip()
            if not text:
                continue
            if text.lower() in QUIT:
                break
            if text.lower().startswith("swatch "):  # the terminal's way to share a swatch or print into the thread
                self.swatch(Path(text[len("swatch "):].strip().strip("'\"")).expanduser())
                continue
            self.run_event(Message(thread=self.thread, user="you", text=text))
        wrote = self.out_dir.is_dir() and any(self.out_dir.iterdir())
        print(f"bye — everything is in {self.out_dir}" if wrote else "bye", file=self.stdout, flush=True)
        return 0
