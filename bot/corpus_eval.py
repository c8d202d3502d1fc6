"""Score the intent parser on a labelled corpus: ``python -m bot.corpus_eval [CORPUS.json] [--misses]``.

A case is right when every key of its ``expect`` matches (``attributes_include``/``negatives_include``: those must
be among the intent's attributes/negatives).  A case *acts unasked* when the parser would generate pictures or
switch the base picture although the label says it should not (or says it should ask first).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

from bot.intent import GENERATING_ACTIONS, Context, Intent, parse

DEFAULT = Path(__file__).with_name("data") / "designer_corpus.json"
ACTS = GENERATING_ACTIONS | {"use", "reset", "undo", "upscale", "background"}  # what spends GPU time or moves the base


def context(raw: dict | None) -> Context | None:
    if not raw:
        return None
    if raw.get("garments"):
        return Context.of(raw["garments"], raw.get("per_garment", {}))
    return Context(garment=raw.get("garment"), target=raw.get("target"), attributes=tuple(raw.get("attributes", ())))


def wrong(expect: dict, intent: Intent) -> dict:
    got = intent.to_dict()
    out = {}
    for key, want in expect.items():
        if key == "attributes_include":
            have = set(got["attributes"]) | {a for way in got["colourways"] for a in way.split(" & ")}
            have |= {a.split()[-1] for a in have if " " in a}  # "soft grey" gives "grey"
            missing = [a for a in want if a not in have]
            if missing:
                out[key] = {"missing": missing, "got": got["attributes"]}
        elif key == "negatives_include":
            missing = [a for a in want if a not in got["negatives"]]
            if missing:
                out[key] = {"missing": missing, "got": got["negatives"]}
        elif got.get(key) != want:
            out[key] = {"expected": want, "got": got.get(key)}
    return out


def acts_unasked(expect: dict, intent: Intent) -> bool:
    """Would restyle generate or switch the base where the label says it should not (or should ask first)?"""
    acts = intent.action in ACTS and not intent.ambiguous
    should = expect["action"] in ACTS and not expect.get("ambiguous", False)
    if not acts:
        return False
    return not should or (expect["action"] == "use") != (intent.action == "use")


def score(cases: list[dict]) -> dict:
    by_cat: dict[str, Counter] = defaultdict(Counter)
    misses, unasked = [], []
    for case in cases:
        intent = parse(case["text"], context(case.get("context")))
        bad = wrong(case["expect"], intent)
        cat = case.get("category", "?")
        by_cat[cat]["n"] += 1
        by_cat[cat]["right"] += not bad
        if bad:
            misses.append((case, bad))
        if acts_unasked(case["expect"], intent):
            unasked.append(case)
    n = len(cases)
    right = sum(c["right"] for c in by_cat.values())
    return {"n": n, "right": right, "accuracy": right / n if n else 0.0, "unasked": len(unasked),
            "unasked_rate": len(unasked) / n if n else 0.0,
            "by_category": {k: {"n": v["n"], "right": v["right"]} for k, v in sorted(by_cat.items())},
            "misses": misses, "unasked_cases": unasked}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bot.corpus_eval", description=__doc__.splitlines()[0])
    ap.add_argument("corpus", nargs="?", default=str(DEFAULT))
    ap.add_argument("--misses", action="store_true", help="print every miss")
    args = ap.parse_args(argv)
    res = score(json.loads(Path(args.corpus).read_text(encoding="utf-8")))
    print(f"{res['right']}/{res['n']} right ({res['accuracy']:.1%}); acts unasked: {res['unasked']} "
          f"({res['unasked_rate']:.1%})")
    for cat, c in res["by_category"].items():
        print(f"  {cat:28} {c['right']:3}/{c['n']:3}  {c['right'] / c['n']:.0%}")
    if args.misses:
        for case, bad in res["misses"]:
            print(f"MISS {case['text']!r} ctx={case.get('context')} {json.dumps(bad)}", file=sys.stderr)
        for case in res["unasked_cases"]:
            print(f"UNASKED {case['text']!r} {case['expect']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
