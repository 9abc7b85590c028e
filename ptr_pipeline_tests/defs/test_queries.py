"""The query_pool asset: a staged file published by the IO manager, and its two checks."""

import json

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq

from ptr_pipeline.defs.io_managers import ParquetIOManager
from ptr_pipeline.defs.queries import query_pool
from ptr_pipeline.defs.resources import PtrHomeResource

QUESTIONS = {
    "gsm8k": "Ava buys 4 boxes with 3 pencils in each box and gives away 9 pencils.",
    "arc": "Which gas do plants take in from the air to make their food?",
}


@dg.asset(name="eval_sets", io_manager_key="parquet_io_manager")
def eval_sets() -> pa.Table:
    return pa.table(
        {
            "task": list(QUESTIONS),
            "example_id": [f"{t}-0" for t in QUESTIONS],
            "question": list(QUESTIONS.values()),
        }
    )


def _materialize(tmp_path, raise_on_error=True, **config):
    texts = [f"Write a poem about the number {i} and what it means to you." for i in range(6)]
    texts += [
        f"Puzzle {i}: Ava buys 4 boxes with 3 pencils in each box. How many?" for i in range(3)
    ]
    texts += ["Explain: which gas do plants take in from the air to make their food, and why?"]
    source = tmp_path / "q.jsonl"
    source.write_text("".join(json.dumps({"query": t}) + "\n" for t in texts))
    resources = {
        "parquet_io_manager": ParquetIOManager(base_dir=str(tmp_path / "artifacts")),
        "ptr_home": PtrHomeResource(root=str(tmp_path)),
    }
    config = {"source": str(source), **config}
    return dg.materialize(
        [eval_sets, query_pool],
        resources=resources,
        run_config={"ops": {"query_pool": {"config": config}}},
        raise_on_error=raise_on_error,
    )


def _checks(result) -> dict:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_the_contamination_check_fails_above_the_rate_and_the_pool_is_published(tmp_path):
    result = _materialize(tmp_path, raise_on_error=False, max_contamination_rate=0.2)
    assert not result.success  # a blocking check: the run fails (a CLI run exits non-zero)
    checks = _checks(result)
    assert checks["query_pool_not_empty"].passed
    rate = checks["query_pool_contamination_rate"]
    assert not rate.passed  # gsm8k: 3 of 10 cleaned queries = 0.3 > 0.2
    assert rate.metadata["tasks_over"].value == {"gsm8k": 0.3}
    assert rate.metadata["share_by_task"].value == {"arc": 0.1, "gsm8k": 0.3}
    assert rate.metadata["denominator"].value == "10 cleaned queries (before dedup)"

    meta = {
        k: v.value
        for k, v in result.get_asset_materialization_events()[-1].materialization.metadata.items()
    }
    assert meta["dagster/row_count"] == 6 and meta["dropped"] == {"contaminated": 4}
    assert meta["contamination"]["gsm8k"]["examples"][0]["eval_item"] == "gsm8k-0"
    assert meta["contamination"]["gsm8k"]["top_ngrams"] == {"ava buys 4 boxes with 3 pencils in": 3}
    assert meta["duplicate_clusters"] == {"clusters": 0, "rows_in_clusters": 0, "largest": []}
    latest = tmp_path / "artifacts" / "query_pool" / "latest.parquet"
    assert pq.read_table(latest).num_rows == 6
    assert list((tmp_path / "work" / "query_pool").iterdir()) == []  # staged file moved away

    assert _checks(_materialize(tmp_path, max_contamination_rate=0.3))[
        "query_pool_contamination_rate"
    ].passed  # at the rate is not above it
