"""The chance rule (evaluation.chance) on handmade scores whose answer is known, and the pooled
comparisons that leave the tasks at chance out."""

import math

import pyarrow as pa
import pytest

from ptr_pipeline import schemas
from ptr_pipeline.evaluation import (
    TASKS,
    EvalExample,
    compare,
    comparisons_markdown,
    summarize,
    summary_markdown,
    task_signals,
    verdict_markdown,
)
from ptr_pipeline.evaluation.chance import EXACT, MULTIPLE_CHOICE, PERMUTATION, SHIFTS, item_chance
from ptr_pipeline.evaluation.metrics import rouge
from ptr_pipeline.evaluation.stats import paired_difference
from ptr_pipeline.evaluation.tasks import read_examples

N = 100


def _mc(task: str, options: int, n: int = N) -> list[EvalExample]:
    letters = "ABCDE"[:options]
    return [
        EvalExample(
            f"{task}-{i:03d}", f"q{i}", f"q{i}", letters[i % options], choices=tuple(letters)
        )
        for i in range(n)
    ]


def _exact(task: str, n: int = N) -> list[EvalExample]:
    return [EvalExample(f"{task}-{i:03d}", f"q{i}", f"q{i}", str(i)) for i in range(n)]


def _rows(task: str, role: str, examples, right: int, round_: int = 1, metrics=None) -> list:
    """``role`` right on the first ``right`` items (by id), wrong on the others."""
    rows = []
    for i, e in enumerate(examples):
        ok = i < right
        rows.append({"model_role": role, "model": role, "task": task, "example_id": e.id,
                     "prompt": e.prompt, "round": round_, "response": f"The answer is {e.gold}.",
                     "extracted": e.gold if ok else "?", "gold": e.gold, "correct": ok,
                     "metrics": metrics(i) if metrics else {TASKS[task].metrics[0]: float(ok)},
                     "detail": ""})  # fmt: skip
    return rows


def _table(*groups) -> pa.Table:
    return pa.Table.from_pylist([r for g in groups for r in g], schema=schemas.EVAL_SCORES)


def test_multiple_choice_chance_is_one_over_the_options_of_each_item():
    four, two = _mc("arc", 4), _mc("winogrande", 2)
    scores = _table(
        _rows("arc", "base", four, 25),  # exactly 1/4: at chance
        _rows("arc", "ptr", four, 55),  # 55% of 4-option items: far above 25%
        _rows("winogrande", "base", two, 55),  # the same 55% of 2-option items: chance is 50%
        _rows("winogrande", "ptr", two, 48),
    )
    signals = task_signals(scores, {"arc": four, "winogrande": two})
    arc, wino = signals["arc"], signals["winogrande"]
    assert arc.basis == wino.basis == MULTIPLE_CHOICE and arc.items == N
    assert arc.chance[("base", "accuracy")] == 0.25 and wino.chance[("base", "accuracy")] == 0.5
    assert arc.above["base"][0] == pytest.approx(0.0)  # the point: 25% - 25%
    assert arc.above["ptr"] == pytest.approx(paired_difference([1.0] * 55 + [0.0] * 45, [0.25] * N))
    assert arc.above["ptr"][1] > 0 and arc.signal and arc.best == "ptr"
    # 55% against 50%: the interval (about +/- 9.8 points) includes 0
    d, low, high = wino.above["base"]
    assert d == pytest.approx(0.05) and low < 0 < high
    se = math.sqrt(0.55 * 0.45 / N)
    assert (low, high) == pytest.approx((0.05 - 1.96 * se, 0.05 + 1.96 * se), abs=0.015)
    assert not wino.signal


def test_a_task_every_model_scores_below_chance_has_no_signal():
    """Below chance is no signal (the rule says 'at or below'): the task is marked at chance."""
    from ptr_pipeline.evaluation.chance import RULE, signal_markdown

    two = _mc("winogrande", 2)
    scores = _table(_rows("winogrande", "base", two, 0), _rows("winogrande", "ptr", two, 10))
    wino = task_signals(scores, {"winogrande": two})["winogrande"]
    assert not wino.signal and all(high < 0 for _, _, high in wino.above.values())
    assert signal_markdown({"winogrande": wino}, ("base", "ptr")).endswith("| at chance |")
    assert "at or below their chance level" in RULE


def test_an_exact_answer_has_chance_zero_and_a_lucky_hit_is_not_signal():
    items = _exact("gsm8k")
    one = task_signals(_table(_rows("gsm8k", "base", items, 1)), {"gsm8k": items})["gsm8k"]
    assert one.basis == EXACT and one.chance[("base", "accuracy")] == 0.0
    # 1 of 100 right: the bootstrap interval reaches 0 (a resample misses it with p = 0.37)
    assert one.above["base"][0] == pytest.approx(0.01) and one.above["base"][1] == 0.0
    assert not one.signal
    ten = task_signals(_table(_rows("gsm8k", "base", items, 10)), {"gsm8k": items})["gsm8k"]
    assert ten.signal and ten.above["base"][1] > 0.03
    none = task_signals(_table(_rows("gsm8k", "base", items, 0)), {"gsm8k": items})["gsm8k"]
    assert none.above["base"] == (0.0, 0.0, 0.0) and not none.signal


def test_a_graded_chance_is_the_response_scored_against_other_items_golds():
    items = read_examples("xsum")
    n = len(items)
    generic = "The council said on Monday that the new plan would go ahead next year."
    rows = []
    for role, response in (("base", lambda e: generic), ("ptr", lambda e: e.gold)):
        for e in items:
            text = response(e)
            judged = TASKS["xsum"].judge(text, e)
            rows.append({"model_role": role, "model": role, "task": "xsum", "example_id": e.id,
                         "prompt": e.prompt, "round": 1, "response": text,
                         "extracted": judged.extracted, "gold": e.gold, "correct": None,
                         "metrics": judged.metrics, "detail": ""})  # fmt: skip
    scores = _table(rows)
    chance = item_chance(scores, {"xsum": items})
    # one item by hand: its response against the golds SHIFTS evenly spread items away
    ids = sorted(e.id for e in items)
    by_id = {e.id: e for e in items}
    offsets = sorted({round(k * n / (SHIFTS + 1)) for k in range(1, SHIFTS + 1)})
    first = ids[0]
    expected = sum(rouge(by_id[ids[s]].gold, by_id[first].gold)["rougeL"] for s in offsets) / len(
        offsets
    )
    assert chance[("ptr", "xsum", "rougeL")][first] == pytest.approx(expected)
    signal = task_signals(scores, {"xsum": items})["xsum"]
    assert signal.basis == PERMUTATION and signal.metric == "rougeL"
    # The same sentence for every item scores, on average, exactly what it scores against other
    # items' golds (each offset is a permutation of the items): a difference of 0, at chance.
    d, low, high = signal.above["base"]
    assert d == pytest.approx(0.0, abs=1e-12) and low < 0 < high
    # Each item's own gold scores 1.0, far above its ROUGE against other summaries.
    assert signal.above["ptr"][1] > 0.5 and signal.signal and signal.best == "ptr"


def test_a_task_whose_items_are_unknown_is_not_assessed_as_signal():
    items = _mc("arc", 4)
    signals = task_signals(_table(_rows("arc", "ptr", items, 90)), {})
    assert signals["arc"].basis.startswith("unknown") and not signals["arc"].signal
    assert signals["arc"].above == {}


def _two_tasks():
    """mmlu carries signal (PTR 90% at round 1), arc is at chance (every model 25%)."""
    mmlu, arc = _mc("mmlu", 4), _mc("arc", 4)
    scores = _table(
        _rows("mmlu", "base", mmlu, 50), _rows("mmlu", "base", mmlu, 30, round_=2),
        _rows("mmlu", "sft", mmlu, 60), _rows("mmlu", "sft", mmlu, 60, round_=2),
        _rows("mmlu", "ptr", mmlu, 90), _rows("mmlu", "ptr", mmlu, 95, round_=2),
        _rows("arc", "base", arc, 25), _rows("arc", "base", arc, 25, round_=2),
        _rows("arc", "sft", arc, 25), _rows("arc", "sft", arc, 20, round_=2),
        _rows("arc", "ptr", arc, 25), _rows("arc", "ptr", arc, 0, round_=2),
    )  # fmt: skip
    return scores, {"mmlu": mmlu, "arc": arc}


def test_pooled_comparisons_leave_the_tasks_at_chance_out_and_say_which_were_pooled():
    scores, examples = _two_tasks()
    signals = task_signals(scores, examples)
    assert signals["mmlu"].signal and not signals["arc"].signal
    rows = {(r["comparison"], r["task"]): r for r in compare(scores, signals).to_pylist()}
    within = rows[("ptr r2 - ptr r1", "all")]
    assert (within["n"], within["tasks"], within["at_chance"]) == (N, ["mmlu"], False)
    assert within["difference"] == pytest.approx(0.05)  # mmlu's alone; arc's -25 left out
    assert rows[("ptr r2 - ptr r1", "arc")]["at_chance"] is True
    assert rows[("ptr r2 - ptr r1", "arc")]["difference"] == pytest.approx(-0.25)
    assert rows[("ptr r2 - ptr r1", "mmlu")]["tasks"] == ["mmlu"]
    # the claim added by issue 16: both trained models at their last round
    last = rows[("ptr r2 - sft r2", "all")]
    assert last["difference"] == pytest.approx(0.35) and last["ci_low"] > 0
    assert last["reading"] == "PTR beats SFT when both refine to the last round"
    assert rows[("base r2 - base r1", "all")]["reading"] == (
        "the base model gets worse when asked to refine"
    )
    assert rows[("sft r2 - sft r1", "all")]["reading"] == "not resolved: the 95% interval spans 0"
    # without a verdict every task is pooled, and at_chance says it was not assessed
    unassessed = {(r["comparison"], r["task"]): r for r in compare(scores).to_pylist()}
    assert unassessed[("ptr r2 - ptr r1", "all")]["n"] == 2 * N
    assert unassessed[("ptr r2 - ptr r1", "all")]["tasks"] == ["arc", "mmlu"]
    assert unassessed[("ptr r2 - ptr r1", "arc")]["at_chance"] is None


def test_the_verdict_shows_the_tasks_with_signal_and_the_tables_mark_the_others():
    scores, examples = _two_tasks()
    signals = task_signals(scores, examples)
    verdict = verdict_markdown(compare(scores, signals))
    assert verdict.splitlines()[0] == "| paired difference (points) | mmlu | reading |"
    assert "| PTR round 2 - PTR round 1 | +5.0 [" in verdict and "arc" not in verdict
    assert "| PTR round 2 - SFT round 2 | +35.0 [" in verdict
    every = comparisons_markdown(compare(scores, signals)).splitlines()
    # per comparison: the task with signal, the pooled row naming it, the task at chance
    assert [line.split(" | ")[1] for line in every[2:5]] == [
        "mmlu",
        "all (mmlu)",
        "arc (at chance)",
    ]
    table = summary_markdown(summarize(scores, signals)).splitlines()
    assert table[0] == "| task | metric | model | n | chance | round 1 | round 2 |"
    # mmlu (signal) before arc (at chance), though arc comes first in TASKS
    assert table[2].startswith("| mmlu | accuracy | base | 100 | 25.0 | 50.0 [")
    assert table[5].startswith("| arc (at chance) | accuracy | base | 100 | 25.0 | 25.0 [")
    summary = summarize(scores, signals).to_pylist()
    assert {(r["task"], r["at_chance"]) for r in summary} == {("mmlu", False), ("arc", True)}
    assert all(r["chance"] == 0.25 for r in summary)
    assert all(
        r["chance"] is None and r["at_chance"] is None for r in summarize(scores).to_pylist()
    )


def test_the_verdict_pools_the_tasks_with_signal_and_names_a_task_that_reads_otherwise():
    gsm8k, mmlu = _exact("gsm8k"), _mc("mmlu", 4)
    scores = _table(
        _rows("gsm8k", "ptr", gsm8k, 50), _rows("gsm8k", "ptr", gsm8k, 80, round_=2),
        _rows("mmlu", "ptr", mmlu, 90), _rows("mmlu", "ptr", mmlu, 60, round_=2),
    )  # fmt: skip
    signals = task_signals(scores, {"gsm8k": gsm8k, "mmlu": mmlu})
    assert signals["gsm8k"].signal and signals["mmlu"].signal
    lines = verdict_markdown(compare(scores, signals)).splitlines()
    assert lines[0] == "| paired difference (points) | gsm8k | mmlu | all (gsm8k, mmlu) | reading |"
    # +30 and -30 points pool to 0: unresolved overall, and each task's own reading is named
    assert lines[2].startswith("| PTR round 2 - PTR round 1 | +30.0 [")
    assert lines[2].endswith(
        "| not resolved: the 95% interval spans 0 (gsm8k: refining helps PTR; mmlu: refining "
        "hurts PTR) |"
    )
