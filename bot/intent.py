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
from dataclasses import dataclass, field

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
ACTIONS = ("restyle", "vary", "batch", "favorite", "use", "info", "undo", "reset", "settings", "help", "unknown")
GENERATING_ACTIONS = frozenset({"restyle", "vary", "batch"})
#: ``parse`` reads this many characters of a message (parsing time grows faster than linearly with length)
MAX_TEXT = 2000


# ---------------------------------------------------------------------------------------------------------------
# Public data types
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Context:
    """What the thread already knows, for follow-ups ("try it in blue", "#2 but longer")."""

    garment: str | None = None
    target: str | None = None
    attributes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.attributes, tuple):
            object.__setattr__(self, "attributes", tuple(self.attributes or ()))

    @classmethod
    def from_intent(cls, intent: Intent, previous: Context | None = None) -> Context:
        """The context for the next turn: the intent's garment/target/attributes, else the previous ones."""
        if intent.action not in GENERATING_ACTIONS:
            return previous or cls()
        return cls(garment=intent.garment, target=intent.target, attributes=tuple(intent.attributes))


@dataclass(frozen=True)
class Intent:
    """One parsed message; field meanings in docs/intent.md.  Non-generating actions (favorite, use, undo,
    settings, help, unknown) carry only ``variation`` (favorite/use) and ``settings``; the rest stays empty."""

    action: str
    garment: str | None = None
    garments: list[str] = field(default_factory=list)
    target: str | None = None
    attributes: list[str] = field(default_factory=list)
    negatives: list[str] = field(default_factory=list)
    variation: int | None = None
    count: int | None = None
    prompt: str = ""
    negative_prompt: str = ""
    settings: dict[str, str | int | float] = field(default_factory=dict)
    per_garment: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready copy of every field (lists and dicts are copied)."""
        return {
            "action": self.action,
            "garment": self.garment,
            "garments": list(self.garments),
            "target": self.target,
            "attributes": list(self.attributes),
            "negatives": list(self.negatives),
            "variation": self.variation,
            "count": self.count,
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "settings": dict(self.settings),
            "per_garment": {k: list(v) for k, v in self.per_garment.items()},
        }


# ---------------------------------------------------------------------------------------------------------------
# Vocabulary.  Synonyms are "|"-separated; hyphens and spaces are equivalent in the input.
# ---------------------------------------------------------------------------------------------------------------
_GARMENT_SYNONYMS: dict[str, str] = {
    "skirt": "skirts|skort|skorts",
    "dress": "dresses|frock|frocks|gown|gowns|sundress|sundresses",
    "jacket": "jackets",
    "coat": "coats|overcoat|overcoats",
    "jeans": "denims",
    "pants": "pant|trousers|trouser|slacks",
    "shorts": "",
    "t-shirt": "t-shirts|tshirt|tshirts|tee|tees|teeshirt|tee shirt",
    "shirt": "shirts",
    "blouse": "blouses",
    "top": "tops|bodysuit|bodysuits",
    "sweater": "sweaters|jumper|jumpers|pullover|pullovers|sweatshirt|sweatshirts|crewneck",
    "hoodie": "hoodies|hoody|hooded sweatshirt|zip up hoodie",
    "cardigan": "cardigans|cardi|cardis",
    "blazer": "blazers|sport coat|sports coat|suit jacket|sport jacket",
    "vest": "vests|waistcoat|waistcoats|gilet|gilets|sweater vest",
    "suit": "suits|pantsuit|pantsuits|trouser suit",
    "jumpsuit": "jumpsuits|romper|rompers|playsuit|playsuits|overalls|dungarees|boilersuit",
    "shoes": "shoe|loafers|loafer|flats|ballet flats|sandals|sandal|mules|oxfords|brogues|footwear|dress shoes",
    "boots": "boot|booties|ankle boots",
    "sneakers": "sneaker|trainers|trainer|kicks|tennis shoes|running shoes",
    "heels": "heel|high heels|stilettos|stiletto|pumps|slingbacks",
    "hat": "hats|cap|caps|beanie|beanies|beret|berets|fedora|fedoras|baseball cap",
    "scarf": "scarves|scarfs|shawl|shawls|bandana|bandanas",
    "bag": "bags|handbag|handbags|purse|purses|tote|totes|tote bag|clutch|backpack|backpacks",
    "belt": "belts",
    "tie": "ties|necktie|neckties|bowtie|bow tie",
    "leggings": "legging|tights|yoga pants",
}
GARMENTS: tuple[str, ...] = tuple(_GARMENT_SYNONYMS)

# Surface forms that mean a garment *and* an attribute: "miniskirt" -> ("mini", "skirt").
_GARMENT_COMPOUNDS: dict[str, tuple[tuple[str, str], str]] = {
    "miniskirt": (("length", "mini"), "skirt"),
    "miniskirts": (("length", "mini"), "skirt"),
    "mini skirt": (("length", "mini"), "skirt"),
    "maxiskirt": (("length", "maxi"), "skirt"),
    "minidress": (("length", "mini"), "dress"),
    "maxidress": (("length", "maxi"), "dress"),
    "crop top": (("length", "cropped"), "top"),
    "crop tops": (("length", "cropped"), "top"),
    "croptop": (("length", "cropped"), "top"),
    "halter top": (("detail", "halter"), "top"),
    "khakis": (("colour", "khaki"), "pants"),
    "jean jacket": (("material", "denim"), "jacket"),
    "jean skirt": (("material", "denim"), "skirt"),
    "jean shorts": (("material", "denim"), "shorts"),
    "jorts": (("material", "denim"), "shorts"),
    "jean shirt": (("material", "denim"), "shirt"),
    "jean vest": (("material", "denim"), "vest"),
    "jean dress": (("material", "denim"), "dress"),
}

# Garment kinds: words naming one cut of a canonical garment.  CLIPSeg looks for the canonical garment; the kind
# stays in the prompt, right before the noun ("change the coat to a camel trench" -> "a camel trench coat").
# (kind, canonical garment, "|"-separated surfaces)
_GARMENT_KINDS: tuple[tuple[str, str, str], ...] = (
    ("trench", "coat", "trench|trenches|trenchcoat|trenchcoats|trench coat|trench coats"),
    ("parka", "coat", "parka|parkas"),
    ("pea", "coat", "peacoat|peacoats|pea coat|pea coats"),
    ("rain", "coat", "raincoat|raincoats|rain coat|rain coats"),
    ("bomber", "jacket", "bomber|bombers|bomber jacket|bomber jackets"),
    ("windbreaker", "jacket", "windbreaker|windbreakers"),
    ("anorak", "jacket", "anorak|anoraks"),
    ("chino", "pants", "chinos|chino|chino pants"),
    ("jogger", "pants", "joggers|jogger pants"),
    ("sweat", "pants", "sweatpants|sweat pants"),
    ("cargo", "pants", "cargo pants"),
    ("dress", "pants", "dress pants"),
    ("button-down", "shirt", "button down|button downs|buttondown|buttondowns|button up|button ups"
                             "|button-down shirt"),
    ("dress", "shirt", "dress shirt|dress shirts"),
    ("tank", "top", "tank|tanks|tank top|tank tops"),
    ("camisole", "top", "cami|camis|camisole|camisoles|camisole top"),
    ("tube", "top", "tube top|tube tops"),
    ("turtleneck", "sweater", "turtleneck|turtlenecks|turtleneck sweater"),
    ("slip", "dress", "slip dress|slip dresses"),
    ("shirt", "dress", "shirt dress|shirtdress|shirt dresses|t-shirt dress|tshirt dress"),
    ("sweater", "dress", "sweater dress|sweater dresses"),
    ("tuxedo", "suit", "tuxedo|tuxedos|tux"),
)

_ATTRIBUTE_SYNONYMS: dict[str, dict[str, str]] = {
    "colour": {
        "red": "", "orange": "", "yellow": "", "green": "", "blue": "", "purple": "", "pink": "", "brown": "",
        "black": "jet black", "white": "pure white|snow white", "grey": "gray", "beige": "", "navy": "navy blue",
        "burgundy": "", "maroon": "", "teal": "", "turquoise": "", "olive": "olive green", "khaki": "",
        "cream": "", "ivory": "", "off-white": "offwhite", "tan": "", "camel": "", "coral": "", "lavender": "",
        "lilac": "", "mint": "mint green", "mustard": "mustard yellow", "gold": "golden", "silver": "",
        "charcoal": "", "magenta": "", "fuchsia": "fuschia|fushia", "emerald": "emerald green",
        "cobalt": "cobalt blue", "indigo": "", "violet": "", "peach": "", "rust": "", "sage": "sage green",
        "terracotta": "", "champagne": "", "nude": "", "blush": "blush pink", "wine": "", "plum": "", "taupe": "",
        "mauve": "", "lime": "lime green", "aqua": "", "salmon": "", "bronze": "", "copper": "",
        "chocolate": "chocolate brown", "rose": "", "scarlet": "", "crimson": "", "pastel": "pastels", "neon": "",
        "multicolour": "multicolor|multicolored|multicoloured|multi colour|multi color|multi coloured"
                       "|multi colored",
        "rainbow": "", "sky blue": "", "baby blue": "", "royal blue": "", "hot pink": "", "baby pink": "",
        "forest green": "", "bottle green": "", "cherry red": "",
    },
    # Colour tones; "light"/"dark" + a colour make one compound colour ("light blue").
    "tone": {"dark": "darker", "light": "lighter", "bright": "brighter", "pale": "paler", "muted": ""},
    "pattern": {
        "floral": "florals|flowers|flower|flowery|flowered|flower print|floral print",
        "striped": "stripes|stripe|stripy|stripey|stripe print",
        "pinstriped": "pinstripe|pinstripes|pin stripe|pin stripes|pin striped",
        "polka dot": "polka dots|polka|polkadot|polkadots|dots|dotted|polka dotted|spotted|spots",
        "plaid": "", "tartan": "",
        "checked": "checkered|chequered|checks|check print|checkerboard",
        "gingham": "", "houndstooth": "dogtooth",
        "leopard print": "leopard|leopard spots", "animal print": "",
        "zebra print": "zebra|zebra stripes", "snake print": "snakeskin|snake skin|python print",
        "paisley": "", "camo": "camouflage", "tie-dye": "tiedye|tie dyed",
        "geometric": "", "solid": "plain|solid color|solid colour", "abstract": "abstract print",
        "colour-block": "colorblock|colourblock|color block|color blocked|colour blocked",
        "argyle": "", "herringbone": "", "ombre": "", "graphic print": "graphic",
    },
    "material": {
        "denim": "", "leather": "", "faux leather": "vegan leather|pleather", "patent leather": "patent",
        "silk": "silky|silken", "satin": "satiny", "velvet": "velvety|velour", "linen": "", "cotton": "",
        "wool": "woolen|woollen|wooly|woolly|merino", "cashmere": "", "lace": "lacy",
        "sequined": "sequin|sequins|sequinned", "tweed": "", "corduroy": "cord|corduroys", "chiffon": "",
        "tulle": "", "knit": "knitted|knits|knitwear|cable knit|chunky knit", "suede": "",
        "faux fur": "fake fur", "fur": "furry", "mesh": "", "jersey": "", "organza": "", "nylon": "",
        "polyester": "", "vinyl": "pvc", "crochet": "crocheted", "fleece": "", "sheer": "", "metallic": "",
        "glitter": "glittery|sparkly|sparkle|sparkles", "shiny": "glossy|shine", "matte": "", "spandex": "lycra",
    },
    "length": {
        "maxi": "", "midi": "mid length", "mini": "", "long": "longer|lengthen", "short": "shorter|shorten",
        "cropped": "crop", "ankle-length": "", "knee-length": "", "floor-length": "floor sweeping|full length",
        "knee-high": "",
    },
    "fit": {
        "fitted": "tight|tighter|form fitting|snug", "loose": "looser|loose fitting|loosen",
        "oversized": "oversize|baggy|baggier|boxy", "slim": "slimmer|slim fit", "skinny": "",
        "wide-leg": "wide legged|palazzo", "flared": "flare|flares|bell bottom|bell bottoms|bellbottoms",
        "bootcut": "boot cut|bootleg", "straight": "straight leg|straight cut", "relaxed": "relaxed fit",
        "tailored": "", "a-line": "aline", "pleated": "pleats|pleat|pleating", "wrap": "wraparound|wrap around",
        "bodycon": "", "high-waisted": "high waist|highwaisted|high rise", "low-rise": "low waisted",
        "flowy": "flowing|floaty", "structured": "",
    },
    "style": {
        "vintage": "", "retro": "", "boho": "bohemian|boho chic", "minimalist": "minimal|minimalistic|minimalism",
        "elegant": "classy|sophisticated", "casual": "", "formal": "", "sporty": "athletic|athleisure",
        "streetwear": "street style|street wear|urban", "preppy": "", "60s": "sixties", "70s": "seventies",
        "80s": "eighties", "90s": "nineties", "y2k": "2000s|noughties", "gothic": "goth", "romantic": "",
        "punk": "", "grunge": "", "edgy": "", "glam": "glamorous|glamour|glamor", "cottagecore": "",
        "classic": "", "chic": "", "futuristic": "", "western": "cowboy", "evening": "", "party": "",
        "bridal": "", "festival": "", "military": "", "nautical": "",
        "luxurious": "luxury|luxe|expensive|high end|upscale|opulent", "summery": "summer|summertime",
        "wintry": "winter|wintery", "bold": "bolder|daring|statement", "understated": "subtle|subtler|toned down",
        "monochrome": "monochromatic|tonal",
    },
    "detail": {
        "ruffled": "ruffles|ruffle|ruffly|frilly|frills|frill|frilled", "embroidered": "embroidery",
        "beaded": "beads|beading", "fringed": "fringe", "sleeveless": "",
        "long-sleeved": "long sleeve|long sleeves", "short-sleeved": "short sleeve|short sleeves",
        "off-the-shoulder": "off shoulder", "strapless": "", "v-neck": "vneck", "backless": "open back",
        "belted": "", "puff-sleeved": "puff sleeve|puff sleeves|puffed sleeves|puffy sleeves", "quilted": "",
        "ruched": "", "distressed": "ripped", "halter": "halter neck|halterneck", "lace-up": "",
        "cut-out": "cutout|cutouts|cut outs",
        "high-slit": "slit|slits|high slit|side slit|thigh slit|leg slit|thigh high slit",
    },
}
VOCABULARY: dict[str, tuple[str, ...]] = {cat: tuple(words) for cat, words in _ATTRIBUTE_SYNONYMS.items()}

# Prompt order: styles, non-compound lengths, fits, tone, colour, pattern, material, details, then the lengths and
# fits that read as part of the noun ("a red floral maxi skirt", "a black wrap dress").
_PROMPT_ORDER = ("style", "length", "fit", "tone", "colour", "pattern", "material", "detail", "compound", "kind")
_NOUN_COMPOUNDS = frozenset({"maxi", "midi", "mini", "wrap", "bodycon", "a-line", "wide-leg", "bootcut"})
# Categories where a follow-up replaces the earlier value instead of adding to it ("#2 in blue" drops "red").
_EXCLUSIVE = frozenset({"length", "colour", "tone", "pattern", "material", "kind"})
_TIGHT_FITS = frozenset({"fitted", "slim", "skinny", "bodycon"})
_LOOSE_FITS = frozenset({"loose", "oversized", "relaxed", "flowy"})
_OPPOSED_FITS = ((_TIGHT_FITS, _LOOSE_FITS), (_LOOSE_FITS, _TIGHT_FITS))  # "#2 but tighter" drops "loose"
_PLURAL_NOUNS = frozenset({"jeans", "pants", "shorts", "shoes", "boots", "sneakers", "heels", "leggings"})

_NEGATORS = ("no|not|without|avoid|avoiding|less|minus|non|never|nothing|none|hate|dislike|dont|do not|doesnt"
             "|remove|ditch|drop|lose|nix|skip|except|anything but|other than|get rid of|take off|take away"
             "|instead of|rather than|in place of|but not")
_REVERSE_CONNECTORS = frozenset({"instead of", "rather than", "in place of"})  # "a skirt instead of the jeans"
_KEEPERS = "keep|leave|preserve|dont change|dont touch|do not change|do not touch|leave alone"
_COLOUR_MODIFIERS = frozenset({"light", "dark", "pale", "bright", "deep", "pastel", "neon", "dusty", "muted", "soft",
                               "rich", "vivid", "electric"})

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

# Ordinary English words that must never be "typo-corrected" into the vocabulary ("that" -> "hat", ...).
_STOPWORDS = frozenset("""
about above after again against almost also always among another answer anything anyway anymore around away back
backs bake base based batch beach bear beat because been before being believe below belong best better between
beyond bigger blank block boost both bring build built came cancel cant change check checking chat clean close cold
come could cute days deal dear didnt does doesnt done down draw dream dressed dresser address each edit else even
ever every exactly fact feel feels fine first five four free fresh from front full gave getting give gives goes
going gone good great grown guess half hand happy hard have hello help helps here hers hold home hope idea ideas
image images inch inches into just keep kind know last late later lets like likes line lines little look looks lose
lost love loved made make makes many maybe mean means might mind mine mode more most much must name need needs
next nice nope normal note okay once only open other over pair paid park part place plan please point pose post
press pretty quite rather real really reach right same save says scare scary seem seen send sent shes shift shoot
shore shot should show shows side since size sizes some something sort soon start still stop stuff such sure take
talk team tell than thank thanks that thats their them then there these they thing things think this those three
tied tier time times today together took totally tried tries true turn tweet under until upon very want wants
wear wearing well went were what when where which while who whole will wish with work would write yeah year your
yours stain steal alive along books costs coast dropped laces peace sheet sports stress skin goodie speakers kick
format spotty those stunning beautiful gorgeous photo photos picture pictures model person woman women girl lady guy
outfit outfits style styles vibe vibes color colour colors colours fabric pattern print prints material version
versions option options result results sleeve sleeves neck waist length instead looking maybe perfect awesome
lovely amazing cool thing fabulous great sweet sweat shirtless hmmm please thanks thank regenerate variation
variations variant variants favorite favourite favorites settings setting config steps step guidance seed strength
denoise denoising count undo revert cancel help commands usage previous pick choose select continue similar
another again retry reroll redo tweak vary riff iterate render generate create produce making wanted needs love
lovely adore heart bookmark keeper winner use using base build work proceed start could should would might think
guess tried tries trying actually probably definitely absolutely please still left right both either neither
swap switch replace change turn convert transform exchange trade substitute into onto from with without about
over under after before while during since until because although though whether plus minus times
""".split())

# English words (from /usr/share/dict/american-english, Debian "wamerican") that the typo repair would otherwise
# turn into vocabulary ("matter" -> "matte", "following" -> "flowing").  When the vocabulary changes, run
# tests/test_intent.py::test_dictionary_words_are_not_corrected: it prints the words to add here.
_DICTIONARY_STOPWORDS = frozenset("""
abiding abstracted abstractly airline alien aliened aligned alike alined alpine angoras anther anthers aquae
athlete attract avid avoided avowing backers backpacked backpacker backpackers backrests backspace backspaces
backtrack backtracks baggiest balder balding banana bananas bandanna bandannas bandies banding bangs banyans
beaching bead beadiest beady beaked beaks beamed beaming beams beaned beaning beans bearded bearding beards
bearing bearings bears beating beatings beatniks beats beaus beauties bedded bedding beds beet beets beget
begets behaving beheaded beheading beheads beholder belated belaying belied belled bells bending bends bents
berating bereft beset besets besiege bested bests betaking betiding bets betted bewaring bight blacked blacken
blacker blackjack blackjacks blackness bladders blamer blasters blaze blazed blazes bleating bleeding blending
blight bloodies blots bloused blown blued bluer bluish blushed blusher blushes boarding boats boggier boggy
bolted bolts bombards bombed bonuses boobies boobs boogies bookies booms boons boors boos boosts bootees booth
booths bootie bootless booty booziest border boulder boulders bounties bouts bowlder bowlders brads bragger
brags braiding brandies branding brawn braziers breaded breading breads breaking breeding brighten brightens
brightest brightly brogue bronzed brow browned browner brownie brows brush buckles buggier buggy bulrush
bumblers bush cameo camouflaged camps cams capes caramel card cardiac carding cardio cards carpi carps cashier
cashiered casually casualty cats causal chamois chaps chats checker checkers checkups cheeked cheeks cheered
chick chicks chignon chignons chin china chink chinks chins chocked chocks chopped chopper choppers choppier
choral chorale chorals chord chucked chuckled chucks claps class classical classier classify classing clopped
clutched clutches coal coals coasts colts combats cooper coots copier copped coppery copter cordial cored
corneal corral corrals cots cottoned cram crapped craps creak creamed creamer creamy crimsoned crippled
cropper croppers crotches crotchet crotchets crotchety crouched crouches croup crutch dairying danker daringly
darken darling darlings darning darting dating dazing denies depress depresses digress digressed digresses
disliked distress distresses distrusted ditched ditches dogtrot dolts donut doted dotes dregs dressers
dressier dressiest dressy droop dross dryness dungaree duress dwarfing eighteens eighths eightieth eightieths
elegance elegantly elephant embroider embroideries embroiders emending evincing excepted excerpt excerpts
expansive expense expensively expressive extensive fallowing fare fared fares fats feared feats federals
femora ferry festive festively fiats fill filled fills filly fitter flags flake flaked flakes flame flamed
flames flaps flat flaunts flavored flawed flawing flaws flayed flays fleeced fleecier fleecy flits flitted
float floaters floating floats flock flocking flocks flogging flooding floored flooring flopping flora florae
floras flossing floured flouring flouting flow flowed flowerbed flowerbeds flowerier flowering flown flows
flurry flyovers follower followers following formally fowling frack fracks frats fridge friended frillier
frizzled frowning fury geocentric geometrical geometries geometry giblet giblets gilt gilts gimlet gimlets
glamored glamorously glamoured glamourous glassy gleam glittered glitzier gloss glossary goldener goons grange
graphical graphing graphite gravy greed greened greener greet grittier grudge grungier grungy hafts haler
halted haltered halts handball handballs harts haste hated hater hatter heals heats heeds hood hoods hooey
hooky howdy jacked jackpots jiggers jogger joggles jolts jots jugglers jumped jumpier junipers kickers kicky
kinks kits knighted knights knitter knitters knots knotted laced lagging lance lather lathers laughter launder
leaguing lease leathery leaved leaven leavens leggin leggins lengthened lengthier lengths lengthy leotard
leotards lien lighted lighten lightens lightest lightly liken limed linden lindens lined lineman linemen liner
linger liven loader loaders loafed loaner loaners lodger logger logging loner longed loosed loosely loosened
loosest looter loser louse lugging lugubrious luxuries luxuriously macaroon males marooned mate mated matt
matted matter matters matts maxim menus metabolic meted miles militancy militarily mindless minds mines
minibus minim minima minimally minks minty minuets minuses minuted minutes modules moles mounted mouthed
muddles muffles muggles mulches mule mullets mulls mumbles muscles mused muses mustered mutated mute muter
mutes muzzles naughtiest nautically neckline necklines nervier newer niceties nighties nineteens ninetieth
ninetieths ninnies nonce noshing notching noticing noting noughts nuder nudge opulence organize outlive
overall overcast overcasts overeat overeats overhauls overlie oversee oversells oxford pacts pager pain paint
paints palaver palazzi paled palmier palpated palpating panes pangs pans panties panty paper paprika parent
parents parity parks parkway parkways parry parse parses parsley partly parts partway passel passels paste
pasted pasterns pastes pasties pasts pasty patented patently patient patients pats patty payer peaches peaking
pealing peanuts peat pedants pelting peppy perch petting pimps pinky pints placated placating placid placing
plainer plainly plaint plaints plait plaited plaiting planets planing plant planted planting plants plasters
plated plating platter playing plea plead pleaded pleader pleading pleads pleas pleased pleasing pleasings
plovers plumb plume plump plumps plunk poach polecat polecats polestar polkaed pollster potent prating preach
preachy predated predating prepay preserved preserver preservers pullers pulps pulsated pulsating pulse pulses
pumas pump pumpers punts pups puree purees purge purges purpler purplest purpose purposes pursed purser
pursers pursue pursued pursuer pursuers pursues pusses quailed quieted quilter quilters quitted quoited raffle
raffled raffles rapped regenerated regenerates regenerative relapsed related relaxes relayed released reloaded
remote removed remover removers remunerate replaced replayed retrod riffle riffled riffles ripper rippled
roamers romped roomers rouse ruffed rushed rusty sacks sager salon saloon saltine salting salver sandbags
sandbars sating scandal scandals scar scarcest scares scarfed scariest scarify scars schemer scrimped scripted
scummier scurf sealers seating sedater seeings seekers seer sequenced sequoias setters settling seventeens
sevenths seventieth seventieths sexpots sexting shacks shakers shall shear shearer sheen sheep sheered sheerer
sheller shelter shies shifts shimmer shimmers shimmery shin shined shiner shiners shingle shinier shinned
shinny shins shire shires shirk shirks shirr shirrs shirted shit shits shoed shone shoos shooter shooters
shoots shops shores shorn shorted shortened shortest shorting shortish shortly shots shout shouts shove
shovels shoves showers shrimped shrine shrines shyer sicken silly silts silvered silvery simmer simmers sine
sits sitting sittings sixteens sixtieth sixtieths skaters skating skimp skirted skit skits slack slackens
slackers slackest slammer slammers slating slats sleepless slicks slid slights slime slimier slimmed slimmest
slimy slips slits sliver sloes slots slotted slummer sluts smacks snacks snakier snarf snarfs sneaked sneakier
sneer snits snort snorts snots sold soled soli solider solidly solver sophisticate sophisticates sorter
sorters sorts sots soundless soundness sparely sparked sparkled sparkler sparklers sparsely spats spatted
speaker spigots spine spiny spits spitted splatted splints split splits sported sportier spot spotter spotters
spottier spouted spouts sprouted sprouts squinted squints squired squirts stacks stage staplers staples
starkly starless starlet starlets starlight starves statesmen stating station steer stilettoes stipend stolid
storied stories straighten straighter strained straplesses strapped streetcar striated stricture strictures
stride strides strife strike strikers strikes stringed strings strip stripped stripper strippers strips stript
strive strived strives strophes stropped structural structure structures submits subtitle subtlest subtlety
subtly sued suite suites suitors sulky summary summed summered summitry summits summoner sundaes sunders
sundials sundries sunless suppresses swatter swatters swearer swearers sweatier sweeter swelter swelters
swimmer swimmers swine symmetry tacks tailors talks tangs tankers tanners tape tartar tasks teaches teed teems
teens thees thirsts tides tiers tighten tightens tightest tightly tikes tiles tines tires toenail toes tokes
tomes tones tonight torte tortes total toted totem totems tots totters toweled towered tracers traders trailer
trailers trained trainee trainees trances treed trees trenched trouper troupers tuxedoes tweaked twee tweedy
tweeted twerked undercoated underrated understaffed understand understate understates urbane urbaner vacation
vacations validation validations valuations vantage vantages vasts vents vets violent westerly westerner whine
whistle whit whiten whitens whiter whitest whither whits whittle wholly wince windbreak windbreaks wined
winery winger wintered wintrier wooden woody woollier woollies woozy wrapt yellowed yellower
""".split())


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
_FUZZY_EXTRA = ("favorite", "favourite", "variations", "variation", "settings", "regenerate", "another")
_FUZZY_BY_LETTER: dict[str, list[str]] = {}
for _key in sorted(_LEX):
    if len(_key) == 1 and len(_key[0]) >= 4 and _key[0].isalpha():
        _FUZZY_BY_LETTER.setdefault(_key[0][0], []).append(_key[0])
for _word in _FUZZY_EXTRA:
    _FUZZY_BY_LETTER.setdefault(_word[0], []).append(_word)
_KNOWN = (_STOPWORDS | _DICTIONARY_STOPWORDS | set(_NUMBER_WORDS) | set(_ORDINALS) | _ARTICLES | _GLUE | _NEG_FILLERS
          | {w for key in _LEX if len(key) > 1 for w in key})

# Emoji that carry meaning; every other symbol becomes a space.
_EMOJI = {
    "⭐": "star", "🌟": "star", "❤": "love", "♥": "love", "😍": "love", "🥰": "love", "💖": "love", "💕": "love",
    "💗": "love", "↩": "undo", "⏪": "undo", "🔙": "undo", "❓": "?", "❔": "?", "🔁": "again", "🔄": "again",
    "⚙": "settings", "🆘": "help",
    "🔴": "red", "🟠": "orange", "🟡": "yellow", "🟢": "green", "🔵": "blue", "🟣": "purple", "🟤": "brown",
    "⚫": "black", "⚪": "white", "💙": "blue", "💚": "green", "💛": "yellow", "🧡": "orange", "💜": "purple",
    "🖤": "black", "🤍": "white", "🤎": "brown", "🌸": "floral", "🌺": "floral", "🌼": "floral", "🌷": "floral",
    "🐆": "leopard", "🦓": "zebra",
}
# Garment emoji count only when no garment is named in words ("a tweed blazer 🧥" is a blazer, not two items).
_GARMENT_EMOJI = {
    "👗": "dress", "👖": "jeans", "👕": "tshirt", "👔": "shirt", "🧥": "coat", "👠": "heels", "👡": "heels",
    "👟": "sneakers", "👞": "shoes", "👢": "boots", "👜": "bag", "👛": "bag", "🎒": "bag", "🧣": "scarf",
    "🎩": "hat", "👒": "hat", "🧢": "hat", "🩳": "shorts", "👚": "blouse",
}
_EMOJI_MARK = "_e"  # "👗" -> "dress_e": a garment token flagged as coming from an emoji


# ---------------------------------------------------------------------------------------------------------------
# Stage 1-2: normalisation and typo repair
# ---------------------------------------------------------------------------------------------------------------
def _normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
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
    text = re.sub(r"\b(?:no|without(?: an?| the| any)?|lose the|drop the)\s+(?:patterns?|prints?|patterning)\b"
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


def _correct_word(word: str) -> str:
    """Repair a typo ("skrit" -> "skirt"): difflib ratio >= 0.8, same first letter, at most one edit (two for
    words of 7+ letters), and never for English words (:data:`_STOPWORDS`, :data:`_DICTIONARY_STOPWORDS`)."""
    if len(word) < 4 or not word.isalpha() or word in _KNOWN or (word,) in _LEX:
        return word
    if word.endswith("s") and (word[:-1],) in _LEX:
        return word
    for match in difflib.get_close_matches(word, _FUZZY_BY_LETTER.get(word[0], ()), n=3, cutoff=0.8):
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
                             r"|\bmask\s+(?:is\s+|was\s+)?(?:too\s+(?:small|tight|narrow)|bigger|larger|wider)\b")
_MASK_SMALLER_RE = re.compile(r"\b(?:smaller|tighter|narrower|shrink|reduce)\s+(?:the\s+)?mask\b"
                              r"|\bmask\s+(?:is\s+|was\s+)?(?:too\s+(?:big|large|wide|loose)|smaller|tighter)\b")
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
_VAR_VERBS = ("use|fav|fave|favorite|favourite|star|love|i like|i really like|something like|pick|choose|select|take|keep|save|continue from"
              "|continue with|go with|going with|go back to|back to|start from|start with|build on|build from"
              "|base on|based on|work from|work on|revert to|more like|similar to|vary|riff on|variations of"
              "|variants of|versions of|variations on|same as|try|tweak|edit|redo|heart|bookmark|proceed with")
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
                       r"|reset(?!\s+(?:the\s+|my\s+|all\s+)?(?:settings?|config|steps|seed|guidance|strength|count))"
                       r"|(?:back\s+to|use|revert\s+to|return\s+to|go\s+back\s+to|from)\s+(?:the\s+)?original"
                       r"(?:\s+(?:photo|picture|image|pic))?\b(?!\s+(?:colou?r|length|fabric|shape|cut|style))"
                       r"|original\s+(?:photo|picture|image|pic)\s+again)\b")
_UNDO_WEAK_RE = re.compile(r"\b(?:go\s+back|step\s+back|take\s+(?:it|that|this)\s+back|back|previous"
                           r"|cancel\s+(?:that|it|this))\b")
_HELP_RE = re.compile(r"^\s*(?:\?+|h|help|commands|usage|instructions|menu|info)\s*[?!.]*\s*$"
                      r"|\b(?:help|what\s+can\s+you\s+do|what\s+do\s+you\s+do|how\s+does\s+(?:this|it|that)\s+work"
                      r"|how\s+do\s+i\s+(?:use|start)|how\s+to\s+use|what\s+can\s+i\s+(?:say|ask|do|type)"
                      r"|what\s+are\s+the\s+commands|show\s+commands|who\s+are\s+you)\b")
_BATCH_RE = re.compile(r"\b(?:batch|bulk)\b")
_VARY_RE = re.compile(rf"\b(?:more\s+like|something\s+like|similar|again|vary|variations?"
                      rf"|variants?|regenerate|re\s*roll|retry|redo|riff|iterate|tweak|another|one\s+more"
                      rf"|same\s+(?:but|again|thing|as|one|vibe|style))\b"
                      rf"|\b(?:more|other|different|new|fresh)\s+(?:{_COUNT_NOUNS})\b|\bshow\s+me\s+more\b"
                      rf"|\bkeep\s+(?:going|them\s+coming)\b"
                      rf"|\b(?:{_NUM}|some|few|couple|several|any)\s+more\b"
                      rf"|\bmore\s*(?:$|[,.!?;#\d]|(?:please|pls|plz|of\s+(?:those|these|that|this|them|it"
                      rf"|the\s+same))\b)")
_FAV_RE = re.compile(r"\b(?:fav|fave|favs|faves|favorite|favourite|favorites|favourites|favorited|favourited"
                     r"|star|starred|love|loved|adore|heart|bookmark|save|saved|keeper)\b"
                     r"|\bi\s+(?:really\s+|do\s+|quite\s+)?(?:like|love|adore|dig)\b|^\s*like\s+(?:it|this|that)\b")
_INFO_RE = re.compile(r"\b(?:seed|prompt|details?|info|settings|how\s+(?:did\s+you|was\s+it|were\s+they)\s+"
                      r"(?:make|made|get|got|do|done)|what\s+(?:did\s+you\s+use|was\s+used))\b")
_PRAISE_RE = re.compile(r"\b(?:great|perfect|gorgeous|beautiful|stunning|amazing|awesome|lovely|fantastic|nice"
                        r"|wonderful|brilliant|excellent|obsessed|fire|chef'?s\s+kiss|looks?\s+good|spot\s+on"
                        r"|nailed\s+it|so\s+good|the\s+best|best\s+one|wow)\b")
_USE_RE = re.compile(r"\b(?:use|using|pick|choose|chose|select|go\s+with|going\s+with|continue|start\s+from"
                     r"|build\s+(?:on|from)|base|based\s+on|work\s+(?:from|with|on)|proceed\s+with|take"
                     r"|that\s+one|this\s+one|winner|revert\s+to|back\s+to)\b")


def _decide(text: str, *, content: bool, variation: int | None, count: int | None, count_kind: str | None,
            settings: dict, batch_garment: bool) -> str:
    if not text:
        return "unknown"
    if _RESET_RE.search(text) and variation is None:
        return "reset"
    if _UNDO_STRONG_RE.search(text) and variation is None:
        return "undo"
    if _HELP_RE.search(text) and not content and variation is None and not settings:
        return "help"
    if (settings or _SETTINGS_WORD_RE.search(text)) and not content and variation is None and count is None:
        return "settings"
    if variation is not None and _INFO_RE.search(text) and not settings and not content:  # "seed of #2?"
        return "info"
    if (_BATCH_RE.search(text) or count_kind == "noun" or batch_garment
            or (count_kind == "verb" and content and not _VARY_RE.search(text))):
        return "batch"
    if _VARY_RE.search(text) or count is not None or count_kind is not None:
        return "vary"
    if _FAV_RE.search(text) and not content:
        return "favorite"
    if _UNDO_WEAK_RE.search(text) and not content and variation is None:
        return "undo"
    if _USE_RE.search(text) and not content:
        return "use"
    if variation is not None:
        if not content and _PRAISE_RE.search(text):  # "#2 is perfect", "love love love #3"
            return "favorite"
        return "vary" if content else "use"
    if content:
        return "restyle"
    return "unknown"


_THANKS_RE = re.compile(r"^\W*(?:thanks?|thank\s+you|thx|ty|cheers|merci|ta)\b(?:\s+(?:so\s+much|a\s+lot|again"
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
def parse(text: str, context: Context | None = None) -> Intent:
    """Parse one message; ``context`` supplies the garment/target/attributes of the thread's last turn.  Only the
    first ``MAX_TEXT`` characters are read (a styling request is a sentence, not a 40 kB paste)."""
    ctx = context or Context()
    normalized = _correct_typos(_normalize((text or "")[:MAX_TEXT]))
    settings, rest = _extract_settings(normalized)
    variation, count, count_kind, rest = _extract_numbers(rest)
    toks = _scan(re.findall(r"[a-z0-9_]+|[,.;:!?/&+]", rest))
    analysis = _analyse(toks)
    attr_toks = [i for e in analysis.edits for i in e.attrs] + analysis.global_attrs
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

    action = _decide(re.sub(r"\s+", " ", normalized).strip(), content=content, variation=variation, count=count,
                     count_kind=count_kind, settings=settings, batch_garment=batch_garment)
    if action not in GENERATING_ACTIONS:
        keep_var = action in ("favorite", "use", "info")
        return Intent(action=action, variation=variation if keep_var else None, settings=settings)

    negatives = analysis.negatives
    names = [t.value for t in toks]

    def attr_names(indices: list[int]) -> list[str]:
        return _unique(names[i] for i in sorted(indices) if names[i] not in negatives)

    global_names = attr_names(analysis.global_attrs)
    if analysis.edits:
        per_edit = [(names[e.source], names[e.target], attr_names(e.attrs + analysis.global_attrs))
                    for e in analysis.edits]
        merged: dict[str, tuple[str, list[str]]] = {}
        for src, dst, attrs in per_edit:
            old = merged.get(src)
            merged[src] = (old[0] if old else dst, _unique([*(old[1] if old else []), *attrs]))
        garments = list(merged)
        garment, target = garments[0], merged[garments[0]][0]
        attributes = attr_names(attr_toks)
        inherited = False
    else:
        garment = ctx.garment
        target = (ctx.target or ctx.garment) if garment else ctx.target
        garments = [garment] if garment else []
        attributes = global_names
        merged = {}
        inherited = True

    same_item = inherited or (garment is not None and garment in (ctx.garment, ctx.target))
    if (action == "vary" and same_item and len(garments) <= 1) or inherited:
        # "#2 but longer", and any follow-up that names no garment ("make it longer", "in blue", "darker"):
        # the thread's look, refined — a new colour/length/... replaces the old one
        attributes = [a for a in _merge(ctx.attributes, attributes) if a not in negatives]
    elif action == "batch" and same_item and not attributes and len(garments) <= 1:
        attributes = [a for a in ctx.attributes if a not in negatives]

    if len(merged) > 1:
        per_garment = {src: attrs for src, (_, attrs) in merged.items()}
        prompt = build_prompt([(dst, attrs) for dst, attrs in merged.values()])
    else:
        per_garment = {garment: list(attributes)} if garment else {}
        prompt = build_prompt([(target or garment, attributes)])

    return Intent(
        action=action,
        garment=garment,
        garments=garments,
        target=target,
        attributes=attributes,
        negatives=negatives,
        variation=variation if action in ("vary", "batch") else None,
        count=count,
        prompt=prompt,
        negative_prompt=", ".join(negatives),
        settings=settings,
        per_garment=per_garment,
    )


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
