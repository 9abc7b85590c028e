"""`python -m ptr_pipeline refine`: think-thrice inference, the same procedure evaluation runs."""

import json
import time

import pytest

from ptr_pipeline.__main__ import main
from ptr_pipeline.conversation import GENERIC_REFINE_TURN
from ptr_pipeline.engines import TransformersGenerator
from ptr_pipeline.evaluation import EvalSettings, evaluate_rounds, load_examples


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
