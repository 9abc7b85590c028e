"""Confidence intervals and paired differences, against direct computations on handmade scores."""

import math

import pyarrow as pa
import pytest

from ptr_pipeline import schemas
from ptr_pipeline.evaluation import compare, summarize
from ptr_pipeline.evaluation.rounds import choose_trip_item, trip_markdown
from ptr_pipeline.evaluation.stats import CLAIMS, seed_pooled


def _scores(cells: dict[tuple[str, str, int], list[bool]]) -> pa.Table:
    rows = []
    for (role, task, round_), correct in cells.items():
        for i, ok in enumerate(correct):
            rows.append({"model_role": role, "model": role, "task": task, "example_id": f"{task}-{i}",
                         "prompt": f"question {i}", "round": round_, "response": "r",
                         "extracted": "x", "gold": "x" if ok else "y", "correct": ok,
                         "metrics": {"accuracy": float(ok)}, "detail": ""})  # fmt: skip
    return pa.Table.from_pylist(rows, schema=schemas.EVAL_SCORES)


def _wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


N = 200
BASE_1 = [i % 2 == 0 for i in range(N)]  # 50%
BASE_2 = [i % 4 == 0 for i in range(N)]  # 25%: asking the base model to refine hurts
PTR_1 = [i % 5 != 0 for i in range(N)]  # 80%
PTR_3 = [i % 10 != 0 for i in range(N)]  # 90%: refinement fixes half of PTR's errors


def test_accuracy_intervals_are_wilson_intervals():
    summary = summarize(_scores({("base", "t", 1): BASE_1, ("base", "t", 2): BASE_2})).to_pylist()
    first, second = summary
    assert (first["metric"], first["primary"]) == ("accuracy", True)
    assert (first["value"], second["value"]) == (0.5, 0.25)
    assert (first["ci_low"], first["ci_high"]) == pytest.approx(_wilson(100, 200), abs=1e-9)
    assert (second["ci_low"], second["ci_high"]) == pytest.approx(_wilson(50, 200), abs=1e-9)
    # flips against the previous round: 50 of the right answers went wrong, none came right
    assert (second["wrong_to_right"], second["right_to_wrong"]) == (0, 50)


def test_paired_differences_match_a_direct_computation():
    scores = _scores({("ptr", "t", 1): PTR_1, ("ptr", "t", 3): PTR_3, ("base", "t", 1): BASE_1,
                      ("base", "t", 2): BASE_2, ("ptr", "u", 1): PTR_1, ("ptr", "u", 3): PTR_3})  # fmt: skip
    rows = {(r["comparison"], r["task"]): r for r in compare(scores).to_pylist()}
    within = rows[("ptr r3 - ptr r1", "t")]
    assert within["difference"] == pytest.approx(0.1)
    assert (within["wrong_to_right"], within["right_to_wrong"]) == (20, 0)
    # the paired bootstrap agrees with the normal approximation of the paired difference
    d = [int(a) - int(b) for a, b in zip(PTR_3, PTR_1, strict=True)]
    mean = sum(d) / N
    se = math.sqrt(sum((x - mean) ** 2 for x in d) / (N - 1) / N)
    assert within["ci_low"] == pytest.approx(mean - 1.96 * se, abs=0.015)
    assert within["ci_high"] == pytest.approx(mean + 1.96 * se, abs=0.015)
    assert within["ci_low"] > 0  # this effect is real at n = 200
    prompting = rows[("base r2 - base r1", "t")]
    assert prompting["difference"] == pytest.approx(-0.25) and prompting["ci_high"] < 0
    against_base = rows[("ptr r3 - base r1", "t")]
    assert against_base["difference"] == pytest.approx(0.4)
    pooled = rows[("ptr r3 - ptr r1", "all")]  # both tasks, each example paired with itself
    assert pooled["n"] == 2 * N and pooled["difference"] == pytest.approx(0.1)
    assert ("ptr r3 - sft r1", "t") not in rows  # no sft scores: no such claim


def test_no_spread_gives_a_point_interval_and_identical_cells_give_none():
    scores = _scores({("ptr", "t", 1): [True] * 10, ("ptr", "t", 2): [True] * 10})
    (row,) = compare(scores).to_pylist()
    assert row["difference"] == row["ci_low"] == row["ci_high"] == 0.0


def test_the_trip_shows_an_item_that_ptr_fixed():
    scores = _scores({("ptr", "t", 1): [True, False, False], ("ptr", "t", 2): [True, False, True],
                      ("base", "t", 1): [False, False, False]})  # fmt: skip
    text = trip_markdown(scores)
    assert text.startswith("task t, item t-2")  # wrong at round 1, right at round 2
    assert "| base | 1 |" in text and "| ptr | 2 |" in text


def test_graded_metrics_get_a_bootstrap_interval_not_a_wilson_one():
    rows = []
    for i in range(40):
        f1 = (i % 4) / 4  # 0, 0.25, 0.5, 0.75: mean 0.375
        rows.append({"model_role": "ptr", "model": "m", "task": "drop", "example_id": str(i),
                     "prompt": "q", "round": 1, "response": "r", "extracted": "x", "gold": "y",
                     "correct": False, "metrics": {"f1": f1, "em": 0.0}, "detail": ""})  # fmt: skip
    summary = {
        r["metric"]: r
        for r in summarize(pa.Table.from_pylist(rows, schema=schemas.EVAL_SCORES)).to_pylist()
    }
    f1, em = summary["f1"], summary["em"]
    assert f1["primary"] and not em["primary"]
    assert f1["value"] == pytest.approx(0.375)
    se = math.sqrt(sum(((i % 4) / 4 - 0.375) ** 2 for i in range(40)) / 39 / 40)
    assert f1["ci_low"] == pytest.approx(0.375 - 1.96 * se, abs=0.02)
    assert f1["ci_high"] == pytest.approx(0.375 + 1.96 * se, abs=0.02)
    assert (em["value"], em["ci_low"]) == (0.0, 0.0) and em["ci_high"] == pytest.approx(
        _wilson(0, 40)[1]
    )
    zeros = [{**r, "metrics": {"f1": 0.0, "em": 0.0}} for r in rows]
    (f1_zero,) = [
        r
        for r in summarize(pa.Table.from_pylist(zeros, schema=schemas.EVAL_SCORES)).to_pylist()
        if r["metric"] == "f1"
    ]
    assert (f1_zero["ci_low"], f1_zero["ci_high"]) == (
        0.0,
        0.0,
    )  # no spread, not Wilson's [0, 8.8%]


def test_seed_pooling_resamples_seeds_and_items():
    # Every item and seed: PTR round 3 is right where round 1 was wrong on 10% of items.
    same = {("ptr", "t", 1): PTR_1, ("ptr", "t", 3): PTR_3}
    refining = CLAIMS[0]  # PTR last round - PTR round 1
    assert (refining.role_a, refining.round_a, refining.role_b, refining.round_b) == (
        "ptr",
        -1,
        "ptr",
        1,
    )
    pooled = seed_pooled([_scores(same), _scores(same)], refining)
    single = compare(_scores(same), claims=(refining,)).to_pylist()[0]
    assert pooled["difference"] == pytest.approx(0.10) and pooled["seeds"] == 2
    assert (pooled["wrong_to_right"], pooled["right_to_wrong"]) == (2 * 20, 0)
    # identical seeds: the interval is the item interval of one run (up to resampling noise)
    assert pooled["ci_low"] == pytest.approx(single["ci_low"], abs=0.01)
    assert pooled["ci_high"] == pytest.approx(single["ci_high"], abs=0.01)
    # Two seeds that disagree completely (+1 on every item against 0): a per-item interval of
    # either run is a point, the pooled one spans both seeds.
    up = {("ptr", "t", 1): [False] * N, ("ptr", "t", 3): [True] * N}
    flat = {("ptr", "t", 1): [False] * N, ("ptr", "t", 3): [False] * N}
    spread = seed_pooled([_scores(up), _scores(flat)], refining)
    assert spread["difference"] == pytest.approx(0.5)
    # seeds drawn (up, up), (up, flat), (flat, flat) with probabilities 1/4, 1/2, 1/4
    assert (spread["ci_low"], spread["ci_high"]) == (0.0, 1.0)
    with pytest.raises(ValueError, match="at least 2 seeds"):
        seed_pooled([_scores(same)], refining)
    with pytest.raises(ValueError, match="no ptr r3 or sft r1 for t"):
        seed_pooled([_scores(same), _scores(same)], CLAIMS[2])  # PTR last - SFT round 1


def _trip_scores(items: dict[tuple[str, str], dict[tuple[str, int], str]], gold="7") -> pa.Table:
    """(task, item) -> (role, round) -> the extracted answer (right when it equals ``gold``)."""
    rows = []
    for (task, item), cells in items.items():
        for (role, round_), answer in cells.items():
            rows.append({"model_role": role, "model": role, "task": task, "example_id": item,
                         "prompt": f"{task} {item}?", "round": round_,
                         "response": f"The answer is {answer}.", "extracted": answer, "gold": gold,
                         "correct": answer == gold, "metrics": {"accuracy": float(answer == gold)},
                         "detail": ""})  # fmt: skip
    return pa.Table.from_pylist(rows, schema=schemas.EVAL_SCORES)


def _ptr(*answers: str, base: str = "1") -> dict[tuple[str, int], str]:
    cells = {("ptr", k): a for k, a in enumerate(answers, start=1)}
    return cells | {("base", k): base for k in range(1, len(answers) + 1)}


def test_the_trip_prefers_an_item_ptr_fixed_then_one_whose_ptr_answer_changes():
    items = {
        ("gsm8k", "a"): _ptr("1", "1", "1"),  # every model wrong, nothing changes: the old pick
        ("gsm8k", "b"): _ptr("2", "3", "4"),  # PTR's answer changes, never right
        ("gsm8k", "c"): _ptr("2", "7", "2", base="7"),  # changes, and right somewhere
        ("arc", "a"): _ptr("1", "5", "7"),  # fixed by PTR, in the second task
        ("arc", "b"): _ptr("7", "7", "7"),
    }
    assert choose_trip_item(_trip_scores(items), ["gsm8k", "arc"]) == ("arc", "a")
    del items[("arc", "a")]
    # no fix: PTR's answer changes and some model is right; before one never right
    assert choose_trip_item(_trip_scores(items), ["gsm8k", "arc"]) == ("gsm8k", "c")
    del items[("gsm8k", "c")]
    assert choose_trip_item(_trip_scores(items), ["gsm8k", "arc"]) == ("gsm8k", "b")
    # the order of the rows does not matter; the preferred task does, among equals
    scores = _trip_scores(items)
    assert choose_trip_item(scores.take(list(range(scores.num_rows))[::-1])) == ("gsm8k", "b")
    same = {("gsm8k", "x"): _ptr("2", "3"), ("arc", "x"): _ptr("2", "3")}
    assert choose_trip_item(_trip_scores(same), ["arc", "gsm8k"]) == ("arc", "x")
    assert choose_trip_item(_trip_scores(same), ["gsm8k", "arc"]) == ("gsm8k", "x")
    text = trip_markdown(_trip_scores(same), tasks=["arc", "gsm8k"])
    assert text.startswith("task arc, item x, gold '7'")  # one task's rows, though ids repeat
    assert text.count("| ptr |") == 2 and "gsm8k x?" not in text
