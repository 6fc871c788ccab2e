"""Explanations of one prediction: what each input contributed, how far the map can be trusted, and drawing it.

* ``methods``: the one registry of explanation methods (CLI choices, app radio buttons, benchmark, docs table).
* ``attribution``: Captum image saliency, note-word scores from the notes' evidence, modality contributions,
  sanity checks.
* ``saliency_check``: faithfulness (deletion / insertion) and agreement with a second method, summarised.
* ``render``: overlays (Pillow for the app and CLI, a matplotlib figure for notebooks; no pyplot) and token
  highlights, from plain arrays.

``methods``, ``saliency_check`` and ``render`` are torch-free at import; the names of ``attribution`` (torch,
Captum) are re-exported lazily, so ``import medmm.explain.methods`` (the CLI) does not import torch.
"""

from medmm._lazy import lazy_exports
from medmm.explain.methods import (BY_KEY, DEFAULT_METHOD, METHOD_NAMES, METHODS, NOTES_METHOD_NAMES, NOTES_METHODS,
                                   REGISTRY, ExplanationMethod, method_help, methods_markdown)
from medmm.explain.render import (blend_overlay, figure_to_array, figure_to_png, overlay_array, overlay_figure,
                                  overlay_png, token_highlights)
from medmm.explain.saliency_check import check_saliency, summarise, verdict

_EXPORTS = dict.fromkeys(("TARGET", "ExplainError", "Explanation", "cli_explain", "display_heatmap", "evidence_tokens",
                          "explain", "faithfulness", "image_attribution", "modality_contribution",
                          "randomization_check", "reference_image", "resize_map", "spearman"),
                         "attribution")
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "BY_KEY", "DEFAULT_METHOD", "blend_overlay", "overlay_array", "overlay_png", "ExplainError", "Explanation", "ExplanationMethod", "METHODS",
    "METHOD_NAMES", "NOTES_METHODS", "NOTES_METHOD_NAMES", "REGISTRY", "TARGET", "check_saliency", "cli_explain",
    "display_heatmap", "evidence_tokens", "explain", "faithfulness", "figure_to_array", "figure_to_png", "image_attribution",
    "method_help", "methods_markdown", "modality_contribution", "overlay_figure",
    "randomization_check", "reference_image", "resize_map", "spearman", "summarise",
    "token_highlights", "verdict",
]
