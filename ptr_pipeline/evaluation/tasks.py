"""Eval tasks: parsers (HF hub schema and the original release formats), prompts, answer extraction.

docs/paper_notes.md, section 5.1: zero-shot prompts, answers scored from the model's text. GSM8K
takes the number after "The answer is" (else the last number: strict then flexible, without the
official code's "any number matches" leniency); multiple-choice tasks take the letter after "The
answer is" (else the first option letter in parentheses or standing alone).

Files are read by ``records.read_records`` (every format and layout it knows); a task only parses
fields, with typed accessors, so a wrong type names the file, the row and the field.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ptr_pipeline.records import InputError, Record, read_records
from ptr_pipeline.samples import NAMED_SOURCES, eval_sample

LETTERS = "ABCDEFGH"
MMLU_CSV_COLUMNS = ["question", "A", "B", "C", "D", "answer"]  # the original release: no header


@dataclass(frozen=True)
class EvalExample:
    id: str
    question: str  # the raw question, for decontamination
    prompt: str  # what the model is asked at round 1
    gold: str
    where: str = ""  # file and row, for error messages


@dataclass(frozen=True)
class Task:
    name: str
    parse: Callable[[Record, int], EvalExample]  # (record, 0-based index) -> example
    extract: Callable[[str], str | None]  # response -> answer, or None
    csv_columns: list[str] | None = None  # for CSV files without a header row


def _number(text: str) -> str:
    text = text.replace(",", "").rstrip(".")
    return text[:-2] if text.endswith(".0") else text


def extract_number(response: str) -> str | None:
    m = re.search(r"answer is\s*:?\s*\$?(-?\d[\d,]*(?:\.\d+)?)", response, re.IGNORECASE)
    if m:
        return _number(m.group(1))
    numbers = re.findall(r"-?\d[\d,]*(?:\.\d+)?", response)
    return _number(numbers[-1]) if numbers else None


def extract_choice(response: str) -> str | None:
    m = re.search(r"answer is\s*:?\s*\(?([A-H])\b\)?", response)
    if m:
        return m.group(1)
    m = re.search(r"\(([A-H])\)", response) or re.search(r"\b([A-H])\b", response)
    return m.group(1) if m else None


def _mc_prompt(question: str, options: list[str]) -> str:
    lines = "\n".join(f"({LETTERS[i]}) {o}" for i, o in enumerate(options))
    return (
        "Answer the multiple-choice question. End with 'The answer is (X).'\n\n"
        f"Question: {question}\n{lines}"
    )


def _strings(record: Record, value, field: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise record.error("expected a list of strings", field)
    return value


def _options(record: Record, options: list[str], field: str) -> list[str]:
    if not 2 <= len(options) <= len(LETTERS):
        raise record.error(f"{len(options)} options; expected 2 to {len(LETTERS)}", field)
    return options


def _id(r: Record, field: str, fallback: str) -> str:
    """The record's own id when it has a usable one, else ``fallback`` (task and position)."""
    value = r.get(field)
    if isinstance(value, bool) or not isinstance(value, str | int) or str(value).strip() == "":
        return fallback
    return str(value)


def _gsm8k(r: Record, i: int) -> EvalExample:
    question, answer = r.text("question"), r.text("answer")
    if "####" not in answer:
        raise r.error("no '#### <number>' final answer", "answer")
    gold = answer.rsplit("####", 1)[-1].strip()
    if not gold:
        raise r.error("the final answer after '####' is empty", "answer")
    prompt = f"Solve the math problem. End with 'The answer is N.'\n\nQuestion: {question}"
    return EvalExample(_id(r, "id", f"gsm8k-{i}"), question, prompt, _number(gold), r.where)


def _arc(r: Record, i: int) -> EvalExample:
    q = r.require("question")
    if isinstance(q, dict):  # AI2 original: {"stem", "choices": [{"text", "label"}]}
        stem, choices = q.get("stem"), q.get("choices")
        if (
            not isinstance(stem, str)
            or not isinstance(choices, list)
            or not all(isinstance(c, dict) for c in choices)
        ):
            raise r.error("expected {'stem': str, 'choices': [{'text', 'label'}]}", "question")
        texts = _strings(r, [c.get("text") for c in choices], "question")
        labels = _strings(r, [c.get("label") for c in choices], "question")
    elif isinstance(
        q, str
    ):  # HF allenai/ai2_arc: question str, choices {"text": [...], "label": [...]}
        stem, choices = q, r.require("choices")
        if not isinstance(choices, dict):
            raise r.error("expected {'text': [...], 'label': [...]}", "choices")
        texts = _strings(r, choices.get("text"), "choices")
        labels = _strings(r, choices.get("label"), "choices")
    else:
        raise r.error(f"expected a string or an object, got {type(q).__name__}", "question")
    texts = _options(r, texts, "choices")
    if len(labels) != len(texts):
        raise r.error(f"{len(labels)} labels for {len(texts)} options", "choices")
    key = r.text("answerKey")
    if key not in labels:
        raise r.error(f"{key!r} is not one of the labels {labels}", "answerKey")
    gold = LETTERS[labels.index(key)]  # labels may be 1-4; we always show A-D
    return EvalExample(_id(r, "id", f"arc-{i}"), stem, _mc_prompt(stem, texts), gold, r.where)


def _mmlu(r: Record, i: int) -> EvalExample:
    question = r.text("question")
    if r.has("choices"):
        options = _options(r, _strings(r, r.require("choices"), "choices"), "choices")
    else:  # the original CSV release: one column per option
        options = [r.text(letter) for letter in "ABCD"]
    answer = r.require("answer")
    if isinstance(answer, bool) or not isinstance(answer, int | str):
        raise r.error(f"expected an index or a letter, got {type(answer).__name__}", "answer")
    if isinstance(answer, str) and answer.strip().isdigit():  # an index written as text
        answer = int(answer)
    if isinstance(answer, int):
        if not 0 <= answer < len(options):
            raise r.error(f"index {answer} outside the {len(options)} choices", "answer")
        gold = LETTERS[answer]
    else:
        gold = answer.strip().upper()
        if gold not in LETTERS[: len(options)]:
            raise r.error(f"{answer!r} is not a choice letter", "answer")
    subject = r.get("subject") or Path(r.file).stem.rsplit("_", 1)[0]
    return EvalExample(f"{subject}-{i}", question, _mc_prompt(question, options), gold, r.where)


TASKS: dict[str, Task] = {
    "gsm8k": Task("gsm8k", _gsm8k, extract_number),
    "arc": Task("arc", _arc, extract_choice),
    "mmlu": Task("mmlu", _mmlu, extract_choice, MMLU_CSV_COLUMNS),
}


def load_examples(
    task: str, source: str | None = None, limit: int | None = None, split: str | None = None
) -> list[EvalExample]:
    """The examples of ``task`` from ``source`` (default: the bundled sample), first ``limit``.

    Args:
        task: a key of ``TASKS``.
        source: anything ``records.read_records`` reads (file, folder, ``hf:`` name), or
            ``bundled`` (the default) or ``world`` (``samples.eval_sample``).
        limit: keep the first ``limit`` examples.
        split: the split of a folder source; None = its only split.

    Raises:
        KeyError: for an unknown task.
        InputError: naming the file, row and field of a bad record, or an empty source.
    """
    if task not in TASKS:
        raise KeyError(f"unknown eval task {task!r}; choose from {sorted(TASKS)}")
    path = (
        str(eval_sample(task, source or "bundled")) if source in (None, *NAMED_SOURCES) else source
    )
    records = read_records(path, split=split, csv_columns=TASKS[task].csv_columns)
    examples = []
    for i, record in enumerate(records[:limit]):
        try:
            examples.append(TASKS[task].parse(record, i))
        except InputError:
            raise
        except (AttributeError, IndexError, KeyError, TypeError, ValueError) as e:  # any shape we
            # did not foresee is still a bad record, named as such
            raise record.error(f"not a {task} record ({type(e).__name__}: {e})") from e
    seen: dict[str, str] = {}
    for example in examples:  # scores are keyed by example id: two items must not share one
        if example.id in seen:
            raise InputError(
                f"{example.where}: example id {example.id!r} repeats {seen[example.id]}; ids must be unique"
            )
        seen[example.id] = example.where
    if not examples:
        raise InputError(f"{path}: no {task} examples")
    return examples
