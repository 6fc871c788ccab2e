"""How much each modality (image, notes) moved one finding's probability: leave-one-out effects."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medmm.pipeline import Pipeline
    from medmm.prediction import Prediction


def modality_contribution(pipeline: "Pipeline", prediction: "Prediction", finding: str) -> dict[str, Any]:
    """p(image + notes), p(image only) and p(notes only) for ``finding``, and each modality's share of the change
    when it is removed. The image alone is the image model's own answer; the notes alone are the notes' evidence
    applied to the stated pre-test probability (``medmm.notes.pretest_states``); image + notes is the image's
    answer updated by the same evidence. ``notes_shift_logodds`` is exactly what the notes added to the finding's
    log-odds. Leave-one-out effects, not Shapley values."""
    from medmm.notes import marginals, pretest_states, update_states
    from medmm.notes.evidence import logit

    j = pipeline.findings.index(finding)
    ev = prediction.notes_evidence
    has_img, has_notes = prediction.image_findings is not None, ev is not None
    p_image = prediction.image_findings[finding] if has_img else None
    p_notes = None
    if has_notes:
        states, _ = pretest_states(ev.population)
        p_notes = float(marginals(update_states(states, ev.log_lr))[j])
    out: dict[str, Any] = {
        "finding": finding, "present": [m for m, ok in (("image", has_img), ("notes", has_notes)) if ok],
        "p_both": prediction.findings[finding] if has_img and has_notes else None,
        "p_image_only": p_image, "p_notes_only": p_notes, "delta_image": None, "delta_notes": None,
    }
    if out["p_both"] is not None:
        d_img, d_txt = out["p_both"] - p_notes, out["p_both"] - p_image
        total = abs(d_img) + abs(d_txt)
        out.update(delta_image=d_img, delta_notes=d_txt, notes_shift_logodds=logit(out["p_both"]) - logit(p_image),
                   share_image=abs(d_img) / total if total > 0 else 0.5,
                   share_notes=abs(d_txt) / total if total > 0 else 0.5)
    else:
        out.update(share_image=1.0 if has_img else 0.0, share_notes=1.0 if has_notes else 0.0)
        out["note"] = "Only one modality was given, so it carries the whole prediction."
    return out


__all__ = ["modality_contribution"]
