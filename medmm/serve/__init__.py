"""Serving the app (``app.py``, the only module that imports gradio): everything here is gradio-free.

* ``server``: the launch settings, and one import for the app of ``cache_dir`` (the private cache folder and its
  clean-up), ``middleware`` (security headers, body caps), ``uploads`` (upload limits, file names replaced),
  ``sessions`` (sessions bound to their client) and ``log_filters`` (nothing identifying in the log).
* ``presenters``: prediction, explanation and report turned into what the UI shows, plus the downloads
  (text, JSON, DICOM SR) of one analysis; one module per panel in ``panels``.

Used as modules: ``from medmm.serve import presenters as fmt, server``.
"""
