"""The world's models, pretrained from scratch, are good enough for their roles (slow: they are
built once per session by the ``world_models`` fixture)."""

import json
import random

import pytest
from transformers import AutoModelForCausalLM

from ptr_pipeline.engines import Sampling, TransformersGenerator
from ptr_pipeline.evaluation import evaluate_rounds, load_examples, summarize
from ptr_pipeline.evaluation.tasks import extract_number
from ptr_pipeline.generation.prompts import strong_conversation
from ptr_pipeline.storage import CHECKPOINT_MANIFEST, checkpoint_problems
from ptr_pipeline.world import WorldRecipe, build_world_models, tasks

N = 200  # held-out items per task


def _accuracy(model: str, task: str) -> float:
    generator = TransformersGenerator(model, batch_size=64)
    examples = load_examples(task, "world", N)
    table = evaluate_rounds(examples, task, generator, 1, "", Sampling(max_new_tokens=64), "m",
                            model)  # fmt: skip
    generator.close()
    (cell,) = summarize(table).to_pylist()
    return cell["accuracy"]


@pytest.mark.slow
def test_world_models_reach_their_bands_on_held_out_items(world_models):
    """The issue's bands (strong >= 85%, weak 20-50%, base between) on the GSM8K rendering. The
    ARC rendering is not asserted: no world model learned it (chance; docs/world.md)."""
    accuracy = {role: _accuracy(str(path), "gsm8k") for role, path in world_models.items()}
    print("world gsm8k accuracy on held-out items:", accuracy)
    assert accuracy["strong"] >= 0.85
    assert 0.2 <= accuracy["weak"] <= 0.5
    assert accuracy["weak"] < accuracy["base"] < accuracy["strong"]


@pytest.mark.slow
def test_the_strong_model_reads_past_hurried_drafts_in_the_strong_stage_prompt(world_models):
    """The strong stage asks with drafts before the question (``ptr_refine_v2``); a strong model
    that copied the drafts' digits would train PTR on wrong answers (docs/world.md, try 17)."""
    rng = random.Random(0)
    examples = load_examples("gsm8k", "world", N)
    conversations, golds = [], []
    for example in examples:
        problem = tasks.operands({"question": example.question})
        drafts = [tasks.response("gsm8k", {}, *problem.draft_steps(rng)) for _ in range(2)]
        conversations.append(strong_conversation(example.prompt, drafts, [], "ptr_refine_v2", ""))
        golds.append(example.gold)
    generator = TransformersGenerator(str(world_models["strong"]), batch_size=64)
    answers = generator.generate(conversations, Sampling(max_new_tokens=64))
    generator.close()
    right = sum(extract_number(a) == g for (a,), g in zip(answers, golds, strict=True))
    print(f"strong model with two hurried drafts: {right}/{N} right")
    assert right / N >= 0.85


@pytest.mark.slow
def test_world_models_load_like_hub_checkpoints_and_are_cached(world_models, tmp_path):
    for role, path in world_models.items():
        assert not checkpoint_problems(path)  # manifest hashes verify
        manifest = json.loads((path / CHECKPOINT_MANIFEST).read_text())
        assert manifest["world_role"] == role
        assert manifest["step"] == WorldRecipe().snapshots[role]
        model = AutoModelForCausalLM.from_pretrained(path)
        assert model.config.model_type == "llama"
    # An unchanged recipe trains nothing: the intact folder is returned as is.
    again = build_world_models(world_models["weak"].parents[1], WorldRecipe())
    assert again == world_models
