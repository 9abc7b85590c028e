"""Eval tasks: loaders (HF hub schema and the original release formats), prompts, answer extraction.

Paper notes, section 5.1: zero-shot prompts, answers scored from the model's text. GSM8K takes the
number after "The answer is" (else the last number: strict then flexible, without the official
code's "any number matches" leniency); multiple-choice tasks take the letter after "The answer is"
(else the first option letter in parentheses or standing alone).
"""

import csv
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ptr_pipeline.samples import eval_sample

LETTERS = "ABCDEFGH"


@dataclass(frozen=True)
class EvalExample:
    id: str
    question: str  # the raw question, for decontamination
    prompt: str  # what the model is asked at round 1
    gold: str


@dataclass(frozen=True)
class Task:
    name: str
    parse: Callable[[dict, int], EvalExample]  # (record, row index) -> example
    extract: Callable[[str], str | None]  # response -> answer, or None


class TaskDataError(ValueError):
    """A bad eval record; the message names the file, row and field."""


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


def _gsm8k(r: dict, i: int) -> EvalExample:
    gold = r["answer"].rsplit("####", 1)[-1].strip()
    prompt = f"Solve the math problem. End with 'The answer is N.'\n\nQuestion: {r['question']}"
    return EvalExample(str(r.get("id", f"gsm8k-{i}")), r["question"], prompt, _number(gold))


def _arc(r: dict, i: int) -> EvalExample:
    q = r["question"]
    if isinstance(q, dict):  # AI2 original: {"stem", "choices": [{"text", "label"}]}
        stem, choices = q["stem"], q["choices"]
        texts, labels = [c["text"] for c in choices], [c["label"] for c in choices]
    else:  # HF allenai/ai2_arc: question str, choices {"text": [...], "label": [...]}
        stem, texts, labels = q, r["choices"]["text"], r["choices"]["label"]
    gold = LETTERS[labels.index(r["answerKey"])]  # labels may be 1-4; we always show A-D
    return EvalExample(str(r.get("id", f"arc-{i}")), stem, _mc_prompt(stem, texts), gold)


def _mmlu(r: dict, i: int) -> EvalExample:
    answer = r["answer"]
    gold = LETTERS[answer] if isinstance(answer, int) else str(answer).strip()
    ex_id = f"{r.get('subject', 'mmlu')}-{i}"
    return EvalExample(ex_id, r["question"], _mc_prompt(r["question"], list(r["choices"])), gold)


TASKS: dict[str, Task] = {
    "gsm8k": Task("gsm8k", _gsm8k, extract_number),
    "arc": Task("arc", _arc, extract_choice),
    "mmlu": Task("mmlu", _mmlu, extract_choice),
}


def _read_records(path: Path) -> list[dict]:
    if path.is_dir():  # MMLU original release: a folder of <subject>_<split>.csv files
        return [r for p in sorted(path.glob("*.csv")) for r in _read_records(p)]
    if path.suffix == ".csv":  # MMLU original: question, A, B, C, D, answer letter; no header
        subject = path.stem.rsplit("_", 1)[0]
        with path.open(newline="", encoding="utf-8") as f:
            return [
                {"question": row[0], "choices": row[1:5], "answer": row[5], "subject": subject}
                for row in csv.reader(f)
            ]
    records = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise TaskDataError(f"{path} row {lineno}: invalid JSON: {e.msg}") from e
    return records


def load_examples(
    task: str, source: str | None = None, limit: int | None = None
) -> list[EvalExample]:
    """The examples of ``task`` from ``source`` (default: the bundled sample), first ``limit``.

    Raises:
        KeyError: for an unknown task.
        TaskDataError: naming the file, row and field of a bad record.
    """
    if task not in TASKS:
        raise KeyError(f"unknown eval task {task!r}; choose from {sorted(TASKS)}")
    path = Path(source) if source else eval_sample(task)
    examples = []
    for i, record in enumerate(_read_records(path)[:limit]):
        try:
            examples.append(TASKS[task].parse(record, i))
        except KeyError as e:
            raise TaskDataError(f"{path} row {i + 1}: missing field {e.args[0]!r}") from e
        except (ValueError, IndexError, TypeError) as e:
            raise TaskDataError(f"{path} row {i + 1}: bad record for {task}: {e}") from e
    return examples
