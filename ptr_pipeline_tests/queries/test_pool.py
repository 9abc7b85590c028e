"""Query pool: cleaning, dedup, decontamination, seeded sampling, and clear errors on bad input."""

import itertools
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ptr_pipeline import schemas
from ptr_pipeline.queries import PoolResult, QueryPoolSettings, build_query_pool, dedup_key
from ptr_pipeline.records import InputError

_OUTPUTS = itertools.count()


def _jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def eval_items(questions: list[str], task: str = "eval") -> pa.Table:
    """Eval items as the eval_sets asset has them (the columns the pool reads)."""
    return pa.table(
        {
            "task": [task] * len(questions),
            "example_id": [f"{task}-{i}" for i in range(len(questions))],
            "question": questions,
        }
    )


def pool(settings, tmp_path, questions=None, items=None) -> tuple[pa.Table, dict[str, int]]:
    """Build the pool into a fresh file under tmp_path; its table and drop counts."""
    result = build_query_pool_result(settings, tmp_path, questions, items)
    return pq.read_table(result.path), result.dropped


def build_query_pool_result(settings, tmp_path, questions=None, items=None) -> PoolResult:
    if questions is not None:
        items = eval_items(questions)
    output = tmp_path / "pools" / f"pool-{next(_OUTPUTS)}.parquet"
    return build_query_pool(settings, output, items, work_dir=tmp_path / "work")


def test_bundled_pool_is_clean_and_sampled(tmp_path):
    table, dropped = pool(QueryPoolSettings(source="bundled", max_queries=10), tmp_path)
    schemas.validate(table, schemas.QUERY_POOL, "query_pool")
    assert table.num_rows == 10 and dropped["not_sampled"] > 0
    assert len(set(table.column("query_id").to_pylist())) == 10
    again, _ = pool(QueryPoolSettings(source="bundled", max_queries=10), tmp_path)
    assert again.equals(table)  # seeded
    other, _ = pool(QueryPoolSettings(source="bundled", max_queries=10, seed=1), tmp_path)
    assert not other.equals(table)


def test_cleaning_dedup_and_decontamination(tmp_path):
    source = _jsonl(
        tmp_path / "q.jsonl",
        [
            {"instruction": "Explain gravity to a child."},
            {"instruction": "  explain GRAVITY  to a child.  "},  # duplicate after normalisation
            {"instruction": "   "},  # empty
            {"instruction": "Hi"},  # too short
            {"instruction": "Please solve: Ava buys 4 boxes with 3 pencils in each box and more."},
            {"instruction": "Write a haiku about rain."},
        ],
    )
    settings = QueryPoolSettings(source=source, max_queries=None, min_chars=5)
    table, dropped = pool(
        settings,
        tmp_path,
        ["Ava buys 4 boxes with 3 pencils in each box and gives away 9 pencils."],
    )
    assert table.column("query").to_pylist() == [
        "Explain gravity to a child.",
        "Write a haiku about rain.",
    ]
    assert table.column("source").to_pylist() == ["q.jsonl:1", "q.jsonl:6"]
    assert dropped == {"duplicate": 1, "empty": 1, "too_short": 1, "contaminated": 1}


def test_short_eval_question_inside_a_query_is_contamination(tmp_path):
    source = _jsonl(
        tmp_path / "q.jsonl",
        [{"query": "Quiz time! What is the capital of France? Answer fast."},
         {"query": "What is the capital city of Peru?"}],
    )  # fmt: skip
    table, dropped = pool(
        QueryPoolSettings(source=source, max_queries=None),
        tmp_path,
        ["What is the capital of France?"],
    )
    assert table.num_rows == 1 and dropped == {"contaminated": 1}


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([{"instruction": "fine query"}, {"prompt_text": "x"}], "q.jsonl row 2: no query field"),
        (
            [{"instruction": "fine query"}, {"instruction": 42}],
            "q.jsonl row 2 field 'instruction': expected a string, got int",
        ),
    ],
)
def test_bad_rows_name_file_row_and_field(tmp_path, records, message):
    source = _jsonl(tmp_path / "q.jsonl", records)
    with pytest.raises(InputError, match=message):
        pool(QueryPoolSettings(source=source), tmp_path)


def test_invalid_json_line_names_row(tmp_path):
    (tmp_path / "q.jsonl").write_text('{"instruction": "ok query"}\n{"instruction": oops}\n')
    with pytest.raises(InputError, match=r"q.jsonl row 2: invalid JSON"):
        pool(QueryPoolSettings(source=str(tmp_path / "q.jsonl")), tmp_path)


def test_explicit_field_missing_and_missing_file(tmp_path):
    source = _jsonl(tmp_path / "q.jsonl", [{"question": "a question here"}])
    with pytest.raises(InputError, match=r"row 1: missing field 'text'"):
        pool(QueryPoolSettings(source=source, text_field="text"), tmp_path)
    with pytest.raises(ValueError, match=r"nope\.jsonl: not found"):  # refused by the settings
        QueryPoolSettings(source=str(tmp_path / "nope.jsonl"))
    with pytest.raises(ValueError, match=r"min_chars 50 > max_chars 10"):
        QueryPoolSettings(min_chars=50, max_chars=10)


def test_parquet_and_hf_dataset_sources(tmp_path):
    import datasets

    rows = [{"prompt": "Describe a sunset in detail."}, {"prompt": "Name three prime numbers."}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "q.parquet")
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "hf"))
    for source in (tmp_path / "q.parquet", tmp_path / "hf"):
        table, _ = pool(QueryPoolSettings(source=str(source), max_queries=None), tmp_path)
        assert table.column("query").to_pylist() == [r["prompt"] for r in rows]


def test_ingests_wizardlm_sample(shared_data, tmp_path):
    source = shared_data / "queries" / "wizardlm_sample_1000.jsonl"
    table, dropped = pool(QueryPoolSettings(source=str(source), max_queries=None), tmp_path)
    assert table.num_rows + sum(dropped.values()) == 1000
    assert table.num_rows > 900
    assert all(len(q) >= 8 for q in table.column("query").to_pylist())


def test_unicode_forms_case_and_spacing_are_one_query(tmp_path):
    composed, decomposed = "café in Zürich", "cafe\u0301 in Zu\u0308rich"
    assert composed != decomposed and dedup_key(composed) == dedup_key(decomposed)
    source = _jsonl(
        tmp_path / "q.jsonl",
        [{"query": f"Tell me about {composed}."}, {"query": f"TELL me  about {decomposed}."},
         {"query": "\uff34\uff45\uff4c\uff4c \uff4d\uff45 about café in Zürich."}],  # fullwidth: NFKC folds
    )  # fmt: skip
    table, dropped = pool(QueryPoolSettings(source=source, max_queries=None), tmp_path)
    assert table.num_rows == 1 and dropped == {"duplicate": 2}


def test_alpaca_input_is_joined_to_the_instruction(tmp_path):
    source = _jsonl(
        tmp_path / "alpaca.jsonl",
        [
            {"instruction": "Summarize the following text in one sentence.", "input": "Cats sleep a lot.", "output": "x"},
            {"instruction": "Summarize the following text in one sentence.", "input": "Dogs bark.", "output": "y"},
            {"instruction": "Name a prime number.", "input": "", "output": "2"},
        ],
    )  # fmt: skip
    table, dropped = pool(QueryPoolSettings(source=source, max_queries=None), tmp_path)
    assert table.column("query").to_pylist() == [
        "Summarize the following text in one sentence.\nCats sleep a lot.",
        "Summarize the following text in one sentence.\nDogs bark.",
        "Name a prime number.",
    ]
    assert dropped == {}
    ignored, _ = pool(
        QueryPoolSettings(source=source, max_queries=None, input_field=None), tmp_path
    )
    assert ignored.num_rows == 2  # without the input the two summaries are one query


@pytest.mark.parametrize("content", [b"", b"\n\n   \n", b"\xef\xbb\xbf\r\n"])
def test_empty_or_blank_source_is_an_error_before_anything_is_written(tmp_path, content):
    (tmp_path / "q.jsonl").write_bytes(content)
    with pytest.raises(InputError, match=r"q\.jsonl: no records"):
        pool(QueryPoolSettings(source=str(tmp_path / "q.jsonl")), tmp_path)
    assert not (tmp_path / "pools").exists()  # no output, not even a temp file
    assert list((tmp_path / "work").iterdir()) == []  # the scratch folder is removed


def test_a_source_nothing_survives_is_an_error(tmp_path):
    source = _jsonl(tmp_path / "q.jsonl", [{"query": "hi"}, {"query": "yo"}])
    with pytest.raises(
        InputError,
        match=r"q\.jsonl: no query survives cleaning \(2 records; dropped \{'too_short': 2\}\)",
    ):
        pool(QueryPoolSettings(source=source), tmp_path)


def test_datasetdict_folder_reads_the_chosen_split(tmp_path):
    import datasets

    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list([{"instruction": "Explain tides to a child."}]),
            "test": datasets.Dataset.from_list([{"instruction": "Describe a volcano briefly."}]),
        }
    ).save_to_disk(str(tmp_path / "dd"))
    table, _ = pool(QueryPoolSettings(source=str(tmp_path / "dd"), split="train"), tmp_path)
    assert table.column("query").to_pylist() == ["Explain tides to a child."]
    assert table.column("source").to_pylist() == ["dd[train]:1"]
    with pytest.raises(InputError, match=r"dd: several splits \(test, train\)"):
        pool(QueryPoolSettings(source=str(tmp_path / "dd")), tmp_path)
    with pytest.raises(InputError, match=r"dd: no split 'validation'; its splits are test, train"):
        pool(QueryPoolSettings(source=str(tmp_path / "dd"), split="validation"), tmp_path)


def test_null_query_is_dropped_as_empty(tmp_path):
    source = _jsonl(tmp_path / "q.jsonl", [{"query": None}, {"query": "A real question here?"}])
    table, dropped = pool(QueryPoolSettings(source=source, max_queries=None), tmp_path)
    assert table.num_rows == 1 and dropped == {"empty": 1}


def test_punctuation_tells_queries_apart(tmp_path):
    texts = ["What is 12+7?", "What is 12-7?", "What is 12*7?", "Compare C++ and C#.",
             "Compare C and C.", "Solve x >= 3.", "Solve x <= 3."]  # fmt: skip
    source = _jsonl(tmp_path / "q.jsonl", [{"query": t} for t in texts])
    table, dropped = pool(QueryPoolSettings(source=source, max_queries=None, min_chars=5), tmp_path)
    assert table.column("query").to_pylist() == texts and dropped == {}


def _corpus(path, rows: int, seed: int = 0) -> tuple[list[str], dict[str, int]]:
    """A JSON Lines file of ``rows`` queries: originals of 30-45 random words, and, after their
    original, exact copies (other case and spacing) and near copies (one word appended, Jaccard
    about 0.95). Returns the originals in file order and the copies per kind."""
    import random

    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "de", "po", "li", "an", "or"]
    vocabulary = sorted({"".join(rng.choices(syllables, k=rng.randint(2, 4))) for _ in range(3000)})
    originals: list[str] = []
    copies = {"duplicate": 0, "near_duplicate": 0}
    with path.open("w") as f:
        for _ in range(rows):
            kind = rng.random()
            if originals and kind < 0.1:
                text = "  " + rng.choice(originals).upper().replace(" ", "  ")
                copies["duplicate"] += 1
            elif originals and kind < 0.2:
                text = f"{rng.choice(originals)} {rng.choice(vocabulary)}"
                copies["near_duplicate"] += 1
            else:
                text = " ".join(rng.choices(vocabulary, k=rng.randint(30, 45))).capitalize() + "."
                originals.append(text)
            f.write(json.dumps({"instruction": text}) + "\n")
    return originals, copies


@pytest.mark.slow
def test_a_large_file_is_pooled_in_bounded_memory_with_the_expected_outcome(tmp_path):
    """50,000 rows: every exact and near copy goes, the originals stay in order, and the build's
    Python peak memory (tracemalloc: Python objects and numpy arrays; measured 2.0 MiB) stays a
    fraction of the 15 MiB input: rows are streamed in batches, never all held (the code before
    streaming peaked at several times the input)."""
    import tracemalloc

    import numpy as np

    source = tmp_path / "big.jsonl"
    originals, copies = _corpus(source, 50_000)
    assert len(originals) > 39_000 and min(copies.values()) > 4_500
    size = source.stat().st_size
    settings = QueryPoolSettings(source=str(source), max_queries=None)
    warm = _jsonl(
        tmp_path / "warm.jsonl", [{"query": "a first query to import what pyarrow loads"}]
    )
    build_query_pool_result(QueryPoolSettings(source=warm), tmp_path)  # one-off imports
    tracemalloc.start()
    try:
        result = build_query_pool_result(settings, tmp_path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert pq.read_table(result.path).column("query").to_pylist() == originals
    assert result.dropped == copies and result.records == 50_000 and result.duplicate_ids == 0
    assert peak < size / 5, f"peak {peak / 2**20:.1f} MiB for a {size / 2**20:.1f} MiB file"
    assert list((tmp_path / "work").iterdir()) == []  # the scratch folder is gone

    sampled = build_query_pool_result(settings.model_copy(update={"max_queries": 10_000}), tmp_path)
    chosen = np.sort(np.random.default_rng(0).choice(len(originals), 10_000, replace=False))
    assert pq.read_table(sampled.path).column("query").to_pylist() == [originals[i] for i in chosen]
    assert sampled.dropped["not_sampled"] == len(originals) - 10_000


def test_the_contamination_report_names_task_ngram_and_eval_item(tmp_path):
    story = "Ava buys 4 boxes with 3 pencils in each box and gives away 9 pencils."
    items = pa.concat_tables(
        [eval_items([story], "gsm8k"), eval_items(["What is the capital of France?"], "trivia")]
    )
    long_query = "Please solve: Ava buys 4 boxes with 3 pencils in each box and more. " + (
        "Show every step of the work. " * 8
    )
    texts = [
        long_query,
        "Quiz time! What is the capital of France? Answer fast.",
        "Write a haiku about rain.",
        "What is the capital of France? Ava buys 4 boxes with 3 pencils in each box, right?",
        "What is the capital city of Peru?",
    ]
    source = _jsonl(tmp_path / "q.jsonl", [{"query": t} for t in texts])
    result = build_query_pool_result(
        QueryPoolSettings(source=source, max_queries=None), tmp_path, items=items
    )
    assert result.cleaned == 5 and result.dropped == {"contaminated": 3}
    assert pq.read_table(result.path).column("query").to_pylist() == [texts[2], texts[4]]
    gsm8k, trivia = result.contamination["gsm8k"], result.contamination["trivia"]
    assert gsm8k["eval_items"] == 1 and gsm8k["matched_queries"] == 2 and gsm8k["share"] == 0.4
    assert gsm8k["top_ngrams"] == {"ava buys 4 boxes with 3 pencils in": 2}  # the first 8-gram
    assert gsm8k["examples"][0] == {
        "query": long_query[:199] + "…",  # cut to 200 characters
        "ngram": "ava buys 4 boxes with 3 pencils in",
        "eval_item": "gsm8k-0",
    }
    assert trivia["matched_queries"] == 2 and trivia["share"] == 0.4  # a query can match both
    assert trivia["top_ngrams"] == {"what is the capital of france": 2}  # the whole short question
    assert [e["eval_item"] for e in trivia["examples"]] == ["trivia-0", "trivia-0"]

    # Off, the same matches are reported and the queries kept.
    kept = build_query_pool_result(
        QueryPoolSettings(source=source, max_queries=None, decontaminate=False),
        tmp_path,
        items=items,
    )
    assert kept.rows == 5 and kept.dropped == {}
    assert kept.contamination == result.contamination
