"""Arrow schemas of every table the pipeline writes, and the constants they share. One place.

Each stage's core builds its output with ``pa.Table.from_pylist(rows, schema=...)`` so a column
renamed here is renamed everywhere, and ``validate(table, schema, what)`` names what is wrong.
"""

import pyarrow as pa

IGNORE_INDEX = -100  # label value that cross-entropy skips (torch's default ignore_index)

QUERY_POOL = pa.schema(
    [
        pa.field("query_id", pa.string(), nullable=False),
        pa.field("query", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
    ]
)

# One row: what a model asset resolved to (weak_model, base_model, strong_model).
MODEL_REF = pa.schema(
    [
        pa.field("role", pa.string(), nullable=False),
        pa.field("spec", pa.string(), nullable=False),  # as the user wrote it
        pa.field("model", pa.string(), nullable=False),  # what from_pretrained loads
        pa.field("fingerprint", pa.string(), nullable=False),  # models.model_fingerprint
        pa.field("revision", pa.string(), nullable=False),  # hub commit, file hashes or recipe
    ]
)

# Per-row provenance carried by every generated table.
_PROVENANCE = [
    pa.field("model", pa.string(), nullable=False),
    pa.field("backend", pa.string(), nullable=False),
    pa.field("sampling", pa.string(), nullable=False),  # JSON of the sampling parameters
    pa.field("template", pa.string(), nullable=False),  # prompt template version
    pa.field("prompt_hash", pa.string(), nullable=False),  # sha256 of the rendered conversation
    pa.field("code_version", pa.string(), nullable=False),
]

WEAK_THOUGHTS = pa.schema(
    [
        pa.field("query_id", pa.string(), nullable=False),
        pa.field("query", pa.string(), nullable=False),
        pa.field("sample_index", pa.int32(), nullable=False),
        pa.field("thought", pa.string(), nullable=False),
        pa.field("finished", pa.bool_(), nullable=False),  # False: cut off by max_new_tokens
        *_PROVENANCE,
    ]
)

# One row per (query, round); each row carries the query and the weak thoughts it refined.
STRONG_REFINEMENTS = pa.schema(
    [
        pa.field("query_id", pa.string(), nullable=False),
        pa.field("query", pa.string(), nullable=False),
        pa.field("thoughts", pa.list_(pa.string()), nullable=False),  # weak drafts, sample order
        pa.field("thoughts_finished", pa.list_(pa.bool_()), nullable=False),  # one per draft
        pa.field("round", pa.int32(), nullable=False),  # 1..num_rounds
        pa.field("refinement", pa.string(), nullable=False),
        pa.field("finished", pa.bool_(), nullable=False),  # False: cut off by max_new_tokens
        # The last round only: consistency_samples more samples of the same prompt, for the
        # filter's self-consistency check (paper appendix A.1, "N-sampling"); [] otherwise.
        pa.field("samples", pa.list_(pa.string()), nullable=False),
        # The user turn before every later step (conversation.refine_turn_text fills {query}):
        # the strong stage's rounds > 1, training and evaluation all use this one.
        pa.field("refine_turn", pa.string(), nullable=False),
        *_PROVENANCE,
    ]
)

# One row per query: the whole progression and the filter's verdict on it.
FILTER_DECISIONS = pa.schema(
    [
        pa.field("query_id", pa.string(), nullable=False),
        pa.field("query", pa.string(), nullable=False),
        pa.field(
            "thoughts", pa.list_(pa.string()), nullable=False
        ),  # weak drafts, then strong rounds < R
        pa.field("answer", pa.string(), nullable=False),  # strong round R
        pa.field("finished", pa.list_(pa.bool_()), nullable=False),  # per step: thoughts, answer
        pa.field("samples", pa.list_(pa.string()), nullable=False),  # self-consistency samples
        pa.field("refine_turn", pa.string(), nullable=False),  # as in strong_refinements
        # The scores (filtering.consistency; similarities in [0, 1] by the filter's measure):
        pa.field("step_similarity", pa.list_(pa.float64()), nullable=False),  # consecutive steps
        pa.field("query_similarity", pa.float64(), nullable=False),  # query vs answer
        pa.field("repetition", pa.list_(pa.float64()), nullable=False),  # per step
        pa.field("agreement", pa.float64(), nullable=True),  # answer's vote share; null: no samples
        pa.field("majority", pa.float64(), nullable=True),  # the best candidate's vote share
        pa.field("keep", pa.bool_(), nullable=False),
        pa.field("drop_reason", pa.string(), nullable=True),  # null when kept
    ]
)

PTR_DATASET = pa.schema(
    [
        pa.field("query_id", pa.string(), nullable=False),
        pa.field("query", pa.string(), nullable=False),
        pa.field("thoughts", pa.list_(pa.string()), nullable=False),
        pa.field("answer", pa.string(), nullable=False),
        # "ptr": a filtered progression; "sft": an ordinary pair mixed in (filtering.mix)
        pa.field("origin", pa.string(), nullable=False),
        # The user turn between steps, as the strong stage recorded it ({query} unfilled)
        pa.field("refine_turn", pa.string(), nullable=False),
    ]
)

# Tokenized training rows (training.tokenize.encode_dataset -> the training process).
TRAIN_EXAMPLES = pa.schema(
    [
        pa.field("input_ids", pa.list_(pa.int32()), nullable=False),
        pa.field("labels", pa.list_(pa.int32()), nullable=False),  # IGNORE_INDEX = unsupervised
        pa.field("loss_weights", pa.list_(pa.float32()), nullable=False),
        pa.field("turns", pa.list_(pa.int16()), nullable=False),  # 1..n assistant turn, 0 context
    ]
)

# One row per eval item, as the model is asked it (evaluation.tasks.EvalExample).
EVAL_SETS = pa.schema(
    [
        pa.field("task", pa.string(), nullable=False),
        pa.field("example_id", pa.string(), nullable=False),
        pa.field("question", pa.string(), nullable=False),  # raw, for decontamination
        pa.field("prompt", pa.string(), nullable=False),  # round 1's user turn, shots included
        pa.field("query", pa.string(), nullable=False),  # the prompt without shots: the refine
        # turn's {query} (conversation.refine_turn_text)
        pa.field("gold", pa.string(), nullable=False),
        pa.field("choices", pa.list_(pa.string()), nullable=False),  # options as shown, or []
        pa.field("reference", pa.string(), nullable=False),  # JSON: what a judge needs beyond gold
        pa.field("where", pa.string(), nullable=False),  # source file and row
    ]
)

# Per-item metric values, metric name -> value in [0, 1] (evaluation.tasks.Task.metrics).
METRICS = pa.map_(pa.string(), pa.float64())

EVAL_SCORES = pa.schema(
    [
        pa.field("model_role", pa.string(), nullable=False),  # "base", "sft" or "ptr"
        pa.field("model", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("example_id", pa.string(), nullable=False),
        pa.field("prompt", pa.string(), nullable=False),  # the round-1 user turn
        pa.field("round", pa.int32(), nullable=False),
        pa.field("response", pa.string(), nullable=False),
        pa.field("extracted", pa.string(), nullable=True),
        pa.field("gold", pa.string(), nullable=False),
        pa.field("correct", pa.bool_(), nullable=True),  # null for a continuous metric (xsum)
        pa.field("metrics", METRICS, nullable=False),
        pa.field("detail", pa.string(), nullable=False),  # e.g. why a program failed, or ""
        # The refine turn rounds > 1 were asked with (the template, {query} unfilled); null when
        # not known (responses made elsewhere, judged by `python -m ptr_pipeline score`).
        pa.field("refine_turn", pa.string(), nullable=True),
    ]
)

# One row per (model role, task, round, metric).
EVAL_SUMMARY = pa.schema(
    [
        pa.field("model_role", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("round", pa.int32(), nullable=False),
        pa.field("metric", pa.string(), nullable=False),  # the task's primary metric first
        pa.field("primary", pa.bool_(), nullable=False),
        pa.field("n", pa.int64(), nullable=False),
        pa.field("value", pa.float64(), nullable=False),  # the mean over items, 0-1
        pa.field("ci_low", pa.float64(), nullable=False),  # 95%: Wilson (0/1 metrics) or bootstrap
        pa.field("ci_high", pa.float64(), nullable=False),
        pa.field("answered", pa.float64(), nullable=False),  # share with an extractable answer
        # vs the previous round, by the per-item verdict (``correct``); null for xsum
        pa.field("wrong_to_right", pa.int64(), nullable=True),
        pa.field("right_to_wrong", pa.int64(), nullable=True),
        # The chance level of the model's round-1 items on this metric, in [0, 1]
        # (evaluation.chance.RULE); null where unknown (no item found in eval_sets).
        pa.field("chance", pa.float64(), nullable=True),
        # The task carries no signal by that rule (every model at chance); null: not assessed.
        pa.field("at_chance", pa.bool_(), nullable=True),
    ]
)


# Paired differences between two (model, round) cells over the same examples (evaluation.stats).
EVAL_COMPARISONS = pa.schema(
    [
        pa.field("comparison", pa.string(), nullable=False),  # e.g. "ptr r3 - ptr r1"
        pa.field("task", pa.string(), nullable=False),  # a task, or "all" (pooled)
        pa.field("n", pa.int64(), nullable=False),  # paired examples
        pa.field("metric", pa.string(), nullable=False),  # the task's primary metric
        pa.field("difference", pa.float64(), nullable=False),  # mean a - mean b
        pa.field("ci_low", pa.float64(), nullable=False),  # paired bootstrap, 95%
        pa.field("ci_high", pa.float64(), nullable=False),
        pa.field("wrong_to_right", pa.int64(), nullable=False),  # a scores above b on an item
        pa.field("right_to_wrong", pa.int64(), nullable=False),  # a scores below b
        # The task is at chance (evaluation.chance.RULE) and left out of "all"; null: not
        # assessed (then "all" pools every task).
        pa.field("at_chance", pa.bool_(), nullable=True),
        pa.field("tasks", pa.list_(pa.string()), nullable=False),  # the tasks whose items count
        pa.field("reading", pa.string(), nullable=False),  # what the interval says, one line
    ]
)


class SchemaError(ValueError):
    """A table does not have the columns or types a stage needs."""


def validate(table: pa.Table, schema: pa.Schema, what: str) -> None:
    """Raise SchemaError naming every missing or mistyped column of ``table``.

    Args:
        table: the table to check.
        schema: the expected schema (extra columns in ``table`` are allowed).
        what: a name for the table in the message, such as a file path or an asset key.
    """
    problems = []
    for field in schema:
        if field.name not in table.column_names:
            problems.append(f"missing column {field.name!r} ({field.type})")
        elif not table.schema.field(field.name).type.equals(field.type):
            got = table.schema.field(field.name).type
            problems.append(f"column {field.name!r} is {got}, expected {field.type}")
        elif not field.nullable and table.column(field.name).null_count:
            problems.append(
                f"column {field.name!r} has {table.column(field.name).null_count} nulls"
            )
    if problems:
        raise SchemaError(f"{what}: " + "; ".join(problems))
