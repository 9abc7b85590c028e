"""The paper's ten eval tasks: parsers (hub schemas and original releases), prompts, judges.

docs/paper_notes.md section 5.1 lists the tasks and how the paper scored them; issue 7 sets how we
score them (``TASKS[name].metrics``, primary first):

| task | metric | read from the response |
|---|---|---|
| gsm8k | accuracy (+ strict_match, flexible_extract) | final number (``answers.extract_number``) |
| math | accuracy | final answer, symbolic equivalence by math-verify |
| mmlu, arc, commonsense_qa, winogrande, gpqa | accuracy | final option letter |
| humaneval | pass@1 | code, run against the tests in ``evaluation.sandbox`` |
| drop | f1, em | final answer span, DROP's official EM/F1 |
| xsum | rougeL, rouge1, rouge2 | the whole response, ROUGE F (rouge-score) |

Zero-shot prompts, except MMLU's (5 shots from its dev split, as the released code effectively
ran it); ``num_fewshot`` is a setting per task. Files are read by ``records.read_records`` (every
format and layout it knows); a parser only reads fields, with typed accessors, so a wrong type
names the file, the row and the field.
"""

import hashlib
import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path
from typing import Any

import pyarrow as pa

from ptr_pipeline import answers, schemas
from ptr_pipeline.engines import cut_at_stop
from ptr_pipeline.evaluation import metrics
from ptr_pipeline.records import InputError, Record, read_records
from ptr_pipeline.samples import NAMED_SOURCES, eval_sample

LETTERS = "ABCDEFGH"
MMLU_CSV_COLUMNS = ["question", "A", "B", "C", "D", "answer"]  # the original release: no header
# Where a follow-on question (or turn) a model invents begins: lm-eval's "Question:" anywhere,
# and at a line start a numbered question, "Q:", "Problem:", "Passage:" or a chat turn.
QA_STOP = ("Question:", "\nQuestion", "\nQ:", "\nProblem:", "Passage:", "\nUser:", "\nHuman:")


@dataclass(frozen=True)
class EvalExample:
    id: str
    question: str  # the raw question, for decontamination
    prompt: str  # what the model is asked at round 1 (few-shot examples included)
    gold: str  # the gold answer as shown: a letter, a number, a span, a summary, the tests' name
    where: str = ""  # file and row, for error messages
    choices: tuple[str, ...] = ()  # multiple choice: the options in the order shown
    # What a judge needs beyond ``gold``, JSON values only (it travels in the eval_sets table).
    reference: dict[str, Any] = field(default_factory=dict)
    group: str = ""  # the pool few-shot examples are drawn from (MMLU: the subject)
    shot: str = ""  # this item written as a solved example (question and answer)
    # The prompt without its few-shot examples: what a refine turn's {query} restates (re-reading
    # restates the question, not the solved examples before it). "" = the prompt itself.
    zero_shot_prompt: str = ""

    @property
    def query(self) -> str:
        """The question as the refine turn restates it (``conversation.refine_turn_text``)."""
        return self.zero_shot_prompt or self.prompt


@dataclass(frozen=True)
class Judgment:
    """One response judged: what was read from it, the verdict, and every metric (0.0-1.0)."""

    extracted: str | None
    correct: bool | None  # None for a continuous metric (xsum)
    metrics: dict[str, float]
    detail: str = ""  # e.g. why a program failed


Judge = Callable[[str, EvalExample, str], Judgment]


@dataclass(frozen=True)
class Task:
    name: str
    parse: Callable[[Record, int], EvalExample]  # (record, 0-based index) -> example
    reader: Judge  # (response already cut at ``stop``, example, extraction) -> judgment
    metrics: tuple[str, ...]  # primary first
    stop: tuple[str, ...]  # stop strings for generation and scoring
    extraction: str = answers.FLEXIBLE  # the default variant
    num_fewshot: int = 0  # the default number of shots
    csv_columns: list[str] | None = None  # for CSV files without a header row
    source: str = ""  # the hub dataset it reads (docs)
    merge_folders: bool = False  # a folder's configs are one set (ARC: Easy + Challenge)

    def judge(self, response: str, example: EvalExample, extraction: str | None = None) -> Judgment:
        """``response`` to ``example`` judged: cut at the task's stop strings (as generation
        cuts it), read by ``extraction`` (default: the task's), scored by the task's metrics."""
        return self.reader(cut_at_stop(response, self.stop), example, extraction or self.extraction)


# --- prompts


def _mc_prompt(question: str, options: list[str] | tuple[str, ...]) -> str:
    return "Answer the multiple-choice question. End with 'The answer is (X).'\n\n" + _mc_body(
        question, options
    )


def _mc_body(question: str, options) -> str:
    lines = "\n".join(f"({LETTERS[i]}) {o}" for i, o in enumerate(options))
    return f"Question: {question}\n{lines}"


def _mc_example(
    r: Record, id_: str, question: str, options: list[str], gold: str, group: str = ""
) -> EvalExample:
    return EvalExample(
        id_,
        question,
        _mc_prompt(question, options),
        gold,
        r.where,
        choices=tuple(options),
        group=group,
        shot=f"{_mc_body(question, options)}\nThe answer is ({gold}).",
    )


# --- field readers


def _strings(record: Record, value, field_: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise record.error("expected a list of strings", field_)
    return value


def _options(record: Record, options: list[str], field_: str) -> list[str]:
    if not 2 <= len(options) <= len(LETTERS):
        raise record.error(f"{len(options)} options; expected 2 to {len(LETTERS)}", field_)
    return options


def _id(r: Record, field_: str, fallback: str) -> str:
    """The record's own id when it has a usable one, else ``fallback`` (task and position)."""
    value = r.get(field_)
    if isinstance(value, bool) or not isinstance(value, str | int) or str(value).strip() == "":
        return fallback
    return str(value)


def _labelled_choices(r: Record) -> tuple[str, list[str], list[str]]:
    """(stem, option texts, labels) of the AI2 original ({"stem", "choices": [{text, label}]})
    or the hub's (question str, choices {"text": [...], "label": [...]}) layout."""
    q = r.require("question")
    if isinstance(q, dict):
        stem, choices = q.get("stem"), q.get("choices")
        if (
            not isinstance(stem, str)
            or not isinstance(choices, list)
            or not all(isinstance(c, dict) for c in choices)
        ):
            raise r.error("expected {'stem': str, 'choices': [{'text', 'label'}]}", "question")
        texts = _strings(r, [c.get("text") for c in choices], "question")
        labels = _strings(r, [c.get("label") for c in choices], "question")
    elif isinstance(q, str):
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
    return stem, texts, labels


def _keyed_gold(r: Record, labels: list[str]) -> str:
    key = r.text("answerKey").strip()
    if key not in labels:
        raise r.error(f"{key!r} is not one of the labels {labels}", "answerKey")
    return LETTERS[labels.index(key)]  # labels may be 1-4; we always show A-D


# --- parsers


def _gsm8k(r: Record, i: int) -> EvalExample:
    question, answer = r.text("question"), r.text("answer")
    if "####" not in answer:
        raise r.error("no '#### <number>' final answer", "answer")
    reasoning, gold = (part.strip() for part in answer.rsplit("####", 1))
    if not gold:
        raise r.error("the final answer after '####' is empty", "answer")
    number = answers.canonical_number(gold)
    if number is None:
        raise r.error(f"the final answer after '####' is not a number: {gold!r}", "answer")
    prompt = f"Solve the math problem. End with 'The answer is N.'\n\nQuestion: {question}"
    reasoning = re.sub(r"<<[^>]*>>", "", reasoning)  # the calculator annotations
    shot = f"Question: {question}\n{reasoning}\nThe answer is {number}."
    return EvalExample(_id(r, "id", f"gsm8k-{i}"), question, prompt, number, r.where, shot=shot)


def _math(r: Record, i: int) -> EvalExample:
    problem, solution = r.text("problem"), r.text("solution")
    gold = r.text("answer").strip() if r.has("answer") else answers.last_boxed(solution)
    if not gold:
        raise r.error("no final answer: no 'answer' field and no \\boxed{} in", "solution")
    prompt = (
        f"Solve the math problem. Give the final answer as \\boxed{{ANSWER}}.\n\nProblem: {problem}"
    )
    return EvalExample(
        _id(r, "unique_id", f"math-{i}"),
        problem,
        prompt,
        gold,
        r.where,
        group=str(r.get("type") or r.get("subject") or ""),
        shot=f"Problem: {problem}\n{solution}",
    )


def _arc(r: Record, i: int) -> EvalExample:
    stem, texts, labels = _labelled_choices(r)
    return _mc_example(r, _id(r, "id", f"arc-{i}"), stem, texts, _keyed_gold(r, labels))


def _commonsense_qa(r: Record, i: int) -> EvalExample:
    stem, texts, labels = _labelled_choices(r)
    return _mc_example(r, _id(r, "id", f"commonsense_qa-{i}"), stem, texts, _keyed_gold(r, labels))


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
    return _mc_example(r, f"{subject}-{i}", question, options, gold, group=subject)


def _winogrande(r: Record, i: int) -> EvalExample:
    sentence, options = r.text("sentence"), [r.text("option1"), r.text("option2")]
    if "_" not in sentence:
        raise r.error("no '_' blank to fill", "sentence")
    answer = str(r.require("answer")).strip()
    if answer not in ("1", "2"):
        raise r.error(f"expected '1' or '2', got {answer!r}", "answer")
    question = f"{sentence}\nWhich option fills the blank (_)?"
    return _mc_example(
        r, _id(r, "qID", f"winogrande-{i}"), question, options, LETTERS[int(answer) - 1]
    )


GPQA_SEED = 0  # the fixed seed of GPQA's option shuffle


def _gpqa(r: Record, i: int) -> EvalExample:
    question, correct = r.text("Question").strip(), r.text("Correct Answer").strip()
    options = [correct] + [r.text(f"Incorrect Answer {k}").strip() for k in (1, 2, 3)]
    id_ = _id(r, "Record ID", f"gpqa-{i}")
    # A fixed shuffle per item (simple-evals shuffles with a seeded RNG too): the same row gets
    # the same order on every run and machine, and the answer is not always (A).
    seed = int(hashlib.sha256(f"{GPQA_SEED}:{id_}:{question}".encode()).hexdigest()[:16], 16)
    random.Random(seed).shuffle(options)
    return _mc_example(r, id_, question, options, LETTERS[options.index(correct)])


def _humaneval(r: Record, i: int) -> EvalExample:
    prompt, test, entry = r.text("prompt"), r.text("test"), r.text("entry_point").strip()
    if f"def {entry}" not in prompt:
        raise r.error(f"the prompt defines no function {entry!r}", "entry_point")
    if "def check(" not in test:
        raise r.error("no 'def check(candidate)' in", "test")
    instruction = (
        "Complete the Python function. Reply with the whole function in a ```python code block."
    )
    return EvalExample(
        _id(r, "task_id", f"humaneval-{i}"),
        prompt,
        f"{instruction}\n\n```python\n{prompt}```",
        entry,
        r.where,
        reference={"prompt": prompt, "test": test, "entry_point": entry},
    )


def _drop(r: Record, i: int) -> EvalExample:
    passage, question = r.text("passage"), r.text("question")
    spans_field = r.require("answers_spans")
    if not isinstance(spans_field, dict):
        raise r.error("expected {'spans': [...], 'types': [...]}", "answers_spans")
    spans = _strings(r, spans_field.get("spans"), "answers_spans")
    if not spans or not any(s.strip() for s in spans):
        raise r.error("no answer span", "answers_spans")
    answers = [list(spans)]
    for extra in r.get("validated_answers") or []:  # the original release's extra annotations
        if isinstance(extra, dict) and extra.get("spans"):
            answers.append(list(extra["spans"]))
    prompt = (
        "Answer the question about the passage. End with 'The answer is X.'\n\n"
        f"Passage: {passage}\nQuestion: {question}"
    )
    return EvalExample(
        _id(r, "query_id", f"drop-{i}"),
        question,
        prompt,
        " | ".join(spans),
        r.where,
        reference={"answers": answers},
        shot=f"Passage: {passage}\nQuestion: {question}\nThe answer is {', '.join(spans)}.",
    )


def _xsum(r: Record, i: int) -> EvalExample:
    document, summary = r.text("document"), r.text("summary").strip()
    if not summary:
        raise r.error("empty summary", "summary")
    prompt = f"Summarize the article in one sentence.\n\nArticle: {document.strip()}"
    return EvalExample(
        _id(r, "id", f"xsum-{i}"),
        document,
        prompt,
        summary,
        r.where,
        shot=f"Article: {document.strip()}\nSummary: {summary}",
    )


# --- judges (the response is already cut at the task's stop strings)


def _binary(extracted: str | None, correct: bool, name: str = "accuracy", **more) -> Judgment:
    return Judgment(extracted, correct, {name: float(correct), **more})


def _judge_number(response: str, example: EvalExample, extraction: str) -> Judgment:
    strict = answers.extract_number(response, answers.STRICT)
    flexible = answers.extract_number(response, answers.FLEXIBLE)
    chosen = flexible if extraction == answers.FLEXIBLE else strict
    return _binary(
        chosen,
        chosen == example.gold,
        strict_match=float(strict == example.gold),
        flexible_extract=float(flexible == example.gold),
    )


def _judge_choice(response: str, example: EvalExample, extraction: str) -> Judgment:
    letter = answers.extract_choice(response, example.choices, extraction)
    return _binary(letter, letter == example.gold)


def _judge_math(response: str, example: EvalExample, extraction: str) -> Judgment:
    text = answers.plain(response)
    answer = answers.line_after_marker(text) or answers.last_boxed(text)
    if answer is not None:
        return _binary(answer, metrics.math_equal(example.gold, answer))
    if extraction == answers.FLEXIBLE and text.strip():
        return _binary(*metrics.math_judge(example.gold, text, whole_response=True))
    return _binary(None, False)


def _judge_drop(response: str, example: EvalExample, extraction: str) -> Judgment:
    text = answers.plain(response)
    answer = answers.line_after_marker(text) or answers.last_boxed(text)
    if answer is None and extraction == answers.FLEXIBLE:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        answer = lines[-1].rstrip(".") if lines else None
    scores = metrics.drop_scores(answer, example.reference["answers"])
    return Judgment(answer, scores["em"] == 1.0, scores)


def _judge_xsum(response: str, example: EvalExample, extraction: str) -> Judgment:
    summary = response.strip()
    return Judgment(summary or None, None, metrics.rouge(example.gold, summary))


def _judge_humaneval(response: str, example: EvalExample, extraction: str) -> Judgment:
    ref = example.reference
    program = metrics.humaneval_program(ref["prompt"], response, ref["test"], ref["entry_point"])
    result = metrics.humaneval_passes(program)
    code = answers.code_block(response).strip()
    return Judgment(
        code or None,
        result.passed,
        {"pass@1": float(result.passed)},
        result.status + (f": {result.detail}" if result.detail else ""),
    )


ACCURACY = ("accuracy",)
GRADED_METRICS = frozenset({"f1", *metrics.ROUGE_TYPES})  # per-item values in [0, 1]; the rest 0/1
TASKS: dict[str, Task] = {
    # The world's two tasks first: a partition range (benchmarks/ablations.py) can take just them.
    "gsm8k": Task("gsm8k", _gsm8k, _judge_number, ("accuracy", "strict_match", "flexible_extract"), QA_STOP, answers.STRICT, source="openai/gsm8k"),
    "arc": Task("arc", _arc, _judge_choice, ACCURACY, QA_STOP, source="allenai/ai2_arc (Easy + Challenge)", merge_folders=True),
    "mmlu": Task("mmlu", _mmlu, _judge_choice, ACCURACY, QA_STOP, num_fewshot=5, csv_columns=MMLU_CSV_COLUMNS, source="cais/mmlu"),
    "math": Task("math", _math, _judge_math, ACCURACY, QA_STOP, source="MATH (hendrycks), MATH-500"),
    "commonsense_qa": Task("commonsense_qa", _commonsense_qa, _judge_choice, ACCURACY, QA_STOP, source="tau/commonsense_qa"),
    "winogrande": Task("winogrande", _winogrande, _judge_choice, ACCURACY, QA_STOP, source="allenai/winogrande"),
    "gpqa": Task("gpqa", _gpqa, _judge_choice, ACCURACY, QA_STOP, source="Idavidrein/gpqa"),
    "humaneval": Task("humaneval", _humaneval, _judge_humaneval, ("pass@1",), ("\nif __name__", "\nprint(", "\nassert "), source="openai/openai_humaneval"),
    "drop": Task("drop", _drop, _judge_drop, ("f1", "em"), QA_STOP, source="ucinlp/drop"),
    "xsum": Task("xsum", _xsum, _judge_xsum, metrics.ROUGE_TYPES, ("\nDocument:", "\nArticle:"), source="EdinburghNLP/xsum"),
}  # fmt: skip


def read_examples(
    task: str, source: str | None = None, split: str | None = None, limit: int | None = None
) -> list[EvalExample]:
    """The zero-shot examples of ``task`` from ``source`` (default: the bundled sample).

    Args:
        task: a key of ``TASKS``.
        source: anything ``records.read_records`` reads (file, folder, ``hf:`` name), or
            ``bundled`` (the default) or ``world`` (``samples.eval_sample``).
        split: the split of a folder source; None = its only split.
        limit: keep the first ``limit`` examples.

    Raises:
        KeyError: for an unknown task.
        InputError: naming the file, row and field of a bad record, a repeated id, or a source
            with no example.
    """
    if task not in TASKS:
        raise KeyError(f"unknown eval task {task!r}; choose from {sorted(TASKS)}")
    path = (
        str(eval_sample(task, source or "bundled")) if source in (None, *NAMED_SOURCES) else source
    )
    task_ = TASKS[task]
    records = read_records(path, split, task_.csv_columns, task_.merge_folders)
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


def with_shots(
    examples: list[EvalExample], shots: list[EvalExample], n: int, where: str = "the shots"
) -> list[EvalExample]:
    """``examples`` with ``n`` solved examples before each question: the first ``n`` shots of
    the example's group (MMLU: its subject) or, for a task without groups, the first ``n``. A
    shot never repeats the question it precedes.

    Raises:
        InputError: fewer than ``n`` usable shots, naming the example, the group and ``where``.
    """
    if n == 0:
        return examples
    solved = [s for s in shots if s.shot]
    by_group: dict[str, list[EvalExample]] = {}  # grouped once, not per question
    for s in solved:
        by_group.setdefault(s.group, []).append(s)
    out = []
    for example in examples:
        pool = by_group.get(example.group, []) if example.group else solved
        chosen = list(islice((s for s in pool if s.question != example.question), n))
        if len(chosen) < n:
            of = f" of {example.group!r}" if example.group else ""
            raise InputError(
                f"{example.where}: {n} few-shot examples{of} asked, {len(chosen)} in {where}"
            )
        header, body = example.prompt.split("\n\n", 1)
        shown = "\n\n".join(s.shot for s in chosen)
        out.append(
            replace(
                example, prompt=f"{header}\n\n{shown}\n\n{body}", zero_shot_prompt=example.prompt
            )
        )
    return out


def load_examples(
    task: str,
    source: str | None = None,
    limit: int | None = None,
    split: str | None = None,
    num_fewshot: int | None = None,
    fewshot_source: str | None = None,
    fewshot_split: str | None = None,
) -> list[EvalExample]:
    """The examples of ``task`` as the eval stage asks them: ``read_examples``, then
    ``num_fewshot`` (default: the task's) solved examples from ``fewshot_source`` before each
    question. Without a ``fewshot_source``: the bundled sample's dev file for the bundled
    sample, the ``dev`` split of a folder source (MMLU's releases and hub layout have one).

    Raises:
        InputError: a single-file source with shots asked and no ``fewshot_source`` (the shots
            would come from the evaluated items), or too few shots (``with_shots``).
    """
    examples = read_examples(task, source, split, limit)
    n = TASKS[task].num_fewshot if num_fewshot is None else num_fewshot
    if n:
        if fewshot_source is None:
            if source in (None, *NAMED_SOURCES):
                fewshot_source = str(eval_sample(task, "dev"))
            elif Path(source).is_dir():
                fewshot_source, fewshot_split = source, fewshot_split or "dev"
            else:
                raise InputError(
                    f"{source}: {task} asks {n} few-shot examples; set fewshot_sources "
                    f"(e.g. the dev split) for {task}, or num_fewshot {{{task}: 0}}"
                )
        shots = read_examples(task, fewshot_source, fewshot_split)
        where = fewshot_source + (f" split {fewshot_split}" if fewshot_split else "")
        examples = with_shots(examples, shots, n, where)
    return examples


# --- the eval_sets table (schemas.EVAL_SETS): how the items travel between stages


def examples_table(task: str, examples: list[EvalExample]) -> pa.Table:
    """``examples`` of ``task`` as a ``schemas.EVAL_SETS`` table."""
    rows = [
        {
            "task": task,
            "example_id": e.id,
            "question": e.question,
            "prompt": e.prompt,
            "query": e.query,
            "gold": e.gold,
            "choices": list(e.choices),
            "reference": json.dumps(e.reference, sort_keys=True),
            "where": e.where,
        }
        for e in examples
    ]
    return pa.Table.from_pylist(rows, schema=schemas.EVAL_SETS)


def examples_from_table(table: pa.Table) -> dict[str, list[EvalExample]]:
    """task -> its examples, in table order, from a ``schemas.EVAL_SETS`` table.

    Raises:
        SchemaError: missing or mistyped columns. KeyError: a task this code does not know.
    """
    schemas.validate(table, schemas.EVAL_SETS, "eval_sets")
    out: dict[str, list[EvalExample]] = {}
    for r in table.to_pylist():
        if r["task"] not in TASKS:
            raise KeyError(f"eval_sets: unknown task {r['task']!r}; the tasks are {sorted(TASKS)}")
        out.setdefault(r["task"], []).append(
            EvalExample(
                r["example_id"],
                r["question"],
                r["prompt"],
                r["gold"],
                r["where"],
                choices=tuple(r["choices"]),
                reference=json.loads(r["reference"]),
                zero_shot_prompt=r["query"] if r["query"] != r["prompt"] else "",
            )
        )
    return out
