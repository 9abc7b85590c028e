"""The one reader: every format and layout users have, and errors that name file, row and field."""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ptr_pipeline.records import InputError, read_records

ROWS = [{"q": "first question"}, {"q": "second \u2028 question"}, {"q": "third"}]


def _texts(source, **kwargs) -> list[str]:
    return [r.fields["q"] for r in read_records(source, **kwargs)]


def test_jsonl_with_bom_crlf_blank_lines_and_u2028(tmp_path):
    body = "\r\n".join(json.dumps(r, ensure_ascii=False) for r in ROWS) + "\r\n\r\n\n"
    path = tmp_path / "q.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + body.encode())
    records = read_records(path)
    assert [r.fields["q"] for r in records] == [r["q"] for r in ROWS]  # U+2028 stays inside
    assert [r.row for r in records] == [1, 2, 3]


def test_json_array_and_json_lines_under_a_json_name(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(ROWS, ensure_ascii=False))
    (tmp_path / "l.json").write_text("\n".join(json.dumps(r) for r in ROWS))
    assert _texts(tmp_path / "a.json") == _texts(tmp_path / "l.json") == [r["q"] for r in ROWS]


def test_parquet_csv_and_gzip(tmp_path):
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "q.parquet")
    (tmp_path / "q.csv").write_text('q\n"first question"\n"second \u2028 question"\nthird\n')
    (tmp_path / "q.jsonl.gz").write_bytes(
        gzip.compress("".join(json.dumps(r) + "\n" for r in ROWS).encode())
    )
    (tmp_path / "q.ndjson").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (tmp_path / "q.parquet.gz").write_bytes(gzip.compress((tmp_path / "q.parquet").read_bytes()))
    expected = [r["q"] for r in ROWS]
    for name in ("q.parquet", "q.csv", "q.jsonl.gz", "q.ndjson", "q.parquet.gz"):
        assert _texts(tmp_path / name) == expected, name
    named = read_records(tmp_path / "q.csv", csv_columns=["q"])  # a header equal to them is skipped
    assert named[0].fields["q"] == "first question" and named[0].row == 2


def test_hub_folder_layout_picks_the_split(tmp_path):
    data = tmp_path / "gsm8k" / "main"
    data.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(ROWS[:2]), data / "test-00000-of-00001.parquet")
    pq.write_table(pa.Table.from_pylist(ROWS[2:]), data / "train-00000-of-00001.parquet")
    assert _texts(tmp_path / "gsm8k", split="test") == [r["q"] for r in ROWS[:2]]
    with pytest.raises(InputError, match=r"gsm8k: several splits \(test, train\)"):
        read_records(tmp_path / "gsm8k")
    with pytest.raises(InputError, match=r"no split 'dev'; its splits are test, train"):
        read_records(tmp_path / "gsm8k", split="dev")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"q\.jsonl: no records"),
        (b"\n  \n\r\n", r"q\.jsonl: no records"),
        (b'{"q": "ok"}\n{"q": "caf\xe9"}\n', r"q\.jsonl row 2: not valid UTF-8 \(byte 0xe9\)"),
        (b'{"q": "ok"}\n{"q": oops}\n', r"q\.jsonl row 2: invalid JSON"),
        (b'{"q": "ok"}\n[1, 2]\n', r"q\.jsonl row 2: expected a JSON object, got list"),
    ],
)
def test_bad_files_name_file_and_row(tmp_path, content, message):
    (tmp_path / "q.jsonl").write_bytes(content)
    with pytest.raises(InputError, match=message):
        read_records(tmp_path / "q.jsonl")


def test_non_utf8_json_array_names_the_line(tmp_path):
    (tmp_path / "q.json").write_bytes(b'[\n{"q": "ok"},\n{"q": "\xff"}\n]')
    with pytest.raises(InputError, match=r"q\.json row 3: not valid UTF-8"):
        read_records(tmp_path / "q.json")


def test_typed_fields_name_the_field(tmp_path):
    (tmp_path / "q.jsonl").write_text('{"q": 12}\n')
    record = read_records(tmp_path / "q.jsonl")[0]
    with pytest.raises(InputError, match=r"q\.jsonl row 1 field 'q': expected a string, got int"):
        record.text("q")
    with pytest.raises(InputError, match=r"q\.jsonl row 1: missing field 'answer' \(found q\)"):
        record.text("answer")


def test_missing_source_unsupported_format_and_empty_folder(tmp_path):
    with pytest.raises(InputError, match=r"nope\.jsonl: not found"):
        read_records(tmp_path / "nope.jsonl")
    (tmp_path / "q.txt").write_text("hello")
    with pytest.raises(InputError, match=r"q\.txt: unsupported format '\.txt'"):
        read_records(tmp_path / "q.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"empty: a folder with no data files"):
        read_records(tmp_path / "empty")


def test_configs_of_a_hub_dataset_are_never_merged(tmp_path):
    """cais/mmlu ships all/ and one folder per subject: reading both would count items twice."""
    for config in ("all", "abstract_algebra"):
        (tmp_path / "mmlu" / config).mkdir(parents=True)
        pq.write_table(
            pa.Table.from_pylist(ROWS), tmp_path / "mmlu" / config / "test-00000-of-00001.parquet"
        )
    with pytest.raises(InputError, match=r"split 'test' is in 2 folders \(abstract_algebra, all\)"):
        read_records(tmp_path / "mmlu", split="test")
    assert _texts(tmp_path / "mmlu" / "all", split="test") == [r["q"] for r in ROWS]
    shards = tmp_path / "sharded"
    shards.mkdir()
    for i in range(2):  # one split in several shards of one folder is one split
        pq.write_table(pa.Table.from_pylist(ROWS), shards / f"train-0000{i}-of-00002.parquet")
    assert len(read_records(shards)) == 2 * len(ROWS)


def test_damaged_or_empty_saved_datasets_are_named(tmp_path):
    import datasets

    datasets.DatasetDict({}).save_to_disk(str(tmp_path / "empty_dict"))
    with pytest.raises(InputError, match=r"empty_dict: "):
        read_records(tmp_path / "empty_dict")
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(
        str(tmp_path / "dd")
    )
    (tmp_path / "dd" / "dataset_dict.json").write_text("{broken")
    with pytest.raises(InputError, match=r"dd: not a readable save_to_disk dataset"):
        read_records(tmp_path / "dd")
    empty = datasets.Dataset.from_list([{"q": "x"}]).select([])
    empty.save_to_disk(str(tmp_path / "empty"))
    with pytest.raises(InputError, match=r"empty: (no records|not a readable)"):
        read_records(tmp_path / "empty")


def test_csv_and_gzip_edge_cases_name_the_file(tmp_path):
    long = "x" * 200_000
    (tmp_path / "long.csv").write_text(f'q\n"{long}"\n')
    assert (
        read_records(tmp_path / "long.csv")[0].fields["q"] == long
    )  # beyond csv's 128 KiB default
    (tmp_path / "dup.csv").write_text("q,q\na,b\n")
    with pytest.raises(InputError, match=r"dup\.csv row 1: duplicate column name\(s\) \['q'\]"):
        read_records(tmp_path / "dup.csv")
    (tmp_path / "multi.csv").write_text('q,n\n"two\nlines",1\n"bad",1,2\n')
    with pytest.raises(InputError, match=r"multi\.csv row 4: 3 columns, expected 2"):
        read_records(tmp_path / "multi.csv")  # the physical line, after a two-line cell
    (tmp_path / "bad.jsonl.gz").write_bytes(gzip.compress(b'{"q": "x"}\n')[:12] + b"garbage" * 5)
    with pytest.raises(InputError, match=r"bad\.jsonl\.gz: not a readable gzip file"):
        read_records(tmp_path / "bad.jsonl.gz")
    headed = tmp_path / "mmlu_dev.csv"
    headed.write_text("question,A,B,C,D,answer\nQ?,a,b,c,d,B\n")
    rows = read_records(headed, csv_columns=["question", "A", "B", "C", "D", "answer"])
    assert [r.fields["answer"] for r in rows] == ["B"]  # the header row is not an item


def test_a_datasetdict_split_loads_even_when_another_split_is_empty(tmp_path):
    import datasets

    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(ROWS),
            "test": datasets.Dataset.from_list(ROWS).select([]),
        }
    ).save_to_disk(str(tmp_path / "dd"))
    assert _texts(tmp_path / "dd", split="train") == [r["q"] for r in ROWS]


@pytest.mark.parametrize("name", ["big.jsonl", "big.jsonl.gz", "big.csv", "big.csv.gz", "big.json"])
def test_text_files_are_streamed_not_read_whole(tmp_path, name):
    """Iterating a 6 MB file allocates far less than the file: it is read a line at a time."""
    import tracemalloc

    from ptr_pipeline.records import iter_records

    texts = [f"query number {i} " + "lorem ipsum " * 8 for i in range(60_000)]
    if ".csv" in name:
        body = "q\n" + "".join(f'"{t}"\n' for t in texts)
    else:  # JSON Lines under a .json name are streamed too
        body = "".join(json.dumps({"q": t}) + "\n" for t in texts)
    data = body.encode()
    assert len(data) > 6_000_000
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    tracemalloc.start()
    try:
        count = sum(1 for _ in iter_records(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == len(texts)
    assert peak < 1_000_000, f"peak {peak} bytes while reading a {len(data)}-byte file"


def test_streamed_formats_keep_bom_crlf_rows_and_name_bad_lines(tmp_path):
    body = "\r\n".join(json.dumps(r, ensure_ascii=False) for r in ROWS) + "\r\n\r\n"
    (tmp_path / "q.jsonl.gz").write_bytes(gzip.compress(b"\xef\xbb\xbf" + body.encode()))
    records = read_records(tmp_path / "q.jsonl.gz")
    assert [r.fields["q"] for r in records] == [r["q"] for r in ROWS]
    assert [r.row for r in records] == [1, 2, 3]
    (tmp_path / "q.csv").write_bytes(b"\xef\xbb\xbfq\r\nfine\r\nalso fine\r\ncaf\xe9\r\n")
    with pytest.raises(InputError, match=r"q\.csv row 4: not valid UTF-8 \(byte 0xe9\)"):
        read_records(tmp_path / "q.csv")
    (tmp_path / "q.csv").write_bytes(b"\xef\xbb\xbfq\r\nfine\r\n")
    assert [(r.fields, r.row) for r in read_records(tmp_path / "q.csv")] == [({"q": "fine"}, 2)]
    (tmp_path / "pretty.json").write_text(json.dumps({"q": "one object"}, indent=2))
    assert _texts(tmp_path / "pretty.json") == ["one object"]
    (tmp_path / "bad.json").write_text('{"q": "ok"}\n{"q": oops}\n')
    with pytest.raises(InputError, match=r"bad\.json row 2: invalid JSON"):
        read_records(tmp_path / "bad.json")
    (tmp_path / "trunc.jsonl.gz").write_bytes(gzip.compress(body.encode() * 50)[:-20])
    with pytest.raises(InputError, match=r"trunc\.jsonl\.gz: not a readable gzip file"):
        read_records(tmp_path / "trunc.jsonl.gz")
