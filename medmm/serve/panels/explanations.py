"""The explanation panel: what the map and the note colours show, the overlay with its caption, the modality
shares and the note words (drawing by ``medmm.explain.render``, the checks by ``medmm.explain.saliency_check``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def modality_contribution(modality: Mapping[str, Any] | None) -> dict[str, float] | None:
    """``{"image (for Pneumonia)": share, "notes (for Pneumonia)": share}`` (leave-one-out shares from
    ``Explanation.modality``, named with the finding they refer to) for a ``gr.Label``."""
    if not modality or not modality.get("present"):
        return None
    finding = modality.get("finding")
    suffix = f" (for {finding})" if finding else ""
    return {f"{m}{suffix}": round(float(modality.get(f"share_{m}") or 0.0), 4) for m in modality["present"]}


def _p(value: Any) -> str:
    return "—" if value is None else f"{float(value):.2f}"


def explanation_markdown(explanation: Any, check: Mapping[str, Any] | None = None,
                         other_views: Sequence[tuple[Any, Mapping[str, Any] | None]] = ()) -> str:
    """What the overlay and the token colours show: method, finding, probability, the map's own faithfulness
    and agreement result (``medmm.explain.saliency_check``), modality effects, caveats; for a multi-view request,
    what to do with each other view's map."""
    if explanation is None:
        return ""
    from medmm.explain.methods import METHOD_NAMES
    from medmm.explain.saliency_check import advice, details

    target = f"**{explanation.finding}** (p = {explanation.probability:.2f})"
    if explanation.heatmap_scan is None:
        lines = [f"No scan: only the note words are explained, for {target}."]
    else:
        lines = [f"**{METHOD_NAMES.get(explanation.method, explanation.method)}** for {target}: the map shows the "
                 "areas this method attributes to the finding, which is not proof of where the model looked.",
                 f"**{advice(check, METHOD_NAMES)}**", details(check, METHOD_NAMES)]
        if other_views:
            lines[0] = f"Scan {explanation.view + 1}: " + lines[0]
        for exp, chk in other_views:
            lines.append(f"Scan {exp.view + 1}: **{advice(chk, METHOD_NAMES)}** {details(chk, METHOD_NAMES)}")
    m = explanation.modality or {}
    if m.get("p_both") is not None:
        lines.append(f"p(image + notes) {_p(m['p_both'])} · image only {_p(m.get('p_image_only'))} · "
                     f"notes only {_p(m.get('p_notes_only'))}.")
    elif m.get("note"):
        lines.append(str(m["note"]))
    lines += [f"_{n}_" for n in explanation.notes]
    return "\n\n".join(lines)


# ------------------------------------------------------------------------------------------------ explanation drawing
def overlay_caption(explanation: Any, check: Mapping[str, Any] | None) -> str:
    """The overlay's own caption, two short lines: the method and its checks (failed ones first in capitals, and
    where the evidence lies when it is not in the lung fields), then what to do with the map ("Do not use this map to
    locate the finding" unless every check passed)."""
    from medmm.explain.methods import METHOD_NAMES
    from medmm.explain.saliency_check import DO_NOT_LOCATE, WHERE, outside_region, verdict

    name = METHOD_NAMES.get(explanation.method, explanation.method)
    if not check:
        return f"{name}: map not checked\n{DO_NOT_LOCATE}; not a diagnosis"
    short = name if len(name) <= 10 else explanation.method.upper()   # "Integrated Gradients" -> "IG"
    v = verdict(check)
    other = METHOD_NAMES.get(check["compared_with"], check["compared_with"])
    other_short = other if len(other) <= 10 else check["compared_with"].upper()
    where = outside_region(check)
    place = WHERE[where[0]][1] if where else "outside the lungs"
    # per check: (long, short) words; None: not measured, left out
    words = {"faithful": {True: ("better than random", "beats random"), False: ("NO BETTER THAN RANDOM",) * 2},
             "agree": {True: (f"{other} agrees", f"{other_short} agrees"),
                       False: (f"METHODS DISAGREE (vs {other})", "METHODS DISAGREE")},
             "in_lungs": {True: ("evidence in the lung fields", "in lung fields"), False: (f"mostly {place}", place)}}
    parts = [(v[k] is False, words[k][v[k]]) for k in words if v[k] is not None]
    failed = [w for bad, w in parts if bad]
    tries = [f"{name}: {', '.join(w[0] for _, w in parts)}", f"{name}: {', '.join(w[1] for _, w in parts)}"]
    if failed:   # too long: only the failed checks, then their count (and where the evidence lies)
        count = f"all {len(failed)}" if len(failed) == len(parts) else f"{len(failed)} of {len(parts)}"
        tries += [f"{name}: {', '.join(w[1] for w in failed)}", f"{short}: {', '.join(w[1] for w in failed)}",
                  f"{short}: {count} checks failed" + (f", mostly {place}" if v["in_lungs"] is False else "")]
    else:
        tries.append(f"{short}: {', '.join(w[1] for _, w in parts)}")
    if not parts:
        tries = [f"{name}: the checks could not be run"]
    # the figure is ~576 px wide at 17 px DejaVu Sans: about 68 lower-case characters, capitals ~1.45x as wide
    first = next((t for t in tries if len(t) + 0.45 * sum(c.isupper() for c in t) <= 66), tries[-1])
    if v["located"]:
        second = "May help you look at this area; not proof, not a diagnosis"
    elif v.get("in_scope") is False:
        second = f"{DO_NOT_LOCATE}; not assessed here"
    elif v["located"] is False:
        second = f"{DO_NOT_LOCATE}; not a diagnosis"
    else:
        second = f"{DO_NOT_LOCATE}: not fully checked"
    return f"{first}\n{second}"


def overlay_image(explanation: Any, scans: Sequence[Any], check: Mapping[str, Any] | None = None,
                  other_views: Sequence[tuple[Any, Mapping[str, Any] | None]] = ()) -> np.ndarray | None:
    """Saliency overlay on the explained scan as an RGB array, drawn by medmm.explain.render (None without a heatmap);
    a multi-view request's other views (``RequestResult.other_views``) side by side, each with its own caption."""
    if explanation is None or explanation.heatmap_scan is None or explanation.view is None:
        return None
    from medmm.explain.render import overlay_array

    panels = []
    for exp, chk in ((explanation, check), *other_views):
        if exp is None or exp.heatmap_scan is None or exp.view is None:
            continue
        scan = f"scan {exp.view + 1}: " if other_views else ""
        panels.append(overlay_array(scans[exp.view].pixels, exp.heatmap_scan,
                                    f"{scan}{exp.finding} (p = {exp.probability:.2f})",
                                    caption=overlay_caption(exp, chk)))
    if len(panels) == 1:
        return panels[0]
    height = max(p.shape[0] for p in panels)
    gap = np.full((height, 12, 3), 255, np.uint8)
    padded = [np.pad(p, ((0, height - p.shape[0]), (0, 0), (0, 0)), constant_values=255) for p in panels]
    return np.concatenate([x for p in padded for x in (p, gap)][:-1], axis=1)


def note_tokens(explanation: Any, notes: str | None) -> list[tuple[str, float | None]] | None:
    """Note words for a ``gr.HighlightedText``: the words of each concept used as evidence (and of its cue, "no",
    "denies") scored in [-1, 1] (red raises the explained finding, blue lowers it); other words plain. None
    without notes."""
    if explanation is None or not explanation.tokens:
        return None
    from medmm.explain.render import token_highlights

    return token_highlights(explanation.tokens, notes)
