"""Test-time progressive refinement: score every task at every round, for every model.

docs/paper_notes.md, section 4 and open point 11: round 1 is the task prompt; round r > 1 keeps
the whole history (each earlier answer as an assistant turn) and appends the refine turn
(``conversation.refinement_prompt``, the layout training uses). Every model of a run is asked with
one refine turn: the one the checkpoints were trained with (``refine_turn_for``), unless the
settings name another. Decoding is greedy; each round is
scored on its own, with no voting across rounds.

``evaluate_models`` owns the orchestration: models x tasks, each model loaded at most once, no
model loaded when its scores are cached (keyed by the model's fingerprint, the examples, the
settings and the code version), and every prompt checked against the context before any loads.
"""

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ptr_pipeline import schemas
from ptr_pipeline.conversation import refinement_prompt
from ptr_pipeline.engines import Generator, LazyGenerator, Sampling
from ptr_pipeline.evaluation.settings import EvalSettings
from ptr_pipeline.evaluation.stats import ROLE_ORDER, mean_interval, metric_names, metric_values
from ptr_pipeline.evaluation.tasks import GRADED_METRICS, TASKS, EvalExample
from ptr_pipeline.models import default_refine_turn, model_fingerprint, trained_refine_turn
from ptr_pipeline.storage import fingerprint, write_parquet_atomic

if TYPE_CHECKING:
    from ptr_pipeline.evaluation.chance import TaskSignal

log = logging.getLogger(__name__)

CODE_VERSION = "eval_v7"


def refine_turn_for(models: dict[str, str], settings: EvalSettings) -> tuple[str, str]:
    """The refine turn every model of an evaluation is asked with, and where it came from:
    ``settings.refine_turn`` when set; else the turn the trained checkpoints among ``models``
    record (``models.trained_refine_turn``); else the first model's default
    (``models.default_refine_turn``: re-reading for the world's models, the paper's otherwise).

    Raises:
        ValueError: the trained checkpoints record different turns (then no one turn tests them
            all as trained; set ``refine_turn`` to choose).
    """
    if settings.refine_turn is not None:
        return settings.refine_turn, "eval_scores.refine_turn"
    trained = {role: t for role, m in models.items() if (t := trained_refine_turn(m)) is not None}
    if len(set(trained.values())) > 1:
        raise ValueError(
            f"the checkpoints were trained with different refine turns {trained}; set "
            "eval_scores.refine_turn to choose the one every model is asked with"
        )
    if trained:
        return next(iter(trained.values())), f"the {'/'.join(trained)} checkpoint's manifest"
    return default_refine_turn(next(iter(models.values())))


def refine(
    prompts: list[str],
    generator: Generator,
    num_rounds: int,
    refine_turn: str,
    sampling: Sampling,
    queries: list[str] | None = None,
    label: str = "",
    clock: Callable[[], float] = time.monotonic,
) -> list[list[str]]:
    """Think-thrice inference (the paper's test-time procedure): each prompt answered
    ``num_rounds`` times, round r > 1 seeing the whole history then the refine turn
    (``refine_turn`` with ``{query}`` filled by ``queries[i]``, default the prompt: an eval item
    passes its prompt without the few-shot examples, ``EvalExample.query``). Each round logs its
    progress at INFO every ``PROGRESS_EVERY_S`` seconds of work (``ProgressLog``, named by
    ``label``, e.g. "ptr gsm8k").

    Returns:
        One list of ``num_rounds`` answers per prompt. Evaluation and ``python -m ptr_pipeline
        refine`` both go through here, so they render, prompt and stop alike.
    """
    answers: list[list[str]] = [[] for _ in prompts]
    queries = prompts if queries is None else queries
    for round_ in range(1, num_rounds + 1):
        conversations = [
            refinement_prompt(prompt, previous, refine_turn, query)
            for prompt, previous, query in zip(prompts, answers, queries, strict=True)
        ]
        progress = ProgressLog(
            f"{label + ' ' if label else ''}round {round_}/{num_rounds}", len(prompts), clock=clock
        )
        outputs = generator.generate(conversations, sampling, progress=progress)
        progress.finish()
        for previous, (response,) in zip(answers, outputs, strict=True):
            previous.append(response)
    return answers


PROGRESS_EVERY_S = 5.0


class ProgressLog:
    """A progress callback (``Generator.generate(..., progress=)``) that logs, at INFO, the items
    done of one piece of work (one model, task and round) and the time it is expected to take,
    at most once every ``every_s`` seconds of it; ``finish`` logs its total time.

    Args:
        what: names the work ("ptr gsm8k round 2/3").
        total: items in it.
        every_s: seconds between two lines.
        clock: seconds, monotonic (tests pass a fake one).
    """

    def __init__(
        self,
        what: str,
        total: int,
        every_s: float = PROGRESS_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.what, self.total, self.every_s, self._clock = what, total, every_s, clock
        self.started = self._last = clock()
        self.done = 0

    def __call__(self, done: int, total: int | None = None) -> None:
        self.done = done
        self.total = total if total is not None else self.total
        now = self._clock()
        if now - self._last < self.every_s or done >= self.total:
            return
        self._last = now
        elapsed = now - self.started
        expected = elapsed * self.total / done if done else float("nan")
        log.info(
            "%s: %d/%d items, %s elapsed, about %s in all (%s left)",
            self.what, done, self.total, _duration(elapsed), _duration(expected),
            _duration(expected - elapsed),
        )  # fmt: skip

    def finish(self) -> None:
        """Log the work's total time (when it ran long enough to have logged progress)."""
        elapsed = self._clock() - self.started
        if elapsed >= self.every_s:
            log.info("%s: %d items in %s", self.what, self.total, _duration(elapsed))


def _duration(seconds: float) -> str:
    if seconds != seconds:  # nan: nothing done yet
        return "?"
    seconds = round(seconds)
    return f"{seconds} s" if seconds < 120 else f"{seconds // 60} min {seconds % 60:02d} s"


def evaluate_rounds(
    examples: list[EvalExample],
    task: str,
    generator: Generator,
    settings: EvalSettings,
    model_role: str,
    model: str,
    refine_turn: str,
) -> pa.Table:
    """Answer every example ``settings.num_rounds`` times, each round refining the previous
    answer with ``refine_turn``, and judge every answer with the task's scorer
    (``tasks.Task.judge``).

    Returns:
        A ``schemas.EVAL_SCORES`` table, one row per (example, round).
    """
    answers = refine(
        [e.prompt for e in examples],
        generator,
        settings.num_rounds,
        refine_turn,
        settings.sampling(task),
        [e.query for e in examples],
        label=f"{model_role} {task}",
    )
    return judge_rows(
        task, examples, answers, settings.extraction_for(task), model_role, model, refine_turn
    )


def judge_rows(
    task: str,
    examples: list[EvalExample],
    answers: list[list[str]],
    extraction: str,
    model_role: str,
    model: str,
    refine_turn: str | None = None,
) -> pa.Table:
    """``answers[i][r]`` (example i, round r + 1) judged: a ``schemas.EVAL_SCORES`` table ordered
    by round, then example, every row recording ``refine_turn`` (None: not known, as for
    responses made elsewhere). The eval stage and ``python -m ptr_pipeline score`` both judge
    here."""
    rows = []
    num_rounds = max((len(a) for a in answers), default=0)
    for round_ in range(1, num_rounds + 1):
        for example, responses in zip(examples, answers, strict=True):
            if len(responses) < round_:
                continue
            response = responses[round_ - 1]
            judgment = TASKS[task].judge(response, example, extraction)
            rows.append(
                {
                    "model_role": model_role,
                    "model": model,
                    "task": task,
                    "example_id": example.id,
                    "prompt": example.prompt,
                    "round": round_,
                    "response": response,
                    "extracted": judgment.extracted,
                    "gold": example.gold,
                    "correct": judgment.correct,
                    "metrics": judgment.metrics,
                    "detail": judgment.detail,
                    "refine_turn": refine_turn,
                }
            )
    return pa.Table.from_pylist(rows, schema=schemas.EVAL_SCORES)


def evaluate_models(
    models: dict[str, str],
    examples: dict[str, list[EvalExample]],
    settings: EvalSettings,
    make_generator: Callable[[str], Generator],
    work_root: Path,
) -> pa.Table:
    """Score every model on every task at every round, loading each model at most once.

    Args:
        models: model role (``base``, ``ptr``, ...) -> resolved model path or hub id.
        examples: task -> its examples.
        settings: the stage settings.
        make_generator: model path -> generator (called at most once per model, and only for a
            model with something left to evaluate).
        work_root: cache folder; one Parquet file of responses per (model, task), keyed by the
            model's fingerprint, the prompts, the settings that change answers (stop strings
            included) and the code version. Cached responses are judged again on every call,
            so a change of extraction or of a scorer never needs the model.

    Returns:
        A ``schemas.EVAL_SCORES`` table: role x task x example x round.

    Raises:
        PromptTooLongError: before any model loads, naming the first example (file, row, field)
            whose rounds cannot fit the model's context.
        ValueError: the checkpoints were trained with different refine turns and the settings
            name none (``refine_turn_for``).
    """
    turn, source = refine_turn_for(models, settings)
    log.info("refine turn %r (%s)", turn, source)
    answer_settings = {
        **settings.model_dump(include={"num_rounds", "max_new_tokens", "backend"}),
        "refine_turn": turn,
    }
    plan: list[tuple[str, str, LazyGenerator, dict[str, Path]]] = []
    tables: list[pa.Table] = []
    for role, model in models.items():
        identity = model_fingerprint(model)
        pending: dict[str, Path] = {}
        for task, task_examples in examples.items():
            key = fingerprint(
                identity,
                role,
                task,
                [(e.id, e.prompt, e.query) for e in task_examples],
                answer_settings,
                TASKS[task].stop,
                CODE_VERSION,
            )
            cache = work_root / "eval_scores" / f"{key[:16]}.parquet"
            if cache.exists():
                log.info("%s %s: responses cached in %s; judging them", role, task, cache)
                cached = pq.read_table(cache, columns=["example_id", "round", "response"])
                answers = _answers(cached, task_examples)
                extraction = settings.extraction_for(task)
                tables.append(
                    judge_rows(task, task_examples, answers, extraction, role, model, turn)
                )
            else:
                pending[task] = cache
        engine = LazyGenerator(lambda model=model: make_generator(model), model_path=model)
        if pending:  # check every prompt before the first model loads
            engine.chat_format.check_fits(
                [
                    (
                        f"{e.where or e.id} field 'question'",
                        [{"role": "user", "content": e.prompt}],
                        e.query,
                    )
                    for task in pending
                    for e in examples[task]
                ],
                rounds=settings.num_rounds,
                max_new_tokens=settings.max_new_tokens,
                refine_turn=turn,
            )
        plan.append((role, model, engine, pending))
    for role, model, engine, pending in plan:
        for task, cache in pending.items():
            log.info(
                "%s %s: %d examples x %d rounds to answer", role, task, len(examples[task]),
                settings.num_rounds,
            )  # fmt: skip
            table = evaluate_rounds(examples[task], task, engine(), settings, role, model, turn)
            write_parquet_atomic(table, cache)
            tables.append(table)
            primary = summarize(table).filter(pc.field("primary"))
            log.info(
                "%s %s: %d examples x %d rounds, %s by round %s",
                role, task, len(examples[task]), settings.num_rounds, TASKS[task].metrics[0],
                [round(a, 3) for a in primary.column("value").to_pylist()],
            )  # fmt: skip
        engine.close()  # free this model (GPU memory included) before the next one loads
    if not tables:
        return schemas.EVAL_SCORES.empty_table()
    return pa.concat_tables(tables)


def _answers(cached: pa.Table, examples: list[EvalExample]) -> list[list[str]]:
    """The cached responses of each example, by round (round 1 first)."""
    by_id: dict[str, dict[int, str]] = defaultdict(dict)
    for r in cached.to_pylist():
        by_id[r["example_id"]][r["round"]] = r["response"]
    return [[by_id[e.id][k] for k in sorted(by_id[e.id])] for e in examples]


def summarize(scores: pa.Table, signals: "Mapping[str, TaskSignal] | None" = None) -> pa.Table:
    """Per (model role, task, round, metric): the mean with its 95% interval (Wilson for a 0/1
    metric, the bootstrap otherwise: ``stats.mean_interval``), the items it is over (``n``, that
    round's own), the answered share, and flips of the per-item verdict against the previous
    round (null for a task without one, xsum). With ``signals`` (``chance.task_signals``), each
    row also holds the chance level of the role's round-1 items on that metric and whether the
    task is at chance; without, both are null."""
    schemas.validate(scores, schemas.EVAL_SCORES, "eval_scores")
    correct: dict[tuple[str, str, int], dict[str, bool | None]] = defaultdict(dict)
    answered: dict[tuple[str, str, int], int] = defaultdict(int)
    columns = ["model_role", "task", "round", "example_id", "correct", "extracted"]
    for r in scores.select(columns).to_pylist():
        key = (r["model_role"], r["task"], r["round"])
        correct[key][r["example_id"]] = r["correct"]
        answered[key] += r["extracted"] is not None
    values = metric_values(scores)
    found: dict[tuple[str, str, int], set[str]] = defaultdict(set)
    for role, task, round_, name in values:
        found[(role, task, round_)].add(name)
    rows = []
    for (role, task, round_), verdicts in sorted(correct.items()):
        previous = correct.get((role, task, round_ - 1), {})
        judged = all(v is not None for v in verdicts.values())
        names = metric_names(task, found[(role, task, round_)])
        signal = signals.get(task) if signals is not None else None
        for name in names:
            by_example = values.get((role, task, round_, name))
            if not by_example:
                continue
            low, high = mean_interval(list(by_example.values()), name not in GRADED_METRICS)
            rows.append(
                {
                    "model_role": role,
                    "task": task,
                    "round": round_,
                    "metric": name,
                    "primary": name == names[0],
                    "n": len(by_example),
                    "value": sum(by_example.values()) / len(by_example),
                    "ci_low": low,
                    "ci_high": high,
                    "answered": answered[(role, task, round_)] / len(verdicts),
                    "wrong_to_right": sum(
                        bool(ok) and previous.get(k) is False for k, ok in verdicts.items()
                    )
                    if judged
                    else None,
                    "right_to_wrong": sum(
                        ok is False and previous.get(k) is True for k, ok in verdicts.items()
                    )
                    if judged
                    else None,
                    "chance": signal.chance.get((role, name)) if signal else None,
                    "at_chance": (not signal.signal) if signal else None,
                }
            )
    return pa.Table.from_pylist(rows, schema=schemas.EVAL_SUMMARY)


def summary_markdown(summary: pa.Table, column: str = "value", every_metric: bool = False) -> str:
    """A task x round table per model role, as markdown: each task's primary metric (every
    metric with ``every_metric``) in % with its 95% interval, the ``answered`` share in %, or
    the ``flips`` against the previous round (wrong->right / right->wrong counts).

    ``n`` is the number of items scored; where rounds differ (responses to some items only, as
    ``python -m ptr_pipeline score`` accepts), it lists each round's, in round order. Tasks that
    carry signal come first; a task at chance is marked so (``summarize`` with signals), and the
    scores get a ``chance`` column (the chance level of the model's round-1 items, %).
    """
    rows = [r for r in summary.to_pylist() if every_metric or r["primary"]]
    rounds = sorted({r["round"] for r in rows})
    with_chance = column == "value" and any(r.get("chance") is not None for r in rows)
    extra = ["chance"] if with_chance else []
    head = "| task | metric | model | n | " + "".join(f"{c} | " for c in extra)
    lines = [head + " | ".join(f"round {k}" for k in rounds) + " |"]
    lines.append("|" + "---|" * (4 + len(extra) + len(rounds)))
    cells: dict[tuple[str, str, str], dict[int, str]] = defaultdict(dict)
    items: dict[tuple[str, str, str], dict[int, int]] = defaultdict(dict)
    chance: dict[tuple[str, str, str], float | None] = {}
    at_chance: dict[str, bool | None] = {}
    for r in rows:
        if column == "flips":
            flips = (r["wrong_to_right"], r["right_to_wrong"])
            value = "-" if None in flips or r["round"] == 1 else f"+{flips[0]} / -{flips[1]}"
        else:
            value = f"{100 * r[column]:.1f}"
        if column == "value":
            value += f" [{100 * r['ci_low']:.1f}, {100 * r['ci_high']:.1f}]"
        metric = r["metric"] if column == "value" else column
        key = (r["task"], metric, r["model_role"])
        cells[key][r["round"]] = value
        items[key][r["round"]] = r["n"]
        chance.setdefault(key, r.get("chance"))
        at_chance[r["task"]] = r.get("at_chance")
    order = {task: i for i, task in enumerate(TASKS)}

    def sort_key(item):
        (task, metric, role), _ = item
        metrics = TASKS[task].metrics if task in TASKS else ()
        rank = metrics.index(metric) if metric in metrics else len(metrics)
        return (
            bool(at_chance.get(task)), order.get(task, len(order)), task, rank, metric,
            ROLE_ORDER.get(role, 9), role,
        )  # fmt: skip

    for key, by_round in sorted(cells.items(), key=sort_key):
        task, metric, role = key
        counts = items[key]
        n = (
            str(next(iter(counts.values())))
            if len(set(counts.values())) == 1
            else " / ".join(str(counts[k]) if k in counts else "-" for k in rounds)
        )
        name = f"{task} (at chance)" if at_chance.get(task) else task
        level = []
        if with_chance:
            level = ["-" if chance[key] is None else f"{100 * chance[key]:.1f}"]
        values = " | ".join([*level, *(by_round.get(k, "-") for k in rounds)])
        lines.append(f"| {name} | {metric} | {role} | {n} | {values} |")
    return "\n".join(lines)


def choose_trip_item(scores: pa.Table, tasks: list[str] | None = None) -> tuple[str, str] | None:
    """The (task, example id) ``trip_markdown`` shows: an item whose answers change across
    rounds, the first by these preferences, in order: the PTR model got it wrong at round 1 and
    right at its last round; PTR's extracted answer changes between rounds; some model got it
    right somewhere; some model's extracted answer changes between rounds; then the task's place
    in ``tasks`` (default: ``TASKS`` order) and the example id. None for no scores."""
    cells: dict[tuple[str, str], dict[tuple[str, int], dict]] = defaultdict(dict)
    columns = ["model_role", "task", "example_id", "round", "extracted", "correct"]
    for r in scores.select(columns).to_pylist():
        cells[(r["task"], r["example_id"])][(r["model_role"], r["round"])] = r
    if not cells:
        return None
    order = {task: i for i, task in enumerate(tasks if tasks is not None else TASKS)}

    def changes(item: dict, role: str | None) -> bool:
        by_role: dict[str, set] = defaultdict(set)
        for (r, _), row in item.items():
            by_role[r].add(row["extracted"])
        return any(len(v) > 1 for r, v in by_role.items() if role is None or r == role)

    def preference(key: tuple[str, str]):
        item = cells[key]
        ptr_rounds = [k for r, k in item if r == "ptr"]
        first = item.get(("ptr", 1))
        final = item.get(("ptr", max(ptr_rounds))) if ptr_rounds else None
        fixed = bool(first and final and first["correct"] is False and final["correct"])
        right = any(row["correct"] for row in item.values())
        return (
            not fixed, not changes(item, "ptr"), not right, not changes(item, None),
            order.get(key[0], len(order)), key,
        )  # fmt: skip

    return min(cells, key=preference)


def trip_markdown(
    scores: pa.Table, example_id: str | None = None, tasks: list[str] | None = None
) -> str:
    """One held-out item's whole trip: its prompt, then every model's answer at every round with
    the extracted answer against the gold. Without ``example_id``: the item
    ``choose_trip_item`` picks (``tasks``: the preferred tasks, in order)."""
    if scores.num_rows == 0:
        return "(no scores)"
    if example_id is None:
        task, example_id = choose_trip_item(scores, tasks)
        scores = scores.filter(pc.equal(scores.column("task"), task))
    rows = [r for r in scores.to_pylist() if r["example_id"] == example_id]
    if not rows:
        return f"(no item {example_id!r})"
    cells = {(r["model_role"], r["round"]): r for r in rows}
    any_row = rows[0]
    lines = [
        f"task {any_row['task']}, item {example_id}, gold {any_row['gold']!r}",
        "",
        "> " + any_row["prompt"].replace("\n", "\n> "),
        "",
        "| model | round | answer | extracted | correct |",
        "|---|---|---|---|---|",
    ]
    for (role, round_), r in sorted(
        cells.items(), key=lambda c: (ROLE_ORDER.get(c[0][0], 9), c[0])
    ):
        answer = r["response"].replace("\n", " ").replace("|", "\\|")
        lines.append(
            f"| {role} | {round_} | {answer} | {r['extracted']} | {_verdict(r['correct'])} |"
        )
    return "\n".join(lines)


def _verdict(correct: bool | None) -> str:
    return "-" if correct is None else ("yes" if correct else "no")
