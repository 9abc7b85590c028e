"""SFT mixing: ordinary instruction -> response pairs mixed into the PTR rows.

The paper mixes "traditional supervised fine-tuning (SFT) data ... to mitigate catastrophic
forgetting" (``docs/paper_notes.md`` section 2.3) without giving the ratio; the released
WizardLM sample (``question``/``output`` pairs) is probably that portion. An SFT row is a PTR row
without thoughts (``origin`` "sft"), so training supervises its response like any answer.

``sft_fraction`` is the share of the final dataset that is SFT rows: with P PTR rows kept,
round(P * f / (1 - f)) pairs are drawn from ``sft_source`` without replacement, seeded. A source
with fewer usable pairs than that is an error naming both numbers (nothing is silently shorter).
"""

import hashlib
import random

import pyarrow as pa

from ptr_pipeline import schemas
from ptr_pipeline.records import InputError, Record, read_records

QUESTION_FIELDS = ("instruction", "question", "query", "prompt")
ANSWER_FIELDS = ("output", "response", "answer", "completion")


def _field(record: Record, name: str, candidates: tuple[str, ...], what: str) -> tuple[str, str]:
    """The field's name (resolved when "auto") and its text."""
    if name == "auto":
        found = next((f for f in candidates if record.has(f)), None)
        if found is None:
            fields = ", ".join(sorted(record.fields)) or "none"
            raise record.error(
                f"no {what} field (looked for {', '.join(candidates)}; found {fields}); "
                f"set sft_{what}_field"
            )
        name = found
    return name, record.text(name)


def read_sft_pairs(
    source: str, split: str | None, question_field: str, answer_field: str
) -> list[dict]:
    """Every pair of ``source`` as a ``schemas.PTR_DATASET`` row with no thoughts, ``origin``
    "sft" (``refine_turn`` empty until ``mix_sft`` gives it the PTR rows'); an Alpaca ``input`` is joined after the instruction with a newline (as LLaMA-Factory
    does) when the question is read from ``instruction``. Pairs with a blank question or answer
    are skipped.

    Raises:
        InputError: unreadable source, a row without the fields (naming file, row and field).
    """
    rows = []
    for record in read_records(source, split=split):
        name, question = _field(record, question_field, QUESTION_FIELDS, "question")
        question = question.strip()
        if name == "instruction" and record.has("input"):  # Alpaca
            extra = record.text("input").strip()
            question = f"{question}\n{extra}" if extra else question
        answer = _field(record, answer_field, ANSWER_FIELDS, "answer")[1].strip()
        if question and answer:
            digest = hashlib.sha256(f"{question}\0{answer}".encode()).hexdigest()[:16]
            rows.append(
                {
                    "query_id": f"sft-{digest}",
                    "query": question,
                    "thoughts": [],
                    "answer": answer,
                    "origin": "sft",
                    "refine_turn": "",
                }
            )
    return rows


def mix_sft(
    kept: pa.Table, pairs: list[dict], fraction: float, seed: int
) -> tuple[pa.Table, dict[str, object]]:
    """``kept`` (PTR rows) with ``pairs`` (``read_sft_pairs``) drawn so they make ``fraction``
    of the result.

    Returns:
        The mixed ``schemas.PTR_DATASET`` table (PTR rows first, then the drawn pairs in source
        order) and what was mixed: fraction, rows per origin, pairs available, seed.

    Raises:
        InputError: fewer usable pairs than the fraction needs.
    """
    wanted = round(kept.num_rows * fraction / (1 - fraction))
    if wanted > len(pairs):
        raise InputError(
            f"sft_fraction {fraction} of {kept.num_rows} PTR rows needs {wanted} SFT pairs; "
            f"sft_source has {len(pairs)} usable ones"
        )
    chosen = sorted(random.Random(seed).sample(range(len(pairs)), wanted))
    # A pair has no later step, so no refine turn asks anything in it; it carries the PTR rows'
    # turn so the dataset names one.
    turns = set(kept.column("refine_turn").to_pylist())
    turn = turns.pop() if len(turns) == 1 else ""
    sft = pa.Table.from_pylist(
        [{**pairs[i], "refine_turn": turn} for i in chosen], schema=schemas.PTR_DATASET
    )
    info = {
        "sft_fraction": fraction,
        "rows": {"ptr": kept.num_rows, "sft": sft.num_rows},
        "sft_pairs_available": len(pairs),
        "seed": seed,
    }
    return pa.concat_tables([kept.cast(schemas.PTR_DATASET), sft]), info
