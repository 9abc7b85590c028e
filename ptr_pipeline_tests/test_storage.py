"""Atomic Parquet writes and sharded stages that resume after a crash."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ptr_pipeline.storage import (
    CHECKPOINT_MANIFEST,
    atomic_parquet_writer,
    checkpoint_problems,
    file_sha256,
    publish_parquet_file,
    run_sharded,
    table_fingerprint,
    write_parquet_atomic,
    write_versioned,
)

SCHEMA = pa.schema([pa.field("x", pa.int64()), pa.field("double", pa.int64())])


def _double(shard: pa.Table, index: int) -> pa.Table:
    xs = shard.column("x").to_pylist()
    return pa.table({"x": xs, "double": [2 * x for x in xs]}, schema=SCHEMA)


def test_write_parquet_atomic_leaves_old_file_on_failure(tmp_path):
    path = tmp_path / "t.parquet"
    write_parquet_atomic(pa.table({"x": [1, 2]}), path)
    with pytest.raises(AttributeError):
        write_parquet_atomic("not a table", path)  # type: ignore[arg-type]
    assert pq.read_table(path).column("x").to_pylist() == [1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]  # no temp file left behind


def test_run_sharded_resumes_after_a_crash(tmp_path):
    rows = pa.table({"x": list(range(10))})
    calls = []

    def crashing(shard, index):
        calls.append(index)
        if index == 2:
            raise RuntimeError("killed")
        return _double(shard, index)

    with pytest.raises(RuntimeError, match="killed"):
        run_sharded(rows, tmp_path, 3, crashing, SCHEMA)
    assert calls == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.glob("*.parquet")) == [
        "shard-00000.parquet",
        "shard-00001.parquet",
    ]

    calls.clear()
    out = run_sharded(rows, tmp_path, 3, lambda s, i: (calls.append(i), _double(s, i))[1], SCHEMA)
    assert calls == [2, 3]  # only the shards that were not finished
    assert out.column("double").to_pylist() == [2 * x for x in range(10)]

    calls.clear()
    again = run_sharded(rows, tmp_path, 3, lambda s, i: (calls.append(i), _double(s, i))[1], SCHEMA)
    assert calls == [] and again.equals(out)  # unchanged inputs: nothing is recomputed


def test_run_sharded_checks_pending_rows_before_the_first_shard(tmp_path):
    rows = pa.table({"x": list(range(10))})
    seen = []
    run_sharded(rows, tmp_path, 4, _double, SCHEMA, before_first=lambda t: seen.append(t))
    assert [t.column("x").to_pylist() for t in seen] == [list(range(10))]
    (tmp_path / "shard-00001.parquet").unlink()  # a crash lost the second shard
    seen.clear()
    run_sharded(rows, tmp_path, 4, _double, SCHEMA, before_first=lambda t: seen.append(t))
    assert [t.column("x").to_pylist() for t in seen] == [[4, 5, 6, 7]]  # only what is left
    seen.clear()
    run_sharded(rows, tmp_path, 4, _double, SCHEMA, before_first=lambda t: seen.append(t))
    assert seen == []  # all done: no check, no model

    def refuse(pending):
        raise ValueError("too long")

    (tmp_path / "shard-00002.parquet").unlink()
    with pytest.raises(ValueError, match="too long"):
        run_sharded(rows, tmp_path, 4, lambda s, i: pytest.fail("processed"), SCHEMA, refuse)


def test_write_versioned_keeps_one_immutable_copy_per_content(tmp_path):
    latest, snapshot, digest = write_versioned(pa.table({"x": [1]}), tmp_path)
    assert latest.stat().st_ino == snapshot.stat().st_ino  # the same bytes, linked
    assert latest.stat().st_mode & 0o777 == 0o666 & ~_umask()  # readable as umask allows
    assert snapshot.name == f"{digest[:16]}.parquet"
    again = write_versioned(pa.table({"x": [1]}), tmp_path)
    assert again[1] == snapshot and len(list((tmp_path / "versions").iterdir())) == 1
    assert [p.name for p in tmp_path.rglob(".*")] == []  # an unchanged rewrite leaves no temp file
    write_versioned(pa.table({"x": [2]}), tmp_path)
    assert pq.read_table(snapshot).column("x").to_pylist() == [1]  # untouched
    assert pq.read_table(latest).column("x").to_pylist() == [2]
    leftovers = [p.name for p in tmp_path.rglob(".*")]
    assert leftovers == []  # no temp file left behind


def test_run_sharded_empty_input(tmp_path):
    out = run_sharded(pa.table({"x": pa.array([], pa.int64())}), tmp_path, 4, _double, SCHEMA)
    assert out.num_rows == 0 and out.schema.equals(SCHEMA)


def test_table_fingerprint_depends_on_content():
    a = pa.table({"x": [1, 2]})
    assert table_fingerprint(a) == table_fingerprint(pa.table({"x": [1, 2]}))
    assert table_fingerprint(a) != table_fingerprint(pa.table({"x": [2, 1]}))


@pytest.mark.parametrize(
    "manifest",
    ["null", "[]", '{"files": null}', '{"files": {}}', '{"files": {"w": {"sha256": "x"}}}', "{"],
)
def test_a_broken_manifest_is_a_problem_not_a_crash(tmp_path, manifest):
    (tmp_path / CHECKPOINT_MANIFEST).write_text(manifest)
    assert "unreadable manifest" in checkpoint_problems(tmp_path)[0]


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_atomic_parquet_writer_publishes_only_a_finished_file(tmp_path):
    path = tmp_path / "t.parquet"
    schema = pa.schema([pa.field("x", pa.int64())])
    with atomic_parquet_writer(path, schema) as writer:
        writer.write_batch(pa.record_batch({"x": [1, 2]}, schema=schema))
        assert not path.exists()  # streaming into a temp file beside it
        writer.write_batch(pa.record_batch({"x": [3]}, schema=schema))
    assert pq.read_table(path).column("x").to_pylist() == [1, 2, 3]
    with pytest.raises(RuntimeError), atomic_parquet_writer(path, schema) as writer:
        writer.write_batch(pa.record_batch({"x": [9]}, schema=schema))
        raise RuntimeError("the stage failed half-way")
    assert pq.read_table(path).column("x").to_pylist() == [1, 2, 3]
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]


def test_publish_parquet_file_moves_the_file_and_copies_across_filesystems(tmp_path, monkeypatch):
    import errno
    import os

    staged = tmp_path / "staged.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), staged)
    digest = file_sha256(staged)
    latest, snapshot, got = publish_parquet_file(staged, tmp_path / "asset")
    assert got == digest and snapshot.name == f"{digest[:16]}.parquet" and not staged.exists()
    assert os.path.samefile(latest, snapshot)

    real_replace = os.replace

    def no_cross_device_rename(src, dst):
        if str(src).endswith("other.parquet"):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", no_cross_device_rename)
    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"x": [3]}), other)
    latest, snapshot, got = publish_parquet_file(other, tmp_path / "asset")
    assert got == file_sha256(snapshot) and not other.exists()
    assert pq.read_table(latest).column("x").to_pylist() == [3]
    assert sorted(p.name for p in (tmp_path / "asset" / "versions").iterdir()) == sorted(
        [f"{digest[:16]}.parquet", snapshot.name]
    )


def test_publish_folder_keeps_complete_files_and_takes_the_newer_manifest(tmp_path):
    from ptr_pipeline.storage import CHECKPOINT_MANIFEST, folder_manifest_files, publish_folder

    source, target = tmp_path / "source", tmp_path / "target"
    (source / "adapter").mkdir(parents=True)
    (source / "model.bin").write_bytes(b"weights")
    (source / "adapter" / "a.bin").write_bytes(b"adapter")  # subfolders are part of it
    manifest = {"files": folder_manifest_files(source), "summary": {"mfu": None}}
    (source / CHECKPOINT_MANIFEST).write_text(json.dumps(manifest))
    assert publish_folder(source, target) is True
    assert (target / "adapter" / "a.bin").read_bytes() == b"adapter"
    (source / CHECKPOINT_MANIFEST).unlink()  # a hard link to the target's: write a new file
    (source / CHECKPOINT_MANIFEST).write_text(json.dumps({**manifest, "summary": {"mfu": 0.4}}))
    assert publish_folder(source, target) is False  # the same files: not copied again
    assert json.loads((target / CHECKPOINT_MANIFEST).read_text())["summary"]["mfu"] == 0.4
    assert sorted(p.name for p in target.iterdir()) == ["adapter", "model.bin", CHECKPOINT_MANIFEST]


def test_a_checkpoint_version_names_its_files_and_its_refine_turn_not_its_timings(tmp_path):
    """Identical weights trained under two refine turns (SFT's rows hold none) are two versions:
    publishing the second never rewrites the first's recorded turn."""
    from ptr_pipeline.storage import (
        CHECKPOINT_MANIFEST,
        checkpoint_version,
        folder_manifest_files,
        publish_folder,
    )

    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "model.bin").write_bytes(b"weights")
    files = folder_manifest_files(folder)
    generic = {"files": files, "refine_turn": "Refine.", "summary": {"mfu": 0.1}}
    reread = {**generic, "refine_turn": "Refine:\n\n{query}"}
    assert checkpoint_version(generic) != checkpoint_version(reread)
    assert checkpoint_version(generic) == checkpoint_version({**generic, "summary": {"mfu": 0.4}})
    assert checkpoint_version({"files": files}) != checkpoint_version(generic)

    versions = tmp_path / "versions"
    for manifest in (generic, reread):
        (folder / CHECKPOINT_MANIFEST).unlink(missing_ok=True)
        (folder / CHECKPOINT_MANIFEST).write_text(json.dumps(manifest))
        assert publish_folder(folder, versions / checkpoint_version(manifest)) is True
    turns = {json.loads((v / CHECKPOINT_MANIFEST).read_text())["refine_turn"]
             for v in versions.iterdir()}  # fmt: skip
    assert turns == {"Refine.", "Refine:\n\n{query}"}
