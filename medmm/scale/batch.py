"""``predict --manifest CSV --engine ray``: batch scoring over Ray Data.

``read_csv`` -> ``map_batches`` over a pool of model actors (each loads the pipeline once) -> one CSV or Parquet file
written by this process as blocks arrive (streaming: memory stays bounded by the blocks in flight, not by the
manifest). Every row goes through :func:`medmm.scale.manifest.score_row`, the function the single-process path uses,
and the output keeps the manifest's row order, so the file is the one ``--engine local`` writes (tests/test_ray.py).
"""

from __future__ import annotations

import csv
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterator

from medmm.scale import ScaleError
from medmm.scale.manifest import output_fields, score_row

log = logging.getLogger(__name__)

INPUT_COLUMNS = ("image", "notes")
ROWS_PER_BATCH = 8        # rows handed to an actor at a time (each row is still one request: one pipeline.predict)


class ManifestError(ScaleError):
    """The manifest cannot be read; the message is the one the single-process path prints."""


class RowScorer:
    """A Ray Data actor: one loaded pipeline, scoring batches of manifest rows."""

    def __init__(self, checkpoint: str, runtime: str | None, manifest_dir: str, threads: int = 1) -> None:
        import torch

        from medmm.pipeline import Pipeline

        torch.set_num_threads(max(1, threads))
        self.pipeline = Pipeline.from_checkpoint(checkpoint, runtime=runtime)
        self.fields = output_fields(self.pipeline.findings)
        self.manifest_dir = Path(manifest_dir)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        columns = list(batch)
        rows = [dict(zip(columns, values)) for values in zip(*(batch[c] for c in columns))]
        scored = [score_row(self.pipeline, row, self.manifest_dir) for row in rows]
        return {field: [row.get(field, "") for row in scored] for field in self.fields}


def manifest_columns(manifest: Path) -> list[str]:
    """The manifest's input columns (``image`` and/or ``notes``); the single-process path's errors otherwise."""
    try:
        with manifest.open(newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ManifestError(f"cannot read manifest {manifest.name}: {e}") from None
    present = [c for c in INPUT_COLUMNS if c in header]
    if header and not present:
        raise ManifestError(f"manifest {manifest.name} needs an 'image' and/or 'notes' column")
    return present


def scored_batches(manifest: Path, checkpoint: str, runtime: str | None, workers: int) -> Iterator[dict[str, list]]:
    """The scored rows, batch by batch, in manifest order."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import ray

    columns = manifest_columns(manifest)
    if not columns:
        return
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True      # the output keeps the manifest's row order
    ctx.enable_progress_bars = False
    ds = ray.data.read_csv(str(manifest), parse_options=pacsv.ParseOptions(newlines_in_values=True),
                           convert_options=pacsv.ConvertOptions(include_columns=columns,
                                                                column_types={c: pa.string() for c in columns}))
    scored = ds.map_batches(RowScorer, batch_size=ROWS_PER_BATCH, batch_format="numpy", num_cpus=1,
                            compute=ray.data.ActorPoolStrategy(size=workers), fn_constructor_kwargs={"checkpoint": checkpoint, "runtime": runtime,
                                                               "manifest_dir": str(manifest.parent)})
    yield from scored.iter_batches(batch_size=None, batch_format="numpy")


def run_manifest(manifest: str | Path, out: str | Path, checkpoint: str, runtime: str | None = None,
                 workers: int = 1) -> dict[str, Any]:
    """Score ``manifest`` into ``out`` (``.parquet``: Parquet, anything else: CSV) with ``workers`` model actors.
    Returns counts and timing (rows, rows_per_s)."""
    from medmm.models.checkpoint import read_meta
    from medmm.scale.cluster import init_ray

    manifest, out = Path(manifest), Path(out)
    fields = output_fields(read_meta(checkpoint).findings)
    manifest_columns(manifest)                       # a bad manifest fails before a cluster starts
    init_ray(num_cpus=max(os.cpu_count() or 1, workers + 1))   # one CPU for reading besides the actors
    t0, rows = time.perf_counter(), 0
    writer = _ParquetRows(out, fields) if out.suffix.lower() == ".parquet" else _CsvRows(out, fields)
    with writer:
        for batch in scored_batches(manifest, checkpoint, runtime, workers):
            n = writer.write(batch)
            rows += n
    elapsed = time.perf_counter() - t0
    return {"rows": rows, "workers": workers, "seconds": round(elapsed, 2),
            "rows_per_s": round(rows / elapsed, 3) if elapsed else None}


class _CsvRows:
    """The single-process path's CSV: same header, same quoting (``csv.DictWriter``)."""

    def __init__(self, path: Path, fields: list[str]) -> None:
        self.path, self.fields = path, fields

    def __enter__(self) -> "_CsvRows":
        self._file = open(self.path, "w", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._file, fieldnames=self.fields)
        self._writer.writeheader()
        return self

    def write(self, batch: dict[str, Any]) -> int:
        n = len(batch[self.fields[0]])
        for i in range(n):
            self._writer.writerow({f: str(batch[f][i]) for f in self.fields})
        return n

    def __exit__(self, *exc: Any) -> None:
        self._file.close()


class _ParquetRows:
    """The same columns as the CSV, every value the CSV's text (probabilities with 6 decimals)."""

    def __init__(self, path: Path, fields: list[str]) -> None:
        self.path, self.fields = path, fields

    def __enter__(self) -> "_ParquetRows":
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._pa = pa
        self._schema = pa.schema([(f, pa.string()) for f in self.fields])
        self._writer = pq.ParquetWriter(self.path, self._schema)
        return self

    def write(self, batch: dict[str, Any]) -> int:
        table = self._pa.table({f: [str(v) for v in batch[f]] for f in self.fields}, schema=self._schema)
        self._writer.write_table(table)
        return table.num_rows

    def __exit__(self, *exc: Any) -> None:
        self._writer.close()
