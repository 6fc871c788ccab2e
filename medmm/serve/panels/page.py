"""The page around the results: status line, landing text, model card, examples (no gradio here)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medmm.explain.methods import DEFAULT_METHOD
from medmm.serve.panels.calls import MOST_PROBABLE
from medmm.sources import ALIASES, SOURCES

IDLE_STATUS = "Results appear here after **Analyze**."
RUNNING_STATUS = "**Analysing…** Previous results were cleared."
DONE_STATUS = "Analysis complete: review the warnings, then the findings and the draft."
# One line per training source (keys of CheckpointMeta.training["records"]), from the one source table; unknown
# sources are named as they are.
TRAINING_SOURCES = {name: SOURCES[ALIASES.get(name, name)].description for name in (*SOURCES, *ALIASES)}


# ------------------------------------------------------------------------------------------------ status
def refused_status(message: str) -> str:
    """The status panel after the input gate refused the request (not a chest radiograph, lateral views only)."""
    return (f"**Not analysed:** {message}\n\nNo probabilities, calls or draft report are given for it (the previous "
            "results were cleared).")


def failed_status(message: str) -> str:
    """The status panel after a failed request: the reason, once, and that nothing is shown for it."""
    return (f"**The request failed:** {message}\n\nNo result is shown and no report can be downloaded for it "
            "(the previous results were cleared).")


# ------------------------------------------------------------------------------------------------ landing
def landing_markdown(findings: Sequence[str], training: Mapping[str, Any] | None) -> str:
    """What the model outputs, whom it was trained on, and where its model card is (top of the page)."""
    records = dict((training or {}).get("records") or {})
    population = "; ".join(f"{n:,} {TRAINING_SOURCES.get(k, k)}" for k, n in records.items()) or "not recorded"
    return (f"**Outputs:** probabilities for {len(findings)} findings only: {', '.join(findings)}. Nothing else on "
            "the film (heart, pleura, bones, devices, other lung findings) is assessed by this model.\n\n"
            f"**Trained on:** {population}. Outside these populations (e.g. adult films other than the COVID-19 "
            "collection) the outputs are less reliable; see the warnings of each request.\n\n"
            "**Model card:** open *About this model (model card)* below for the data, metrics and known failure "
            "modes (also `MODEL_CARD.md` in the repository).")


def model_card_markdown(path: str | Path) -> str:
    """MODEL_CARD.md for display in the app (figures, which the app does not serve, become a pointer)."""
    import re

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError:
        return "The model card (MODEL_CARD.md) is not available on this server."
    return re.sub(r"!\[([^\]]*)\]\([^)]*\)", r"_(figure: \1, in MODEL_CARD.md in the repository)_", text)


# ------------------------------------------------------------------------------------------------ examples
EXAMPLE_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm", ""}


def example_rows(folder: str | Path, finding: str = MOST_PROBABLE, method: str = DEFAULT_METHOD) -> tuple[list[list[Any]], list[str]]:
    """Rows ``[[files], notes, finding, method]`` and labels from ``folder``.

    Each example is an image (``NN_name.ext``) with optional notes in ``NN_name.txt`` beside it; a ``.txt``
    without an image is a notes-only example. The ``NN_`` prefix orders them and is dropped from the label.
    """
    folder = Path(folder)
    stems: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.upper().startswith(("README", "LICENSE")) or path.name.startswith("."):
            continue
        entry = stems.setdefault(path.stem, {"files": [], "notes": ""})
        if path.suffix.lower() == ".txt":
            entry["notes"] = path.read_text(encoding="utf-8").strip()
        elif path.suffix.lower() in EXAMPLE_SUFFIXES:
            entry["files"].append(str(path))
    rows, labels = [], []
    for stem, entry in sorted(stems.items()):
        rows.append([entry["files"] or None, entry["notes"], finding, method])
        labels.append(stem.split("_", 1)[-1].replace("_", " "))
    return rows, labels
