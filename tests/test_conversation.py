"""Scripted multi-turn conversations through the engine, end to end, on a fast test double of the model backend.

The conversation is what is under test here: which messages generate, from which picture, with which look, what
restyle says back, and — above all — that chatter, questions and unsupported requests never spend GPU time or
switch the picture a thread is on.  The real-model paths are covered by test_engine.py and test_slack.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from bot import messages as T
from bot.engine import Engine
from bot.events import Answer, Command, Message, Photo, Question, Variations
from bot.settings import Settings
from bot.store import Store
from tests.conftest import make_photo, to_bytes
from tests.fake_backend import FakeBackend

PHOTO = to_bytes(make_photo(160, 240))


class Chat:
    """One photo thread and the person in it; ``say`` returns the replies and what the backend was asked."""

    def __init__(self, tmp_path: Path, **settings) -> None:
        self.backend = FakeBackend()
        options = {"steps": 2, "num_images": 4, "max_batch": 16, **settings}
        self.engine = Engine(Store(tmp_path), self.backend, Settings.from_env({}, data_dir=tmp_path, **options))
        self.thread = "conv:1"
        assert self.text(self.engine.handle(Photo(self.thread, "ana", PHOTO))) == T.GOT_PHOTO

    def say(self, text: str, *, addressed: bool = True):
        event = Message(self.thread, "ana", text, addressed)
        before = len(self.backend.inpaint_calls)
        predicted = self.engine.needs_generation(event)
        replies = self.engine.handle(event)
        generated = len(self.backend.inpaint_calls) > before
        # adapters queue work by needs_generation: it must agree with what handling the message did
        assert predicted == generated, (text, predicted, generated)
        return replies

    @staticmethod
    def text(replies) -> str:
        return " | ".join(r.text for r in replies)

    def made(self, text: str, **kw) -> Variations:
        (out,) = [r for r in self.say(text, **kw) if isinstance(r, Variations)]
        return out

    def answer(self, text: str, **kw) -> str:
        replies = self.say(text, **kw)
        assert not any(isinstance(r, Variations) for r in replies), text
        return self.text(replies)

    def base(self) -> int | None:
        """The thread's picture: #N, or None for the original photo."""
        v = self.engine.store.base(self.thread)[1]
        return v.number if v else None

    def turn(self, out: Variations):
        return self.engine.store.turn(out.turn_id)


@pytest.fixture
def chat(tmp_path) -> Chat:
    return Chat(tmp_path)


def test_chatter_questions_and_unsupported_requests_never_generate(chat):
    first = chat.made("make the skirt red")
    assert [v.number for v in first.items] == [1, 2, 3, 4]
    calls = len(chat.backend.inpaint_calls)
    # people talking in the thread: nothing at all when it is not said to restyle; a hint when it is
    assert chat.say("lol the skirt looks like a lampshade", addressed=False) == []
    assert chat.say("we need the red one for the pitch deck", addressed=False) == []
    assert chat.answer("lol the skirt looks like a lampshade") == T.UNKNOWN
    # unsupported requests: what restyle cannot do, specifically, and the picture stays where it was
    assert chat.answer("is there a hi-res version of #3?") == T.UNSUPPORTED["upscale"]  # asked how, not asked to
    assert chat.answer("which of these would sell better") == T.UNSUPPORTED["compare"]
    assert chat.answer("can you blur the background") == T.UNSUPPORTED["background"]  # restyle repaints, not blurs
    assert chat.answer("can you make her hair blonde") == T.UNSUPPORTED["hair"]
    assert chat.answer("can you do this for the other 20 photos?") == T.UNSUPPORTED["other_photos"]
    assert chat.answer("remove the belt") == T.UNSUPPORTED["removal"].format(what="belt")
    assert chat.answer("check https://example.com/moodboard for refs") == T.UNSUPPORTED["link"]
    # a how-to question is answered, not acted on
    assert chat.answer("how do I go back to the original?") == T.HOWTO["reset"]
    assert chat.answer("how do i make more of one?") == T.HOWTO["more"]
    # praise and thanks are small talk: said back only when restyle is addressed
    assert chat.answer("thanks!") == T.WELCOME
    assert chat.say("thanks!", addressed=False) == []
    assert chat.answer("#4 is giving") == T.FAVORITED.format(number=4)
    assert len(chat.backend.inpaint_calls) == calls and chat.base() is None


def test_refinements_continue_from_the_picture_the_thread_is_on(chat):
    chat.made("make the skirt red")
    denim = chat.made("try #2 in denim")
    two = chat.engine.store.variation_by_number(chat.thread, 2)
    assert chat.turn(denim).base == str(two.path) and chat.base() == 2  # the thread is on #2 now
    # the reply restates the look, the garment, the source picture and the real numbers
    assert denim.text == T.DONE.format(n=4, s="s", numbers="#5, #6, #7, #8", prompt="a red denim skirt",
                                       what="skirt", source="#2", look="", first=5, other="silk")
    longer = chat.made("make it longer")
    assert chat.turn(longer).base == str(two.path) and chat.turn(longer).prompt.startswith("a long red denim skirt")
    assert "from #2" in longer.text and "(#9, #10, #11, #12)" in longer.text
    # "start over" always works, and forgets the look: "make it green" is a green skirt on the original
    assert chat.answer("let's start over") == T.UNDONE.format(what="the original photo")
    green = chat.made("make it green")
    assert chat.turn(green).base == str(chat.engine.store.original(chat.thread))
    assert chat.turn(green).prompt.startswith("a green skirt,") and "from the original photo" in green.text
    # "use N" moves the thread to #N with #N's look; undo goes back one picture
    assert chat.answer("use 6") == T.USING.format(number=6)
    silk = chat.made("in silk please")
    assert chat.turn(silk).prompt.startswith("a red denim silk skirt") or "silk" in chat.turn(silk).prompt
    assert "red" in chat.turn(silk).prompt and "from #6" in silk.text
    assert chat.answer("undo") == T.UNDONE.format(what="the original photo")
    assert chat.answer("start over") == T.UNDONE.format(what="the original photo")  # the look is forgotten
    assert chat.answer("start over") == T.NOTHING_TO_UNDO


def test_a_multi_garment_look_stays_multi_garment(chat):
    first = chat.made("the top white and the skirt black")
    assert chat.turn(first).garments == ["top", "skirt"]
    longer = chat.turn(chat.made("make it longer"))
    assert longer.garments == ["top", "skirt"]
    assert longer.prompt.startswith("a long white top and a long black skirt")
    silk = chat.made("#3 but in silk")
    assert chat.turn(silk).garments == ["top", "skirt"] and chat.base() == 3
    assert chat.turn(silk).prompt.startswith("a white silk top and a black silk skirt")
    assert "on the top and skirt, from #3" in silk.text
    # one colour for a two-colour look: which garment?  restyle asks, and spends nothing until told
    (question,) = chat.say("make it red")
    assert isinstance(question, Question) and "the top and skirt" in question.text and "red" in question.text
    red = chat.made("yes")
    assert chat.turn(red).garments == ["top", "skirt"] and "red silk top" in chat.turn(red).prompt
    again = chat.turn(chat.made("3 more like that"))
    assert (again.garments, again.prompt) == (chat.turn(red).garments, chat.turn(red).prompt)


def test_unclear_messages_are_asked_about_before_anything_is_spent(chat):
    chat.made("make the skirt red")
    calls = len(chat.backend.inpaint_calls)
    (q,) = chat.say("hmm maybe velvet?")
    assert isinstance(q, Question) and "velvet" in q.text and "from the original photo" in q.text
    assert chat.answer("no") == T.CANCELLED
    assert chat.answer("yes") == T.NOTHING_PENDING  # nothing is waiting any more
    assert chat.say("yes", addressed=False) == []  # and among people, a "yes" is theirs
    (q,) = chat.say("the skirt is too short")  # a complaint: "longer", after asking
    assert isinstance(q, Question) and "a long skirt" in q.text
    chat.answer("fav 1")  # any other message replaces the question …
    assert chat.answer("yes") == T.NOTHING_PENDING
    assert len(chat.backend.inpaint_calls) == calls
    (q,) = chat.say("I feel like the skirt could be a touch shorter")
    assert isinstance(q, Question)
    stale = Answer(chat.thread, "ben", "not-" + q.id, True)
    assert chat.text(chat.engine.handle(stale)) == T.QUESTION_GONE  # … and a button of another question does nothing
    yes = Answer(chat.thread, "ben", q.id, True)
    assert chat.engine.needs_generation(yes)
    (out,) = chat.engine.handle(yes)  # the Generate button: the question's own message, run as asked
    assert isinstance(out, Variations) and chat.turn(out).prompt.startswith("a short skirt")
    assert chat.turn(out).text == "I feel like the skirt could be a touch shorter"
    assert chat.text(chat.engine.handle(yes)) == T.QUESTION_GONE  # answered once
    (q,) = chat.say("a red dress and blonde hair")  # the part restyle cannot do is said in the question
    assert T.ASK_TOPIC.format(what="hair").strip() in q.text
    assert chat.text(chat.engine.handle(Answer(chat.thread, "ana", q.id, False))) == T.CANCELLED


def test_colourways_make_one_set_each_in_one_turn(chat):
    chat.made("make the skirt red")
    ways = chat.made("try it in navy, burgundy and olive")
    assert len(ways.items) == 12 and ways.sheet.exists()
    assert ways.text.startswith(T.DONE_WAYS.format(n=12, numbers=", ".join(f"#{n}" for n in range(5, 17)),
                                                   what="skirt", k=3, ways="navy, burgundy, olive",
                                                   source="the original photo", look="", per=4, first=5))
    turns = {chat.engine.store.turn(v.id and chat.engine.store.variation(v.id).turn).prompt for v in ways.items}
    assert len(turns) == 3 and all(any(p.split(",")[0].endswith(f" {c} skirt") for p in turns)
                                   for c in ("navy", "burgundy", "olive"))
    # the whole set stays within the batch cap: 8 each of 3 would be 24, so 5 each, and the reply says so
    capped = chat.made("give me 8 in coral, mint and lilac")
    assert len(capped.items) == 15
    assert T.WAYS_CAPPED.format(per=5, n=3, cap=16) in capped.text
    plain = chat.made("one floral, one striped, one plain")
    assert len(plain.items) == 12 and "floral, striped, solid" in plain.text
    # a variation of one colourway refines that colourway
    navy = chat.made("#5 but longer")
    assert chat.turn(navy).prompt.startswith("a long navy skirt")


def test_complaints_and_negations_read_the_way_people_mean_them(chat):
    chat.made("make the skirt a red floral maxi")
    without = chat.turn(chat.made("#2 w/o the ruffles"))
    assert without.negative_prompt == "ruffled" and "ruffled" not in without.prompt
    solid = chat.turn(chat.made("get rid of the print on #1"))
    assert "solid" in solid.prompt and "floral" not in solid.prompt
    nofloral = chat.turn(chat.made("make the skirt green, no more florals"))
    assert nofloral.negative_prompt == "floral" and nofloral.prompt.startswith("a green skirt")
    (q,) = chat.say("#1 is too long")
    assert isinstance(q, Question) and "short" in q.text and "long" not in q.text.split("as _")[1]


def test_counts_settings_and_caps(chat):
    assert "count=6" in chat.answer("do 6 per round from now on")
    assert len(chat.made("make the skirt blue").items) == 6
    assert len(chat.made("give me 100 variations of a blue skirt").items) == 16  # the batch cap
    assert T.CAPPED.format(cap=16) in chat.engine.handle(Message(chat.thread, "ana", "20 more like that"))[0].text
    replies = chat.engine.handle(Command(chat.thread, "ana", "batch 3 pastel"))
    assert isinstance(replies[0], Variations) and len(replies[0].items) == 3
    assert chat.answer("how many can you do at once?") in (T.HOWTO["batch"].format(max_batch=16), T.UNKNOWN,
                                                             T.UNSUPPORTED["question"])


def test_the_contact_sheet_labels_colourways(chat, monkeypatch):
    """The sheet of a colourway turn is one picture: the source first, then a tile per variation labelled with its
    number and its colourway (the real renderer draws it; the spy only records what it was asked to draw)."""
    import bot.engine
    from bot.render import contact_sheet

    drawn = []

    def spy(images, labels, **kw):
        drawn.append((len(images), list(labels)))
        return contact_sheet(images, labels, **kw)

    monkeypatch.setattr(bot.engine, "contact_sheet", spy)
    chat.made("make the skirt red")
    ways = chat.made("try it in navy and olive")
    assert Image.open(ways.sheet).format == "PNG"
    numbers = [v.number for v in ways.items]
    assert drawn[-1] == (9, ["original"] + [f"#{n} navy" for n in numbers[:4]] + [f"#{n} olive" for n in numbers[4:]])


def test_statements_among_people_get_no_question_but_a_mention_does(chat):
    """"the skirt is too short" in a channel thread is said to colleagues as often as to restyle: no question then
    (and nothing remembered that a later "yes" could run); said to restyle, it asks."""
    chat.made("make the skirt red")
    assert chat.say("the skirt is too short", addressed=False) == []
    assert chat.say("navy was rejected by the buyer", addressed=False) == []
    assert chat.answer("yes") == T.NOTHING_PENDING
    (q,) = chat.say("the skirt is too short")
    assert isinstance(q, Question)
    (q,) = chat.say("hmm maybe velvet?", addressed=False)  # a hedged request in the thread is for restyle
    assert isinstance(q, Question)
