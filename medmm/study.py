"""Checks across the scans of one request (no torch, no I/O): do they belong to one patient and one study?

The model pools every scan of a request as views of one study. Scans whose DICOM headers name different
patients or studies are compared through ``ScanMetadata.patient_key`` / ``study_key``: salted HMACs made by
``medmm.io`` while loading (the salt is random per process), so no identifier is ever read, shown or logged here.
Plain images carry no identifiers and are not compared.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

W_PATIENTS = ("The DICOM headers of these scans name {n} different patients, but the model combines all scans of a "
              "request as views of one study: check that they belong to the same patient, or analyse them "
              "separately.")
W_STUDIES = ("These scans come from {n} different DICOM studies (e.g. different dates) and are combined as one "
             "study: the output may mix time points; analyse them separately if that is not intended.")


def study_warnings(scans: Iterable[Any]) -> list[str]:
    """Warnings for scans (``Scan`` objects or their ``ScanMetadata``) of more than one patient or study."""
    metas = [getattr(s, "metadata", s) for s in scans]
    patients = {k for k in (getattr(m, "patient_key", None) for m in metas) if k}
    studies = {k for k in (getattr(m, "study_key", None) for m in metas) if k}
    if len(patients) > 1:
        return [W_PATIENTS.format(n=len(patients))]
    if len(studies) > 1:
        return [W_STUDIES.format(n=len(studies))]
    return []


__all__ = ["W_PATIENTS", "W_STUDIES", "study_warnings"]
