"""Asset: query_pool."""

import time

import dagster as dg
import pydantic

from ptr_pipeline import evaluation, queries


class QueryPoolConfig(dg.Config, queries.QueryPoolSettings):
    """Dagster view of QueryPoolSettings: same fields, same defaults; the eval task names are
    checked here, where both stages are known."""

    @pydantic.model_validator(mode="after")
    def _known_tasks(self) -> "QueryPoolConfig":
        for name, tasks in (
            ("decontaminate_tasks", self.decontaminate_tasks),
            ("eval_sources", list(self.eval_sources)),
        ):
            unknown = sorted(set(tasks) - set(evaluation.TASKS))
            if unknown:
                raise ValueError(
                    f"{name}: unknown task(s) {unknown}; the tasks are {sorted(evaluation.TASKS)}"
                )
        return self


@dg.asset(
    group_name="dataset",
    io_manager_key="parquet_io_manager",
    code_version=queries.CODE_VERSION,
    kinds={"parquet"},
    description="General-domain queries: cleaned, deduplicated, decontaminated, sampled.",
    check_specs=[
        dg.AssetCheckSpec(
            "query_pool_not_empty",
            asset="query_pool",
            description="The pool has rows and no duplicate query ids.",
        )
    ],
)
def query_pool(config: QueryPoolConfig):  # no annotation: an asset with checks has several outputs
    started = time.perf_counter()
    eval_questions = [
        e.question
        for task in config.decontaminate_tasks
        for e in evaluation.load_examples(task, config.eval_sources.get(task))
    ]
    table, dropped = queries.build_query_pool(config, eval_questions)
    ids = table.column("query_id").to_pylist()
    return dg.MaterializeResult(
        value=table,
        metadata={
            "dropped": dg.MetadataValue.json(dropped),
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
