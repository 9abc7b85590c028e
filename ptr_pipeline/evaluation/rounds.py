"""Test-time progressive refinement: score every task at every round.

Paper notes, section 4 and open point 11: round 1 is the task prompt; round r > 1 keeps the whole
history (each earlier answer as an assistant turn) and appends the refine prompt. Decoding is
greedy; each round is scored on its own, with no voting across rounds.
"""

import logging
from collections import defaultdict

import pyarrow as pa

from ptr_pipeline import schemas
from ptr_pipeline.evaluation.tasks import TASKS, EvalExample
from ptr_pipeline.generation.backends import Generator
from ptr_pipeline.generation.settings import Sampling

log = logging.getLogger(__name__)

CODE_VERSION = "eval_v2"


def evaluate_rounds(
    examples: list[EvalExample],
    task: str,
    generator: Generator,
    num_rounds: int,
    refine_prompt: str,
    sampling: Sampling,
    model_role: str,
    model: str,
) -> pa.Table:
    """Answer every example ``num_rounds`` times, each round refining the previous answer.

    Returns:
        A ``schemas.EVAL_SCORES`` table, one row per (example, round).
    """
    history: list[list[dict]] = [[{"role": "user", "content": e.prompt}] for e in examples]
    rows = []
    for round_ in range(1, num_rounds + 1):
        if round_ > 1:
            for conversation in history:
                conversation.append({"role": "user", "content": refine_prompt})
        outputs = generator.generate(history, sampling)
        for example, conversation, (response,) in zip(examples, history, outputs, strict=True):
            conversation.append({"role": "assistant", "content": response})
            extracted = TASKS[task].extract(response)
            rows.append(
                {
                    "model_role": model_role,
                    "model": model,
                    "task": task,
                    "example_id": example.id,
                    "round": round_,
                    "response": response,
                    "extracted": extracted,
                    "gold": example.gold,
                    "correct": extracted == example.gold,
                }
            )
        log.info("%s %s round %d done", model_role, task, round_)
    return pa.Table.from_pylist(rows, schema=schemas.EVAL_SCORES)


def summarize(scores: pa.Table) -> pa.Table:
    """Accuracy per (model role, task, round), with flips against the previous round."""
    schemas.validate(scores, schemas.EVAL_SCORES, "eval_scores")
    correct: dict[tuple[str, str, int], dict[str, bool]] = defaultdict(dict)
    answered: dict[tuple[str, str, int], int] = defaultdict(int)
    columns = ["model_role", "task", "round", "example_id", "correct", "extracted"]
    for r in scores.select(columns).to_pylist():
        key = (r["model_role"], r["task"], r["round"])
        correct[key][r["example_id"]] = r["correct"]
        answered[key] += r["extracted"] is not None
    rows = []
    for (role, task, round_), by_example in sorted(correct.items()):
        previous = correct.get((role, task, round_ - 1), {})
        rows.append(
            {
                "model_role": role,
                "task": task,
                "round": round_,
                "n": len(by_example),
                "accuracy": sum(by_example.values()) / len(by_example),
                "answered": answered[(role, task, round_)] / len(by_example),
                "wrong_to_right": sum(
                    ok and previous.get(k) is False for k, ok in by_example.items()
                ),
                "right_to_wrong": sum(
                    not ok and previous.get(k) is True for k, ok in by_example.items()
                ),
            }
        )
    return pa.Table.from_pylist(rows, schema=schemas.EVAL_SUMMARY)


def summary_markdown(summary: pa.Table, column: str = "accuracy") -> str:
    """A task x round table of ``column`` (a fraction, shown in %) per model role, as markdown."""
    rows = summary.to_pylist()
    rounds = sorted({r["round"] for r in rows})
    head = "| model | task | " + " | ".join(f"round {k}" for k in rounds) + " |"
    lines = [head, "|" + "---|" * (2 + len(rounds))]
    cells: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    for r in rows:
        cells[(r["model_role"], r["task"])][r["round"]] = r[column]
    for (role, task), by_round in sorted(cells.items()):
        values = " | ".join(f"{100 * by_round[k]:.1f}" if k in by_round else "-" for k in rounds)
        lines.append(f"| {role} | {task} | {values} |")
    return "\n".join(lines)
