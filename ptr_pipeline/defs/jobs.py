"""Jobs: the whole pipeline, the data stages only, training, evaluation."""

import dagster as dg

from ptr_pipeline.defs.console import CONSOLE_RUN_CONFIG
from ptr_pipeline.defs.evaluation import EVAL_TASKS
from ptr_pipeline.samples import WORLD_EVAL_SOURCES

# A run of a job that contains eval_scores evaluates the world's tasks (the demo's eval sets,
# gsm8k and arc) in one step (single-run backfill). The mmlu partition is materialized on its own
# (`--partition mmlu`), with a real source configured.
DEMO_TASKS = [task for task in EVAL_TASKS if task in WORLD_EVAL_SOURCES]
assert EVAL_TASKS[: len(DEMO_TASKS)] == DEMO_TASKS, "a partition range must be contiguous"
ALL_TASKS = {
    "dagster/asset_partition_range_start": DEMO_TASKS[0],
    "dagster/asset_partition_range_end": DEMO_TASKS[-1],
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
    # The models too: resolving them is instant once built, and a fresh instance needs them.
    selection=dg.AssetSelection.groups("models", "dataset"),
    config=CONSOLE_RUN_CONFIG,
    description="The data stages: models, query pool to consistency-filtered dataset.",
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
