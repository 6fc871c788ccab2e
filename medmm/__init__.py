"""medmm: multimodal (chest radiograph + clinical notes) decision-support demo.

Outputs are research/demo decision support and machine drafts for clinician review, never a diagnosis.
Heavy imports (torch, transformers, timm, gradio) are deferred to the modules that need them.
"""

__version__ = "0.1.0"
