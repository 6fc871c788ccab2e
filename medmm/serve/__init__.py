"""Serving the app (``app.py``, the only module that imports gradio): everything here is gradio-free.

* ``server``: the app's private cache folder and its clean-up, upload limits, security headers, launch settings.
* ``presenters``: prediction, explanation and report turned into what the UI shows, plus the downloads
  (text, JSON, DICOM SR) of one analysis.

Used as modules: ``from medmm.serve import presenters as fmt, server``.
"""
