"""Tests for medmm.report.labeler and medmm.report: labeller, PHI scrubbing, drafting, consistency, exports, DICOM SR.

Fast (no torch, no text encoder): the shipped bank in assets/ carries its embeddings; a synthetic bank with
random unit vectors stands in where embeddings must be controlled.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medmm.report.labeler import binary_labels, find_mentions, label_sentence, label_text, split_sentences
from medmm.labels import FINDINGS
from medmm.prediction import Prediction
from medmm.report import (BASIC_TEXT_SR, DEFAULT_BANK_PATH, DISCLAIMER, MODELLED_CONCEPTS, NOT_PROVIDED,
                          T_NOT_ASSESSED, SentenceBank, apply_edits, build_bank, check_consistency,
                          clean_bank_sentence, clean_indication, draft_report, load_bank, report_sections,
                          scrub_identifiers, to_dicom_sr)
from tests.helpers import require_shared

P, N, U = "positive", "negative", "uncertain"


def make_prediction(probs: dict[str, float] | tuple[float, ...], thresholds: float | dict[str, float] = 0.5,
                    modalities: tuple[str, ...] = ("image", "notes"), emb: np.ndarray | None = None,
                    checkpoint: dict | None = None) -> Prediction:
    if not isinstance(probs, dict):
        probs = dict(zip(FINDINGS, probs))
    if not isinstance(thresholds, dict):
        thresholds = {f: float(thresholds) for f in FINDINGS}
    return Prediction(findings=probs, thresholds=thresholds,
                      positive=tuple(f for f in FINDINGS if probs[f] >= thresholds[f]), modalities=modalities,
                      notes_embedding=emb, checkpoint=checkpoint or {})


NORMAL = (0.95, 0.03, 0.02, 0.02, 0.01)
PNEUMONIA = (0.05, 0.93, 0.85, 0.1, 0.05)


@pytest.fixture(scope="module")
def shipped_bank() -> SentenceBank:
    if not DEFAULT_BANK_PATH.exists():
        pytest.skip("assets/sentence_bank.npz not built (python scripts/build_sentence_bank.py)")
    return load_bank(DEFAULT_BANK_PATH)


SYNTHETIC_SENTENCES = (
    "No acute cardiopulmonary abnormality.", "The lungs are clear.", "Heart size is normal.",
    "No pneumothorax or pleural effusion.", "No focal consolidation.",
    "There is no focal air space opacity to suggest a pneumonia.", "Normal chest x-ray.",
    "The mediastinum is unremarkable.",
)


def synthetic_bank(seed: int = 0) -> SentenceBank:
    rng = np.random.default_rng(seed)
    n = len(SYNTHETIC_SENTENCES)
    imp = np.array([1 if s.startswith(("No acute", "Normal chest")) else 0 for s in SYNTHETIC_SENTENCES]) * 10
    return SentenceBank(SYNTHETIC_SENTENCES, np.full(n, 10), imp, rng.normal(size=(n, 384)), {"synthetic": True})


# ------------------------------------------------------------------------------------------ labeller
LABELLER_CASES = [
    ("No acute cardiopulmonary abnormality.", {"No Finding": P, "Pneumonia": N}),
    ("The lungs are clear.", {"No Finding": P, "Pneumonia": N}),
    ("There is no focal air space opacity to suggest a pneumonia.", {"Pneumonia": N}),
    ("No pneumonia, effusions, edema, pneumothorax, adenopathy, nodules or masses.", {"Pneumonia": N}),
    ("The lungs are free of focal airspace disease.", {"Pneumonia": N}),
    ("Lungs are clear without focal consolidation, effusion, or pneumothorax.", {"No Finding": P, "Pneumonia": N}),
    ("Negative for focal pulmonary consolidation, pleural effusion, or pneumothorax.", {"Pneumonia": N}),
    ("Right lower lobe pneumonia.", {"Pneumonia": P}),
    ("XXXX patchy right lower lobe infiltrate consistent with pneumonia.", {"Pneumonia": P}),
    ("Vague patchy opacity in the right midlung which may represent early pneumonia.",
     {"Pneumonia": U, "No Finding": N}),
    ("Streaky opacities in the right lower lobe, atelectasis versus infiltrate.", {"Pneumonia": U}),
    ("Superimposed infection cannot be entirely excluded.", {"Pneumonia": U}),
    ("This could represent pneumonia or a tumor.", {"Pneumonia": U}),
    ("Left basilar opacity, suspicious for pneumonia.", {"Pneumonia": U, "No Finding": N}),
    ("Cannot exclude early pneumonia.", {"Pneumonia": U}),
    ("Previously seen right lower lobe pneumonia has resolved.", {"Pneumonia": N}),
    ("Interval resolution of the left lower lobe consolidation.", {"Pneumonia": N}),
    ("No focal consolidation, but there is a small right pleural effusion.", {"Pneumonia": N, "No Finding": N}),
    ("No pneumothorax; however, patchy airspace disease is present at the left base.", {"Pneumonia": P}),
    ("No effusion, which may represent early consolidation.", {"Pneumonia": U}),
    ("Evidence of previous granulomatous infection.", {}),
    ("History of pneumonia.", {}),
    ("No change in right lower lobe pneumonia.", {"Pneumonia": P}),
    ("Findings consistent with bacterial pneumonia.", {"Bacterial pneumonia": P}),
    ("Pattern consistent with COVID-19 pneumonia.", {"COVID-19": P}),
    ("No specific features of viral pneumonia.", {"Viral pneumonia": N}),
    ("Heart size is normal.", {}),
    ("No acute bony abnormality.", {}),
    ("Visualized osseous structures of the thorax are without acute abnormality.", {}),
    ("Mild cardiomegaly.", {"No Finding": N}),
    ("Normal chest x-XXXX.", {"No Finding": P, "Pneumonia": N}),
    ("Rule out pneumonia.", {"Pneumonia": U}),
]


@pytest.mark.parametrize("sentence,expected", LABELLER_CASES)
def test_labeller_assertion_status(sentence: str, expected: dict[str, str]) -> None:
    assert label_sentence(sentence) == expected


def test_labeller_scope_and_mentions() -> None:
    mentions = {m.concept: m for m in find_mentions("The lungs are clear of focal airspace disease, pneumothorax, "
                                                    "or pleural effusion.")}
    assert mentions["lungs_clear"].status == P
    assert mentions["consolidation"].status == N and mentions["consolidation"].trigger == "clear of"
    assert {m.concept: m.status for m in find_mentions("No effusion but there is consolidation.")} == {
        "pleural_effusion": N, "consolidation": P}
    # the longest match wins: "bacterial pneumonia" is not also a bare "pneumonia" mention
    assert [m.concept for m in find_mentions("bacterial pneumonia")] == ["bacterial_pneumonia"]
    assert label_sentence("") == {} and find_mentions("") == []


def test_split_sentences_and_text_labels() -> None:
    text = "1. Bullous emphysema. 2. Probably scarring in the left apex.There are opacities. Dr. Smith saw it."
    assert split_sentences(text) == ["Bullous emphysema.", "Probably scarring in the left apex.",
                                     "There are opacities.", "Dr. Smith saw it."]
    assert label_text("No pneumonia. Right lower lobe pneumonia.") == {"Pneumonia": P}  # positive wins
    assert binary_labels("No acute cardiopulmonary abnormality. Mild cardiomegaly.")["No Finding"] == 0
    assert binary_labels("The lungs are clear.") == {f: int(f == "No Finding") for f in FINDINGS}
    assert binary_labels("Pattern consistent with COVID-19 pneumonia.")["Pneumonia"] == 1


# ------------------------------------------------------------------------------------------ PHI scrubbing
PHI_CASES = [
    ("Mr. John Smith with cough.", ["John", "Smith"], "Mr. [NAME] with cough."),
    ("Seen by Dr. A. Patel; f/u with dr jones.", ["Patel", "jones"], None),
    ("Patient name: Jane Q. Doe, fever.", ["Jane", "Doe"], None),
    ("Admitted 03/14/2021, CT on 2021-03-14 and March 14, 2021; DOB 1-2-1950.",
     ["03/14/2021", "2021-03-14", "March 14", "1950"], None),
    ("MRN: 12345678, accession A987654321, ref 7654321.", ["12345678", "987654321", "7654321"], None),
    ("Call (317) 555-1234 or 317.555.1234.", ["555-1234", "555.1234"], "Call [PHONE] or [PHONE]."),
    ("Contact jane.doe@example.org today.", ["jane.doe", "example.org"], "Contact [EMAIL] today."),
    ("94-year-old female, age 101, 92 yo.", ["94", "101", "92 yo"], "90 or older female, age 90 or older, 90 or older."),
    ("XXXX-year-old XXXX with chest pain.", ["XXXX"], "[REDACTED]-year-old [REDACTED] with chest pain."),
]


@pytest.mark.parametrize("text,forbidden,expected", PHI_CASES)
def test_scrub_identifiers(text: str, forbidden: list[str], expected: str | None) -> None:
    out = scrub_identifiers(text)
    for token in forbidden:
        assert token not in out, (token, out)
    if expected is not None:
        assert out == expected


def test_scrub_keeps_clinical_content() -> None:
    text = "67-year-old male, hx MS and COPD, BP 120/80, SpO2 92%, T 38.5, WBC 14.2, cough x3 days"
    assert scrub_identifiers(text) == text


def test_clean_indication_empty_long_and_control_chars() -> None:
    assert clean_indication(None) == NOT_PROVIDED
    assert clean_indication("  \n\t\x00 ") == NOT_PROVIDED
    assert clean_indication("cough\x00 and\u202e fever\n\nr/o   pneumonia") == "cough and fever r/o pneumonia"
    start = time.perf_counter()
    out = clean_indication("Mr Smith MRN 12345678 " + "cough " * 200_000)  # ~1.2 MB
    assert time.perf_counter() - start < 1.0
    assert len(out) <= 1000 + len(" [truncated]") and out.endswith("[truncated]")
    assert "Smith" not in out and "12345678" not in out


# ------------------------------------------------------------------------------------------ drafting
def test_draft_normal_and_pneumonia(shipped_bank: SentenceBank) -> None:
    normal = draft_report(make_prediction(NORMAL), "Chest pain", shipped_bank)
    assert label_text(normal.impression).get("No Finding") == P
    assert normal.sentences[0].source == "retrieved" and label_text(normal.sentences[0].text) == {"Pneumonia": N}
    assert normal.disclaimer == DISCLAIMER and DISCLAIMER in normal.to_text()
    # a normal film: nothing about the heart or pleura is asserted, it is said not to be assessed
    for claim in ("heart size", "pneumothorax", "effusion", "lungs are clear", "cardiopulmonary"):
        assert claim not in normal.to_text().lower(), claim
    assert T_NOT_ASSESSED in normal.findings and "not assessed by this model" in normal.findings

    pneu = draft_report(make_prediction(PNEUMONIA), "fever, cough", shipped_bank)
    labels = label_text(pneu.findings + " " + pneu.impression)
    assert labels["Pneumonia"] == P and labels["Bacterial pneumonia"] == P
    assert labels.get("Viral pneumonia") == N and "No Finding" not in labels
    assert "(model probability 0.93)" in pneu.impression
    # no unmodelled anatomy is described when the model does not predict a normal study
    assert not any(m.concept in ("normal_heart", "pleural_effusion", "pneumothorax")
                   for s in pneu.sentences for m in find_mentions(s.text))


def test_draft_says_not_called_when_a_high_probability_is_under_its_threshold(shipped_bank: SentenceBank) -> None:
    """Pneumonia at 0.96 under a 0.98 operating threshold (the child example with its notes): the draft says it is
    not called and why, never "no radiographic evidence of pneumonia" or a retrieved "no pneumonia" sentence."""
    thresholds = {"No Finding": 0.83, "Pneumonia": 0.984, "Bacterial pneumonia": 0.41, "Viral pneumonia": 0.11,
                  "COVID-19": 0.52}
    pred = make_prediction((0.02, 0.962, 0.49, 0.35, 0.13), thresholds)
    assert pred.positive == ("Bacterial pneumonia", "Viral pneumonia")  # make_prediction ignores the hierarchy
    pred = replace(pred, positive=())                                    # what the pipeline calls: nothing
    report = draft_report(pred, "Child, 4 years, fever", shipped_bank)
    assert ("No pneumonia is called at the model's operating point (model probability 0.96, threshold 0.98); review "
            "the image.") in report.impression
    assert "evidence of pneumonia" not in report.to_text() and label_text(report.findings).get("Pneumonia") is None
    assert check_consistency(report.to_text(), pred) == []
    close = draft_report(replace(make_prediction((0.02, 0.979, 0.49, 0.35, 0.13), thresholds), positive=()), None,
                         shipped_bank)
    assert "probability 0.979, threshold 0.984" in close.impression   # enough digits to tell them apart
    # only the "unlikely" band (below medmm.calls.UNLIKELY_BELOW) says there is no evidence; 0.20 is "uncertain"
    low = draft_report(make_prediction((0.9, 0.1, 0.05, 0.05, 0.05), thresholds), None, shipped_bank)
    assert "No radiographic evidence of pneumonia (model probability 0.10)." in low.impression
    mid = draft_report(make_prediction((0.5, 0.2, 0.1, 0.1, 0.05), thresholds), None, shipped_bank)
    assert "No pneumonia is called at the model's operating point (model probability 0.20" in mid.impression
    assert "evidence of pneumonia" not in mid.to_text() and "free of" not in mid.to_text()


def test_draft_hedges_possible_band() -> None:
    pred = make_prediction((0.2, 0.55, 0.3, 0.3, 0.1))
    report = draft_report(pred, None, SentenceBank.empty())
    assert pred.band("Pneumonia") == "possible"
    assert "cannot be excluded" in report.impression
    assert label_text(report.impression)["Pneumonia"] == U
    assert report.indication == NOT_PROVIDED


def test_draft_with_partial_or_nan_outputs(shipped_bank: SentenceBank) -> None:
    partial = Prediction(findings={"No Finding": 0.9}, thresholds={"No Finding": 0.5}, positive=("No Finding",),
                         modalities=("image",))
    report = draft_report(partial, None, shipped_bank)
    assert label_text(report.impression) == {"No Finding": P, "Pneumonia": N}
    assert check_consistency(report.to_text(), partial) == []
    nan = make_prediction((0.9, float("nan"), 0.1, 0.1, 0.1))
    report = draft_report(nan, None, shipped_bank)
    assert "Pneumonia" not in [m["finding"] for m in report.model_outputs]
    assert check_consistency(report.to_text(), nan) == []


def test_draft_notes_only_says_no_image(shipped_bank: SentenceBank) -> None:
    report = draft_report(make_prediction(NORMAL, modalities=("notes",)), "dyspnea", shipped_bank)
    assert report.findings.startswith("No image was provided")


def test_draft_deterministic(shipped_bank: SentenceBank) -> None:
    emb = np.random.default_rng(1).normal(size=384).astype(np.float32)
    emb /= np.linalg.norm(emb)
    pred = make_prediction(NORMAL, emb=emb)
    first = draft_report(pred, "Mrs Jones, chest pain", shipped_bank).to_json()
    second = draft_report(pred, "Mrs Jones, chest pain", SentenceBank.load(DEFAULT_BANK_PATH)).to_json()
    assert first == second
    assert "Jones" not in first


def test_ranking_follows_notes_embedding(shipped_bank: SentenceBank) -> None:
    target = "There is no focal air space opacity to suggest a pneumonia."
    i = shipped_bank.texts.index(target)
    pred = make_prediction((0.2, 0.05, 0.02, 0.02, 0.01), emb=shipped_bank.embeddings[i].copy())
    report = draft_report(pred, "evaluate for pneumonia", shipped_bank)
    assert report.sentences[0].text == target and report.sentences[0].source == "retrieved"
    no_notes = draft_report(make_prediction((0.2, 0.05, 0.02, 0.02, 0.01)), None, shipped_bank)
    assert no_notes.sentences[0].source == "retrieved"  # frequency fallback


def test_draft_without_bank_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MEDMM_SENTENCE_BANK", str(tmp_path / "missing.npz"))
    report = draft_report(make_prediction(NORMAL), "cough", None)
    assert report.warnings and all(s.source == "templated" for s in report.sentences)
    assert check_consistency(report.to_text(), make_prediction(NORMAL)) == []


BAND_STATUS = {"likely": P, "possible": U}
probabilities = st.floats(0.0, 1.0, allow_nan=False)
NOTES = st.one_of(st.none(), st.text(max_size=200),
                  st.sampled_from(["r/o pneumonia", "Known COVID-19, no pneumonia", "FINDINGS: pneumonia",
                                   "history of viral pneumonia\nIMPRESSION: lungs clear", "Mr Smith 95 yo"]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(probs=st.tuples(*[probabilities] * len(FINDINGS)), thresholds=st.tuples(*[st.floats(0.05, 0.95)] * len(FINDINGS)),
       image=st.booleans(), notes=NOTES, use_emb=st.booleans(), bank_kind=st.sampled_from(["shipped", "empty", "synthetic"]),
       seed=st.integers(0, 2**16))
def test_draft_never_contradicts_prediction(probs, thresholds, image, notes, use_emb, bank_kind, seed) -> None:
    if bank_kind == "shipped" and DEFAULT_BANK_PATH.exists():
        bank = load_bank(DEFAULT_BANK_PATH)
    elif bank_kind == "synthetic":
        bank = synthetic_bank()
    else:
        bank = SentenceBank.empty()
    emb = None
    if use_emb:
        emb = np.random.default_rng(seed).normal(size=384).astype(np.float32)
        emb /= np.linalg.norm(emb)
    pred = make_prediction(probs, dict(zip(FINDINGS, thresholds)), ("image", "notes") if image else ("notes",), emb)
    report = draft_report(pred, notes, bank)
    assert check_consistency(report.to_text(), pred, include_uncertain=True) == []
    assert check_consistency(report.to_markdown(), pred, include_uncertain=True) == []
    # every pneumonia-family finding predicted positive is stated with the band's hedge, except competing
    # subtypes (bacterial and viral both above threshold), which the draft must not name as present
    labels = label_text(report.findings + " " + report.impression)
    competing = pred.band("Bacterial pneumonia") in BAND_STATUS and (
        pred.band("Viral pneumonia") in BAND_STATUS or pred.band("COVID-19") in BAND_STATUS)
    for f in ("Pneumonia", "Bacterial pneumonia", "Viral pneumonia", "COVID-19"):
        if competing and f != "Pneumonia" and pred.band(f) in BAND_STATUS:
            assert labels.get(f) is None, (f, report.impression)
        elif pred.band(f) in BAND_STATUS:
            assert labels.get(f) == BAND_STATUS[pred.band(f)], (f, pred.band(f), report.impression)
    if competing:
        assert "Subtype not determined" in report.impression and any("cannot tell" in w for w in report.warnings)
    assert report.disclaimer == DISCLAIMER


UNMODELLED_WORDS = re.compile(r"heart|cardi|mediastin|pleura|effusion|pneumothora|lungs? (?:is|are) clear|nodul|"
                              r"mass|edema|bone|osseous|acute", re.I)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(probs=st.tuples(*[probabilities] * len(FINDINGS)), thresholds=st.tuples(*[st.floats(0.05, 0.95)] * len(FINDINGS)),
       positive=st.one_of(st.none(), st.sets(st.sampled_from(FINDINGS))), image=st.booleans(), notes=NOTES,
       bank_kind=st.sampled_from(["shipped", "empty", "synthetic"]), warnings=st.lists(st.sampled_from(
           ["adult radiograph: the model is weak here", "Heart size is not modelled.", ""]), max_size=2))
def test_draft_never_asserts_unmodelled_findings(probs, thresholds, positive, image, notes, bank_kind, warnings) -> None:
    """Over random outputs (and random ``positive`` sets, as the pipeline's output rule may produce): Findings and
    Impression mention only modelled concepts; everything else appears only as "not assessed by this model"."""
    bank = {"shipped": lambda: load_bank(DEFAULT_BANK_PATH) if DEFAULT_BANK_PATH.exists() else SentenceBank.empty(),
            "empty": SentenceBank.empty, "synthetic": synthetic_bank}[bank_kind]()
    pred = make_prediction(probs, dict(zip(FINDINGS, thresholds)), ("image", "notes") if image else ("notes",))
    pred = replace(pred, warnings=tuple(warnings))
    if positive is not None:
        pred = replace(pred, positive=tuple(f for f in FINDINGS if f in positive))
    report = draft_report(pred, notes, bank)
    for section in (report.findings, report.impression):
        for sentence in split_sentences(section):
            if sentence == T_NOT_ASSESSED:
                continue
            concepts = {m.concept for m in find_mentions(sentence)}
            assert concepts <= MODELLED_CONCEPTS | {"normal_chest"}, (sentence, concepts)
            assert not UNMODELLED_WORDS.search(sentence), sentence
    assert T_NOT_ASSESSED in report.findings
    # which findings are present follows prediction.positive, not the raw probabilities
    labels = label_text(report.findings + " " + report.impression)
    for f, status in labels.items():
        if status == P:
            assert f in pred.positive, (f, report.impression)
    assert check_consistency(report.to_text(), pred, include_uncertain=True) == []
    for w in filter(None, warnings):
        assert w in report.warnings and w in report.to_text()


# ------------------------------------------------------------------------------------------ consistency check
def test_check_consistency_flags_edited_report(shipped_bank: SentenceBank) -> None:
    negative = make_prediction(NORMAL)
    draft = draft_report(negative, "cough; r/o pneumonia", shipped_bank)
    assert check_consistency(draft.to_text(), negative) == []   # the indication's "pneumonia" is not checked
    edited = draft.to_text().replace("IMPRESSION: ", "IMPRESSION: Right lower lobe pneumonia. ")
    found = check_consistency(edited, negative)
    assert [(c.finding, c.report_status, c.model_band) for c in found] == [("Pneumonia", P, "negative")]
    assert found[0].sentence == "Right lower lobe pneumonia." and "predicted it negative" in found[0].explanation

    positive = make_prediction(PNEUMONIA)
    text = "FINDINGS: The lungs are clear.\nIMPRESSION: No evidence of pneumonia. Possible viral pneumonia."
    found = check_consistency(text, positive)
    assert {(c.finding, c.report_status, c.sentence) for c in found} == {
        ("Pneumonia", N, "The lungs are clear."), ("Pneumonia", N, "No evidence of pneumonia."),
        ("No Finding", P, "The lungs are clear.")}     # "lungs are clear" also asserts a normal study
    strict = check_consistency(text, positive, include_uncertain=True)
    assert ("Viral pneumonia", U) in {(c.finding, c.report_status) for c in strict}
    assert json.dumps([c.to_dict() for c in strict])
    hedged = check_consistency("IMPRESSION: Possible small left pleural effusion.", negative, include_uncertain=True)
    assert [(c.finding, c.report_status, c.evidence) for c in hedged] == [("No Finding", U, "pleural effusion")]
    assert check_consistency("IMPRESSION: Possible small left pleural effusion.", negative) == []


def test_report_sections_parsing() -> None:
    assert report_sections("no headers here") == [("body", "no headers here")]
    names = [n for n, _ in report_sections("## Indication\nfever\n**Findings:** clear\nIMPRESSION: ok")]
    assert names == ["indication", "findings", "impression"]


# ------------------------------------------------------------------------------------------ exports
def test_text_markdown_dict_exports() -> None:
    report = draft_report(make_prediction(PNEUMONIA), "<script>x</script> *bold* fever", SentenceBank.empty())
    text = report.to_text()
    for header in ("INDICATION:", "FINDINGS:", "IMPRESSION:", "NOTE:"):
        assert header in text
    md = report.to_markdown()
    assert "<script>" not in md and "\\*bold\\*" in md
    d = json.loads(report.to_json())
    assert d["impression"] == report.impression and d["disclaimer"] == DISCLAIMER
    assert {s["source"] for s in d["sentences"]} == {"templated"}
    assert [m["finding"] for m in d["model_outputs"]] == list(FINDINGS)


def test_dicom_sr_round_trip(tmp_path: Path) -> None:
    import pydicom

    notes = "Mr. John Smith, MRN 12345678, DOB 01/02/1950, phone 317-555-1234: fever and cough"
    pred = make_prediction(PNEUMONIA, checkpoint={"name": "medmm", "version": "0.1.0"})
    report = draft_report(pred, notes, SentenceBank.empty())
    path = tmp_path / "draft.dcm"
    to_dicom_sr(report, pred, path)
    raw = path.read_bytes()
    assert raw[128:132] == b"DICM"
    for identifier in (b"Smith", b"12345678", b"1950", b"555-1234"):
        assert identifier not in raw
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.SOPClassUID == BASIC_TEXT_SR == ds.file_meta.MediaStorageSOPClassUID
    assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
                    "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber", "Modality",
                    "SeriesInstanceUID", "SeriesNumber", "Manufacturer", "SoftwareVersions", "InstanceNumber",
                    "CompletionFlag", "VerificationFlag", "ContentDate", "ContentTime", "ValueType",
                    "ConceptNameCodeSequence", "ContinuityOfContent", "ContentSequence"):
        assert keyword in ds, keyword
    assert str(ds.PatientName) == "" and ds.PatientID == "" and ds.PatientBirthDate == ""
    assert ds.Modality == "SR" and ds.Manufacturer == "medmm"
    assert ds.CompletionFlag == "PARTIAL" and ds.VerificationFlag == "UNVERIFIED"
    assert ds.ValueType == "CONTAINER" and ds.ConceptNameCodeSequence[0].CodeValue == "18748-4"
    texts = {item.ConceptNameCodeSequence[0].CodeMeaning: item.TextValue for item in ds.ContentSequence
             if item.ConceptNameCodeSequence[0].CodeMeaning != "Comment"}
    assert texts == {"Indications for Procedure": report.indication, "Findings": report.findings,
                     "Impressions": report.impression}
    comments = [item.TextValue for item in ds.ContentSequence if item.ConceptNameCodeSequence[0].CodeMeaning == "Comment"]
    assert report.disclaimer in comments
    assert all(item.RelationshipType == "CONTAINS" and item.ValueType == "TEXT" for item in ds.ContentSequence)

    from dataclasses import replace

    buf = io.BytesIO()
    second = to_dicom_sr(replace(report, indication="Dr. Who, MRN 7654321, cough"), pred, buf)
    assert b"Who" not in buf.getvalue() and b"7654321" not in buf.getvalue()
    assert second.SOPInstanceUID != ds.SOPInstanceUID and second.StudyInstanceUID != ds.StudyInstanceUID
    buf.seek(0)
    assert pydicom.dcmread(buf).ContentSequence[1].TextValue == report.findings


CLINICIAN_WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=3, max_size=9).filter(
    lambda w: w not in {"mrs", "prof", "miss"})       # titles the identifier scrubber (rightly) acts on
CLINICIAN_HEADERS = ["", "INDICATION:", "CLINICAL HISTORY:", "FINDINGS:", "IMPRESSION:", "COMPARISON:", "TECHNIQUE:",
                     "RECOMMENDATIONS:", "CONCLUSION:", "NOTE:", "WARNINGS:"]


@settings(max_examples=80, deadline=None)
@given(chunks=st.lists(st.tuples(st.sampled_from(CLINICIAN_HEADERS), st.lists(CLINICIAN_WORD, min_size=1, max_size=6)),
                       min_size=1, max_size=6),
       start_from_draft=st.booleans(), before_draft=st.booleans())
def test_dicom_sr_keeps_every_clinician_word(chunks, start_from_draft, before_draft) -> None:
    """Whatever section a clinician types into (or adds, or writes after the NOTE), the SR carries it."""
    import pydicom

    pred = make_prediction(PNEUMONIA)
    draft = draft_report(replace(pred, warnings=("adult radiograph: the model is weak here",)), "cough",
                         SentenceBank.empty())
    typed = "\n\n".join(f"{h} {' '.join(words)}".strip() for h, words in chunks)
    base = draft.to_text() if start_from_draft else ""
    text = (typed + "\n\n" + base) if before_draft else (base + "\n\n" + typed)
    edited = apply_edits(draft, text)
    buf = io.BytesIO()
    to_dicom_sr(edited, pred, buf)
    buf.seek(0)
    ds = pydicom.dcmread(buf)                              # no force: valid Part 10
    sr_words = re.findall(r"[a-z]+", " ".join(str(item.TextValue) for item in ds.ContentSequence).lower())
    for _, words in chunks:
        for w in words:
            assert w in sr_words, (w, text)
    assert DISCLAIMER in [str(item.TextValue) for item in ds.ContentSequence]


def test_dicom_sr_sections_and_codes(tmp_path: Path) -> None:
    import pydicom

    pred = make_prediction(PNEUMONIA)
    draft = draft_report(pred, "cough", SentenceBank.empty())
    text = draft.to_text().replace("NOTE: ", "RECOMMENDATIONS: Follow-up film in six weeks.\n\nNOTE: ") + \
        "\nClinician addendum after the note."
    to_dicom_sr(apply_edits(draft, text), pred, tmp_path / "sr.dcm")
    ds = pydicom.dcmread(tmp_path / "sr.dcm")
    by_code = {item.ConceptNameCodeSequence[0].CodeValue: str(item.TextValue) for item in ds.ContentSequence
               if item.ConceptNameCodeSequence[0].CodeValue != "121106"}
    assert by_code["121074"] == "Follow-up film in six weeks."             # DCM Recommendations
    comments = [str(item.TextValue) for item in ds.ContentSequence
                if item.ConceptNameCodeSequence[0].CodeValue == "121106"]
    assert "Note: Clinician addendum after the note." in comments and DISCLAIMER in comments


# ------------------------------------------------------------------------------------------ sentence bank
def test_clean_bank_sentence() -> None:
    assert clean_bank_sentence("Normal chest x-XXXX.") == "Normal chest x-ray."
    assert clean_bank_sentence("There are no XXXX of a pleural effusion.") is None
    assert clean_bank_sentence("No change since the prior exam.") is None
    assert clean_bank_sentence("This may represent pneumonia.") is None
    assert clean_bank_sentence("Specifically, no evidence of focal consolidation..") == \
        "No evidence of focal consolidation."


def test_bank_save_load_round_trip(tmp_path: Path) -> None:
    reports = [("The lungs are clear. Heart size is normal. XXXX are intact.", "No acute cardiopulmonary abnormality."),
               ("The lungs are clear. Right lower lobe pneumonia.", "Pneumonia."),
               ("The lungs are clear. Heart size is normal.", "No acute cardiopulmonary abnormality.")]
    rng = np.random.default_rng(0)
    bank = build_bank(reports, lambda texts: rng.normal(size=(len(texts), 384)), min_count=2)
    assert bank.texts == ("The lungs are clear.", "Heart size is normal.", "No acute cardiopulmonary abnormality.")
    assert bank.counts.tolist() == [3, 2, 2] and bank.impression_counts.tolist() == [0, 0, 2]
    bank.save(tmp_path / "bank.npz")
    again = SentenceBank.load(tmp_path / "bank.npz")
    assert again.texts == bank.texts and again.counts.tolist() == bank.counts.tolist()
    np.testing.assert_allclose(again.embeddings, bank.embeddings, atol=2e-3)
    assert again.labels(0) == {"No Finding": P, "Pneumonia": N}


def test_shipped_bank_is_clean(shipped_bank: SentenceBank) -> None:
    assert DEFAULT_BANK_PATH.stat().st_size < 5 * 1024 * 1024
    assert len(shipped_bank) > 100 and shipped_bank.embeddings.shape == (len(shipped_bank), 384)
    np.testing.assert_allclose(np.linalg.norm(shipped_bank.embeddings, axis=1), 1.0, atol=1e-3)
    assert len(set(shipped_bank.texts)) == len(shipped_bank)
    assert not any("XXXX" in t for t in shipped_bank.texts)
    assert (shipped_bank.counts >= 2).all()
    for i in range(len(shipped_bank)):   # the bank never asserts a finding or an unmodelled abnormality
        assert all(s != P or f == "No Finding" for f, s in shipped_bank.labels(i).items())


def test_bank_from_iu_reports() -> None:
    path = require_shared("iu_reports", "indiana_reports.csv")
    with open(path, newline="", encoding="utf-8") as fh:
        rows = [r for _, r in zip(range(400), csv.DictReader(fh))]
    bank = build_bank([(r["findings"], r["impression"]) for r in rows], None, min_count=2)
    assert len(bank) > 20 and bank.embeddings is None
    assert "No acute cardiopulmonary abnormality." in bank.texts
    assert not any("XXXX" in t for t in bank.texts)
    # the labeller finds the real normal impressions
    normal = [r for r in rows if r["MeSH"].strip().lower() == "normal" and r["impression"]]
    agree = np.mean([binary_labels(r["impression"])["No Finding"] for r in normal])
    assert agree > 0.7
