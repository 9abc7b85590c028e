"""The world's models, pretrained from scratch, are good enough for their roles (slow: they are
built once per session by the ``world_models`` fixture)."""

import json

import pytest
from transformers import AutoModelForCausalLM

from ptr_pipeline.answers import FLEXIBLE, extract_number
from ptr_pipeline.conversation import REREAD_REFINE_TURN
from ptr_pipeline.engines import Sampling, TransformersGenerator
from ptr_pipeline.evaluation import EvalSettings, evaluate_rounds, load_examples, summarize
from ptr_pipeline.generation.prompts import strong_conversation, thought_conversation
from ptr_pipeline.generation.settings import RefineSettings, ThoughtSettings
from ptr_pipeline.storage import CHECKPOINT_MANIFEST, checkpoint_problems
from ptr_pipeline.world import WorldRecipe, build_world_models

N = 200  # held-out items per task


def _accuracy(model: str, task: str) -> float:
    generator = TransformersGenerator(model, batch_size=64)
    examples = load_examples(task, "world", N)
    settings = EvalSettings(num_rounds=1, max_new_tokens=64)
    table = evaluate_rounds(examples, task, generator, settings, "m", model, REREAD_REFINE_TURN)
    generator.close()
    (cell,) = [r for r in summarize(table).to_pylist() if r["primary"]]
    return cell["value"]


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
def test_the_strong_model_reads_past_the_weak_models_drafts(world_models):
    """The strong stage as the pipeline runs it: the weak model samples two drafts per question
    (the weak stage's default sampling), and the strong model answers with them before the
    question (``ptr_refine_v2``). A strong model that copied the drafts' digits would train PTR
    and SFT on wrong answers (docs/world.md, tries 16-18)."""
    examples = load_examples("gsm8k", "world", N)
    thoughts = ThoughtSettings()
    weak = TransformersGenerator(str(world_models["weak"]), batch_size=64)
    drafts = weak.generate(
        [thought_conversation(e.prompt, thoughts.template) for e in examples],
        thoughts.sampling(n=thoughts.num_thoughts),
    )
    weak.close()
    strong = TransformersGenerator(str(world_models["strong"]), batch_size=64)
    answers = strong.generate(
        [strong_conversation(e.prompt, d, [], RefineSettings().template, "")
         for e, d in zip(examples, drafts, strict=True)],
        Sampling(max_new_tokens=64),
    )  # fmt: skip
    cut = strong.generate(
        [strong_conversation(examples[0].prompt, drafts[0], [], RefineSettings().template, "")],
        Sampling(max_new_tokens=3),
    )[0][0]
    strong.close()
    # The models end their answers (an end-of-turn token); three tokens cut one off.
    assert all(a.finished for (a,) in answers) and all(d.finished for ds in drafts for d in ds)
    assert not cut.finished and answers[0][0].startswith(cut)
    golds = [e.gold for e in examples]
    drafts_right = sum(
        extract_number(d, FLEXIBLE) == g for ds, g in zip(drafts, golds, strict=True) for d in ds
    )
    right = sum(extract_number(a, FLEXIBLE) == g for (a,), g in zip(answers, golds, strict=True))
    print(f"weak drafts right: {drafts_right}/{2 * N}; strong model reading them: {right}/{N}")
    assert right / N >= 0.85
    assert drafts_right / (2 * N) < 0.5  # the drafts are mostly wrong: the strong model fixes


@pytest.mark.slow
def test_world_models_load_like_hub_checkpoints_and_are_cached(world_models, tmp_path):
    steps: dict[str, int] = {}
    for role, path in world_models.items():
        assert not checkpoint_problems(path)  # manifest hashes verify
        manifest = json.loads((path / CHECKPOINT_MANIFEST).read_text())
        assert manifest["world_role"] == role
        # chosen by probe accuracy (world.probe): weak < base < strong = the last step
        assert manifest["step"] == int(manifest["step"])
        assert (
            manifest["snapshot_probe_accuracy"] == manifest["probe_accuracy"][str(manifest["step"])]
        )
        steps[role] = manifest["step"]
        model = AutoModelForCausalLM.from_pretrained(path)
        assert model.config.model_type == "llama"
    assert steps["weak"] < steps["base"] < steps["strong"] == WorldRecipe().steps
    # An unchanged recipe trains nothing: the intact folder is returned as is.
    again = build_world_models(world_models["weak"].parents[1], WorldRecipe())
    assert again == world_models
