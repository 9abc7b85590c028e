"""One reader for every input file the pipeline accepts: query corpora and eval sets.

Sources, as users have them:

- a file: JSON Lines (``.jsonl``, ``.ndjson``), JSON (``.json``: an array of objects, or JSON Lines under a
  ``.json`` name, as the Hugging Face hub often ships them), Parquet (``.parquet``), CSV
  (``.csv``, with a header unless ``csv_columns`` names the columns); any of them gzip-compressed
  (``.jsonl.gz``...);
- a folder written by ``datasets``' ``save_to_disk`` (a ``Dataset``, or a ``DatasetDict`` of which
  one split is read);
- a folder of data files in the hub's layouts (``data/test-00000-of-00001.parquet``,
  ``train.jsonl``, ``test/*.csv``, ``abstract_algebra_dev.csv``): one split is read;
- ``hf:<name>[:<split>]`` or ``hf:<name>:<config>:<split>``: ``datasets.load_dataset`` from the
  local Hugging Face cache.

Text is UTF-8 with or without a byte-order mark; lines end in LF or CRLF; JSON Lines are split on
"\\n" only, so a raw U+2028 inside a JSON string stays inside its record. Every record carries the
file and row it came from, and every error (``InputError``) names them, and the field when one is
at fault. A source that yields no record is an error naming it.

Files are streamed, never read whole into memory: JSON Lines line by line from a file handle,
CSV through ``csv.reader`` on a text handle, Parquet batch by batch, gzip decompressed as it is
read. Two exceptions: a ``.json`` file holding one JSON array (or one pretty-printed object) is
parsed whole (JSON Lines under a ``.json`` name are streamed), and a ``.parquet.gz`` is
decompressed whole (Parquet needs random access).

Parsing is delegated to well-kept libraries: ``json``, ``csv`` and ``gzip`` from the standard
library, ``pyarrow.parquet`` for Parquet, ``datasets`` for ``save_to_disk`` folders and the hub cache.
"""

import csv
import gzip
import io
import itertools
import json
import re
import sys
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

SUFFIXES = (".jsonl", ".ndjson", ".json", ".parquet", ".csv")
KNOWN_SPLITS = ("train", "test", "validation", "val", "dev", "auxiliary_train")
_SHARD = re.compile(r"^(?P<split>.+?)-\d{5}-of-\d{5}$")  # the hub's test-00000-of-00001


class InputError(ValueError):
    """Bad input data; the message names the file, the row and, when one is at fault, the field."""


@dataclass(frozen=True)
class Record:
    """One input row: its fields, and where it came from (for error messages)."""

    fields: dict[str, Any]
    file: str  # the file (or folder, or hf: name) it was read from
    row: int  # 1-based: the line in text formats, the record index otherwise

    @property
    def where(self) -> str:
        return f"{self.file} row {self.row}"

    def error(self, message: str, field: str | None = None) -> InputError:
        at = f"{self.where} field {field!r}" if field else self.where
        return InputError(f"{at}: {message}")

    def has(self, name: str) -> bool:
        return name in self.fields and self.fields[name] is not None

    def get(self, name: str, default: Any = None) -> Any:
        return self.fields.get(name, default)

    def require(self, name: str) -> Any:
        """The value of field ``name``. Raises InputError when it is missing or null."""
        if name not in self.fields:
            found = ", ".join(sorted(self.fields)) or "none"
            raise self.error(f"missing field {name!r} (found {found})")
        if self.fields[name] is None:
            raise self.error("is null", name)
        return self.fields[name]

    def text(self, name: str) -> str:
        """The string value of field ``name``. Raises InputError when missing or not a string."""
        value = self.require(name)
        if not isinstance(value, str):
            raise self.error(f"expected a string, got {type(value).__name__}", name)
        return value


def read_records(
    source: str | Path,
    split: str | None = None,
    csv_columns: list[str] | None = None,
    merge_folders: bool = False,
) -> list[Record]:
    """Every record of ``source`` (see the module docstring for what a source can be).

    Args:
        source: a file, a folder, or ``hf:<name>[:<split>]``.
        split: which split of a folder or DatasetDict to read; None reads the only split there
            is (an error lists the splits when there are several). Ignored for a single file.
        csv_columns: column names for CSV files without a header row (MMLU's original release).
        merge_folders: a split found in several config folders of a folder source is read from
            all of them (ARC's ARC-Easy/ and ARC-Challenge/, scored together as the paper does);
            without it that is an error, since most datasets' configs overlap (cais/mmlu's all/).

    Raises:
        InputError: the source is missing, unreadable, malformed, or holds no record; the
            message names the file and row.
    """
    records = list(iter_records(source, split, csv_columns, merge_folders))
    if not records:
        raise no_records_error(source)
    return records


def no_records_error(source: str | Path) -> InputError:
    """The error for a source that yields no record."""
    return InputError(f"{source}: no records (the source is empty or holds only blank lines)")


def iter_records(
    source: str | Path,
    split: str | None = None,
    csv_columns: list[str] | None = None,
    merge_folders: bool = False,
) -> Iterator[Record]:
    """Like ``read_records``, one record at a time (streamed: see the module docstring) and
    without the emptiness check (``no_records_error`` is the error to raise)."""
    text = str(source)
    if text.startswith("hf:"):
        yield from _hub(text, split)
        return
    path = Path(source)
    if not path.exists():
        raise InputError(f"{path}: not found")
    if path.is_dir():
        yield from _folder(path, split, csv_columns, merge_folders)
    else:
        yield from _file(path, csv_columns)


# --- files


def _data_suffix(path: Path) -> str:
    """The format suffix of a data file, looking through a trailing ``.gz``."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def _file(path: Path, csv_columns: list[str] | None) -> Iterator[Record]:
    suffix = _data_suffix(path)
    if suffix not in SUFFIXES:
        raise InputError(
            f"{path}: unsupported format {suffix or path.name!r}; "
            f"use {', '.join(SUFFIXES)} (optionally .gz), or a folder"
        )
    gz = path.suffix.lower() == ".gz"
    if suffix == ".parquet":
        # Parquet needs random access: a .parquet.gz is decompressed whole into memory.
        yield from _parquet(pa.BufferReader(_read_all(path, gz)) if gz else path, path)
    elif suffix in (".jsonl", ".ndjson"):
        yield from _json_lines(path, _lines(path, gz))
    elif suffix == ".json":
        yield from _json(path, gz)
    else:
        yield from _csv(path, gz, csv_columns)


def _open(path: Path, gz: bool) -> BinaryIO:
    return gzip.open(path, "rb") if gz else path.open("rb")  # type: ignore[return-value]


def _gzip_error(path: Path, e: Exception) -> InputError:
    return InputError(f"{path}: not a readable gzip file: {e}")


def _read_all(path: Path, gz: bool) -> bytes:
    """The whole (decompressed) file: only for formats that cannot be streamed."""
    try:
        with _open(path, gz) as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as e:
        if not gz:
            raise
        raise _gzip_error(path, e) from e


def _lines(path: Path, gz: bool) -> Iterator[bytes]:
    """The file's lines as bytes, split on b"\\n" only (a file handle's line iteration), read one
    at a time; the UTF-8 byte-order mark is removed from the first. gzip is decompressed as it is
    read (``gzip.open``); a damaged stream raises InputError naming the file."""
    with _open(path, gz) as f:
        lines = iter(f)
        first = True
        while True:
            try:
                raw = next(lines)
            except StopIteration:
                return
            except (OSError, EOFError, zlib.error) as e:
                if not gz:
                    raise
                raise _gzip_error(path, e) from e
            if first:
                raw, first = raw.removeprefix(b"\xef\xbb\xbf"), False  # UTF-8 byte-order mark
            yield raw


def _decode(path: Path, data: bytes, first_line: int = 1) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = first_line + data.count(b"\n", 0, e.start)
        raise InputError(
            f"{path} row {line}: not valid UTF-8 (byte {data[e.start]:#04x}); "
            "re-encode the file as UTF-8"
        ) from e


def _json_lines(path: Path, lines: Iterable[bytes], first_line: int = 1) -> Iterator[Record]:
    # Lines end at "\n" only: str.splitlines() would also split on U+2028/U+2029 inside strings.
    for lineno, raw in enumerate(lines, start=first_line):
        line = _decode(path, raw.removesuffix(b"\n"), lineno).rstrip("\r")
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{path} row {lineno}: invalid JSON: {e.msg}") from e
        yield _record(value, path, lineno)


def _json(path: Path, gz: bool) -> Iterator[Record]:
    """A ``.json`` file: JSON Lines (streamed, when its first non-blank line is an object on its
    own), else one JSON value parsed whole: an array of objects or a single object."""
    lines = _lines(path, gz)
    head: list[bytes] = []
    for raw in lines:
        head.append(raw)
        if raw.strip():
            break
    first = head[-1].strip() if head else b""
    if first.startswith(b"{"):
        try:
            json.loads(_decode(path, first, len(head)))
            one_line_object = True
        except json.JSONDecodeError:
            one_line_object = False  # a pretty-printed object: parsed whole below
        if one_line_object:
            yield from _json_lines(path, itertools.chain(head, lines))
            return
    lines.close()
    data = _read_all(path, gz).removeprefix(b"\xef\xbb\xbf")
    text = _decode(path, data)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # several JSON values: JSON Lines under a .json name
            yield from _json_lines(path, data.split(b"\n"))
            return
        if not text.strip():
            return
        raise InputError(f"{path} row {e.lineno}: invalid JSON: {e.msg}") from e
    if isinstance(value, dict):  # a single object: one record
        value = [value]
    if not isinstance(value, list):
        raise InputError(f"{path}: expected a JSON array of objects, or JSON Lines")
    for index, item in enumerate(value, start=1):
        yield _record(item, path, index)


def _record(value: Any, path: Path | str, row: int) -> Record:
    if not isinstance(value, dict):
        raise InputError(f"{path} row {row}: expected a JSON object, got {type(value).__name__}")
    return Record(value, str(path), row)


def _csv(path: Path, gz: bool, columns: list[str] | None) -> Iterator[Record]:
    """CSV streamed through ``csv.reader`` on a text handle (``newline=""``, as the csv module
    asks, so quoted cells may span lines; "utf-8-sig" drops a byte-order mark)."""
    csv.field_size_limit(sys.maxsize)  # a long query is a long cell, not a broken file
    with _open(path, gz) as binary:
        rows = csv.reader(io.TextIOWrapper(binary, encoding="utf-8-sig", newline=""))
        try:
            header = columns if columns is not None else next(rows, None)
            if header is None:
                return
            if columns is None:
                duplicated = sorted({c for c in header if header.count(c) > 1})
                if duplicated:
                    raise InputError(f"{path} row 1: duplicate column name(s) {duplicated}")
            for row in rows:
                lineno = rows.line_num  # the line the record ends on (cells may span lines)
                if not any(cell.strip() for cell in row):
                    continue
                if columns is not None and [c.strip().lower() for c in row] == [
                    c.lower() for c in columns
                ]:
                    continue  # a header row on a file read with given column names
                if len(row) != len(header):
                    raise InputError(
                        f"{path} row {lineno}: {len(row)} columns, expected {len(header)} ({', '.join(header)})"
                    )
                yield Record(dict(zip(header, row, strict=True)), str(path), lineno)
        except csv.Error as e:
            raise InputError(f"{path} row {rows.line_num}: not readable as CSV: {e}") from e
        except UnicodeDecodeError as e:
            # The text handle decodes ahead of the row being parsed: find the line in a second read.
            for lineno, raw in enumerate(_lines(path, gz), start=1):
                _decode(path, raw, lineno)  # raises InputError naming the line
            raise InputError(f"{path}: not valid UTF-8: {e}") from e
        except (OSError, EOFError, zlib.error) as e:
            if not gz:
                raise
            raise _gzip_error(path, e) from e


def _parquet(source, path: Path) -> Iterator[Record]:
    try:
        # pre_buffer=False: with it, iter_batches reads every row group ahead, so memory grows
        # with the file; without it, a row group's pages are read as they are decoded.
        parquet = pq.ParquetFile(source, pre_buffer=False)
    except Exception as e:  # pyarrow raises ArrowInvalid or OSError for a non-Parquet file
        raise InputError(f"{path}: not a readable Parquet file: {e}") from e
    names = parquet.schema_arrow.names
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise InputError(f"{path}: duplicate column name(s) {duplicated}")
    row = 0
    for batch in parquet.iter_batches(batch_size=4096):
        try:
            values = batch.to_pylist()
        except Exception as e:  # e.g. invalid UTF-8 in a string column
            raise InputError(f"{path} rows {row + 1}-{row + batch.num_rows}: {e}") from e
        for value in values:
            row += 1
            yield Record(value, str(path), row)


# --- folders


def _split_of(file: Path, root: Path) -> str:
    """The split a data file of a folder belongs to, by the hub's naming conventions."""
    stem = file.name
    while Path(stem).suffix:
        stem = Path(stem).stem
    shard = _SHARD.match(stem)
    if shard:
        return shard.group("split")
    for part in file.relative_to(root).parts[:-1]:
        if part in KNOWN_SPLITS:
            return part
    low = stem.lower()  # the original releases write ARC-Easy-Dev.jsonl
    for name in KNOWN_SPLITS:
        if low == name or low.endswith(f"_{name}") or low.endswith(f"-{name}"):
            return name
    return stem


def _choose_split(where: Path | str, available: list[str], split: str | None) -> str:
    if split is not None:
        if split not in available:
            raise InputError(f"{where}: no split {split!r}; its splits are {', '.join(available)}")
        return split
    if len(available) != 1:
        raise InputError(
            f"{where}: several splits ({', '.join(available)}); choose one with the split setting "
            "(query_pool: split; eval_sets: eval_splits, fewshot_splits; score: --split)"
        )
    return available[0]


def _folder(
    path: Path, split: str | None, csv_columns: list[str] | None, merge_folders: bool
) -> Iterator[Record]:
    if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
        yield from _saved_dataset(path, split)
        return
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and _data_suffix(p) in SUFFIXES and not p.name.startswith(".")
    )
    if not files:
        raise InputError(
            f"{path}: a folder with no data files ({', '.join(SUFFIXES)}) and no save_to_disk dataset"
        )
    by_split: dict[str, list[Path]] = {}
    for f in files:
        by_split.setdefault(_split_of(f, path), []).append(f)
    chosen = _choose_split(path, sorted(by_split), split)
    # Several configs of one dataset (cais/mmlu's all/ and abstract_algebra/, ARC-Easy/ and
    # ARC-Challenge/) each hold the split: merging them would count items twice or mix tasks.
    parents = sorted({str(f.parent.relative_to(path)) for f in by_split[chosen]})
    if len(parents) > 1 and not merge_folders:
        shown = ", ".join(parents[:6]) + (", ..." if len(parents) > 6 else "")
        raise InputError(
            f"{path}: split {chosen!r} is in {len(parents)} folders ({shown}); "
            "point the source at one of them"
        )
    for f in by_split[chosen]:
        yield from _file(f, csv_columns)


def _saved_dataset(path: Path, split: str | None) -> Iterator[Record]:
    import datasets

    where = str(path)
    try:
        if (path / "dataset_dict.json").exists():  # a DatasetDict: load the chosen split alone
            splits = json.loads((path / "dataset_dict.json").read_text())["splits"]
            if not splits:
                raise InputError(f"{path}: a DatasetDict with no splits")
            chosen = _choose_split(path, sorted(splits), split)
            loaded = datasets.load_from_disk(str(path / chosen))
            where = f"{path}[{chosen}]"
        else:
            loaded = datasets.load_from_disk(str(path))
            if split is not None and loaded.split is not None and str(loaded.split) != split:
                raise InputError(f"{path}: a Dataset of split {str(loaded.split)!r}, not {split!r}")
    except InputError:
        raise
    except Exception as e:  # a damaged or empty save_to_disk folder: datasets raises many kinds
        raise InputError(
            f"{path}: not a readable save_to_disk dataset ({type(e).__name__}: {e})"
        ) from e
    for index, value in enumerate(loaded, start=1):
        yield Record(dict(value), where, index)


def _hub(source: str, split: str | None) -> Iterator[Record]:
    """``hf:<name>``, ``hf:<name>:<split>`` or ``hf:<name>:<config>:<split>`` (the split setting
    applies when the source names none; default train)."""
    import datasets

    parts = source.removeprefix("hf:").split(":")
    if len(parts) > 3 or not parts[0]:
        raise InputError(f"{source}: expected hf:<name>[:<split>] or hf:<name>:<config>:<split>")
    name, config = parts[0], (parts[1] if len(parts) == 3 else None)
    chosen = parts[-1] if len(parts) > 1 else (split or "train")
    try:
        loaded = datasets.load_dataset(name, config, split=chosen)
    except Exception as e:  # no network here: only what the local cache holds
        raise InputError(f"{source}: could not load split {chosen!r}: {e}") from e
    for index, value in enumerate(loaded, start=1):
        yield Record(dict(value), f"{source}:{chosen}", index)
