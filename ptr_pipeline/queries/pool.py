"""Stage 1: the query pool. Open point 5 of docs/paper_notes.md (cleaning, dedup, decontamination).

Rules, in order: read every record (``records.read_records``: one reader for every format); take
the query field (Alpaca rows join ``instruction`` and a non-empty ``input`` with a newline, as
LLaMA-Factory's Alpaca converter does); strip; drop empty, too short and too long queries; drop
exact duplicates of the normalised text (Unicode NFKC, case-folded,
whitespace collapsed: "12+7" and "12-7" stay two queries; first occurrence wins); drop queries
sharing a word n-gram with an eval question (or containing a whole short one; words are the
case-folded NFKC word characters); then a seeded sample.

Bad input raises ``records.InputError`` naming the file, the row and the field, and a source
that leaves no query at all is an error too: nothing is returned for the stage to write.
"""

import hashlib
import logging
import random
import re
import unicodedata
from collections import Counter
from pathlib import Path

import pyarrow as pa

from ptr_pipeline import schemas
from ptr_pipeline.queries.settings import QueryPoolSettings
from ptr_pipeline.records import InputError, Record, read_records
from ptr_pipeline.samples import NAMED_SOURCES, query_sample

log = logging.getLogger(__name__)

CODE_VERSION = "queries_v2"
AUTO_FIELDS = ("instruction", "question", "query", "prompt")


def dedup_key(text: str) -> str:
    """The exact-dedup key: Unicode NFKC, case-folded, whitespace collapsed (punctuation kept)."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def words(text: str) -> list[str]:
    """The words n-gram decontamination compares: NFKC, case-folded word characters."""
    return re.findall(r"\w+", unicodedata.normalize("NFKC", text).casefold())


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
        InputError: unreadable or empty sources, rows without the text field, non-string values,
            or a source from which no query survives cleaning.
    """
    source = (
        str(query_sample(settings.source)) if settings.source in NAMED_SOURCES else settings.source
    )
    records = read_records(source, split=settings.split)
    contaminated = _ngram_index(eval_questions or [], settings.decontaminate_ngram)
    seen: set[str] = set()
    dropped: Counter[str] = Counter()
    rows = []
    for record in records:
        text = _query_text(record, settings).strip()
        key = dedup_key(text)
        reason = None
        if not key:
            reason = "empty"
        elif len(text) < settings.min_chars:
            reason = "too_short"
        elif len(text) > settings.max_chars:
            reason = "too_long"
        elif key in seen:
            reason = "duplicate"
        elif _is_contaminated(words(text), contaminated, settings.decontaminate_ngram):
            reason = "contaminated"
        if reason:
            dropped[reason] += 1
            continue
        seen.add(key)
        qid = hashlib.sha256(key.encode()).hexdigest()[:16]
        rows.append(
            {"query_id": qid, "query": text, "source": f"{Path(record.file).name}:{record.row}"}
        )
    if not rows:
        raise InputError(
            f"{source}: no query survives cleaning ({len(records)} records; dropped {dict(dropped)})"
        )
    if settings.max_queries is not None and len(rows) > settings.max_queries:
        keep = sorted(random.Random(settings.seed).sample(range(len(rows)), settings.max_queries))
        dropped["not_sampled"] = len(rows) - len(keep)
        rows = [rows[i] for i in keep]
    log.info("query pool: %d queries kept, dropped %s", len(rows), dict(dropped))
    return pa.Table.from_pylist(rows, schema=schemas.QUERY_POOL), dict(dropped)


def _query_text(record: Record, settings: QueryPoolSettings) -> str:
    name = settings.text_field
    if name == "auto":
        name = next((f for f in AUTO_FIELDS if f in record.fields), None)
        if name is None:
            found = ", ".join(sorted(record.fields)) or "none"
            raise record.error(
                f"no query field (looked for {', '.join(AUTO_FIELDS)}; found {found}); "
                "set text_field"
            )
    if name not in record.fields:
        record.require(name)  # raises, naming the fields found
    if record.get(name) is None:
        return ""  # null: an empty query, dropped as such
    text = record.text(name)
    if settings.input_field and record.has(settings.input_field):
        extra = record.text(settings.input_field)
        if extra.strip():
            text = f"{text.strip()}\n{extra.strip()}"
    return text


def _ngram_index(questions: list[str], n: int) -> tuple[set[str], list[str]]:
    """Every word n-gram of the eval questions, and the questions shorter than n words (whole)."""
    grams: set[str] = set()
    short: list[str] = []
    for q in questions:
        ws = words(q)
        if len(ws) < n:
            if ws:
                short.append(" ".join(ws))
            continue
        grams.update(" ".join(ws[i : i + n]) for i in range(len(ws) - n + 1))
    return grams, short


def _is_contaminated(ws: list[str], index: tuple[set[str], list[str]], n: int) -> bool:
    grams, short = index
    if grams and any(" ".join(ws[i : i + n]) in grams for i in range(len(ws) - n + 1)):
        return True
    padded = f" {' '.join(ws)} "
    return any(f" {q} " in padded for q in short)
