"""The one ordered tuple of findings the default model predicts, and how each data source maps onto it.

Every source is relabelled onto ``FINDINGS`` as a float vector with ``nan`` for *unknown* (a missing label is
not a negative). Training uses the nan-mask; evaluation skips unknown entries.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Finding:
    """One row of the findings table: everything else (labels, output rule, metrics, report) derives from it."""

    name: str
    parent: str | None      # hierarchy: a child is a kind of its parent; siblings are mutually exclusive
    kind: str               # "normal" (no abnormality at all), "finding" or "subtype"
    report_name: str        # wording in a draft report


# The one table of findings (order = output order). "No Finding" is exclusive with every abnormality.
# Pneumonia's children are mutually exclusive aetiologies; COVID-19 is a viral pneumonia.
FINDINGS_TABLE: tuple[Finding, ...] = (
    Finding("No Finding", None, "normal", "no acute cardiopulmonary abnormality detected by the model"),
    Finding("Pneumonia", None, "finding", "pneumonia"),
    Finding("Bacterial pneumonia", "Pneumonia", "subtype", "bacterial pneumonia"),
    Finding("Viral pneumonia", "Pneumonia", "subtype", "viral pneumonia"),
    Finding("COVID-19", "Viral pneumonia", "subtype", "COVID-19 pneumonia"),
)
FINDINGS: tuple[str, ...] = tuple(f.name for f in FINDINGS_TABLE)
FINDING_INDEX: dict[str, int] = {name: i for i, name in enumerate(FINDINGS)}
_BY_NAME = {f.name: f for f in FINDINGS_TABLE}
NORMAL_FINDING = next(f.name for f in FINDINGS_TABLE if f.kind == "normal")


def ancestors(name: str) -> tuple[str, ...]:
    """``"COVID-19"`` -> ``("Viral pneumonia", "Pneumonia")`` (nearest first)."""
    out, parent = [], _BY_NAME[name].parent
    while parent is not None:
        out.append(parent)
        parent = _BY_NAME[parent].parent
    return tuple(out)


def children(name: str | None) -> tuple[str, ...]:
    return tuple(f.name for f in FINDINGS_TABLE if f.parent == name and f.kind != "normal")


def descendants(name: str) -> tuple[str, ...]:
    """Every finding below ``name`` in the hierarchy, in ``FINDINGS`` order (``"Pneumonia"`` -> its subtypes)."""
    return tuple(f for f in FINDINGS if name in ancestors(f))


def _leaf_states() -> tuple[tuple[str, np.ndarray], ...]:
    """Mutually exclusive states the model's softmax ranges over, each with the finding vector it implies.

    One state per node of the hierarchy "with none of its children" (e.g. "Pneumonia, other aetiology",
    "Viral pneumonia, not COVID-19") plus each leaf, plus "normal" and "abnormal, none of the modelled findings".
    """
    states: list[tuple[str, np.ndarray]] = []
    normal = np.zeros(len(FINDINGS), np.float32)
    normal[FINDING_INDEX[NORMAL_FINDING]] = 1
    states.append(("normal", normal))
    states.append(("other abnormality", np.zeros(len(FINDINGS), np.float32)))

    def visit(name: str) -> None:
        vec = np.zeros(len(FINDINGS), np.float32)
        for f in (name, *ancestors(name)):
            vec[FINDING_INDEX[f]] = 1
        kids = children(name)
        states.append((name if not kids else f"{name}, none of {', '.join(kids)}", vec))
        for k in kids:
            visit(k)

    for top in children(None):
        visit(top)
    return tuple(states)


LEAF_STATES = _leaf_states()
LEAF_NAMES: tuple[str, ...] = tuple(n for n, _ in LEAF_STATES)
LEAF_MATRIX: np.ndarray = np.stack([v for _, v in LEAF_STATES])   # [L, F]: finding f is present in state l


def allowed_states(labels: np.ndarray) -> np.ndarray:
    """``[..., F]`` labels (nan = unknown) -> ``[..., L]`` bool: states consistent with every known label."""
    labels = np.asarray(labels, np.float32)
    known = ~np.isnan(labels)[..., None, :]                       # [..., 1, F]
    agree = LEAF_MATRIX == np.nan_to_num(labels)[..., None, :]    # [..., L, F]
    return (agree | ~known).all(-1)


def marginals(state_probs: np.ndarray) -> np.ndarray:
    """``[..., L]`` state probabilities -> ``[..., F]`` finding probabilities (coherent by construction)."""
    return np.asarray(state_probs) @ LEAF_MATRIX


UNKNOWN = math.nan


def empty_labels() -> np.ndarray:
    """All-unknown label vector ``[len(FINDINGS)]``."""
    return np.full(len(FINDINGS), UNKNOWN, dtype=np.float32)


def labels_from_dict(values: dict[str, float | None]) -> np.ndarray:
    """Vector from ``{finding: 1/0/None}``; findings not named stay unknown. Unknown names raise."""
    out = empty_labels()
    for name, value in values.items():
        if name not in FINDING_INDEX:
            raise KeyError(f"unknown finding {name!r}; expected one of {FINDINGS}")
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            out[FINDING_INDEX[name]] = float(value)
    return out


# --- Kermany et al. 2018 (pediatric, pre-COVID): NORMAL / PNEUMONIA with bacteria|virus in the file name.
def kermany_labels(folder: str, filename: str) -> np.ndarray:
    """Kermany images: every finding is known (pediatric, collected before COVID-19)."""
    folder = folder.upper()
    if folder == "NORMAL":
        return labels_from_dict({"No Finding": 1, "Pneumonia": 0, "Bacterial pneumonia": 0,
                                 "Viral pneumonia": 0, "COVID-19": 0})
    if folder == "PNEUMONIA":
        name = filename.lower()
        bacterial = "bacteria" in name
        viral = "virus" in name
        return labels_from_dict({
            "No Finding": 0, "Pneumonia": 1, "COVID-19": 0,
            "Bacterial pneumonia": 1 if bacterial else (0 if viral else None),
            "Viral pneumonia": 1 if viral else (0 if bacterial else None),
        })
    raise ValueError(f"unexpected Kermany folder {folder!r}")


def kermany_patient_id(filename: str) -> str:
    """``person123_bacteria_456.jpeg`` -> ``person123``; ``IM-0115-0001.jpeg`` -> ``IM-0115``."""
    m = re.match(r"(person\d+)", filename) or re.match(r"(IM-\d+)", filename) or re.match(r"(NORMAL2-IM-\d+)", filename)
    if not m:
        raise ValueError(f"cannot parse a Kermany patient id from {filename!r}")
    return m.group(1)


# --- COVID-19 image data collection (Cohen et al.): `finding` names the pathogen or condition ("COVID-19",
# "Streptococcus", "Pneumocystis", "COVID-19, ARDS", "No Finding", "todo"); older releases use hierarchical
# strings such as "Pneumonia/Viral/COVID-19". Both are handled.
_VIRAL = {"covid-19", "sars", "mers", "influenza", "varicella", "herpes", "viral", "rsv", "h1n1"}
_BACTERIAL = {"streptococcus", "klebsiella", "legionella", "e.coli", "bacterial", "mycoplasma", "chlamydophila",
              "staphylococcus", "nocardia", "aspergillosis_bacterial", "mrsa"}
_OTHER_PNEUMONIA = {"pneumocystis", "lipoid", "fungal", "aspiration", "aspergillosis"}  # neither bacterial nor viral
_ALL_NEGATIVE = {"No Finding": 1, "Pneumonia": 0, "Bacterial pneumonia": 0, "Viral pneumonia": 0, "COVID-19": 0}


def covid_collection_labels(finding: str) -> np.ndarray:
    """Cohen collection: ``todo``/blank -> all unknown; otherwise only what the finding string implies is known."""
    text = (finding or "").strip()
    if not text or text.lower() == "todo":
        return empty_labels()
    terms = {t.strip().lower() for t in re.split(r"[/,]", text) if t.strip()}
    if terms == {"no finding"}:
        return labels_from_dict(_ALL_NEGATIVE)
    values: dict[str, float | None] = {"No Finding": 0}
    if "covid-19" in terms:
        values.update({"Pneumonia": 1, "Viral pneumonia": 1, "COVID-19": 1})
    elif terms & _VIRAL:
        values.update({"Pneumonia": 1, "Viral pneumonia": 1, "COVID-19": 0})
    elif terms & _BACTERIAL:
        values.update({"Pneumonia": 1, "Bacterial pneumonia": 1, "COVID-19": 0})
    elif terms & _OTHER_PNEUMONIA:
        values.update({"Pneumonia": 1, "Bacterial pneumonia": 0, "Viral pneumonia": 0, "COVID-19": 0})
    elif "pneumonia" in terms:
        values.update({"Pneumonia": 1})
    # anything else (ARDS alone, tuberculosis, ...): abnormal, nothing more is known
    return labels_from_dict(values)


# Terms that may describe pneumonia without naming it (or an unreadable image): pneumonia stays unknown.
_IU_PNEUMONIA_AMBIGUOUS = frozenset({
    "opacity", "airspace disease", "consolidation", "infiltrate", "lung", "pulmonary disease",
    "technical quality of image unsatisfactory", "markings", "density", "pulmonary atelectasis",
})


# --- Indiana University reports (notes only): MeSH terms such as "normal" or "Pneumonia/upper lobe/right".
def iu_report_labels(mesh: str) -> np.ndarray:
    """IU reports: ``normal`` -> No Finding; a Pneumonia MeSH term -> Pneumonia; COVID-19 is 0 (pre-2020)."""
    terms = [t.strip().lower() for t in (mesh or "").split(";") if t.strip()]
    if not terms:
        return empty_labels()
    heads = [t.split("/")[0].strip() for t in terms]
    if heads == ["normal"]:
        return labels_from_dict({"No Finding": 1, "Pneumonia": 0, "Bacterial pneumonia": 0,
                                 "Viral pneumonia": 0, "COVID-19": 0})
    values: dict[str, float | None] = {"No Finding": 0, "COVID-19": 0}
    if "pneumonia" in heads:
        values["Pneumonia"] = 1
    elif not _IU_PNEUMONIA_AMBIGUOUS.intersection(heads):
        values["Pneumonia"] = 0  # a structured abnormal report that does not list pneumonia
    return labels_from_dict(values)


# --- NIH ChestX-ray14 (adults, pre-2020): ``|``-separated labels, "No Finding" or any of 14 findings.
def _nih_terms(nih: str) -> dict[str, str]:
    """``{normalised term: term as written}`` of an NIH label list; normalised = lower case, spaces as ``_``
    (NIH writes ``No Finding`` but ``Pleural_Thickening``)."""
    return {t.strip().lower().replace(" ", "_"): t.strip() for t in (nih or "").split("|") if t.strip()}


def nih_labels(nih: str) -> np.ndarray:
    """No Finding -> normal (every finding known); Pneumonia -> Pneumonia 1, aetiology unknown; any other
    abnormality -> No Finding 0, Pneumonia unknown (report-mined labels miss pneumonia). COVID-19 is 0 for all
    (the archive predates 2020)."""
    terms = set(_nih_terms(nih))
    if not terms:
        return empty_labels()
    if terms == {"no_finding"}:
        return labels_from_dict(_ALL_NEGATIVE)
    values: dict[str, float | None] = {"No Finding": 0, "COVID-19": 0}
    if "pneumonia" in terms:
        values["Pneumonia"] = 1
    return labels_from_dict(values)
