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

import numpy as np
import pyarrow as pa
from scipy import stats

from ptr_pipeline import schemas
from ptr_pipeline.evaluation.tasks import TASKS

CONFIDENCE = 0.95
RESAMPLES = 10_000
SEED = 0

# The comparisons the report leads with: (model a, round a, model b, round b); round -1 = last.
CLAIMS = (
    ("ptr", -1, "ptr", 1),  # refinement within PTR: the paper's headline (49.6 -> 53.5)
    ("ptr", -1, "base", 1),  # PTR's last round against the base model's first answer
    ("ptr", -1, "sft", 1),  # ... against plain SFT on the same data and steps
    ("base", 2, "base", 1),  # the prompting baseline asked to refine (the paper: it falls)
    ("sft", 2, "sft", 1),  # the SFT baseline asked to refine
)


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


def compare(scores: pa.Table, claims=CLAIMS) -> pa.Table:
    """A ``schemas.EVAL_COMPARISONS`` table: each claim per task (on the task's primary metric)
    and pooled over tasks ("all": the per-item values of every task together), for the models
    and rounds ``scores`` holds (a claim whose cells are missing is skipped)."""
    schemas.validate(scores, schemas.EVAL_SCORES, "eval_scores")
    cells = _cells(scores)
    tasks = sorted({task for _, task, _ in cells})
    rows = []
    for role_a, round_a, role_b, round_b in claims:
        pooled_a: list[float] = []
        pooled_b: list[float] = []
        label = None
        for task in tasks:
            last = max((k for r, t, k in cells if r == role_a and t == task), default=None)
            ra = last if round_a == -1 else round_a
            a, b = cells.get((role_a, task, ra)), cells.get((role_b, task, round_b))
            if ra is None or a is None or b is None or (role_a, ra) == (role_b, round_b):
                continue
            label = f"{role_a} r{ra} - {role_b} r{round_b}"
            ids = sorted(set(a) & set(b))
            xa, xb = [a[i] for i in ids], [b[i] for i in ids]
            metric = TASKS[task].metrics[0] if task in TASKS else ""
            rows.append(_row(label, task, metric, xa, xb))
            pooled_a += xa
            pooled_b += xb
        if label is not None and len(tasks) > 1:
            rows.append(_row(label, "all", "primary", pooled_a, pooled_b))
    return pa.Table.from_pylist(rows, schema=schemas.EVAL_COMPARISONS)


def _row(label: str, task: str, metric: str, a: list[float], b: list[float]) -> dict:
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
    }


def comparisons_markdown(comparisons: pa.Table) -> str:
    """The comparisons as a markdown table, in points of each task's primary metric ("all"
    pools them, as the paper's average mixes accuracy, pass@1 and similarity)."""
    lines = [
        "| comparison | task | metric | n | difference (points) | 95% CI | better | worse |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in comparisons.to_pylist():
        lines.append(
            f"| {r['comparison']} | {r['task']} | {r['metric']} | {r['n']} | "
            f"{100 * r['difference']:+.1f} | "
            f"[{100 * r['ci_low']:+.1f}, {100 * r['ci_high']:+.1f}] | {r['wrong_to_right']} | "
            f"{r['right_to_wrong']} |"
        )
    return "\n".join(lines)


def seed_pooled(scores_by_seed: list[pa.Table], claim: tuple[str, int, str, int]) -> dict:
    """One claim (model a, round a, model b, round b; round -1 = the last) pooled over runs that
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
        claim: as in ``CLAIMS``.

    Returns:
        ``difference``, ``ci_low``, ``ci_high``, ``seeds``, ``n`` (items), and
        ``wrong_to_right`` / ``right_to_wrong``: items a scores above / below b, summed over
        seeds.

    Raises:
        ValueError: fewer than 2 seeds, several tasks, or the cells missing in a seed.
    """
    if len(scores_by_seed) < 2:
        raise ValueError("seed_pooled needs at least 2 seeds")
    role_a, round_a, role_b, round_b = claim
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
