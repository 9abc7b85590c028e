"""What checkpoints and score tables were made from, and which are stale (evaluation.provenance)."""

import json

import pyarrow as pa
import pyarrow.parquet as pq

from ptr_pipeline import schemas
from ptr_pipeline.evaluation.provenance import (
    checkpoint_records,
    scores_records,
)
from ptr_pipeline.storage import CHECKPOINT_MANIFEST, table_fingerprint, write_versioned

IDENTITY = {"ptr_checkpoint": lambda t: t}


def _dataset(answer: str) -> pa.Table:
    rows = [{"query_id": "q", "query": "1 + 1?", "thoughts": [], "answer": answer,
             "origin": "ptr", "refine_turn": "{query}"}]  # fmt: skip
    return pa.Table.from_pylist(rows, schema=schemas.PTR_DATASET)


def _checkpoint(artifacts, name: str, manifest: dict, latest: bool = True):
    folder = artifacts / "ptr_checkpoint" / "versions" / name
    folder.mkdir(parents=True)
    (folder / CHECKPOINT_MANIFEST).write_text(json.dumps(manifest))
    if latest:
        (artifacts / "ptr_checkpoint" / "latest").symlink_to(f"versions/{name}")
    return folder


def _scores(models: dict[str, str], turn: str | None = None) -> pa.Table:
    rows = [{"model_role": role, "model": model, "task": "gsm8k", "example_id": "1", "prompt": "p",
             "round": 1, "response": "r", "extracted": None, "gold": "2", "correct": False,
             "metrics": {"accuracy": 0.0}, "detail": "", "refine_turn": turn}
            for role, model in models.items()]  # fmt: skip
    return pa.Table.from_pylist(rows, schema=schemas.EVAL_SCORES)


def test_a_checkpoint_of_a_dataset_no_longer_stored_is_stale_and_one_of_the_latest_is_not(tmp_path):
    artifacts = tmp_path / "artifacts"
    _, path, _ = write_versioned(_dataset("2"), artifacts / "ptr_dataset")
    gone = table_fingerprint(_dataset("3"))  # never stored
    _checkpoint(artifacts, "a1", {"dataset_fingerprint": gone, "refine_turn": "T"})
    (record,) = checkpoint_records(artifacts, IDENTITY).values()
    assert record.stale == "trained on a ptr_dataset no longer stored (not the latest)"
    assert (record.version, record.dataset_version, record.refine_turn) == ("a1", None, "T")
    current = table_fingerprint(pq.read_table(path))
    (artifacts / "ptr_checkpoint" / "latest").unlink()
    _checkpoint(artifacts, "a2", {"dataset_fingerprint": current})
    (record,) = checkpoint_records(artifacts, IDENTITY).values()
    assert (record.stale, record.dataset_version) == (None, path.stem)
    # a checkpoint whose manifest names no dataset (not trained here): unknown, not stale
    (artifacts / "ptr_checkpoint" / "latest").unlink()
    _checkpoint(artifacts, "a3", {})
    (record,) = checkpoint_records(artifacts, IDENTITY).values()
    assert (record.stale, record.dataset_fingerprint) == (None, None)


def test_scores_of_another_base_model_are_stale_and_the_rows_name_their_refine_turn(tmp_path):
    artifacts = tmp_path / "artifacts"
    write_versioned(_dataset("2"), artifacts / "ptr_dataset")
    folder = _checkpoint(artifacts, "a1", {})
    checkpoints = checkpoint_records(artifacts, IDENTITY)
    scores = _scores({"base": "/models/old/base", "ptr": str(folder)})
    (record,) = scores_records(
        artifacts, {"gsm8k": scores}, checkpoints, {"ptr": "ptr_checkpoint"}, IDENTITY,
        base_model="/models/new/base",
    ).values()  # fmt: skip
    assert record.stale == ["base: scores of /models/old/base, not the latest base_model"]
    assert record.checkpoints["ptr"].version == "a1" and record.refine_turn is None
    asked = _scores({"base": "/models/old/base", "ptr": str(folder)}, turn="Again: {query}")
    (record,) = scores_records(
        artifacts, {"gsm8k": asked}, checkpoints, {"ptr": "ptr_checkpoint"}, IDENTITY
    ).values()
    assert record.refine_turn == "Again: {query}"
