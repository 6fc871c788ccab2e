"""Pure formatting for the Gradio app: tables, panel text and export files from a ``RequestResult``.

Why a module of its own: ``app.py`` stays a thin layer of widgets and handlers, and everything it shows can
be unit-tested without gradio or a browser. This module never imports gradio (medmm never does); values are
plain Python / numpy / pandas objects that gradio components accept as they are.

One module per panel (``medmm.serve.panels``), gathered here for ``app.py`` (``presenters as fmt``):

* ``calls``: the headline chart, the operating-point table, the called / not-assessed summary, the finding chooser;
* ``evidence``: what the notes did (concepts, assertions, likelihood ratios with sources) and the warnings;
* ``explanations``: the map's text, the overlay with its caption, modality shares, the note words;
* ``report``: the session a follow-up reads, the consistency check, the downloads;
* ``scans``: metadata and the viewer; ``energy``: the energy panel; ``page``: status line, landing text, examples.
"""

from __future__ import annotations

from medmm import DISCLAIMER  # the one wording; the app's banner
from medmm.serve.panels.calls import (FINDINGS_COLUMN_WIDTHS, FINDINGS_HEADERS, MOST_PROBABLE,
                                      NOTHING_ASSESSED, POSITIVE_ROW_STYLE, empty_findings_table, explain_request,
                                      finding_choices, findings_label, findings_rows, findings_table,
                                      positive_summary)
from medmm.serve.panels.energy import energy_markdown
from medmm.serve.panels.evidence import notes_evidence_markdown, warnings_markdown
from medmm.serve.panels.explanations import (explanation_markdown, modality_contribution, note_tokens,
                                             overlay_caption, overlay_image)
from medmm.serve.panels.page import (DONE_STATUS, EXAMPLE_SUFFIXES, IDLE_STATUS, RUNNING_STATUS,
                                     TRAINING_SOURCES, example_rows, failed_status, landing_markdown,
                                     model_card_markdown, refused_status)
from medmm.serve.panels.report import (EXPORT_NAMES, ExportFiles, SessionResult, all_warnings,
                                       consistency_markdown, edited_report, result_payload, session_result,
                                       write_exports)
from medmm.serve.panels.scans import (METADATA_FIELDS, metadata_table, middle_slice, viewer_frame,
                                      viewer_stack)

__all__ = ["all_warnings", "consistency_markdown", "DISCLAIMER", "DONE_STATUS", "edited_report",
           "empty_findings_table", "energy_markdown", "example_rows", "EXAMPLE_SUFFIXES", "explain_request",
           "explanation_markdown", "EXPORT_NAMES", "ExportFiles", "failed_status", "finding_choices",
           "FINDINGS_COLUMN_WIDTHS", "FINDINGS_HEADERS", "findings_label", "findings_rows", "findings_table",
           "IDLE_STATUS", "landing_markdown", "METADATA_FIELDS", "metadata_table", "middle_slice",
           "modality_contribution", "model_card_markdown", "MOST_PROBABLE", "note_tokens", "notes_evidence_markdown",
           "NOTHING_ASSESSED", "overlay_caption", "overlay_image", "POSITIVE_ROW_STYLE", "positive_summary",
           "refused_status", "result_payload", "RUNNING_STATUS", "session_result", "SessionResult",
           "TRAINING_SOURCES", "viewer_frame", "viewer_stack", "warnings_markdown", "write_exports"]
