"""The ten tasks' items from every layout people have them in, the real release files, the
settings that configure them, and `python -m ptr_pipeline score`."""

import json
from dataclasses import replace
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ptr_pipeline.__main__ import main
from ptr_pipeline.evaluation import (
    TASKS,
    EvalSetSettings,
    examples_from_table,
    examples_table,
    judge_rows,
    summarize,
    summary_markdown,
)
from ptr_pipeline.evaluation.metrics import humaneval_passes, humaneval_program
from ptr_pipeline.evaluation.tasks import load_examples, read_examples
from ptr_pipeline.records import InputError
from ptr_pipeline.samples import eval_sample


def _rows(task: str) -> list[dict]:
    lines = eval_sample(task).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines[:5]]


def _same(a, b) -> bool:
    return [replace(e, where="") for e in a] == [replace(e, where="") for e in b]


def _write_layouts(root: Path, rows: list[dict]) -> dict[str, Path]:
    """The same rows as JSONL (BOM, CRLF), a JSON array, a hub Parquet shard folder and a
    save_to_disk folder."""
    root.mkdir(parents=True, exist_ok=True)
    jsonl = root / "rows.jsonl"
    jsonl.write_bytes(
        b"\xef\xbb\xbf"
        + "".join(json.dumps(r, ensure_ascii=False) + "\r\n" for r in rows).encode("utf-8")
    )
    (root / "rows.json").write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    shard = root / "hub" / "data" / "test-00000-of-00001.parquet"
    shard.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), shard)
    datasets.Dataset.from_list(rows).save_to_disk(str(root / "saved"))
    return {
        "jsonl": jsonl,
        "json": root / "rows.json",
        "hub folder": root / "hub",
        "hub shard": shard,
        "save_to_disk": root / "saved",
    }


@pytest.mark.parametrize("task", list(TASKS))
def test_every_task_reads_the_same_items_from_every_layout(task, tmp_path):
    rows = _rows(task)
    # A raw U+2028 inside a string stays inside its record.
    text_field = next(k for k, v in rows[0].items() if isinstance(v, str) and len(v) > 20)
    rows[0] = {**rows[0], text_field: rows[0][text_field] + "\u2028(note)"}
    expected = read_examples(task, str(_write_layouts(tmp_path, rows)["jsonl"]))
    first = expected[0]
    seen = first.id + first.prompt + first.gold + json.dumps(first.reference, ensure_ascii=False)
    assert len(expected) == 5 and "\u2028(note)" in seen
    for layout, path in _write_layouts(tmp_path / "again", rows).items():
        assert _same(read_examples(task, str(path)), expected), layout


@pytest.mark.parametrize("task", list(TASKS))
def test_a_bad_row_names_file_row_and_field(task, tmp_path):
    rows = _rows(task)
    field = {
        "gsm8k": "answer", "math": "problem", "mmlu": "choices", "arc": "answerKey",
        "commonsense_qa": "answerKey", "winogrande": "answer", "gpqa": "Correct Answer",
        "humaneval": "test", "drop": "answers_spans", "xsum": "summary",
    }[task]  # fmt: skip
    rows[2] = {**rows[2], field: 7}
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(InputError, match=rf"bad\.jsonl row 3 field '{field}'"):
        read_examples(task, str(path))


def test_eval_sets_round_trip_through_their_table():
    for task in TASKS:
        examples = load_examples(task)
        table = examples_table(task, examples)
        assert examples_from_table(table)[task] == [replace(e, group="", shot="") for e in examples]


def test_settings_refuse_unknown_tasks_missing_paths_and_empty_sources(tmp_path):
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['hellaswag'\]; the tasks are \["):
        EvalSetSettings(eval_sources={"hellaswag": "bundled"})
    with pytest.raises(ValueError, match=r"/nowhere/gsm8k.jsonl: not found"):
        EvalSetSettings(eval_sources={"gsm8k": "/nowhere/gsm8k.jsonl"})
    with pytest.raises(ValueError, match="humaneval is zero-shot"):
        EvalSetSettings(num_fewshot={"humaneval": 1})
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "test.jsonl").write_text("\n")
    settings = EvalSetSettings(eval_sources={"xsum": str(tmp_path / "empty")})
    with pytest.raises(InputError, match=r"empty: no records"):
        settings.preflight()
    (tmp_path / "nothing").mkdir()  # a folder with no data file at all
    with pytest.raises(InputError, match=r"nothing: a folder with no data files"):
        EvalSetSettings(eval_sources={"xsum": str(tmp_path / "nothing")}).preflight()


def test_mmlu_takes_five_shots_of_its_own_subject_from_the_dev_split():
    examples = EvalSetSettings().load("mmlu")
    first = examples[0]
    assert first.prompt.count("Question:") == 6 and first.prompt.count("\nThe answer is (") == 5
    dev = read_examples("mmlu", str(eval_sample("mmlu", "dev")))
    shots = [d for d in dev if d.group == first.group][:5]
    assert all(d.question in first.prompt for d in shots)
    assert first.prompt.endswith(read_examples("mmlu", limit=1)[0].prompt.split("\n\n", 1)[1])
    zero = EvalSetSettings(num_fewshot={"mmlu": 0}).load("mmlu")[0]
    assert zero.prompt.count("Question:") == 1
    two = EvalSetSettings(num_fewshot={"gsm8k": 2}, fewshot_sources={"gsm8k": "bundled"})
    shot_prompt = two.load("gsm8k")[0].prompt
    assert shot_prompt.count("Question:") == 3 and shot_prompt.count("\nThe answer is ") == 2


def test_shots_of_a_folder_source_come_from_its_dev_split_and_the_same_subject(tmp_path):
    """The original MMLU release: <subject>_dev.csv and <subject>_test.csv in dev/ and test/."""
    (tmp_path / "mmlu" / "dev").mkdir(parents=True)
    (tmp_path / "mmlu" / "test").mkdir()
    for subject in ("anatomy", "virology"):
        dev = "".join(f'"{subject} dev {k}?",a,b,c,d,A\n' for k in range(5))
        (tmp_path / "mmlu" / "dev" / f"{subject}_dev.csv").write_text(dev)
        (tmp_path / "mmlu" / "test" / f"{subject}_test.csv").write_text(
            f'"{subject} test?",a,b,c,d,B\n'
        )
    source = str(tmp_path / "mmlu")
    examples = EvalSetSettings(eval_sources={"mmlu": source}, eval_splits={"mmlu": "test"}).load(
        "mmlu"
    )
    for e in examples:
        assert e.prompt.count(f"{e.group} dev") == 5 and e.prompt.count("dev") == 5
    # One file: the shots would come from the evaluated items, so they must be named.
    single = tmp_path / "mmlu_test.csv"
    single.write_text('"q?",a,b,c,d,B\n')
    with pytest.raises(
        InputError, match=r"mmlu_test.csv: mmlu asks 5 few-shot examples; set fewshot_sources"
    ):
        EvalSetSettings(eval_sources={"mmlu": str(single)}).load("mmlu")
    # Too few shots of a subject: refused, naming the subject and where the shots were read.
    (tmp_path / "mmlu" / "dev" / "virology_dev.csv").write_text('"v?",a,b,c,d,A\n')
    with pytest.raises(
        InputError, match=r"5 few-shot examples of 'virology' asked, 1 in .*mmlu split dev"
    ):
        EvalSetSettings(eval_sources={"mmlu": source}, eval_splits={"mmlu": "test"}).load("mmlu")


def test_shared_release_files_of_every_bundled_kind_load(shared_data):
    """The original release files in ../shared/data/benchmarks load with no edits."""
    bench = shared_data / "benchmarks"
    arc = load_examples("arc", str(bench / "arc"))  # Easy + Challenge, as the paper scores them
    assert len(arc) == 869 and {e.id.split("_")[0] for e in arc} >= {"Mercury", "MCAS"}
    assert len(load_examples("commonsense_qa", str(bench / "commonsenseqa"))) == 9741
    wino = load_examples("winogrande", str(bench / "winogrande"))
    assert len(wino) == 160 and {e.gold for e in wino} == {"A", "B"}
    mmlu = load_examples("mmlu", str(bench / "mmlu" / "dev"), num_fewshot=0)
    assert len(mmlu) == 285 and len({e.group for e in mmlu}) == 57
    assert len(load_examples("gsm8k", str(bench / "gsm8k"))) == 7473


@pytest.mark.slow
def test_the_real_humaneval_canonical_solutions_pass_and_wrong_bodies_fail(shared_data):
    problems = read_examples("humaneval", str(shared_data / "benchmarks" / "humaneval"))
    assert len(problems) == 164
    lines = (shared_data / "benchmarks" / "humaneval" / "HumanEval.jsonl.gz").read_bytes()
    import gzip

    canonical = {
        r["task_id"]: r["canonical_solution"]
        for r in map(json.loads, gzip.decompress(lines).decode().splitlines())
    }
    failed = []
    for e in problems:
        ref = e.reference
        program = humaneval_program(ref["prompt"], canonical[e.id], ref["test"], ref["entry_point"])
        if not humaneval_passes(program).passed:
            failed.append(e.id)
    assert failed == []
    wrong = humaneval_program(
        problems[0].reference["prompt"], "    return None\n", problems[0].reference["test"],
        problems[0].reference["entry_point"],
    )  # fmt: skip
    assert not humaneval_passes(wrong).passed


def test_score_judges_responses_by_id_or_in_order_and_writes_judgments(tmp_path, capsys):
    examples = read_examples("gsm8k")[:3]
    by_id = [
        {
            "example_id": examples[0].id,
            "response": f"The answer is {examples[0].gold}.",
            "round": 1,
        },
        {"example_id": examples[0].id, "response": "The answer is 99999.", "round": 2},
        {"example_id": examples[1].id, "response": "I think it is " + examples[1].gold, "round": 1},
    ]
    path = tmp_path / "responses.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in by_id))
    assert main(["score", "gsm8k", str(path), "--source", "bundled"]) == 0
    printed = capsys.readouterr().out
    # round 1: 1 of 2 (strict); round 2: one item
    assert "| gsm8k | accuracy | responses | 2 / 1 | 50.0 [" in printed
    assert "| gsm8k | flexible_extract | responses | 2 / 1 | 100.0 [" in printed
    judged = [json.loads(line) for line in (tmp_path / "responses.judgments.jsonl").open()]
    assert [(j["example_id"], j["round"], j["correct"]) for j in judged] == [
        (examples[0].id, 1, True), (examples[1].id, 1, False), (examples[0].id, 2, False),
    ]  # fmt: skip
    assert judged[1]["metrics"] == {"accuracy": 0.0, "strict_match": 0.0, "flexible_extract": 1.0}
    # In item order, with no id; --extraction flexible reads the bare number.
    (tmp_path / "ordered.jsonl").write_text(
        "".join(json.dumps({"response": f"so {e.gold}"}) + "\n" for e in examples)
    )
    out = tmp_path / "j.jsonl"
    assert main(["score", "gsm8k", str(tmp_path / "ordered.jsonl"), "--source", "bundled", "--extraction",
                 "flexible", "--out", str(out)]) == 0  # fmt: skip
    assert "| gsm8k | accuracy | responses | 3 | 100.0 [" in capsys.readouterr().out
    assert len(out.read_text().splitlines()) == 3


def test_score_refuses_unknown_items_and_extra_rows_naming_the_row(tmp_path, capsys):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"id": "nope", "response": "x"}) + "\n")
    assert main(["score", "arc", str(path), "--source", "bundled"]) == 2
    assert "r.jsonl row 1 field 'id': no item 'nope' in the source" in capsys.readouterr().err
    n = len(read_examples("arc"))
    path.write_text("".join(json.dumps({"response": "A"}) + "\n" for _ in range(n + 1)))
    assert main(["score", "arc", str(path), "--source", "bundled"]) == 2
    assert f"row {n + 1}: more round-1 responses than the {n} items" in capsys.readouterr().err


def test_score_reads_an_eval_scores_file_one_model_at_a_time(tmp_path, capsys):
    """By default the items are the eval stage's own (the world's set for gsm8k), so the ids of
    an eval_scores file match; --model-role keeps one model's rows."""
    world = read_examples("gsm8k", "world")[:2]
    rows = [
        {"model_role": role, "example_id": e.id, "round": 1,
         "response": f"The answer is {e.gold if role == 'ptr' else 0}."}
        for role in ("base", "ptr") for e in world
    ]  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "scores.parquet")
    assert main(["score", "gsm8k", str(tmp_path / "scores.parquet")]) == 2  # two models' rows
    assert "a second round-1 response" in capsys.readouterr().err
    assert main(["score", "gsm8k", str(tmp_path / "scores.parquet"), "--model-role", "ptr"]) == 0
    assert "| gsm8k | accuracy | responses | 2 | 100.0 [" in capsys.readouterr().out


def test_score_gives_each_round_its_own_n_when_only_some_items_have_a_later_round(tmp_path, capsys):
    """Round 1 answered for 4 items, round 2 for 1: the table's n says 4 / 1, not 4 (the round-2
    figure, 0.0 [0.0, 79.3], is over one item)."""
    examples = read_examples("gsm8k")[:4]
    rows = [
        {"example_id": e.id, "response": f"The answer is {e.gold}.", "round": 1} for e in examples
    ]
    rows.append({"example_id": examples[0].id, "response": "The answer is 99999.", "round": 2})
    path = tmp_path / "partial.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["score", "gsm8k", str(path), "--source", "bundled"]) == 0
    printed = capsys.readouterr().out
    assert (
        "| gsm8k | accuracy | responses | 4 / 1 | 100.0 [51.0, 100.0] | 0.0 [0.0, 79.3] |"
        in printed
    )
    summary = summarize(
        judge_rows(
            "gsm8k", examples, [[f"The answer is {e.gold}."] for e in examples], "strict", "m", "m"
        )
    )
    # every round answered for every item: one n
    assert "| gsm8k | accuracy | m | 4 | 100.0 [51.0, 100.0] |" in summary_markdown(summary)
