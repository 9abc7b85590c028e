"""Eval tasks: loaders for both schemas, answer extraction, multi-round scoring, summary flips."""

import json
import logging
import re

import pyarrow as pa
import pytest

from ptr_pipeline import schemas
from ptr_pipeline.answers import FLEXIBLE, extract_choice, extract_number
from ptr_pipeline.conversation import GENERIC_REFINE_TURN, REREAD_REFINE_TURN, PromptTooLongError
from ptr_pipeline.engines import Sampling, TransformersGenerator
from ptr_pipeline.evaluation import (
    TASKS,
    EvalSettings,
    evaluate_models,
    evaluate_rounds,
    examples_from_table,
    examples_table,
    load_examples,
    refine_turn_for,
    summarize,
    summary_markdown,
)
from ptr_pipeline.evaluation.rounds import ProgressLog, refine
from ptr_pipeline.records import InputError
from ptr_pipeline.storage import CHECKPOINT_MANIFEST


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so 3+4 = 7. The answer is 7.", "7"),
        ("The answer is $1,200.", "1200"),
        ("first 3 then 12", "12"),
        ("none", None),
        ("The answer is 5.0", "5"),
    ],
)
def test_extract_number(text, expected):
    assert extract_number(text, FLEXIBLE) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is (C).", "C"),
        ("I think (B) fits", "B"),
        ("B. because", "B"),
        ("no idea", None),
    ],
)
def test_extract_choice(text, expected):
    assert extract_choice(text, ("w", "x", "y", "z"), FLEXIBLE) == expected


def test_bundled_samples_load_for_every_task():
    for task in TASKS:
        examples = load_examples(task)
        assert len(examples) >= 24, task
        assert len({e.id for e in examples}) == len(examples)
    gsm = load_examples("gsm8k", limit=1)[0]
    assert gsm.gold == "3" and "Ava buys 4 boxes" in gsm.prompt
    arc = load_examples("arc", limit=1)[0]
    assert arc.gold == "A" and "(A) oxygen" in arc.prompt


def test_original_release_formats(tmp_path):
    (tmp_path / "arc.jsonl").write_text(
        json.dumps(
            {
                "id": "x1",
                "question": {
                    "stem": "Pick one",
                    "choices": [{"text": "a", "label": "1"}, {"text": "b", "label": "2"}],
                },
                "answerKey": "2",
            }
        )
        + "\n"
    )
    (tmp_path / "mmlu").mkdir()
    (tmp_path / "mmlu" / "virology_dev.csv").write_text('"What is it?",w,x,y,z,C\n')
    arc = load_examples("arc", str(tmp_path / "arc.jsonl"))[0]
    assert arc.gold == "B" and "(B) b" in arc.prompt
    mmlu = load_examples("mmlu", str(tmp_path / "mmlu"), num_fewshot=0)[0]
    assert mmlu.gold == "C" and mmlu.id == "virology-0" and "(D) z" in mmlu.prompt
    (tmp_path / "m.jsonl").write_text(
        json.dumps({"question": "q", "choices": ["a", "b"], "answer": "1"})
    )
    assert load_examples("mmlu", str(tmp_path / "m.jsonl"), num_fewshot=0)[0].gold == "B"


def test_hub_parquet_file_and_folder_load(tmp_path):
    """The hub's layout: data/<split>-0000x-of-0000y.parquet, also given as the single file."""
    import pyarrow.parquet as pq

    rows = [
        {"question": "Tom has 3 apples and buys 4 more. How many?", "answer": "3 + 4 = 7\n#### 7"},
        {"question": "A café sells 2 cakes.\u2028How many?", "answer": "#### 2"},
    ]
    data = tmp_path / "gsm8k" / "main"
    data.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), data / "test-00000-of-00001.parquet")
    pq.write_table(pa.Table.from_pylist(rows[:1]), data / "train-00000-of-00001.parquet")
    from_file = load_examples("gsm8k", str(data / "test-00000-of-00001.parquet"))
    from_folder = load_examples("gsm8k", str(tmp_path / "gsm8k"), split="test")
    assert [e.gold for e in from_file] == [e.gold for e in from_folder] == ["7", "2"]
    assert "\u2028" in from_folder[1].question
    with pytest.raises(InputError, match=r"several splits \(test, train\)"):
        load_examples("gsm8k", str(tmp_path / "gsm8k"))


def test_shared_release_files_load(shared_data):
    bench = shared_data / "benchmarks"
    assert len(load_examples("gsm8k", str(bench / "gsm8k" / "train.jsonl"), limit=50)) == 50
    assert len(load_examples("arc", str(bench / "arc" / "ARC-Challenge-Dev.jsonl"), limit=50)) == 50
    mmlu = load_examples("mmlu", str(bench / "mmlu" / "dev"), num_fewshot=0)
    assert len(mmlu) > 200 and {e.gold for e in mmlu} <= set("ABCD")


def test_bad_record_names_file_row_and_field(tmp_path):
    (tmp_path / "g.jsonl").write_text(
        json.dumps({"question": "q", "answer": "#### 1"})
        + "\n"
        + json.dumps({"question": "q"})
        + "\n"
    )
    with pytest.raises(InputError, match=r"g.jsonl row 2: missing field 'answer'"):
        load_examples("gsm8k", str(tmp_path / "g.jsonl"))


@pytest.mark.parametrize(
    ("task", "record", "message"),
    [
        ("gsm8k", {"question": "q", "answer": 4}, "row 2 field 'answer': expected a string, got int"),
        ("gsm8k", {"question": 12, "answer": "#### 1"}, "row 2 field 'question': expected a string"),
        ("gsm8k", {"question": "q", "answer": "no marker"}, "row 2 field 'answer': no '####"),
        ("mmlu", {"question": "q", "choices": ["a", "b"], "answer": 7}, "row 2 field 'answer': index 7"),
        ("mmlu", {"question": "q", "choices": "ab", "answer": 0}, "row 2 field 'choices': expected a list"),
        ("arc", {"question": "q", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "C"},
         "row 2 field 'answerKey': 'C' is not one of the labels"),
        ("arc", {"question": {"stem": "Q?", "choices": ["a", "b"]}, "answerKey": "A"},
         "row 2 field 'question': expected {'stem': str, 'choices'"),
        ("arc", {"question": "q", "choices": {"text": list("abcdefghi"), "label": list("ABCDEFGHI")},
                 "answerKey": "A"}, "row 2 field 'choices': 9 options; expected 2 to 8"),
        ("mmlu", {"question": "q", "choices": list("abcdefghi"), "answer": 0},
         "row 2 field 'choices': 9 options"),
        ("gsm8k", {"question": "q", "answer": "####  "}, "row 2 field 'answer': the final answer after '####' is empty"),
        ("arc", {"question": "q", "choices": ["a", "b"], "answerKey": "A"}, "row 2 field 'choices': expected {'text'"),
    ],
)  # fmt: skip
def test_wrongly_typed_fields_name_file_row_and_field(tmp_path, task, record, message):
    good = {
        "gsm8k": {"question": "q", "answer": "#### 1"},
        "mmlu": {"question": "q", "choices": ["a", "b"], "answer": 0},
        "arc": {
            "question": "q",
            "choices": {"text": ["a", "b"], "label": ["A", "B"]},
            "answerKey": "A",
        },
    }[task]
    path = tmp_path / "e.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(InputError, match=re.escape(f"e.jsonl {message}")):
        load_examples(task, str(path))


def test_empty_eval_file_is_an_error(tmp_path):
    (tmp_path / "e.jsonl").write_text("\n  \n")
    with pytest.raises(InputError, match=r"e\.jsonl: no records"):
        load_examples("gsm8k", str(tmp_path / "e.jsonl"))


def _no_model(path):
    raise AssertionError(f"no model may load here ({path})")


def test_a_huge_question_is_refused_before_any_model_loads(tmp_path, models_home):
    """A 5 MB question would make generate() allocate terabytes; it is refused from the tokenizer."""
    path = tmp_path / "g.jsonl"
    rows = [
        {"question": "2+2?", "answer": "#### 4"},
        {"question": "x " * 2_500_000, "answer": "#### 1"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    examples = {"gsm8k": load_examples("gsm8k", str(path))}
    models = {"base": models_home.resolve_model("tiny:base")}
    with pytest.raises(PromptTooLongError, match=r"g.jsonl row 2 field 'question': 5,000,\d+ char"):
        evaluate_models(models, examples, EvalSettings(), _no_model, tmp_path / "work")
    # Just over the context: found by tokenizing (each "x " is a token or two).
    path.write_text(
        json.dumps(rows[0])
        + "\n"
        + json.dumps({"question": "x " * 1100, "answer": "#### 1"})
        + "\n"
    )
    examples = {"gsm8k": load_examples("gsm8k", str(path))}
    with pytest.raises(
        PromptTooLongError, match=r"g.jsonl row 2 field 'question': needs up to \d+ tokens"
    ):
        evaluate_models(models, examples, EvalSettings(), _no_model, tmp_path / "work")


def test_evaluate_models_caches_per_model_and_task(tmp_path, models_home):
    loads = []

    def make(path):
        loads.append(path)
        return TransformersGenerator(path)

    examples = {"gsm8k": load_examples("gsm8k", limit=2), "arc": load_examples("arc", limit=2)}
    models = {"base": models_home.resolve_model("tiny:base")}
    settings = EvalSettings(num_rounds=2, max_new_tokens=4)
    first = evaluate_models(models, examples, settings, make, tmp_path / "work")
    assert first.num_rows == 2 * 2 * 2 and len(loads) == 1  # one load for both tasks
    again = evaluate_models(models, examples, settings, _no_model, tmp_path / "work")
    assert again.sort_by("task").equals(first.sort_by("task"))
    # Another extraction re-judges the cached responses: no model loads.
    flexible = settings.model_copy(update={"extraction": {"gsm8k": "flexible", "arc": "strict"}})
    rejudged = evaluate_models(models, examples, flexible, _no_model, tmp_path / "work")
    assert rejudged.column("response").equals(again.column("response"))
    changed = evaluate_models(
        models, examples, settings.model_copy(update={"num_rounds": 3}), make, tmp_path / "work"
    )
    assert changed.num_rows == 2 * 2 * 3 and len(loads) == 2


def _trained(folder, turn: str | None) -> str:
    """A checkpoint folder whose manifest records ``turn`` (None: no refine_turn, as a model the
    pipeline did not train)."""
    folder.mkdir(parents=True)
    manifest = {"files": {}} if turn is None else {"files": {}, "refine_turn": turn}
    (folder / CHECKPOINT_MANIFEST).write_text(json.dumps(manifest))
    return str(folder)


def test_every_model_is_asked_with_the_turn_the_checkpoints_were_trained_with(tmp_path):
    trained = _trained(tmp_path / "ptr", "Again: {query}")
    models = {"base": "some/hub-model", "sft": _trained(tmp_path / "sft", "Again: {query}"),
              "ptr": trained}  # fmt: skip
    turn, source = refine_turn_for(models, EvalSettings())
    assert turn == "Again: {query}" and "sft/ptr checkpoint's manifest" in source
    override = EvalSettings(refine_turn="Table 2 prompt: {query}")
    assert refine_turn_for(models, override) == (
        "Table 2 prompt: {query}",
        "eval_scores.refine_turn",
    )
    other = {**models, "sft": _trained(tmp_path / "other", GENERIC_REFINE_TURN)}
    with pytest.raises(ValueError, match="trained with different refine turns"):
        refine_turn_for(other, EvalSettings())
    # Nothing trained: the first model's default (the paper's turn for a hub model, re-reading
    # for the world's models)
    assert refine_turn_for({"base": "some/hub-model"}, EvalSettings())[0] == GENERIC_REFINE_TURN
    assert refine_turn_for({"base": "world:base"}, EvalSettings())[0] == REREAD_REFINE_TURN
    world = tmp_path / "world-base"
    world.mkdir()
    (world / CHECKPOINT_MANIFEST).write_text(json.dumps({"world_role": "base", "files": {}}))
    assert refine_turn_for({"base": str(world)}, EvalSettings())[0] == REREAD_REFINE_TURN


def test_a_re_reading_turn_restates_the_question_not_the_shots(models_home):
    examples = load_examples("mmlu", limit=2)  # 5 shots from the bundled dev split
    e = examples[0]
    # what the turn restates is the item as asked zero-shot: no solved example
    assert e.query == load_examples("mmlu", None, 2, None, 0)[0].prompt
    assert len(e.prompt) > len(e.query) and e.prompt.endswith(e.query.split("\n\n", 1)[1])
    back = examples_from_table(examples_table("mmlu", examples))["mmlu"]
    assert [(b.prompt, b.query) for b in back] == [(x.prompt, x.query) for x in examples]
    zero_shot = load_examples("gsm8k", limit=1)[0]
    assert zero_shot.query == zero_shot.prompt
    calls = []

    class Recording(TransformersGenerator):
        def generate(self, conversations, sampling, progress=None):
            calls.append([list(c) for c in conversations])
            return super().generate(conversations, sampling, progress)

    generator = Recording(models_home.resolve_model("tiny:base"))
    settings = EvalSettings(num_rounds=2, max_new_tokens=4)
    evaluate_rounds(examples, "mmlu", generator, settings, "base", "m", REREAD_REFINE_TURN)
    assert calls[1][0][-1]["content"] == REREAD_REFINE_TURN.replace("{query}", e.query)


def test_the_refine_turn_keys_the_cached_responses(tmp_path, models_home):
    loads = []

    def make(path):
        loads.append(path)
        return TransformersGenerator(path)

    examples = {"gsm8k": load_examples("gsm8k", limit=2)}
    models = {"base": models_home.resolve_model("tiny:base")}
    settings = EvalSettings(num_rounds=2, max_new_tokens=4)
    evaluate_models(models, examples, settings, make, tmp_path / "work")
    evaluate_models(models, examples, settings, _no_model, tmp_path / "work")  # cached
    reread = settings.model_copy(update={"refine_turn": REREAD_REFINE_TURN})
    table = evaluate_models(models, examples, reread, make, tmp_path / "work")
    assert len(loads) == 2
    # every row records the turn it was asked with, cached or not
    assert set(table.column("refine_turn").to_pylist()) == {REREAD_REFINE_TURN}
    again = evaluate_models(models, examples, reread, _no_model, tmp_path / "work")
    assert set(again.column("refine_turn").to_pylist()) == {REREAD_REFINE_TURN}


def test_rounds_keep_history_and_score_each_round(models_home):
    calls = []

    reported = []

    class Recording(TransformersGenerator):
        def generate(self, conversations, sampling, progress=None):
            calls.append([list(c) for c in conversations])

            def seen(done, total):
                reported.append((done, total))
                progress(done, total)  # evaluation's own ProgressLog still gets it

            return super().generate(conversations, sampling, seen)

    generator = Recording(models_home.resolve_model("tiny:base"), batch_size=2)
    examples = load_examples("gsm8k", limit=3)
    settings = EvalSettings(num_rounds=3, max_new_tokens=6)
    table = evaluate_rounds(
        examples, "gsm8k", generator, settings, "base", "tiny:base", "Refine {query} again."
    )
    schemas.validate(table, schemas.EVAL_SCORES, "eval_scores")
    assert table.num_rows == 9
    assert [len(c[0]) for c in calls] == [1, 3, 5]
    # the engine reports each batch of 2 as it finishes, every round
    assert reported == [(2, 3), (3, 3)] * 3
    assert calls[2][0][2]["content"] == f"Refine {examples[0].prompt} again."
    rows = table.to_pylist()
    for r in rows:
        assert r["correct"] == (r["extracted"] == r["gold"])


def test_summarize_counts_flips():
    rows = []
    for round_, answers in enumerate(
        [[True, False, False], [False, True, True], [False, True, True]], start=1
    ):
        for i, ok in enumerate(answers):
            rows.append(
                {
                    "model_role": "ptr",
                    "model": "m",
                    "task": "gsm8k",
                    "example_id": str(i),
                    "prompt": f"q{i}",
                    "round": round_,
                    "response": "",
                    "extracted": "1"
                    if ok
                    else ("2" if i == 0 else None),  # 2: wrong, None: no answer
                    "gold": "1",
                    "correct": ok,
                    "metrics": {"accuracy": float(ok)},
                    "detail": "",
                }
            )
    summary = summarize(pa.Table.from_pylist(rows, schema=schemas.EVAL_SCORES)).to_pylist()
    assert [
        (
            s["round"],
            round(s["value"], 3),
            round(s["answered"], 3),
            s["wrong_to_right"],
            s["right_to_wrong"],
        )
        for s in summary
    ] == [
        (1, 0.333, 0.333, 0, 0),
        (2, 0.667, 1.0, 2, 1),
        (3, 0.667, 1.0, 0, 0),
    ]
    markdown = summary_markdown(
        pa.Table.from_pylist(summary, schema=schemas.EVAL_SUMMARY), "answered"
    )
    assert markdown.splitlines()[2] == "| gsm8k | answered | ptr | 3 | 33.3 | 100.0 | 100.0 |"


def test_example_ids_are_unique_or_refused(tmp_path):
    rows = [{"id": None, "question": f"{n} + 1?", "answer": f"#### {n + 1}"} for n in range(3)]
    (tmp_path / "g.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [e.id for e in load_examples("gsm8k", str(tmp_path / "g.jsonl"))] == [
        "gsm8k-0", "gsm8k-1", "gsm8k-2"
    ]  # fmt: skip
    rows = [{"id": "x", "question": f"{n} + 1?", "answer": f"#### {n + 1}"} for n in range(2)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(
        InputError, match=r"d\.jsonl row 2: example id 'x' repeats .*d\.jsonl row 1"
    ):
        load_examples("gsm8k", str(tmp_path / "d.jsonl"))


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Ticking:
    """A generator whose batches of 10 take ``batch_s`` seconds of a fake clock."""

    def __init__(self, clock: FakeClock, batch_s: float):
        self.clock, self.batch_s = clock, batch_s

    def generate(self, conversations, sampling, progress=None):
        out = []
        for start in range(0, len(conversations), 10):
            self.clock.now += self.batch_s
            out += [[f"The answer is {start}."] for _ in conversations[start : start + 10]]
            if progress is not None:
                progress(len(out), len(conversations))
        return out


def _progress_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "ptr_pipeline.evaluation.rounds"]


def test_refinement_logs_progress_every_five_seconds_of_work_with_the_expected_time(caplog):
    clock = FakeClock()
    caplog.set_level(logging.INFO, logger="ptr_pipeline.evaluation.rounds")
    prompts = [f"What is {i} + 1?" for i in range(100)]
    # 10 batches of 2 s a round: a line at 6, 12 and 18 s (not at every batch, not at the end),
    # then the round's total time
    refine(prompts, Ticking(clock, 2.0), 2, "Again: {query}", Sampling(), label="ptr gsm8k",
           clock=clock)  # fmt: skip
    assert _progress_lines(caplog) == [
        "ptr gsm8k round 1/2: 30/100 items, 6 s elapsed, about 20 s in all (14 s left)",
        "ptr gsm8k round 1/2: 60/100 items, 12 s elapsed, about 20 s in all (8 s left)",
        "ptr gsm8k round 1/2: 90/100 items, 18 s elapsed, about 20 s in all (2 s left)",
        "ptr gsm8k round 1/2: 100 items in 20 s",
        "ptr gsm8k round 2/2: 30/100 items, 6 s elapsed, about 20 s in all (14 s left)",
        "ptr gsm8k round 2/2: 60/100 items, 12 s elapsed, about 20 s in all (8 s left)",
        "ptr gsm8k round 2/2: 90/100 items, 18 s elapsed, about 20 s in all (2 s left)",
        "ptr gsm8k round 2/2: 100 items in 20 s",
    ]
    caplog.clear()
    refine(prompts, Ticking(clock, 0.4), 2, "Again: {query}", Sampling(), clock=clock)
    assert _progress_lines(caplog) == []  # 4 s a round: nothing worth a line


def test_progress_log_names_long_durations_in_minutes_and_follows_a_changing_total(caplog):
    clock = FakeClock()
    caplog.set_level(logging.INFO, logger="ptr_pipeline.evaluation.rounds")
    progress = ProgressLog("base xsum round 3/3", 1000, clock=clock)
    clock.now = 130.0
    progress(100, 1000)
    clock.now = 132.0
    progress(110, 1000)  # 2 s after the last line: silent
    clock.now = 140.0
    progress(120, 2000)  # the engine's total wins
    progress.finish()
    assert _progress_lines(caplog) == [
        "base xsum round 3/3: 100/1000 items, 2 min 10 s elapsed, about 21 min 40 s in all "
        "(19 min 30 s left)",
        "base xsum round 3/3: 120/2000 items, 2 min 20 s elapsed, about 38 min 53 s in all "
        "(36 min 33 s left)",
        "base xsum round 3/3: 2000 items in 2 min 20 s",
    ]
