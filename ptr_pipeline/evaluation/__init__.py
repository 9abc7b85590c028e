"""Evaluation: every task scored at every test-time refinement round, for base and PTR models."""

from ptr_pipeline.evaluation.rounds import CODE_VERSION, evaluate_rounds, summarize
from ptr_pipeline.evaluation.settings import EvalSettings
from ptr_pipeline.evaluation.tasks import TASKS, EvalExample, Task, load_examples
