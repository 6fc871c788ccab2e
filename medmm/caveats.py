"""The warnings a prediction carries, as pure functions of what the pipeline decided (no model, no state).

``medmm.pipeline`` decides (gate, scope population, out-of-distribution score, the notes' evidence) and calls these for
the words: cut notes, a non-radiograph modality, the input gate's refusals and set-aside views, an untrained
checkpoint, an out-of-distribution film, a non-frontal view from the DICOM header, an adult film, and what the
notes' evidence did to a call. Named ``caveats`` so that it does not shadow the standard library's ``warnings``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from medmm.labels import ancestors
from medmm.prediction import Prediction

UNTRAINED = "UNTRAINED checkpoint: these numbers are placeholders for wiring, not predictions."


def int8_unchecked(contract: Mapping[str, Any]) -> str:
    """The image encoder runs in int8 (``--runtime openvino-int8``) without a passed accuracy check on this CPU."""
    worst = contract.get("max_abs_dp")
    how = ("failed its accuracy check against the full-precision model on this CPU (probabilities moved by up to "
           f"{float(worst):.2f}; allowed 0.01)" if contract and worst is not None else
           "has no accuracy check for this CPU's int8 instructions")
    return (f"Speed experiment: the image encoder runs in int8 (openvino-int8), which {how}. These probabilities are "
            "not those of the validated model; use the default runtime for review.")


# ------------------------------------------------------------------------------------------------ inputs
def notes_cut(max_chars: int) -> str:
    return f"Notes longer than {max_chars:,} characters were cut to that length."


def not_a_radiograph(modality: str) -> str:
    return (f"Modality {modality} is not a radiograph; the model was trained on chest radiographs only, so its output "
            "for this scan is not meaningful.")


def scan_name(i: int, n: int) -> str:
    """How a refusal or warning names scan ``i`` (0-based) of ``n``."""
    return "This image" if n == 1 else f"Scan {i + 1} of {n}"


def not_chest_refusal(refused: Sequence[tuple[str, float]]) -> str:
    """The input gate's refusal: ``refused`` = (scan name, probability that it is a chest radiograph) per scan."""
    which = "; ".join(f"{name} does not look like a chest radiograph (probability that it is one: {p:.2f})"
                      for name, p in refused)
    return (f"{which}. medmm analyses frontal chest radiographs only; photographs, documents, radiographs of "
            "other body parts, CT or MR slices and cropped figures are refused, and nothing of this request "
            "was analysed. Upload the chest film itself (DICOM, PNG or JPEG).")


def lateral_how(from_pixels: bool, p_lateral: float | None, header_view: str | None) -> str:
    """Why a view counts as lateral: the gate's probability when the pixels say so, else the DICOM header's view."""
    return f"from the pixels, probability {p_lateral:.2f}" if from_pixels else f"view {header_view} in the DICOM header"


def lateral_refusal(lateral: Sequence[tuple[str, str]]) -> str:
    """Every scan is lateral: ``lateral`` = (scan name, :func:`lateral_how`) per scan."""
    which = "; ".join(f"{name} looks like a lateral or other non-frontal view ({how})" for name, how in lateral)
    return (f"{which}. The model reads frontal (PA/AP) chest films only, so nothing was analysed: add the "
            "frontal film of the study.")


def lateral_set_aside(name: str, how: str) -> str:
    return (f"{name} looks like a lateral or other non-frontal view ({how}). The model reads "
            "frontal (PA/AP) chest films only, so this view was set aside: the findings come from the "
            "frontal view(s).")


# ------------------------------------------------------------------------------------------------ the film
def out_of_distribution(score: float, threshold: float) -> str | None:
    """The warning for an out-of-distribution score above its threshold (None below it)."""
    if not score > threshold:
        return None
    return ("This image does not look like the chest radiographs the model was trained on "
            f"(out-of-distribution score {score:.2f} > {threshold:.2f}); treat the output with extra caution.")


def header_views(views: Iterable[str | None]) -> list[str]:
    """Non-frontal views named by the DICOM header (said here only when no input gate sets them aside)."""
    other = sorted({str(v) for v in views if v not in (None, "AP", "PA")})
    if not other:
        return []
    return [f"View {', '.join(other)} (from the DICOM header): the model was trained on frontal "
            "(AP/PA) chest films only, so its output for this view is not meaningful."]


def adult_film(population: str, scope: Mapping[Any, Any], *, adult_by_film: bool,
               adult_auc: Mapping[str, Any] | None) -> list[str]:
    """Plain-language warning for a film outside the population the model is measured to work on (adult films for
    the default model), with the scope table's figures. ``adult_by_film``: the film itself looks adult (else the
    notes gave the age); ``adult_auc``: the checkpoint's measured adult AUC (``{"auc", "ci95", "n"}``) or None."""
    if population != "adult":
        return []
    why = "judged from the film" if adult_by_film else "the notes give an adult age"
    out_of_scope = [r for (pop, _), r in scope.items() if pop == "adult" and r.call != "yes"]
    if scope and not out_of_scope:
        return []
    figures = "; ".join(f"{r.finding}: {r.figure()}" for r in out_of_scope
                        if r.value is not None and r.finding in ("No Finding", "Pneumonia"))
    if out_of_scope:
        return [f"Adult film ({why}). The default model learned mostly from young children's films (Kermany, "
                "ages 1-5) and is not reliable on adults, so on adult films it calls no finding that it has not "
                f"been measured to assess and drafts no normal study ({figures}). The probabilities are shown "
                "for research only; see the model card."]
    auc = adult_auc or {}
    measured = (f" on unseen adult NIH patients it separated normal from abnormal films with an AUC of "
                f"{auc['auc']:.2f} (95% CI {auc['ci95'][0]:.2f}-{auc['ci95'][1]:.2f}, n={auc['n']})"
                if auc.get("auc") is not None else "")
    return [f"This looks like an adult chest film. The default model learned mostly from young children's films "
            f"(Kermany, ages 1-5) and is much less reliable on adults:{measured}. Read these probabilities as "
            "low-confidence; see the model card."]


# ------------------------------------------------------------------------------------------------ the notes
def notes_evidence(pred: Prediction, scope: Mapping[Any, Any]) -> list[str]:
    """What the notes did to a call, with the evidence that did it (the image-alone calls are decided again from
    ``pred.image_findings`` with the same ``scope`` table); notes alone: where they started. Empty without notes."""
    evidence = pred.notes_evidence
    if evidence is None:
        return []
    from medmm.calls import decide
    from medmm.notes.evidence import POPULATION_PLURAL

    out: list[str] = []

    def because(finding: str) -> str:
        family = {finding, *ancestors(finding)}
        used = [e.label() for e in evidence.used if e.counted and e.finding in family]
        return "; ".join(used) if used else "no counted evidence"

    alone = pred.image_findings
    if alone is not None:
        image_calls, _ = decide(dict(alone), pred.thresholds, scope, pred.population)
        by_image = [c.finding for c in image_calls if c.called]
        for f in (f for f in pred.positive if f not in by_image):
            out.append(f"{f} is called with the notes' evidence, not on the image alone (image alone "
                       f"{alone[f]:.2f}, with the notes {pred.findings[f]:.2f}: {because(f)}).")
        for f in (f for f in by_image if f not in pred.positive):
            out.append(f"{f} would be called on the image alone ({alone[f]:.2f}) but the "
                       f"notes' evidence lowers it to {pred.findings[f]:.2f} ({because(f)}); review the image.")
    else:
        pretest = pred.pretest
        out.append(f"From the notes alone (no image): a pre-test probability of pneumonia of "
                   f"{pretest['probability']:.2f} for {POPULATION_PLURAL[evidence.population]} "
                   f"({pretest['source'].split(' (')[0]}) "
                   "updated by the notes' published likelihood ratios. No Finding and the pneumonia subtypes "
                   "cannot be judged without a film.")
    if evidence.population_from == "default" and evidence.used:
        out.append("The notes do not give the patient's age and there is no image to judge it from: the adult "
                   "likelihood ratios were used.")
    if evidence.read_chars is not None:
        out.append(f"Only the first {evidence.read_chars:,} characters of the notes were read for clinical "
                   "evidence; put the relevant history, examination and results first.")
    if evidence.capped:
        out.append(f"The notes' clinical evidence for {', '.join(evidence.capped)} was capped at a likelihood "
                   "ratio of 10 (correlated findings are not independent evidence).")
    return out
