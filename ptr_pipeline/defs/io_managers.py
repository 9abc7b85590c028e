"""IO managers: versioned Parquet tables and checkpoint folders.

Layout under ``base_dir`` (per asset key, and per partition key when partitioned)::

    <asset>/[<partition>/]latest.parquet          stable path, replaced atomically
    <asset>/[<partition>/]versions/<sha16>.parquet  immutable copy per content hash
    ptr_checkpoint/versions/<sha16>/              immutable checkpoint folders (hash of file hashes)
    ptr_checkpoint/latest -> versions/<sha16>     symlink, replaced atomically
"""

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ptr_pipeline.storage import file_sha256

LATEST = "latest.parquet"
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
    return {
        "dagster/row_count": table.num_rows,
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(f.name, str(f.type)) for f in table.schema]
        ),
        "preview": dg.MetadataValue.md(markdown_preview(table)),
    }


def _asset_dir(base: str, context: dg.OutputContext | dg.InputContext) -> Path:
    return Path(base).joinpath(*context.asset_key.path)


def write_versioned(table: pa.Table, folder: Path) -> tuple[Path, Path, str]:
    """Write ``latest.parquet`` atomically and keep an immutable copy named by content hash."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{LATEST}.{os.getpid()}.tmp"
    pq.write_table(table, tmp)
    digest = file_sha256(tmp)
    snapshot = folder / "versions" / f"{digest[:16]}.parquet"
    if not snapshot.exists():
        snapshot.parent.mkdir(exist_ok=True)
        # A hard link: same bytes, no copy; a later replace of latest leaves it intact.
        try:
            os.link(tmp, snapshot)
        except OSError:  # filesystems without hard links
            shutil.copyfile(tmp, snapshot)
    os.replace(tmp, folder / LATEST)
    return folder / LATEST, snapshot, digest


class ParquetIOManager(dg.ConfigurableIOManager):
    """Arrow tables as versioned Parquet. Partitioned assets name their partition column in
    metadata (``partition_column``) so one output covering several partitions is split per key."""

    base_dir: str

    def handle_output(self, context: dg.OutputContext, obj: pa.Table) -> None:
        started = time.perf_counter()
        folder = _asset_dir(self.base_dir, context)
        if context.has_asset_partitions:
            column = context.definition_metadata.get(PARTITION_COLUMN)
            keys = context.asset_partition_keys
            if column is None and len(keys) > 1:
                raise ValueError(
                    f"{context.asset_key}: several partitions need a {PARTITION_COLUMN!r}"
                )
            parts = {
                k: obj if column is None else obj.filter(pc.equal(obj.column(column), k))
                for k in keys
            }
        else:
            parts = {None: obj}
        written = {}
        for key, part in parts.items():
            latest, snapshot, digest = write_versioned(
                part, folder if key is None else folder / key
            )
            written[key] = (latest, snapshot, digest)
        metadata = table_metadata(obj)
        if len(written) == 1:
            latest, snapshot, digest = next(iter(written.values()))
            metadata |= {
                "path": dg.MetadataValue.path(str(latest)),
                "snapshot": dg.MetadataValue.path(str(snapshot)),
                "content_sha256": digest,
            }
        else:
            metadata["snapshots"] = dg.MetadataValue.json(
                {k: str(v[1]) for k, v in written.items()}
            )
        metadata["write_seconds"] = round(time.perf_counter() - started, 3)
        context.add_output_metadata(metadata)

    def load_input(self, context: dg.InputContext) -> pa.Table:
        folder = _asset_dir(self.base_dir, context)
        if context.has_asset_partitions:
            paths = [folder / k / LATEST for k in context.asset_partition_keys]
        else:
            paths = [folder / LATEST]
        missing = [str(p) for p in paths if not p.exists()]
        # An input declared with AssetIn(metadata={"allow_missing_partitions": True}) reads the
        # partitions that exist (at least one), e.g. a summary over the tasks evaluated so far.
        allow_missing = (context.definition_metadata or {}).get("allow_missing_partitions", False)
        if missing and (not allow_missing or len(missing) == len(paths)):
            raise FileNotFoundError(
                f"{context.asset_key.to_user_string()} has not been materialized here: {missing}"
            )
        if missing:
            context.log.warning(f"skipping partitions not materialized yet: {missing}")
        return pa.concat_tables([pq.read_table(p) for p in paths if p.exists()])


class CheckpointIOManager(dg.ConfigurableIOManager):
    """Checkpoint folders: the asset returns a finished staging folder; it becomes an immutable
    ``versions/<hash>`` folder (hash of its manifest) and ``latest`` points at it. Downstream
    assets receive the folder's Path, never the weights."""

    base_dir: str
    manifest_name: str = "ptr_manifest.json"

    def handle_output(self, context: dg.OutputContext, obj: Path) -> None:
        started = time.perf_counter()
        folder = _asset_dir(self.base_dir, context)
        # Name the version by the files' content (as listed in the manifest), not by the manifest
        # bytes, which also hold timings: identical weights give the same version.
        files = json.loads((obj / self.manifest_name).read_text())["files"]
        digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]
        final = folder / "versions" / digest
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            shutil.rmtree(obj)
        else:
            shutil.move(obj, final)  # a rename when staging is on the same filesystem
        link = folder / "latest"
        tmp = folder / f".latest.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(final.relative_to(folder))
        os.replace(tmp, link)
        files = [p for p in final.iterdir() if p.is_file()]
        context.add_output_metadata(
            {
                "path": dg.MetadataValue.path(str(final)),
                "latest": dg.MetadataValue.path(str(link)),
                "version": digest,
                "num_files": len(files),
                "size_mb": round(sum(p.stat().st_size for p in files) / 2**20, 3),
                "write_seconds": round(time.perf_counter() - started, 3),
            }
        )

    def load_input(self, context: dg.InputContext) -> Path:
        link = _asset_dir(self.base_dir, context) / "latest"
        if not link.exists():
            raise FileNotFoundError(
                f"{context.asset_key.to_user_string()} has no checkpoint at {link}"
            )
        return link.resolve()
