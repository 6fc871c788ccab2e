"""The evidence tables, read from the CSV files beside this module, each figure with where it came from.

``likelihood_ratios.csv`` has one row per concept x finding x population with the likelihood ratio for the concept's
presence (``lr_pos``) and absence (``lr_neg``), its source, the words of the source that carry the number, and ``use``
(``no`` rows document what was found and not used, and why). ``pretest.csv`` holds the pre-test probabilities a
notes-only request starts from. ``used_rows`` decides which rows apply to a population (its own, a concept reported
under another name, or for a child the adult figure, flagged).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from medmm.labels import FINDINGS


@dataclass(frozen=True)
class LikelihoodRow:
    concept: str
    finding: str
    population: str
    lr_pos: float | None
    lr_neg: float | None
    threshold: float | None
    cutoff: str
    use_flag: str            # "yes" | "no" | "blocked" (no figure, and the adult one must not stand in)
    source: str
    cite: str                # journal and year, as the draft's Indication quotes it (survives de-identification)
    quote: str
    url: str
    note: str

    @property
    def use(self) -> bool:
        return self.use_flag == "yes"


def _float(s: str) -> float | None:
    return float(s) if s and s.strip() else None


@lru_cache(maxsize=1)
def likelihood_table() -> tuple[LikelihoodRow, ...]:
    text = resources.files("medmm.notes").joinpath("likelihood_ratios.csv").read_text(encoding="utf-8")
    return tuple(LikelihoodRow(r["concept"], r["finding"], r["population"], _float(r["lr_pos"]), _float(r["lr_neg"]),
                               _float(r["threshold"]), r["cutoff"], r["use"].strip(), r["source"], r["cite"],
                               r["quote"], r["url"], r["note"])
                 for r in csv.DictReader(text.splitlines()))


@lru_cache(maxsize=1)
def pretest_table() -> dict[tuple[str, str], dict[str, Any]]:
    text = resources.files("medmm.notes").joinpath("pretest.csv").read_text(encoding="utf-8")
    return {(r["population"], r["finding"]): {"probability": float(r["probability"]), "source": r["source"],
                                             "quote": r["quote"], "url": r["url"]}
            for r in csv.DictReader(text.splitlines())}


# a concept a population's review reports under another name: (concept, population) -> (concept, how it is read)
STANDS_FOR: dict[tuple[str, str], tuple[str, str]] = {
    ("fever", "child"): ("temperature_high",
                         "a reported fever read as a temperature > 37.5 °C (the review's cut-off)"),
}


def used_rows(concept: str, finding: str, population: str) -> tuple[list[LikelihoodRow], str | None]:
    """Used rows for (concept, finding, population) and how they were reached: the population's own rows; else
    the concept its review reports under another name (``STANDS_FOR``); else, for a child, the adult rows, flagged
    (unless a child row says ``use=blocked``: the pediatric review found no association)."""
    rows = [r for r in likelihood_table() if r.concept == concept and r.finding == finding]
    own = [r for r in rows if r.population == population and r.use]
    if own:
        return own, None
    if (concept, population) in STANDS_FOR:
        other, how = STANDS_FOR[(concept, population)]
        found, flag = used_rows(other, finding, population)
        if found:
            return found, "; ".join(x for x in (how, flag) if x)
    blocked = any(r.population == population and r.use_flag == "blocked" for r in rows)
    if population == "child" and not blocked:
        adult = [r for r in rows if r.population == "adult" and r.use]
        if adult:
            return adult, "adult figure: no pediatric figure was found"
    return [], None


def findings_with_evidence(concept: str) -> list[str]:
    return [f for f in FINDINGS if any(r.concept == concept and r.finding == f for r in likelihood_table())]


def table_markdown() -> str:
    """The likelihood-ratio table as MODEL_CARD shows it (a test keeps the card equal to this): every row used,
    with its source; rows found and not used are listed after it with the reason."""
    def num(v: float | None) -> str:
        return "–" if v is None else f"{v:g}"

    rows = ["| concept | finding | population | LR+ | LR− | cut-off | source |", "|---|---|---|---|---|---|---|"]
    rows += [f"| {r.concept} | {r.finding} | {r.population} | {num(r.lr_pos)} | {num(r.lr_neg)} | "
             f"{r.cutoff or '–'} | {r.source} |" for r in likelihood_table() if r.use]
    rows += ["", "Found and not used (`use` = no / blocked in `medmm/notes/likelihood_ratios.csv`):", ""]
    rows += [f"- {r.concept} / {r.finding} / {r.population}: {r.note.split('. ')[0].rstrip('.')}."
             for r in likelihood_table() if not r.use]
    return "\n".join(rows)
