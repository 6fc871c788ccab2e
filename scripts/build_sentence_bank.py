"""Build the report sentence bank shipped in ``assets/sentence_bank.npz`` from the IU chest X-ray reports.

    python scripts/build_sentence_bank.py                       # all 3,851 IU reports -> assets/
    python scripts/build_sentence_bank.py --out /tmp/bank.npz --min-count 3

Splits the ``findings`` and ``impression`` sections into sentences, drops sentences that relied on ``XXXX``
placeholders or talk about comparisons/technique, dedupes with per-report frequency counts, keeps the
sentences a draft could use, labels them with ``medmm.report.labeler`` and embeds them with
``medmm.models.encoders.embed_texts`` (all-MiniLM-L6-v2 from the offline wheel). Source data: Open-i IU reports
(non-commercial terms); the bank is a derived artefact under the same terms.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
from pathlib import Path
from typing import Iterable

from medmm.training.data import SHARED_DATA
from medmm.report.labeler import LABELER_VERSION
from medmm.report import DEFAULT_BANK_PATH, SentenceBank, build_bank

log = logging.getLogger("build_sentence_bank")
DEFAULT_REPORTS = SHARED_DATA / "iu_reports" / "indiana_reports.csv"


def read_reports(path: Path) -> list[dict[str, str]]:
    """Rows of the IU reports CSV (uid, MeSH, Problems, image, indication, comparison, findings, impression)."""
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def sections(rows: Iterable[dict[str, str]]) -> list[tuple[str, str]]:
    return [(r.get("findings") or "", r.get("impression") or "") for r in rows]


def build_from_rows(rows: list[dict[str, str]], min_count: int = 2, source: str = "IU chest X-ray reports (Open-i)",
                    extra_meta: dict | None = None) -> SentenceBank:
    """Bank from IU rows, embedded with the project's text encoder (imported here: it loads torch)."""
    from medmm.models.encoders import embed_texts

    meta = {"source": source, "license": "Open-i terms of use (non-commercial)", "labeler_version": LABELER_VERSION,
            "embedding": "all-MiniLM-L6-v2 mean-pooled, L2-normalised (medmm.models.encoders.embed_texts)",
            **(extra_meta or {})}
    return build_bank(sections(rows), lambda texts: embed_texts(texts, batch_size=128), min_count=min_count, meta=meta)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reports", type=Path, default=DEFAULT_REPORTS, help="indiana_reports.csv")
    parser.add_argument("--out", type=Path, default=DEFAULT_BANK_PATH, help="output .npz")
    parser.add_argument("--min-count", type=int, default=2, help="keep sentences seen in at least this many reports")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args.reports.exists():
        parser.error(f"reports not found: {args.reports} (needs ../shared/data/iu_reports)")
    rows = read_reports(args.reports)
    digest = hashlib.sha256(args.reports.read_bytes()).hexdigest()
    bank = build_from_rows(rows, args.min_count, extra_meta={"reports_sha256": digest})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    bank.save(args.out)
    size = args.out.stat().st_size
    summary = {"out": str(args.out), "sentences": len(bank), "reports": len(rows), "bytes": size}
    print(json.dumps(summary))
    if size > 5 * 1024 * 1024:
        log.warning("bank is %.1f MB (> 5 MB budget)", size / 2**20)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
