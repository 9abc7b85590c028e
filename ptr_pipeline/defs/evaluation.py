"""Assets: eval_scores (partitioned by task) and eval_summary (accuracy per task and round)."""

import time
from pathlib import Path

import dagster as dg
import pyarrow as pa

from ptr_pipeline import evaluation
from ptr_pipeline.defs.io_managers import PARTITION_COLUMN
from ptr_pipeline.defs.resources import ComputeResource, PtrHomeResource
from ptr_pipeline.evaluation.rounds import summary_markdown

EVAL_TASKS = list(evaluation.TASKS)
eval_task_partitions = dg.StaticPartitionsDefinition(EVAL_TASKS)


class EvalScoresConfig(dg.Config, evaluation.EvalSettings):
    """Dagster view of EvalSettings: same fields, same defaults."""


@dg.asset(
    group_name="evaluation",
    io_manager_key="parquet_io_manager",
    code_version=evaluation.CODE_VERSION,
    partitions_def=eval_task_partitions,
    # One run covers any number of tasks, each model loaded once for all of them.
    backfill_policy=dg.BackfillPolicy.single_run(),
    metadata={PARTITION_COLUMN: "task"},
    pool="gpu",
    kinds={"pytorch", "parquet"},
    description="Base and PTR model answers, scored at every refinement round; one partition per task.",
)
def eval_scores(
    context: dg.AssetExecutionContext,
    config: EvalScoresConfig,
    ptr_checkpoint: Path,
    ptr_home: PtrHomeResource,
    compute: ComputeResource,
) -> dg.Output[pa.Table]:
    home, started = ptr_home.home(), time.perf_counter()
    tasks = context.partition_keys
    examples = {
        t: evaluation.load_examples(t, config.eval_sources.get(t), config.max_examples)
        for t in tasks
    }
    tables = []
    for role, model in (("base", config.base_model), ("ptr", str(ptr_checkpoint))):
        generator = compute.generator(home, config.backend, model, config)
        for task in tasks:
            tables.append(
                evaluation.evaluate_rounds(
                    examples[task],
                    task,
                    generator,
                    config.num_rounds,
                    config.refine_prompt,
                    config.sampling(),
                    role,
                    model,
                )
            )
        generator.close()  # free the model (GPU memory) before loading the next
    scores = pa.concat_tables(tables)
    return dg.Output(
        scores,
        metadata={
            "tasks": dg.MetadataValue.json(tasks),
            "accuracy_by_round": dg.MetadataValue.md(
                summary_markdown(evaluation.summarize(scores))
            ),
            "compute_seconds": round(time.perf_counter() - started, 3),
        },
    )


@dg.asset(
    group_name="evaluation",
    io_manager_key="parquet_io_manager",
    code_version=evaluation.CODE_VERSION,
    kinds={"parquet"},
    ins={"eval_scores": dg.AssetIn(metadata={"allow_missing_partitions": True})},
    description="Accuracy per model, task and round, with wrong->right and right->wrong flips, "
    "over the tasks evaluated so far.",
)
def eval_summary(eval_scores: pa.Table) -> dg.Output[pa.Table]:
    started = time.perf_counter()
    summary = evaluation.summarize(eval_scores)
    return dg.Output(
        summary,
        metadata={
            "tasks": dg.MetadataValue.json(sorted(set(summary.column("task").to_pylist()))),
            "accuracy_by_round": dg.MetadataValue.md(summary_markdown(summary)),
            "answered_by_round": dg.MetadataValue.md(summary_markdown(summary, "answered")),
            "compute_seconds": round(time.perf_counter() - started, 3),
        },
    )
