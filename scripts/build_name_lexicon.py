"""Build medmm/report/deid/lexicon.json.gz: the first-name and surname lists medmm.report.deid matches names against.

    pip install faker          # development only (MIT); the app reads the generated file, not faker
    python scripts/build_name_lexicon.py

Names: every Latin-script first name and surname in Faker's person providers (all locales), folded to ASCII and
lower case. Words that are ordinary clinical or English vocabulary are removed (they would be redacted wherever
they are capitalised): every word that occurs at least twice in the IU chest X-ray reports (../shared, real report
prose whose identifiers were already removed) plus a short list of everyday words below. Eponyms (Parkinson,
Hodgkin...) are handled by rules in medmm.report.deid, not here.
"""

from __future__ import annotations

import csv
import gzip
import importlib
import json
import pkgutil
import re
import sys
import unicodedata
from collections import Counter
from pathlib import Path

from medmm.training.data import SHARED_DATA

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "medmm" / "report" / "deid" / "lexicon.json.gz"
IU = SHARED_DATA / "iu_reports" / "indiana_reports.csv"
EVERYDAY = """a an and are as at be but by can day days did do does for from had has have he her him his how i if in
into is it its me my no not of on one or our out over she so than that the their them then there they this to too
two up us was we were what when where which who why will with would you your said says say told tells called call
came come went go goes got get gets make made may might must shall should could can't won't just very well good
best better new old long short high low white black brown green grey gray young king queen page paige bill art
hope grace joy faith rose lily iris dawn summer autumn april june august mark frank grant chase major miles price
rich rush stone wood hill lane street field fields park parks ford hunt hall bell bush cross gay case cook wells
page little love christian sunday monday tuesday wednesday thursday friday saturday january february march july
september october november december per via pat sat sun son man men ward room bed care doctor nurse patient""".split()


def fold(name: str) -> str:
    return unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower().replace("'", "").replace("’", "")


def faker_names() -> tuple[set[str], set[str]]:
    import faker.providers.person as person  # type: ignore

    first: set[str] = set()
    last: set[str] = set()
    token = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")
    for module in pkgutil.iter_modules(person.__path__):
        try:
            provider = importlib.import_module(f"{person.__name__}.{module.name}").Provider
        except Exception:  # noqa: BLE001
            continue
        for attr, dest in (("first_names", first), ("first_names_male", first), ("first_names_female", first),
                           ("first_names_nonbinary", first), ("last_names", last)):
            values = next((c.__dict__[attr] for c in provider.__mro__ if isinstance(c.__dict__.get(attr), (list, tuple, dict))), ())
            for value in values:
                for part in str(value).split():
                    if token.fullmatch(part):
                        folded = fold(part)
                        if re.fullmatch(r"[a-z][a-z-]+", folded):
                            dest.add(folded)
    return first, last


def report_vocabulary() -> set[str]:
    if not IU.exists():
        sys.exit(f"IU reports not found at {IU} (see shared/README.md)")
    counts: Counter[str] = Counter()
    with IU.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            for col in ("indication", "comparison", "findings", "impression", "MeSH", "Problems"):
                counts.update(w.lower() for w in re.findall(r"[A-Za-z]+", row.get(col) or "") if w != "XXXX")
    return {w for w, n in counts.items() if n >= 2}


def main() -> int:
    first, last = faker_names()
    stop = report_vocabulary() | set(EVERYDAY)
    payload = {"source": "Faker person providers (MIT licence), all locales, Latin script, folded to ASCII; "
                         "ordinary words removed (IU report vocabulary and an everyday-word list)",
               "first": sorted(first - stop), "last": sorted(last - stop),
               # ordinary words: after a label ("Patient History") a capitalised one is not taken for a name
               "common": sorted(stop)}
    OUT.write_bytes(gzip.compress(json.dumps(payload, separators=(",", ":")).encode(), mtime=0))
    print(f"{len(payload['first'])} first names, {len(payload['last'])} surnames -> {OUT} ({OUT.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
