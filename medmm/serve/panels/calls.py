"""The calls panel: the headline chart, the operating-point table and the called / not-assessed summary
(``medmm.calls.Call`` for every word), and the finding chooser of the explanation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from medmm.prediction import Prediction

MOST_PROBABLE = "most probable"
FINDINGS_HEADERS = ["Finding", "Probability", "Threshold", "Positive"]
FINDINGS_COLUMN_WIDTHS = ["30%", "24%", "23%", "23%"]   # all four columns readable on a 390 px phone screen
POSITIVE_ROW_STYLE = "background-color: #fde2e1; font-weight: 600"


def finding_choices(findings: Sequence[str]) -> list[str]:
    """Dropdown choices for the finding to explain: ``most probable`` first, then the model's findings."""
    return [MOST_PROBABLE, *findings]


def explain_request(choice: str | None, method: str) -> dict[str, Any]:
    """``explain=`` argument of ``run_request``: ``finding=None`` lets medmm.explain pick the most probable."""
    return {"finding": None if choice in (None, "", MOST_PROBABLE) else choice, "method": method}


NOTHING_ASSESSED = "Not assessed on this film: see the table and the warnings"


def findings_label(pred: Prediction) -> dict[str, float] | str:
    """``{finding: probability}`` for a ``gr.Label`` (it sorts and shows the top entries): the findings the model
    assesses on this film only; out-of-scope ones (adult films, COVID-19 from the image alone) stay in the table
    with their reason, not in the headline chart. When none is assessed, a sentence says so (an empty chart reads as
    a failure)."""
    shown = {f: round(float(p), 4) for f, p in pred.findings.items() if pred.call(f).in_scope}
    return shown if shown or not pred.findings else NOTHING_ASSESSED


def findings_rows(pred: Prediction) -> list[list[Any]]:
    """One row per finding in model order: name, probability, stored threshold, and the call's label
    (``medmm.calls.Call.label``: "YES (likely)", "no: competing subtype", "not assessed", "no (unlikely)")."""
    return [[f, round(float(p), 3), round(float(pred.thresholds[f]), 3), pred.call(f).label]
            for f, p in pred.findings.items()]


def findings_table(pred: Prediction):
    """``pandas`` Styler of :func:`findings_rows` with positive findings highlighted (``gr.Dataframe`` renders it)."""
    import pandas as pd

    frame = pd.DataFrame(findings_rows(pred), columns=FINDINGS_HEADERS)
    positive = frame["Finding"].isin(pred.positive)
    return frame.style.apply(lambda row: [POSITIVE_ROW_STYLE if positive[row.name] else ""] * len(row), axis=1) \
        .format(precision=3)


def empty_findings_table():
    """The operating-point table with its headers and no rows (before and between requests)."""
    import pandas as pd

    return pd.DataFrame(columns=FINDINGS_HEADERS)


def positive_summary(pred: Prediction) -> str:
    """Which findings are called, and (one line each) what is not assessed on this film and why."""
    calls = [pred.call(f) for f in pred.findings]
    head = ("Called (at or above the operating threshold, by the rules in the model card): "
            + ", ".join(f"**{c.finding}** ({c.band})" for c in calls if c.called) + "."
            if pred.positive else "No finding is called.")
    withheld = [f"- {c.finding} not called: {c.detail}" for c in calls if c.band == "withheld" and c.detail]
    scope = [f"- {c.detail}" for c in calls if not c.in_scope and c.finding in ("No Finding", "Pneumonia")]
    if any(not c.in_scope for c in calls) and not scope:
        scope = [f"- {c.detail}" for c in calls if not c.in_scope and c.probability >= c.threshold]
    return "\n".join([head, *withheld, *scope])
