"""Correlated concepts are not multiplied blindly: concepts grouped into families, only the strongest raising and the
strongest lowering concept of a family counted, and the clinical total capped (tests added outside the cap)."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING

from medmm.labels import FINDINGS

if TYPE_CHECKING:
    from medmm.notes.evidence import Evidence

CLINICAL_CAP = math.log(10.0)

# family -> concepts; the strongest raising and the strongest lowering concept of a family count
FAMILIES: dict[str, tuple[str, ...]] = {
    "fever": ("fever", "temperature_high"),
    "systemic": ("chills", "myalgia"),
    "respiratory history": ("cough", "productive_cough", "dyspnea", "chest_pain", "sore_throat", "rhinorrhea"),
    # temperature, respiratory and heart rate: the three Marchello's "normal vital signs" rule combines
    "vital signs": ("tachypnea", "tachycardia", "normal_vital_signs", "normal_vitals_and_lung_exam"),
    "oxygenation": ("hypoxemia",),
    "chest examination": ("crackles", "decreased_breath_sounds", "dullness_percussion", "egophony",
                          "bronchial_breath_sounds", "increased_work_of_breathing", "normal_vitals_and_lung_exam"),
    "smell and taste": ("anosmia",),
    "laboratory": ("crp_high", "procalcitonin_high"),
    "SARS-CoV-2 test": ("sars_cov_2_test", "sars_cov_2_antigen", "sars_cov_2_pcr"),
    "influenza test": ("influenza_test",),
}
TEST_FAMILIES = ("SARS-CoV-2 test", "influenza test")
TEST_CONCEPTS = frozenset(k for f in TEST_FAMILIES for k in FAMILIES[f])
_FAMILY_OF: dict[str, list[str]] = {}
for _fam, _keys in FAMILIES.items():
    for _k in _keys:
        _FAMILY_OF.setdefault(_k, []).append(_fam)


def apply_families(items: list[Evidence]) -> tuple[list[Evidence], dict[str, float], tuple[str, ...]]:
    """Per finding and family, only the strongest raising and strongest lowering item counts; the clinical
    families' total is capped at +-CLINICAL_CAP; tests are added outside the cap."""
    out = list(items)
    log_lr: dict[str, float] = {}
    capped: list[str] = []
    for finding in FINDINGS:
        idx = [i for i, e in enumerate(out) if e.used and e.finding == finding]
        if not idx:
            continue
        # the combined normal-vitals-and-chest rule replaces its parts
        if any(out[i].concept == "normal_vitals_and_lung_exam" for i in idx):
            for i in idx:
                if out[i].concept in ("normal_vital_signs", "crackles") and out[i].lr_kind in ("LR+", "LR-") \
                        and out[i].lr < 1:
                    out[i] = replace(out[i], counted=False, reason="counted in the combined normal-vital-signs "
                                                                   "and normal-chest rule")
        for family, keys in FAMILIES.items():
            members = [i for i in idx if out[i].counted and out[i].concept in keys]
            for sign in (1, -1):
                side = [i for i in members if sign * math.log(out[i].lr) > 0]
                if not side:
                    continue
                best = max(side, key=lambda i: sign * math.log(out[i].lr))
                for i in side:
                    if i != best:
                        out[i] = replace(out[i], counted=False,
                                         reason=f"counted once with {out[best].name} (same family: {family})")
        clinical = tests = 0.0
        for i in idx:
            if out[i].counted:
                if any(f in TEST_FAMILIES for f in _FAMILY_OF.get(out[i].concept, [])):
                    tests += math.log(out[i].lr)
                else:
                    clinical += math.log(out[i].lr)
        if abs(clinical) > CLINICAL_CAP:
            capped.append(finding)
            clinical = math.copysign(CLINICAL_CAP, clinical)
        log_lr[finding] = clinical + tests
    return out, log_lr, tuple(capped)
