"""Stage 1: the query pool. Open point 5 of the paper notes (cleaning, dedup, decontamination).

Rules, in order: strip; drop empty, too short and too long queries; drop exact duplicates of the
normalised text (lower case, punctuation and whitespace collapsed; first occurrence wins); drop
queries sharing a word n-gram with an eval question (or containing a whole short one); then a
seeded sample. Bad input raises ``QueryPoolError`` naming the file, the row and the field.
"""

import hashlib
import json
import logging
import random
import re
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ptr_pipeline import schemas
from ptr_pipeline.queries.settings import QueryPoolSettings
from ptr_pipeline.samples import QUERIES

log = logging.getLogger(__name__)

CODE_VERSION = "queries_v1"
AUTO_FIELDS = ("instruction", "question", "query", "prompt")


class QueryPoolError(ValueError):
    """Bad query input; the message names the file, row and field."""


def normalize(text: str) -> str:
    """Lower case, punctuation removed, whitespace collapsed: the key for dedup and n-grams."""
    return " ".join(re.findall(r"\w+", text.lower()))


def build_query_pool(
    settings: QueryPoolSettings, eval_questions: list[str] | None = None
) -> tuple[pa.Table, dict[str, int]]:
    """Load, clean, deduplicate, decontaminate and sample the queries.

    Args:
        settings: the stage settings.
        eval_questions: texts that must not leak into the pool (eval prompts).

    Returns:
        A ``schemas.QUERY_POOL`` table and the number of rows dropped per reason.

    Raises:
        QueryPoolError: for unreadable files, rows without the text field, or non-string values.
    """
    records, origin = _load(settings)
    contaminated = _ngram_index(eval_questions or [], settings.decontaminate_ngram)
    seen: set[str] = set()
    dropped: Counter[str] = Counter()
    rows = []
    for index, record in enumerate(records):
        where = f"{origin} row {index + 1}"
        text = _field(record, settings.text_field, where)
        text = text.strip()
        key = normalize(text)
        reason = None
        if not key:
            reason = "empty"
        elif len(text) < settings.min_chars:
            reason = "too_short"
        elif len(text) > settings.max_chars:
            reason = "too_long"
        elif key in seen:
            reason = "duplicate"
        elif _is_contaminated(key, contaminated, settings.decontaminate_ngram):
            reason = "contaminated"
        if reason:
            dropped[reason] += 1
            continue
        seen.add(key)
        qid = hashlib.sha256(key.encode()).hexdigest()[:16]
        rows.append({"query_id": qid, "query": text, "source": f"{Path(origin).name}:{index + 1}"})
    if settings.max_queries is not None and len(rows) > settings.max_queries:
        keep = sorted(random.Random(settings.seed).sample(range(len(rows)), settings.max_queries))
        dropped["not_sampled"] = len(rows) - len(keep)
        rows = [rows[i] for i in keep]
    log.info("query pool: %d queries kept, dropped %s", len(rows), dict(dropped))
    return pa.Table.from_pylist(rows, schema=schemas.QUERY_POOL), dict(dropped)


def _load(settings: QueryPoolSettings) -> tuple[list[dict], str]:
    source = settings.source
    if source == "bundled":
        return _read_file(QUERIES), str(QUERIES)
    if source.startswith("hf:"):
        import datasets

        name, _, split = source.removeprefix("hf:").partition(":")
        return list(datasets.load_dataset(name, split=split or "train")), source
    path = Path(source)
    if not path.exists():
        raise QueryPoolError(f"{path}: query source not found")
    if path.is_dir():
        import datasets

        return list(datasets.load_from_disk(str(path))), str(path)
    return _read_file(path), str(path)


def _read_file(path: Path) -> list[dict]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    text = path.read_text(encoding="utf-8")
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise QueryPoolError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from e
        if not isinstance(data, list):
            raise QueryPoolError(f"{path}: expected a JSON array of objects")
        records = data
    elif suffix == ".jsonl":
        records = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise QueryPoolError(f"{path} row {lineno}: invalid JSON: {e.msg}") from e
    else:
        raise QueryPoolError(
            f"{path}: unsupported format {suffix!r}; use .jsonl, .json or .parquet"
        )
    for i, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            raise QueryPoolError(
                f"{path} row {i}: expected a JSON object, got {type(record).__name__}"
            )
    return records


def _field(record: dict, text_field: str, where: str) -> str:
    if text_field == "auto":
        name = next((f for f in AUTO_FIELDS if f in record), None)
        if name is None:
            raise QueryPoolError(
                f"{where}: no query field (looked for {', '.join(AUTO_FIELDS)}; "
                f"found {', '.join(sorted(record)) or 'none'}); set text_field"
            )
    else:
        name = text_field
        if name not in record:
            raise QueryPoolError(
                f"{where}: missing field {name!r} (found {', '.join(sorted(record))})"
            )
    value = record[name]
    if value is None:
        return ""
    if not isinstance(value, str):
        raise QueryPoolError(
            f"{where} field {name!r}: expected a string, got {type(value).__name__}"
        )
    return value


def _ngram_index(questions: list[str], n: int) -> tuple[set[str], list[str]]:
    """Every word n-gram of the eval questions, and the questions shorter than n words (whole)."""
    grams: set[str] = set()
    short: list[str] = []
    for q in questions:
        words = normalize(q).split()
        if len(words) < n:
            if words:
                short.append(" ".join(words))
            continue
        grams.update(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))
    return grams, short


def _is_contaminated(key: str, index: tuple[set[str], list[str]], n: int) -> bool:
    grams, short = index
    words = key.split()
    if grams and any(" ".join(words[i : i + n]) in grams for i in range(len(words) - n + 1)):
        return True
    padded = f" {key} "
    return any(f" {q} " in padded for q in short)
