import math

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from medmm.labels import (FINDINGS, covid_collection_labels, iu_report_labels, kermany_labels,
                          kermany_patient_id, labels_from_dict)
from medmm.training.metrics import (binary_metrics, confusion_at, expected_calibration_error, fit_temperature, roc_auc,
                           sensitivity_threshold, youden_threshold)


def test_findings_contain_required():
    for f in ("No Finding", "Pneumonia", "Bacterial pneumonia", "Viral pneumonia", "COVID-19"):
        assert f in FINDINGS
    assert len(set(FINDINGS)) == len(FINDINGS)


def test_kermany_mapping_and_patient_ids():
    v = kermany_labels("PNEUMONIA", "person1000_virus_1681.jpeg")
    assert v.tolist() == [0, 1, 0, 1, 0]
    assert kermany_labels("NORMAL", "IM-0115-0001.jpeg").tolist() == [1, 0, 0, 0, 0]
    assert kermany_patient_id("person1000_bacteria_2931.jpeg") == "person1000"
    assert kermany_patient_id("IM-0115-0001.jpeg") == "IM-0115"
    with pytest.raises(ValueError):
        kermany_patient_id("random.jpeg")


def test_covid_mapping_masks_unknown_not_negative():
    todo = covid_collection_labels("todo")
    assert np.isnan(todo).all()
    covid = covid_collection_labels("COVID-19, ARDS")
    assert covid[FINDINGS.index("COVID-19")] == 1 and covid[FINDINGS.index("Viral pneumonia")] == 1
    assert math.isnan(covid[FINDINGS.index("Bacterial pneumonia")])  # co-infection not ruled out: unknown
    strep = covid_collection_labels("Streptococcus")
    assert strep[FINDINGS.index("Bacterial pneumonia")] == 1 and strep[FINDINGS.index("COVID-19")] == 0
    assert math.isnan(strep[FINDINGS.index("Viral pneumonia")])
    ards = covid_collection_labels("ARDS")
    assert ards[FINDINGS.index("No Finding")] == 0 and np.isnan(ards[1:]).all()
    assert covid_collection_labels("Pneumonia/Viral/COVID-19")[FINDINGS.index("COVID-19")] == 1


def test_iu_mapping():
    assert iu_report_labels("normal").tolist() == [1, 0, 0, 0, 0]
    pn = iu_report_labels("Pneumonia/upper lobe/right;Cardiomegaly")
    assert pn[1] == 1 and pn[0] == 0
    assert math.isnan(iu_report_labels("Opacity/lung/base")[1])  # opacity may be pneumonia: unknown
    assert iu_report_labels("Cardiomegaly/mild")[1] == 0
    with pytest.raises(KeyError):
        labels_from_dict({"Not a finding": 1})


@pytest.fixture
def arrays():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    score = np.clip(y * 0.3 + rng.normal(0.4, 0.25, 300), 0, 1)
    score[:20] = 0.5  # ties
    return y, score


def test_auc_matches_sklearn(arrays):
    y, s = arrays
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert math.isnan(roc_auc(np.ones(5), np.arange(5)))


def test_confusion_matches_sklearn(arrays):
    y, s = arrays
    c = confusion_at(y, s, 0.55)
    pred = s >= 0.55
    assert c["f1"] == pytest.approx(f1_score(y, pred))
    assert c["sensitivity"] == pytest.approx(pred[y == 1].mean())
    assert c["specificity"] == pytest.approx((~pred[y == 0]).mean())


def test_thresholds(arrays):
    y, s = arrays
    t = youden_threshold(y, s)
    best = max(confusion_at(y, s, u)["sensitivity"] + confusion_at(y, s, u)["specificity"] for u in np.unique(s))
    c = confusion_at(y, s, t)
    assert c["sensitivity"] + c["specificity"] == pytest.approx(best)
    t90 = sensitivity_threshold(y, s, 0.9)
    assert confusion_at(y, s, t90)["sensitivity"] >= 0.9


def test_temperature_recovers_known_scale():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 2, 20000)
    y = (rng.random(20000) < 1 / (1 + np.exp(-z))).astype(float)
    assert fit_temperature(y, 3 * z) == pytest.approx(3.0, rel=0.05)   # over-confident logits -> T ~ 3
    p = 1 / (1 + np.exp(-z))
    assert expected_calibration_error(y, p) < 0.02
    assert expected_calibration_error(y, 1 / (1 + np.exp(-3 * z))) > 0.05


def test_bootstrap_ci_contains_point_with_and_without_patient_groups(arrays):
    y, s = arrays
    m = binary_metrics(y, s, 0.5, n_boot=200)
    lo, hi = m["auc"]["ci95"]
    assert lo <= m["auc"]["value"] <= hi
    g = np.repeat(np.arange(10), 30)  # 10 patients with 30 images each: resample patients
    mg = binary_metrics(y, s, 0.5, groups=g, n_boot=200)
    assert mg["auc"]["value"] == m["auc"]["value"]
    glo, ghi = mg["auc"]["ci95"]
    assert glo <= mg["auc"]["value"] <= ghi and ghi > glo


def test_paired_auc_difference_is_zero_for_one_score_and_resamples_patients_together():
    from medmm.training.metrics import paired_auc_difference, roc_auc

    rng = np.random.default_rng(3)
    y = np.repeat([0, 1] * 20, 2)          # 40 patients, two images each with the same label
    groups = np.repeat(np.arange(40), 2)
    a = rng.random(80)
    same = paired_auc_difference(y, a, a, groups, n_boot=200)
    assert same["delta"] == 0.0 and same["ci95"] == [0.0, 0.0]
    b = y + 0.5 * rng.random(80)           # separates the classes perfectly
    better = paired_auc_difference(y, a, b, groups, n_boot=200)
    assert better["delta"] == pytest.approx(1.0 - roc_auc(y, a))
    assert 0 < better["ci95"][0] <= better["delta"] <= better["ci95"][1]
