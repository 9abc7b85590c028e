"""Jobs: the whole pipeline, the data stages only, training, evaluation."""

import dagster as dg

from ptr_pipeline.defs.console import CONSOLE_RUN_CONFIG
from ptr_pipeline.defs.evaluation import EVAL_TASKS

# A run of a job that contains eval_scores evaluates every task in one step (single-run backfill).
ALL_TASKS = {
    "dagster/asset_partition_range_start": EVAL_TASKS[0],
    "dagster/asset_partition_range_end": EVAL_TASKS[-1],
}

ptr_full_job = dg.define_asset_job(
    "ptr_full_job",
    selection=dg.AssetSelection.all(),
    tags=ALL_TASKS,
    config=CONSOLE_RUN_CONFIG,
    description="Query pool -> thoughts -> refinements -> filtered dataset -> checkpoint -> eval.",
)

dataset_rebuild_job = dg.define_asset_job(
    "dataset_rebuild_job",
    selection=dg.AssetSelection.groups("dataset"),
    config=CONSOLE_RUN_CONFIG,
    description="The data stages only: query pool to consistency-filtered dataset.",
)

train_job = dg.define_asset_job(
    "train_job", selection=dg.AssetSelection.groups("training"), config=CONSOLE_RUN_CONFIG
)

eval_job = dg.define_asset_job(
    "eval_job",
    selection=dg.AssetSelection.groups("evaluation"),
    tags=ALL_TASKS,
    config=CONSOLE_RUN_CONFIG,
)
