"""Assets: eval_sets (every task's items), eval_scores (partitioned by task), eval_summary and
eval_comparisons."""

import time
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from ptr_pipeline import evaluation, plots
from ptr_pipeline.defs.io_managers import PARTITION_COLUMN
from ptr_pipeline.defs.models import model_path
from ptr_pipeline.defs.resources import ComputeResource, PtrHomeResource

EVAL_TASKS = list(evaluation.TASKS)
eval_task_partitions = dg.StaticPartitionsDefinition(EVAL_TASKS)


def _some_tasks(context: dg.AssetExecutionContext) -> None:
    if not context.partition_keys:  # e.g. a partition range given end first
        raise ValueError(
            "no task partition in this run; a partition range runs in this order: "
            + ", ".join(EVAL_TASKS)
        )


class EvalSetsConfig(dg.Config, evaluation.EvalSetSettings):
    """Dagster view of EvalSetSettings: same fields, same defaults."""


class EvalScoresConfig(dg.Config, evaluation.EvalSettings):
    """Dagster view of EvalSettings: same fields, same defaults."""


@dg.asset(
    group_name="evaluation",
    io_manager_key="parquet_io_manager",
    code_version=evaluation.CODE_VERSION,
    kinds={"parquet"},
    description="The items of every eval task as the models are asked them (prompt with its "
    "few-shot examples, gold, options), one table for the ten tasks. Each eval_scores "
    "partition scores its task's rows, and the query pool is decontaminated against them all.",
)
def eval_sets(config: EvalSetsConfig) -> dg.MaterializeResult:
    started = time.perf_counter()
    tables, sizes = [], {}
    for task in EVAL_TASKS:
        examples = config.load(task)
        tables.append(evaluation.examples_table(task, examples))
        sizes[task] = f"{len(examples)} from {config.eval_sources.get(task, 'bundled')}"
    return dg.MaterializeResult(
        value=pa.concat_tables(tables),
        metadata={
            "examples": dg.MetadataValue.json(sizes),
            "compute_seconds": round(time.perf_counter() - started, 3),
        },
    )


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
    description="Base, SFT and PTR model answers, scored at every refinement round; one "
    "partition per task.",
)
def eval_scores(
    context: dg.AssetExecutionContext,
    config: EvalScoresConfig,
    eval_sets: pa.Table,
    base_model: pa.Table,
    sft_checkpoint: Path,
    ptr_checkpoint: Path,
    ptr_home: PtrHomeResource,
    compute: ComputeResource,
) -> dg.MaterializeResult:
    home, started = ptr_home.home(), time.perf_counter()
    _some_tasks(context)
    examples = {
        task: items
        for task, items in evaluation.examples_from_table(eval_sets).items()
        if task in context.partition_keys
    }
    # model_role: the base model prompted to refine (the paper's prompting baseline), SFT on the
    # strong answers (the baseline reviewers ask for), and PTR.
    models = {
        "base": model_path(base_model),
        "sft": str(sft_checkpoint),
        "ptr": str(ptr_checkpoint),
    }
    scores = evaluation.evaluate_models(
        models,
        examples,
        config,
        lambda path: compute.generator(config.backend, path, config),
        home.work,
    )
    turn, source = evaluation.refine_turn_for(models, config)
    for task in context.partition_keys:  # each partition's materialization describes itself
        part = scores.filter(pc.equal(scores.column("task"), task))
        context.add_asset_metadata(
            {
                "score_by_round": dg.MetadataValue.md(
                    evaluation.summary_markdown(evaluation.summarize(part), every_metric=True)
                )
            },
            partition_key=task,
        )
    return dg.MaterializeResult(
        value=scores,
        metadata={
            "refine_turn": turn,
            "refine_turn_from": source,
            "compute_seconds": round(time.perf_counter() - started, 3),
        },
    )


def _signals(eval_scores: pa.Table, eval_sets: pa.Table) -> dict[str, evaluation.TaskSignal]:
    return evaluation.task_signals(eval_scores, evaluation.examples_from_table(eval_sets))


def _pooling(signals: dict[str, evaluation.TaskSignal]) -> dict:
    """Metadata: the chance rule, the tasks pooled and those left out, and each task's verdict."""
    return {
        "chance_rule": evaluation.RULE,
        "pooled_tasks": dg.MetadataValue.json(sorted(t for t, s in signals.items() if s.signal)),
        "at_chance_left_out": dg.MetadataValue.json(
            sorted(t for t, s in signals.items() if not s.signal)
        ),
        "signal_by_task": dg.MetadataValue.md(evaluation.signal_markdown(signals)),
    }


@dg.asset(
    group_name="evaluation",
    io_manager_key="parquet_io_manager",
    code_version=evaluation.CODE_VERSION,
    kinds={"parquet"},
    ins={"eval_scores": dg.AssetIn(metadata={"allow_missing_partitions": True})},
    description="Each task's metrics per model and round, with 95% intervals, the answered "
    "share, wrong->right and right->wrong flips, and the chance level (tasks at chance marked: "
    "evaluation.chance.RULE), over the tasks evaluated so far.",
)
def eval_summary(
    eval_scores: pa.Table, eval_sets: pa.Table, ptr_home: PtrHomeResource
) -> dg.MaterializeResult:
    started = time.perf_counter()
    signals = _signals(eval_scores, eval_sets)
    summary = evaluation.summarize(eval_scores, signals)
    figure = ptr_home.home().artifacts / "eval_summary" / "accuracy_by_round.png"
    png = plots.accuracy_plot(summary, figure, evaluation.ordered_tasks(signals))
    return dg.MaterializeResult(
        value=summary,
        metadata={
            "tasks": dg.MetadataValue.json(sorted(set(summary.column("task").to_pylist()))),
            "plot": dg.MetadataValue.md(plots.markdown_image(png, "accuracy by round")),
            "score_by_round": dg.MetadataValue.md(
                evaluation.summary_markdown(summary, every_metric=True)
            ),
            "answered_by_round": dg.MetadataValue.md(
                evaluation.summary_markdown(summary, "answered")
            ),
            "flips_by_round": dg.MetadataValue.md(evaluation.summary_markdown(summary, "flips")),
            "plot_path": dg.MetadataValue.path(str(figure)),
            **_pooling(signals),
            "compute_seconds": round(time.perf_counter() - started, 3),
        },
    )


@dg.asset(
    group_name="evaluation",
    io_manager_key="parquet_io_manager",
    code_version=evaluation.CODE_VERSION,
    kinds={"parquet", "scipy"},
    ins={"eval_scores": dg.AssetIn(metadata={"allow_missing_partitions": True})},
    description="The paired differences that carry the claim (PTR last round - PTR round 1, "
    "- base round 1, - SFT round 1, - SFT last round; each baseline asked to refine), per task "
    "and pooled over the tasks that carry signal (evaluation.chance.RULE: tasks at chance are "
    "marked and left out), with paired bootstrap 95% intervals, flips and a one-line reading.",
)
def eval_comparisons(eval_scores: pa.Table, eval_sets: pa.Table) -> dg.MaterializeResult:
    started = time.perf_counter()
    signals = _signals(eval_scores, eval_sets)
    comparisons = evaluation.compare(eval_scores, signals)
    return dg.MaterializeResult(
        value=comparisons,
        metadata={
            "verdict": dg.MetadataValue.md(evaluation.verdict_markdown(comparisons)),
            **_pooling(signals),
            "comparisons": dg.MetadataValue.md(evaluation.comparisons_markdown(comparisons)),
            "compute_seconds": round(time.perf_counter() - started, 3),
        },
    )
