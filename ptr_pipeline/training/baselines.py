"""The baseline every reviewer asks for: plain SFT on the strong model's answers.

docs/paper_notes.md, section 6.1 and open point 12: the paper's IFT baseline fine-tunes "the
input-output pairs from strong models on the PRD dataset". Ours drops the thoughts: each PTR row
becomes query -> answer, so SFT sees the same queries and answers, and (with the same settings:
same rows, micro-batch, accumulation and epochs) the same number of optimizer steps as PTR.
"""

import pyarrow as pa

from ptr_pipeline import schemas
from ptr_pipeline.training.settings import TrainSettings


def sft_rows(dataset: pa.Table) -> pa.Table:
    """``dataset`` (``schemas.PTR_DATASET``) with every row's thoughts removed."""
    schemas.validate(dataset, schemas.PTR_DATASET, "sft input (ptr_dataset)")
    empty = pa.array([[] for _ in range(dataset.num_rows)], type=pa.list_(pa.string()))
    return dataset.set_column(dataset.schema.get_field_index("thoughts"), "thoughts", empty)


def sft_settings(settings: TrainSettings) -> TrainSettings:
    """``settings`` for the SFT run: the same budget and the plain answer loss (``answer_ce``: the
    paper's IFT baseline is ordinary SFT, so a ``ptr3`` ablation keeps the baseline it is compared
    with), with the thought weights (which cannot matter without thoughts) and the ptr3 weights at
    their defaults, so the SFT cache key ignores them."""
    defaults = TrainSettings()
    fixed = ("thought_weight", "thought_weight_schedule", "loss", "ptr3_lambdas", "ptr3_beta0")
    return settings.model_copy(update={name: getattr(defaults, name) for name in fixed})
