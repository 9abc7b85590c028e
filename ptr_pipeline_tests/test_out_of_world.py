"""One line when the world's models meet queries that are not the world's: at launch, in refine."""

import json
import shutil

import pytest

from ptr_pipeline.__main__ import main
from ptr_pipeline.out_of_world import (
    REAL_MODELS,
    foreign_sources,
    is_world_question,
    launch_note,
    refine_note,
    world_origin,
)
from ptr_pipeline.samples import WORLD_DIR, WORLD_EVAL_SOURCES, eval_sample, query_sample
from ptr_pipeline.storage import CHECKPOINT_MANIFEST

WORLD = {"weak": "world:weak", "base": "world:base", "strong": "world:strong"}
TINY = {"weak": "tiny:weak", "base": "tiny:base", "strong": "tiny:strong"}
GSM8K = "Solve the math problem. End with 'The answer is N.'\n\nQuestion: What is {} + {}?"


def test_the_worlds_prompts_are_recognised_with_any_operands():
    queries = [json.loads(line)["query"] for line in query_sample("world").read_text().splitlines()]
    assert all(is_world_question(q) for q in queries)  # both renderings, every pool query
    assert is_world_question(GSM8K.format(47, 38))
    for text in (
        "What is 47 + 38?",  # the bare question: the world's models answer it with babble
        GSM8K.format(47, 38) + " Think step by step.",
        GSM8K.format("forty-seven", 38),
        json.loads(query_sample("bundled").read_text().splitlines()[0])["instruction"],
    ):
        assert not is_world_question(text), text


def test_sources_other_than_the_worlds_are_named():
    assert foreign_sources("world", dict(WORLD_EVAL_SOURCES)) == []
    assert foreign_sources(str(WORLD_DIR / "queries.jsonl"), {"gsm8k": str(eval_sample("gsm8k", "world"))}) == []  # fmt: skip
    assert foreign_sources(None, None) == []  # neither stage in the run
    # a task the world has no set for is scored on its bundled sample in every run
    assert foreign_sources("world", {"mmlu": "bundled"}) == []
    assert foreign_sources("my_questions.jsonl", {"gsm8k": "bundled", "mmlu": "/data/mmlu"}) == [
        "query_pool.source 'my_questions.jsonl'",
        "eval_sets.eval_sources.gsm8k 'bundled'",
        "eval_sets.eval_sources.mmlu '/data/mmlu'",
    ]


def test_the_launch_line_needs_world_models_and_a_foreign_source():
    line = launch_note(WORLD, "my_questions.jsonl", None)
    assert line == (
        "the world's models (weak world:weak, base world:base, strong world:strong) know only "
        "the world's addition prompts, and query_pool.source 'my_questions.jsonl' is not the "
        f"world's: expect babble, which the filter may partly keep; real models: {REAL_MODELS}"
    )
    assert "\n" not in line
    assert launch_note(WORLD, "world", dict(WORLD_EVAL_SOURCES)) is None  # the demo
    assert launch_note(TINY, "my_questions.jsonl", None) is None  # not the world's models
    assert launch_note({**TINY, "base": "world:base"}, "bundled", None) is not None


def _folder_with_manifest(models_home, tmp_path, manifest: dict) -> str:
    folder = tmp_path / "model"
    shutil.copytree(models_home.resolve_model("tiny:base"), folder)
    (folder / CHECKPOINT_MANIFEST).write_text(json.dumps(manifest))
    return str(folder)


def test_a_world_model_is_known_by_its_setting_or_its_manifest(models_home, tmp_path):
    assert world_origin("world:strong", "/anywhere") == "world:strong"
    assert world_origin("tiny:base", models_home.resolve_model("tiny:base")) is None
    world = _folder_with_manifest(models_home, tmp_path, {"world_role": "base", "step": 310})
    assert world_origin(world, world) == "world:base"
    (tmp_path / "model" / CHECKPOINT_MANIFEST).write_text(json.dumps({"base_model": "world:base"}))
    assert world_origin("ptr", world) == "world:base"  # fine-tuned from it
    (tmp_path / "model" / CHECKPOINT_MANIFEST).write_text(json.dumps({"base_model": "Qwen/Qwen2"}))
    assert world_origin("ptr", world) is None
    assert refine_note("ptr", world, ["What is 47 + 38?"]) is None


def test_refine_says_once_when_a_world_model_gets_other_questions(models_home, tmp_path, capsys):
    """A checkpoint fine-tuned from world:base (its manifest says so) asked a bare question: one
    line on stderr, and the answers as always; asked in the world's format: no line."""
    ptr = _folder_with_manifest(models_home, tmp_path, {"base_model": "world:base"})
    argv = ["refine", "--checkpoint", ptr, "--rounds", "1", "--max-new-tokens", "4"]
    assert main([*argv, "--question", "What is 47 + 38?"]) == 0
    out, err = capsys.readouterr()
    notes = [line for line in err.splitlines() if line.startswith("note: ")]
    assert notes == [
        f"note: {ptr} (fine-tuned from world:base) knows only the world's addition prompts, e.g. "
        f"{GSM8K.format(30, 33)!r}, and 1 of 1 question(s) are not one (the first: question 1): "
        f"expect babble; --task gsm8k or arc asks a world file as evaluation does; real models: "
        f"{REAL_MODELS}"
    ]
    assert out.startswith("[1] What is 47 + 38?\n  round 1: ")  # answered all the same
    argv = [*argv, "--file", str(eval_sample("gsm8k", "world")), "--task", "gsm8k", "--limit", "2"]
    assert main(argv) == 0
    assert "note: " not in capsys.readouterr().err


@pytest.mark.parametrize("spec", ["tiny:base"])
def test_refine_says_nothing_for_other_models(models_home, capsys, spec):
    assert main(["refine", "--checkpoint", models_home.resolve_model(spec), "--question",
                 "What is 47 + 38?", "--rounds", "1", "--max-new-tokens", "4"]) == 0  # fmt: skip
    assert "note: " not in capsys.readouterr().err
