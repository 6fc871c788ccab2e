"""Explanations of one prediction: what each input contributed, how far the map can be trusted, and drawing it.
One module per concept:

* ``methods``: the one registry of image explanation methods; each entry carries its own ``attribute`` (Captum's
  one verb), so the CLI choices, app radio buttons, benchmark, docs table and dispatch all read it.
* ``attribution``: ``explain()``, one request's explanation for one finding, from the parts below.
* ``image``: the forward function Captum differentiates, the reference image, the map of one scan and its display.
* ``notes``: note words scored by the notes' evidence (likelihood ratios).
* ``modality``: how much the image and the notes each moved the finding (leave-one-out).
* ``checks``: cascading parameter randomisation, deletion / insertion faithfulness, rank correlation.
* ``saliency_check``: the per-request verdict on a map (faithful, agreeing with a second method, in the lungs).
* ``explanation``: the result (``Explanation``), ``ExplainError`` and the attributed quantity (``TARGET``).
* ``render``: overlays (Pillow for the app and CLI, a matplotlib figure for notebooks; no pyplot) and token
  highlights, from plain arrays.
* ``files``: what ``python -m medmm explain --out DIR`` writes (the only module that touches the disk).

``methods``, ``saliency_check`` and ``render`` are torch-free at import; the names of the torch modules are
re-exported lazily, so ``import medmm.explain.methods`` (the CLI) does not import torch.
"""

from medmm._lazy import lazy_exports
from medmm.explain.methods import (BY_KEY, DEFAULT_METHOD, METHOD_NAMES, METHODS, NOTES_METHOD_NAMES, NOTES_METHODS,
                                   REGISTRY, AttributionSettings, ExplanationMethod, method_help, methods_markdown,
                                   occlusion_geometry)
from medmm.explain.render import (blend_overlay, figure_to_array, figure_to_png, overlay_array, overlay_figure,
                                  overlay_png, token_highlights)
from medmm.explain.saliency_check import check_saliency, summarise, verdict

_EXPORTS = {
    **dict.fromkeys(("TARGET", "ExplainError", "Explanation"), "explanation"),
    **dict.fromkeys(("ExplainOptions", "explain"), "attribution"),
    **dict.fromkeys(("ImageScorer", "display_heatmap", "image_attribution", "reference_image", "resize_map",
                     "view_inputs"), "image"),
    "evidence_tokens": "notes",
    "modality_contribution": "modality",
    **dict.fromkeys(("cascade_stages", "faithfulness", "randomization_check", "spearman"), "checks"),
    **dict.fromkeys(("cli_explain", "write_explanation"), "files"),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "AttributionSettings", "BY_KEY", "DEFAULT_METHOD", "ExplainError", "ExplainOptions", "Explanation",
    "ExplanationMethod", "ImageScorer", "METHODS", "METHOD_NAMES", "NOTES_METHODS", "NOTES_METHOD_NAMES", "REGISTRY",
    "TARGET", "blend_overlay", "cascade_stages", "check_saliency", "cli_explain", "display_heatmap",
    "evidence_tokens", "explain", "faithfulness", "figure_to_array", "figure_to_png", "image_attribution",
    "method_help", "methods_markdown", "modality_contribution", "occlusion_geometry", "overlay_array",
    "overlay_figure", "overlay_png", "randomization_check", "reference_image", "resize_map", "spearman", "summarise",
    "token_highlights", "verdict", "view_inputs", "write_explanation",
]
