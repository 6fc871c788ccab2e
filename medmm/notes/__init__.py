"""Reading clinical notes: concepts with assertion (``reader``, medspaCy ConText) and evidence with published
likelihood ratios (``evidence``, from the tables of ``tables``; correlated concepts counted once by ``families``)
combined with the image by Bayes' rule (``bayes``). Torch-free."""

from medmm.notes.bayes import marginals, pretest_states, update_states
from medmm.notes.evidence import Evidence, NotesEvidence, combine
from medmm.notes.reader import Concept, NoteReading, read_note
from medmm.notes.tables import likelihood_table

__all__ = ["Concept", "Evidence", "NoteReading", "NotesEvidence", "combine", "likelihood_table", "marginals",
           "pretest_states", "read_note", "update_states"]
