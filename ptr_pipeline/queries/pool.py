"""Stage 1: the query pool. Open point 5 of docs/paper_notes.md (cleaning, dedup, decontamination).

Rules, in order: read every record (``records.iter_records``: one reader for every format,
streamed); take the query field (Alpaca rows join ``instruction`` and a non-empty ``input`` with a
newline, as LLaMA-Factory's Alpaca converter does); strip; drop empty, too short and too long
queries (what is left are the *cleaned* queries); match them against the eval items (a shared
word n-gram, or a whole short question inside the query: ``decontaminate``), report the matches
per task and drop them; drop exact duplicates of the normalised text (Unicode NFKC, case-folded,
whitespace collapsed: "12+7" and "12-7" stay two queries; first occurrence wins); drop
near-duplicates (``neardup``: MinHash LSH candidates verified on their signatures, queries with
other numbers never; the first query of a cluster is kept); then a seeded sample.

Built for corpora of millions of queries, in two streaming passes:

1. records are read in batches; each cleaned, uncontaminated query is written to a staging Parquet
   file in a scratch folder, its exact key (the 64 bits of its ``query_id``, a sha256 of the
   normalised text) and its MinHash band keys are appended to on-disk partitions
   (``neardup.KeyPartitions``), its signature to a file (``neardup.SignatureFile``);
2. the partitions are grouped one file at a time into a union-find over row numbers
   (``neardup.UnionFind``): rows with an equal exact key, or an equal band key and similar
   signatures, are one cluster, whose smallest row (its first occurrence) is kept; the seeded sample draws from the kept rows
   (``numpy.random.default_rng(seed)``); the staging file is streamed again and the chosen rows
   are written, in input order, to the output with ``pyarrow.parquet.ParquetWriter``.

Per row, memory holds a few bytes in numpy arrays (the parent row, two flags), never the row as
a Python object, and never the file.

Bad input raises ``records.InputError`` naming the file, the row and the field, and a source
that leaves no query at all is an error too: no output is written.
"""

import hashlib
import itertools
import logging
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ptr_pipeline import schemas
from ptr_pipeline.queries.decontaminate import (
    QUERY_CHARS,
    ContaminationReport,
    EvalIndex,
    normalise,
    split_words,
    words,
)
from ptr_pipeline.queries.neardup import KeyPartitions, SignatureFile, Signer, UnionFind, verified
from ptr_pipeline.queries.settings import QueryPoolSettings
from ptr_pipeline.records import InputError, Record, iter_records, no_records_error
from ptr_pipeline.samples import NAMED_SOURCES, query_sample
from ptr_pipeline.storage import atomic_parquet_writer

log = logging.getLogger(__name__)

__all__ = ["CODE_VERSION", "PoolResult", "build_query_pool", "dedup_key", "words"]

CODE_VERSION = "queries_v3"
AUTO_FIELDS = ("instruction", "question", "query", "prompt")
BATCH_ROWS = 512  # records per batch: the rows held as Python objects at a time
ROW_GROUP = 16384  # rows per Parquet row group, staging and output (a group is encoded whole)
TOP_CLUSTERS = 10  # clusters described in the result, largest first
CLUSTER_MEMBERS = 3  # dropped members shown per cluster
EXACT_PARTS, BAND_PARTS = 64, 256  # on-disk partitions of exact keys and of band keys
_STAGING = pa.schema([*schemas.QUERY_POOL, pa.field("key", pa.uint64(), nullable=False)])


def dedup_key(text: str) -> str:
    """The exact-dedup key: Unicode NFKC, case-folded, whitespace collapsed (punctuation kept)."""
    return " ".join(normalise(text).split())


@dataclass(frozen=True)
class PoolResult:
    """What ``build_query_pool`` wrote and what it dropped."""

    path: Path  # the pool: a schemas.QUERY_POOL Parquet file
    rows: int  # rows written
    records: int  # records read
    cleaned: int  # queries left after empty/too_short/too_long: the contamination denominator
    dropped: dict[str, int]  # reason -> rows
    duplicate_ids: int  # query_ids written more than once (0 unless the dedup is broken)
    clusters: dict  # duplicate clusters (exact and near): count, rows, the largest
    contamination: dict[str, dict]  # eval task -> matched queries, share, n-grams, examples


def resolved_source(settings: QueryPoolSettings) -> str:
    """The source to read: a named one (``bundled``, ``world``) is its packaged file."""
    return (
        str(query_sample(settings.source)) if settings.source in NAMED_SOURCES else settings.source
    )


def check_queries(settings: QueryPoolSettings) -> int:
    """Read every record of the configured source as ``build_query_pool``'s first pass reads and
    cleans it (the query and input fields, their types, the file's encoding; empty, too short and
    too long queries), writing nothing: the run guard calls it at launch, so a bad row, or a
    source of which no query survives cleaning, fails the run before any model loads. What only
    the stage can judge (duplicates, decontamination against the eval sets) is left to it.
    Returns the number of records.

    Raises:
        InputError: naming the file, row and field of the first bad record, an empty source, or
            a source whose every query is empty or outside min_chars..max_chars.
    """
    source = resolved_source(settings)
    records = survivors = 0
    dropped: Counter[str] = Counter()
    names: dict[str, str] = {}
    for batch in _batches(iter_records(source, split=settings.split), BATCH_ROWS):
        records += len(batch)
        survivors += len(_clean(batch, settings, dropped, names)[0])
    if records == 0:
        raise no_records_error(source)
    if survivors == 0:
        raise InputError(
            f"{source}: no query survives cleaning ({records} records; dropped {dict(dropped)})"
        )
    return records


def build_query_pool(
    settings: QueryPoolSettings,
    output: Path,
    eval_items: pa.Table | None = None,
    work_dir: Path | None = None,
) -> PoolResult:
    """Load, clean, decontaminate, deduplicate and sample the queries into ``output``.

    Args:
        settings: the stage settings.
        output: the Parquet file to write (replaced atomically; nothing is written on error).
        eval_items: what must not leak into the pool: a table with columns ``task``,
            ``example_id`` and ``question`` (``eval_sets``' columns); None = no decontamination.
        work_dir: where the scratch folder (staging file, key partitions) goes; default the
            output's folder. It is removed when the build ends, failed or not.

    Returns:
        The counts, the duplicate clusters and the contamination report.

    Raises:
        InputError: unreadable or empty sources, rows without the text field, non-string values,
            or a source from which no query survives cleaning.
    """
    source = resolved_source(settings)
    output = Path(output)
    work_dir = Path(work_dir) if work_dir is not None else output.parent
    work_dir.mkdir(parents=True, exist_ok=True)
    index = None
    if eval_items is not None and eval_items.num_rows:
        index = EvalIndex(eval_items, settings.decontaminate_ngram)
    report = ContaminationReport(index) if index else None
    with tempfile.TemporaryDirectory(dir=work_dir, prefix=".query_pool-") as scratch:
        staged = _stage(settings, source, Path(scratch), report)
        dropped = staged.dropped
        if staged.rows == 0:
            raise InputError(
                f"{source}: no query survives cleaning ({staged.records} records; "
                f"dropped {dict(dropped)})"
            )
        keep, exact_dup, clusters = _cluster(staged)
        dropped.update(
            {"duplicate": int(exact_dup.sum()), "near_duplicate": int((~keep & ~exact_dup).sum())}
        )
        del exact_dup
        kept = int(keep.sum())
        if settings.max_queries is not None and kept > settings.max_queries:
            chosen = np.random.default_rng(settings.seed).choice(
                kept, size=settings.max_queries, replace=False
            )
            sample = np.zeros(len(keep), dtype=bool)
            sample[np.flatnonzero(keep)[chosen]] = True
            keep = sample
            dropped["not_sampled"] = kept - settings.max_queries
        described, duplicate_ids = _write(staged.path, keep, output, _wanted(clusters))
    dropped = {reason: n for reason, n in dropped.items() if n}
    result = PoolResult(
        path=output,
        rows=int(keep.sum()),
        records=staged.records,
        cleaned=staged.cleaned,
        dropped=dropped,
        duplicate_ids=duplicate_ids,
        clusters=_describe(clusters, described),
        contamination=report.as_dict(staged.cleaned) if report else {},
    )
    log.info(
        "query pool: %d queries kept of %d records, dropped %s",
        result.rows,
        result.records,
        dropped,
    )
    return result


@dataclass
class _Staged:
    path: Path
    rows: int
    records: int
    cleaned: int
    dropped: Counter[str]
    exact: KeyPartitions
    bands: KeyPartitions | None
    signatures: SignatureFile | None
    threshold: float


def _batches(records: Iterator[Record], size: int) -> Iterator[list[Record]]:
    while batch := list(itertools.islice(records, size)):
        yield batch


def _stage(
    settings: QueryPoolSettings, source: str, scratch: Path, report: ContaminationReport | None
) -> _Staged:
    """Pass 1: clean, decontaminate, stage the survivors, partition their keys."""
    exact = KeyPartitions(scratch / "exact", EXACT_PARTS)
    bands = KeyPartitions(scratch / "bands", BAND_PARTS) if settings.near_dup else None
    signer = (
        Signer(settings.near_dup_threshold, settings.near_dup_num_perm)
        if settings.near_dup
        else None
    )
    signatures = SignatureFile(scratch / "signatures.bin", signer.width) if signer else None
    dropped: Counter[str] = Counter()
    records = cleaned = rows = 0
    names: dict[str, str] = {}  # record.file -> its name, for the source column
    path = scratch / "staging.parquet"
    try:
        with atomic_parquet_writer(path, _STAGING) as parquet:
            writer = _RowGroups(parquet, _STAGING, ROW_GROUP)
            for batch in _batches(iter_records(source, split=settings.split), BATCH_ROWS):
                records += len(batch)
                texts, norms, keys, sources = _clean(batch, settings, dropped, names)
                cleaned += len(texts)
                if report is not None and texts:
                    contaminated = report.check(texts, [split_words(n) for n in norms])
                    if settings.decontaminate and contaminated.any():
                        dropped["contaminated"] += int(contaminated.sum())
                        clean = np.flatnonzero(~contaminated).tolist()
                        texts, norms, keys, sources = (
                            [column[i] for i in clean] for column in (texts, norms, keys, sources)
                        )
                if not texts:
                    continue
                ids = [hashlib.sha256(k.encode()).hexdigest()[:16] for k in keys]
                exact_keys = np.array([int(i, 16) for i in ids], dtype=np.uint64)
                numbers = np.arange(rows, rows + len(texts), dtype=np.int64)
                exact.add(exact_keys, numbers)
                if signer is not None and bands is not None and signatures is not None:
                    band_keys, signed = signer.sign(norms)
                    bands.add(band_keys.ravel(), np.repeat(numbers, signer.bands))
                    signatures.append(signed)
                writer.add(pa.record_batch([ids, texts, sources, exact_keys], schema=_STAGING))
                rows += len(texts)
            writer.flush()
    finally:  # the key and signature files, whether pass 1 ended or failed
        for opened in (exact, bands, signatures):
            if opened is not None:
                opened.close()
    if records == 0:
        raise no_records_error(source)
    return _Staged(
        path, rows, records, cleaned, dropped, exact, bands, signatures, settings.near_dup_threshold
    )


def _clean(
    batch: list[Record], settings: QueryPoolSettings, dropped: Counter[str], names: dict[str, str]
) -> tuple[list[str], list[str], list[str], list[str]]:
    """The batch's queries that are non-empty and within min_chars..max_chars: their texts,
    normalised texts, exact-dedup keys and sources; the others are counted in ``dropped``."""
    texts, norms, keys, sources = [], [], [], []
    for record in batch:
        text = _query_text(record, settings).strip()
        norm = normalise(text)
        key = " ".join(norm.split())  # dedup_key
        reason = None
        if not key:
            reason = "empty"
        elif len(text) < settings.min_chars:
            reason = "too_short"
        elif len(text) > settings.max_chars:
            reason = "too_long"
        if reason:
            dropped[reason] += 1
            continue
        texts.append(text)
        norms.append(norm)
        keys.append(key)
        name = names.get(record.file) or names.setdefault(record.file, Path(record.file).name)
        sources.append(f"{name}:{record.row}")
    return texts, norms, keys, sources


def _cluster(staged: _Staged) -> tuple[np.ndarray, np.ndarray, dict]:
    """Union-find over the staged rows: equal exact keys, then pairs sharing a band key whose
    signatures verify (``neardup.verified``).

    Returns:
        ``keep`` (the first row of each cluster), ``exact_dup`` (rows an earlier row has the
        same normalised text as) and the clusters' summary (roots, sizes, members).
    """
    n = staged.rows
    union = UnionFind(n)
    exact_dup = np.zeros(n, dtype=bool)
    for rows, firsts in staged.exact.groups():
        exact_dup[rows] = True
        union.union(rows.astype(union.parent.dtype), firsts.astype(union.parent.dtype))
    if staged.bands is not None and staged.signatures is not None:
        for rows, firsts in staged.bands.groups():
            rows, firsts = rows.astype(union.parent.dtype), firsts.astype(union.parent.dtype)
            apart = union.find(rows) != union.find(firsts)  # exact duplicates need no check
            rows, firsts = rows[apart], firsts[apart]
            near = verified(rows, firsts, staged.signatures, staged.threshold)
            union.union(rows[near], firsts[near])
    keep = np.empty(n, dtype=bool)
    for start, roots in union.roots():
        keep[start : start + len(roots)] = roots == np.arange(start, start + len(roots))
    dropped_rows = np.flatnonzero(~keep)
    root_of = union.parent[dropped_rows]  # every parent is a root once roots() has run
    del union
    roots, sizes = np.unique(root_of, return_counts=True)
    sizes += 1  # the kept row
    top = np.lexsort((roots, -sizes))[:TOP_CLUSTERS]
    largest = [
        {
            "root": int(roots[i]),
            "size": int(sizes[i]),
            "members": dropped_rows[root_of == roots[i]][:CLUSTER_MEMBERS].tolist(),
            "exact": exact_dup[dropped_rows[root_of == roots[i]][:CLUSTER_MEMBERS]].tolist(),
        }
        for i in top
    ]
    summary = {"clusters": len(roots), "rows": int(sizes.sum()), "largest": largest}
    return keep, exact_dup, summary


def _wanted(clusters: dict) -> np.ndarray:
    rows = [c["root"] for c in clusters["largest"]]
    rows += [m for c in clusters["largest"] for m in c["members"]]
    return np.unique(np.array(rows, dtype=np.int64))


def _write(
    staging: Path, keep: np.ndarray, output: Path, wanted: np.ndarray
) -> tuple[dict[int, dict], int]:
    """Pass 2: the kept staged rows, in order, to ``output``; also the ``wanted`` rows' ids and
    texts (for the cluster summary) and the number of repeated query_ids written."""
    described: dict[int, dict] = {}
    kept_keys = np.empty(int(keep.sum()), dtype=np.uint64)
    written = start = 0
    with atomic_parquet_writer(output, schemas.QUERY_POOL) as parquet:
        writer = _RowGroups(parquet, schemas.QUERY_POOL, ROW_GROUP)
        # pre_buffer=False: with it, iter_batches buffers every row group ahead (the whole file).
        staged = pq.ParquetFile(staging, pre_buffer=False)
        for batch in staged.iter_batches(batch_size=BATCH_ROWS):
            stop = start + batch.num_rows
            lo, hi = np.searchsorted(wanted, [start, stop])
            for row in wanted[lo:hi].tolist():
                text = batch.column("query")[row - start].as_py()
                described[row] = {
                    "query_id": batch.column("query_id")[row - start].as_py(),
                    "query": text if len(text) <= QUERY_CHARS else text[: QUERY_CHARS - 1] + "…",
                }
            mask = keep[start:stop]
            if mask.any():
                picked = batch.filter(pa.array(mask))
                kept_keys[written : written + picked.num_rows] = picked.column("key").to_numpy()
                written += picked.num_rows
                writer.add(picked.drop_columns(["key"]))
            start = stop
        writer.flush()
    kept_keys.sort()
    return described, int(np.count_nonzero(kept_keys[1:] == kept_keys[:-1]))


class _RowGroups:
    """Record batches gathered into row groups of ``rows`` rows, then written."""

    def __init__(self, writer: pq.ParquetWriter, schema: pa.Schema, rows: int):
        self.writer, self.schema, self.rows = writer, schema, rows
        self.pending: list[pa.RecordBatch] = []
        self.count = 0

    def add(self, batch: pa.RecordBatch) -> None:
        self.pending.append(batch)
        self.count += batch.num_rows
        if self.count >= self.rows:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            table = pa.Table.from_batches(self.pending).cast(self.schema)
            self.writer.write_table(table, row_group_size=self.rows)
            self.pending, self.count = [], 0


def _describe(clusters: dict, described: dict[int, dict]) -> dict:
    return {
        "clusters": clusters["clusters"],
        "rows_in_clusters": clusters["rows"],
        "largest": [
            {
                "size": c["size"],
                "kept": described[c["root"]],
                "members": [
                    {**described[m], "match": "exact" if exact else "near"}
                    for m, exact in zip(c["members"], c["exact"], strict=True)
                ],
            }
            for c in clusters["largest"]
        ],
    }


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
