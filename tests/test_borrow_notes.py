"""Notes borrowing in training (``Batcher.notes_donors`` / ``Batcher.get(borrow=...)``): adult image-only films
take the notes features of an adult notes-only record with the same No Finding label (normal films only),
training rows only."""

from __future__ import annotations

import numpy as np
import torch

from medmm.training.data import Record
from medmm.labels import FINDINGS
from medmm.training.train import Batcher, TextCache

NF = FINDINGS.index("No Finding")


def _labels(no_finding: float) -> np.ndarray:
    out = np.full(len(FINDINGS), np.nan)
    out[NF] = no_finding
    return out


RECORDS = [
    Record("nih", "n0", "film0", None, _labels(1.0)),          # 0 adult normal, no notes: borrows a normal note
    Record("nih_sample", "n1", "film1", None, _labels(0.0)),   # 1 adult abnormal: borrows nothing
    Record("kermany", "k2", "film2", None, _labels(1.0)),      # 2 child: never borrows (adult notes)
    Record("iu", "i3", None, "preoperative chest", _labels(1.0)),
    Record("iu", "i4", None, "cough and fever", _labels(0.0)),
    Record("covid", "c5", "film5", "covid pcr positive", _labels(0.0)),  # has its own notes: keeps them
    Record("iu", "i6", None, "chest pain", _labels(1.0)),      # 6 a normal note outside the training rows
]


def _batcher() -> Batcher:
    n, t = len(RECORDS), 4
    # every record's notes features carry its own index, so the test can see whose notes a row reads
    text = TextCache(torch.arange(n).float()[:, None].repeat(1, 3), torch.arange(n)[:, None].repeat(1, t),
                     torch.ones(n, t, dtype=torch.long), torch.arange(n).float() * 10)
    images = {i: torch.zeros(1, 2, 2, 2) for i, r in enumerate(RECORDS) if r.image}
    return Batcher(RECORDS, images, text, "cpu")


def test_donors_are_training_notes_only_records_by_no_finding_label() -> None:
    donors = _batcher().notes_donors(np.arange(6))                # record 6 is not a training row
    assert {k: v.tolist() for k, v in donors.items()} == {1.0: [3]}      # normal-study notes, for normal films


def test_borrowed_rows_read_the_donors_notes_and_keep_their_labels() -> None:
    b = _batcher()
    donors = b.notes_donors(np.arange(6))
    idx = [0, 1, 2, 5]
    batch = b.get(idx, view="clean", generator=torch.Generator().manual_seed(0), borrow=(1.0, donors))
    assert batch.pooled[:, 0].tolist() == [3.0, 1.0, 2.0, 5.0]    # normal film <- normal note; abnormal keeps none
    assert batch.expert.tolist() == [30.0, 10.0, 20.0, 50.0]
    assert batch.has_txt.tolist() == [1.0, 0.0, 0.0, 1.0]          # the child film stays image-only
    assert torch.equal(batch.allowed, b.allowed[idx])             # labels are the film's own
    plain = b.get(idx, view="clean")                               # evaluation: nobody borrows
    assert plain.pooled[:, 0].tolist() == [0.0, 1.0, 2.0, 5.0] and plain.has_txt.tolist() == [0.0, 0.0, 0.0, 1.0]
    never = b.get(idx, view="clean", generator=torch.Generator().manual_seed(0), borrow=(0.0, donors))
    assert never.has_txt.tolist() == plain.has_txt.tolist()


def test_null_notes_show_image_only_films_with_a_note_without_evidence() -> None:
    """``null_notes``: an image-only film is presented with notes whose expert evidence is 0, so that training
    sees notes on films from every source, not only the COVID collection's; films with notes keep theirs."""
    b = _batcher()
    idx = [0, 1, 2, 5]
    batch = b.get(idx, view="clean", generator=torch.Generator().manual_seed(0), null_notes=1.0)
    assert batch.has_txt.tolist() == [1.0, 1.0, 1.0, 1.0]
    assert batch.expert.tolist() == [0.0, 0.0, 0.0, 50.0]        # no evidence; the COVID film keeps its own
    assert torch.equal(batch.allowed, b.allowed[idx])
    assert b.get(idx, view="clean").has_txt.tolist() == [0.0, 0.0, 0.0, 1.0]  # evaluation: off
    some = [b.get(idx, view="clean", generator=torch.Generator().manual_seed(s), null_notes=0.5).has_txt[:3].sum()
            for s in range(40)]
    assert 0 < float(sum(some)) / (40 * 3) < 1                     # a probability, not all-or-nothing


def test_null_notes_need_an_expert_only_notes_pathway() -> None:
    import pytest

    from medmm.training.train import parse_args

    _, cfg = parse_args(["--null-notes", "0.5"])  # the default notes pathway is the expert's evidence only
    assert cfg.null_notes == 0.5 and not cfg.sentence_embedding and cfg.bag_of_words_dim == 0
    for other in (["--sentence-embedding"], ["--bag-of-words-dim", "128"]):  # they would read zeros as a note
        with pytest.raises(SystemExit):
            parse_args(["--null-notes", "0.5", *other])
