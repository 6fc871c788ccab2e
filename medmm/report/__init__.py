"""Reports (torch-free): rule-based labeller, de-identification, sentence bank, draft, consistency, DICOM SR."""

from medmm.report.draft import *  # noqa: F401,F403  (interim: split in the next commit)
from medmm.report.draft import (BANK_ENV_VAR, DEFAULT_BANK_PATH, DEID_METHOD, INDICATION_CHARS,  # noqa: F401
                                MAX_INDICATION_CHARS, MAX_REPORT_CHARS, MODELLED_CONCEPTS, PNEUMONIA_FAMILY,
                                POSITIVE_BANDS, SUBTYPES, T_INCONSISTENT, T_NF_NEGATIVE, T_NO_CONSOLIDATION,
                                T_NO_IMAGE, T_NORMAL_MODELLED, T_NOT_ASSESSED, T_OPACITY, T_SUBTYPE_CAVEAT,
                                T_SUBTYPE_UNDETERMINED, W_INCONSISTENT, W_SUBTYPE_UNDETERMINED)
