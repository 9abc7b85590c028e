"""IO managers: versioned Parquet tables and checkpoint folders, with exact lineage.

Layout under ``base_dir`` (per asset key, and per partition key when partitioned)::

    <asset>/[<partition>/]latest.parquet            stable path, replaced atomically
    <asset>/[<partition>/]versions/<sha16>.parquet  immutable copy per content hash
    ptr_checkpoint/versions/<sha16>/                immutable checkpoint folders (hash of file hashes)
    ptr_checkpoint/latest -> versions/<sha16>       symlink, replaced atomically

Every write goes through ``storage`` (one atomic writer); an asset that streams its table to a
Parquet file returns the file's ``Path`` and it is published without being read into memory. Every materialization records the
immutable version it wrote (``snapshot`` / ``path`` metadata, per partition), and a step loads the
version its own run materialized upstream, else the one named by the upstream's latest recorded
materialization: never whatever ``latest`` happens to hold when another run wrote it in between.
Only an upstream this instance has no record of is read from ``latest``.
"""

import json
import os
import time
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ptr_pipeline.storage import (
    CHECKPOINT_MANIFEST,
    LATEST,
    checkpoint_problems,
    checkpoint_version,
    publish_folder,
    publish_parquet_file,
    write_versioned,
)

PARTITION_COLUMN = "partition_column"  # asset metadata key: column that holds the partition key


def markdown_preview(table: pa.Table, rows: int = 5, width: int = 60) -> str:
    """The first rows of a table as markdown, long cells cut to ``width`` characters."""

    def cell(v) -> str:
        s = str(v).replace("\n", " ").replace("|", "\\|")
        return s if len(s) <= width else s[: width - 1] + "…"

    head = "| " + " | ".join(table.column_names) + " |"
    sep = "|" + "---|" * len(table.column_names)
    body = [
        "| " + " | ".join(cell(v) for v in r.values()) + " |"
        for r in table.slice(0, rows).to_pylist()
    ]
    return "\n".join([head, sep, *body])


def table_metadata(table: pa.Table) -> dict:
    return _metadata(table.num_rows, table.schema, table)


def file_metadata(path: Path) -> dict:
    """``table_metadata`` of a Parquet file without reading it whole: the row count and schema
    from its footer, the preview from its first rows."""
    parquet = pq.ParquetFile(path, pre_buffer=False)  # read the first rows only
    first = next(parquet.iter_batches(batch_size=5), None)
    head = parquet.schema_arrow.empty_table() if first is None else pa.Table.from_batches([first])
    return _metadata(parquet.metadata.num_rows, parquet.schema_arrow, head)


def _metadata(num_rows: int, schema: pa.Schema, head: pa.Table) -> dict:
    return {
        "dagster/row_count": num_rows,
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(f.name, str(f.type)) for f in schema]
        ),
        "preview": dg.MetadataValue.md(markdown_preview(head)),
    }


def _version_metadata(latest: Path, snapshot: Path, digest: str) -> dict:
    """What a Parquet materialization records: its stable path, its version, its hash."""
    return {
        "path": dg.MetadataValue.path(str(latest)),
        "snapshot": dg.MetadataValue.path(str(snapshot)),
        "content_sha256": digest,
    }


def _asset_dir(base: str, context: dg.OutputContext | dg.InputContext) -> Path:
    return Path(base).joinpath(*context.asset_key.path)


def recorded_path(context: dg.InputContext, key: str, partition: str | None) -> Path | None:
    """The path (metadata ``key``) of the upstream materialization this step depends on: the one
    of this run, else the latest the instance recorded; None when it recorded none."""
    instance, asset_key = context.instance, context.asset_key
    run_id = context.step_context.run_id
    for entry in reversed(
        instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
    ):
        materialization = entry.asset_materialization
        if materialization.asset_key == asset_key and materialization.partition == partition:
            value = materialization.metadata.get(key)
            return Path(value.value) if value is not None else None
    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=asset_key, asset_partitions=[partition] if partition else None
        ),
        limit=1,
    )
    for record in result.records:
        materialization = record.asset_materialization
        value = materialization.metadata.get(key) if materialization else None
        if value is not None:
            return Path(value.value)
    return None


class ParquetIOManager(dg.ConfigurableIOManager):
    """Arrow tables as versioned Parquet. Partitioned assets name their partition column in
    metadata (``partition_column``) so one output covering several partitions is split per key,
    each partition with its own row count, preview and snapshot.

    An unpartitioned asset may also return the ``Path`` of a finished Parquet file it streamed to
    its work area (a staged output, so the asset never holds the table): the file is published as
    a table would be (``storage.publish_parquet_file``: hashed in chunks and moved, not read) and
    is consumed. ``load_input`` reads tables either way."""

    base_dir: str

    def handle_output(self, context: dg.OutputContext, obj: pa.Table | Path) -> None:
        started = time.perf_counter()
        folder = _asset_dir(self.base_dir, context)
        if isinstance(obj, Path):
            self._publish_file(context, obj, folder, started)
            return
        if not context.has_asset_partitions:
            latest, snapshot, digest = write_versioned(obj, folder)
            context.add_output_metadata(
                {
                    **table_metadata(obj),
                    **_version_metadata(latest, snapshot, digest),
                    "write_seconds": round(time.perf_counter() - started, 3),
                }
            )
            return
        column = context.definition_metadata.get(PARTITION_COLUMN)
        keys = context.asset_partition_keys
        if column is None and len(keys) > 1:
            raise ValueError(f"{context.asset_key}: several partitions need a {PARTITION_COLUMN!r}")
        for key in keys:
            part = obj if column is None else obj.filter(pc.equal(obj.column(column), key))
            latest, snapshot, digest = write_versioned(part, folder / key)
            # Each partition's materialization describes that partition alone.
            context.step_context.add_asset_metadata(
                {
                    **table_metadata(part),
                    **_version_metadata(latest, snapshot, digest),
                },
                asset_key=context.asset_key,
                partition_key=key,
            )
        context.add_output_metadata({"write_seconds": round(time.perf_counter() - started, 3)})

    def _publish_file(
        self, context: dg.OutputContext, staged: Path, folder: Path, started: float
    ) -> None:
        name = context.asset_key.to_user_string()
        if context.has_asset_partitions:
            raise TypeError(f"{name}: a partitioned asset returns a table, not a staged file")
        if not staged.is_file():
            raise FileNotFoundError(f"{name}: the staged output {staged} does not exist")
        if staged.resolve().is_relative_to(Path(self.base_dir).resolve()):
            raise ValueError(
                f"{name}: {staged} is already under the artifacts folder; a staged output "
                "lives in the run's work area (it is moved into place)"
            )
        metadata = file_metadata(staged)  # before the move: the footer is read once, here
        latest, snapshot, digest = publish_parquet_file(staged, folder)
        context.add_output_metadata(
            {
                **metadata,
                **_version_metadata(latest, snapshot, digest),
                "write_seconds": round(time.perf_counter() - started, 3),
            }
        )

    def load_input(self, context: dg.InputContext) -> pa.Table:
        folder = _asset_dir(self.base_dir, context)
        keys = context.asset_partition_keys if context.has_asset_partitions else [None]
        paths = []
        for key in keys:
            recorded = recorded_path(context, "snapshot", key)
            paths.append(recorded or (folder if key is None else folder / key) / LATEST)
        missing = [str(p) for p in paths if not p.exists()]
        # An input declared with AssetIn(metadata={"allow_missing_partitions": True}) reads the
        # partitions that exist (at least one), e.g. a summary over the tasks evaluated so far.
        allow_missing = (context.definition_metadata or {}).get("allow_missing_partitions", False)
        if missing and (not allow_missing or len(missing) == len(paths)):
            which = "no partition of it" if len(paths) > 1 else missing[0]
            raise FileNotFoundError(
                f"{context.asset_key.to_user_string()} has not been materialized here "
                f"({which}); materialize it first"
            )
        if missing:
            context.log.warning(f"skipping partitions not materialized yet: {missing}")
        tables = {p: pq.read_table(p) for p in paths if p.exists()}
        schemas = {str(t.schema) for t in tables.values()}
        if len(schemas) > 1:  # partitions written by different code versions
            newest = max(tables, key=lambda p: p.stat().st_mtime)
            stale = [
                str(p) for p, t in tables.items() if not t.schema.equals(tables[newest].schema)
            ]
            raise ValueError(
                f"{context.asset_key.to_user_string()}: {len(stale)} partition(s) have another "
                f"schema than the newest ({newest}), written by an older version of the code: "
                f"{stale}; materialize those partitions again"
            )
        return pa.concat_tables(list(tables.values()))


class CheckpointIOManager(dg.ConfigurableIOManager):
    """Checkpoint folders: the asset returns a complete checkpoint folder (its manifest verifies);
    it is published as the immutable ``versions/<hash>`` (``storage.checkpoint_version``: its files'
    hashes and its refine turn; hard links, no copy), replacing an incomplete folder of that name,
    and ``latest`` points at it. Downstream assets receive the folder's Path, never the weights."""

    base_dir: str

    def handle_output(self, context: dg.OutputContext, obj: Path) -> None:
        started = time.perf_counter()
        folder = _asset_dir(self.base_dir, context)
        problems = checkpoint_problems(
            obj, hashes=False
        )  # a readable manifest to name the version;
        if problems:  # publish_folder below verifies every hash
            raise ValueError("cannot publish an incomplete checkpoint: " + "; ".join(problems))
        digest = checkpoint_version(json.loads((obj / CHECKPOINT_MANIFEST).read_text()))
        final = folder / "versions" / digest
        written = publish_folder(obj, final)
        link = folder / "latest"
        tmp = folder / f".latest.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(final.relative_to(folder))
        os.replace(tmp, link)
        files = [p for p in final.rglob("*") if p.is_file()]
        context.add_output_metadata(
            {
                "path": dg.MetadataValue.path(str(final)),
                "latest": dg.MetadataValue.path(str(link)),
                "version": digest,
                "new_version": written,
                "num_files": len(files),
                "size_mb": round(sum(p.stat().st_size for p in files) / 2**20, 3),
                "write_seconds": round(time.perf_counter() - started, 3),
            }
        )

    def load_input(self, context: dg.InputContext) -> Path:
        recorded = recorded_path(context, "path", None)
        folder = recorded or (_asset_dir(self.base_dir, context) / "latest").resolve()
        problems = checkpoint_problems(folder, hashes=False)  # hashes verified when published
        if problems:
            raise FileNotFoundError(
                f"{context.asset_key.to_user_string()}: no complete checkpoint at {folder}: "
                + "; ".join(problems)
            )
        return folder
