"""The notes' token ids without transformers: ``tokenizers`` over the text encoder's own ``tokenizer.json``.

``NotesTokenizer(texts)`` gives what ``TextEncoder.tokenize`` (transformers' fast tokenizer, ``padding=True,
truncation=True, max_length=max_tokens``) gives, as int64 numpy arrays: the same ids (the fast tokenizer *is* this
file), truncated to ``max_tokens`` including ``[CLS]``/``[SEP]``, padded on the right to the longest text.
The file's own truncation and padding settings (128, fixed) are the sentence-transformers defaults, replaced here
by the call's, as transformers replaces them. ``tests/test_torch_free.py`` checks the ids against transformers'.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class NotesTokenizer:
    def __init__(self, path: str | Path, max_tokens: int) -> None:
        import json

        from tokenizers import Tokenizer

        self.path, self.max_tokens = Path(path), int(max_tokens)
        self.tokenizer = Tokenizer.from_file(str(path))
        padding = json.loads(self.path.read_text(encoding="utf-8")).get("padding") or {}
        self.pad_id = int(padding.get("pad_id", 0))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=self.max_tokens, strategy="longest_first", stride=0)

    @classmethod
    def for_text_encoder(cls, name: str, max_tokens: int) -> "NotesTokenizer | None":
        """The tokenizer of the checkpoint's text encoder (``ModelConfig.text_encoder``), or None without a
        ``tokenizer.json`` (a slow-tokenizer model: the torch path tokenizes it)."""
        from medmm.models.offline import tokenizer_file

        path = tokenizer_file(name)
        return None if path is None else cls(path, max_tokens)

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(input_ids, attention_mask)``, each ``[N, T]`` int64 (T: the longest text's tokens)."""
        encodings = self.tokenizer.encode_batch(list(texts))
        width = max((len(e.ids) for e in encodings), default=0)
        ids = np.full((len(encodings), width), self.pad_id, np.int64)
        mask = np.zeros((len(encodings), width), np.int64)
        for row, e in enumerate(encodings):
            ids[row, :len(e.ids)] = e.ids
            mask[row, :len(e.ids)] = 1
        return ids, mask


__all__ = ["NotesTokenizer"]
