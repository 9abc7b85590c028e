"""Confidence intervals and paired differences of eval scores: what carries the PTR claim.

- A 0/1 metric (accuracy, pass@1, DROP's em) of one (model, task, round) cell: the 95% Wilson
  score interval (``scipy.stats.binomtest(...).proportion_ci(method="wilson")``); a graded one
  (DROP's F1, ROUGE): the bootstrap percentile interval of the mean (``scipy.stats.bootstrap``).
- A difference between two cells on the same examples (PTR round 3 - PTR round 1, PTR round 3 -
  base round 1, ...): the paired bootstrap, resampling examples with both scores together
  (``scipy.stats.bootstrap(paired=True)``, percentile method, 10,000 resamples, a fixed seed so
  a report is reproducible). "all" pools the tasks, each example paired with itself.

docs/paper_notes.md, section 6.2 point 4: the paper reports no variance; every number here has an
interval.
"""

from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pyarrow as pa
from scipy import stats

from ptr_pipeline import schemas
from ptr_pipeline.evaluation.tasks import TASKS

if TYPE_CHECKING:  # chance.py imports this module
    from ptr_pipeline.evaluation.chance import TaskSignal

CONFIDENCE = 0.95
RESAMPLES = 10_000
SEED = 0

ROLE_ORDER = {"base": 0, "sft": 1, "ptr": 2}
ROLE_NAMES = {"base": "base", "sft": "SFT", "ptr": "PTR"}


class Claim(NamedTuple):
    """A paired difference the report leads with: model a at round a minus model b at round b
    (round -1 = that model's last round), and what a difference above or below 0 means."""

    role_a: str
    round_a: int
    role_b: str
    round_b: int
    higher: str  # the reading when the 95% interval lies above 0
    lower: str  # ... below 0


CLAIMS = (
    # refinement within PTR: the paper's headline (49.6 -> 53.5)
    Claim("ptr", -1, "ptr", 1, "refining helps PTR", "refining hurts PTR"),
    Claim("ptr", -1, "base", 1, "refined PTR beats the base model's first answer",
          "refined PTR falls below the base model's first answer"),
    # plain SFT on the same data and steps
    Claim("ptr", -1, "sft", 1, "refined PTR beats SFT's first answer",
          "refined PTR falls below SFT's first answer"),
    # the prompting baseline asked to refine (the paper: it falls)
    Claim("base", 2, "base", 1, "the base model improves when asked to refine",
          "the base model gets worse when asked to refine"),
    Claim("sft", 2, "sft", 1, "SFT improves when asked to refine",
          "SFT gets worse when asked to refine"),
    # both trained models refined to the end: does the thought mask beat SFT?
    Claim("ptr", -1, "sft", -1, "PTR beats SFT when both refine to the last round",
          "PTR falls below SFT when both refine to the last round"),
)  # fmt: skip
UNRESOLVED = "not resolved: the 95% interval spans 0"


def reading(claim: Claim, low: float, high: float) -> str:
    """The one-line reading of ``claim`` from its interval: ``higher``, ``lower`` or
    ``UNRESOLVED``."""
    if low > 0:
        return claim.higher
    if high < 0:
        return claim.lower
    return UNRESOLVED


def wilson(successes: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a proportion."""
    if n == 0:
        return (0.0, 1.0)
    ci = stats.binomtest(successes, n).proportion_ci(CONFIDENCE, method="wilson")
    return (float(ci.low), float(ci.high))


def mean_interval(values: list[float], binary: bool) -> tuple[float, float]:
    """95% interval of the mean of per-item values in [0, 1]: Wilson for a 0/1 metric
    (``binary``), else the bootstrap percentile interval (10,000 resamples, a fixed seed)."""
    if not values:
        return (0.0, 1.0)
    if binary:
        return wilson(int(sum(values)), len(values))
    x = np.asarray(values, dtype=float)
    if len(x) < 2 or np.all(x == x[0]):
        return (float(x.mean()), float(x.mean()))
    return _percentile_interval((x,), np.mean)


def paired_difference(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """mean(a) - mean(b) over paired examples, and its paired bootstrap 95% interval."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    difference = float(x.mean() - y.mean())
    if len(x) < 2 or np.all(x - y == (x - y)[0]):  # no spread: the interval is the point
        return difference, difference, difference
    low, high = _percentile_interval(
        (x, y), lambda u, v, axis=-1: u.mean(axis=axis) - v.mean(axis=axis), paired=True
    )
    return difference, low, high


def _percentile_interval(samples: tuple, statistic, paired: bool = False) -> tuple[float, float]:
    """``scipy.stats.bootstrap`` with this module's settings: percentile method, ``RESAMPLES``
    resamples, ``CONFIDENCE``, a fixed seed."""
    result = stats.bootstrap(
        samples,
        statistic,
        paired=paired,
        vectorized=True,
        n_resamples=RESAMPLES,
        confidence_level=CONFIDENCE,
        method="percentile",
        rng=np.random.default_rng(SEED),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def metric_values(scores: pa.Table) -> dict[tuple[str, str, int, str], dict[str, float]]:
    """(model role, task, round, metric) -> example id -> the item's value of that metric."""
    cells: dict[tuple[str, str, int, str], dict[str, float]] = {}
    columns = ["model_role", "task", "round", "example_id", "metrics"]
    for r in scores.select(columns).to_pylist():
        for name, value in r["metrics"]:
            key = (r["model_role"], r["task"], r["round"], name)
            cells.setdefault(key, {})[r["example_id"]] = value
    return cells


def metric_names(task: str, found: set[str]) -> list[str]:
    """The metrics of ``task`` in report order, primary first: the task's own, then any other
    ``found`` in its scores (sorted); for a task this code does not know, ``found`` sorted."""
    own = list(TASKS[task].metrics) if task in TASKS else []
    return own + sorted(found - set(own))


def _cells(scores: pa.Table) -> dict[tuple[str, str, int], dict[str, float]]:
    """(model role, task, round) -> example id -> the item's value of the task's primary metric."""
    values = metric_values(scores)
    found: dict[str, set[str]] = {}
    for _, task, _, name in values:
        found.setdefault(task, set()).add(name)
    return {
        (role, task, round_): by_example
        for (role, task, round_, name), by_example in values.items()
        if name == metric_names(task, found[task])[0]
    }


def compare(
    scores: pa.Table,
    signals: "Mapping[str, TaskSignal] | None" = None,
    claims: tuple[Claim, ...] = CLAIMS,
) -> pa.Table:
    """A ``schemas.EVAL_COMPARISONS`` table: each claim per task (on the task's primary metric)
    and pooled ("all": the per-item values of the pooled tasks together), for the models and
    rounds ``scores`` holds (a claim whose cells are missing is skipped).

    Args:
        scores: a ``schemas.EVAL_SCORES`` table.
        signals: task -> its verdict by the chance rule (``chance.task_signals``). Only tasks
            that carry signal are pooled; the others keep their own rows, marked
            ``at_chance``. Without it every task is pooled and ``at_chance`` is null (not
            assessed).
        claims: the comparisons.
    """
    schemas.validate(scores, schemas.EVAL_SCORES, "eval_scores")
    cells = _cells(scores)
    tasks = sorted({task for _, task, _ in cells})
    rows = []
    for claim in claims:
        pooled_a: list[float] = []
        pooled_b: list[float] = []
        pooled: list[str] = []
        label = None
        for task in tasks:
            last = max((k for r, t, k in cells if r == claim.role_a and t == task), default=None)
            last_b = max((k for r, t, k in cells if r == claim.role_b and t == task), default=None)
            ra = last if claim.round_a == -1 else claim.round_a
            rb = last_b if claim.round_b == -1 else claim.round_b
            a, b = cells.get((claim.role_a, task, ra)), cells.get((claim.role_b, task, rb))
            if a is None or b is None or (claim.role_a, ra) == (claim.role_b, rb):
                continue
            label = f"{claim.role_a} r{ra} - {claim.role_b} r{rb}"
            ids = sorted(set(a) & set(b))
            xa, xb = [a[i] for i in ids], [b[i] for i in ids]
            metric = TASKS[task].metrics[0] if task in TASKS else ""
            at_chance = None if signals is None else not (task in signals and signals[task].signal)
            rows.append(_row(claim, label, task, metric, xa, xb, at_chance, [task]))
            if not at_chance:
                pooled_a += xa
                pooled_b += xb
                pooled.append(task)
        if label is not None and len(tasks) > 1 and pooled:
            rows.append(_row(claim, label, "all", "primary", pooled_a, pooled_b, False, pooled))
    return pa.Table.from_pylist(rows, schema=schemas.EVAL_COMPARISONS)


def _row(
    claim: Claim,
    label: str,
    task: str,
    metric: str,
    a: list[float],
    b: list[float],
    at_chance: bool | None,
    tasks: list[str],
) -> dict:
    difference, low, high = paired_difference(a, b)
    return {
        "comparison": label,
        "task": task,
        "n": len(a),
        "metric": metric,
        "difference": difference,
        "ci_low": low,
        "ci_high": high,
        "wrong_to_right": sum(x > y for x, y in zip(a, b, strict=True)),
        "right_to_wrong": sum(x < y for x, y in zip(a, b, strict=True)),
        "at_chance": at_chance,
        "tasks": tasks,
        "reading": reading(claim, low, high),
    }


def comparisons_markdown(comparisons: pa.Table) -> str:
    """The comparisons as a markdown table, in points of each task's primary metric ("all"
    pools the tasks it names, as the paper's average mixes accuracy, pass@1 and similarity); per
    comparison, the tasks with signal, then the pooled row, then the tasks at chance, marked so."""
    lines = [
        "| comparison | task | metric | n | difference (points) | 95% CI | better | worse |",
        "|---|---|---|---|---|---|---|---|",
    ]
    order = {task: i for i, task in enumerate(TASKS)}
    claims: dict[str, int] = {}
    rows = comparisons.to_pylist()
    for r in rows:
        claims.setdefault(r["comparison"], len(claims))

    def key(r: dict):  # per claim: the tasks with signal, the pooled row, the tasks at chance
        group = 1 if r["task"] == "all" else (2 if r.get("at_chance") else 0)
        return (claims[r["comparison"]], group, order.get(r["task"], len(order)), r["task"])

    for r in sorted(rows, key=key):
        lines.append(
            f"| {r['comparison']} | {_task_cell(r)} | {r['metric']} | {r['n']} | "
            f"{100 * r['difference']:+.1f} | "
            f"[{100 * r['ci_low']:+.1f}, {100 * r['ci_high']:+.1f}] | {r['wrong_to_right']} | "
            f"{r['right_to_wrong']} |"
        )
    return "\n".join(lines)


def seed_pooled(scores_by_seed: list[pa.Table], claim: "Claim") -> dict:
    """One ``Claim`` (model a, round a, model b, round b; round -1 = the last) pooled over runs that
    differ only in their seed (e.g. fine-tuning seeds), on the same items of one task.

    The statistic is the mean over seeds of the mean paired difference over items, in [-1, 1]. Its
    95% interval is a two-way bootstrap of the crossed design seeds x items: each of
    ``RESAMPLES`` resamples draws the seeds with replacement and, independently, the items with
    replacement (one draw of items for every seed: they are the same items), and the interval is
    the percentile interval of the resampled statistic (a fixed seed). It therefore holds both
    the item noise of one run and the spread between seeds (Field and Welsh 2007, "Bootstrapping
    clustered data", the two-stage case; Efron and Tibshirani 1993, section 6.2).

    Args:
        scores_by_seed: one ``schemas.EVAL_SCORES`` table per seed, each of one task.
        claim: one of ``CLAIMS`` (or any ``Claim``).

    Returns:
        ``difference``, ``ci_low``, ``ci_high``, ``seeds``, ``n`` (items), and
        ``wrong_to_right`` / ``right_to_wrong``: items a scores above / below b, summed over
        seeds.

    Raises:
        ValueError: fewer than 2 seeds, several tasks, or the cells missing in a seed.
    """
    if len(scores_by_seed) < 2:
        raise ValueError("seed_pooled needs at least 2 seeds")
    role_a, round_a, role_b, round_b = claim.role_a, claim.round_a, claim.role_b, claim.round_b
    rows = []
    ids: list[str] | None = None
    for k, scores in enumerate(scores_by_seed):
        tasks = set(scores.column("task").to_pylist())
        if len(tasks) != 1:
            raise ValueError(f"seed {k}: one task per table, got {sorted(tasks)}")
        cells = _cells(scores)
        task = tasks.pop()
        last = {role: max(r for ro, _, r in cells if ro == role) for role, _, _ in cells}
        ra = last.get(role_a) if round_a == -1 else round_a
        rb = last.get(role_b) if round_b == -1 else round_b
        a, b = cells.get((role_a, task, ra)), cells.get((role_b, task, rb))
        if a is None or b is None:
            raise ValueError(f"seed {k}: no {role_a} r{ra} or {role_b} r{rb} for {task}")
        common = sorted(set(a) & set(b))
        ids = common if ids is None else [i for i in ids if i in set(common)]
        rows.append((a, b))
    assert ids is not None
    d = np.array([[a[i] - b[i] for i in ids] for a, b in rows])  # seeds x items
    k, n = d.shape
    rng = np.random.default_rng(SEED)
    item_counts = rng.multinomial(n, np.full(n, 1 / n), size=RESAMPLES)  # resamples x items
    seed_counts = rng.multinomial(k, np.full(k, 1 / k), size=RESAMPLES)  # resamples x seeds
    per_seed = item_counts @ d.T / n  # each seed's mean difference over the resampled items
    resampled = (seed_counts * per_seed).sum(axis=1) / k
    alpha = (1 - CONFIDENCE) / 2
    low, high = np.quantile(resampled, [alpha, 1 - alpha])
    return {
        "difference": float(d.mean()),
        "ci_low": float(low),
        "ci_high": float(high),
        "seeds": k,
        "n": n,
        "wrong_to_right": int((d > 0).sum()),
        "right_to_wrong": int((d < 0).sum()),
    }


def _task_cell(row: dict) -> str:
    if row["task"] == "all":  # a table written before issue 16 names no tasks
        return f"all ({', '.join(row['tasks'])})" if row.get("tasks") else "all"
    return f"{row['task']} (at chance)" if row.get("at_chance") else row["task"]


def _points(row: dict) -> str:
    return (
        f"{100 * row['difference']:+.1f} [{100 * row['ci_low']:+.1f}, {100 * row['ci_high']:+.1f}]"
    )


def _claim_name(comparison: str) -> str:
    """ "ptr r3 - sft r1" -> "PTR round 3 - SFT round 1"."""
    sides = []
    for side in comparison.split(" - "):
        role, round_ = side.rsplit(" r", 1)
        sides.append(f"{ROLE_NAMES.get(role, role)} round {round_}")
    return " - ".join(sides)


def verdict_markdown(comparisons: pa.Table) -> str:
    """The claims on the tasks that carry signal, as markdown: one row per comparison with each
    such task's paired difference and the pooled one (points, paired bootstrap 95% interval),
    and a one-line reading of the pooled interval (of the one task, when one carries signal),
    naming any task whose own interval reads otherwise. Rows of tasks at chance are left out."""
    rows = [r for r in comparisons.to_pylist() if not r.get("at_chance")]
    by_claim: dict[str, dict[str, dict]] = {}
    for r in rows:
        by_claim.setdefault(r["comparison"], {})[r["task"]] = r
    order = {task: i for i, task in enumerate(TASKS)}
    tasks = sorted(
        {r["task"] for r in rows if r["task"] != "all"}, key=lambda t: (order.get(t, len(order)), t)
    )
    pooled = any("all" in cells for cells in by_claim.values()) and len(tasks) > 1
    columns = tasks + (["all"] if pooled else [])
    if not by_claim:
        return "(no comparison on a task with signal)"
    names = [f"all ({', '.join(tasks)})" if c == "all" else c for c in columns]
    lines = [
        "| paired difference (points) | " + " | ".join(names) + " | reading |",
        "|" + "---|" * (len(columns) + 2),
    ]
    for comparison, cells in by_claim.items():
        values = " | ".join(_points(cells[c]) if c in cells else "-" for c in columns)
        own = [cells[t] for t in tasks if t in cells]
        main = cells["all"] if pooled and "all" in cells else (own or list(cells.values()))[0]
        text = main["reading"]
        others = [
            f"{t}: {cells[t]['reading']}"
            for t in tasks
            if t in cells and cells[t] is not main and cells[t]["reading"] != text
        ]
        if others:
            text += " (" + "; ".join(others) + ")"
        lines.append(f"| {_claim_name(comparison)} | {values} | {text} |")
    return "\n".join(lines)
