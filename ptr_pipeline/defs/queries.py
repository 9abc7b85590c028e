"""Asset: query_pool, and its checks (not empty; contamination rate per eval task)."""

import time

import dagster as dg
import pyarrow as pa

from ptr_pipeline import queries
from ptr_pipeline.defs.resources import PtrHomeResource


class QueryPoolConfig(dg.Config, queries.QueryPoolSettings):
    """Dagster view of QueryPoolSettings: same fields, same defaults."""


@dg.asset(
    group_name="dataset",
    io_manager_key="parquet_io_manager",
    code_version=queries.CODE_VERSION,
    kinds={"parquet"},
    description="General-domain queries: cleaned, decontaminated against every eval item "
    "(eval_sets), deduplicated (exact and near), sampled. Built in two streaming passes into a "
    "Parquet file in the work area, which the IO manager publishes (the table is never held "
    "in memory).",
    check_specs=[
        dg.AssetCheckSpec(
            "query_pool_not_empty",
            asset="query_pool",
            description="The pool has rows and no duplicate query ids.",
        ),
        dg.AssetCheckSpec(
            "query_pool_contamination_rate",
            asset="query_pool",
            blocking=True,  # a failure fails the run (a CLI or CI run exits non-zero)
            description="Blocking. For every eval task, the share of the cleaned queries (non-empty, "
            "within min_chars..max_chars, duplicates counted) that match its items is at most "
            "max_contamination_rate. Matched queries are dropped when decontaminate is on; either "
            "way a failure says the source overlaps an eval set more than expected.",
        ),
    ],
)
def query_pool(
    context: dg.AssetExecutionContext,
    config: QueryPoolConfig,
    eval_sets: pa.Table,
    ptr_home: PtrHomeResource,
):  # no return annotation: an asset with checks has several outputs
    started = time.perf_counter()
    work = ptr_home.home().work / "query_pool"
    # One file per run: concurrent runs never share it; the IO manager moves it into place.
    output = work / f"{context.run_id}.parquet"
    items = eval_sets.select(["task", "example_id", "question"])
    result = queries.build_query_pool(config, output, items, work_dir=work)
    tasks = eval_sets.column("task").to_pylist()
    shares = {task: report["share"] for task, report in result.contamination.items()}
    over = {task: share for task, share in shares.items() if share > config.max_contamination_rate}
    return dg.MaterializeResult(
        value=output,
        metadata={
            "source": config.source,
            "dropped": dg.MetadataValue.json(result.dropped),
            "records": result.records,
            "cleaned_queries": result.cleaned,
            "decontaminated_against": dg.MetadataValue.json(
                {t: tasks.count(t) for t in sorted(set(tasks))} if config.decontaminate else {}
            ),
            "contamination": dg.MetadataValue.json(result.contamination),
            "duplicate_clusters": dg.MetadataValue.json(result.clusters),
            "compute_seconds": round(time.perf_counter() - started, 3),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="query_pool_not_empty",
                passed=result.rows > 0 and result.duplicate_ids == 0,
                metadata={"rows": result.rows, "duplicate_ids": result.duplicate_ids},
            ),
            dg.AssetCheckResult(
                check_name="query_pool_contamination_rate",
                passed=not over,
                metadata={
                    "max_contamination_rate": config.max_contamination_rate,
                    "denominator": f"{result.cleaned} cleaned queries (before dedup)",
                    "share_by_task": dg.MetadataValue.json(shares),
                    "tasks_over": dg.MetadataValue.json(over),
                },
            ),
        ],
    )
