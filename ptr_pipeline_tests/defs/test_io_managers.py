"""IO managers: round trips, atomic writes, one immutable snapshot per content hash."""

import hashlib
import json
import time
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq

from ptr_pipeline.defs.io_managers import CheckpointIOManager, ParquetIOManager

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


def test_checkpoint_manager_versions_folders(tmp_path):
    io = CheckpointIOManager(base_dir=str(tmp_path / "artifacts"))

    def make(content: str):
        @dg.asset(io_manager_key="ckpt")
        def ckpt(context: dg.AssetExecutionContext) -> Path:
            staging = tmp_path / "work" / context.run_id
            staging.mkdir(parents=True)
            (staging / "weights.bin").write_text(content)
            files = {"weights.bin": {"sha256": hashlib.sha256(content.encode()).hexdigest()}}
            (staging / "ptr_manifest.json").write_text(
                json.dumps({"files": files, "seconds": time.time()})
            )
            return staging

        @dg.asset(io_manager_key="pq")
        def consumer(ckpt: Path) -> pa.Table:
            return pa.table({"weights": [(ckpt / "weights.bin").read_text()]})

        return [ckpt, consumer]

    pq_io = ParquetIOManager(base_dir=str(tmp_path / "artifacts"))
    first = dg.materialize(make("one"), resources={"ckpt": io, "pq": pq_io})
    assert first.success
    dg.materialize(make("two"), resources={"ckpt": io, "pq": pq_io})
    dg.materialize(make("two"), resources={"ckpt": io, "pq": pq_io})  # same files, other timings
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
    assert not list(
        (tmp_path / "work").rglob("weights.bin")
    )  # staging folders were moved, not copied


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
