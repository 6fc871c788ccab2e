"""medmm.notes: the clinical-text reader (medspaCy ConText), the likelihood-ratio table and the Bayes update, and
the vignette suite's expected directions on real films with the shipped checkpoint."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest

from medmm.labels import FINDINGS, LEAF_MATRIX
from medmm.notes import combine, likelihood_table, marginals, pretest_states, read_note, update_states
from medmm.notes.reader import ABSENT, HISTORICAL, HYPOTHETICAL, OTHER_PERSON, POSSIBLE, PRESENT
from tests.helpers import require_shared

ROOT = Path(__file__).resolve().parents[1]
VIGNETTES = json.loads((ROOT / "tests" / "data" / "vignettes.json").read_text())


def _assertions(text: str) -> dict[str, str]:
    return {c.key: c.assertion for c in read_note(text).concepts}


# ------------------------------------------------------------------------------------------------ reader
@pytest.mark.parametrize("text, key, assertion", [
    ("58M, pre-op knee replacement, no respiratory symptoms.", "respiratory_symptoms", ABSENT),
    ("Denies shortness of breath.", "dyspnea", ABSENT),
    ("Afebrile.", "fever", ABSENT),
    ("Fever and productive cough for 3 days.", "fever", PRESENT),
    ("?pneumonia", "pneumonia", POSSIBLE),
    ("History of pneumonia in 2019, now well.", "pneumonia", HISTORICAL),
    ("Return if fever develops.", "fever", HYPOTHETICAL),
    ("Mother has a cough.", "cough", OTHER_PERSON),
    ("COVID PCR negative x2.", "sars_cov_2_test", ABSENT),
    ("SARS-CoV-2 PCR positive.", "sars_cov_2_test", PRESENT),
    ("SARS-CoV-2 PCR pending.", "sars_cov_2_test", HYPOTHETICAL),
    ("Sibling with fever; patient well, no cough.", "cough", ABSENT),
])
def test_the_reader_finds_the_concept_and_its_assertion(text, key, assertion):
    assert _assertions(text)[key] == assertion


def test_measurements_ages_and_context():
    r = read_note("3-year-old, T 39.2, SpO2 88% RA, RR 44, HR 150, CRP 120 mg/L. Pre-op.")
    values = {c.key: c.value for c in r.concepts if c.value is not None}
    assert values == {"temperature": 39.2, "spo2": 88.0, "resp_rate": 44.0, "heart_rate": 150.0, "crp": 120.0}
    assert (r.age_years, r.population, r.context) == (3.0, "child", ("pre_operative",))
    assert read_note("T 101.3F").concepts[0].value == pytest.approx(38.5, abs=0.01)       # Fahrenheit converted
    assert read_note("58M").population == "adult" and read_note("18 mo boy").population == "child"
    assert read_note("Cough for 3 years.").age_years is None                          # a duration is not an age
    assert read_note("COVID-19 vaccine booster given last month.").concepts == ()     # not a diagnosis


def test_the_reader_never_logs_the_note(caplog, capfd):
    """PyRuSH logs every token at DEBUG through loguru: silenced before the first note; nothing of the note reaches
    the standard logging tree or stderr either."""
    secret = "Zyxwvut Qwertyson MRN4471923 fever"
    with caplog.at_level(logging.DEBUG):
        read_note(secret)
        read_note(secret + " again")
    out, err = capfd.readouterr()
    for token in ("Zyxwvut", "Qwertyson", "MRN4471923"):
        assert token not in caplog.text and token not in out and token not in err


def test_bad_notes_get_an_answer_not_a_crash():
    for text in ("", "   ", "\x00\x01\x02 fever \x7f", "患者已签署知情同意书。", "x" * 200_000,
                 "no " * 5_000, "SpO2 999%", "T 3.2"):
        ev = combine(read_note(text))
        assert all(math.isfinite(v) for v in ev.log_lr.values())
    long = combine(read_note("no fever, " * 3000))              # ~11 s of ConText if read whole: cut, and said
    assert long.read_chars is not None and long.read_chars <= 3000


# ------------------------------------------------------------------------------------------------ table
def test_the_likelihood_table_is_quoted_and_sane():
    rows = likelihood_table()
    used = [r for r in rows if r.use]
    assert len(used) >= 20
    for r in used:
        assert r.source and r.quote and r.url.startswith("http"), r
        assert (r.lr_pos or r.lr_neg) and all(v is None or 0 < v < 1000 for v in (r.lr_pos, r.lr_neg)), r
        assert r.population in ("adult", "child") and r.finding in FINDINGS, r
    for r in rows:
        assert r.use_flag in ("yes", "no", "blocked") and (r.use or r.note), r   # what is not used says why


# ------------------------------------------------------------------------------------------------ Bayes
def test_the_update_is_bayes_on_the_states_and_keeps_the_hierarchy():
    rng = np.random.default_rng(0)
    states = rng.dirichlet(np.ones(LEAF_MATRIX.shape[0]), size=200)
    f = {name: i for i, name in enumerate(FINDINGS)}
    for llr in ({"Pneumonia": math.log(3.0)}, {"Pneumonia": math.log(0.2), "COVID-19": math.log(40.0)},
                {"COVID-19": math.log(0.1)}):
        before, after = marginals(states), marginals(update_states(states, llr))
        odds = lambda p: p / (1 - p)  # noqa: E731
        if "Pneumonia" in llr:       # the root's odds move by exactly its likelihood ratio
            np.testing.assert_allclose(odds(after[:, f["Pneumonia"]]) / odds(before[:, f["Pneumonia"]]),
                                       math.exp(llr["Pneumonia"]), rtol=1e-9)
        else:                        # a subtype's update keeps the parent where it was
            np.testing.assert_allclose(after[:, f["Pneumonia"]], before[:, f["Pneumonia"]], rtol=1e-12)
        assert np.all(after[:, f["COVID-19"]] <= after[:, f["Viral pneumonia"]] + 1e-12)
        assert np.all(after[:, f["Viral pneumonia"]] <= after[:, f["Pneumonia"]] + 1e-12)
        assert np.all(after[:, f["No Finding"]] + after[:, f["Pneumonia"]] <= 1 + 1e-12)
    np.testing.assert_array_equal(update_states(states, {}), states / states.sum(-1, keepdims=True))


def test_family_rule_cap_and_pretest():
    ev = combine(read_note("62F. Fever, T 39.4, HR 120, RR 28, crackles, egophony, dullness, bronchial breathing, "
                           "productive cough, pleuritic chest pain, rigors, CRP 250."))
    assert ev.population == "adult" and ev.capped == ("Pneumonia",)
    assert ev.log_lr["Pneumonia"] == pytest.approx(math.log(10.0))
    counted = [e for e in ev.used if e.finding == "Pneumonia" and e.counted]
    fever_family = [e for e in counted if e.concept in ("fever", "temperature_high")]
    assert len(fever_family) == 1                               # fever and its measurement count once
    states, row = pretest_states("child")
    assert marginals(states)[FINDINGS.index("Pneumonia")] == pytest.approx(row["probability"])
    assert "Shah" in row["source"]


def test_a_child_takes_pediatric_figures_and_says_when_an_adult_one_stands_in():
    ev = combine(read_note("4-year-old with cough, SpO2 90%, crackles."))
    by = {e.concept: e for e in ev.items if e.finding == "Pneumonia"}
    assert by["hypoxemia"].used and "Shah" in by["hypoxemia"].source
    assert by["cough"].used and "adult figure" in by["cough"].reason
    assert not by["crackles"].used and "not associated" in by["crackles"].reason


# ------------------------------------------------------------------------------------------------ real films
@pytest.fixture(scope="module")
def shipped():
    from medmm.models.checkpoint import DEFAULT_CHECKPOINT
    from medmm.pipeline import Pipeline

    return Pipeline.from_checkpoint(DEFAULT_CHECKPOINT)


def _films() -> list[Path]:
    base = require_shared("kermany224", "train")
    nih = require_shared("nih_adult", "images")
    return [sorted((base / "NORMAL").glob("*.jpeg"))[3], sorted((base / "PNEUMONIA").glob("*bacteria*.jpeg"))[5],
            sorted(nih.glob("*.jpg"))[7], require_shared("dicom", "txv_siim.dcm")]


def test_every_vignette_moves_the_findings_the_expected_way_on_real_films(shipped):
    """The suite's every (note, finding) direction on four real films: children's normal and pneumonia films, an
    adult NIH film, the knee pre-op DICOM. ``same``: no probability moves by 0.01. Other-language notes are
    optional (not read): only their ``same`` expectations are held."""
    from medmm.notes.vignettes import run

    cases = run(shipped, [("test", f) for f in _films()], VIGNETTES)
    held = [c for c in cases if not c["optional"] or c["expected"] == "same"]
    failures = [c for c in held if not c["ok"]]
    assert len(failures) <= 0.03 * len(held), failures[:20]


def test_predict_json_carries_the_notes_evidence(shipped):
    from medmm.service import run_request

    film = require_shared("dicom", "txv_siim.dcm")
    out = run_request(shipped, [film], "58M, pre-op knee replacement, no respiratory symptoms.", report=False).to_json()
    ev = out["notes_evidence"]
    assert ev and ev[0]["assertion"] == "absent" and ev[0]["lr_kind"] == "LR-" and ev[0]["direction"] == "lowers"
    assert "Metlay" in ev[0]["source"] and out["notes_population"] == {"population": "adult", "from": "note"}
    assert out["findings"]["COVID-19"] <= out["findings_image_only"]["COVID-19"]
    json.dumps(out)


def test_the_model_card_shows_the_table_the_code_uses():
    from medmm.notes.evidence import table_markdown

    card = (ROOT / "MODEL_CARD.md").read_text()
    start, end = "<!-- table:likelihood-ratios -->\n", "\n<!-- /table:likelihood-ratios -->"
    assert card[card.index(start) + len(start):card.index(end)] == table_markdown()


def test_the_indication_citations_survive_de_identification():
    """The draft quotes each used figure as "(LR+ 1.7 for pneumonia, JAMA 2017)"; the exports de-identify the whole
    text again, so a citation must not look like a name (an author's surname would become [NAME])."""
    from medmm.report.deid import scrub_identifiers

    for r in likelihood_table():
        if r.use:
            assert r.cite and scrub_identifiers(f"fever (LR+ 1.7 for pneumonia, {r.cite})") == \
                f"fever (LR+ 1.7 for pneumonia, {r.cite})", r.cite


@pytest.mark.parametrize("text, key, assertion", [
    ("Pt asymptomatic, LFT negative today.", "asymptomatic", PRESENT),       # a test's result negates the test only
    ("Pt asymptomatic, LFT negative today.", "sars_cov_2_antigen", ABSENT),
    ("No recession, chest clear.", "normal_lung_exam", PRESENT),             # a list negation never negates "clear"
    ("Cough, no fever. 35M, chest clear.", "normal_lung_exam", PRESENT),
])
def test_negation_stays_where_it_belongs(text, key, assertion):
    assert _assertions(text)[key] == assertion


def test_uk_age_notation():
    assert read_note("18/12 old, coryzal.").age_years == pytest.approx(1.5)
    assert read_note("6/52 old, apnoeic episodes.").population == "child"
