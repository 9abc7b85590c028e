"""Asset: query_pool."""

import time

import dagster as dg
import pyarrow as pa

from ptr_pipeline import evaluation, queries


class QueryPoolConfig(dg.Config, queries.QueryPoolSettings):
    """Dagster view of QueryPoolSettings: same fields, same defaults."""


@dg.asset(
    group_name="dataset",
    io_manager_key="parquet_io_manager",
    code_version=queries.CODE_VERSION,
    kinds={"parquet"},
    description="General-domain queries: cleaned, deduplicated, decontaminated, sampled.",
)
def query_pool(config: QueryPoolConfig) -> dg.MaterializeResult:
    started = time.perf_counter()
    eval_questions = [
        e.question
        for task in config.decontaminate_tasks
        for e in evaluation.load_examples(task, config.eval_sources.get(task))
    ]
    table, dropped = queries.build_query_pool(config, eval_questions)
    return dg.MaterializeResult(
        value=table,
        metadata={
            "dropped": dg.MetadataValue.json(dropped),
            "compute_seconds": round(time.perf_counter() - started, 3),
        },
    )


@dg.asset_check(asset=query_pool, description="The pool has rows and no duplicate query ids.")
def query_pool_not_empty(query_pool: pa.Table) -> dg.AssetCheckResult:
    ids = query_pool.column("query_id").to_pylist()
    return dg.AssetCheckResult(
        passed=bool(ids) and len(set(ids)) == len(ids),
        metadata={"rows": len(ids), "duplicate_ids": len(ids) - len(set(ids))},
    )
