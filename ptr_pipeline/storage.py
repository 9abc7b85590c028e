"""Parquet on disk: atomic writes, content hashes, and sharded stages that resume after a crash.

Pure pyarrow; the Dagster IO managers and the generation stages both build on it.
"""

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)


def write_parquet_atomic(table: pa.Table, path: Path) -> str:
    """Write ``table`` to ``path`` so that readers see the old file or the new one, never half.

    Returns:
        The sha256 of the written bytes.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            pq.write_table(table, f)
            f.flush()
            os.fsync(f.fileno())
        digest = file_sha256(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return digest


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def table_fingerprint(table: pa.Table) -> str:
    """A sha256 of a table's schema and contents (Arrow IPC bytes), independent of any file."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table.combine_chunks())
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


def fingerprint(*parts: Any) -> str:
    """A sha256 over JSON-serialisable parts (settings dicts, versions, other fingerprints)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def run_sharded(
    rows: pa.Table,
    work_dir: Path,
    shard_size: int,
    process: Callable[[pa.Table, int], pa.Table],
    schema: pa.Schema,
) -> pa.Table:
    """Apply ``process`` to ``rows`` in shards, each written to ``work_dir`` as it completes.

    A shard whose file exists is not processed again, so a crashed or killed run resumes where it
    stopped and loses at most the shard in flight. ``work_dir`` must be keyed by everything that
    determines the output (inputs, settings, code version): see ``fingerprint``.

    Args:
        rows: the input rows.
        work_dir: the folder for this exact computation.
        shard_size: input rows per shard.
        process: ``(shard_rows, shard_index) -> output table`` matching ``schema``.
        schema: the output schema (also used when ``rows`` is empty).

    Returns:
        All shards' outputs, concatenated in input order.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    work_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, start in enumerate(range(0, rows.num_rows, shard_size)):
        path = work_dir / f"shard-{index:05d}.parquet"
        paths.append(path)
        if path.exists():
            log.info("shard %d already done in %s; skipping", index, work_dir)
            continue
        out = process(rows.slice(start, shard_size), index)
        write_parquet_atomic(out.cast(schema), path)
        log.info("shard %d done (%d rows)", index, out.num_rows)
    if not paths:
        return schema.empty_table()
    return pa.concat_tables([pq.read_table(p, schema=schema) for p in paths])
