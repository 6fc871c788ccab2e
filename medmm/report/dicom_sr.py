"""A drafted ``Report`` as a DICOM Basic Text SR (UNVERIFIED, PARTIAL): no identifiers, every text scrubbed."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any, BinaryIO

from medmm import __version__
from medmm.prediction import Prediction
from medmm.report.deid import DEID_METHOD, scrub_identifiers
from medmm.report.draft import Report

BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
# clinician sections beyond Indication / Findings / Impression -> DCM heading (DICOM CID 7001); others: Comment
_SR_HEADING = {"recommendation": ("121074", "DCM", "Recommendations"),
               "technique": ("121064", "DCM", "Current Procedure Descriptions"),
               "comparison": ("121066", "DCM", "Prior Procedure Descriptions")}


def _code(ds_cls: Any, value: str, scheme: str, meaning: str) -> Any:
    item = ds_cls()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def to_dicom_sr(report: Report, prediction: Prediction, path_or_buffer: str | Path | BinaryIO) -> Any:
    """Write ``report`` as a DICOM Basic Text SR (UNVERIFIED, PARTIAL) and return the pydicom Dataset.

    The Patient module is written with empty values and no input identifiers are copied (the indication, the
    only notes-derived text, is scrubbed again here in case an edit re-introduced identifiers). Fresh UIDs every
    call; Explicit VR Little Endian file meta.
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence
    from pydicom.uid import generate_uid

    now = _dt.datetime.now(_dt.timezone.utc)
    sop_uid = generate_uid()
    ds = Dataset()
    ds.file_meta = _file_meta(sop_uid)
    _header(ds, sop_uid, now.strftime("%Y%m%d"), now.strftime("%H%M%S"), prediction.checkpoint or {})
    # SR Document Content: CONTAINER root with TEXT children
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = DicomSequence([_code(Dataset, "18748-4", "LN", "Diagnostic Imaging Report")])
    ds.ContinuityOfContent = "SEPARATE"
    ds.ContentSequence = DicomSequence(_content_items(report))
    ds.save_as(path_or_buffer, enforce_file_format=True)
    return ds


def _file_meta(sop_uid: str) -> Any:
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = BASIC_TEXT_SR
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"MEDMM_{__version__}"[:16]
    return meta


def _header(ds: Any, sop_uid: str, date: str, time: str, ckpt: dict) -> None:
    """SOP Common, Patient (deliberately empty), General Study, SR Document Series, General Equipment and SR
    Document General modules."""
    from pydicom.sequence import Sequence as DicomSequence
    from pydicom.uid import generate_uid

    # SOP Common
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = BASIC_TEXT_SR
    ds.SOPInstanceUID = sop_uid
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    ds.TimezoneOffsetFromUTC = "+0000"
    # Patient (Type 2, deliberately empty)
    ds.PatientName = ""
    ds.PatientID = ""
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    # YES: no header identifier is copied and every TEXT item is scrubbed; the method says how and how well (rules +
    # lexicon, no NER; its held-out recall), because free-text scrubbing is not perfect (docs/privacy.md)
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = DEID_METHOD
    # General Study
    ds.StudyInstanceUID = generate_uid()
    ds.StudyDate = ""
    ds.StudyTime = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = ""
    ds.AccessionNumber = ""
    # SR Document Series
    ds.Modality = "SR"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 1
    ds.SeriesDescription = "medmm machine draft report"
    ds.ReferencedPerformedProcedureStepSequence = DicomSequence([])
    # General Equipment
    ds.Manufacturer = "medmm"
    ds.ManufacturerModelName = "medmm decision-support demo"
    versions = [f"medmm {__version__}"]
    if ckpt.get("version"):
        versions.append(f"checkpoint {ckpt.get('name', 'medmm')} {ckpt['version']}")
    ds.SoftwareVersions = versions if len(versions) > 1 else versions[0]
    # SR Document General
    ds.InstanceNumber = 1
    ds.CompletionFlag = "PARTIAL"
    ds.CompletionFlagDescription = "Machine-generated draft; requires clinician review"
    ds.VerificationFlag = "UNVERIFIED"
    ds.PreliminaryFlag = "PRELIMINARY"
    ds.ContentDate, ds.ContentTime = date, time
    ds.PerformedProcedureCodeSequence = DicomSequence([])


def _content_items(report: Report) -> list[Any]:
    """The TEXT items: indication, findings, impression, every clinician section, disclaimer, warnings, outputs -
    each scrubbed of identifiers (clinician edits included)."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    def text_item(code: tuple[str, str, str], value: str) -> Dataset:
        item = Dataset()
        item.RelationshipType = "CONTAINS"
        item.ValueType = "TEXT"
        item.ConceptNameCodeSequence = DicomSequence([_code(Dataset, *code)])
        item.TextValue = scrub_identifiers(value)   # every text, clinician edits included (medmm.report.deid)
        return item

    def called(m: dict) -> str:   # the same words as the app's table (medmm.calls)
        if m.get("called"):
            return f"called, {m['band']}"
        return f"not called, {m['band']}" + (f": {m['reason']}" if m.get("reason") else "")

    outputs = "; ".join(f"{m['finding']} {m['probability']:.2f} (threshold {m['threshold']:.2f}, {called(m)})"
                        for m in report.model_outputs)
    items = [
        # scrubbed again: an edited report's indication may have had identifiers typed back in
        text_item(("121109", "DCM", "Indications for Procedure"), scrub_identifiers(report.indication)),
        text_item(("121070", "DCM", "Findings"), report.findings),
        text_item(("121072", "DCM", "Impressions"), report.impression),
    ]
    for name, text in report.other_sections:   # every clinician section, in order (CID 7001 headings)
        code = _SR_HEADING.get(name.split()[0].rstrip("s") if name.split() else "")
        items.append(text_item(code, text) if code else
                     text_item(("121106", "DCM", "Comment"), f"{name.capitalize()}: {text}"))
    items.append(text_item(("121106", "DCM", "Comment"), report.disclaimer))
    if report.warnings:
        items.append(text_item(("121106", "DCM", "Comment"), "Model warnings: " + " ".join(report.warnings)))
    if outputs:
        items.append(text_item(("121106", "DCM", "Comment"), f"Model outputs: {outputs}."))
    return items


__all__ = ["BASIC_TEXT_SR", "to_dicom_sr"]
