"""`python -m ptr_pipeline refine`: think-thrice inference, the same procedure evaluation runs."""

import json
import os
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ptr_pipeline import schemas
from ptr_pipeline.__main__ import main, report
from ptr_pipeline.conversation import GENERIC_REFINE_TURN
from ptr_pipeline.engines import TransformersGenerator
from ptr_pipeline.evaluation import (
    TASKS,
    EvalSettings,
    evaluate_rounds,
    examples_table,
    load_examples,
)
from ptr_pipeline.evaluation.tasks import read_examples
from ptr_pipeline.storage import CHECKPOINT_MANIFEST, table_fingerprint, write_versioned
from ptr_pipeline.training import sft_rows


def test_refine_answers_every_round_like_evaluation(models_home, tmp_path, capsys):
    model = models_home.resolve_model("tiny:strong")
    examples = load_examples("gsm8k", "world", 3)
    (tmp_path / "q.jsonl").write_text(
        "".join(
            json.dumps({"question": e.question, "answer": f"x\n#### {e.gold}"}) + "\n"
            for e in examples
        )
    )
    argv = ["refine", "--checkpoint", model, "--file", str(tmp_path / "q.jsonl"),
            "--task", "gsm8k", "--rounds", "3", "--max-new-tokens", "8", "--json"]  # fmt: skip
    assert main(argv) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    settings = EvalSettings(num_rounds=3, max_new_tokens=8)
    # tiny:strong was not trained by the pipeline and is no world model: the paper's turn
    expected = evaluate_rounds(
        examples, "gsm8k", TransformersGenerator(model), settings, "m", model, GENERIC_REFINE_TURN
    ).to_pylist()
    assert [line["gold"] for line in lines] == [e.gold for e in examples]
    for i, line in enumerate(lines):
        assert line["question"] == examples[i].prompt  # rendered by the task, as evaluation does
        assert line["rounds"] == [
            r["response"] for r in expected if r["example_id"] == examples[i].id
        ]
        assert len(line["extracted"]) == 3


def test_refine_one_question_as_text(models_home, capsys):
    model = models_home.resolve_model("tiny:base")
    assert main(["refine", "--checkpoint", model, "--question", "What is 2 + 2?", "--rounds", "2",
                 "--max-new-tokens", "4"]) == 0  # fmt: skip
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "[1] What is 2 + 2?" and out[1].startswith("  round 1: ")
    assert out[2].startswith("  round 2: ") and len(out) == 3


def test_refine_without_a_checkpoint_says_what_to_do(tmp_path, monkeypatch, capsys, models_home):
    monkeypatch.setenv("PTR_HOME", str(tmp_path))
    assert main(["refine", "--question", "Hi"]) == 2
    assert "no ptr_checkpoint under" in capsys.readouterr().err
    assert main(["refine", "--question", "Hi", "--checkpoint", "sft"]) == 2
    err = capsys.readouterr().err
    assert "no sft_checkpoint under" in err and len(err.strip().splitlines()) == 1
    # a bare name that is no pipeline checkpoint and no cached hub model: refused at once, with
    # no hub retries (this machine has no network)
    started = time.perf_counter()
    assert main(["refine", "--question", "Hi", "--checkpoint", "some-org/not-cached-model"]) == 2
    err = capsys.readouterr().err
    assert "not in the local Hugging Face cache" in err and len(err.strip().splitlines()) == 1
    assert time.perf_counter() - started < 5
    with pytest.raises(SystemExit):
        main(["refine", "--question", "Hi", "--rounds", "0"])
    with pytest.raises(SystemExit):
        main(["refine", "--file", "q.jsonl", "--limit", "0"])
    assert main(["refine", "--question", "Hi", "--checkpoint", str(tmp_path / "nope")]) == 2
    assert "no such model folder" in capsys.readouterr().err
    (tmp_path / "q.jsonl").write_text('{"text": "Hi"}\n')
    checkpoint = models_home.resolve_model("tiny:base")  # the file is refused before it loads
    assert main(["refine", "--file", str(tmp_path / "q.jsonl"), "--checkpoint", checkpoint]) == 2
    assert "row 1: missing field 'question'" in capsys.readouterr().err


def test_refine_refuses_bad_checkpoints_options_and_long_questions_in_one_line(
    models_home, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("PTR_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    cases = {
        # a relative path with folders cannot be a hub id ("owner/name")
        "no such model folder": ["--checkpoint", ".ptr/models/world-x/base"],
        "not a model folder (no config.json)": ["--checkpoint", str(tmp_path)],
        "not built under": ["--checkpoint", "world:base"],  # nothing built in this PTR_HOME
    }
    for expected, argv in cases.items():
        assert main(["refine", "--question", "Hi", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert expected in err and len(err.strip().splitlines()) == 1, err
    model = models_home.resolve_model("tiny:base")
    assert main(["refine", "--checkpoint", model, "--question", "x " * 5000]) == 2
    err = capsys.readouterr().err
    assert "--question, question 1: " in err and "more than the model's context" in err
    for option in ("--max-new-tokens", "--batch-size"):
        with pytest.raises(SystemExit):
            main(["refine", "--checkpoint", model, "--question", "Hi", option, "0"])


def _dataset(answer: str) -> pa.Table:
    rows = [{"query_id": f"q{i}", "query": f"What is {i} + 1?", "thoughts": ["maybe 3"],
             "answer": f"{answer} {i + 1}", "origin": "ptr", "refine_turn": "{query}"}
            for i in range(4)]  # fmt: skip
    return pa.Table.from_pylist(rows, schema=schemas.PTR_DATASET)


def _checkpoint(artifacts, asset: str, name: str, dataset: pa.Table, turn: str):
    folder = artifacts / asset / "versions" / name
    folder.mkdir(parents=True)
    manifest = {"dataset_fingerprint": table_fingerprint(dataset), "refine_turn": turn}
    (folder / CHECKPOINT_MANIFEST).write_text(json.dumps(manifest))
    return folder


def _point_latest(artifacts, asset: str, name: str) -> None:
    (artifacts / asset / "latest").symlink_to(f"versions/{name}")


def _scores(task, examples, right: dict[tuple[str, int], int], models: dict[str, str], turn=None):
    """role, round -> items right (the first ones); every row asked with ``turn``."""
    rows = []
    for (role, round_), k in right.items():
        for i, e in enumerate(examples):
            answer = e.gold if i < k else ("Z" if e.choices else "-1")
            judged = TASKS[task].judge(f"The answer is ({answer})." if e.choices else
                                       f"The answer is {answer}.", e)  # fmt: skip
            rows.append({"model_role": role, "model": models[role], "task": task,
                         "example_id": e.id, "prompt": e.prompt, "round": round_,
                         "response": f"answer {answer}", "extracted": judged.extracted,
                         "gold": e.gold, "correct": judged.correct, "metrics": judged.metrics,
                         "detail": "", "refine_turn": turn})  # fmt: skip
    return pa.Table.from_pylist(rows, schema=schemas.EVAL_SCORES)


def test_report_leads_with_the_verdict_and_marks_stale_checkpoints_and_scores(tmp_path, capsys):
    artifacts = tmp_path / "artifacts"
    old, new = _dataset("old"), _dataset("new")
    _, old_file, _ = write_versioned(old, artifacts / "ptr_dataset")
    os.utime(old_file, (time.time() - 60, time.time() - 60))
    _, new_file, _ = write_versioned(new, artifacts / "ptr_dataset")  # the latest
    # a checkpoint fingerprints the table as its IO manager read it from the version's file
    old, new = pq.read_table(old_file), pq.read_table(new_file)
    turn = "Refine:\n{query}"
    # PTR: the latest checkpoint trained on the old dataset, and the scores of one older still
    scored = _checkpoint(artifacts, "ptr_checkpoint", "00000000000000a0", old, turn)
    _checkpoint(artifacts, "ptr_checkpoint", "00000000000000a1", old, turn)
    _point_latest(artifacts, "ptr_checkpoint", "00000000000000a1")
    sft = _checkpoint(artifacts, "sft_checkpoint", "00000000000000b1", sft_rows(new), turn)
    _point_latest(artifacts, "sft_checkpoint", "00000000000000b1")
    base = str(tmp_path / "models" / "world-x" / "base")
    base_table = pa.Table.from_pylist([{"role": "base", "model": base}])
    write_versioned(base_table, artifacts / "base_model")
    models = {"base": base, "sft": str(sft), "ptr": str(scored)}
    gsm8k, arc = read_examples("gsm8k"), read_examples("arc")  # 40 and 32 items
    assert all(len(e.choices) == 4 for e in arc)
    write_versioned(
        pa.concat_tables([examples_table("gsm8k", gsm8k), examples_table("arc", arc)]),
        artifacts / "eval_sets",
    )
    gsm8k_scores = _scores("gsm8k", gsm8k, {("base", 1): 20, ("base", 2): 2, ("sft", 1): 30,
                                            ("sft", 2): 30, ("ptr", 1): 10, ("ptr", 2): 36}, models,
                          turn)  # fmt: skip
    arc_scores = _scores("arc", arc, {(r, k): 6 for r in models for k in (1, 2)}, models)
    write_versioned(gsm8k_scores, artifacts / "eval_scores" / "gsm8k")
    write_versioned(arc_scores, artifacts / "eval_scores" / "arc")

    assert report(tmp_path) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[:6] == [
        f"PTR report for {tmp_path}",
        "",
        "## Verdict",
        "",
        "Tasks that carry signal: gsm8k.",
        "At chance, left out of every pooled figure: arc.",  # 6 of 32 four-option items
    ]
    assert lines[6] == (
        f"STALE ptr_checkpoint: trained on ptr_dataset {old_file.stem}, not the latest "
        f"{new_file.stem}"
    )
    for line, task in zip(lines[7:9], ("gsm8k", "arc"), strict=True):
        assert line == (
            f"STALE eval_scores {task}: ptr: scores of ptr_checkpoint 00000000000000a0, not the "
            "latest 00000000000000a1"
        )
    verdict = lines.index("| paired difference (points) | gsm8k | reading |")
    assert (
        lines[verdict + 2]
        == "| PTR round 2 - PTR round 1 | +65.0 [+50.0, +80.0] | refining helps PTR |"
    )
    assert "| PTR round 2 - SFT round 2 | +15.0 [" in out  # the claim issue 16 adds
    assert (
        verdict < lines.index("## Scores")
        and "| arc (at chance) | accuracy | base | 32 | 25.0 | 18.8 [" in out
    )
    assert (
        f"| ptr_checkpoint | 00000000000000a1 | ptr_dataset {old_file.stem} | STALE: trained on "
        in out
    )
    assert f"| sft_checkpoint | 00000000000000b1 | ptr_dataset {new_file.stem} | current |" in out
    assert (
        # tasks made from the same checkpoints share one row
        "| eval_scores gsm8k, arc | base world-x/base, ptr 00000000000000a0, sft 00000000000000b1 | "
        f"ptr: ptr_dataset {old_file.stem}; sft: ptr_dataset {new_file.stem} | STALE: ptr: scores of "
        "ptr_checkpoint 00000000000000a0, not the latest 00000000000000a1 |"
    ) in out
    assert (
        "Refine turn the checkpoints were trained with: 'Refine:\\n{query}' (ptr_checkpoint, sft_checkpoint)"
        in out
    )
    assert (
        "Refine turn evaluation asked with: 'Refine:\\n{query}' (gsm8k); (not recorded with these scores) (arc)"
        in out
    )
    assert "One fine-tuning run (fine_tune.seed " in out and "docs/results.md" in out
    assert "## One held-out item, round by round" in out
    assert "task gsm8k, item " in out and "task arc" not in out  # from the task with signal


def test_report_without_scores_says_what_to_do(tmp_path, capsys):
    assert report(tmp_path) == 1
    assert "No eval_scores yet" in capsys.readouterr().out
