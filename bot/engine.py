"""The conversation engine: events in, replies out.  Imports nothing from Slack or the terminal.

``Engine.handle(event, progress)`` runs one event to completion (generation included) and returns the replies;
adapters decide *where* that runs (``needs_generation`` tells them to ack first and use the job queue) and *how*
replies look.  All state lives in ``Store``; the engine keeps none between calls, so any worker can run any event.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from bot import messages as T
from bot.backends import Backend, BackendBusy, BackendError, BackendUnavailable, Paint, build_backend
from bot.controls import Controls
from bot.events import (
    Answer,
    Command,
    Event,
    Favorite,
    FavoritesList,
    Message,
    MoreLike,
    Photo,
    Question,
    Reply,
    Swatch,
    Text,
    Use,
    VariationOut,
    Variations,
)
from bot.intent import BACKGROUND_NEGATIVE, GARMENTS, Action, Context, Intent, Reading, plain_prompt, read
from bot.render import contact_sheet
from bot.settings import Settings
from bot.store import Store, Turn, Variation, save_png
from model import compose
from model.errors import ImageTooLarge, InvalidImage
from model.images import decode_image, decode_mask
from model.masks import bbox
from model.masks import resize as resize_mask
from model.schemas import (
    DEFAULT_LOOK,
    LOOK_PATTERN,
    MAX_IMAGES,
    NO_LOOK,
    SegmentRequest,
    min_steps,
)

log = logging.getLogger("restyle.engine")
Progress = Callable[[int, int, str], None]
#: Mask previews (the tinted photo shown with each turn) are at most this many pixels a side.
PREVIEW_MAX_SIDE = 1024
#: Photos with a side shorter than this are refused (CLIPSeg reads 352², SD paints 512²: an icon has no garment)
MIN_PHOTO_SIDE = 64
#: Swatches may be small crops of a fabric; the image encoder reads 224² anyway
SWATCH_MIN_SIDE = 16
SETTING_RANGES = {"steps": (1, 150, int), "guidance": (0.0, 30.0, float), "seed": (0, 2**31 - 1, int),
                  "count": (1, MAX_IMAGES, int), "strength": (0.05, 1.0, float),
                  # the garment mask: grown by `grow` pixels (on the ≤1024 px copy CLIPSeg sees), `threshold` the
                  # probability above which a pixel is garment (lower: larger masks)
                  "grow": (0, 128, int), "threshold": (0.05, 0.95, float)}
#: How closely a garment follows the thread's swatch ("use this print on the dress"): the IP-Adapter scale, and the
#: step "a bit less / more like the swatch" moves it by.
SWATCH_SCALE, SWATCH_STEP, SWATCH_RANGE = 0.6, 0.2, (0.1, 1.0)
#: What CLIPSeg is asked for when a background is repainted: the person and the parts the garment masks protect;
#: their union is kept, bit-identical, and everything else is the background.
PERSON_PARTS = ("person", "face", "hands", "hair")
MASK_DEFAULTS = {"grow": SegmentRequest.model_fields["dilate"].default,
                 "threshold": SegmentRequest.model_fields["threshold"].default}


@dataclass
class Job:
    """One generation, fully resolved before any pixel is made."""

    thread: str
    user: str
    text: str
    intent: Intent
    garments: list[str]
    target: str | None
    attributes: list[str]
    prompt: str
    negative_prompt: str
    base_path: Path
    strength: float
    count: int
    batch: bool = False
    colourway: str = ""  # "navy": one of several colourways asked for in one message
    note: str = ""  # said after the result (a request trimmed to what the team's quotas leave)
    swatch: Path | None = None  # the thread's swatch, painted after (IP-Adapter) at ``swatch_scale``
    swatch_scale: float = 0.0


class Engine:
    def __init__(self, store: Store, backend: Backend, settings: Settings) -> None:
        self.store = store
        self.backend = backend
        self.settings = settings
        self.controls = Controls(store, settings)  # quotas, caps, admins (bot/controls.py)
        interrupted = store.mark_interrupted()
        if interrupted:
            log.warning("%d turn(s) were interrupted by a restart; they will be reported in their threads",
                        interrupted)

    # -- adapter API -----------------------------------------------------------------------------------------------
    def needs_generation(self, event: Event) -> bool:
        """Will handling ``event`` generate pictures (so an adapter should ack first and queue it)?  A message that
        restyle will only ask about ("Generate …?") does not."""
        if isinstance(event, MoreLike):
            return True
        if isinstance(event, Answer):
            return event.yes and (self.store.pending(event.thread) or {}).get("id") == event.question
        if isinstance(event, Command):
            return event.text.strip().lower().startswith("batch")
        if isinstance(event, Photo):
            return bool(event.text.strip()) and _makes_pictures(_read(event.text)) and not self._asks(None, event.text)
        if isinstance(event, Swatch):
            return bool(event.text.strip()) and _makes_pictures(_read(event.text)) \
                and not self._asks(event.thread, event.text)
        if isinstance(event, Message):
            reading = _read(event.text)
            if reading.action == Action.CONFIRM:
                return self.store.has_thread(event.thread) and self.store.pending(event.thread) is not None
            return _makes_pictures(reading) and not self._asks(event.thread, event.text)
        return False

    def _asks(self, thread: str | None, text: str) -> bool:
        """Will restyle ask before generating ``text`` in ``thread`` (it is not sure what was meant)?"""
        return self._intent(thread, text).ambiguous

    def preview_batch(self, thread: str, user: str, text: str) -> Job | Text:
        """What ``batch …`` in ``thread`` will generate — its count and prompt, planned as the generation will
        plan it — so an adapter can answer at once with what is coming (or why nothing is)."""
        reading = _read(text)
        if not reading.generates:
            return Text(T.NO_GARMENT)
        plan = self._plan(thread, user, text, reading, batch=True)
        plan = self.controls.admit(plan) if isinstance(plan, list) else plan  # refused or trimmed by quotas
        return plan[0] if isinstance(plan, list) else plan

    def pending_notices(self, prefix: str = "") -> list[tuple[str, Text]]:
        """Interrupted turns not yet reported in threads whose id starts with ``prefix``, for adapters to post
        at start-up (each adapter asks for its own threads; the others stay for their next message)."""
        out = []
        for turn in self.store.unreported_interruptions():
            if not turn.thread.startswith(prefix):
                continue
            if self.store.mark_reported(turn.id):  # False: another replica claimed it and tells it
                out.append((turn.thread, Text(T.INTERRUPTED.format(text=turn.text), kind="error")))
        return out

    def handle(self, event: Event, progress: Progress | None = None) -> list[Reply]:
        thread = getattr(event, "thread", None)
        notices: list[Reply] = []
        if thread and self.store.has_thread(thread):
            for turn in self.store.unreported_interruptions(thread):
                if self.store.mark_reported(turn.id):  # told once, by whichever replica claims it
                    notices.append(Text(T.INTERRUPTED.format(text=turn.text), kind="error"))
        try:
            replies = self._dispatch(event, progress)
            if isinstance(event, Message) and not event.addressed:
                # people talking among themselves in a channel thread: small talk is theirs, restyle stays quiet
                replies = [r for r in replies if not (isinstance(r, Text) and r.kind == "chatter")]
            return notices + replies
        except BackendError as exc:
            return notices + [Text(T.MODEL_REFUSED.format(why=exc.message), kind="error")]
        except BackendBusy as exc:
            return notices + [Text(T.MODEL_BUSY.format(why=exc), kind="error")]
        except BackendUnavailable as exc:
            return notices + [Text(T.MODEL_DOWN.format(why=exc), kind="error")]
        except Exception as exc:
            from model.loading import ModelUnavailable

            if isinstance(exc, ModelUnavailable):
                return notices + [Text(T.MODEL_MISSING.format(why=exc), kind="error")]
            log.exception("engine failed on %s", type(event).__name__)
            return notices + [Text(T.FAILED, kind="error")]

    # -- dispatch --------------------------------------------------------------------------------------------------
    def _dispatch(self, event: Event, progress: Progress | None) -> list[Reply]:
        if isinstance(event, Photo):
            return self._photo(event, progress)
        if event.thread is None or not self.store.has_thread(event.thread):
            if isinstance(event, Command) and event.text.strip().lower() in ("help", ""):
                return [Text(T.HELP, kind="help")]
            return [Text(T.NO_THREAD, kind="error")]
        if isinstance(event, Swatch):
            return self._swatch(event, progress)
        if isinstance(event, Answer):
            return self._answer(event, progress)
        if isinstance(event, Favorite):
            return self._favorite_id(event.thread, event.user, event.variation_id, event.added, event.source,
                                     event.at)
        if isinstance(event, Use):
            v = self.store.variation(event.variation_id)
            return self._use(event.thread, v.number if v else -1)
        if isinstance(event, MoreLike):
            v = self.store.variation(event.variation_id)
            if v is None:
                return [Text(T.GONE_VARIATION, kind="error")]
            text = f"{event.count or ''} more like #{v.number}".strip()
            return self._text(event.thread, event.user, text, progress)
        if isinstance(event, Command):
            text = event.text.strip()
            if text.lower() in ("favorites", "favourites", "favs"):
                return [self._favorites(event.thread)]
            return self._text(event.thread, event.user, text, progress, batch=text.lower().startswith("batch"))
        if isinstance(event, Message):
            if not event.addressed and _read(event.text).statement:
                # "the skirt is too short" among people in a channel thread: theirs to discuss; with a mention or
                # in a DM restyle asks whether to make it
                return []
            return self._text(event.thread, event.user, event.text, progress)
        raise TypeError(f"unknown event {event!r}")

    def _photo(self, event: Photo, progress: Progress | None) -> list[Reply]:
        image = read_photo(event.image, event.filename)
        if isinstance(image, Text):
            return [image]
        self.store.create_thread(event.thread, event.user, image)
        notes = []
        if "source_size" in image.info:  # a 48 MP camera's JPEG: decoded at half size
            (sw, sh), (w, h) = image.info["source_size"], image.size
            notes = [Text(T.SCALED_PHOTO.format(size=f"{sw}x{sh}", mp=sw * sh / 1e6, working=f"{w}x{h}"))]
        if event.text.strip() and (_makes_pictures(_read(event.text)) or _read(event.text).action == Action.SETTINGS):
            return notes + self._text(event.thread, event.user, event.text, progress)
        return [Text(T.GOT_PHOTO)] + notes

    def _context(self, thread: str | None) -> Context:
        """The look a follow-up without #N refines: the last turn's (or the ``use``d variation's) garments."""
        if thread is None or not self.store.has_thread(thread):
            return Context()
        return _context_of(self.store.context(thread))

    def _intent(self, thread: str | None, text: str) -> Intent:
        """``text`` resolved on the look it refines: #N's when it names one, else the thread's."""
        reading = _read(text)
        if reading.variation is not None and thread is not None and self.store.has_thread(thread):
            source = self.store.variation_by_number(thread, reading.variation)
            turn = self.store.turn(source.turn) if source else None
            if turn is not None:
                return reading.resolve(_turn_context(turn))
        return reading.resolve(self._context(thread))

    def _text(self, thread: str, user: str, text: str, progress: Progress | None, *, batch: bool = False,
              confirmed: bool = False) -> list[Reply]:
        reading = _read(text)
        action = reading.action
        if action not in (Action.CONFIRM, Action.CANCEL):
            self.store.set_pending(thread, None)  # a new message replaces any question still open
        if action == Action.CONFIRM:
            pending = self.store.take_pending(thread)
            if pending is None:
                return [Text(T.NOTHING_PENDING, kind="chatter")]
            return self._text(thread, pending["user"], pending["text"], progress, batch=pending.get("batch", False),
                              confirmed=True)
        if action == Action.CANCEL:
            if self.store.take_pending(thread) is None:
                return [Text(T.NOTHING_PENDING, kind="chatter")]
            return [Text(T.CANCELLED)]
        if action == Action.HELP:
            if reading.topic in T.HOWTO:
                return [Text(T.HOWTO[reading.topic].format(max_batch=self.settings.max_batch), kind="help")]
            return [Text(T.HELP, kind="help")]
        if action == Action.FAVORITE:
            if reading.variation is None:
                return [self._favorites(thread)]
            v = self.store.variation_by_number(thread, reading.variation)
            if v is None:
                return [Text(T.NO_VARIATION.format(number=reading.variation), kind="error")]
            return self._favorite_id(thread, user, v.id, True)
        if action == Action.USE:
            if reading.variation is None:
                return [Text(T.WHICH)]
            return self._use(thread, reading.variation)
        if action == Action.INFO:
            return self._info(thread, reading.variation)
        if action == Action.UNDO:
            return self._undo(thread)
        if action == Action.RESET:
            look = self.store.context(thread)
            if look.get("attributes") or any(look.get("per_garment", {}).values()):
                # "start over": the original photo, and the look forgotten (its garments stay: "make it green")
                self.store.set_context(thread, {**look, "attributes": [],
                                                "per_garment": {g: [] for g in look.get("garments", [])}})
            elif not self.store.base(thread)[1]:
                return [Text(T.NOTHING_TO_UNDO)]
            self.store.clear_base(thread)
            return [Text(T.UNDONE.format(what="the original photo"))]
        if action == Action.SETTINGS:
            if (capped := self.controls.refuse_setting(thread, user, reading.settings)) is not None:
                return [capped]
            return self._settings(thread, reading.settings)
        if action == Action.COMPARE:  # side by side: never generates, never moves the thread's picture
            from bot.compare import compare

            return [compare(self, thread, list(reading.variations))]
        if action == Action.LOOKBOOK:
            from bot.lookbook import lookbook

            return [lookbook(self, thread)]
        if action == Action.UPSCALE:
            return self._upscale(thread, user, text, reading, progress)
        if reading.generates or action == Action.BACKGROUND:
            plan = self._plan(thread, user, text, reading, batch=batch)
            if isinstance(plan, Text):
                return [plan]
            plan = self.controls.admit(plan)  # quotas, before any model call: refused, trimmed or as asked
            if isinstance(plan, Text):
                return [plan]
            if plan[0].intent.ambiguous and not confirmed:
                return [self._ask(thread, user, text, batch, plan)]
            return self._generate(plan, progress)
        return [self._unknown(reading)]

    def _unknown(self, reading: Reading) -> Text:
        """The answer to a message restyle does not act on: what it cannot do and the nearest thing it can."""
        topic = reading.topic
        if topic == "thanks":
            return Text(T.WELCOME, kind="chatter")
        if topic == "praise":
            return Text(T.GLAD, kind="chatter")
        if topic == "removal":
            what = next((n for n in reading.negatives if n in GARMENTS), "garment")
            return Text(T.UNSUPPORTED["removal"].format(what=what))
        if topic in T.UNSUPPORTED:
            return Text(T.UNSUPPORTED[topic])
        return Text(T.UNKNOWN, kind="chatter")  # people talking in the thread; a mention or DM gets the hint

    def _ask(self, thread: str, user: str, text: str, batch: bool, jobs: list[Job]) -> Question:
        """Not sure what was meant: say what was understood and wait for yes / no (nothing is spent until then)."""
        job = jobs[0]
        qid = uuid.uuid4().hex[:12]
        self.store.set_pending(thread, {"id": qid, "user": user, "text": text, "batch": batch})
        n = sum(j.count for j in jobs)
        ways = f" in {len(jobs)} colourways ({', '.join(j.colourway for j in jobs)})" if len(jobs) > 1 else ""
        summary = (f"{n} variation{'s' if n != 1 else ''} of the {' and '.join(job.garments)} as "
                   f"_{plain_prompt(job.prompt) if len(jobs) == 1 else plain_prompt(job.prompt) + ' …'}_{ways}, "
                   f"from {self._source_name(job.thread, job.base_path)}")
        topic = job.intent.topic
        note = T.ASK_TOPIC.format(what=T.TOPIC_NAMES.get(topic, topic)) if topic in T.TOPIC_NAMES else ""
        return Question(id=qid, text=T.ASK.format(summary=summary) + note)

    def _answer(self, event: Answer, progress: Progress | None) -> list[Reply]:
        pending = self.store.take_pending(event.thread, event.question)
        if pending is None:
            return [Text(T.QUESTION_GONE)]
        if not event.yes:
            return [Text(T.CANCELLED)]
        return self._text(event.thread, pending["user"], pending["text"], progress,
                          batch=pending.get("batch", False), confirmed=True)

    def _source_name(self, thread: str, base_path: Path | str) -> str:
        source = self.store.variation_by_path(thread, base_path)
        return f"#{source.number}" if source else "the original photo"

    # -- small actions ---------------------------------------------------------------------------------------------
    def _favorite_id(self, thread: str, user: str, variation_id: str, on: bool, source: str = "",
                     at: float | None = None) -> list[Reply]:
        v = self.store.variation(variation_id)
        if v is None or v.thread != thread:
            return [Text(T.GONE_VARIATION, kind="error")]
        still = self.store.set_favorite(v.id, user, on, source, at)
        if still is None:
            log.info("ignored an out-of-date %s of %r on #%d (a later one was already handled)",
                     "mark" if on else "removal", source, v.number)
            return []
        if not on and still:  # ❤️ removed, ⭐ still there: nothing changed for the person
            return []
        return [Text((T.FAVORITED if on else T.UNFAVORITED).format(number=v.number))]

    def _favorites(self, thread: str) -> FavoritesList:
        favs = self.store.favorites(thread)
        if not favs:
            return FavoritesList(T.NO_FAVORITES)
        items = [self._out(v, "") for v in favs]
        sheet = self._sheet(thread, "favorites", favs, "Favourites")
        return FavoritesList(T.FAVORITES.format(numbers=", ".join(f"#{v.number}" for v in favs)), items, sheet)

    def _use(self, thread: str, number: int) -> list[Reply]:
        v = self.store.variation_by_number(thread, number)
        if v is None:
            return [Text(T.NO_VARIATION.format(number=number) if number > 0 else T.GONE_VARIATION, kind="error")]
        _, current = self.store.base(thread)
        if current is None or current.id != v.id:  # already on #2 ("#2 in denim" went there): one undo step
            self.store.push_base(thread, v.id)
        turn = self.store.turn(v.turn)
        if turn is not None:  # "use 2" then "make it longer": #2's look, longer
            self.store.set_context(thread, _look_of_turn(turn))
        return [Text(T.USING.format(number=v.number))]

    def _info(self, thread: str, number: int) -> list[Reply]:
        """How #N was made: its seed, the picture it came from, the prompt and the settings."""
        v = self.store.variation_by_number(thread, number)
        turn = self.store.turn(v.turn) if v else None
        if v is None or turn is None:
            return [Text(T.NO_VARIATION.format(number=number), kind="error")]
        source = self.store.variation_by_path(thread, turn.base)
        made = turn.intent.get("made_with", {})
        mask = {k: val for k, val in made.get("mask", {}).items() if MASK_DEFAULTS.get(k) != val}  # what was set
        how = ", ".join([f"{k}={made[k]:g}" for k in ("steps", "guidance") if k in made] +
                        [f"strength={turn.strength:g}"] + ([f"look={made['look']}"] if made.get("look") else []) +
                        [f"{k}={val:g}" for k, val in mask.items()])
        return [Text(T.INFO.format(number=v.number, seed=v.seed, base=f"#{source.number}" if source else
                                   "the original photo", garments=" and ".join(turn.garments),
                                   prompt=turn.prompt, negative=f" (avoiding: {turn.negative_prompt})"
                                   if turn.negative_prompt else "", how=how))]

    def _undo(self, thread: str) -> list[Reply]:
        if self.store.pop_base(thread) is None:
            return [Text(T.NOTHING_TO_UNDO)]
        _, base = self.store.base(thread)
        return [Text(T.UNDONE.format(what=f"#{base.number}" if base else "the original photo"))]

    def _settings(self, thread: str, values: dict) -> list[Reply]:
        clean = {}
        for key, value in values.items():
            if key in ("look", "model"):  # a brand look (LoRA) the inpainting endpoint serves; "model" is an alias
                why = self._bad_look(str(value))
                if why:
                    return [Text(T.BAD_SETTING.format(key=key, value=value, why=why), kind="error")]
                clean["look"] = str(value).lower()
                continue
            if key == "grow_by":  # "make the mask bigger" / "tighter mask": relative to the thread's current grow
                current = int(self._effective({**self.store.settings(thread), **clean})["grow"])
                clean["grow"] = min(max(current + int(value), SETTING_RANGES["grow"][0]), SETTING_RANGES["grow"][1])
                continue
            if key not in SETTING_RANGES:
                return [Text(T.BAD_SETTING.format(key=key, value=value,
                                                  why=f"known settings are {', '.join([*SETTING_RANGES, 'look'])}"),
                             kind="error")]
            lo, hi, typ = SETTING_RANGES[key]
            why = f"it must be {'a whole number' if typ is int else 'a number'} from {lo} to {hi}"
            try:
                v = typ(value)
            except (TypeError, ValueError):
                return [Text(T.BAD_SETTING.format(key=key, value=value, why=why), kind="error")]
            if not lo <= v <= hi:
                return [Text(T.BAD_SETTING.format(key=key, value=value, why=why), kind="error")]
            clean[key] = v
        merged = self.store.update_settings(thread, clean) if clean else self.store.settings(thread)
        summary = self._effective(merged)
        if "look" not in merged and not self.backend.looks():  # no looks to choose from: say nothing of them
            summary.pop("look")
        return [Text(T.SETTINGS.format(summary=", ".join(f"{k}={v}" for k, v in summary.items())))]

    def _bad_look(self, look: str) -> str | None:
        """Why ``look`` cannot be used, or None.  The local backend knows its looks; an endpoint's are checked by the
        endpoint itself on the next generation (``unknown_look``)."""
        look = look.lower()
        if look in (DEFAULT_LOOK, NO_LOOK):
            return None
        if not re.fullmatch(LOOK_PATTERN, look):
            return "a look is named with letters, digits, '-' and '_'"
        known = self.backend.looks()
        if known is not None and look not in known:
            return (f"the looks here are {', '.join(known)}, `{DEFAULT_LOOK}` and `{NO_LOOK}`" if known else
                    f"no brand looks are loaded (RESTYLE_LORA); only `{DEFAULT_LOOK}` is known")
        return None

    def _effective(self, thread_settings: dict) -> dict:
        s = self.settings
        return {"steps": thread_settings.get("steps", s.steps), "guidance": thread_settings.get("guidance", s.guidance),
                "count": thread_settings.get("count", s.num_images),
                "strength": thread_settings.get("strength", s.vary_strength),
                "seed": thread_settings.get("seed", "random"), "look": thread_settings.get("look", DEFAULT_LOOK),
                **{k: thread_settings.get(k, v) for k, v in MASK_DEFAULTS.items()}}

    # -- planning a generation -------------------------------------------------------------------------------------
    def _plan(self, thread: str, user: str, text: str, reading: Reading, *, batch: bool = False) -> list[Job] | Text:
        """Resolve a generating message into jobs: one, or one per colourway.  The look comes from #N's turn when
        the message names #N, else from the thread's context; the picture from #N, else the thread's base."""
        eff = self._effective(self.store.settings(thread))
        base_path, _ = self.store.base(thread)
        strength = 1.0
        repeated: Turn | None = None  # the turn a follow-up repeats as it was ("more like #3", "8 more")
        named = [src for src, _, _ in reading.named]  # garments the message itself names
        action = Action.BATCH if batch else reading.action
        if reading.variation is not None:
            source = self.store.variation_by_number(thread, reading.variation)
            if source is None:
                return Text(T.NO_VARIATION.format(number=reading.variation), kind="error")
            turn = self.store.turn(source.turn)
            intent = reading.resolve(_turn_context(turn))  # "#2 but longer": #2's own look, plus "long"
            base_path, strength = source.path, float(eff["strength"])
            if _repeats(intent, named, turn):
                intent, repeated = _with_prompt(intent, turn.prompt, turn.negative_prompt), turn
        else:
            intent = reading.resolve(self._context(thread))
            if action == Action.VARY:  # "8 more like that": the last turn again, new seeds
                last = self.store.last_turn(thread)
                if last is None:
                    return Text(T.NO_PREVIOUS)
                base_path, strength = Path(last.base), last.strength
                if _repeats(intent, named, last):
                    intent, repeated = _with_prompt(intent, last.prompt, last.negative_prompt), last
            elif action == Action.BATCH:  # "batch 8": the last prompt again, from the current base
                last = self.store.last_turn(thread)
                if last is not None and _repeats(intent, named, last):
                    intent, repeated = _with_prompt(intent, last.prompt, last.negative_prompt), last
        garments = list(intent.garments)
        if repeated is not None:  # the context names one garment; "the top white and the skirt black" has two
            garments = list(repeated.garments) or garments
        if not garments or not intent.prompt:
            return Text(T.NO_GARMENT)
        swatch, scale = self._swatch_for(thread, reading, repeated)
        if isinstance(swatch, Text):
            return swatch
        cap = self.settings.max_batch if action == Action.BATCH or intent.colourways else MAX_IMAGES
        cap = self.controls.count_cap(thread, user, cap, batch=action == Action.BATCH or bool(intent.colourways))
        count = min(intent.count or int(eff["count"]), cap)

        def job(it: Intent, n: int, colourway: str = "") -> Job:
            return Job(thread=thread, user=user, text=text, intent=it, garments=garments, target=it.target,
                       attributes=list(it.attributes), prompt=it.prompt, negative_prompt=it.negative_prompt,
                       base_path=base_path, strength=strength, count=n, batch=action == Action.BATCH,
                       colourway=colourway, swatch=swatch, swatch_scale=scale)

        if not intent.colourways or repeated is not None:
            return [job(intent, count)]
        ways = intent.colourways[:cap]  # "in 20 colours" with a cap of 16: the first 16, one each
        per = max(1, min(count, cap // len(ways)))
        return [job(_colourway_intent(intent, way, prompt), per, way)
                for way, prompt in intent.colourway_prompts()[:len(ways)]]

    def _swatch_for(self, thread: str, reading: Reading, repeated: Turn | None) -> tuple[Path | Text | None, float]:
        """The swatch a turn paints after, and how closely: the thread's for "use this print", the repeated turn's
        own ("more like that" keeps it), moved by SWATCH_STEP for "a bit less / more like the swatch"."""
        before = ((repeated.intent.get("made_with") or {}).get("swatch") if repeated is not None else None) or {}
        if reading.swatch in ("less", "more"):
            last = self.store.last_turn(thread) if repeated is None else repeated
            before = ((last.intent.get("made_with") or {}).get("swatch") if last else None) or {}
            if not before:
                return Text(T.NO_SWATCH_TURN), 0.0
        if reading.swatch == "use":
            path = self.store.swatch(thread)
            return (path, SWATCH_SCALE) if path is not None else (Text(T.NO_SWATCH), 0.0)
        if not before:
            return None, 0.0
        # the swatch that turn used, by its file's name (the store fetches it on another replica)
        path = self.store.swatch(thread, Path(before["path"]).name)
        if path is None:
            return Text(T.NO_SWATCH), 0.0
        scale = float(before["scale"])
        if reading.swatch in ("less", "more"):  # "a bit less like the swatch": the last swatch turn, moved a step
            step = SWATCH_STEP if reading.swatch == "more" else -SWATCH_STEP
            scale = round(min(max(scale + step, SWATCH_RANGE[0]), SWATCH_RANGE[1]), 2)
        return path, scale  # "4 more like that" after a swatch turn: the same swatch, as closely

    def _swatch(self, event: Swatch, progress: Progress | None = None) -> list[Reply]:
        """An image shared into a thread with a photo: the thread's swatch or print from now on."""
        image = read_photo(event.image, event.filename, min_side=SWATCH_MIN_SIDE)
        if isinstance(image, Text):
            return [image]
        self.store.set_swatch(event.thread, event.user, image)
        if event.text.strip() and _read(event.text).swatch:
            return self._text(event.thread, event.user, event.text, progress)  # "use this print on the dress"
        return [Text(T.GOT_SWATCH)]

    # -- upscale -----------------------------------------------------------------------------------------------------
    def _upscale(self, thread: str, user: str, text: str, reading: Reading, progress: Progress | None
                 ) -> list[Reply]:
        """#N (or the thread's current picture) with its garment region brought to the photo's resolution: a new
        variation, the thread moved to it."""
        if reading.variation is not None:
            v = self.store.variation_by_number(thread, reading.variation)
            if v is None:
                return [Text(T.NO_VARIATION.format(number=reading.variation), kind="error")]
        else:
            v = self.store.base(thread)[1]
            if v is None:
                return [Text(T.UPSCALE_WHICH)]
        turn = self.store.turn(v.turn)
        image = Image.open(v.path).convert("RGB")
        mask = self.painted_mask(v, image.size)
        if turn is None or mask is None or not mask.any():
            return [Text(T.UPSCALE_NO_MASK.format(number=v.number), kind="error")]
        eff = self.controls.capped(thread, user, self._effective(self.store.settings(thread)))
        job = Job(thread=thread, user=user, text=text, intent=reading.resolve(), garments=list(turn.garments),
                  target=None, attributes=[], prompt=turn.prompt, negative_prompt=turn.negative_prompt,
                  base_path=Path(v.path), strength=1.0, count=1)
        admitted = self.controls.admit([job])  # one picture against the quotas, like any other
        if isinstance(admitted, Text):
            return [admitted]
        say = progress or (lambda done, total, text: None)
        steps = int(eff["steps"])
        say(0, steps, T.UPSCALING.format(number=v.number))

        def on_step(done: int, total: int) -> None:
            say(done, total, T.WORKING.format(done=done, total=total))

        # the upscaler is told what the region shows (the garment words), and avoids what the turn avoided
        paint = Paint(prompt=plain_prompt(turn.prompt), negative_prompt=turn.negative_prompt or None, steps=steps,
                      guidance_scale=float(eff["guidance"]))
        made_with = {"steps": steps, "guidance": float(eff["guidance"]), "upscaled_from": v.number,
                     "mask": (turn.intent.get("made_with") or {}).get("mask", MASK_DEFAULTS)}
        new = self.store.start_turn(thread, user, text, "upscale", {**job.intent.to_dict(), "made_with": made_with},
                                    turn.prompt, turn.negative_prompt, v.path, 1.0, list(turn.garments))
        try:
            try:
                painted = self.backend.upscale(image, mask, paint, v.seed, on_step)
            except BackendError as exc:
                if exc.code == "already_full_resolution":
                    self.store.fail_turn(new, "already at full resolution")
                    return [Text(T.ALREADY_FULL_RES.format(number=v.number))]
                raise
            self.controls.record(job, len(painted.pictures), painted.gpu_s)
            # #N's garments are where they were: the new picture keeps their masks (for "#M in denim" later)
            seg = made_with["mask"]
            for g in turn.garments:
                if (m := self._painted_mask(thread, Path(v.path), g, image.size)) is not None:
                    save_png(Image.fromarray(m.astype(np.uint8) * 255), self._mask_path(thread, v.path, g, seg))
            (variation,) = self.store.finish_turn(new, thread, painted.pictures, _look_of_turn(turn), None)
        except BaseException as exc:
            if (started := self.store.turn(new)) is not None and started.status == "running":
                self.store.fail_turn(new, f"{type(exc).__name__}: {exc}"[:500])
            raise
        self.store.push_base(thread, variation.id)  # the thread is on the full-resolution picture now
        w, h = image.size
        focus = close_up_box(mask) or (0, 0, w, h)
        sheet = self._sheet(thread, new, [variation], f"#{v.number} at full resolution · close-up",
                            [Image.open(variation.path).crop(focus)], lead=(image.crop(focus), f"#{v.number}"),
                            labels=[f"#{variation.number}"])
        text_out = T.UPSCALED.format(new=variation.number, number=v.number, size=f"{w}x{h}")
        return [Variations(turn_id=new, text=text_out, items=[self._out(variation, turn.prompt)], sheet=sheet)]

    # -- generation ------------------------------------------------------------------------------------------------
    def _generate(self, jobs: list[Job], progress: Progress | None) -> list[Reply]:
        """Run ``jobs`` (one, or one per colourway) on one mask of one picture; one reply for all of them."""
        first = jobs[0]
        what = " and ".join(first.garments)  # "background" for a background turn
        say = progress or (lambda done, total, text: None)
        eff = self.controls.capped(first.thread, first.user, self._effective(self.store.settings(first.thread)))
        steps = max(int(eff["steps"]), min_steps(first.strength))  # "steps=1" on an iteration still runs one step
        total = int(steps * first.strength)  # denoising steps actually run (an iteration starts part-way)
        base = Image.open(first.base_path).convert("RGB")
        say(0, total, T.FINDING.format(what=what))
        seg = {k: eff[k] for k in MASK_DEFAULTS}
        mask, missing = self._mask(first.thread, base, first.base_path, first.garments, seg)
        if mask is None:
            return [Text(T.NOT_FOUND.format(what=f"a {what}"), kind="error")]
        made_with = {"steps": steps, "guidance": float(eff["guidance"]), "mask": seg}  # for "#2 info", and masks
        done: list[tuple[Job, list[tuple[int, Image.Image]], list[Variation]]] = []
        rejected, look = 0, None
        for job in jobs:
            with_swatch = {"swatch": {"path": str(job.swatch), "scale": job.swatch_scale}} if job.swatch else {}
            turn = self.store.start_turn(job.thread, job.user, job.text, "batch" if job.batch else job.intent.action,
                                         {**job.intent.to_dict(), "made_with": {**made_with, **with_swatch}},
                                         job.prompt,
                                         job.negative_prompt, job.base_path, job.strength, job.garments)
            try:
                label = f"{what} ({job.colourway})" if job.colourway else what
                images, dropped, look = self._inpaint(job, base, mask, eff, steps, total, label, say)
                variations = self.store.finish_turn(turn, job.thread, images, _look(job.intent, job.garments),
                                                    {"made_with": {**made_with, "look": look}} if look else None)
            except BaseException as exc:
                self.store.fail_turn(turn, f"{type(exc).__name__}: {exc}"[:500])
                raise
            rejected += dropped
            done.append((job, images, variations))
        variations = [v for _, _, vs in done for v in vs]
        if not variations:
            return [Text(T.ALL_REJECTED, kind="error")]
        source = self.store.variation_by_path(first.thread, first.base_path)
        _, current = self.store.base(first.thread)
        if source is not None and (current is None or current.id != source.id):
            self.store.push_base(first.thread, source.id)  # "#2 in denim": the thread is on #2 now ("undo" leaves it)
        from_ = f"#{source.number}" if source else "the original photo"
        numbers = ", ".join(f"#{v.number}" for v in variations)
        look_note = f" with the _{look}_ look" if look else ""
        if len(jobs) == 1:
            text = T.DONE.format(n=len(variations), s="s" if len(variations) != 1 else "", numbers=numbers,
                                 prompt=_shown(first), what=what, source=from_, look=look_note,
                                 first=variations[0].number, other=_other_fabric(first.prompt))
        else:
            text = T.DONE_WAYS.format(n=len(variations), numbers=numbers, what=what, k=len(jobs),
                                      ways=", ".join(j.colourway for j in jobs), source=from_, look=look_note,
                                      per=first.count, first=variations[0].number)
        if missing:
            text += f" (I couldn't find: {', '.join(missing)}.)"
        asked = first.intent.count or int(eff["count"])
        if first.note:  # trimmed by the team's quotas: the note says by what, and until when
            text += first.note
        elif len(jobs) > 1 and first.count < asked:
            text += T.WAYS_CAPPED.format(per=first.count, n=len(jobs), cap=self.settings.max_batch)
        elif len(jobs) == 1 and first.intent.count and first.intent.count > first.count:
            text += T.CAPPED.format(cap=first.count)
        if rejected:
            text += T.SOME_REJECTED.format(k=rejected, s="s" if rejected != 1 else "")
        items = [self._out(v, j.prompt) for j, _, vs in done for v in vs]
        before = f"from #{source.number}" if source else "original"
        # the variations differ only around the garment: when it is a small part of the photo, the sheet shows that
        # part, larger (each variation is still posted whole)
        focus = close_up_box(mask)
        lead, tiles = base, [img for _, images, _ in done for _, img in images]
        labels = [f"#{v.number}" + (f" {j.colourway}" if j.colourway else "") for j, _, vs in done for v in vs]
        title = plain_prompt(first.prompt) if len(jobs) == 1 else f"the {what} in {len(jobs)} colourways"
        if focus is not None:
            lead, tiles, title = base.crop(focus), [t.crop(focus) for t in tiles], f"{title} · close-up"
        turn = done[0][2][0].turn if done[0][2] else variations[0].turn
        sheet = self._sheet(first.thread, turn, variations, title, tiles, lead=(lead, before), labels=labels)
        preview = save_png(mask_preview(base, mask), self.store.thread_dir(first.thread) / f"mask-{turn}.png")
        say(total, total, text)
        return [Variations(turn_id=turn, text=text, items=items, sheet=sheet, mask_preview=preview)]

    def _mask(self, thread: str, base: Image.Image, base_path: Path, garments: list[str], seg: dict):
        """The union of the garments' masks at full resolution, and the garments not found.

        Each garment's mask is kept per base picture (``masks/``), so a follow-up on the same base asks CLIPSeg
        nothing.  A garment CLIPSeg misses on a *variation* falls back to the mask that variation was painted in:
        the region restyle itself regenerated is where that garment is ("try #2 in denim" must not answer "I
        couldn't find a skirt" because #2's new skirt fools the segmenter).  ``seg``: the thread's mask settings
        (``grow``, ``threshold``), part of the cache key."""
        masks: dict[str, np.ndarray] = {}
        for g in garments:
            if (cached := self._cached_mask(thread, base_path, g, seg, base.size)) is not None:
                masks[g] = cached
        todo = [g for g in garments if g not in masks]
        if todo:
            found = self._segment(base, todo, seg)
            for g in todo:
                mask = found.get(g)
                if mask is None:
                    mask = self._painted_mask(thread, base_path, g, base.size)
                if mask is not None and mask.any():
                    masks[g] = mask
                    save_png(Image.fromarray(mask.astype(np.uint8) * 255),
                             self._mask_path(thread, base_path, g, seg))
        missing = [g for g in garments if g not in masks]
        if not masks:
            return None, missing
        return np.logical_or.reduce([masks[g] for g in garments if g in masks]), missing

    def _segment(self, base: Image.Image, garments: list[str], seg: dict) -> dict[str, np.ndarray]:
        """The garments CLIPSeg finds on ``base``: their masks at full size.  "background" is everything outside
        the person and the parts garment masks protect (face, hands, hair), grown by the ``grow`` setting."""
        found = self.backend.segment(base, [g for g in garments if g != "background"],
                                     grow=int(seg["grow"]), threshold=float(seg["threshold"])) \
            if any(g != "background" for g in garments) else {}
        if "background" in garments:
            parts = self.backend.segment(base, list(PERSON_PARTS), grow=int(seg["grow"]),
                                         threshold=float(seg["threshold"]), protect=False)
            if "person" in parts:  # no person: no background to tell apart from her
                found["background"] = ~np.logical_or.reduce(list(parts.values()))
        return found

    def _mask_path(self, thread: str, base_path: Path | str, garment: str, seg: dict) -> Path:
        name = f"{base_path}|{garment}"
        if seg != MASK_DEFAULTS:  # the default settings keep the key data dirs already have
            name += f"|grow={int(seg['grow'])}|threshold={float(seg['threshold']):g}"
        key = hashlib.sha1(name.encode()).hexdigest()[:16]
        return self.store.thread_dir(thread) / "masks" / f"{key}.png"

    def _cached_mask(self, thread: str, base_path: Path | str, garment: str, seg: dict,
                     size: tuple[int, int]) -> np.ndarray | None:
        path = self._mask_path(thread, base_path, garment, seg)
        if not path.exists():
            return None
        mask = decode_mask(path.read_bytes())
        return mask if mask.shape == (size[1], size[0]) else resize_mask(mask, size)

    def _painted_mask(self, thread: str, base_path: Path, garment: str, size: tuple[int, int]) -> np.ndarray | None:
        """The mask ``garment`` had when the variation at ``base_path`` was made from its own base, if it was."""
        v = self.store.variation_by_path(thread, base_path)
        turn = self.store.turn(v.turn) if v else None
        if turn is None or garment not in turn.garments:
            return None
        seg = turn.intent.get("made_with", {}).get("mask", MASK_DEFAULTS)  # the settings that turn was painted with
        return self._cached_mask(thread, turn.base, garment, seg, size)

    def painted_mask(self, v: Variation, size: tuple[int, int]) -> np.ndarray | None:
        """Where ``v`` was painted: the union of its garments' stored masks at ``size`` (None when none is kept)."""
        turn = self.store.turn(v.turn)
        masks = [m for g in (turn.garments if turn else [])
                 if (m := self._painted_mask(v.thread, v.path, g, size)) is not None]
        return np.logical_or.reduce(masks) if masks else None

    def _inpaint(self, job: Job, base: Image.Image, mask: np.ndarray, eff: dict, steps: int, total: int, what: str,
                 say):
        """``job``'s candidates: (seed, full-size picture) each, how many were rejected, and the look that ran."""
        seed = eff["seed"] if isinstance(eff["seed"], int) else random.SystemRandom().randrange(0, 2**31 - 64)
        background = job.garments == ["background"]
        paint = Paint(prompt=job.prompt, negative_prompt=BACKGROUND_NEGATIVE if background else
                      job.negative_prompt or None, steps=steps, guidance_scale=float(eff["guidance"]),
                      strength=job.strength, look=None if eff["look"] == DEFAULT_LOOK else eff["look"],
                      reference=Image.open(job.swatch).convert("RGB") if job.swatch else None,
                      reference_scale=job.swatch_scale,
                      edge="inside" if background else "outside")  # a background never touches the person
        n = job.count
        say(0, total, T.GENERATING.format(n=n, s="s" if n != 1 else "", what=what))

        def on_step(done: int, total: int) -> None:
            say(done, total, T.WORKING.format(done=done, total=total))

        painted = self.backend.paint(base, mask, paint, [seed + i for i in range(n)], on_step, batch=job.batch)
        self.controls.record(job, len(painted.pictures), painted.gpu_s)  # usage: pictures and GPU time
        return painted.pictures, painted.rejected, painted.look

    # -- presentation ----------------------------------------------------------------------------------------------
    def _out(self, v: Variation, prompt: str) -> VariationOut:
        return VariationOut(id=v.id, number=v.number, path=v.path, seed=v.seed,
                            caption=f"#{v.number} · seed {v.seed}" + (f" · {prompt}" if prompt else ""))

    def _sheet(self, thread: str, name: str, variations: list[Variation], title: str,
               images: list[Image.Image] | None = None, lead: tuple[Image.Image, str] | None = None,
               labels: list[str] | None = None) -> Path:
        """Contact sheet of ``variations``; ``images``: their pictures already in memory (else read from disk);
        ``lead``: a first tile (the picture the variations were made from, and its label) to compare against."""
        imgs = images if images is not None else [Image.open(v.path) for v in variations]
        labels = labels or [f"#{v.number}" + (" ⭐" if v.favorite else "") for v in variations]
        if lead is not None:
            imgs, labels = [lead[0], *imgs], [lead[1], *labels]
        sheet = contact_sheet(imgs, labels, title=title)
        return save_png(sheet, self.store.thread_dir(thread) / f"sheet-{name}.png")


def read_photo(data: bytes, filename: str = "", min_side: int = MIN_PHOTO_SIDE) -> Image.Image | Text:
    """A person's upload → the picture a thread works on, or the reply that says why it cannot be one (also used by
    the terminal before any model loads)."""
    try:
        image = decode_image(data, field=filename or "photo", shrink=True)
    except ImageTooLarge as exc:
        return Text(T.TOO_LARGE.format(why=exc.message), kind="error")
    except InvalidImage as exc:
        return Text(T.BAD_IMAGE.format(why=exc.message), kind="error")
    if min(image.size) < min_side:  # a thumbnail or an icon: nothing a garment could be found in
        return Text(T.TOO_SMALL.format(size=f"{image.width}x{image.height}", side=min_side), kind="error")
    return image


def close_up_box(mask: np.ndarray, max_fraction: float = 0.5) -> tuple[int, int, int, int] | None:
    """The part of the photo a contact sheet should show: the mask's box with a quarter of its size around it,
    widened to the photo's aspect (tiles keep their shape); None when that is most of the photo anyway."""
    h, w = mask.shape
    mb = bbox(mask)
    if mb is None:
        return None
    pad = max(16, int(0.25 * max(mb[2] - mb[0], mb[3] - mb[1])))
    box = compose.crop_box(mb, (w, h), pad, aspect=w / h)
    return None if (box[2] - box[0]) * (box[3] - box[1]) > max_fraction * w * h else box


def mask_preview(base: Image.Image, mask: np.ndarray, max_side: int = PREVIEW_MAX_SIDE) -> Image.Image:
    """The photo with the mask tinted, at most ``max_side`` a side: a picture for eyes, not a deliverable."""
    scale = min(1.0, max_side / max(base.size))
    if scale < 1.0:
        size = (max(1, round(base.width * scale)), max(1, round(base.height * scale)))
        base = base.resize(size, Image.BILINEAR)
        mask = resize_mask(mask, size)
    return compose.overlay(base, mask)


def _adds_nothing(intent: Intent, previous: dict) -> bool:
    """True when a follow-up names no style the previous turn didn't already have ("more like #3")."""
    return (set(intent.attributes) <= set(previous.get("attributes", ())) and not intent.negatives
            and not intent.colourways)


def _repeats(intent: Intent, named: list[str], turn: Turn) -> bool:
    """Does a follow-up ask for ``turn``'s look again?  It adds no style, and names no garment or exactly its
    garments ("3 more skirts like that" after a skirt; not after "the top white and the skirt black")."""
    return _adds_nothing(intent, turn.intent) and (not named or set(named) == set(turn.garments))


def _shown(job: Job) -> str:
    """The prompt as a reply restates it: its words, what it avoids ("without ruffled"), and the swatch."""
    if job.garments == ["background"]:
        return job.intent.scene or plain_prompt(job.prompt)
    swatch = f", after the swatch (at {job.swatch_scale:g})" if job.swatch else ""
    return plain_prompt(job.prompt) + (f", without {job.negative_prompt}" if job.negative_prompt else "") + swatch


def _other_fabric(prompt: str) -> str:
    """A fabric the hint can suggest ("try #5 in denim") that the prompt does not already have."""
    return next(m for m in ("denim", "silk", "linen") if m not in prompt)


def _with_prompt(intent: Intent, prompt: str, negative: str) -> Intent:
    return replace(intent, prompt=prompt, negative_prompt=negative or "")


def _makes_pictures(reading: Reading) -> bool:
    """Will acting on ``reading`` spend model time (a generation, a background, an upscale)?"""
    return reading.generates or reading.action in (Action.BACKGROUND, Action.UPSCALE)


@lru_cache(maxsize=512)
def _read(text: str) -> Reading:
    """Each message is read once (adapters ask ``needs_generation`` before ``handle``); readings are immutable."""
    return read(text)


def _context_of(look: dict) -> Context:
    """A stored look (``_look``) as the parser's context; older data dirs stored one garment only."""
    garments = list(look.get("garments") or ([look["garment"]] if look.get("garment") else []))
    return Context.of(garments, look.get("per_garment") or {}, look.get("target"), tuple(look.get("attributes", ())))


def _look(intent: Intent, garments: list[str]) -> dict:
    """What a finished turn leaves for follow-ups: every garment of its look, each with its own attributes."""
    return {"garment": garments[0], "garments": list(garments), "target": intent.target,
            "attributes": list(intent.attributes),
            "per_garment": {g: list(intent.per_garment.get(g, intent.attributes if i == 0 else []))
                            for i, g in enumerate(garments)}}


def _look_of_turn(turn: Turn) -> dict:
    return {"garment": (turn.garments or [None])[0], "garments": list(turn.garments),
            "target": turn.intent.get("target"), "attributes": list(turn.intent.get("attributes", ())),
            "per_garment": turn.intent.get("per_garment") or {}}


def _turn_context(turn: Turn) -> Context:
    """The look ``turn`` painted, for "#N but …" on one of its variations."""
    return _context_of(_look_of_turn(turn))


def _colourway_intent(intent: Intent, way: str, prompt: str) -> Intent:
    """One colourway of ``intent`` as an ordinary intent (its turn's look is that colourway)."""
    extra = way.split(" & ")
    per = {g: [*attrs, *extra] for g, attrs in intent.per_garment.items()}
    return replace(intent, prompt=prompt, attributes=[*intent.attributes, *extra], per_garment=per, colourways=[])


def build_engine(settings: Settings, backend: Backend | None = None) -> Engine:
    from bot.store_aws import open_store  # SQLite + files, or DynamoDB + S3 with RESTYLE_STATE

    return Engine(open_store(settings), backend or build_backend(settings), settings)


def start_engine(settings: Settings) -> Engine | None:
    """``build_engine`` plus, for the local backend, loading the models now; on missing weights it prints what
    to set (or ``--tiny``) to stderr and returns None (the command then exits 2)."""
    import sys

    from botocore.exceptions import BotoCoreError

    from model.loading import ModelUnavailable

    try:
        engine = build_engine(settings)
    except (OSError, ValueError, BotoCoreError) as exc:  # no AWS region, a bad endpoint URL, an unusable data dir
        print(f"restyle: cannot set up the {settings.backend} backend: {exc}", file=sys.stderr)
        return None
    if settings.backend == "local":
        import torch

        if (settings.device or "").startswith("cuda") and not torch.cuda.is_available():
            print(f"restyle: --device {settings.device}: this torch has no CUDA device (torch "
                  f"{torch.__version__}); use --device cpu or install a CUDA build", file=sys.stderr)
            return None
        print("loading models…" + (" (tiny random checkpoints)" if settings.tiny else ""), file=sys.stderr)
        try:
            engine.backend.warm()
        except ModelUnavailable as exc:
            print(f"restyle: {exc}", file=sys.stderr)
            return None
    return engine
