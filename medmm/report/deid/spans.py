"""A found identifier (``Span``) and how overlapping ones are merged."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    tag: str


def merge(spans: list[Span]) -> list[Span]:
    out: list[Span] = []
    for s in sorted(spans, key=lambda s: (s.start, -(s.end - s.start))):
        if s.end <= s.start:
            continue
        if out and s.start < out[-1].end:
            if s.end > out[-1].end:
                out[-1] = Span(out[-1].start, s.end, out[-1].tag)
            continue
        out.append(s)
    # a name directly followed or preceded by another name (e.g. "Doe, John") stays two tags; that is fine
    return out

