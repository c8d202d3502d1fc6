"""``restyle chat PHOTO``: the Slack conversation in a terminal, models in-process (the embedded default)."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from bot.engine import Engine
from bot.events import FavoritesList, Message, Photo, Reply, Text, Variations

QUIT = {"quit", "exit", "q", ":q", "bye"}


class TerminalChat:
    def __init__(self, engine: Engine, out_dir: Path, *, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout,
                 progress: bool = True) -> None:
        self.engine = engine
        self.out_dir = out_dir
        self.stdin, self.stdout = stdin, stdout
        self.show_progress = progress
        self.thread = ""

    def say(self, text: str) -> None:
        print(text.replace("*", "").replace("_", ""), file=self.stdout, flush=True)

    def render(self, replies: list[Reply]) -> None:
        for r in replies:
            if isinstance(r, Variations | FavoritesList):
                self.say(r.text)
                self.out_dir.mkdir(parents=True, exist_ok=True)
                for item in r.items:
                    dest = self.out_dir / f"variation-{item.number:03d}.png"
                    if not dest.exists():
                        shutil.copyfile(item.path, dest)
                    self.say(f"  #{item.number}: {dest}  (seed {item.seed})")
                if r.sheet:
                    dest = self.out_dir / r.sheet.name
                    shutil.copyfile(r.sheet, dest)
                    self.say(f"  contact sheet: {dest}")
                if isinstance(r, Variations) and r.mask_preview:
                    dest = self.out_dir / r.mask_preview.name
                    shutil.copyfile(r.mask_preview, dest)
                    self.say(f"  mask: {dest}")
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

    def start(self, photo: Path) -> int:
        self.thread = f"term:{photo.stem}-{int(time.time())}"
        self.run_event(Photo(thread=self.thread, user="you", image=photo.read_bytes(), filename=photo.name))
        if not self.engine.store.has_thread(self.thread):
            return 2
        self.say("(type 'help' for commands, 'quit' to leave)")
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
            self.run_event(Message(thread=self.thread, user="you", text=text))
        self.say(f"bye — everything is in {self.out_dir}")
        return 0
