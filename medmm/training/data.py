"""Data sources relabelled onto FINDINGS, and patient-grouped, label-stratified folds.

Each ``Record`` is one training example: an image path and/or notes, a label vector with nan for unknown,
and a patient group. Sources: Kermany pediatric images, the COVID-19 image collection (images + notes),
IU reports (notes only), or a user manifest CSV (``image``, ``notes``, ``patient_id``, one column per finding
with 1/0/blank).
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medmm.labels import (FINDINGS, covid_collection_labels, iu_report_labels, kermany_labels, kermany_patient_id,
                          labels_from_dict, nih_labels)
from medmm.sources import IMAGE_SOURCES, site

log = logging.getLogger(__name__)

SHARED_DATA = Path(os.environ.get("MEDMM_SHARED_DATA") or Path(__file__).resolve().parents[3] / "shared" / "data")


@dataclass
class Record:
    source: str
    patient_id: str              # prefixed with the source, so ids never collide across sources
    image: str | None
    notes: str | None
    labels: np.ndarray           # [len(FINDINGS)] float, nan = unknown
    weight: float = 1.0          # loss weight (de-confounding; see nih_records)
    view: str | None = None      # AP / PA where the source says

    @property
    def group_label(self) -> str:
        """Coarse label used to stratify folds."""
        known = [f for f, v in zip(FINDINGS, self.labels) if v == 1]
        return f"{self.source}:{known[-1] if known else 'unknown'}"


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def kermany_records(root: Path = SHARED_DATA / "kermany224") -> list[Record]:
    """Kermany train split, exact duplicates removed (first file of each duplicate group kept)."""
    records, seen = [], set()
    n_dupes = 0
    for folder in ("NORMAL", "PNEUMONIA"):
        for path in sorted((root / "train" / folder).glob("*.jpeg")):
            digest = _md5(path)
            if digest in seen:
                n_dupes += 1
                continue
            seen.add(digest)
            records.append(Record("kermany", "kermany:" + kermany_patient_id(path.name), str(path), None,
                                  kermany_labels(folder, path.name)))
    log.info("kermany: %d images (%d exact duplicates dropped)", len(records), n_dupes)
    return records


def covid_records(root: Path = SHARED_DATA / "covid_notes") -> list[Record]:
    """COVID-19 image collection: X-ray rows with their clinical notes (when present); ``todo`` rows unlabelled."""
    records = []
    with open(root / "metadata.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            path = root / "images" / row["image"]
            if not path.is_file():
                continue
            notes = (row.get("clinical_notes") or "").strip() or None
            labels = covid_collection_labels(row["finding"])
            if np.isnan(labels).all():
                continue
            records.append(Record("covid", "covid:" + row["patientid"], str(path), notes, labels))
    return records


def iu_records(root: Path = SHARED_DATA / "iu_reports") -> list[Record]:
    """IU reports as notes-only examples: the indication text with labels from MeSH."""
    records = []
    with open(root / "indiana_reports.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            notes = (row.get("indication") or "").replace("XXXX", " ").strip()
            notes = " ".join(notes.split())
            labels = iu_report_labels(row.get("MeSH", ""))
            if len(notes) < 3 or np.isnan(labels).all():
                continue
            records.append(Record("iu", "iu:" + row["uid"], None, notes, labels))
    return records


def nih_records(root: Path = SHARED_DATA / "nih_adult", source: str = "nih") -> list[Record]:
    """NIH ChestX-ray14 films (``nih_adult`` or ``nih_sample``), relabelled by ``labels.nih_labels``.

    ``nih_adult`` is confounded twice: its normals are mostly AP and all come from one period of the archive
    (patients 1280-3970), its pneumonias are mostly PA and span the archive. Loss weights make view and period
    carry no information about the label inside the source: every (label, view) cell gets the same total weight,
    and pneumonias from outside the normals' period get weight 0 (no normal film shares their period, so all they
    could teach is "this period means pneumonia"; measured: with them at half weight the model scored NIH normals
    from the normals' period far more normal than normals from across the archive). They stay in the evaluation.
    """
    records = []
    with open(root / "metadata.csv", newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if (root / "images" / r["image"]).is_file()]
    for row in rows:
        records.append(Record(source, f"nih:{row['patient_id']}", str(root / "images" / row["image"]), None,
                              nih_labels(row["nih_labels"]), view=row.get("view") or None))
    if source == "nih":
        normal_ids = [int(r["patient_id"]) for r in rows if r["nih_labels"] == "No Finding"]
        lo, hi = (min(normal_ids), max(normal_ids)) if normal_ids else (0, -1)

        def cell(rec: Record, row: dict) -> tuple:
            normal = row["nih_labels"] == "No Finding"
            return normal, rec.view, lo <= int(row["patient_id"]) <= hi

        counts = Counter(cell(rec, row) for rec, row in zip(records, rows))
        for rec, row in zip(records, rows):
            normal, view, in_period = cell(rec, row)
            rec.weight = 1.0 / counts[(normal, view, in_period)] if (normal or in_period) else 0.0
        scale = len(records) / sum(r.weight for r in records)
        for rec in records:
            rec.weight *= scale
    return records


def manifest_records(path: str | Path) -> list[Record]:
    """User manifest CSV: ``image`` (path, relative to the CSV allowed), ``notes``, ``patient_id`` and one column
    per finding (1 / 0 / blank = unknown)."""
    path = Path(path)
    records = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not ({"image", "notes"} & set(reader.fieldnames)):
            raise ValueError(f"{path}: a manifest needs an 'image' and/or 'notes' column")
        for i, row in enumerate(reader):
            image = (row.get("image") or "").strip() or None
            if image and not Path(image).is_absolute():
                image = str((path.parent / image).resolve())
            notes = (row.get("notes") or "").strip() or None
            values = {}
            for finding in FINDINGS:
                raw = (row.get(finding) or "").strip()
                values[finding] = None if raw == "" else float(raw)
            pid = (row.get("patient_id") or "").strip() or f"row{i}"
            records.append(Record("manifest", "manifest:" + pid, image, notes, labels_from_dict(values)))
    return records


def load_records(sources: tuple[str, ...], manifest: str | None = None, limit_per_source: int | None = None,
                 seed: int = 0) -> list[Record]:
    """Records of the named sources (``kermany``, ``covid``, ``iu``, ``nih``, ``nih_sample``) plus a manifest."""
    loaders = {"kermany": kermany_records, "covid": covid_records, "iu": iu_records, "nih": nih_records,
               "nih_sample": lambda: nih_records(SHARED_DATA / "nih_sample", "nih_sample")}
    records: list[Record] = []
    rng = np.random.default_rng(seed)
    for name in sources:
        if name not in loaders:
            raise ValueError(f"unknown source {name!r}; choose from {sorted(loaders)}")
        recs = loaders[name]()
        if limit_per_source is not None and len(recs) > limit_per_source:
            recs = [recs[i] for i in sorted(rng.choice(len(recs), limit_per_source, replace=False))]
        records += recs
    if manifest:
        records += manifest_records(manifest)
    return records


def patient_folds(records: list[Record], k: int, seed: int = 0) -> np.ndarray:
    """Fold index per record: patient-grouped (no patient in two folds), stratified by source and label."""
    from sklearn.model_selection import StratifiedGroupKFold

    groups = np.array([r.patient_id for r in records])
    strata = np.array([r.group_label for r in records])
    folds = np.full(len(records), -1, dtype=np.int64)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    for fold, (_, val) in enumerate(splitter.split(np.zeros(len(records)), strata, groups)):
        folds[val] = fold
    return folds




def leave_one_source_out(records: list[Record], sources: tuple[str, ...] = IMAGE_SOURCES) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``[(site, train_idx, test_idx)]``: train on every other site, test on this one's image sources.

    Both NIH sets are one hospital, left out together; no patient is ever on both sides.
    """
    src = np.array([r.source for r in records])
    sites = np.array([site(s) for s in src])
    out = []
    for name in dict.fromkeys(site(s) for s in sources):
        test = np.where((sites == name) & np.isin(src, sources))[0]
        if len(test):
            out.append((name, np.where(sites != name)[0], test))
    return out


def label_matrix(records: list[Record]) -> np.ndarray:
    return np.stack([r.labels for r in records]) if records else np.zeros((0, len(FINDINGS)), np.float32)


__all__ = ["Record", "load_records", "patient_folds", "label_matrix", "manifest_records", "leave_one_source_out",
           "IMAGE_SOURCES", "SHARED_DATA"]
