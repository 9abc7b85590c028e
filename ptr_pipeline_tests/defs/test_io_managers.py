"""IO managers: round trips, atomic writes, one immutable snapshot per content hash."""

import hashlib
import json
import time
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq

from ptr_pipeline.defs.io_managers import CheckpointIOManager, ParquetIOManager
from ptr_pipeline.storage import CHECKPOINT_MANIFEST, checkpoint_problems, checkpoint_version

PARTS = dg.StaticPartitionsDefinition(["a", "b"])


def _assets(values: list[int]):
    @dg.asset(io_manager_key="pq")
    def table() -> pa.Table:
        return pa.table({"v": values})

    @dg.asset(io_manager_key="pq")
    def doubled(table: pa.Table) -> pa.Table:
        return pa.table({"v": [2 * v for v in table.column("v").to_pylist()]})

    return [table, doubled]


def test_parquet_round_trip_and_snapshots(tmp_path):
    io = ParquetIOManager(base_dir=str(tmp_path))
    result = dg.materialize(_assets([1, 2, 3]), resources={"pq": io})
    assert result.success
    assert pq.read_table(tmp_path / "doubled" / "latest.parquet").column("v").to_pylist() == [
        2,
        4,
        6,
    ]
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    assert meta["dagster/row_count"].value == 3
    assert [c.name for c in meta["dagster/column_schema"].value.columns] == ["v"]
    assert "| v |" in meta["preview"].value
    snapshot = Path(meta["snapshot"].value)
    assert snapshot.parent == tmp_path / "table" / "versions"
    assert snapshot.name.startswith(meta["content_sha256"].value[:16])

    # Same content again: still one snapshot. New content: a second one; the first is untouched.
    dg.materialize(_assets([1, 2, 3]), resources={"pq": io})
    assert len(list((tmp_path / "table" / "versions").iterdir())) == 1
    dg.materialize(_assets([7]), resources={"pq": io})
    versions = sorted((tmp_path / "table" / "versions").iterdir())
    assert len(versions) == 2
    assert pq.read_table(snapshot).column("v").to_pylist() == [1, 2, 3]
    assert pq.read_table(tmp_path / "table" / "latest.parquet").column("v").to_pylist() == [7]
    assert not list((tmp_path / "table").glob(".*tmp"))  # nothing half-written left


def test_failed_write_keeps_latest(tmp_path):
    io = ParquetIOManager(base_dir=str(tmp_path))
    assert dg.materialize(_assets([1]), resources={"pq": io}).success

    @dg.asset(io_manager_key="pq")
    def table():
        return {"not": "a table"}

    result = dg.materialize([table], resources={"pq": io}, raise_on_error=False)
    assert not result.success
    assert pq.read_table(tmp_path / "table" / "latest.parquet").column("v").to_pylist() == [1]


def test_partitioned_output_is_split_per_key_and_reloaded(tmp_path):
    io = ParquetIOManager(base_dir=str(tmp_path))

    @dg.asset(
        io_manager_key="pq",
        partitions_def=PARTS,
        backfill_policy=dg.BackfillPolicy.single_run(),
        metadata={"partition_column": "task"},
    )
    def scores(context: dg.AssetExecutionContext) -> pa.Table:
        return pa.table({"task": [k for k in context.partition_keys for _ in range(2)]})

    @dg.asset(io_manager_key="pq")
    def summary(scores: pa.Table) -> pa.Table:
        return pa.table({"n": [scores.num_rows]})

    result = dg.materialize(
        [scores, summary],
        resources={"pq": io},
        tags={"dagster/asset_partition_range_start": "a", "dagster/asset_partition_range_end": "b"},
    )
    assert result.success
    for key in ("a", "b"):
        assert pq.read_table(tmp_path / "scores" / key / "latest.parquet").column(
            "task"
        ).to_pylist() == [key, key]
    assert pq.read_table(tmp_path / "summary" / "latest.parquet").column("n").to_pylist() == [4]
    # Each partition's materialization describes that partition alone.
    events = {
        e.partition: e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey("scores")
    }
    assert set(events) == {"a", "b"}
    for key, meta in events.items():
        assert meta["dagster/row_count"].value == 2
        assert f"| {key} |" in meta["preview"].value
        assert Path(meta["snapshot"].value).parent == tmp_path / "scores" / key / "versions"


def _checkpoint(folder: Path, content: str) -> Path:
    """A checkpoint-shaped folder: one weights file and a manifest listing it with its hash."""
    folder.mkdir(parents=True)
    (folder / "weights.bin").write_text(content)
    files = {
        "weights.bin": {
            "bytes": len(content),
            "sha256": hashlib.sha256(content.encode()).hexdigest(),
        }
    }
    (folder / CHECKPOINT_MANIFEST).write_text(json.dumps({"files": files, "seconds": time.time()}))
    return folder


def _checkpoint_assets(tmp_path, content: str):
    @dg.asset(io_manager_key="ckpt")
    def ckpt(context: dg.AssetExecutionContext) -> Path:
        return _checkpoint(tmp_path / "work" / context.run_id, content)

    @dg.asset(io_manager_key="pq")
    def consumer(ckpt: Path) -> pa.Table:
        return pa.table({"weights": [(ckpt / "weights.bin").read_text()]})

    return [ckpt, consumer]


def _io(tmp_path) -> dict:
    return {
        "ckpt": CheckpointIOManager(base_dir=str(tmp_path / "artifacts")),
        "pq": ParquetIOManager(base_dir=str(tmp_path / "artifacts")),
    }


def test_checkpoint_manager_versions_folders(tmp_path):
    first = dg.materialize(_checkpoint_assets(tmp_path, "one"), resources=_io(tmp_path))
    assert first.success
    dg.materialize(_checkpoint_assets(tmp_path, "two"), resources=_io(tmp_path))
    dg.materialize(_checkpoint_assets(tmp_path, "two"), resources=_io(tmp_path))  # same files
    root = tmp_path / "artifacts" / "ckpt"
    assert len(list((root / "versions").iterdir())) == 2
    assert (root / "latest" / "weights.bin").read_text() == "two"
    assert pq.read_table(tmp_path / "artifacts" / "consumer" / "latest.parquet").column(
        "weights"
    ).to_pylist() == ["two"]
    first_path = Path(
        first.get_asset_materialization_events()[0].materialization.metadata["path"].value
    )
    assert (first_path / "weights.bin").read_text() == "one"  # older versions stay immutable
    staged = next(p for p in (tmp_path / "work").rglob("weights.bin") if p.read_text() == "one")
    assert staged.stat().st_ino == (first_path / "weights.bin").stat().st_ino  # linked, not copied


def test_an_incomplete_version_folder_is_replaced_not_trusted(tmp_path):
    """A crash left versions/<hash>/ with config.json only: the next publish replaces it."""
    staging = _checkpoint(tmp_path / "staging", "weights")
    digest = checkpoint_version(json.loads((staging / CHECKPOINT_MANIFEST).read_text()))
    partial = tmp_path / "artifacts" / "ckpt" / "versions" / digest
    partial.mkdir(parents=True)
    (partial / "config.json").write_text("{}")

    @dg.asset(io_manager_key="ckpt")
    def ckpt() -> Path:
        return staging

    result = dg.materialize([ckpt], resources=_io(tmp_path))
    assert result.success
    assert checkpoint_problems(partial) == []
    assert (tmp_path / "artifacts" / "ckpt" / "latest").resolve() == partial
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    assert meta["new_version"].value is True


def test_a_step_reads_the_version_its_own_run_wrote(tmp_path):
    """Run B rewrites `up` between run A's `up` and `down` steps; A's `down` still reads A's `up`."""
    io = {"pq": ParquetIOManager(base_dir=str(tmp_path))}

    def up_asset(values):
        @dg.asset(io_manager_key="pq", name="up")
        def up() -> pa.Table:
            return pa.table({"v": values})

        return up

    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:

        @dg.asset(deps=["up"])
        def meddler() -> None:  # another run on the same instance materializes `up` meanwhile
            assert dg.materialize([up_asset([9, 9])], resources=io, instance=instance).success

        @dg.asset(io_manager_key="pq", deps=[meddler])
        def down(up: pa.Table) -> pa.Table:
            return up

        assert dg.materialize(
            [up_asset([1, 2]), meddler, down], resources=io, instance=instance
        ).success
        assert pq.read_table(tmp_path / "up" / "latest.parquet").column("v").to_pylist() == [9, 9]
        assert pq.read_table(tmp_path / "down" / "latest.parquet").column("v").to_pylist() == [1, 2]

        # A later run that does not materialize `up` reads the latest recorded materialization.
        @dg.asset(io_manager_key="pq", name="down")
        def down_again(up: pa.Table) -> pa.Table:
            return up

        (tmp_path / "up" / "latest.parquet").unlink()  # not needed: the record names the version
        assert dg.materialize(
            [up_asset([0]).to_source_asset(), down_again], resources=io, instance=instance
        ).success
        assert pq.read_table(tmp_path / "down" / "latest.parquet").column("v").to_pylist() == [9, 9]


def test_load_of_unmaterialized_asset_names_it(tmp_path):
    @dg.asset(io_manager_key="pq")
    def plain() -> pa.Table:
        return pa.table({"v": [1]})

    @dg.asset(io_manager_key="pq")
    def downstream(plain: pa.Table) -> pa.Table:
        return plain

    io = ParquetIOManager(base_dir=str(tmp_path))
    result = dg.materialize(
        [plain.to_source_asset(), downstream], resources={"pq": io}, raise_on_error=False
    )
    assert not result.success
    failure = result.get_step_failure_events()[0].event_specific_data.error
    assert "plain has not been materialized" in str(failure)


def test_missing_partitions_are_skipped_only_when_allowed(tmp_path):
    io = ParquetIOManager(base_dir=str(tmp_path))

    @dg.asset(io_manager_key="pq", partitions_def=PARTS, metadata={"partition_column": "task"})
    def scores(context: dg.AssetExecutionContext) -> pa.Table:
        return pa.table({"task": [context.partition_key]})

    @dg.asset(
        io_manager_key="pq", ins={"scores": dg.AssetIn(metadata={"allow_missing_partitions": True})}
    )
    def lenient(scores: pa.Table) -> pa.Table:
        return pa.table({"tasks": scores.column("task").to_pylist()})

    @dg.asset(io_manager_key="pq")
    def strict(scores: pa.Table) -> pa.Table:
        return scores

    assert dg.materialize([scores], resources={"pq": io}, partition_key="a").success
    assert dg.materialize([scores.to_source_asset(), lenient], resources={"pq": io}).success
    assert pq.read_table(tmp_path / "lenient" / "latest.parquet").column("tasks").to_pylist() == [
        "a"
    ]
    failed = dg.materialize(
        [scores.to_source_asset(), strict], resources={"pq": io}, raise_on_error=False
    )
    assert not failed.success


def test_a_staged_parquet_file_is_published_versioned_without_a_rewrite(tmp_path):
    """An asset returns the Path of a Parquet file it streamed: the file itself becomes the
    version (same bytes, moved), latest points at it, and the metadata is read from its footer."""
    io = ParquetIOManager(base_dir=str(tmp_path / "artifacts"))
    work = tmp_path / "work"
    work.mkdir()

    def staged_assets(values: list[int]):
        @dg.asset(io_manager_key="pq", name="table")
        def table(context: dg.AssetExecutionContext) -> Path:
            path = work / f"{context.run_id}.parquet"
            pq.write_table(pa.table({"v": values, "s": [f"row {v}" for v in values]}), path)
            return path

        @dg.asset(io_manager_key="pq")
        def doubled(table: pa.Table) -> pa.Table:
            return pa.table({"v": [2 * v for v in table.column("v").to_pylist()]})

        return [table, doubled]

    first = dg.materialize(staged_assets(list(range(12))), resources={"pq": io})
    assert first.success
    meta = first.get_asset_materialization_events()[0].materialization.metadata
    assert meta["dagster/row_count"].value == 12
    assert [c.name for c in meta["dagster/column_schema"].value.columns] == ["v", "s"]
    assert "| 0 | row 0 |" in meta["preview"].value and "row 5" not in meta["preview"].value
    snapshot = Path(meta["snapshot"].value)
    root = tmp_path / "artifacts" / "table"
    assert snapshot == root / "versions" / f"{meta['content_sha256'].value[:16]}.parquet"
    assert hashlib.sha256(snapshot.read_bytes()).hexdigest() == meta["content_sha256"].value
    assert (root / "latest.parquet").stat().st_ino == snapshot.stat().st_ino  # linked
    assert list(work.iterdir()) == []  # the staged file was moved, not copied
    assert pq.read_table(tmp_path / "artifacts" / "doubled" / "latest.parquet").column(
        "v"
    ).to_pylist() == [2 * v for v in range(12)]

    assert dg.materialize(staged_assets(list(range(12))), resources={"pq": io}).success
    assert len(list((root / "versions").iterdir())) == 1  # same bytes: one version
    assert list(work.iterdir()) == []  # the duplicate staged file is removed too
    assert dg.materialize(staged_assets([7]), resources={"pq": io}).success
    assert len(list((root / "versions").iterdir())) == 2
    assert pq.read_table(root / "latest.parquet").column("v").to_pylist() == [7]
    assert pq.read_table(snapshot).column("v").to_pylist() == list(range(12))  # immutable


def test_a_staged_file_inside_the_artifacts_is_refused(tmp_path):
    io = ParquetIOManager(base_dir=str(tmp_path))
    assert dg.materialize(_assets([1]), resources={"pq": io}).success

    @dg.asset(io_manager_key="pq", name="other")
    def other() -> Path:
        return tmp_path / "table" / "latest.parquet"  # someone else's published file

    result = dg.materialize([other], resources={"pq": io}, raise_on_error=False)
    assert not result.success
    assert "already under the artifacts folder" in str(
        result.get_step_failure_events()[0].event_specific_data.error
    )
    assert pq.read_table(tmp_path / "table" / "latest.parquet").column("v").to_pylist() == [1]
