"""The notes-as-evidence panel (what each concept of the notes did, with its source) and the warnings panel."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from medmm.prediction import Prediction


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


_ASSERTION_WORDS = {"present": "present", "absent": "negated (absent)", "measured": "measured",
                    "possible": "possible / queried", "historical": "historical", "other person": "about someone else",
                    "hypothetical": "hypothetical"}


def notes_evidence_markdown(pred: Prediction) -> str:
    """What the notes contributed, as the clinician reads it: every concept found, how it was asserted, the
    likelihood ratio applied and its source, or why it was not used; the image-alone figures beside the final
    ones. Empty without notes."""
    from medmm.notes.evidence import POPULATION_PLURAL, TEST_CONCEPTS

    ev = pred.notes_evidence
    if ev is None:
        return ""
    whose = {"note": "the notes give the age", "image": "judged from the film (the notes give no age)",
             "default": "the notes give no age and there is no film: adult figures"}[ev.population_from]
    who = POPULATION_PLURAL.get(ev.population, ev.population)
    lines = [f"**Notes as evidence** — likelihood ratios for **{who}** ({whose}). Red raises the finding, "
             "blue lowers it. Each figure is quoted from its source, some through a secondary summary (model card, "
             "*Notes as evidence*); the image model and the notes are combined as if independent, so agreeing "
             "evidence can look more certain than it is."]
    used = [e for e in ev.items if e.used]
    if used:
        lines += ["", "| in the notes | read as | evidence | source |", "|---|---|---|---|"]
        for e in used:
            how = _ASSERTION_WORDS.get(e.assertion, e.assertion) + (f"; {e.reason}" if e.reason and e.counted else "")
            if e.concept in TEST_CONCEPTS:
                how = "positive result" if e.lr_kind == "LR+" else "negative result"
            effect = f"{e.lr_kind} {e.lr:g} for {e.finding}: **{'raises' if e.lr > 1 else 'lowers'}**"
            if not e.counted:
                effect += f" (not counted: {e.reason.split('; ')[-1]})"
            lines.append(f"| {_cell(e.phrase or e.text)} | {_cell(how)} | {_cell(effect)} | "
                         f"{_cell(e.source.split(' (')[0])} |")
    else:
        lines += ["", "No concept with a published likelihood ratio was found in the notes: they do not change the "
                      "image's answer."]
    unused = [e for e in ev.items if not e.used]
    if unused:
        said = [(e.phrase or e.text, _ASSERTION_WORDS.get(e.assertion, e.assertion), e.reason) for e in unused]
        lines += ["", "Not used: " + "; ".join(f"*{_cell(t)}* ({_cell(a)}: {_cell(r)})" for t, a, r in said) + "."]
    if ev.context:
        lines += ["", "Context: " + ", ".join(c.replace("_", " ") for c in ev.context) + " (shown, not evidence)."]
    if pred.image_findings is not None and not ev.empty:
        moved = [f"{f} {pred.image_findings[f]:.2f} → {pred.findings[f]:.2f}" for f in pred.findings
                 if abs(pred.findings[f] - pred.image_findings[f]) >= 0.005]
        if moved:
            lines += ["", "Image alone → with the notes: " + "; ".join(moved) + "."]
    elif pred.pretest is not None:
        lines += ["", f"No image: from a pre-test probability of pneumonia of {pred.pretest['probability']:.2f} "
                      f"({_cell(pred.pretest['source'])})."]
    return "\n".join(lines)


def warnings_markdown(warnings: Iterable[str]) -> str:
    """Warnings (untrained checkpoint, out-of-distribution image, non-radiograph modality, cut notes) as a list."""
    items = [w for w in warnings if w]
    if not items:
        return "No warnings for this request."
    return "**Warnings**\n\n" + "\n".join(f"- {w}" for w in items)
