"""One module per panel of the app: each turns a result into what its components show (no gradio here).

``medmm.serve.presenters`` gathers them for ``app.py`` (``from medmm.serve import presenters as fmt``).
"""
