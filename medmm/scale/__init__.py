"""Past one process: Ray Serve replicas behind the Gradio app (``serve``) and Ray Data batch scoring (``batch``).

Ray is an optional extra (``pip install ".[ray]"``); nothing here imports it at module level, so the package imports
without it. ``manifest`` holds the one definition of a manifest row's output, shared by the single-process
``predict --manifest`` and the Ray Data path. See docs/scale.md.
"""


class ScaleError(ValueError):
    """A user-facing reason the Ray path cannot run (Ray missing, bad bounds, an unreadable manifest): one line."""
