"""Build a checkpoint's graph set in the cache (this imports torch): the first run does it, or ``medmm warmup``.

``warm`` exports what is missing (``medmm.runtime.export``: image encoder, input gate, fusion head, notes
features) and then writes the index (``GraphSet``) last, so a reader never finds an index whose graphs are not
all there. Concurrent warm-ups of one folder are safe: every file is written atomically, and two writers of one
file write the same bytes. A folder that cannot be written raises ``CacheNotWritable`` before any work.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from medmm.runtime import cache_dir
from medmm.runtime.cache import GraphSet, ensure_writable
from medmm.runtime.graphs import graph_set_key
from medmm.models.inference import load_folded

log = logging.getLogger(__name__)


def warm(checkpoint: str | Path, *, model: Any = None, meta: Any = None, gate: Any = None,
         folder: Path | None = None) -> GraphSet:
    """Export ``checkpoint``'s graph set into ``folder`` (default: the cache folder) and index it.

    ``model``/``meta``: the loaded, BatchNorm-folded torch model (``load_folded``) when the caller has it; loaded
    here otherwise. ``gate``: the checkpoint's input gate (read from its folder when not given)."""
    import torch

    from medmm import __version__
    from medmm.gate import load_gate
    from medmm.runtime.export import export_gate, export_head, export_image_encoder, export_text_encoder

    folder = Path(folder or cache_dir())
    ensure_writable(folder)
    if model is None:
        model, meta, _ = load_folded(checkpoint)
    gate = load_gate(checkpoint) if gate is None else gate
    sha, size = meta.weights_sha256, meta.preprocessing.input_size
    files = {"image": export_image_encoder(model.image_encoder, sha, size, folder).name,
             "head": export_head(model, sha, folder).name}
    if gate is not None:
        files["gate"] = export_gate(model.image_encoder, gate, sha, size, folder).name
    text_dim = None
    if model.text_encoder is not None:
        files["text"] = export_text_encoder(model.text_encoder, folder, getattr(model, "bag_of_words", None)).name
        text_dim = model.text_encoder.dim
    found = GraphSet(graph_set_key(meta, gate), sha, files, text_dim,
                     {"medmm": __version__, "torch": torch.__version__})
    log.info("graph set %s written to %s", found.save(folder).name, folder)
    return found


__all__ = ["warm"]
