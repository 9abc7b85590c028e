"""Query pool: cleaning, dedup, decontamination, seeded sampling, and clear errors on bad input."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ptr_pipeline import schemas
from ptr_pipeline.queries import QueryPoolSettings, build_query_pool, dedup_key
from ptr_pipeline.records import InputError


def _jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def test_bundled_pool_is_clean_and_sampled():
    table, dropped = build_query_pool(QueryPoolSettings(source="bundled", max_queries=10))
    schemas.validate(table, schemas.QUERY_POOL, "query_pool")
    assert table.num_rows == 10 and dropped["not_sampled"] > 0
    assert len(set(table.column("query_id").to_pylist())) == 10
    again, _ = build_query_pool(QueryPoolSettings(source="bundled", max_queries=10))
    assert again.equals(table)  # seeded
    other, _ = build_query_pool(QueryPoolSettings(source="bundled", max_queries=10, seed=1))
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
    table, dropped = build_query_pool(
        settings,
        eval_questions=["Ava buys 4 boxes with 3 pencils in each box and gives away 9 pencils."],
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
    table, dropped = build_query_pool(
        QueryPoolSettings(source=source, max_queries=None),
        eval_questions=["What is the capital of France?"],
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
        build_query_pool(QueryPoolSettings(source=source))


def test_invalid_json_line_names_row(tmp_path):
    (tmp_path / "q.jsonl").write_text('{"instruction": "ok query"}\n{"instruction": oops}\n')
    with pytest.raises(InputError, match=r"q.jsonl row 2: invalid JSON"):
        build_query_pool(QueryPoolSettings(source=str(tmp_path / "q.jsonl")))


def test_explicit_field_missing_and_missing_file(tmp_path):
    source = _jsonl(tmp_path / "q.jsonl", [{"question": "a question here"}])
    with pytest.raises(InputError, match=r"row 1: missing field 'text'"):
        build_query_pool(QueryPoolSettings(source=source, text_field="text"))
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
        table, _ = build_query_pool(QueryPoolSettings(source=str(source), max_queries=None))
        assert table.column("query").to_pylist() == [r["prompt"] for r in rows]


def test_ingests_wizardlm_sample(shared_data):
    source = shared_data / "queries" / "wizardlm_sample_1000.jsonl"
    table, dropped = build_query_pool(QueryPoolSettings(source=str(source), max_queries=None))
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
    table, dropped = build_query_pool(QueryPoolSettings(source=source, max_queries=None))
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
    table, dropped = build_query_pool(QueryPoolSettings(source=source, max_queries=None))
    assert table.column("query").to_pylist() == [
        "Summarize the following text in one sentence.\nCats sleep a lot.",
        "Summarize the following text in one sentence.\nDogs bark.",
        "Name a prime number.",
    ]
    assert dropped == {}
    ignored, _ = build_query_pool(
        QueryPoolSettings(source=source, max_queries=None, input_field=None)
    )
    assert ignored.num_rows == 2  # without the input the two summaries are one query


@pytest.mark.parametrize("content", [b"", b"\n\n   \n", b"\xef\xbb\xbf\r\n"])
def test_empty_or_blank_source_is_an_error_before_anything_is_written(tmp_path, content):
    (tmp_path / "q.jsonl").write_bytes(content)
    with pytest.raises(InputError, match=r"q\.jsonl: no records"):
        build_query_pool(QueryPoolSettings(source=str(tmp_path / "q.jsonl")))


def test_a_source_nothing_survives_is_an_error(tmp_path):
    source = _jsonl(tmp_path / "q.jsonl", [{"query": "hi"}, {"query": "yo"}])
    with pytest.raises(
        InputError,
        match=r"q\.jsonl: no query survives cleaning \(2 records; dropped \{'too_short': 2\}\)",
    ):
        build_query_pool(QueryPoolSettings(source=source))


def test_datasetdict_folder_reads_the_chosen_split(tmp_path):
    import datasets

    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list([{"instruction": "Explain tides to a child."}]),
            "test": datasets.Dataset.from_list([{"instruction": "Describe a volcano briefly."}]),
        }
    ).save_to_disk(str(tmp_path / "dd"))
    table, _ = build_query_pool(QueryPoolSettings(source=str(tmp_path / "dd"), split="train"))
    assert table.column("query").to_pylist() == ["Explain tides to a child."]
    assert table.column("source").to_pylist() == ["dd[train]:1"]
    with pytest.raises(InputError, match=r"dd: several splits \(test, train\)"):
        build_query_pool(QueryPoolSettings(source=str(tmp_path / "dd")))
    with pytest.raises(InputError, match=r"dd: no split 'validation'; its splits are test, train"):
        build_query_pool(QueryPoolSettings(source=str(tmp_path / "dd"), split="validation"))


def test_null_query_is_dropped_as_empty(tmp_path):
    source = _jsonl(tmp_path / "q.jsonl", [{"query": None}, {"query": "A real question here?"}])
    table, dropped = build_query_pool(QueryPoolSettings(source=source, max_queries=None))
    assert table.num_rows == 1 and dropped == {"empty": 1}


def test_punctuation_tells_queries_apart(tmp_path):
    texts = ["What is 12+7?", "What is 12-7?", "What is 12*7?", "Compare C++ and C#.",
             "Compare C and C.", "Solve x >= 3.", "Solve x <= 3."]  # fmt: skip
    source = _jsonl(tmp_path / "q.jsonl", [{"query": t} for t in texts])
    table, dropped = build_query_pool(
        QueryPoolSettings(source=source, max_queries=None, min_chars=5)
    )
    assert table.column("query").to_pylist() == texts and dropped == {}
