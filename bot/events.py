"""What adapters (Slack, terminal) hand the conversation engine, and what it hands back.

The engine imports nothing from Slack: an adapter turns a transport's payload into one of these events, calls
``Engine.handle(event, progress)`` and renders the returned replies its own way.

Threads are identified by an opaque string chosen by the adapter (Slack: ``"slack:C123:1700000000.000100"``,
terminal: ``"term:<photo-stem>-<n>"``).  Variations are numbered per thread, #1, #2, … across all turns, so "#2"
always means the same picture in a thread; each also has a unique ``id`` for buttons and reactions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal


# -- events --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Photo:
    """A photo starts a thread; ``text`` is any message that came with it (it may already be a prompt)."""

    thread: str
    user: str
    image: bytes
    filename: str = ""
    text: str = ""


@dataclass(frozen=True)
class Swatch:
    """An image shared into a thread that already has its photo: a fabric swatch or print to paint garments after
    ("use this print on the dress")."""

    thread: str
    user: str
    image: bytes
    filename: str = ""
    text: str = ""


@dataclass(frozen=True)
class Message:
    """A text reply in a thread: a prompt, a follow-up, 'fav 2', 'undo', 'help' …  ``addressed``: said to restyle
    (a mention, a DM, the terminal) rather than among people in a channel thread — chatter there gets no answer."""

    thread: str
    user: str
    text: str
    addressed: bool = True


@dataclass(frozen=True)
class Favorite:
    """⭐ ❤️ 👍 on a variation (added=False when the reaction is removed) or its Favourite button."""

    thread: str
    user: str
    variation_id: str
    added: bool = True
    source: str = ""  # the reaction's name ("star", "heart", "+1") or "button"; "" for words ("fav 2")
    at: float | None = None  # when the reaction happened (Slack's event_ts): orders events that arrive out of order


@dataclass(frozen=True)
class Use:
    """'Use as base' button: later edits start from this variation."""

    thread: str
    user: str
    variation_id: str


@dataclass(frozen=True)
class MoreLike:
    """'More like this' button: new candidates with the same prompt, based on the variation's own turn."""

    thread: str
    user: str
    variation_id: str
    count: int | None = None


@dataclass(frozen=True)
class Answer:
    """The Generate / Not that buttons under restyle's question ("Generate …?"); ``question`` is its id."""

    thread: str
    user: str
    question: str
    yes: bool


@dataclass(frozen=True)
class Command:
    """A slash command's text (``/restyle batch 8 pastel`` → ``"batch 8 pastel"``) for a thread."""

    thread: str | None
    user: str
    text: str


Event = Photo | Swatch | Message | Favorite | Use | MoreLike | Answer | Command


# -- replies -------------------------------------------------------------------------------------------------------
@dataclass
class Text:
    text: str
    kind: Literal["info", "error", "help", "chatter"] = "info"  # chatter: small talk, unsaid in channel threads


@dataclass
class Question:
    """restyle asks before spending GPU time on a message it is not sure about: ``text`` says what it understood;
    adapters offer Generate / Not that (Slack buttons carrying ``id``; "y/n" in the terminal)."""

    id: str
    text: str
    kind: Literal["question"] = "question"


@dataclass
class VariationOut:
    id: str  # unique, for buttons/reactions
    number: int  # the thread's #number
    path: Path  # full-size PNG on disk
    seed: int
    caption: str


@dataclass
class Variations:
    """A finished generation: one contact sheet + each variation on its own."""

    turn_id: str
    text: str
    items: list[VariationOut]
    sheet: Path | None = None
    mask_preview: Path | None = None


@dataclass
class FavoritesList:
    text: str
    items: list[VariationOut] = field(default_factory=list)
    sheet: Path | None = None


@dataclass
class Files:
    """Files made from the thread's variations — a compare sheet, a lookbook PDF and its ZIP — with ``text`` to
    say; adapters upload each file into the thread (Slack) or copy it to their out dir (the terminal)."""

    text: str
    files: list[tuple[Path, str]]  # (path, title)
    kind: Literal["compare", "lookbook"] = "compare"


Reply = Text | Question | Variations | FavoritesList | Files
