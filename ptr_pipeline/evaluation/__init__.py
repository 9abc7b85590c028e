"""Evaluation: every task scored at every test-time refinement round, for the base, SFT and PTR
models, with confidence intervals and paired differences."""

from ptr_pipeline.evaluation.chance import (
    RULE,
    TaskSignal,
    ordered_tasks,
    signal_markdown,
    task_signals,
)
from ptr_pipeline.evaluation.rounds import (
    CODE_VERSION,
    choose_trip_item,
    evaluate_models,
    evaluate_rounds,
    judge_rows,
    refine_turn_for,
    summarize,
    summary_markdown,
    trip_markdown,
)
from ptr_pipeline.evaluation.settings import EvalSetSettings, EvalSettings
from ptr_pipeline.evaluation.stats import (
    CLAIMS,
    Claim,
    compare,
    comparisons_markdown,
    verdict_markdown,
)
from ptr_pipeline.evaluation.tasks import (
    TASKS,
    EvalExample,
    Judgment,
    Task,
    examples_from_table,
    examples_table,
    load_examples,
)
