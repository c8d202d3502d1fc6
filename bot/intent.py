"""Intent parser: one Slack message -> one structured :class:`Intent`.

Pure functions over the standard library only (no torch / transformers / pydantic), deterministic, no network,
so ``python -m bot.intent "make the skirt a red floral maxi"`` starts instantly.  See ``docs/intent.md`` for the
output fields, the vocabulary and the precedence rules.

Pipeline (see :func:`parse`):

1. normalise: Unicode folding, Slack markup, emoji -> words, lower case, apostrophes, hyphens, ``/restyle`` prefix;
2. typo repair: unknown words of >= 4 letters are matched against the vocabulary with :mod:`difflib`
   (cutoff 0.8, same first letter, never for ordinary English words);
3. settings (``steps=40``, ``use 40 steps``, ``set seed 5``), then variation references (``#2``, ``the second
   one``, ``option 3``) and counts (``8 more``, ``batch 12``) are taken out of the text;
4. the rest is scanned against the vocabulary (longest phrase first), negation scopes are marked, garment
   swaps ("turn X into Y") and per-garment attributes are resolved;
5. the action is decided by a fixed precedence and the SD prompt is built from a template.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
import unicodedata
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import cache
from pathlib import Path

__all__ = [
    "ACTIONS",
    "GARMENTS",
    "GENERATING_ACTIONS",
    "MAX_COUNT",
    "MAX_VARIATION",
    "PROMPT_SUFFIX",
    "VOCABULARY",
    "Context",
    "Intent",
    "build_prompt",
    "is_thanks",
    "main",
    "parse",
]

PROMPT_SUFFIX = "fashion photography, detailed fabric texture, high quality"
FALLBACK_NOUN = "outfit"  # prompt noun when attributes are known but no garment is
MAX_COUNT = 64  # counts above this are capped ("give me 100 variations" -> 64)
MAX_VARIATION = 99  # variation numbers outside 1..99 are ignored
class Action(StrEnum):
    """What a message asks for.  Values are the strings ``python -m bot.intent`` prints."""

    RESTYLE = "restyle"
    VARY = "vary"
    BATCH = "batch"
    FAVORITE = "favorite"
    USE = "use"
    INFO = "info"
    UNDO = "undo"
    RESET = "reset"
    SETTINGS = "settings"
    HELP = "help"
    CONFIRM = "confirm"  # "yes" / "go ahead": an answer to restyle's "Generate …?"
    CANCEL = "cancel"  # "no" / "not that"
    COMPARE = "compare"  # "#2 vs #5": the variations side by side (``variations``); nothing is generated
    LOOKBOOK = "lookbook"  # "make a lookbook of the favourites": a PDF and a ZIP of the favourites
    UPSCALE = "upscale"  # "upscale #3", "#3 in full res": the garment at the photo's native resolution (``variation``)
    BACKGROUND = "background"  # "put her on a plain white background": everything but the person repainted (``scene``)
    UNKNOWN = "unknown"


ACTIONS = tuple(a.value for a in Action)
GENERATING_ACTIONS = frozenset({Action.RESTYLE, Action.VARY, Action.BATCH})
#: Why an ``unknown`` message is not acted on (or, on a generating intent, the part of it restyle cannot do).
UNKNOWN_TOPICS = ("chatter", "praise", "thanks", "question", "background", "hair", "makeup", "jewellery", "pose",
                  "body", "lighting", "upscale", "compare", "lookbook", "link", "other_photos", "removal", "other")
#: How a message uses the thread's swatch or print (an image uploaded into the thread): ``use`` it as a visual
#: prompt for the garment, or follow the last swatch turn ``less`` / ``more`` closely.
SWATCH_USES = ("", "use", "less", "more")
#: What a background prompt says after the scene itself
BACKGROUND_SUFFIX = "photo background, fashion photography, high quality"
#: and what the painter avoids there (the engine adds it: an intent's negative prompt is its ``negatives``)
BACKGROUND_NEGATIVE = "person, people, text, watermark"
#: What a how-to question (action ``help``) is about.
HELP_TOPICS = ("reset", "undo", "favorite", "use", "batch", "settings", "more", "restyle", "looks", "info")
#: ``parse`` reads this many characters of a message (parsing time grows faster than linearly with length)
MAX_TEXT = 2000


# ---------------------------------------------------------------------------------------------------------------
# Public data types
# ---------------------------------------------------------------------------------------------------------------
Look = tuple[tuple[str, str, tuple[str, ...]], ...]  # ((garment in the photo, new noun, attributes), ...)


@dataclass(frozen=True)
class Context:
    """What the thread already has, for follow-ups ("try it in blue", "#2 but longer"): the look of the turn a
    follow-up refines.  ``looks`` holds every garment of a multi-garment look; ``garment``/``target``/``attributes``
    describe the first (and are all a one-garment look needs)."""

    garment: str | None = None
    target: str | None = None
    attributes: tuple[str, ...] = ()
    looks: Look = ()

    def __post_init__(self) -> None:
        if not isinstance(self.attributes, tuple):
            object.__setattr__(self, "attributes", tuple(self.attributes or ()))
        if not self.looks and self.garment:
            object.__setattr__(self, "looks", ((self.garment, self.target or self.garment, self.attributes),))
        elif self.looks and not self.garment:
            g, t, a = self.looks[0]
            object.__setattr__(self, "garment", g)
            object.__setattr__(self, "target", t)
            object.__setattr__(self, "attributes", tuple(a))

    @classmethod
    def of(cls, garments: list[str], per_garment: dict[str, list[str]], target: str | None = None,
           attributes: list[str] | tuple[str, ...] = ()) -> Context:
        """The context a finished turn leaves: its garments, each with its own attributes."""
        if not garments:
            return cls(target=target, attributes=tuple(attributes))
        looks = tuple((g, (target if i == 0 and target else g), tuple(per_garment.get(g, attributes if i == 0 else ())))
                      for i, g in enumerate(garments))
        return cls(looks=looks)

    @classmethod
    def from_intent(cls, intent: Intent, previous: Context | None = None) -> Context:
        """The context for the next turn: the intent's look, else the previous one."""
        if intent.action not in GENERATING_ACTIONS:
            return previous or cls()
        return cls.of(intent.garments, intent.per_garment, intent.target, intent.attributes)


@dataclass(frozen=True)
class Intent:
    """One parsed message; field meanings in docs/intent.md.  Non-generating actions carry only ``variation``
    (favorite/use/info), ``variations`` (compare), ``settings``, ``topic`` (unknown/help) and, for a removal,
    ``negatives``."""

    action: Action
    garment: str | None = None
    garments: list[str] = field(default_factory=list)
    target: str | None = None
    attributes: list[str] = field(default_factory=list)
    negatives: list[str] = field(default_factory=list)
    variation: int | None = None
    variations: list[int] = field(default_factory=list)
    count: int | None = None
    prompt: str = ""
    negative_prompt: str = ""
    settings: dict[str, str | int | float] = field(default_factory=dict)
    per_garment: dict[str, list[str]] = field(default_factory=dict)
    colourways: list[str] = field(default_factory=list)
    topic: str | None = None
    ambiguous: bool = False
    scene: str = ""  # background: the scene asked for ("plain white studio backdrop")
    swatch: str = ""  # one of SWATCH_USES: paint the garment after the thread's swatch

    @property
    def generates(self) -> bool:
        return self.action in GENERATING_ACTIONS

    def colourway_prompts(self) -> list[tuple[str, str]]:
        """(colourway, prompt) for each colourway ("navy", "a navy midi dress, …"); [] without colourways."""
        out = []
        for way in self.colourways:
            cats = {_category(w) for w in way.split(" & ")}
            items = []
            for g in self.garments or [None]:
                noun = (self.target if g == self.garment else g) or g
                attrs = [a for a in (self.per_garment.get(g, self.attributes) if g else self.attributes)
                         if _category(a) not in cats]
                items.append((noun, [*attrs, *way.split(" & ")]))
            out.append((way, build_prompt(items)))
        return out

    def to_dict(self) -> dict:
        """JSON-ready copy of every field (lists and dicts are copied)."""
        return {
            "action": str(self.action),
            "garment": self.garment,
            "garments": list(self.garments),
            "target": self.target,
            "attributes": list(self.attributes),
            "negatives": list(self.negatives),
            "variation": self.variation,
            "variations": list(self.variations),
            "count": self.count,
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "settings": dict(self.settings),
            "per_garment": {k: list(v) for k, v in self.per_garment.items()},
            "colourways": list(self.colourways),
            "topic": self.topic,
            "ambiguous": self.ambiguous,
            "scene": self.scene,
            "swatch": self.swatch,
        }


# ---------------------------------------------------------------------------------------------------------------
# Vocabulary.  Synonyms are "|"-separated; hyphens and spaces are equivalent in the input.
# ---------------------------------------------------------------------------------------------------------------
_LEXICON_PATH = Path(__file__).with_name("data") / "lexicon.json"
#: The vocabulary as data (bot/data/lexicon.json): garments and their UK/US synonyms, garment kinds, attributes by
#: category, negators, emoji.  Code below only builds lookup tables from it.
LEXICON: dict = json.loads(_LEXICON_PATH.read_text(encoding="utf-8"))
_GARMENT_SYNONYMS: dict[str, str] = LEXICON["garments"]
GARMENTS: tuple[str, ...] = tuple(_GARMENT_SYNONYMS)
# Surface forms that mean a garment *and* an attribute: "miniskirt" -> ("mini", "skirt").
_GARMENT_COMPOUNDS: dict[str, tuple[tuple[str, str], str]] = {
    surface: ((cat_attr[0], cat_attr[1]), canon) for surface, (cat_attr, canon) in LEXICON["garment_compounds"].items()}
# Garment kinds: words naming one cut of a canonical garment.  CLIPSeg looks for the canonical garment; the kind
# stays in the prompt, right before the noun ("change the coat to a camel trench" -> "a camel trench coat").
_GARMENT_KINDS: tuple[tuple[str, str, str], ...] = tuple(tuple(k) for k in LEXICON["garment_kinds"])
_ATTRIBUTE_SYNONYMS: dict[str, dict[str, str]] = LEXICON["attributes"]
VOCABULARY: dict[str, tuple[str, ...]] = {cat: tuple(words) for cat, words in _ATTRIBUTE_SYNONYMS.items()}

# Prompt order: styles, non-compound lengths, fits, tone, colour, pattern, material, details, then the lengths and
# fits that read as part of the noun ("a red floral maxi skirt", "a black wrap dress").
_PROMPT_ORDER = ("style", "length", "fit", "tone", "colour", "pattern", "material", "detail", "compound", "kind")
_NOUN_COMPOUNDS = frozenset(LEXICON["noun_compounds"])
# Categories where a follow-up replaces the earlier value instead of adding to it ("#2 in blue" drops "red").
_EXCLUSIVE = frozenset({"length", "colour", "tone", "pattern", "material", "kind"})
_TIGHT_FITS = frozenset({"fitted", "slim", "skinny", "bodycon"})
_LOOSE_FITS = frozenset({"loose", "oversized", "relaxed", "flowy"})
_OPPOSED_FITS = ((_TIGHT_FITS, _LOOSE_FITS), (_LOOSE_FITS, _TIGHT_FITS))  # "#2 but tighter" drops "loose"
_PLURAL_NOUNS = frozenset(LEXICON["plural_nouns"])

_NEGATORS: str = LEXICON["negators"]
_REVERSE_CONNECTORS = frozenset({"instead of", "rather than", "in place of"})  # "a skirt instead of the jeans"
_KEEPERS: str = LEXICON["keepers"]
_COLOUR_MODIFIERS = frozenset(LEXICON["colour_modifiers"])

_NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50,
    "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100, "dozen": 12, "couple": 2,
}
_ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8,
             "ninth": 9, "tenth": 10}

# Words around the vocabulary.
_ARTICLES = frozenset("a an the some her his their my your its our this that these those one pair pairs of new "
                      "another".split())
# Words that may sit inside an attribute run without breaking it ("a cream colored dress", "70s style jacket").
_GLUE = frozenset("colored coloured color colour colours colors toned tone print printed patterned style styled "
                  "inspired looking ish nice cute pretty beautiful gorgeous stylish cool lovely simple new little "
                  "very really super slightly bit more fabric material".split())
# Words a negation may skip before its object ("don't want any stripes", "not too short").
_NEG_FILLERS = frozenset("a an the any more too so very really overly that this it its make made want wanna need "
                         "use add have be put go with in of colour color colours colors shade shades colored "
                         "coloured pattern patterns patterned print prints fabric fabrics material materials detail "
                         "details to her his their my your them like something anything at all please thing things "
                         "visible big obvious i we much those these wear wearing wears get having".split())
_TRANSFORM_TO_VERBS = frozenset("change changes changing switch turn convert transform swap update alter morph "
                                "restyle".split())
_SWAP_VERBS = frozenset("swap switch exchange trade replace substitute change".split())
_AS_VERBS = frozenset("restyle redo reimagine reinvent redesign make turn show render imagine see".split())
_DIRECT_VERBS = frozenset({"make", "turn"})
_STOP_CLAUSE = frozenset({"and", "but", "then", "also", "&", "plus"})


def _norm_key(phrase: str) -> tuple[str, ...]:
    return tuple(phrase.replace("-", " ").split())


_Unit = tuple[str, ...]  # ("g", garment) | ("a", category, attribute) | ("n", negator) | ("k", keeper)
_LEX: dict[tuple[str, ...], tuple[_Unit, ...]] = {}


def _add(phrase: str, *units: _Unit) -> None:
    key = _norm_key(phrase)
    if key and key not in _LEX:
        _LEX[key] = units


for _kind, _canon, _surfaces in _GARMENT_KINDS:
    for _surface in _surfaces.split("|"):
        _add(_surface, ("a", "kind", _kind), ("g", _canon))
for _canon, _syns in _GARMENT_SYNONYMS.items():
    for _surface in [_canon, *filter(None, _syns.split("|"))]:
        _add(_surface, ("g", _canon))
for _surface, ((_cat, _attr), _canon) in _GARMENT_COMPOUNDS.items():
    _add(_surface, ("a", _cat, _attr), ("g", _canon))
for _cat, _table in _ATTRIBUTE_SYNONYMS.items():
    for _canon, _syns in _table.items():
        for _surface in [_canon, *filter(None, _syns.split("|"))]:
            _add(_surface, ("a", _cat, _canon))
for _surface in _NEGATORS.split("|"):
    _add(_surface, ("n", _surface))
for _surface in _KEEPERS.split("|"):
    _add(_surface, ("k", _surface))
_LEX_MAXLEN = max(len(k) for k in _LEX)
_CATEGORY = {attr: cat for cat, table in _ATTRIBUTE_SYNONYMS.items() for attr in table}
_KINDS = frozenset(kind for kind, _, _ in _GARMENT_KINDS)

# Typo targets: single-word vocabulary entries of >= 4 letters, bucketed by first letter, plus a few keywords.
_FUZZY_EXTRA = ("favorite", "favourite", "variations", "variation", "settings", "regenerate", "another", "make",
                "change", "could", "would", "please", "show", "switch", "swap", "give", "turn")
_FUZZY_BY_LETTER: dict[str, list[str]] = {}
for _word in sorted({w for _key in _LEX for w in _key if len(w) >= 4 and w.isalpha()}):
    _FUZZY_BY_LETTER.setdefault(_word[0], []).append(_word)
for _word in _FUZZY_EXTRA:
    _FUZZY_BY_LETTER.setdefault(_word[0], []).append(_word)
_KNOWN = (set(_NUMBER_WORDS) | set(_ORDINALS) | _ARTICLES | _GLUE | _NEG_FILLERS
          | {w for key in _LEX if len(key) > 1 for w in key})

# Emoji that carry meaning; every other symbol becomes a space.
# Emoji that carry meaning; every other symbol becomes a space.
_EMOJI: dict[str, str] = LEXICON["emoji"]
# Garment emoji count only when no garment is named in words ("a tweed blazer 🧥" is a blazer, not two items).
_GARMENT_EMOJI: dict[str, str] = LEXICON["garment_emoji"]
#: Slack's emoji codes (":heart_eyes:") that carry meaning; others are dropped
_EMOJI_CODES: dict[str, str] = LEXICON["emoji_codes"]
#: Short misspellings and chat spellings the fuzzy repair cannot reach ("mak", "cna", "gimme")
_TYPO_WORDS: dict[str, str] = LEXICON["typos"]
_EMOJI_MARK = "_e"  # "👗" -> "dress_e": a garment token flagged as coming from an emoji


# ---------------------------------------------------------------------------------------------------------------
# Stage 1-2: normalisation and typo repair
# ---------------------------------------------------------------------------------------------------------------
def _normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    text = re.sub(r":([a-z0-9_+-]+):", lambda m: f" {_EMOJI_CODES.get(m.group(1), '')} ", text)  # Slack :fire:
    text = re.sub(r"(?<![\w~])~[^~\n]+~(?![\w~])", " ", text)  # ~struck out~ words were taken back
    text = re.sub(r"(?<![\w])[_*~]+|[_*~]+(?![\w])", " ", text)  # Slack _italics_, *bold*, ~strike~
    text = re.sub(r"(?i)\bbelt\s+(?:it|her|them|the\s+waist)\b", " belted ", text)
    text = re.sub(r"(?i)\bw/o\b", " without ", text)
    text = re.sub(r"\b[A-Za-z]+\b", lambda m: _TYPO_WORDS.get(m.group(0).lower(), m.group(0)), text)
    text = re.sub(r"(?i)\bw/(?=\s)", " with ", text)
    text = re.sub(r"<(?:[@#!]|https?:|mailto:)[^>]*>", " ", text)  # Slack mentions, channels, links
    text = re.sub(r"https?://\S+", " ", text)
    text = re.sub(r"(?<!\w)@[\w.-]+", " ", text)
    text = re.sub("[\ufe0f\ufe0e\u200d\U0001f3fb-\U0001f3ff]", "", text)  # variation selectors, skin tones
    for emoji, word in _EMOJI.items():
        if emoji in text:
            text = text.replace(emoji, f" {word} ")
    for emoji, word in _GARMENT_EMOJI.items():
        if emoji in text:
            text = text.replace(emoji, f" {word}{_EMOJI_MARK} ")
    text = text.lower().replace("\u2019", "'").replace("\u2018", "'").replace("`", "'").replace("\u00d7", "x")
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    text = text.replace("'", "")
    text = re.sub(r"[^a-z0-9#=.,;:!?/&+_\s-]", " ", text)
    text = re.sub(r"-(?!\d)|(?<=[a-z0-9])-", " ", text)  # hyphens are spaces, except a leading minus sign
    text = re.sub(r"\b19([2-9]0)s\b", r"\1s", text)  # 1970s -> 70s
    # "no pattern", "without the print": plain (the pattern category's own word, replacing "floral")
    # ("no prints or ruffles": the negation goes on to "ruffles")
    text = re.sub(r"\b(?:no|without(?: an?| the| any)?|lose the|drop the|ditch the|get rid of the|remove the"
                  r"|no more)\s+(?:patterns?|prints?|patterning)\b"
                  r"(\s*(?:or|and|nor)\b)?", lambda m: "plain, no" if m.group(1) else "plain", text)
    text = re.sub(r"\b(?:no|without(?: the| any)?)\s+sleeves\b", "sleeveless", text)
    text = re.sub(r"\btone\s+(?:it|this|that|them)\s+down\b", "toned down", text)
    # "shorter sleeves", "make the sleeves longer": short-/long-sleeved, not a shorter garment
    text = re.sub(r"\b(short|long)er\s+(sleeves?)\b", r"\1 \2", text)
    text = re.sub(r"\bsleeves?\s+(?:a (?:bit|little) |much |slightly )?(short|long)er\b", r"\1 sleeves", text)
    text = re.sub(r"^\s*/\s*(?:restyle\b)?", " ", text)  # "/restyle batch 8", "/help"
    return re.sub(r"\s+", " ", text).strip()


def _edit_distance(a: str, b: str) -> int:
    """Optimal-string-alignment distance: insertions, deletions, substitutions and adjacent swaps cost 1."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[-1]


@cache
def _english() -> frozenset[str]:
    """English words (pyspellchecker's frequency list, shipped in its wheel): never "repaired" into vocabulary
    ("matter" is not "matte", "following" is not "flowing").  Loaded on the first unknown word (~0.1 s)."""
    from spellchecker import SpellChecker

    return frozenset(SpellChecker(language="en", distance=1).word_frequency.dictionary)


def _correct_word(word: str) -> str:
    """Repair a typo ("skrit" -> "skirt"): difflib ratio >= 0.8, same first letter, at most one edit (two for
    words of 7+ letters), and never for English words (:func:`_english`)."""
    if len(word) < 4 or not word.isalpha() or word in _KNOWN or (word,) in _LEX:
        return word
    if word.endswith("s") and (word[:-1],) in _LEX:
        return word
    candidates = difflib.get_close_matches(word, _FUZZY_BY_LETTER.get(word[0], ()), n=3, cutoff=0.8)
    if not candidates or word in _english():
        return word
    for match in candidates:
        if _edit_distance(word, match) <= (1 if len(word) <= 6 else 2):
            return match
    return word


def _correct_typos(text: str) -> str:
    return re.sub(r"[a-z]+", lambda m: _correct_word(m.group(0)), text)


# ---------------------------------------------------------------------------------------------------------------
# Stage 3: settings, variation numbers and counts
# ---------------------------------------------------------------------------------------------------------------
_SETTING_ALIASES = {
    "steps": ("num inference steps", "num_inference_steps", "inference steps", "num_steps", "steps", "step"),
    "guidance": ("guidance scale", "guidance_scale", "cfg scale", "cfg_scale", "guidance", "cfg"),
    "seed": ("seed",),
    "strength": ("denoising strength", "denoising_strength", "strength", "denoise", "denoising"),
    "count": ("num_images", "batch_size", "count"),
    "grow": ("mask grow", "mask_grow", "grow", "dilate", "mask dilate", "mask_dilate"),
    "threshold": ("mask threshold", "mask_threshold", "threshold"),
}
_SETTING_TYPES: dict[str, type] = {"steps": int, "seed": int, "count": int, "guidance": float, "strength": float,
                                   "grow": int, "threshold": float, "grow_by": int}
#: "make the mask bigger", "the mask is too small" → grow it; "tighter mask" → shrink it (pixels, relative)
_MASK_BIGGER_RE = re.compile(r"\b(?:bigger|larger|wider|grow|expand|enlarge|extend)\s+(?:the\s+)?mask\b"
                             r"|\bmasks?\s+(?:is\s+|was\s+)?(?:a\s+bit\s+|a\s+little\s+|slightly\s+)?"
                             r"(?:too\s+(?:small|tight|narrow)|bigger|larger|wider)\b")
_MASK_SMALLER_RE = re.compile(r"\b(?:smaller|tighter|narrower|shrink|reduce)\s+(?:the\s+)?mask\b"
                              r"|\bmasks?\s+(?:is\s+|was\s+)?(?:a\s+bit\s+|a\s+little\s+|slightly\s+)?"
                              r"(?:too\s+(?:big|large|wide|loose)|smaller|tighter)\b")
MASK_STEP_PX = 16
_ALIAS_TO_SETTING = {alias: key for key, aliases in _SETTING_ALIASES.items() for alias in aliases}
_ALIAS_RE = "|".join(re.escape(a).replace(r"\ ", r"\s+") for a in sorted(_ALIAS_TO_SETTING, key=len, reverse=True))
_NUMVAL = r"-?\d+(?:\.\d+)?"
_SET_KV_RE = re.compile(r"\b(?P<key>[a-z][a-z_]*)\s*=\s*(?P<val>[a-z0-9_.\-]*)")  # "steps=" too: answered
_SET_KEY_FIRST_RE = re.compile(rf"\b(?P<key>{_ALIAS_RE})\s*(?:=|:|\bto\b|\bof\b|\bat\b|\bis\b|\bas\b)?\s*"
                               rf"(?P<val>{_NUMVAL})(?![\w.])")
_SET_VAL_FIRST_RE = re.compile(rf"(?<![\w.#])(?P<val>{_NUMVAL})\s*(?P<key>(?:inference\s+)?steps?|guidance|cfg)\b")
#: "use the resort look", "switch to our studio look": a brand look (LoRA) by name, unless the word is a style
_SET_LOOK_RE = re.compile(r"\b(?:use|switch\s+to|apply|select|go\s+with)\s+(?:the\s+|our\s+|my\s+)?"
                          r"(?P<val>[a-z0-9][a-z0-9_-]{0,39})\s+look\b")
_SETTINGS_WORD_RE = re.compile(r"\b(?:settings?|config|configuration|params|parameters|defaults)\b")


def _coerce(key: str, value: str) -> str | int | float:
    typ = _SETTING_TYPES.get(key)
    try:
        if typ is int:
            return int(float(value))
        if typ is float:
            return float(value)
        return int(value) if re.fullmatch(r"-?\d+", value) else float(value) if re.fullmatch(_NUMVAL, value) else value
    except ValueError:
        return value


def _blank(text: str, start: int, end: int) -> str:
    return text[:start] + " " * (end - start) + text[end:]


def _extract_settings(text: str) -> tuple[dict[str, str | int | float], str]:
    found: dict[str, str | int | float] = {}
    for regex in (_SET_KV_RE, _SET_KEY_FIRST_RE, _SET_VAL_FIRST_RE):
        for m in list(regex.finditer(text)):
            raw_key = re.sub(r"\s+", " ", m.group("key"))
            key = _ALIAS_TO_SETTING.get(raw_key, _ALIAS_TO_SETTING.get(raw_key.replace(" ", "_"), raw_key))
            found.setdefault(key, _coerce(key, m.group("val")))
            text = _blank(text, m.start(), m.end())
    for regex, step in ((_MASK_BIGGER_RE, MASK_STEP_PX), (_MASK_SMALLER_RE, -MASK_STEP_PX // 2)):
        for m in list(regex.finditer(text)):
            found.setdefault("grow_by", step)
            text = _blank(text, m.start(), m.end())
    for m in list(_SET_LOOK_RE.finditer(text)):
        if m.group("val") not in _CATEGORY and m.group("val") not in GARMENTS:
            found.setdefault("look", m.group("val"))
            text = _blank(text, m.start(), m.end())
    return found, text


def _num_alternation(*, with_one: bool = True) -> str:
    tens = "twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety"
    units = "one|two|three|four|five|six|seven|eight|nine"
    words = sorted((w for w in _NUMBER_WORDS if w not in tens.split("|") and (with_one or w != "one")),
                   key=len, reverse=True)
    return rf"(?:\d+|(?:{tens})(?:\s+(?:{units}))?|{'|'.join(words)})"


_NUM = _num_alternation()
_NUM_NO_ONE = _num_alternation(with_one=False)
_ORD = r"(?:\d+(?:st|nd|rd|th)|" + "|".join(_ORDINALS) + ")"
_REF_NOUNS = ("one|ones|image|images|pic|pics|picture|photo|option|version|variation|variant|result|look|render"
              "|take|design|idea|shot")
_COUNT_NOUNS = ("variations?|variants?|versions?|options?|takes|looks|ideas|designs|alternatives|images|pics"
                "|pictures|photos|renders|samples|outputs|results|examples|shots|tries|attempts|generations"
                "|outfits|iterations|rerolls")
_REF_NOUNS_SET = frozenset(_REF_NOUNS.split("|"))
_VAR_VERBS = ("use|fav|fave|favorite|favourite|star|love|i like|i really like|something like|pick|choose|select|take|keep|save|continue from"
              "|continue with|go with|going with|go back to|back to|start from|start with|build on|build from"
              "|base on|based on|work from|work on|revert to|more like|similar to|vary|riff on|variations of"
              "|variants of|versions of|variations on|same as|try|tweak|edit|redo|heart|bookmark|proceed with"
              "|obsessed with|in love with|crazy about|into")
_VAR_VERBS_RE = _VAR_VERBS.replace(" ", r"\s+")

_VAR_EXPLICIT = [
    re.compile(rf"#\s*(?P<num>{_NUM})\b"),
    re.compile(rf"\b(?:number|num|nr|option|opt|version|variation|variant|image|img|pic|picture|photo|result"
               rf"|render|sample|candidate)\s*#?\s*(?P<num>{_NUM})\b(?!\s*(?:more|{_COUNT_NOUNS})\b)"),
    re.compile(r"\bno\.?\s*#?\s*(?P<num>\d+)\b"),
    re.compile(r"\bv(?P<num>\d+)\b"),
]
_VAR_ORDINAL = re.compile(rf"(?:\b(?P<pre>the|that|this|my|your|a)\s+)?\b(?P<ord>{_ORD})\b"
                          rf"(?:\s+(?P<post>{_REF_NOUNS})\b)?")
_VAR_VERB = re.compile(rf"\b(?:{_VAR_VERBS_RE})\s+(?:the\s+|number\s+|option\s+|image\s+)?(?P<num>\d+|{_NUM_NO_ONE})"
                       rf"\b(?!\s*(?:more|times|x\b|%|{_COUNT_NOUNS}))")
_VAR_BARE = re.compile(r"^\s*#?\s*(?P<num>\d+)\s*[.!?]*\s*$")

_COUNT_PATTERNS = [  # (regex, kind)
    (re.compile(rf"\bbatch\s*(?:of\s+|size\s+|x\s*)?(?P<num>{_NUM})\b"), "batch"),
    (re.compile(rf"\b(?P<num>{_NUM})\s+(?P<mod>(?:more|other|different|new|extra|fresh|alternative|additional"
                rf"|random)\s+)?(?:{_COUNT_NOUNS})\b"), "noun"),
    (re.compile(rf"\b(?P<num>{_NUM})\s+more\b"), "more"),
    # "10 of those", "5 like that"
    (re.compile(rf"\b(?P<num>{_NUM})\s+(?:of\s+(?:those|these|them|that|this)|like\s+(?:that|this|those|these|it"
                rf"|them))\b"), "more"),
    (re.compile(rf"\b(?:another|other)\s+(?P<num>{_NUM})\b"), "more"),
    (re.compile(rf"\b(?P<num>{_NUM})\s+times\b"), "more"),
    (re.compile(rf"\b(?:give\s+me|show\s+me|get\s+me|send\s+me|make\s+me|make|generate|create|render|produce"
                rf"|draw|do|want|need)\s+(?P<num>\d+|{_NUM_NO_ONE})\b(?!\s*(?:st|nd|rd|th)\b)"), "verb"),
]


def _to_int(words: str) -> int:
    if words.isdigit():
        return int(words)
    return sum(_NUMBER_WORDS.get(w, 0) for w in words.split())


def _valid_variation(n: int) -> int | None:
    return n if 1 <= n <= MAX_VARIATION else None


def _extract_numbers(text: str) -> tuple[int | None, int | None, str | None, str]:
    """Return (variation, count, count_kind, text-with-those-spans-blanked)."""
    variation: int | None = None
    var_pos = len(text) + 1

    def take_variation(m: re.Match, n: int) -> None:
        nonlocal variation, var_pos, text
        if m.start() < var_pos and _valid_variation(n) is not None:
            variation, var_pos = n, m.start()
        text = _blank(text, m.start(), m.end())

    for regex in _VAR_EXPLICIT:
        for m in list(regex.finditer(text)):
            take_variation(m, _to_int(m.group("num")))
    if variation is None:
        for m in list(_VAR_ORDINAL.finditer(text)):
            word = m.group("ord")
            pre, post = m.group("pre"), m.group("post")
            before = text[: m.start()].split()
            verb_before = bool(before) and re.fullmatch(rf"(?:{_VAR_VERBS})", before[-1]) is not None
            if pre == "a" or not (word[0].isdigit() or pre or post or verb_before):
                continue
            if re.match(r"\s+of\s+the\s+(?:day|morning|week|year|season|batch|bunch|shoot)\b", text[m.end():]):
                continue  # "first one of the day": not a variation
            n = int(re.match(r"\d+", word).group(0)) if word[0].isdigit() else _ORDINALS[word]
            take_variation(m, n)

    count: int | None = None
    kind: str | None = None
    for regex, k in _COUNT_PATTERNS:
        for m in list(regex.finditer(text)):
            word = m.group("num")
            if count is None and kind is None:
                kind = "vary-noun" if k == "noun" and (m.group("mod") or "").strip() == "more" else k
                one = word == "one" and k == "more"  # "another one" / "one more": no explicit number
                n = _to_int(word)
                count = None if one or n < 1 else min(n, MAX_COUNT)
            text = _blank(text, m.start(), m.end())

    if variation is None:
        for m in list(_VAR_VERB.finditer(text)):
            num = m.group("num")
            take_variation(m, _to_int(num))
            text = text[: m.start()] + m.group(0)[: m.start("num") - m.start()] + " " * len(num) + text[m.end():]
    if variation is None:
        m = _VAR_BARE.match(text)
        if m:
            take_variation(m, int(m.group("num")))
    return variation, count, kind, text


# ---------------------------------------------------------------------------------------------------------------
# Stage 4: vocabulary scan, negation, garment swaps and per-garment attributes
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class _Tok:
    kind: str  # "garment" | "attr" | "neg" | "keep" | "word" | "num" | "punct"
    value: str
    negated: bool = False
    kept: bool = False
    emoji: bool = False


_PUNCT = frozenset(",.;:!?/&+")


def _match(words: list[str], i: int) -> tuple[int, tuple[_Unit, ...]] | None:
    for length in range(min(_LEX_MAXLEN, len(words) - i), 0, -1):
        units = _LEX.get(tuple(words[i: i + length]))
        if units:
            return length, units
    word = words[i]
    if word.endswith("s") and len(word) > 3:  # "reds", "pastels", "velvets"
        units = _LEX.get((word[:-1],))
        if units and len(units) == 1 and units[0][0] == "a" and units[0][1] in ("colour", "pattern", "material"):
            return 1, units
    return None


def _unit_tok(unit: _Unit) -> _Tok:
    if unit[0] == "g":
        return _Tok("garment", unit[1])
    if unit[0] == "a":
        return _Tok("attr", unit[2])
    return _Tok("neg" if unit[0] == "n" else "keep", unit[1])


def _scan(words: list[str]) -> list[_Tok]:
    out: list[_Tok] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word in _PUNCT:
            out.append(_Tok("punct", word))
            i += 1
            continue
        if word.endswith(_EMOJI_MARK):
            units = _LEX.get((word[: -len(_EMOJI_MARK)],), ())
            if units:
                out.append(_Tok("garment", units[0][1], emoji=True))
            i += 1
            continue
        if word.isdigit() or word in _NUMBER_WORDS:
            out.append(_Tok("num", word))
            i += 1
            continue
        if word in _COLOUR_MODIFIERS and i + 1 < len(words):
            nxt = _match(words, i + 1)
            if nxt and len(nxt[1]) == 1 and nxt[1][0][:2] == ("a", "colour"):
                out.append(_Tok("attr", f"{word} {nxt[1][0][2]}"))
                i += 1 + nxt[0]
                continue
        if word == "jean":  # "jean jacket" -> denim jacket; "jean" alone -> jeans
            nxt = _match(words, i + 1) if i + 1 < len(words) else None
            garment_next = bool(nxt) and nxt[1][-1][0] == "g"
            out.append(_Tok("attr", "denim") if garment_next else _Tok("garment", "jeans"))
            i += 1
            continue
        m = _match(words, i)
        if m:
            out.extend(_unit_tok(u) for u in m[1])
            i += m[0]
            continue
        out.append(_Tok("word", word))
        i += 1
    return out


def _next_content(toks: list[_Tok], j: int, skip: frozenset[str], limit: int = 4) -> int:
    """Index of the first token from j that is not a skippable word (at most `limit` skipped)."""
    skipped = 0
    while j < len(toks) and toks[j].kind == "word" and toks[j].value in skip and skipped < limit:
        j += 1
        skipped += 1
    return j


def _mark_negation(toks: list[_Tok]) -> None:
    i = 0
    while i < len(toks):
        tok = toks[i]
        if tok.kind not in ("neg", "keep"):
            i += 1
            continue
        j = _next_content(toks, i + 1, _NEG_FILLERS if tok.kind == "neg" else _ARTICLES)
        if j >= len(toks):
            break
        first = toks[j]
        if tok.kind == "keep":
            if first.kind == "garment":
                first.kept = True
            i = j
            continue
        if tok.value in _REVERSE_CONNECTORS and first.kind == "garment":
            i = j  # "a skirt instead of the jeans": a swap, handled by _transforms
            continue
        if first.kind == "garment":  # "not the top", "without a belt"
            first.negated = True
            i = j + 1
            continue
        k = j
        while k < len(toks):
            cur = toks[k]
            if cur.kind == "attr":
                cur.negated = True
                k += 1
            elif cur.kind == "word" and cur.value in _GLUE:
                k += 1
            elif (cur.value in ("and", "or", "nor") or cur.value in ("/", "&")) and k > j:
                nxt = _next_content(toks, k + 1, _ARTICLES)
                if nxt < len(toks) and toks[nxt].kind == "attr":
                    k = nxt
                else:
                    break
            else:
                break
        i = max(k, i + 1)


@dataclass
class _Edit:
    source: int  # index of the garment in the photo
    target: int  # index of the new item's noun (== source when it does not change)
    attrs: list[int] = field(default_factory=list)


def _sentence_start(toks: list[_Tok], i: int) -> int:
    while i > 0 and not (toks[i - 1].kind == "punct" and toks[i - 1].value in ".!?;"):
        i -= 1
    return i


def _connector_ok(toks: list[_Tok], g1: int, g2: int) -> tuple[bool, bool]:
    """Is there a swap between garments g1 and g2?  Returns (is_swap, reversed)."""
    verbs = {t.value for t in toks[_sentence_start(toks, g1): g1] if t.kind == "word"}
    for p in range(g2 - 1, g1, -1):
        seg2 = toks[p + 1: g2]
        if any(not (t.kind == "attr" or (t.kind == "word" and (t.value in _ARTICLES or t.value in _GLUE)))
               for t in seg2):
            continue
        seg1 = toks[g1 + 1: p]
        if any(t.kind in ("punct", "garment") or t.value in _STOP_CLAUSE for t in seg1):
            continue
        conn = toks[p]
        if conn.kind == "neg" and conn.value in _REVERSE_CONNECTORS:
            return True, True
        if conn.kind != "word":
            continue
        if conn.value == "into":
            return True, False
        if conn.value == "to" and verbs & _TRANSFORM_TO_VERBS:
            return True, False
        if conn.value in ("for", "with", "by") and verbs & _SWAP_VERBS:
            return True, False
        if conn.value == "as" and verbs & _AS_VERBS:
            return True, False
    # "make her jeans a skirt": verb + garment + article + attributes + garment
    between = toks[g1 + 1: g2]
    if between and between[0].kind == "word" and between[0].value in ("a", "an", "some"):
        between = between[1:]
    if verbs & _DIRECT_VERBS and all(t.kind == "attr" or (t.kind == "word" and t.value in _GLUE) for t in between):
        return True, False
    return False, False


def _owner(toks: list[_Tok], i: int, eligible: set[int]) -> int | None:
    """The garment an attribute describes: the garment its run leads to, else the nearest garment before it."""
    k = i + 1
    while k < len(toks):
        cur = toks[k]
        if cur.kind == "attr" or (cur.kind == "word" and cur.value in _GLUE):
            k += 1
        elif cur.value in ("and", "or", "&", ",", "/") and k + 1 < len(toks) and toks[k + 1].kind == "attr":
            k += 1
        else:
            break
    if k < len(toks) and toks[k].kind == "garment":
        return k  # attributive: "a red skirt" (may be kept/negated/a swap source: caller decides)
    for j in range(i - 1, -1, -1):
        if j in eligible:
            return j
    return None


def _groups(toks: list[_Tok], garments: list[int]) -> list[list[int]]:
    """Garments joined only by and/commas/articles share attributes ("the top and skirt in black")."""
    groups: list[list[int]] = []
    for g in garments:
        if groups:
            prev = groups[-1][-1]
            between = toks[prev + 1: g]
            if all(t.value in ("and", "&", ",", "+", "plus", "both") or (t.kind == "word" and t.value in _ARTICLES)
                   for t in between):
                groups[-1].append(g)
                continue
        groups.append([g])
    return groups


@dataclass
class _Analysis:
    edits: list[_Edit]
    global_attrs: list[int]
    negatives: list[str]


def _analyse(toks: list[_Tok]) -> _Analysis:
    if any(t.kind == "garment" and not t.emoji for t in toks):
        for t in toks:
            if t.emoji:
                t.kind = "word"
    _mark_negation(toks)
    all_garments = [i for i, t in enumerate(toks) if t.kind == "garment" and not t.negated]
    garments = [i for i in all_garments if not toks[i].kept] or all_garments
    for i in garments:
        toks[i].kept = False

    # Swaps: "turn her pants into a skirt", "swap the jeans for a skirt", "a skirt instead of the jeans".
    pair_of: dict[int, int] = {}  # source -> target
    consumed: set[int] = set()
    for a, b in zip(garments, garments[1:], strict=False):
        if a in consumed or b in consumed:
            continue
        ok, rev = _connector_ok(toks, a, b)
        if ok:
            src, dst = (b, a) if rev else (a, b)
            pair_of[src] = dst
            consumed.update((a, b))
    targets = set(pair_of.values())
    edits: dict[int, _Edit] = {}
    for g in garments:
        if g in targets:
            continue
        edits[g] = _Edit(source=g, target=pair_of.get(g, g))
    edit_of = {e.source: e for e in edits.values()} | {e.target: e for e in edits.values()}

    eligible = set(garments)
    global_attrs: list[int] = []
    for i, tok in enumerate(toks):
        if tok.kind != "attr" or tok.negated:
            continue
        owner = _owner(toks, i, eligible)
        if owner is None:
            global_attrs.append(i)
            continue
        if owner not in eligible:  # describes a kept or negated garment
            continue
        edit = edit_of[owner]
        if owner == edit.source and edit.source != edit.target and owner > i:
            continue  # "turn the blue jeans into a skirt": "blue" describes the old item, not the new one
        edit.attrs.append(i)

    ordered = sorted(edits.values(), key=lambda e: min(e.source, e.target))
    plain = [e.source for e in ordered if e.source == e.target]
    for group in _groups(toks, plain):
        shared = sorted({a for g in group for a in edits[g].attrs})
        for g in group:
            edits[g].attrs = list(shared)
    if len(ordered) > 1 and any(e.attrs for e in ordered):
        ordered = [e for e in ordered if e.attrs or e.source != e.target]

    negatives = _unique(t.value for t in toks if t.negated and t.kind in ("attr", "garment"))
    return _Analysis(ordered, global_attrs, negatives)


def _unique(items) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        seen.setdefault(item, None)
    return list(seen)


# ---------------------------------------------------------------------------------------------------------------
# Stage 5: action and prompt
# ---------------------------------------------------------------------------------------------------------------
_UNDO_STRONG_RE = re.compile(r"\b(?:undo|revert|reverted|rollback|roll\s+back|(?:ctrl|cmd)\s*\+?\s*z)\b")
_RESET_RE = re.compile(r"\b(?:start\s+(?:over|again|afresh|fresh)|from\s+scratch|start\s+from\s+the\s+original"
                       r"|(?:from|back\s+to)\s+the\s+(?:start|beginning)"
                       r"|reset(?!\s+(?:the\s+|my\s+|all\s+)?(?:settings?|config|steps|seed|guidance|strength|count))"
                       r"|(?:back\s+to|use|revert\s+to|return\s+to|go\s+back\s+to|from)\s+(?:the\s+)?original"
                       r"(?:\s+(?:photo|picture|image|pic))?\b(?!\s+(?:colou?r|length|fabric|shape|cut|style))"
                       r"|original\s+(?:photo|picture|image|pic)\s+again"
                       r"|(?:show|see)\s+(?:me\s+|us\s+)?the\s+original\b(?!\s+(?:colou?r|length|fabric|shape|cut|style)))\b")
_UNDO_WEAK_RE = re.compile(r"\b(?:go\s+back|step\s+back|take\s+(?:it|that|this)\s+back|back|previous"
                           r"|cancel\s+(?:that|it|this))\b")
_HELP_RE = re.compile(r"^\s*(?:\?+|h|help|commands|usage|instructions|menu|info)\s*[?!.]*\s*$"
                      r"|\b(?:help|what\s+(?:else\s+)?can\s+you\s+do|what\s+do\s+you\s+do"
                      r"|how\s+does\s+(?:this|it|that|the\s+bot|this\s+bot|restyle)\s+work"
                      r"|how\s+do\s+i\s+(?:use|start)|how\s+to\s+use|what\s+can\s+i\s+(?:say|ask|do|type)"
                      r"|what\s+are\s+the\s+commands|show\s+commands|who\s+are\s+you)\b")
_BATCH_RE = re.compile(r"\b(?:batch|bulk)\b")
_VARY_RE = re.compile(rf"\b(?:more\s+like|something\s+like|similar|again|vary|variations?"
                      rf"|variants?|regenerate|re\s*roll|retry|redo|riff|iterate|tweak|another|one\s+more"
                      rf"|same\s+(?:again|thing\s+again|as|one|vibe|style))\b"
                      rf"|\b(?:more|other|different|new|fresh)\s+(?:{_COUNT_NOUNS})\b|\bshow\s+me\s+more\b"
                      rf"|\bkeep\s+(?:going|them\s+coming)\b"
                      rf"|\b(?:{_NUM}|some|few|couple|several|any)\s+more\b"
                      rf"|\bmore\s*(?:$|[,.!?;#]|(?:please|pls|plz|of\s+(?:those|these|that|this|them|it"
                      rf"|the\s+same))\b)")
_FAV_RE = re.compile(r"\b(?:fav|fave|favs|faves|favorite|favourite|favorites|favourites|favorited|favourited"
                     r"|star|starred|love|loved|adore|heart|bookmark|save|saved|keeper)\b"
                     r"|\bi\s+(?:really\s+|do\s+|quite\s+)?(?:like|love|adore|dig)\b|^\s*like\s+(?:it|this|that)\b")
_INFO_RE = re.compile(r"\b(?:seed|prompt|details?|info|settings|how\s+(?:did\s+you|was\s+it|were\s+they)\s+"
                      r"(?:make|made|get|got|do|done)|what\s+(?:did\s+you\s+use|was\s+used))\b")
_PRAISE_RE = re.compile(r"\b(?:slaps|slay\w*|serving|ate|iconic|giving|vibe|hits\s+different|exactly\s+what"
                        r"|winner|the\s+one|keeper|incredible|unreal|insane|sick|in\s+love|the\s+moment|love\s+love|dream|chic"
                        r"|elegant\s+af|yes\s+queen|10\s*/\s*10|love\s+it|love\s+this|stunner|dreamy|cute|pretty"
                        r"|great|perfect|gorgeous|beautiful|stunning|amazing|awesome|lovely|fantastic|nice"
                        r"|wonderful|brilliant|excellent|obsessed|fire|chef'?s\s+kiss|looks?\s+good|spot\s+on"
                        r"|nailed\s+it|so\s+good|the\s+best|best\s+one|wow)\b")
_USE_RE = re.compile(r"\b(?:use|using|pick|choose|chose|select|go\s+with|going\s+with|continue|start\s+from"
                     r"|build\s+(?:on|from)|base|based\s+on|work\s+(?:from|with|on)|proceed\s+with|take"
                     r"|that\s+one|this\s+one|revert\s+to|back\s+to)\b")


# A clear request to the bot: an imperative at the start of a clause, a polite ask, a suggestion with a style.
_REQUEST_RE = re.compile(
    r"(?:^|[.,;!?]\s*|\b(?:and|but|then|so|now|also|ok|okay|pls|please|plz|hey|hi|hmm+|right|alright|cool|great"
    r"|nice|yes|yeah|next|instead|maybe)\s+)"
    r"(?:(?:just|pls|please|plz|now|quickly|also|then)\s+)?"
    r"(?:make|try|change|turn|give|gimme|show|do|render|generate|create|swap|switch|replace|put|add|go|lets|let\s+s"
    r"|restyle|redo|dress|style|paint|recolou?r|colou?r|repaint|see|get|keep|vary|batch|lose|ditch|drop|lengthen"
    r"|shorten|reimagine|redesign|convert|transform|experiment|mix|remake|rework|update|use|apply|shift|bring|tweak"
    r"|upscale|enhance|sharpen|compare|export|download|send|share|print|place|remove|take|fix|adjust|recut|rerun"
    r"|regenerate|reroll|re\s+roll|refresh"
    r"|maybe\s+try|how\s+about|what\s+about|what\s+if)\b"
    r"|\b(?:make|try|change|turn|give|show|do|swap|switch|replace|add|render|generate|paint|recolou?r"
    r"|restyle|redo|see)\s+(?:the|it|her|his|them|this|that|a|an|#|me|us|some|one|those|these|both)\b"
    r"|\b(?:can|could|would|will|cud|wud|can't|cant)\s+(?:you|u|ya|we|i|it|the|this|that|she|her|they|these)\b"
    r"|\b(?:should|could|can|would)\s+(?:be|have)\b|\b(?:want|need)\s+(?:this|it|them|that|these)\s+in\b"
    r"|\bpl(?:ease|s|z)\b|\b(?:i|we)\s*(?:d|would)?\s*(?:really\s+|just\s+|so\s+)?(?:like|love|want|need|wanna)\s+(?:to\s+(?:see|try|get)|it|them"
    r"|this|that|a|an|some|more|#)|\bi\s+(?:want|wanna|need)\b|\bwhat\s+would\s+(?:it|this|that|she|he|they)\s+look"
    r"|\bhow\s+would\s+(?:it|this|that|she|he|they)\s+look|\bany\s+chance\b|\b(?:let\s*me|lemme|lets)\s+see\b"
    r"|\bshow\s+(?:me|us)\b|\bin\s+(?:a\s+)?(?:different|another)\b"
    r"|\bmore\s+like\b|\b(?:\d+|few|couple|some)\s+more\b|\bmore\s+(?:options|versions|variations|ideas|takes|looks)\b")
_TERSE_OK = frozenset("in with but and or as a an the it its this that some please pls plz now instead also then "
                      "touch tad all just even less lot smidge bit abit "
                      "too version versions one ones same again like more bit little slightly much way really so "
                      "very kinda quite style for both each".split())
_SENTENCE_WORDS = frozenset("is are was were am be been looks look seems seem feel feels think thought need needs "
                            "should would could can did does has have had i we she he they you its it thats getting "
                            "got shot wore".split())
_LAUGH_RE = re.compile(r"\b(?:lol+|lmao+|lmfao|rofl|haha\w*|hehe\w*|omg|omfg|wtf|ikr|anyone|anybody|guys|team"
                       r"|everyone|lunch|meeting|call|email|client\s+call|fyi|btw|this\s+thread)\b")
_QUESTION_START_RE = re.compile(r"^(?:is|are|was|were|does|do|did|has|have|had|who|why|where|when|whose|whats"
                                r"|what\s+(?:colou?r|fabric|material|seed|prompt|guidance|steps|settings|did|was|were"
                                r"|does|do|made|happened)"
                                r"|what\s+is|what\s+s|how\s+come|how\s+(?:long|many|much|fast|often|big)|isnt|arent"
                                r"|doesnt|didnt|should|shall|will|am|which)\b")
_HOWTO_RE = re.compile(r"^(?:\w+\s+){0,3}?(?:how\s+(?:do|can|would|should|could)\s+(?:i|we|you|one)|how\s+to"
                       r"|is\s+there\s+a\s+way\s+to|where\s+do\s+i|what\s+do\s+i\s+(?:type|say|write)"
                       r"|can\s+i\s+(?:undo|go\s+back|save|star|change\s+the\s+settings|set|get\s+back)"
                       r"|whats?\s+(?:s\s+)?the\s+command|what\s+is\s+the\s+command|which\s+command|what\s+command"
                       r"|(?:can\s+you\s+)?explain|what\s+does\s+(?:strength|guidance|seed|steps|threshold|grow)\s+do"
                       r"|what\s+is\s+(?:strength|guidance|a\s+seed|steps)"
                       r"|what\s+(?:settings|options)\s+can\s+i)\b")
_HOWTO_TOPICS = [  # (topic, regex) — the first that matches the question names it
    ("reset", r"\boriginal|start\s+over|from\s+scratch|reset|beginning"),
    ("undo", r"\bundo|go\s+back|previous|revert|step\s+back|get\s+back|take\s+back"),
    ("use", r"\bbase\b|continue\s+from|build\s+on|work\s+from|working\s+from|keep\s+working|use\s+(?:one|a|#|\d)"),
    ("info", r"\bprompt|seed\s+of|how\s+(?:it|#?\d+)\s+was\s+made|(?:find|see|get)\s+the\s+seed"),
    ("favorite", r"\bfav\w*|star\w*|save|keep|bookmark|heart|like\s+one|pick\s+(?:one|a\s+favou?rite)"),
    ("use", r"\bbase|continue\s+from|build\s+on|work\s+from|use\s+(?:one|a|#|\d)"),
    ("batch", r"\bbatch|bulk|(?:lots|many|several|more|\d+)\s+at\s+once|slash\s+command"),
    ("settings", r"\bsettings?|steps|seed|guidance|strength|count|mask|threshold"),
    ("more", r"\bmore\s+(?:like|of|variations|options)|variations|regenerate|another"),
    ("looks", r"\blooks?\b|lora|brand"),
    ("info", r"\bprompt|how\s+(?:it|#?\d+)\s+was\s+made"),
    ("restyle", r"\bchange|colou?r|make|restyle|fabric|garment|try|edit|swap"),
]
_HOWTO_TOPICS_RE = [(t, re.compile(r)) for t, r in _HOWTO_TOPICS]
_CONFIRM_RE = re.compile(r"^(?:(?:y|ya|yes|yep|yup|yeah|yea|sure|ok|okay)\W+)?"
                         r"(?:y|ya|yes|yep|yup|yeah|yea|sure|ok|okay|k|go|go\s+ahead|go\s+for\s+it|do\s+it|generate(?:\s+it)?"
                         r"|please\s+do|yes\s+please|sounds\s+good|lets\s+do\s+it|lets\s+go|correct|right|exactly"
                         r"|perfect\s+go|yes\s+do\s+it|confirm(?:ed)?)(?:\s+(?:please|pls|thanks|thx|then|now))?[\s.!]*$")
_CANCEL_RE = re.compile(r"^(?:(?:nah|no|nope|ok|okay|actually|hmm+|wait|never\s*mind|stop)\W+)*(?:n|no|nope|nah"
                        r"|not\s+that(?:\s+one)?|leave\s+it(?:\s+as\s+(?:is|it\s+is))?|wrong\s+one|no\s+wrong\s+one"
                        r"|cancel\s+(?:that|it|this)|scratch\s+that|never\s*mind|nvm|cancel|stop|dont|no\s+thanks"
                        r"|stop\s+(?:generating|it|that|this)"
                        r"|no\s+thank\s+you"
                        r"|wrong|not\s+what\s+i\s+meant|thats\s+not\s+it|forget\s+it|scrap\s+that)[\s.!]*$")
# Things restyle does not (yet) do, and how people say them.  Checked on the normalised text, whole words only.
_TOPIC_PATTERNS: list[tuple[str, str]] = [
    ("other_photos", r"\b(?:other|rest\s+of\s+the|all\s+(?:the|my|our)|every|each|these|those|remaining|whole)\s+"
                     r"(?:\d+\s+|[a-z]+\s+)?(?:photos|pics|images|shots|pictures|looks\s+in\s+the\s+shoot|shoot)\b"
                     r"|\bwhole\s+(?:shoot|collection|lookbook\s+shoot)\b|\bbatch\s+of\s+photos\b"),
    ("upscale", r"\b(?:\d+\s*dpi|dpi|upscale\w*|up\s*res|upres|hi\s*res|high\s*res|higher\s+res\w*|full\s+res\w*|resolution|4k|8k"
                r"|enhance|sharpen\w*|sharper|less\s+blurry|blurry|pixelated|print\s+quality|super\s*res\w*)\b"),
    ("compare", r"#?\s*\d+\s+or\s+#?\s*\d+|\b(?:different\s+(?:from|between|than)|what\s+changed\s+between|rank"
                r"|which\s+(?:of\s+these|one)\s+(?:would|will|is|looks|reads)|vs|versus|side\s+by\s+side|next\s+to\s+each\s+other|compare\w*|comparison|difference\s+between"
                r"|which\s+(?:one\s+)?(?:is|looks|do\s+you\s+think\s+is)\s+better|which\s+(?:is|one\s+is)\s+"
                r"(?:best|nicer)|better\s*,?\s*#?\d+\s+or\s+#?\d+|which\s+do\s+you\s+prefer|preferred)\b"),
    ("lookbook", r"\b(?:look\s*book|pdf|deck|slide\s+deck|keynote|powerpoint|export\w*|download\w*|zip\s+(?:file|it|them|of)"
                 r"|zip\s+up\s+(?:the\s+|all\s+(?:the\s+)?|my\s+|our\s+)?(?:favs?|faves|favou?rites|starred|shortlist|these|those"
                 r"|them|everything)"
                 r"|email\w*|print\s+(?:it|them|this|out)|presentation|moodboard|mood\s+board"
                 r"|send\s+(?:it|them|this|these|those|#?\d+)\s+to|share\s+(?:it|them|this|these|#?\d+)|google\s+drive"
                 r"|dropbox|drive\s+folder|(?:make|add|put)\s+(?:a|it\s+on\s+a|them\s+on\s+a)\s+slide)\b"),
    ("background", r"\b(?:background|backdrop|bg|scenery|scene|setting\s+of\s+the\s+photo|location|backgrounds"
                   r"|(?:on|at)\s+(?:a|the)\s+(?:beach|rooftop|runway|street|balcony)|in\s+(?:paris|milan|tokyo|london|new\s+york)"
                   r"|street\s+scene|setting\s+(?:a|an|to|in)|cafe|sunset|brick\s+wall|in\s+front\s+of|behind\s+her"
                   r"|studio\s+(?:grey|gray|white|backdrop)"
                   r"|(?:paris|milan|tokyo|london|new\s+york|city|country|beach|garden|desert|forest)\s+"
                   r"(?:street|streets|cafe|rooftop|skyline|park|scene|road|lane|field|backdrop))\b"),
    ("hair", r"\b(?:(?:give|cut)\s+her\s+(?:a\s+)?(?:fringe|bob|bangs|pixie)|hair\w*|ponytail|braids?|braided|updo|curls|curly|fringe\s+cut|blonde|brunette|redhead|bun)\b"),
    ("makeup", r"\b(?:make\s*up|lipstick|lips|lip\s+colou?r|eyeshadow|eyeliner|mascara|nail\s*polish|nails|manicure"
               r"|blusher|contour|smok[e]?y\s+eyes?|eyebrows?|cheeks?|lashes|freckles)\b"),
    ("jewellery", r"\b(?:hoops|sunnies|studs|jewel\w*|earrings?|necklaces?|bracelets?|rings?|sunglasses|glasses|shades|watch|watches"
                  r"|pendant|choker|anklets?|brooch|piercings?|chains?|bangles?)\b"),
    ("lighting", r"\b(?:lighting|golden\s+hour|exposure|shadows?|sunlight|flash|white\s+balance|brighter\s+(?:photo"
                 r"|image|picture|pic)|too\s+dark\s+(?:photo|image|picture)|backlit|contrast)\b"),
    ("other", r"\b(?:crop\s+(?:the|this|that|her|it)\b(?!\s+top)|rotate|flip\s+the\s+(?:photo|image|pic)|watermark"
              r"|resize|change\s+the\s+model|another\s+model|different\s+model)\b"),
    ("pose", r"\b(?:turn\s+to\s+the\s+side|pose|posing|her\s+arms?|his\s+arms?|standing|sitting|facing|turn\s+her\s+(?:around|head)|smile"
             r"|smiling|expression)\b"),
    ("body", r"\b(?:(?:her|his|the\s+models?)\s+(?:body|face|skin|legs|figure|weight|height|eyes)|body\s+shape"
             r"|plus\s+size|skin\s+tone|tattoos?|thinner\s+model|taller|curvier|skinnier\s+model)\b"),
]
_TOPIC_RES = [(t, re.compile(p)) for t, p in _TOPIC_PATTERNS]
_FEATURE_TOPICS = frozenset({"upscale", "compare", "lookbook", "other_photos", "other"})
_REMOVAL_RE = re.compile(r"\b(?:remove|take\s+off|take\s+away|get\s+rid\s+of|delete|erase|without|lose|ditch|drop"
                         r"|minus|no\s+more)\b")
#: "the red one", "the floral ones": a variation pointed at by its look, not a new style
_DESCRIBED_REF_RE = re.compile(r"\b(?:the|that|this|those|these)\s+((?:[a-z]+\s+){1,2})(?:one|ones)\b")
_COUNT_SETTING_RE = re.compile(rf"\b(?P<num>\d+|{_NUM_NO_ONE})\s+(?:per|each|every|at\s+a)\s+(?:round|time|go|batch"
                               rf"|turn|prompt|request)\b|\b(?:from\s+now\s+on|always|by\s+default)\s+(?:do|make"
                               rf"|give\s+me|generate|show\s+me)\s+(?P<num2>\d+|{_NUM_NO_ONE})\b")
# Complaints say what is wrong; restyle makes the opposite ("too long" -> shorter).  (regex, replacement)
_COMPLAINTS: list[tuple[str, str]] = [
    (r"\bsleeves?\s+(?:are\s+|is\s+|look\s+|feel\s+)?(?:way\s+|a\s+bit\s+|a\s+little\s+|slightly\s+|much\s+|kinda\s+)?"
     r"too\s+long\b", " short sleeves "),
    (r"\bsleeves?\s+(?:are\s+|is\s+|look\s+|feel\s+)?(?:way\s+|a\s+bit\s+|a\s+little\s+|slightly\s+|much\s+|kinda\s+)?"
     r"too\s+short\b", " long sleeves "),
    (r"\btoo\s+long\b", " shorter "), (r"\btoo\s+short\b", " longer "), (r"\btoo\s+(?:tight|fitted|snug|clingy)\b",
                                                                       " looser "),
    (r"\btoo\s+(?:loose|baggy|boxy|oversized|big|wide|shapeless)\b", " fitted "),
    (r"\btoo\s+(?:busy|loud|much|flashy|bold|bright\s+and\s+busy)\b", " understated "),
    (r"\btoo\s+(?:plain|boring|basic|simple|bland|safe)\b", " bold "),
    (r"\btoo\s+dark\b", " lighter "), (r"\btoo\s+(?:bright|neon|garish)\b", " muted "),
    (r"\btoo\s+(?:light|pale|washed\s+out)\b", " darker "), (r"\btoo\s+(?:formal|stiff|dressy)\b", " casual "),
    (r"\btoo\s+(?:casual|sloppy)\b", " elegant "), (r"\btoo\s+(?:shiny|glossy)\b", " matte "),
    (r"\btoo\s+(?:sheer|see\s+through|revealing)\b", " structured "),
    (r"\btoo\s+cropped\b", " longer "),
    (r"\b(?:a\s+bit|a\s+little|kinda|kind\s+of|quite|so|really|very|bit|rather|pretty|way)\s+(?:loud|busy|garish)\b",
     " understated "),
    (r"\b(?:a\s+bit|a\s+little|kinda|kind\s+of|quite|so|really|very|bit|rather|pretty|way|looks)\s+"
     r"(?:boring|dull|flat|bland|basic|plain)\b", " bold "),
    (r"\b(?:looks?|feels?)\s+(?:a\s+bit\s+|really\s+|so\s+|very\s+|kinda\s+)?heavy\b", " lighter "),
]
_COMPLAINT_RES = [(re.compile(p), r) for p, r in _COMPLAINTS]
_COLOURWAY_CATS = frozenset({"colour", "pattern", "material"})
_HEDGE_RE = re.compile(r"\b(?:i\s+feel\s+like|i\s+think|i\s+wonder|wondering|maybe|perhaps|not\s+sure|might|probably"
                       r"|could\s+be|would\s+be|kinda\s+want)\b")
#: parts of a garment that restyle cannot mask on their own ("gold buttons" would repaint the whole dress gold)
_PART_RE = re.compile(r"\b(?:buttons?|zips?|zippers?|collars?|cuffs?|hems?|hemline|pockets?|hardware|straps?|shoelaces?"
                      r"|trim|piping|lining|seams?|stitching|buckles?|waistband|lapels?|embroidery\s+on)\b")
#: what is wrong with a picture ("#3 has a weird artifact", "the hem on #5 is wonky"): never praise
_FAULT_RE = re.compile(r"\b(?:wonky|weird|off|wrong|bad|ugly|blurry|broken|strange|odd|meh|awful|terrible|messy"
                       r"|glitch\w*|artifacts?|distorted|warped|melted|smudged?|janky|cursed|creepy|not\s+(?:right|great"
                       r"|good|it)|isnt|doesnt|dont|hate)\b")
_STRONG_REQUEST_RE = re.compile(r"\b(?:make|try|change|turn|give|show|swap|switch|replace|render|generate|do|see)\s+"
                                r"(?:the|it|her|his|them|this|that|a|an|#|me|us|some)\b|\bpl(?:ease|s|z)\b"
                                r"|\b(?:can|could|would|will)\s+(?:you|u|we)\b|^(?:make|try|change|turn|give|show)\b")
#: "show favourites", "my favs", "starred": a request for the list
_LIST_FAVORITES_RE = re.compile(r"\b(?:fav(?:ou?rite)?s|faves|starred|saved|list|show|see)\b")


#: A variation in a comparison: "#2", "2", "v2", or a range "#1-#4" / "1 to 4"
_COMPARE_REF_RE = re.compile(r"(?:#\s*|\bv|\b)(?P<a>\d{1,2})(?:\s*(?:-|to|through|thru)\s*(?:#\s*|v)?(?P<b>\d{1,2}))?\b")
_DASH_RANGE_RE = re.compile(r"(?<![\d-])(#?\s*\d{1,2})\s*[-\u2013\u2014]\s*(#?\s*\d{1,2})(?![\d-])")
#: Numbers that are counts or sizes, not variations: "give me 3 or 4 more", "2 or 3 variations", "4k"
_COMPARE_NOT_RE = re.compile(r"(?<![#\w])\d+\s+(?:or\s+\d+\s+)?(?:more|times|variations?|variants?|versions?|options?"
                             r"|takes|ideas|designs|alternatives|images|pics|pictures|photos|renders|samples)\b"
                             r"|\b\d+\s*(?:%|x|px|k|dpi)\b"
                             r"|\b(?:seed|steps?|guidance|strength|count)\s*=?\s*\d")
#: What restyle exports: a lookbook PDF (and a ZIP of the favourites' PNGs)
_LOOKBOOK_RE = re.compile(r"\b(?:look\s*books?|pdf|zip|export\w*)\b")
_LOOKBOOK_BARE_RE = re.compile(r"^(?:a\s+|the\s+|my\s+|our\s+)?(?:look\s*book|pdf|zip)(?:\s+(?:pls|please|plz|now))?"
                               r"[\s.!]*$")
#: Places restyle cannot send to, or formats it does not make: those stay ``unknown`` with topic ``lookbook``
_ELSEWHERE_RE = re.compile(r"\b(?:email\w*|e\s*mail|send|share|drive|dropbox|link|keynote|powerpoint|slides?|deck"
                           r"|print)\b")


def _compare_numbers(text: str, raw: str = "") -> tuple[int, ...]:
    """The variations a comparison names, in order and once each ("rank #1-#4" → 1, 2, 3, 4); () when its numbers
    are counts ("give me 3 or 4 more").  ``text``: the normalised message; ``raw``: as typed, for ranges with a dash
    (normalising reads a hyphen as a space)."""
    if _COMPARE_NOT_RE.search(text):
        return ()
    if raw and _DASH_RANGE_RE.search(raw):
        text = _correct_typos(_normalize(_DASH_RANGE_RE.sub(r"\1 to \2", raw)))
    out: list[int] = []
    for m in _COMPARE_REF_RE.finditer(text):
        a = int(m.group("a"))
        b = int(m.group("b")) if m.group("b") else a
        span = range(a, b + 1) if a <= b and b - a < MAX_VARIATION else (a, b)
        out += [n for n in span if _valid_variation(n) is not None and n not in out]
    return tuple(out)


def _topic(text: str) -> str | None:
    for topic, regex in _TOPIC_RES:
        if regex.search(text):
            return topic
    return None


def _howto_topic(text: str) -> str | None:
    for topic, regex in _HOWTO_TOPICS_RE:
        if regex.search(text):
            return topic
    return None


def _decide(text: str, *, content: bool, variation: int | None, count: int | None, count_kind: str | None,
            settings: dict, batch_garment: bool, bare_ref: bool = False) -> Action:
    if not text:
        return Action.UNKNOWN
    if _RESET_RE.search(text) and variation is None:
        return Action.RESET
    if _UNDO_STRONG_RE.search(text) and variation is None:
        return Action.UNDO
    if _HELP_RE.search(text) and not content and variation is None and not settings:
        return Action.HELP
    if (settings or _SETTINGS_WORD_RE.search(text)) and not content and variation is None and count is None:
        return Action.SETTINGS
    if variation is not None and _INFO_RE.search(text) and not settings and not content:  # "seed of #2?"
        return Action.INFO
    if (_BATCH_RE.search(text) or count_kind == "noun" or batch_garment
            or (count_kind == "verb" and content and not _VARY_RE.search(text))):
        return Action.BATCH
    if _VARY_RE.search(text) or count is not None or count_kind is not None:
        return Action.VARY
    if _FAV_RE.search(text) and not content:
        return Action.FAVORITE
    if _UNDO_WEAK_RE.search(text) and not content and variation is None:
        return Action.UNDO
    if _USE_RE.search(text) and not content:
        return Action.USE
    if variation is not None:
        if content:
            return Action.VARY
        if _PRAISE_RE.search(text):  # "#2 is perfect", "the 2nd one slaps"
            return Action.FAVORITE
        if bare_ref:  # "#2", "2", "the second one", "option three", "#2 please"
            return Action.USE
        return Action.UNKNOWN  # "#3" with words restyle does not know never switches the base picture
    if content:
        return Action.RESTYLE
    return Action.UNKNOWN


#: Words that may stand beside a bare variation reference ("#2 please", "ok the second one then")
_BARE_FILLERS = frozenset("please pls plz then ok okay so it is its one ones the this that yes yeah hmm hm".split())


_THANKS_RE = re.compile(r"^\W*(?:thanks?|thank\s+you|thx|ty|cheers|merci|ta)\b(?:\s+(?:so\s+much|a\s+lot|again|thanks"
                        r"|very\s+much|restyle|bot|mate|all))*\W*$")


def is_thanks(text: str) -> bool:
    """A plain "thanks" / "thank you so much!" (answered politely rather than with "I didn't catch that")."""
    return bool(_THANKS_RE.match(_normalize(text)))


def _article(phrase: str, noun: str) -> str:
    if noun in _PLURAL_NOUNS:
        return phrase
    first = phrase.split()[0]
    vowel = first[0] in "aeiou" and not first.startswith(("uni", "use", "eu", "one"))
    vowel = vowel or first.startswith(("80s", "8", "11", "18")) or first in ("off-white", "off-the-shoulder")
    return f"{'an' if vowel else 'a'} {phrase}"


def _describe(noun: str | None, attributes: list[str]) -> str:
    """"a red floral maxi skirt": attributes in prompt order, then the noun."""
    def rank(attr: str) -> int:
        cat = "compound" if attr in _NOUN_COMPOUNDS else _category(attr)
        return _PROMPT_ORDER.index(cat)

    words: list[str] = []
    for attr in sorted(attributes, key=rank):  # stable: order of appearance within a category
        if words and _category(attr) == "colour" and _category(words[-1].split(" and ")[-1]) == "colour":
            words[-1] = f"{words[-1]} and {attr}"  # "a red and white striped t-shirt"
        else:
            words.append(attr)
    noun = noun or FALLBACK_NOUN
    return _article(" ".join([*words, noun]), noun)


def plain_prompt(prompt: str) -> str:
    """The prompt as people read it: "a red floral maxi skirt" (without PROMPT_SUFFIX)."""
    return prompt.removesuffix(f", {PROMPT_SUFFIX}")


def build_prompt(items: list[tuple[str | None, list[str]]]) -> str:
    """SD prompt for (noun, attributes) pairs: "a white top and a black skirt, <PROMPT_SUFFIX>"."""
    items = [(n, a) for n, a in items if n or a]
    if not items:
        return ""
    parts = [_describe(n, a) for n, a in items]
    body = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"{body}, {PROMPT_SUFFIX}"


def _merge(previous: tuple[str, ...] | list[str], new: list[str]) -> list[str]:
    """Follow-up attributes: keep the earlier ones, add the new; a new length/colour/pattern/... replaces the old."""
    new_cats = {_category(a) for a in new} & _EXCLUSIVE
    opposed = {o for a in new for group, other in _OPPOSED_FITS for o in other if a in group}
    kept = [a for a in previous if _category(a) not in new_cats and a not in opposed]
    return _unique([*kept, *new])


def _category(attr: str) -> str:
    if attr in _KINDS:  # a garment kind ("trench"), even where the word is also a garment ("dress pants")
        return "kind"
    if attr in _CATEGORY:
        return _CATEGORY[attr]
    last = attr.split()[-1]  # compound colours: "light blue"
    return _CATEGORY.get(last, "colour")


# ---------------------------------------------------------------------------------------------------------------
# parse()
# ---------------------------------------------------------------------------------------------------------------
def _terse(toks: list[_Tok]) -> bool:
    """A message of fashion words ("red floral maxi skirt", "#2 in denim", "longer?", "ribbed black tank"): a request
    by its shape.  At most two other words, and none that makes it a sentence about something ("is", "we" …)."""
    words = [t.value for t in toks if t.kind == "word"]
    other = [w for w in words if w not in _TERSE_OK and w not in _ARTICLES and w not in _GLUE]
    fashion = any(t.kind in ("garment", "attr") for t in toks)
    return len(toks) <= 12 and (not other or (fashion and len(other) <= 2 and not set(other) & _SENTENCE_WORDS))


def _colourway_groups(toks: list[_Tok]) -> list[list[int]]:
    """Colourways asked for in one message, as groups of attribute-token indices.

    * "one floral, one striped, one plain" / "a red one and a black one": each "one" names a colourway;
    * a list of colours (or patterns, or materials) — "navy, burgundy and olive", "red or blue", "in navy and
      burgundy" — unless a pattern or material follows the list ("navy and white stripes" is one look)."""
    n = len(toks)
    groups: list[list[int]] = []
    for i, t in enumerate(toks):  # "one X" (X: attributes up to the next "one"/punctuation)
        if t.kind == "num" and t.value == "one":
            j, group = i + 1, []
            while j < n and (toks[j].kind == "attr" or (toks[j].kind == "word" and toks[j].value in ("in", "with"))):
                if toks[j].kind == "attr" and not toks[j].negated:
                    group.append(j)
                j += 1
            if group:
                groups.append(group)
    if len(groups) < 2:  # "a red one and a black one": attributes right before "one"
        groups = []
        for i, t in enumerate(toks):
            if t.kind == "num" and t.value == "one" and i > 0 and toks[i - 1].kind == "attr":
                j, group = i - 1, []
                while j >= 0 and toks[j].kind == "attr" and not toks[j].negated:
                    group.insert(0, j)
                    j -= 1
                groups.append(group)
    if len(groups) >= 2:
        return groups
    # a list of same-category attributes joined by commas / and / or
    i = 0
    while i < n:
        if toks[i].kind != "attr" or toks[i].negated or _category(toks[i].value) not in _COLOURWAY_CATS:
            i += 1
            continue
        cat = _category(toks[i].value)
        members, joiners, j = [i], [], i + 1
        while j + 1 < n:
            k = j
            while k < n and toks[k].value in (",", "and", "or", "&", "/", "+", "a", "an", "then", "plus", "also",
                                              "in", "version", "one", "another", "maybe"):
                k += 1
            if k == j or k >= n or toks[k].kind != "attr" or _category(toks[k].value) != cat or toks[k].negated:
                break
            joiners.extend(toks[m].value for m in range(j, k))
            members.append(k)
            j = k + 1
        if len(members) >= 2:
            follows = toks[j] if j < n else None
            one_look = follows is not None and (follows.kind == "attr" and _category(follows.value) in
                                                ("pattern", "material"))
            before = {t.value for t in toks[max(0, i - 3): i] if t.kind == "word"}
            cue = len(members) >= 3 or "or" in joiners or bool(before & {"in", "both", "colours", "colors",
                                                                          "colourways", "colorways", "either"})
            if cue and not one_look and cat == "colour" or (cue and cat != "colour"):
                return [[m] for m in members]
        i = j if len(members) >= 2 else i + 1
    return []


@dataclass(frozen=True)
class Reading:
    """What one message says by itself, before any thread context: :func:`read` makes it once per message and
    :meth:`resolve` puts it on the look of the turn it refines (the thread's, or #N's)."""

    action: Action
    variation: int | None = None
    variations: tuple[int, ...] = ()  # compare: every variation named, in order
    count: int | None = None
    settings: dict = field(default_factory=dict)
    topic: str | None = None
    ambiguous: bool = False
    named: tuple[tuple[str, str, tuple[str, ...]], ...] = ()  # garments the message names: (source, target, attrs)
    attributes: tuple[str, ...] = ()  # every attribute the message gives, in order
    loose: tuple[str, ...] = ()  # attributes that belong to no named garment ("make it longer")
    negatives: tuple[str, ...] = ()
    colourways: tuple[str, ...] = ()
    #: a statement with a change in it but no request ("the skirt is too short", "navy was rejected by the buyer"):
    #: said to people as often as to restyle, so restyle asks only when it is addressed
    statement: bool = False
    scene: str = ""  # background: the scene asked for
    swatch: str = ""  # one of SWATCH_USES

    @property
    def generates(self) -> bool:
        return self.action in GENERATING_ACTIONS

    def resolve(self, context: Context | None = None) -> Intent:
        """The intent in ``context``: a follow-up that names no garment refines the context's whole look (every
        garment of it); a named garment starts fresh; a new colour/length/… replaces the old one."""
        if self.action == Action.BACKGROUND:
            return Intent(action=self.action, variation=self.variation, garments=["background"],
                          garment="background", target="background", count=self.count, scene=self.scene,
                          prompt=f"{self.scene}, {BACKGROUND_SUFFIX}", ambiguous=self.ambiguous)
        if not self.generates:
            removed = list(self.negatives) if self.topic == "removal" else []  # "remove the belt": what and why not
            return Intent(action=self.action, variation=self.variation, variations=list(self.variations),
                          settings=dict(self.settings), topic=self.topic, negatives=removed,
                          negative_prompt=", ".join(removed))
        ctx = context or Context()
        negatives = list(self.negatives)
        ambiguous = self.ambiguous
        if self.named:
            looks = [(src, dst, [a for a in attrs if a not in negatives]) for src, dst, attrs in self.named]
            previous = {}  # the context's attributes per garment, by the garment's word and by its new noun
            for g, t, attrs in ctx.looks:
                previous.setdefault(g, attrs)
                previous.setdefault(t, attrs)
            refined = []
            for src, dst, attrs in looks:
                before = previous.get(src) if dst == src else None  # "turn the skirt into a dress": a new item
                if before is not None and self.action == Action.VARY:
                    # "#2 but a longer skirt": #2's skirt, longer (a new colour replaces the old one).  Naming a
                    # garment without #N describes it afresh ("make the skirt blue"); "make it longer" refines
                    attrs = [a for a in _merge(before, attrs) if a not in negatives]
                elif before is not None and self.action == Action.BATCH and not attrs:
                    attrs = [a for a in before if a not in negatives]
                refined.append((src, dst, attrs))
            looks = refined
        elif ctx.looks:  # "make it longer", "in blue", "#3 but in silk": the context's look, every garment of it
            looks = [(g, t, [a for a in _merge(attrs, list(self.loose)) if a not in negatives])
                     for g, t, attrs in ctx.looks]
            if len(looks) > 1 and {_category(a) for a in self.loose} & {"colour", "pattern", "tone"}:
                ambiguous = True  # "make it red" after a white top and a black skirt: which?  Ask first
        else:
            looks = []
        garments = [g for g, _, _ in looks]
        garment = garments[0] if garments else None
        target = looks[0][1] if looks else None
        if looks:
            attributes = _unique(a for _, _, attrs in looks for a in attrs) if len(looks) > 1 else looks[0][2]
            per_garment = {g: list(attrs) for g, _, attrs in looks}
            prompt = build_prompt([(t, attrs) for _, t, attrs in looks])
        else:
            attributes = [a for a in self.loose if a not in negatives]
            per_garment = {}
            prompt = build_prompt([(None, attributes)])
        if self.colourways:  # each colourway brings its own colour/pattern: the shared look keeps the rest
            cats = {_category(a) for way in self.colourways for a in way.split(" & ")}
            per_garment = {g: [a for a in attrs if _category(a) not in cats] for g, attrs in per_garment.items()}
            attributes = [a for a in attributes if _category(a) not in cats]
        intent = Intent(action=self.action, garment=garment, garments=garments, target=target,
                        attributes=list(attributes), negatives=negatives,
                        variation=self.variation if self.action in (Action.VARY, Action.BATCH) else None,
                        count=self.count, prompt=prompt, negative_prompt=", ".join(negatives),
                        settings=dict(self.settings), per_garment=per_garment, colourways=list(self.colourways),
                        topic=self.topic, ambiguous=ambiguous, swatch=self.swatch)
        if self.colourways:
            intent = replace(intent, prompt=intent.colourway_prompts()[0][1])
        return intent

# -- upscale, background, swatch -------------------------------------------------------------------------------
#: "upscale all the favourites", "every one of them": several pictures at once (restyle upscales one per message)
_UPSCALE_MANY_RE = re.compile(r"\b(?:all|every|each|both|everything|favou?rites|favs|faves|shortlist|them)\b")
#: what asks for the picture at the photo's resolution, said on its own ("upscale pls", "need this at 300dpi")
_UPSCALE_ASK_RE = re.compile(r"\b(?:upscale\w*|up\s*res|upres|enhance|sharpen\w*|full\s+res\w*|hi\s*res|high\s*res\w*"
                             r"|higher\s+res\w*|bigger\s+res\w*|\d+\s*dpi|dpi|4k|8k|print\s+quality|super\s*res\w*"
                             r"|need|want|pls|please|plz)\b")
#: "blur the background": restyle repaints a background, it does not blur the one there
_BLUR_RE = re.compile(r"\b(?:blur\w*|bokeh|out\s+of\s+focus|defocus\w*)\b")
#: "remove the background", "cut her out": a clean backdrop (asked about first: which colour is a guess)
_BG_REMOVE_RE = re.compile(r"\b(?:remove|delete|erase|drop|lose|ditch|get\s+rid\s+of|cut\s+(?:her|him|them|it)\s+out)"
                           r"\s+(?:the\s+|her\s+|this\s+)?(?:background|backdrop|bg)\b|\bno\s+(?:background|backdrop|bg)\b"
                           r"|\bcut\s*out\b|\btransparent\b")
#: the words around a scene that are not the scene: requests, pronouns, the word "background" and its verbs
_SCENE_STRIP_RES = [re.compile(r) for r in (
    r"^(?:(?:hey|hi|ok|okay|so|and|also|now|then|maybe|hmm+|actually)\s+)+",
    r"\b(?:can|could|would|will)\s+(?:you|u|we|i)\s+(?:please\s+|pls\s+|plz\s+)?(?:get|have|do|see|try)?\s*",
    r"\b(?:i|we)\s+(?:want|need|d\s+like|would\s+like)\s+",
    r"\b(?:put|place|set|move|show|shoot|photograph|have)\s+(?:her|him|them|the\s+models?|it|this|she|he)\s+"
    r"(?:in\s+front\s+of|on|in|at|against|by|near|onto|into)\s+",
    r"\b(?:make|change|turn|swap|switch|replace|give|get|do|use|try|set|have)\s+(?:the\s+|her\s+|his\s+|a\s+|an\s+|this\s+)?"
    r"(?:background|backdrop|bg|scene|setting|scenery|location)(?:\s+(?:to|into|for|with|as|in|be|is))?\s*",
    r"\b(?:the\s+|a\s+|an\s+)?(?:background|backdrop|bg|scene|setting|scenery|location)\s+(?:to\s+be|be|is|in|as|"
    r"should\s+be|could\s+be|of)\s+",
    r"\b(?:put|add|place)\s+(?:a\s+|an\s+|the\s+|some\s+)?",
    r"\s+behind\s+(?:her|him|them|the\s+models?)\b",
    r"\b(?:instead|please|pls|plz|thanks|thx|for\s+this\s+one|for\s+this|now|like)\b",
    r"^(?:could|can|would|should|maybe|might)\s+",
    r"^(?:to|into|for|with|as|in|be|on|at)\s+",
    r"^(?:a|an|the|some|something|somewhere)\s+(?:(?:more|a\s+bit\s+more|bit\s+more)\s+)?",
)]


def _scene(flat: str) -> str:
    """The scene a background message asks for ("put her on a plain white background" -> "plain white background"),
    or "" when it names none ("change the background")."""
    text = re.sub(r"[?!.,;:]", " ", flat)
    for _ in range(3):  # the strips uncover each other ("can you put her on a …")
        for regex in _SCENE_STRIP_RES:
            text = re.sub(r"\s+", " ", regex.sub(" ", text)).strip()
    text = re.sub(r"\bbg\b", "background", text)
    words = text.split()
    if not words or all(w in ("background", "backdrop", "scene", "setting", "location", "scenery", "it", "one")
                        for w in words):
        return ""
    if not re.search(r"\b(?:background|backdrop|scene|setting|street|wall|studio|cafe|beach|field|skyline|room"
                     r"|rooftop|garden|park|runway|sunset|city|forest|desert|sky|interior|exterior)\b", text):
        text += " background"  # "make the bg black": "black background"
    return text


def _background(flat: str, *, request: bool, question: bool, chatty: bool, variation: int | None,
                count: int | None) -> Reading | None:
    """A background message read as the action, or None to leave it to the topic replies."""
    if chatty and not request:
        return None
    if _BLUR_RE.search(flat):
        return None  # restyle repaints backgrounds; it does not blur the one in the photo
    if _BG_REMOVE_RE.search(flat):
        # "remove the background": a clean one is the nearest thing restyle makes — which colour is a guess, so ask
        return Reading(Action.BACKGROUND, variation=variation, count=count, topic="background", ambiguous=True,
                       scene="plain white seamless studio background")
    scene = _scene(flat)
    if not scene:
        return None
    terse = len(flat.split()) <= 6
    if not (request or terse or question):
        return None
    # "background in pink?": a question may be an idea being floated: ask before painting
    return Reading(Action.BACKGROUND, variation=variation, count=count, topic="background", scene=scene,
                   ambiguous=question and not _STRONG_REQUEST_RE.search(flat))


def _upscale(flat: str, *, request: bool, question: bool, chatty: bool, variation: int | None) -> Reading | None:
    """An upscale message read as the action (of #N, or of the thread's current picture), or None to leave it to
    the topic replies (a question about it, several pictures at once, a complaint with no ask)."""
    if chatty and not request:
        return None
    if variation is None and _UPSCALE_MANY_RE.search(flat):
        return None  # "upscale all the favourites": one at a time, the reply says how
    if question and not request:
        return None  # "is there a hi-res version of #1?": answered with how to ask, nothing made unasked
    if not (request or variation is not None or _UPSCALE_ASK_RE.search(flat)):
        return None
    if variation is None and (m := re.search(r"\b(?:on|of|for)\s+#?(\d{1,2})\b(?!\s*(?:dpi|k|x|px|mp)\b)", flat)):
        variation = int(m.group(1))  # "enhance the details on 3": #3
    return Reading(Action.UPSCALE, variation=variation, topic="upscale")


#: "use this print on the dress", "the skirt in this fabric", "apply the swatch": the thread's uploaded swatch
_SWATCH_RE = re.compile(r"\bswatch(?:es)?\b|\b(?:this|that|these|those|the\s+uploaded|the\s+new|my|our|uploaded)\s+"
                        r"(?:print|fabric|pattern|material|textile|sample|reference|image|pic|photo\s+of\s+the\s+fabric)\b")
_SWATCH_LESS_RE = re.compile(r"\b(?:less|not\s+so\s+much|not\s+as\s+much|softer|subtler|looser|further|weaker)\s+"
                             r"(?:like|of|from|on)?\s*(?:the\s+|this\s+|that\s+)?(?:swatch|print|fabric|reference)\b")
_SWATCH_MORE_RE = re.compile(r"\b(?:more|closer|stronger|exactly)\s+(?:like|to|of)?\s*(?:the\s+|this\s+|that\s+)?"
                             r"(?:swatch|print|fabric|reference)\b")


def _swatch(flat: str) -> str:
    """How ``flat`` uses the thread's swatch: one of SWATCH_USES."""
    if _SWATCH_LESS_RE.search(flat):
        return "less"
    if _SWATCH_MORE_RE.search(flat):
        return "more"
    return "use" if _SWATCH_RE.search(flat) else ""



def read(text: str) -> Reading:
    """Read one message (its first ``MAX_TEXT`` characters) without any context."""
    raw = (text or "")[:MAX_TEXT]
    link = re.search(r"<https?:|https?://|\bwww\.\w", raw) is not None
    person = re.search(r"<@[UW][A-Z0-9]+(?:\|[^>]*)?>|(?<![\w<])@[A-Za-z][\w.-]*", raw) is not None
    normalized = _correct_typos(_normalize(raw))
    flat = re.sub(r"\s+", " ", normalized).strip()
    if not flat:  # "👀", "🤔🤔": people reacting, nothing to do
        return Reading(Action.UNKNOWN, topic="link" if link else "chatter" if raw.strip() else None)
    if _CONFIRM_RE.match(flat):
        return Reading(Action.CONFIRM)
    if _CANCEL_RE.match(flat):
        return Reading(Action.CANCEL)
    if _HOWTO_RE.search(flat):  # "how do I go back to the original?": an answer, never the action itself
        return Reading(Action.HELP, topic=_howto_topic(flat))
    flat = re.sub(r"\btake\s+(the|her|his|their)\s+(\w+)\s+off\b", r"take off the \2", flat)
    complaint = False
    for regex, opposite in _COMPLAINT_RES:
        def flip(m: re.Match, opposite: str = opposite, before: str = flat) -> str:
            nonlocal complaint
            if re.search(r"\b(?:not|no|isnt|arent|never|dont\s+make\s+it|without\s+being)\s*$", before[:m.start()]):
                return m.group(0)  # "not too short": a limit, not a complaint
            complaint = True
            return opposite
        flat = re.sub(r"\s+", " ", regex.sub(flip, flat)).strip()
    topic = _topic(flat)
    if topic == "other_photos":  # "can you do this for the other 20 photos?": never a count of pictures
        return Reading(Action.UNKNOWN, topic=topic)
    settings: dict[str, str | int | float] = {}
    m = _COUNT_SETTING_RE.search(flat)  # "do 6 per round from now on": a setting, not 6 pictures now
    scan_text = flat
    if m:
        settings["count"] = _to_int(m.group("num") or m.group("num2"))
        scan_text = _blank(scan_text, m.start(), m.end())
    described = _DESCRIBED_REF_RE.search(scan_text)  # "the red one": a variation, not a new colour
    if described and not re.search(r"\b(?:one|ones)\b.*\b(?:one|ones)\b", scan_text) \
            and not _REQUEST_RE.search(flat) and any((w,) in _LEX for w in described.group(1).split()):
        scan_text = _blank(scan_text, described.start(), described.end())
    lead = re.match(r"\s*(\d{1,2})\s+(?=(?:but|in|with|without|as|and|w)\b)", scan_text)
    counted_ways = re.search(r"\b(?:and|,)\s*\d{1,2}\s+(?:in|with)\b", scan_text) is not None
    if lead and counted_ways:
        lead = None  # "3 in velvet and 3 in satin": counts of colourways, not #3
    if lead:  # "4 w/ stripes", "2 but cropped": a variation named by its bare number
        scan_text = f"#{lead.group(1)}" + scan_text[lead.end(1):]
    found, rest = _extract_settings(scan_text)
    settings = {**found, **settings}
    variation, count, count_kind, rest = _extract_numbers(rest)
    toks = _scan(re.findall(r"[a-z0-9_]+|[,.;:!?/&+]", rest))
    for i, t in enumerate(toks):  # "the knit", "her knitwear": a sweater, unless a garment follows ("a knit dress")
        if t.kind == "attr" and t.value == "knit" and not any(o.kind == "garment" for o in toks):
            j = i + 1
            while j < len(toks) and (toks[j].kind == "attr" or (toks[j].kind == "word" and toks[j].value in _GLUE)):
                j += 1
            if not (j < len(toks) and toks[j].kind == "garment"):
                toks[i] = _Tok("garment", "sweater")
    analysis = _analyse(toks)
    attr_toks = sorted([i for e in analysis.edits for i in e.attrs] + analysis.global_attrs)
    content = bool(analysis.edits or attr_toks or analysis.negatives)

    batch_garment = False  # "8 pastel dresses": a number leading straight into attributes and a garment
    if count is None and count_kind is None:
        for i, tok in enumerate(toks):
            if tok.kind == "num" and tok.value != "one":
                j = i + 1
                while j < len(toks) and (toks[j].kind == "attr" or (toks[j].kind == "word" and toks[j].value in _GLUE)):
                    j += 1
                if j < len(toks) and toks[j].kind == "garment":
                    count, batch_garment = min(max(_to_int(tok.value), 1), MAX_COUNT), True
                    break

    bare_ref = variation is not None and all(t.kind == "punct" or t.value in _BARE_FILLERS or t.value in _REF_NOUNS_SET
                                             for t in toks)
    action = _decide(flat, content=content, variation=variation, count=count, count_kind=count_kind,
                     settings=settings, batch_garment=batch_garment, bare_ref=bare_ref)
    negatives = tuple(analysis.negatives)
    names = [t.value for t in toks]
    groups = _colourway_groups(toks) if action in GENERATING_ACTIONS else []
    colourways = tuple(_unique(" & ".join(names[i] for i in g) for g in groups))
    if len(colourways) < 2:
        colourways = ()
    question = flat.endswith("?") or _QUESTION_START_RE.match(flat) is not None
    request = bool(_REQUEST_RE.search(flat)) or (_terse(toks) and not complaint) \
        or bool(colourways and not _QUESTION_START_RE.match(flat))
    if not request:
        colourways = ()  # "is #6 wool or cashmere?": a question, not two colourways
    praise = bool(_PRAISE_RE.search(flat) or _FAV_RE.search(flat))
    chatty = person or _LAUGH_RE.search(flat) is not None

    if is_thanks(flat) or (re.match(r"(?:thanks?|thank\s+you|cheers)\b", flat) and not _REQUEST_RE.search(flat)):
        return Reading(Action.UNKNOWN, topic="thanks")

    def unknown(why: str) -> Reading:
        return Reading(Action.UNKNOWN, topic=why, negatives=negatives if why == "removal" else ())

    if link and not (analysis.edits and attr_toks):
        return unknown("link")
    if person and not _STRONG_REQUEST_RE.search(flat):  # "@sam thoughts on the green?": people talking
        return unknown("chatter")
    garment_change = any(e.attrs for e in analysis.edits) or (bool(analysis.edits) and bool(analysis.negatives))
    if topic == "compare" and not (chatty and not request):  # "#2 vs #5", "which is better, 1 or 3?"
        numbers = _compare_numbers(flat, raw)
        if len(numbers) >= 2:
            return Reading(Action.COMPARE, variations=numbers)
    if (topic == "lookbook" and _LOOKBOOK_RE.search(flat) and not _ELSEWHERE_RE.search(flat) and variation is None
            and (request or _LOOKBOOK_BARE_RE.match(flat)) and not (chatty and not request)):
        return Reading(Action.LOOKBOOK)  # "make a lookbook of the favourites", "pdf of the shortlist pls"
    if topic == "upscale" and not garment_change:  # "upscale #3", "#3 in full res", "need this at 300dpi"
        if (up := _upscale(flat, request=request, question=question, chatty=chatty, variation=variation)):
            return up
    if topic == "background" and not garment_change:  # "put her on a plain white background", "a paris street"
        if (bg := _background(flat, request=request, question=question, chatty=chatty, variation=variation,
                              count=count)):
            return bg
    swatch = _swatch(flat)
    if swatch in ("less", "more") and not garment_change:
        # "a bit less like the swatch": the last swatch turn again, following the swatch less (or more) closely
        return Reading(Action.VARY, variation=variation, count=count, swatch=swatch)
    if swatch == "use" and action in (Action.USE, Action.UNKNOWN) and not garment_change and not analysis.edits \
            and re.search(r"\b(?:use|apply|try|match|copy|put)\b", flat) and not (chatty and not request):
        if variation is not None:  # "try the swatch on #2": #2 repainted after the swatch
            return Reading(Action.VARY, variation=variation, count=count, swatch=swatch)
        return Reading(Action.RESTYLE, count=count, swatch=swatch)  # "use the swatch": on the look
    if topic in _FEATURE_TOPICS:  # upscale, compare, lookbook: asked for, or just talked about
        return unknown(topic if request or question or variation is not None else "chatter")
    if topic is not None and not garment_change:  # hair, make-up, background …, and no garment to change
        return unknown("praise" if praise and not request else "chatter" if chatty and not request else topic)
    wh_question = _QUESTION_START_RE.match(flat) is not None and not request and not complaint
    if variation is not None and action in (Action.VARY, Action.UNKNOWN, Action.USE) and not request:
        if question or wh_question or (_INFO_RE.search(flat) and not _USE_RE.search(flat)):
            return Reading(Action.INFO, variation=variation)  # "is #3 silk or satin?", "what guidance did #12 use"
        if _FAULT_RE.search(flat) and not praise:  # "the hem on #5 is wonky": a fault, not a favourite
            return unknown("chatter")
        if not _USE_RE.search(flat) and not complaint and (praise or re.search(r"\b(?:looks?|is|feels?)\b", flat)):
            return Reading(Action.FAVORITE, variation=variation)  # "#1 looks so expensive", "#4 is giving"
    if action == Action.FAVORITE and variation is None and not _LIST_FAVORITES_RE.search(flat):
        return unknown("praise")  # "love love love it!": praise, not a request to list favourites
    if action not in GENERATING_ACTIONS:
        if action == Action.UNKNOWN:
            if praise:
                return unknown("praise")
            return unknown("chatter" if chatty or not question else "question")
        keep_var = action in (Action.FAVORITE, Action.USE, Action.INFO)
        return Reading(action, variation=variation if keep_var else None, settings=settings)
    if not attr_toks and negatives and all(n in GARMENTS for n in negatives) and _REMOVAL_RE.search(flat):
        return unknown("removal")  # "remove the belt": restyle repaints garments, it does not take them away
    ambiguous = topic is not None  # "a red dress and blonde hair": the dress, after asking
    if wh_question and not complaint:  # "did anyone hear back from the mill about the tweed?"
        return unknown("chatter" if chatty or not question else "question")
    statement = False
    if not request:
        concrete = bool(attr_toks or negatives) or action in (Action.VARY, Action.BATCH)
        if chatty or not concrete:  # "lol the skirt looks like a lampshade", "love the skirt"
            return unknown("praise" if praise else "chatter" if chatty or not question else "question")
        if praise and not complaint and not question:  # "i love the red"
            return unknown("praise")
        ambiguous = True  # "the skirt is too short", "hmm maybe velvet?": ask before painting
        statement = not question
    elif _HEDGE_RE.search(flat) and not _STRONG_REQUEST_RE.search(flat):
        ambiguous = True  # "I feel like the skirt could be a touch shorter": a thought, not yet a request
    per_edit: dict[str, tuple[str, list[str]]] = {}
    for e in analysis.edits:
        src, dst = names[e.source], names[e.target]
        attrs = _unique(names[i] for i in sorted(e.attrs + analysis.global_attrs) if names[i] not in negatives)
        old = per_edit.get(src)
        per_edit[src] = (old[0] if old else dst, _unique([*(old[1] if old else []), *attrs]))
    loose = tuple(_unique(names[i] for i in analysis.global_attrs if names[i] not in negatives))
    if counted_ways and not colourways:
        ambiguous = True  # "3 in velvet and 3 in satin" not read as colourways: ask, don't guess
    if action == Action.RESTYLE and variation is None and count is None \
            and any(t.kind == "num" and t.value.isdigit() for t in toks):
        ambiguous = True  # "2 navy", "navy 2": #2 in navy, or two navy ones?  Ask
    if any(not re.search(r"\bwith\s+(?:[a-z]+\s+){0,3}$", flat[:m.start()]) for m in _PART_RE.finditer(flat)):
        # "change the buttons to gold": a part restyle cannot mask on its own (not "a parka with fur trim"); ask
        ambiguous = True
    if action == Action.RESTYLE and per_edit and not loose and not negatives and not colourways and not swatch \
            and all(not attrs and dst == src for src, (dst, attrs) in per_edit.items()):
        ambiguous = True  # "any chance of a version with a belt?": a garment, and nothing said about how it changes
    return Reading(action, variation=variation if action in (Action.VARY, Action.BATCH) else None,
                   count=count, settings=settings, topic=topic, ambiguous=ambiguous,
                   named=tuple((src, dst, tuple(attrs)) for src, (dst, attrs) in per_edit.items()),
                   attributes=tuple(_unique(names[i] for i in attr_toks if names[i] not in negatives)),
                   loose=loose, negatives=negatives, colourways=colourways, statement=statement,
                   swatch=swatch if action in GENERATING_ACTIONS else "")


def parse(text: str, context: Context | None = None) -> Intent:
    """Parse one message; ``context`` supplies the look of the turn it follows up.  Same as
    ``read(text).resolve(context)``."""
    return read(text).resolve(context)


# ---------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot.intent", description="Parse one chat message into JSON.")
    parser.add_argument("text", nargs="*", help="the message (several words are joined with spaces)")
    parser.add_argument("--garment", default=None, help="garment of the thread's last turn")
    parser.add_argument("--target", default=None, help="target noun of the thread's last turn")
    parser.add_argument("--attributes", default="", help="comma-separated attributes of the last turn")
    args = parser.parse_args(argv)
    attrs = tuple(a.strip() for a in args.attributes.split(",") if a.strip())
    intent = parse(" ".join(args.text), Context(garment=args.garment, target=args.target, attributes=attrs))
    sys.stdout.write(json.dumps(intent.to_dict()) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
