"""Reading clinical notes: concepts with assertion (``reader``, medspaCy ConText) and evidence with published
likelihood ratios combined with the image by Bayes' rule (``evidence``). Torch-free."""

from medmm.notes.evidence import (Evidence, NotesEvidence, combine, likelihood_table, marginals, pretest_states,
                                  update_states)
from medmm.notes.reader import Concept, NoteReading, read_note

__all__ = ["Concept", "Evidence", "NoteReading", "NotesEvidence", "combine", "likelihood_table", "marginals",
           "pretest_states", "read_note", "update_states"]
