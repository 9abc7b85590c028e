"""The dataset stage beyond the filter: SFT pairs mixed in, and the Hugging Face export."""

import json

import datasets
import pyarrow as pa
import pytest

from ptr_pipeline import schemas
from ptr_pipeline.conversation import GENERIC_REFINE_TURN
from ptr_pipeline.filtering import FilterSettings
from ptr_pipeline.filtering.export import export_dataset
from ptr_pipeline.filtering.mix import mix_sft, read_sft_pairs
from ptr_pipeline.records import InputError


def _ptr_rows(n: int) -> pa.Table:
    rows = [
        {"query_id": f"q{i}", "query": f"What is {i} + {i}?", "thoughts": [f"maybe {i}"],
         "answer": f"The answer is {2 * i}.", "origin": "ptr", "refine_turn": GENERIC_REFINE_TURN}
        for i in range(n)
    ]  # fmt: skip
    return pa.Table.from_pylist(rows, schema=schemas.PTR_DATASET)


def _jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_sft_pairs_are_read_in_every_common_shape(tmp_path):
    wizard = _jsonl(tmp_path / "wizard.jsonl", [
        {"question": "Write a haiku about rain.", "output": "Rain taps the window."},
        {"question": "  ", "output": "skipped: no question"},
    ])  # fmt: skip
    alpaca = _jsonl(tmp_path / "alpaca.jsonl", [
        {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},
        {"instruction": "Name a prime.", "input": "", "output": "7"},
    ])  # fmt: skip
    assert [(r["query"], r["answer"]) for r in read_sft_pairs(wizard, None, "auto", "auto")] == [
        ("Write a haiku about rain.", "Rain taps the window.")
    ]
    pairs = read_sft_pairs(alpaca, None, "auto", "auto")
    assert [r["query"] for r in pairs] == ["Translate to French.\nGood morning", "Name a prime."]
    assert all(r["thoughts"] == [] and r["origin"] == "sft" for r in pairs)
    broken = _jsonl(tmp_path / "broken.jsonl", [{"question": "q?", "text": "no output field"}])
    with pytest.raises(InputError, match=r"broken.jsonl row 1: no answer field .*found question"):
        read_sft_pairs(broken, None, "auto", "auto")


def test_sft_fraction_is_the_share_of_the_result_and_the_draw_is_seeded(tmp_path):
    pairs = [
        {"query_id": f"sft-{i}", "query": f"Pair {i}?", "thoughts": [], "answer": f"Answer {i}.",
         "origin": "sft", "refine_turn": GENERIC_REFINE_TURN}
        for i in range(20)
    ]  # fmt: skip
    mixed, info = mix_sft(_ptr_rows(12), pairs, fraction=0.25, seed=0)
    origins = mixed.column("origin").to_pylist()
    assert origins.count("ptr") == 12 and origins.count("sft") == 4  # 4 / 16 = 0.25
    assert info == {"sft_fraction": 0.25, "rows": {"ptr": 12, "sft": 4},
                    "sft_pairs_available": 20, "seed": 0}  # fmt: skip
    assert mix_sft(_ptr_rows(12), pairs, 0.25, seed=0)[0].equals(mixed)
    assert not mix_sft(_ptr_rows(12), pairs, 0.25, seed=1)[0].equals(mixed)
    with pytest.raises(InputError, match="needs 36 SFT pairs; sft_source has 20"):
        mix_sft(_ptr_rows(12), pairs, fraction=0.75, seed=0)
    with pytest.raises(ValueError, match="needs both sft_source and sft_fraction"):
        FilterSettings(sft_fraction=0.1)


def test_export_reads_back_with_its_card(tmp_path):
    table = _ptr_rows(3)
    folder = export_dataset(table, tmp_path / "hf", {"models": {"weak": "w", "strong": ["s"]}})
    assert datasets.load_from_disk(str(folder)).to_list() == table.to_pylist()
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\n") and "license: unknown" in card
    assert "size_categories:\n- n<1K" in card and '"weak": "w"' in card
    assert "3 PTR progressions and 0\n  SFT pairs" in card
    with pytest.raises(schemas.SchemaError, match="missing column 'origin'"):
        export_dataset(table.drop_columns(["origin"]), tmp_path / "bad", {})
