"""Machine-drafted reports for clinician review: torch-free (numpy only; pydicom for the SR when it is written).

* ``labeler``: rule-based finding labeller (mentions, negation, uncertainty) for report and notes text.
* ``deid``: de-identification of free text (rules + a name lexicon, ``deid/lexicon.json.gz``).
* ``bank``: the sentence bank of real report sentences a draft may reuse.
* ``draft``: ``draft_report`` -> ``Report`` (Indication / Findings / Impression), exports, clinician edits.
* ``consistency``: a prediction's internal consistency; a (edited) report checked against the prediction.
* ``dicom_sr``: a ``Report`` as a DICOM Basic Text SR.
"""

from medmm import DISCLAIMER
from medmm.report.bank import BANK_ENV_VAR, DEFAULT_BANK_PATH, SentenceBank, build_bank, clean_bank_sentence, load_bank
from medmm.report.consistency import (MAX_REPORT_CHARS, PNEUMONIA_FAMILY, POSITIVE_BANDS, SUBTYPES,
                                      W_INCONSISTENT, W_SUBTYPE_UNDETERMINED, Contradiction, check_consistency,
                                      competing_subtypes, consistency_warnings, report_sections)
from medmm.report.deid import DEID_METHOD, find_phi, phi_words, scrub_identifiers
from medmm.report.dicom_sr import BASIC_TEXT_SR, to_dicom_sr
from medmm.calls import T_NF_NEGATIVE, T_NORMAL_MODELLED
from medmm.report.draft import (INDICATION_CHARS, MAX_INDICATION_CHARS, MODELLED_CONCEPTS, NOT_PROVIDED,
                                T_INCONSISTENT, T_NO_CONSOLIDATION, T_NO_IMAGE, T_NOT_ASSESSED, T_OPACITY, T_SUBTYPE_CAVEAT, T_SUBTYPE_UNDETERMINED, DraftSentence,
                                Report, apply_edits, clean_indication, draft_report)
from medmm.report.labeler import (LABELER_VERSION, Mention, binary_labels, find_mentions, label_sentence, label_text,
                                  split_sentences)

__all__ = [
    "BANK_ENV_VAR", "BASIC_TEXT_SR", "Contradiction", "DEFAULT_BANK_PATH", "DEID_METHOD", "DISCLAIMER",
    "DraftSentence", "INDICATION_CHARS", "LABELER_VERSION", "MAX_INDICATION_CHARS", "MAX_REPORT_CHARS",
    "MODELLED_CONCEPTS", "Mention", "NOT_PROVIDED", "PNEUMONIA_FAMILY", "POSITIVE_BANDS", "Report", "SUBTYPES",
    "SentenceBank", "T_INCONSISTENT", "T_NF_NEGATIVE", "T_NO_CONSOLIDATION", "T_NO_IMAGE", "T_NORMAL_MODELLED",
    "T_NOT_ASSESSED", "T_OPACITY", "T_SUBTYPE_CAVEAT", "T_SUBTYPE_UNDETERMINED", "W_INCONSISTENT",
    "W_SUBTYPE_UNDETERMINED", "apply_edits", "binary_labels", "build_bank", "check_consistency",
    "clean_bank_sentence", "clean_indication", "competing_subtypes", "consistency_warnings", "draft_report",
    "find_mentions", "find_phi", "label_sentence", "label_text", "load_bank", "phi_words", "report_sections",
    "scrub_identifiers", "split_sentences", "to_dicom_sr",
]
