"""What each data source is: one table, read by training (sites, populations), calibration and the screen.

``SOURCES[name]`` -> ``Source``: the site it comes from (leave-one-source-out holds a whole site out: the two NIH
sets are one hospital), the population it shows (children or adults), whether it has images, and the line the
app's model card shows. A source that is not in the table (a user's ``--manifest``) is its own site and is
treated as adult, as training always has.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Source:
    name: str
    site: str
    population: str        # "child" or "adult"
    images: bool
    description: str       # for the app's landing text and model card


SOURCES: dict[str, Source] = {s.name: s for s in (
    Source("kermany", "kermany", "child", True,
           "pediatric chest radiographs (Kermany et al. 2018; Guangzhou; children aged 1-5)"),
    Source("covid", "covid", "adult", True,
           "adult radiographs of the COVID-19 image data collection (many cropped from publications), with notes"),
    Source("iu", "iu", "adult", False,
           "clinical indications of Indiana University chest X-ray reports (text only, no images)"),
    Source("nih", "nih", "adult", True, "adult NIH ChestX-ray14 radiographs (normal and pneumonia films)"),
    Source("nih_sample", "nih", "adult", True,
           "adult NIH ChestX-ray14 radiographs (one per patient across the archive)"),
)}
# older checkpoints name the NIH set by its folder
ALIASES = {"nih_adult": "nih"}

IMAGE_SOURCES = tuple(name for name, s in SOURCES.items() if s.images)
CHILD_SOURCES = tuple(name for name, s in SOURCES.items() if s.population == "child")
# adult films from outside the COVID-19 collection: the NIH archive (its two sets)
NIH_SOURCES = tuple(name for name, s in SOURCES.items() if s.site == "nih")


def site(name: str) -> str:
    """The site a source's patients come from (a source outside the table is its own site)."""
    source = SOURCES.get(name)
    return source.site if source is not None else name


def description(name: str) -> str | None:
    source = SOURCES.get(ALIASES.get(name, name))
    return source.description if source is not None else None
