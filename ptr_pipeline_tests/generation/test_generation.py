"""Weak thoughts and strong refinements with the real tiny models, resumable and with provenance."""

import json

import pydantic
import pytest

from ptr_pipeline import schemas
from ptr_pipeline.conversation import GENERIC_REFINE_TURN, REREAD_REFINE_TURN, PromptTooLongError
from ptr_pipeline.engines import LazyGenerator, Sampling, TransformersGenerator
from ptr_pipeline.generation import (
    RefineSettings,
    ThoughtSettings,
    generate_thoughts,
    refine_thoughts,
)
from ptr_pipeline.generation.prompts import prompt_hash, strong_conversation, thought_conversation
from ptr_pipeline_tests.conftest import make_queries


class Recording:
    """Wraps a real generator and records the conversations it was asked to continue."""

    def __init__(self, inner):
        self.inner, self.model, self.calls = inner, inner.model, []
        self.chat_format = inner.chat_format

    def generate(self, conversations, sampling):
        self.calls.append(([list(c) for c in conversations], sampling))
        return self.inner.generate(conversations, sampling)


def _never():
    raise AssertionError("a cached stage must not load a model")


def never(model: str) -> LazyGenerator:
    """An engine for ``model`` that fails if the stage tries to load it."""
    return LazyGenerator(_never, model_path=model)


def lazy(generator) -> LazyGenerator:
    inner = getattr(generator, "inner", generator)
    return LazyGenerator(lambda: generator, model_path=inner.model)


@pytest.fixture(scope="module")
def weak(models_home):
    return TransformersGenerator(models_home.resolve_model("tiny:weak"), batch_size=2)


def test_transformers_generator_samples_n_and_is_seeded(weak):
    conversations = [
        thought_conversation(q, "ptr_thought_v1")
        for q in ["Name a color.", "Say hi.", "Count to 3."]
    ]
    sampling = Sampling(n=2, temperature=1.0, max_new_tokens=8, seed=5)
    out = weak.generate(conversations, sampling)
    assert [len(s) for s in out] == [2, 2, 2]
    assert out == weak.generate(conversations, sampling)
    greedy = weak.generate(conversations[:1], Sampling(n=1, temperature=0.0, max_new_tokens=8))
    assert greedy == weak.generate(
        conversations[:1], Sampling(n=1, temperature=0.0, max_new_tokens=8, seed=9)
    )


def test_generate_thoughts_rows_provenance_and_resume(home, weak, models_home):
    queries = make_queries(["Name a color.", "Say hi.", "Count to 3."])
    settings = ThoughtSettings(num_thoughts=2, shard_size=2, max_new_tokens=8)
    recorder = Recording(weak)
    table = generate_thoughts(queries, settings, lazy(recorder), home.work)
    schemas.validate(table, schemas.WEAK_THOUGHTS, "weak_thoughts")
    assert table.num_rows == 6
    assert table.column("sample_index").to_pylist() == [0, 1] * 3
    assert len(recorder.calls) == 2  # two shards
    first = table.to_pylist()[0]
    assert first["model"] == weak.model and first["template"] == "ptr_thought_v1"
    assert json.loads(first["sampling"])["n"] == 2
    assert first["prompt_hash"] == prompt_hash(
        thought_conversation("Name a color.", "ptr_thought_v1")
    )
    # Unchanged inputs and settings: everything comes from the shards, no model is loaded.
    assert generate_thoughts(queries, settings, never(weak.model), home.work).equals(table)
    # Another model: its fingerprint re-keys the cache.
    with pytest.raises(AssertionError, match="must not load"):
        generate_thoughts(
            queries, settings, never(models_home.resolve_model("tiny:base")), home.work
        )
    # Changed settings: a new computation.
    other = generate_thoughts(
        queries, settings.model_copy(update={"seed": 1}), lazy(weak), home.work
    )
    assert other.num_rows == 6


def test_refine_rounds_see_thoughts_and_previous_round(home, weak, models_home):
    queries = make_queries(["Name a color.", "Say hi."])
    thoughts = generate_thoughts(
        queries, ThoughtSettings(num_thoughts=2, max_new_tokens=6), lazy(weak), home.work
    )
    strong = Recording(TransformersGenerator(models_home.resolve_model("tiny:strong")))
    settings = RefineSettings(num_rounds=3, max_new_tokens=6)
    table = refine_thoughts(thoughts, settings, lazy(strong), home.work)
    schemas.validate(table, schemas.STRONG_REFINEMENTS, "strong_refinements")
    assert table.num_rows == 6
    assert sorted(
        zip(table.column("query_id").to_pylist(), table.column("round").to_pylist(), strict=True)
    ) == [(q, r) for q in ("q0", "q1") for r in (1, 2, 3)]
    rounds = [conversations for conversations, _ in strong.calls]
    # user; +assistant, refine; +assistant, refine; then the last round again, sampled for the
    # filter's self-consistency vote
    assert [len(c[0]) for c in rounds] == [1, 3, 5, 5] and rounds[3] == rounds[2]
    vote = strong.calls[3][1]
    assert (vote.n, vote.temperature) == (settings.consistency_samples, 0.8)
    assert [len(r["samples"]) for r in table.to_pylist() if r["query_id"] == "q0"] == [0, 0, 4]
    assert all(len(r["thoughts_finished"]) == 2 for r in table.to_pylist())
    drafts = [t for t in thoughts.to_pylist() if t["query_id"] == "q0"]
    assert all(d["thought"] in rounds[0][0][0]["content"] for d in drafts)
    by_round = {r["round"]: r["refinement"] for r in table.to_pylist() if r["query_id"] == "q0"}
    assert rounds[2][0][1]["content"] == by_round[1] and rounds[2][0][3]["content"] == by_round[2]
    # tiny:strong is no world model and the setting names no turn: the paper's generic turn
    assert rounds[2][0][-1]["content"] == GENERIC_REFINE_TURN
    assert set(table.column("refine_turn").to_pylist()) == {GENERIC_REFINE_TURN}
    q0 = [r for r in table.to_pylist() if r["query_id"] == "q0"]
    assert all(r["query"] == "Name a color." and r["thoughts"] == [d["thought"] for d in drafts]
               for r in q0)  # fmt: skip
    assert refine_thoughts(thoughts, settings, never(strong.inner.model), home.work).equals(table)
    # The random tiny model rarely ends a turn: six new tokens cut most answers off.
    assert table.column("finished").to_pylist().count(False) > 0


def test_refine_turn_restates_the_bare_query_and_one_round_is_not_regenerated(
    home, weak, models_home
):
    queries = make_queries(["Name a color.", "Say hi."])
    thoughts = generate_thoughts(
        queries, ThoughtSettings(num_thoughts=2, max_new_tokens=6), lazy(weak), home.work
    )
    strong = Recording(TransformersGenerator(models_home.resolve_model("tiny:strong")))
    reread = RefineSettings(num_rounds=2, max_new_tokens=6, refine_turn=REREAD_REFINE_TURN)
    table = refine_thoughts(thoughts, reread, lazy(strong), home.work)
    second = strong.calls[1][0]  # round 2's conversations: the drafts prompt, round 1, the turn
    assert [c[-1]["content"] for c in second] == [
        "Please continue thinking and refine your answer to:\n\nName a color.",
        "Please continue thinking and refine your answer to:\n\nSay hi.",
    ]
    assert "Draft 1:" in second[0][0]["content"]  # the first turn still shows the drafts
    assert set(table.column("refine_turn").to_pylist()) == {REREAD_REFINE_TURN}
    # One round: the turn asks nothing, so another turn is stamped on the cached answers
    one = RefineSettings(max_new_tokens=6, consistency_samples=0)
    first = refine_thoughts(thoughts, one, lazy(strong), home.work)
    restamped = refine_thoughts(
        thoughts, one.model_copy(update={"refine_turn": "Again: {query}"}),
        never(strong.inner.model), home.work,
    )  # fmt: skip
    assert restamped.column("refinement").equals(first.column("refinement"))
    assert set(restamped.column("refine_turn").to_pylist()) == {"Again: {query}"}


def test_refine_turn_setting_is_checked():
    with pytest.raises(pydantic.ValidationError, match=r"only \{query\} is filled in"):
        RefineSettings(refine_turn="Refine your answer to {question}")
    with pytest.raises(pydantic.ValidationError, match="blank"):
        RefineSettings(refine_turn="  ")
    with pytest.raises(pydantic.ValidationError, match=r"names \{\}"):  # a literal brace is {{
        RefineSettings(refine_turn="Check \\boxed{} and {query}")
    assert RefineSettings(refine_turn="Check \\boxed{{}} and {query}").refine_turn


def test_strong_conversation_layout():
    conv = strong_conversation("Q?", ["d1", "d2"], ["r1"], "ptr_refine_v1", "Refine.")
    assert [m["role"] for m in conv] == ["user", "assistant", "user"]
    assert "Draft 1:\nd1" in conv[0]["content"] and "Draft 2:\nd2" in conv[0]["content"]
    with pytest.raises(ValueError, match="unknown prompt template 'nope'"):
        strong_conversation("Q?", [], [], "nope", "Refine.")


def test_bad_input_table_names_the_problem(home):
    bad = make_queries(["x"]).drop_columns(["query"])
    with pytest.raises(schemas.SchemaError, match="missing column 'query'"):
        generate_thoughts(bad, ThoughtSettings(), never("unused"), home.work)


def test_a_query_too_long_for_the_context_is_refused_before_the_model_loads(home, models_home):
    """The tiny models have a 2,048-token context; the check needs only the tokenizer."""
    queries = make_queries(["Name a color.", "word " * 3000])
    engine = LazyGenerator(_never, model_path=models_home.resolve_model("tiny:weak"))
    with pytest.raises(PromptTooLongError, match=r"query q1 \(test\): needs up to \d+ tokens"):
        generate_thoughts(queries, ThoughtSettings(shard_size=1), engine, home.work)
    assert not list((home.work / "weak_thoughts").rglob("*.parquet"))  # nothing was generated


def test_max_new_tokens_over_the_context_blames_the_setting(home, models_home):
    engine = LazyGenerator(_never, model_path=models_home.resolve_model("tiny:weak"))
    with pytest.raises(
        PromptTooLongError, match=r"max_new_tokens=5000 over 1 round\(s\) needs at least"
    ):
        generate_thoughts(
            make_queries(["Name a color."]), ThoughtSettings(max_new_tokens=5000), engine, home.work
        )
