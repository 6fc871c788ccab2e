"""Cleaning of user text (clinical notes, edited reports), one rule for every path that takes it (torch-free)."""

from __future__ import annotations

import unicodedata

_DROPPED = frozenset({"Cf", "Cs", "Co", "Cn"})


def strip_controls(text: str) -> str:
    """Control characters (Unicode category Cc: NUL, escapes, newlines, tabs) become spaces, so the words they
    separated stay apart; format characters (zero-width spaces and joiners, bidi overrides), lone surrogates,
    private-use and unassigned code points are dropped: they can hide a word from the notes reader and a name from
    the de-identifier ("fe\\u200bver", "Jo\\u200dhn")."""
    if text.isascii() and text.isprintable():
        return text
    out = []
    for ch in text:
        category = unicodedata.category(ch)
        if category == "Cc":
            out.append(" ")
        elif category not in _DROPPED:
            out.append(ch)
    return "".join(out)


__all__ = ["strip_controls"]
