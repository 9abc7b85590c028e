"""The accuracy-by-round figure: a grid that leads with the tasks that carry signal."""

import struct

import pyarrow as pa

from ptr_pipeline import plots, schemas
from ptr_pipeline.evaluation import TASKS

SIGNAL = ("gsm8k", "arc")


def _summary(tasks, at_chance) -> pa.Table:
    rows = []
    for task in tasks:
        for role in ("base", "sft", "ptr"):
            for round_ in (1, 2, 3):
                rows.append({"model_role": role, "task": task, "round": round_,
                             "metric": TASKS[task].metrics[0], "primary": True, "n": 50,
                             "value": 0.5, "ci_low": 0.4, "ci_high": 0.6, "answered": 1.0,
                             "wrong_to_right": 0, "right_to_wrong": 0, "chance": 0.25,
                             "at_chance": at_chance(task)})  # fmt: skip
    return pa.Table.from_pylist(rows, schema=schemas.EVAL_SUMMARY)


def _png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", png[16:24])


def test_the_tasks_with_signal_lead_the_grid_and_the_tasks_at_chance_follow_on_a_new_row():
    summary = _summary(sorted(TASKS), lambda t: t not in SIGNAL)  # alphabetical in the table
    assert plots.accuracy_grid(summary, list(TASKS)) == [
        ["gsm8k", "arc", None],
        ["mmlu", "math", "commonsense_qa"],
        ["winogrande", "gpqa", "humaneval"],
        ["drop", "xsum", None],
    ]
    # not assessed (at_chance null) counts as signal; without an order, by name
    assert plots.accuracy_grid(_summary(["xsum", "arc"], lambda t: None)) == [["arc", "xsum"]]
    # one row holds three panels: the world's two tasks side by side, signal first
    two = _summary(["arc", "gsm8k"], lambda t: t == "arc")
    assert plots.accuracy_grid(two, list(TASKS)) == [["gsm8k", "arc"]]
    four = _summary(["arc", "gsm8k", "mmlu", "math"], lambda t: t != "gsm8k")
    assert plots.accuracy_grid(four, list(TASKS)) == [
        ["gsm8k", None, None],
        ["arc", "mmlu", "math"],
    ]


def test_the_figure_is_a_grid_readable_inline_not_a_strip(tmp_path):
    path = tmp_path / "accuracy_by_round.png"
    png = plots.accuracy_plot(_summary(list(TASKS), lambda t: t not in SIGNAL), path, list(TASKS))
    assert path.read_bytes() == png
    width, height = _png_size(png)
    # 3 panels a row, 4 rows (the ten panels in a row were 3322 x 346 pixels)
    assert 850 <= width <= 1000 and 900 <= height <= 1100
    width, height = _png_size(plots.accuracy_plot(_summary(["gsm8k"], lambda t: False), path))
    assert width < 500 and height < 400  # one panel (the legend sets the width)
