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
        *_PROVENANCE,
    ]
)

# One row per (query, round); each row carries the query and the weak thoughts it refined.
STRONG_REFINEMENTS = pa.schema(
    [
        pa.field("query_id", pa.string(), nullable=False),
        pa.field("query", pa.string(), nullable=False),
        pa.field("thoughts", pa.list_(pa.string()), nullable=False),  # weak drafts, sample order
        pa.field("round", pa.int32(), nullable=False),  # 1..num_rounds
        pa.field("refinement", pa.string(), nullable=False),
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
        pa.field("step_similarity", pa.list_(pa.float64()), nullable=False),  # consecutive steps
        pa.field("answer_distinct_ratio", pa.float64(), nullable=False),
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
    ]
)

# Tokenized training rows (training.tokenize.encode_dataset -> the training process).
TRAIN_EXAMPLES = pa.schema(
    [
        pa.field("input_ids", pa.list_(pa.int32()), nullable=False),
        pa.field("labels", pa.list_(pa.int32()), nullable=False),  # IGNORE_INDEX = unsupervised
        pa.field("loss_weights", pa.list_(pa.float32()), nullable=False),
    ]
)

EVAL_SCORES = pa.schema(
    [
        pa.field("model_role", pa.string(), nullable=False),  # "base" or "ptr"
        pa.field("model", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("example_id", pa.string(), nullable=False),
        pa.field("round", pa.int32(), nullable=False),
        pa.field("response", pa.string(), nullable=False),
        pa.field("extracted", pa.string(), nullable=True),
        pa.field("gold", pa.string(), nullable=False),
        pa.field("correct", pa.bool_(), nullable=False),
    ]
)

EVAL_SUMMARY = pa.schema(
    [
        pa.field("model_role", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("round", pa.int32(), nullable=False),
        pa.field("n", pa.int64(), nullable=False),
        pa.field("accuracy", pa.float64(), nullable=False),
        pa.field("answered", pa.float64(), nullable=False),  # share with an extractable answer
        pa.field("wrong_to_right", pa.int64(), nullable=False),  # vs the previous round
        pa.field("right_to_wrong", pa.int64(), nullable=False),
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
