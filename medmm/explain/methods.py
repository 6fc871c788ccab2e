"""The one registry of explanation methods (no torch import: the CLI builds its choices from it before loading
anything). ``medmm.explain`` implements them; the CLI choices, the app's radio buttons, the benchmark, the saliency
check's second method and the table in docs/explain.md are all derived from :data:`REGISTRY` (tests check each).

Adding a method: an entry here plus its branch in ``medmm.explain.image_attribution``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ExplanationMethod:
    key: str              # value of --method / the app's radio / Explanation.method
    name: str             # shown to people
    captum: str           # the Captum class that computes it
    summary: str          # one line for the docs table and --help
    compare_with: str     # the second method the saliency check compares this one's map with


REGISTRY: tuple[ExplanationMethod, ...] = (
    ExplanationMethod("gradcam", "Grad-CAM", "LayerGradCam",
                      "gradient-weighted activations of the last image stage; fastest (one backward pass)", "ig"),
    ExplanationMethod("ig", "Integrated Gradients", "IntegratedGradients",
                      "path integral of input gradients from a baseline; 16 steps, pixel resolution", "gradcam"),
    ExplanationMethod("occlusion", "Occlusion", "Occlusion",
                      "drop in the finding's logit when a 32 px window is masked (81 windows at 224 px); model-agnostic", "gradcam"),
)
BY_KEY = {m.key: m for m in REGISTRY}
METHODS: tuple[str, ...] = tuple(BY_KEY)
METHOD_NAMES: dict[str, str] = {m.key: m.name for m in REGISTRY}
DEFAULT_METHOD = METHODS[0]

# note-word attribution (the notes half of every explanation): the notes reach the prediction only as evidence with
# published likelihood ratios (medmm.notes), so a word's score is its concept's effect on the finding's log-odds
NOTES_METHODS: tuple[str, ...] = ("evidence",)
NOTES_METHOD_NAMES: dict[str, str] = {"evidence": "evidence (likelihood ratios)"}


def method_help() -> str:
    """One line per method for ``--help``."""
    return "; ".join(f"{m.key} = {m.name} ({m.summary})" for m in REGISTRY)


def methods_markdown() -> str:
    """The methods table of docs/explain.md (a test keeps the doc equal to this)."""
    rows = ["| method | name | Captum | what it is | saliency check compares with |", "|---|---|---|---|---|"]
    rows += [f"| `{m.key}` | {m.name} | `{m.captum}` | {m.summary} | {BY_KEY[m.compare_with].name} |" for m in REGISTRY]
    return "\n".join(rows)


__all__ = ["BY_KEY", "DEFAULT_METHOD", "ExplanationMethod", "METHODS", "METHOD_NAMES", "NOTES_METHODS",
           "NOTES_METHOD_NAMES", "REGISTRY", "method_help", "methods_markdown"]
