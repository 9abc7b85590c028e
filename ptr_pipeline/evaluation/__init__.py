"""Evaluation: every task scored at every test-time refinement round, for base and PTR models."""

from ptr_pipeline.evaluation.rounds import (
    CODE_VERSION,
    evaluate_models,
    evaluate_rounds,
    summarize,
    summary_markdown,
)
from ptr_pipeline.evaluation.settings import EvalSettings
from ptr_pipeline.evaluation.tasks import TASKS, EvalExample, Task, load_examples
