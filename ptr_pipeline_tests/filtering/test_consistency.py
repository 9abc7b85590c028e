"""Consistency filter: one verdict per row, the first failing rule as reason, statistics."""

import pyarrow as pa
import pytest

from ptr_pipeline import schemas
from ptr_pipeline.filtering import (
    FilterSettings,
    dataset_problems,
    filter_consistent,
    lexical_similarity,
)

PROV = {
    "model": "m",
    "backend": "transformers",
    "sampling": "{}",
    "template": "t",
    "prompt_hash": "h",
    "code_version": "v",
}


def _refinements(progressions: dict[str, tuple[list[str], list[str]]]) -> pa.Table:
    """A strong_refinements table: every row carries its query and weak thoughts."""
    rows = [
        {"query_id": qid, "query": f"query {qid}", "thoughts": weak, "round": r + 1,
         "refinement": t, **PROV}
        for qid, (weak, strong) in progressions.items()
        for r, t in enumerate(strong)
    ]  # fmt: skip
    return pa.Table.from_pylist(rows, schema=schemas.STRONG_REFINEMENTS)


def test_lexical_similarity():
    assert lexical_similarity("the cat sat", "the cat sat") == 1.0
    assert lexical_similarity("the cat", "a dog") == 0.0
    assert lexical_similarity("a b c d", "a b") == pytest.approx(2 * (1.0 * 0.5) / 1.5)


def test_each_rule_drops_with_its_reason():
    refinements = _refinements(
        {
            "ok": (
                ["paris is the capital"],
                ["paris is the capital of france", "the capital of france is paris"],
            ),
            "empty": (["paris"], ["", "paris"]),
            "short": (["paris is big"], ["paris is big", "ok"]),
            "loop": (["go go go"], ["go go", "go go go go go go go go go go"]),
            "incoherent": (
                ["paris is the capital"],
                ["paris is the capital", "bananas grow on trees"],
            ),
            "unchanged": (["same words here"], ["same words here", "same words here"]),
        }
    )
    settings = FilterSettings(
        min_answer_chars=3, min_distinct_ratio=0.3, min_step_similarity=0.2, drop_unchanged=True
    )
    result = filter_consistent(refinements, settings)
    reasons = dict(
        zip(
            result.decisions.column("query_id").to_pylist(),
            result.decisions.column("drop_reason").to_pylist(),
            strict=True,
        )
    )
    assert reasons == {
        "ok": None,
        "empty": "empty_step",
        "short": "answer_too_short",
        "loop": "degenerate_answer",
        "incoherent": "incoherent_step",
        "unchanged": "unchanged_answer",
    }
    assert result.kept.column("query_id").to_pylist() == ["ok"]
    assert result.kept.column("thoughts").to_pylist() == [
        ["paris is the capital", "paris is the capital of france"]
    ]
    assert result.kept.column("answer").to_pylist() == ["the capital of france is paris"]
    assert result.drop_counts == {r: 1 for r in reasons.values() if r}
    assert result.stats["pass_rate"] == pytest.approx(1 / 6, abs=1e-4)
    assert result.stats["mean_chars_by_step"][1] > 0


def test_weak_only_thoughts_and_step_similarities():
    refinements = _refinements({"q": (["a b", "a b c"], ["a b c d", "a b c d e"])})
    result = filter_consistent(refinements, FilterSettings(include_strong_rounds=False))
    row = result.decisions.to_pylist()[0]
    assert row["thoughts"] == ["a b", "a b c"] and row["answer"] == "a b c d e"
    assert row["step_similarity"] == pytest.approx(
        [lexical_similarity("a b", "a b c"), lexical_similarity("a b c", "a b c d e")]
    )


def test_dataset_problems():
    good = pa.Table.from_pylist(
        [{"query_id": "1", "query": "q", "thoughts": ["t"], "answer": "a"}],
        schema=schemas.PTR_DATASET,
    )
    assert dataset_problems(good) == []
    assert dataset_problems(schemas.PTR_DATASET.empty_table()) == [
        "no rows survived the consistency filter"
    ]
    blank = pa.Table.from_pylist(
        [{"query_id": "1", "query": "q", "thoughts": [], "answer": " "}], schema=schemas.PTR_DATASET
    )
    assert dataset_problems(blank) == ["1 rows with an empty answer"]
    assert "missing column 'answer'" in dataset_problems(good.drop_columns(["answer"]))[0]
