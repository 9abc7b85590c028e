"""Which tasks carry signal: each item's chance level, and the rule that leaves a task whose models
all score at chance out of every pooled claim.

The rule (``RULE``, printed by ``python -m ptr_pipeline report`` and recorded by the
``eval_comparisons`` asset) is computed from the scores and the items alone; no task is named:

- The chance level of an item, per metric: for a 0/1 metric of a multiple-choice item, 1 / its
  number of options; for any other 0/1 metric (an exact answer: GSM8K, MATH, HumanEval's pass@1,
  DROP's exact match), 0; for a graded metric (DROP's F1, XSum's ROUGE), the permutation null:
  the mean score of the item's own response judged against ``SHIFTS`` other items (their golds),
  that is on-format text unrelated to the item.
- A task carries signal when at least one model's round-1 score exceeds its chance level: the
  paired bootstrap 95% interval of (item score - item chance), item by item, lies above 0. The
  other tasks are "at chance": their rows stay in every table, marked, and no pooled figure
  ("all") includes them.

The other items are chosen without randomness: in example-id order, the ``SHIFTS`` items at
offsets spread evenly around the task (offset ``round(k * n / (SHIFTS + 1))``), so neighbours
(DROP's questions on one passage) are mostly avoided. A graded item's response is judged with the
task's default extraction unless one is given.
"""

import logging
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from ptr_pipeline import schemas
from ptr_pipeline.evaluation.stats import (
    ROLE_ORDER,
    metric_names,
    metric_values,
    paired_difference,
)
from ptr_pipeline.evaluation.tasks import GRADED_METRICS, TASKS, EvalExample

log = logging.getLogger(__name__)

SHIFTS = 5  # other items each graded response is judged against (the permutation null)

RULE = (
    "An item's chance level is 1/(its number of options) for a multiple-choice item, 0 for an "
    "exact answer (GSM8K, MATH, HumanEval, DROP's exact match), and for a graded metric (DROP's "
    f"F1, XSum's ROUGE) the mean score its own response gets against {SHIFTS} other items' golds "
    "(a permutation null). A task carries signal when at least one model's round-1 score exceeds "
    "its chance level: the paired bootstrap 95% interval of (item score - item chance) lies above "
    "0. Tasks without signal, whose models score at or below their chance level, are marked 'at "
    "chance' and left out of every pooled ('all') figure."
)

MULTIPLE_CHOICE = "1/options"
EXACT = "0 (exact answer)"
PERMUTATION = f"permutation null ({SHIFTS} other items)"


@dataclass(frozen=True)
class TaskSignal:
    """One task judged by ``RULE``.

    Attributes:
        task: the task.
        metric: its primary metric (the one the rule tests).
        basis: how its primary metric's chance level is set (``MULTIPLE_CHOICE``, ``EXACT``,
            ``PERMUTATION``, or why it is unknown).
        chance: (model role, metric) -> the mean chance level of the role's round-1 items.
        above: model role -> (round-1 score - chance, 95% low, 95% high), the primary metric,
            paired over the items whose chance is known.
        items: round-1 items with a known chance level (the largest over the roles).
        signal: some role's interval lies above 0.
    """

    task: str
    metric: str
    basis: str
    chance: dict[tuple[str, str], float] = field(default_factory=dict)
    above: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    items: int = 0
    signal: bool = False

    @property
    def best(self) -> str | None:
        """The role whose round-1 score stands furthest above chance (by its interval's low end)."""
        return max(self.above, key=lambda role: self.above[role][1], default=None)


def _offsets(n: int) -> list[int]:
    """``SHIFTS`` distinct offsets in 1..n-1, spread evenly (fewer when n is small)."""
    return sorted({round(k * n / (SHIFTS + 1)) for k in range(1, SHIFTS + 1)} - {0, n})


def item_chance(
    scores: pa.Table,
    examples: Mapping[str, list[EvalExample]],
    extraction: Mapping[str, str] | None = None,
) -> dict[tuple[str, str, str], dict[str, float]]:
    """(model role, task, metric) -> example id -> the chance level of the role's round-1 item
    (``RULE``). An item missing from ``examples`` (or a task this code cannot judge) has none.

    Args:
        scores: a ``schemas.EVAL_SCORES`` table.
        examples: task -> its items (``evaluation.examples_from_table`` of ``eval_sets``).
        extraction: task -> the extraction the scores were judged with (default: the task's).
    """
    schemas.validate(scores, schemas.EVAL_SCORES, "eval_scores")
    extraction = extraction or {}
    first = scores.filter(pc.equal(scores.column("round"), 1))
    values = metric_values(first)
    responses: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
    for r in first.select(["model_role", "task", "example_id", "response"]).to_pylist():
        responses[(r["model_role"], r["task"])][r["example_id"]] = r["response"]
    out: dict[tuple[str, str, str], dict[str, float]] = {}
    nulls: dict[tuple[str, str], dict[str, dict[str, float]]] = {}  # judged once for all metrics
    for (role, task, _, name), by_example in values.items():
        items = {e.id: e for e in examples.get(task, [])}
        if name in GRADED_METRICS:
            if (role, task) not in nulls:
                nulls[(role, task)] = _permutation_null(
                    task, responses[(role, task)], items, extraction.get(task)
                )
            null = nulls[(role, task)]
            out[(role, task, name)] = {i: null[i][name] for i in by_example if i in null}
        else:
            out[(role, task, name)] = {
                i: (1 / len(items[i].choices) if items[i].choices else 0.0)
                for i in by_example
                if i in items
            }
    return out


def _permutation_null(
    task: str, responses: dict[str, str], items: dict[str, EvalExample], extraction: str | None
) -> dict[str, dict[str, float]]:
    """example id -> metric -> the mean score of its response judged against other items."""
    if task not in TASKS:
        return {}
    ids = sorted(i for i in responses if i in items)
    n = len(ids)
    out = {}
    for k, i in enumerate(ids):
        judged = [
            TASKS[task].judge(responses[i], items[ids[(k + s) % n]], extraction).metrics
            for s in _offsets(n)
        ]
        if judged:
            out[i] = {m: sum(j[m] for j in judged) / len(judged) for m in judged[0]}
    return out


def task_signals(
    scores: pa.Table,
    examples: Mapping[str, list[EvalExample]],
    extraction: Mapping[str, str] | None = None,
) -> dict[str, TaskSignal]:
    """task -> its ``TaskSignal``: every task ``scores`` holds, judged by ``RULE``."""
    chance = item_chance(scores, examples, extraction)
    values = metric_values(scores)
    found: dict[str, set[str]] = defaultdict(set)
    for _, task, _, name in values:
        found[task].add(name)
    out = {}
    for task in sorted(found):
        metric = metric_names(task, found[task])[0]
        items = {e.id: e for e in examples.get(task, [])}
        basis = (
            PERMUTATION
            if metric in GRADED_METRICS
            else (MULTIPLE_CHOICE if any(e.choices for e in items.values()) else EXACT)
        )
        means, above, known = {}, {}, 0
        for (role, t, name), by_example in chance.items():
            if t != task or not by_example:
                continue
            means[(role, name)] = sum(by_example.values()) / len(by_example)
            if name != metric:
                continue
            scored = values.get((role, task, 1, metric), {})
            ids = sorted(set(scored) & set(by_example))
            if len(ids) >= 2:
                above[role] = paired_difference(
                    [scored[i] for i in ids], [by_example[i] for i in ids]
                )
                known = max(known, len(ids))
        if not above:
            basis = "unknown: no round-1 item with a known chance level (items not in eval_sets?)"
        signal = any(low > 0 for _, low, _ in above.values())
        out[task] = TaskSignal(task, metric, basis, means, above, known, signal)
        log.debug("%s: %s, signal %s", task, basis, signal)
    return out


def signal_markdown(signals: Mapping[str, TaskSignal], roles: tuple[str, ...] = ()) -> str:
    """The rule applied, one row per task (tasks with signal first, in ``TASKS`` order): the
    chance level of the primary metric, each model's round-1 score minus it with its paired 95%
    interval (points), and the verdict."""
    roles = roles or tuple(
        sorted({r for s in signals.values() for r in s.above}, key=lambda r: ROLE_ORDER.get(r, 9))
    )
    head = "| task | metric | n | chance (%) | chance from | "
    head += " | ".join(f"{role} round 1 - chance" for role in roles) + " | verdict |"
    lines = [head, "|" + "---|" * (6 + len(roles))]
    for task in ordered_tasks(signals):
        s = signals[task]
        levels = {v for (role, m), v in s.chance.items() if m == s.metric}
        if not levels:
            level = "-"
        elif max(levels) - min(levels) < 5e-4:
            level = f"{100 * min(levels):.1f}"
        else:  # a permutation null differs per model
            level = f"{100 * min(levels):.1f}-{100 * max(levels):.1f}"
        cells = []
        for role in roles:
            if role in s.above:
                d, low, high = s.above[role]
                cells.append(f"{100 * d:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]")
            else:
                cells.append("-")
        verdict = "signal" if s.signal else "at chance"
        lines.append(
            f"| {task} | {s.metric} | {s.items} | {level} | {s.basis} | {' | '.join(cells)} | "
            f"{verdict} |"
        )
    return "\n".join(lines)


def ordered_tasks(signals: Mapping[str, TaskSignal], tasks=None) -> list[str]:
    """``tasks`` (default: those of ``signals``) with the tasks that carry signal first, each
    group in ``TASKS`` order (then by name); a task without a verdict counts as at chance."""
    order = {task: i for i, task in enumerate(TASKS)}
    tasks = list(signals) if tasks is None else list(tasks)

    def key(task: str):
        carries = task in signals and signals[task].signal
        return (not carries, order.get(task, len(order)), task)

    return sorted(dict.fromkeys(tasks), key=key)
