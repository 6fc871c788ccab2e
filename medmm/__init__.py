"""medmm: multimodal (chest radiograph + clinical notes) decision-support demo.

Outputs are research/demo decision support and machine drafts for clinician review, never a diagnosis.
Heavy imports (torch, transformers, timm, gradio) are deferred to the modules that need them.

Layout: the request path at the top (``pipeline``, ``service``, ``prediction``, ``runtime``, ``energy``, ``study``,
``labels``, ``config``; ``__main__`` is the CLI) and one subpackage per part: ``io`` (loading scans), ``models``,
``explain``, ``report``, ``serve`` (the app's gradio-free side), ``training``, and ``tools`` (benchmarks, never
imported by the runtime). ``tests/test_layout.py`` checks the import rules (README, Architecture).
"""

__version__ = "0.1.0"

# the one disclaimer wording: the app's banner, the JSON result (`predict --json`, /predict_json), every drafted
# report's NOTE section and its DICOM SR
DISCLAIMER = ("Research decision support, not a diagnosis. Model outputs and machine-drafted reports must be checked "
              "against the images and the clinical context, then edited or discarded, by a qualified clinician "
              "before any use.")
