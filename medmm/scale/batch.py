"""``predict --manifest CSV --engine ray``: batch scoring over Ray Data, streaming and resumable per block.

The manifest is cut into blocks of ``block_rows`` rows (one pass in this process with ``csv.DictReader``, the parser
``--engine local`` uses, so both see the same rows; only each block's start offset is kept, not the rows). A Ray
Data dataset of block descriptors goes through ``map_batches`` over a pool of model actors (each loads the pipeline
once, reads its block's rows from the manifest and scores them with :func:`medmm.scale.manifest.score_row`, the
single-process path's function); each finished block comes back as the CSV text of its rows and is written at once,
atomically (temp file + rename), as a part file in ``OUT.parts/`` beside the output. When every block is there the
output is assembled in manifest order (CSV: the header then the parts' bytes, so the file is the one ``--engine
local`` writes; Parquet: the same text values) through a temp file and a rename, and the parts are removed.

Resuming: a part's name carries the run's key (sha256 of the manifest's bytes, the checkpoint's ``meta.json``
(weights sha256 included), the runtime, the block size and medmm's version) and its block index. A rerun of the same
command after a crash or Ctrl-C skips the blocks already written; parts of any other key (a changed manifest or
checkpoint) are deleted, never reused.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from medmm.scale import ScaleError
from medmm.scale.manifest import output_fields, pin_scoring_threads, score_row

log = logging.getLogger(__name__)

INPUT_COLUMNS = ("image", "notes")
BLOCK_ROWS = 128          # rows per block: the unit of work handed to an actor and of resuming
PARTS_SUFFIX = ".parts"
KEY_CHARS = 16            # of the run key's hex digest, in each part's name
_PART = re.compile(r"^(?P<key>[0-9a-f]{%d})-(?P<block>\d{6,})\.csv$" % KEY_CHARS)
_TMP = re.compile(r"^\.[0-9a-f]{%d}-\d{6,}\.csv\.\d+\.tmp$" % KEY_CHARS)


class ManifestError(ScaleError):
    """The manifest cannot be read; the message is the one the single-process path prints."""


@dataclass(frozen=True)
class Block:
    index: int
    offset: str           # TextIOWrapper.tell() cookie of the block's first row (a string: it may exceed 64 bits)
    rows: int


@dataclass(frozen=True)
class Plan:
    header: list[str]
    blocks: list[Block]
    rows: int


def _open(manifest: Path):
    return manifest.open(newline="", encoding="utf-8")


def plan_blocks(manifest: Path, block_rows: int = BLOCK_ROWS) -> Plan:
    """The manifest's header and its blocks' offsets, in one streaming pass; the single-process path's errors."""
    blocks: list[Block] = []
    rows = 0
    try:
        with _open(manifest) as f:
            reader = csv.DictReader(iter(f.readline, ""))   # readline, not next(): tell() stays available
            header = list(reader.fieldnames or [])
            start = f.tell()
            for rows, _ in enumerate(reader, 1):
                if rows % block_rows == 0:
                    blocks.append(Block(len(blocks), str(start), block_rows))
                    start = f.tell()
            if rows % block_rows:
                blocks.append(Block(len(blocks), str(start), rows % block_rows))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ManifestError(f"cannot read manifest {manifest.name}: {e}") from None
    if rows and not any(c in header for c in INPUT_COLUMNS):
        raise ManifestError(f"manifest {manifest.name} needs an 'image' and/or 'notes' column")
    return Plan(header, blocks, rows)


def read_block(manifest: Path, header: list[str], offset: str, rows: int) -> list[dict[str, Any]]:
    """A block's rows, as ``csv.DictReader`` gives them to the single-process path."""
    with _open(manifest) as f:
        f.seek(int(offset))
        return list(itertools.islice(csv.DictReader(iter(f.readline, ""), fieldnames=header), rows))


def csv_text(rows: Iterable[dict[str, str]], fields: list[str], header: bool = False) -> str:
    """Rows as ``csv.DictWriter`` writes them (the single-process path's writer: same quoting, ``\\r\\n``)."""
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=fields)
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


class BlockScorer:
    """A Ray Data actor: one loaded pipeline; a block descriptor in, the CSV text of its scored rows out."""

    def __init__(self, checkpoint: str, runtime: str | None, manifest: str, header: list[str]) -> None:
        from medmm.pipeline import Pipeline

        pin_scoring_threads()                      # as --engine local: the same numbers to the last written digit
        self.pipeline = Pipeline.from_checkpoint(checkpoint, runtime=runtime)
        pin_scoring_threads()
        self.fields = output_fields(self.pipeline.findings)
        self.manifest, self.header = Path(manifest), list(header)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        out: dict[str, list] = {"block": [], "rows": [], "text": []}
        for index, offset, n in zip(batch["block"], batch["offset"], batch["rows"]):
            rows = read_block(self.manifest, self.header, str(offset), int(n))
            scored = [score_row(self.pipeline, row, self.manifest.parent) for row in rows]
            out["block"].append(int(index))
            out["rows"].append(len(scored))
            out["text"].append(csv_text(scored, self.fields))
        return out


def run_key(manifest: Path, checkpoint: str, runtime: str | None, block_rows: int) -> str:
    """What a part was computed from: the manifest's bytes, the checkpoint, the runtime, the block size, medmm."""
    from medmm import __version__
    from medmm.config import META_FILE
    from medmm.models.checkpoint import sha256_file

    from medmm.runtime import ENV_VAR

    runtime_name = (runtime or os.environ.get(ENV_VAR) or "auto").strip().lower()
    h = hashlib.sha256()
    for part in ("medmm-parts/1", __version__, sha256_file(manifest), sha256_file(Path(checkpoint) / META_FILE),
                 runtime_name, str(block_rows)):
        h.update(part.encode() + b"\0")
    return h.hexdigest()


class Parts:
    """``OUT.parts/``: one file per finished block, ``<key>-<block>.csv``, each written atomically."""

    def __init__(self, out: Path, key: str) -> None:
        self.dir = out.with_name(out.name + PARTS_SUFFIX)
        self.key = key[:KEY_CHARS]

    def path(self, block: int) -> Path:
        return self.dir / f"{self.key}-{block:06d}.csv"

    def done(self) -> set[int]:
        """Blocks of this key already written; parts of another key and leftover temp files are deleted."""
        found: set[int] = set()
        if not self.dir.is_dir():
            return found
        for p in self.dir.iterdir():
            m = _PART.match(p.name)
            if m and m["key"] == self.key:
                found.add(int(m["block"]))
            elif m or _TMP.match(p.name):
                p.unlink()                        # stale: another manifest / checkpoint / runtime, or a torn write
        return found

    def write(self, block: int, text: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        final = self.path(block)
        tmp = self.dir / f".{final.name}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(text.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)

    def read(self, block: int) -> bytes:
        return self.path(block).read_bytes()

    def remove(self, blocks: Iterable[int]) -> None:
        for b in blocks:
            self.path(b).unlink(missing_ok=True)
        try:
            self.dir.rmdir()                      # only if nothing else is in it
        except OSError:
            pass


def scored_blocks(manifest: Path, plan: Plan, pending: list[Block], checkpoint: str, runtime: str | None,
                  workers: int) -> Iterator[tuple[int, int, str]]:
    """``(block, rows, csv text)`` for each pending block, as the actors finish them (any order)."""
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = False     # parts are keyed by block: the output is ordered at assembly
    ctx.enable_progress_bars = False
    items = [{"block": b.index, "offset": b.offset, "rows": b.rows} for b in pending]
    ds = ray.data.from_items(items, override_num_blocks=len(items))   # one block per Ray block: back as it finishes
    scored = ds.map_batches(BlockScorer, batch_size=1, batch_format="numpy", num_cpus=1,
                            compute=ray.data.ActorPoolStrategy(size=workers),
                            fn_constructor_kwargs={"checkpoint": checkpoint, "runtime": runtime,
                                                   "manifest": str(manifest), "header": plan.header})
    for row in scored.iter_rows():
        yield int(row["block"]), int(row["rows"]), str(row["text"])


class Interrupted(ScaleError):
    """The run stopped (Ctrl-C) with some blocks written: the same command resumes it."""


def run_manifest(manifest: str | Path, out: str | Path, checkpoint: str, runtime: str | None = None,
                 workers: int = 1, block_rows: int = BLOCK_ROWS) -> dict[str, Any]:
    """Score ``manifest`` into ``out`` (``.parquet``: Parquet, anything else: CSV) with ``workers`` model actors,
    resuming from ``OUT.parts/`` when an earlier run of the same key stopped part-way. Returns counts and timing."""
    from medmm.models.checkpoint import read_meta

    manifest, out = Path(manifest), Path(out)
    t0 = time.perf_counter()
    fields = output_fields(read_meta(checkpoint).findings)
    plan = plan_blocks(manifest, block_rows)          # a bad manifest fails before a cluster starts
    key = run_key(manifest, checkpoint, runtime, block_rows)
    parts = Parts(out, key)
    done = parts.done() & {b.index for b in plan.blocks}
    pending = [b for b in plan.blocks if b.index not in done]
    resumed = sum(b.rows for b in plan.blocks if b.index in done)
    if done:
        log.info("resuming: %d of %d blocks (%d rows) already in %s", len(done), len(plan.blocks), resumed, parts.dir)
    scored = 0
    if pending:
        from medmm.scale.cluster import init_ray

        init_ray(num_cpus=max(os.cpu_count() or 1, workers + 1))   # one CPU for this process besides the actors
        try:
            for index, n, text in scored_blocks(manifest, plan, pending, checkpoint, runtime, workers):
                parts.write(index, text)
                scored += n
        except KeyboardInterrupt:
            kept = len(parts.done())
            raise Interrupted(f"interrupted: {kept} of {len(plan.blocks)} blocks are in {parts.dir}; "
                              f"run the same command again to resume") from None
    if pending and run_key(manifest, checkpoint, runtime, block_rows) != key:   # the actors read it by offset
        raise ManifestError(f"manifest {manifest.name} or the checkpoint changed during the run; run it again "
                            f"(the blocks of the old version will be discarded)")
    _assemble(out, fields, parts, plan.blocks)
    parts.remove(b.index for b in plan.blocks)
    elapsed = time.perf_counter() - t0
    return {"rows": plan.rows, "scored_rows": scored, "resumed_rows": resumed, "blocks": len(plan.blocks),
            "block_rows": block_rows, "workers": workers, "seconds": round(elapsed, 2),
            "rows_per_s": round(scored / elapsed, 3) if elapsed and scored else None}


def _assemble(out: Path, fields: list[str], parts: Parts, blocks: list[Block]) -> None:
    """The output from the parts, in manifest order, written to a temp file and renamed into place."""
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        if out.suffix.lower() == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            schema = pa.schema([(f, pa.string()) for f in fields])
            with pq.ParquetWriter(tmp, schema) as writer:
                for b in blocks:
                    rows = list(csv.reader(io.StringIO(parts.read(b.index).decode("utf-8"), newline="")))
                    writer.write_table(pa.table({f: [r[i] for r in rows] for i, f in enumerate(fields)}, schema=schema))
                if not blocks:
                    writer.write_table(schema.empty_table())
        else:
            with open(tmp, "wb") as f:
                f.write(csv_text([], fields, header=True).encode("utf-8"))
                for b in blocks:
                    f.write(parts.read(b.index))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
