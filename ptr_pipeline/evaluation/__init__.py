"""Evaluation: every task scored at every test-time refinement round, for the base, SFT and PTR
models, with confidence intervals and paired differences."""

from ptr_pipeline.evaluation.rounds import (
    CODE_VERSION,
    evaluate_models,
    evaluate_rounds,
    judge_rows,
    refine_turn_for,
    summarize,
    summary_markdown,
)
from ptr_pipeline.evaluation.settings import EvalSetSettings, EvalSettings
from ptr_pipeline.evaluation.stats import compare, comparisons_markdown
from ptr_pipeline.evaluation.tasks import (
    TASKS,
    EvalExample,
    Judgment,
    Task,
    examples_from_table,
    examples_table,
    load_examples,
)
