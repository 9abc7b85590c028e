"""Asset: query_pool."""

import time

import dagster as dg
import pyarrow as pa

from ptr_pipeline import queries


class QueryPoolConfig(dg.Config, queries.QueryPoolSettings):
    """Dagster view of QueryPoolSettings: same fields, same defaults."""


@dg.asset(
    group_name="dataset",
    io_manager_key="parquet_io_manager",
    code_version=queries.CODE_VERSION,
    kinds={"parquet"},
    description="General-domain queries: cleaned, deduplicated, decontaminated against every "
    "eval item (eval_sets), sampled.",
    check_specs=[
        dg.AssetCheckSpec(
            "query_pool_not_empty",
            asset="query_pool",
            description="The pool has rows and no duplicate query ids.",
        )
    ],
)
def query_pool(config: QueryPoolConfig, eval_sets: pa.Table):  # no return annotation: an asset
    # with checks has several outputs
    started = time.perf_counter()
    eval_questions = eval_sets.column("question").to_pylist() if config.decontaminate else []
    tasks = sorted(set(eval_sets.column("task").to_pylist())) if config.decontaminate else []
    table, dropped = queries.build_query_pool(config, eval_questions)
    ids = table.column("query_id").to_pylist()
    return dg.MaterializeResult(
        value=table,
        metadata={
            "dropped": dg.MetadataValue.json(dropped),
            "decontaminated_against": dg.MetadataValue.json(
                {t: eval_sets.column("task").to_pylist().count(t) for t in tasks}
            ),
            "compute_seconds": round(time.perf_counter() - started, 3),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="query_pool_not_empty",
                passed=bool(ids) and len(set(ids)) == len(ids),
                metadata={"rows": len(ids), "duplicate_ids": len(ids) - len(set(ids))},
            )
        ],
    )
