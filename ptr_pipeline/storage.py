"""Files on disk: the one atomic Parquet writer, versioned tables, checkpoint folders, content
hashes, and sharded stages that resume after a crash.

Pure pyarrow and the standard library; the Dagster IO managers and every stage build on it.

- ``write_parquet_atomic`` (a table) and ``atomic_parquet_writer`` (batches streamed through
  ``pyarrow.parquet.ParquetWriter``) are the only writers of Parquet: a temp file beside the
  target, fsync, rename; the temp file is removed when anything fails.
- ``write_versioned`` keeps ``latest.parquet`` plus an immutable ``versions/<sha16>.parquet`` per
  content hash (hard links, so no copy); ``publish_parquet_file`` does the same for a Parquet
  file a stage has already written (streamed output), moving it rather than reading it.
- A checkpoint folder is complete only when its manifest (``CHECKPOINT_MANIFEST``) lists every
  file with a sha256 that matches (``checkpoint_problems``); ``publish_folder`` replaces an
  incomplete version rather than trusting it.
"""

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

LATEST = "latest.parquet"
_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read the process umask (os.umask can only be read by setting it)
CHECKPOINT_MANIFEST = "ptr_manifest.json"  # written beside a checkpoint's weights


def write_parquet_atomic(table: pa.Table, path: Path) -> str:
    """Write ``table`` to ``path`` so that readers see the old file or the new one, never half.

    Returns:
        The sha256 of the written bytes.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's 0600 would hide artifacts from other users
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


def write_bytes_atomic(data: bytes, path: Path) -> None:
    """Write ``data`` to ``path`` so that readers see the old content or the new, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_parquet_writer(
    path: Path, schema: pa.Schema, **options: Any
) -> Iterator[pq.ParquetWriter]:
    """A ``pyarrow.parquet.ParquetWriter`` streaming to a temp file beside ``path``: on a clean
    exit the file is closed, fsynced and renamed to ``path``; on an exception it is removed.
    ``options`` go to ``ParquetWriter``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            with pq.ParquetWriter(f, schema, **options) as writer:
                yield writer
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)  # same bytes, no copy
    except OSError:  # filesystems without hard links
        shutil.copyfile(source, target)


def write_versioned(table: pa.Table, folder: Path) -> tuple[Path, Path, str]:
    """Write ``folder/versions/<sha16>.parquet`` (immutable) and point ``folder/latest.parquet`` at
    the same bytes, both atomically.

    Returns:
        (latest path, snapshot path, sha256 of the file).
    """
    versions = folder / "versions"
    incoming = versions / f".incoming-{os.getpid()}-{id(table)}.parquet"
    digest = write_parquet_atomic(table, incoming)
    snapshot = versions / f"{digest[:16]}.parquet"
    if snapshot.exists():
        incoming.unlink()
    else:
        os.replace(incoming, snapshot)
    return _point_latest(folder, snapshot), snapshot, digest


def publish_parquet_file(staged: Path, folder: Path) -> tuple[Path, Path, str]:
    """``write_versioned`` for a finished Parquet file (a stage that streamed its output to disk),
    without reading it into memory: its sha256 is computed in 1 MiB chunks, then the file is
    moved to ``folder/versions/<sha16>.parquet`` (``os.replace``, atomic; copied then renamed when
    it lies on another filesystem), or dropped when that version exists already, and
    ``folder/latest.parquet`` is pointed at the same bytes (hard link, replaced atomically).

    The staged file is consumed: it is gone when this returns.

    Returns:
        (latest path, snapshot path, sha256 of the file).
    """
    with staged.open("rb") as f:
        os.fsync(f.fileno())  # the bytes are on disk before a name points at them
    digest = file_sha256(staged)
    versions = folder / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    snapshot = versions / f"{digest[:16]}.parquet"
    if snapshot.exists():
        staged.unlink()
    else:
        try:
            os.replace(staged, snapshot)
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
            fd, tmp = tempfile.mkstemp(dir=versions, prefix=".incoming-", suffix=".parquet")
            os.close(fd)
            try:
                shutil.copyfile(staged, tmp)
                os.chmod(tmp, 0o666 & ~_UMASK)
                os.replace(tmp, snapshot)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            staged.unlink()
    return _point_latest(folder, snapshot), snapshot, digest


def _point_latest(folder: Path, snapshot: Path) -> Path:
    """Make ``folder/latest.parquet`` a hard link to ``snapshot`` (a copy where links fail),
    replaced atomically."""
    latest = folder / LATEST
    if latest.exists() and os.path.samefile(latest, snapshot):
        return latest  # already these bytes (rename would be a no-op)
    tmp = folder / f".{LATEST}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    try:
        _link_or_copy(snapshot, tmp)
        os.replace(tmp, latest)
    finally:
        tmp.unlink(missing_ok=True)  # rename(2) leaves it when both were links to one file
    return latest


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


# --- checkpoint folders


def folder_manifest_files(folder: Path) -> dict[str, dict]:
    """``{relative path: {"bytes", "sha256"}}`` of every file under ``folder`` (subfolders too,
    e.g. a LoRA checkpoint's ``adapter/``) but the manifest."""
    return {
        p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": file_sha256(p)}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.relative_to(folder).as_posix() != CHECKPOINT_MANIFEST
    }


def checkpoint_version(manifest: dict) -> str:
    """The version name of a checkpoint: a hash of its files' hashes and of the refine turn it was
    trained with (``manifest["refine_turn"]``, when recorded), the one manifest field that decides
    how the checkpoint is asked at test time. Identical weights trained under two turns (SFT's rows
    hold no refine turn) are two versions, so a version's manifest never changes its turn; timings
    and the like do not count."""
    identity: dict = {"files": manifest["files"]}
    if manifest.get("refine_turn") is not None:
        identity["refine_turn"] = manifest["refine_turn"]
    # The files alone when no turn is recorded: the names of checkpoints made before the turn was.
    named = identity if len(identity) > 1 else identity["files"]
    return hashlib.sha256(json.dumps(named, sort_keys=True).encode()).hexdigest()[:16]


def checkpoint_problems(folder: Path, hashes: bool = True) -> list[str]:
    """Why ``folder`` is not a complete checkpoint ([] when every file its manifest lists is there
    with its size and, when ``hashes``, its sha256)."""
    manifest_path = folder / CHECKPOINT_MANIFEST
    if not manifest_path.is_file():
        return [f"{folder}: no {CHECKPOINT_MANIFEST}"]
    try:
        files = json.loads(manifest_path.read_text())["files"]
        if not isinstance(files, dict) or not files:
            raise ValueError("'files' is not a non-empty object")
        entries = {name: (int(e["bytes"]), str(e["sha256"])) for name, e in files.items()}
    except (ValueError, KeyError, TypeError) as e:
        return [f"{manifest_path}: unreadable manifest ({type(e).__name__}: {e})"]
    problems = []
    for name, (size, sha256) in entries.items():
        path = folder / name
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif path.stat().st_size != size or (hashes and file_sha256(path) != sha256):
            problems.append(f"{path}: content differs from the manifest")
    return problems


def publish_folder(source: Path, target: Path) -> bool:
    """Make ``target`` a complete copy of checkpoint folder ``source`` (hard links where possible).

    A complete ``target`` is kept, with ``source``'s manifest when it differs (the same files: a
    later run's report of them, e.g. another ``peak_tflops``); an incomplete one is replaced. The new folder is
    assembled beside ``target`` and renamed into place, so a reader never sees half of it.

    Returns:
        True when ``target`` was (re)written, False when a complete one was already there.

    Raises:
        ValueError: ``source`` itself is not a complete checkpoint.
    """
    if source.resolve() == target.resolve():
        return False
    if not checkpoint_problems(target):  # the same files: the newest manifest describes them
        manifest = (source / CHECKPOINT_MANIFEST).read_bytes()
        if (target / CHECKPOINT_MANIFEST).read_bytes() != manifest:
            write_bytes_atomic(manifest, target / CHECKPOINT_MANIFEST)
        return False
    problems = checkpoint_problems(source)
    if problems:
        raise ValueError("cannot publish an incomplete checkpoint: " + "; ".join(problems))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        for p in source.rglob("*"):
            if p.is_file():
                (tmp / p.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
                _link_or_copy(p, tmp / p.relative_to(source))
        if target.exists():
            log.warning("replacing incomplete checkpoint %s", target)
            shutil.rmtree(target)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return True


# --- resumable stages


def run_sharded(
    rows: pa.Table,
    work_dir: Path,
    shard_size: int,
    process: Callable[[pa.Table, int], pa.Table],
    schema: pa.Schema,
    before_first: Callable[[pa.Table], None] | None = None,
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
        before_first: called once with every row still to process, before the first shard is
            processed (checks that must fail before compute is spent); not called when every
            shard is already done.

    Returns:
        All shards' outputs, concatenated in input order.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    work_dir.mkdir(parents=True, exist_ok=True)
    starts = list(range(0, rows.num_rows, shard_size))
    paths = [work_dir / f"shard-{index:05d}.parquet" for index in range(len(starts))]
    pending = [i for i, path in enumerate(paths) if not path.exists()]
    if pending and before_first is not None:
        before_first(pa.concat_tables([rows.slice(starts[i], shard_size) for i in pending]))
    for index in pending:
        out = process(rows.slice(starts[index], shard_size), index)
        write_parquet_atomic(out.cast(schema), paths[index])
        log.info("shard %d of %d done (%d rows)", index + 1, len(paths), out.num_rows)
    if len(pending) < len(paths):
        log.info(
            "%d of %d shards were already done in %s",
            len(paths) - len(pending),
            len(paths),
            work_dir,
        )
    if not paths:
        return schema.empty_table()
    return pa.concat_tables([pq.read_table(p, schema=schema) for p in paths])
