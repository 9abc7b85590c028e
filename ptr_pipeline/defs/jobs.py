"""Jobs: the whole pipeline, the data stages only, training, evaluation."""

import dagster as dg

from ptr_pipeline.defs.console import CONSOLE_RUN_CONFIG
from ptr_pipeline.defs.evaluation import EVAL_TASKS

# A run of a job that contains the task-partitioned eval_scores covers every task in one step (single-run backfill: each model loads once for all of them). The demo's
# world has held-out sets for gsm8k and arc; the other tasks read their bundled samples.
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
    # The models too: resolving them is instant once built, and a fresh instance needs them; the
    # eval sets too, which the query pool is decontaminated against.
    selection=dg.AssetSelection.groups("models", "dataset") | dg.AssetSelection.assets("eval_sets"),
    config=CONSOLE_RUN_CONFIG,
    description="The data stages: models, eval sets, query pool to consistency-filtered dataset.",
)

train_job = dg.define_asset_job(
    "train_job",
    selection=dg.AssetSelection.groups("training"),
    config=CONSOLE_RUN_CONFIG,
    description="PTR and the SFT baseline, from the latest dataset and base model.",
)

models_job = dg.define_asset_job(
    "models_job",
    selection=dg.AssetSelection.groups("models"),
    config=CONSOLE_RUN_CONFIG,
    description="Resolve (or, for the world, pretrain) the weak, base and strong models.",
)

eval_job = dg.define_asset_job(
    "eval_job",
    selection=dg.AssetSelection.groups("evaluation"),
    tags=ALL_TASKS,
    config=CONSOLE_RUN_CONFIG,
)
