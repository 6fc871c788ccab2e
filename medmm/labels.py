"""The one ordered tuple of findings the default model predicts, and how each data source maps onto it.

Every source is relabelled onto ``FINDINGS`` as a float vector with ``nan`` for *unknown* (a missing label is
not a negative). Training uses the nan-mask; evaluation skips unknown entries.
"""

from __future__ import annotations

import math
import re

import numpy as np

FINDINGS: tuple[str, ...] = (
    "No Finding",
    "Pneumonia",
    "Bacterial pneumonia",
    "Viral pneumonia",
    "COVID-19",
)
FINDING_INDEX: dict[str, int] = {name: i for i, name in enumerate(FINDINGS)}
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
