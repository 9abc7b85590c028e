"""Decontamination: which queries share a word n-gram with an eval item, and a report per task.

A query matches an eval item when they share a word n-gram (``n = decontaminate_ngram``), or when
the item's whole question, shorter than n words, appears in the query between word boundaries.
Words are the runs of word characters of the NFKC-normalised, case-folded text (``words``).

Each word is hashed once (xxhash's xxh3) and an n-gram's hash combines its words' hashes
(``kgram_hashes``, vectorised over a whole batch of queries). Each eval n-gram is kept as its
64-bit hash in a sorted numpy array beside the item it came from, one entry per (n-gram, task):
12 bytes per n-gram rather than a Python string, and a batch of queries is looked up at once
(``numpy.searchsorted``). Two different n-grams with one hash would flag a query wrongly; the
odds are about (pool n-grams x eval n-grams) / 2**64.
"""

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import xxhash

EXAMPLES = 3  # examples per task in the report
TOP_NGRAMS = 5  # most frequent matching n-grams per task in the report
QUERY_CHARS = 200  # a query shown in the report is cut to this many characters
_WORD = re.compile(r"\w+")
_FACTOR = np.uint64(0x9E3779B97F4A7C15)  # odd: the golden-ratio constant of Fibonacci hashing


def normalise(text: str) -> str:
    """Unicode NFKC, case-folded: the form every comparison of the pool starts from."""
    return unicodedata.normalize("NFKC", text).casefold()


def words(text: str) -> list[str]:
    """The words n-gram decontamination compares: NFKC, case-folded word characters."""
    return split_words(normalise(text))


def split_words(normalised: str) -> list[str]:
    """``words`` of a text already ``normalise``d."""
    return _WORD.findall(normalised)


def word_hashes(ws: list[str]) -> np.ndarray:
    """A 64-bit hash (xxhash's xxh3) of each word."""
    return np.fromiter(
        (xxhash.xxh3_64_intdigest(w.encode()) for w in ws), dtype=np.uint64, count=len(ws)
    )


def kgram_hashes(hashes: np.ndarray, k: int) -> np.ndarray:
    """The hash of every run of ``k`` consecutive words, from their word hashes: a polynomial
    (Rabin-Karp) combination in uint64 arithmetic, vectorised over all positions at once. Two
    different runs share a hash only if two different words do (the factor is odd, so each of
    its powers is invertible modulo 2**64)."""
    count = len(hashes) - k + 1
    if count <= 0:
        return np.zeros(0, dtype=np.uint64)
    combined = hashes[:count].copy()
    for j in range(1, k):
        combined *= _FACTOR
        combined += hashes[j : j + count]
    return combined


@dataclass(frozen=True)
class _Grams:
    hashes: np.ndarray  # uint64, sorted
    items: np.ndarray  # int32: the eval item of each hash (one per hash and task)


class EvalIndex:
    """The n-grams of the eval items (table columns ``task``, ``example_id``, ``question``): whole
    n-grams, and, per length k < n, the questions of k words."""

    def __init__(self, items: pa.Table, n: int):
        missing = {"task", "example_id", "question"} - set(items.column_names)
        if missing:
            raise ValueError(f"eval items lack the column(s) {sorted(missing)}")
        tasks = items.column("task").to_pylist()
        self.n = n
        self.task_names = sorted(set(tasks))
        self.items_per_task = dict(sorted(Counter(tasks).items()))
        index = {t: i for i, t in enumerate(self.task_names)}
        self.item_task = np.array([index[t] for t in tasks], dtype=np.int32)
        self.item_ids = [str(i) for i in items.column("example_id").to_pylist()]
        parts: dict[int, tuple[list[np.ndarray], list[np.ndarray]]] = {}
        for item, question in enumerate(items.column("question").to_pylist()):
            ws = words(question or "")
            if not ws:
                continue
            k = min(n, len(ws))
            hashes = kgram_hashes(word_hashes(ws), k)
            found = parts.setdefault(k, ([], []))
            found[0].append(hashes)
            found[1].append(np.full(len(hashes), item, dtype=np.int32))
        self.grams = {
            k: self._table(np.concatenate(h), np.concatenate(i))
            for k, (h, i) in sorted(parts.items(), key=lambda kv: -kv[0])  # n first
        }

    def _table(self, hashes: np.ndarray, items: np.ndarray) -> _Grams:
        tasks = self.item_task[items]
        order = np.lexsort((items, tasks, hashes))  # by hash, then task, then item
        hashes, items, tasks = hashes[order], items[order], tasks[order]
        first = np.ones(len(hashes), dtype=bool)  # the first item per (hash, task)
        first[1:] = (hashes[1:] != hashes[:-1]) | (tasks[1:] != tasks[:-1])
        return _Grams(hashes[first], items[first])


class ContaminationReport:
    """Matches batches of queries against an ``EvalIndex`` and keeps, per task, how many queries
    matched, the n-grams they matched by, and a few examples."""

    def __init__(self, index: EvalIndex):
        self.index = index
        self.matched = Counter[str]()
        self.ngrams: dict[str, Counter[str]] = {t: Counter() for t in index.task_names}
        self.examples: dict[str, list[dict]] = {t: [] for t in index.task_names}

    def check(self, texts: list[str], word_lists: list[list[str]]) -> np.ndarray:
        """Which of these queries match an eval item (bool array); the matches are recorded."""
        first: dict[tuple[int, int], tuple[int, int, int]] = {}  # (query, task) -> first match
        lengths = np.array([len(ws) for ws in word_lists], dtype=np.int64)
        hashes = word_hashes([w for ws in word_lists for w in ws])  # the batch's words, in a row
        owner = np.repeat(np.arange(len(word_lists)), lengths)
        starts = np.cumsum(lengths) - lengths
        for k, grams in self.index.grams.items():
            runs = kgram_hashes(hashes, k)
            within = owner[: len(runs)] == owner[k - 1 :]  # runs inside one query
            left = np.searchsorted(grams.hashes, runs)
            found = grams.hashes[np.minimum(left, len(grams.hashes) - 1)] == runs
            hits = np.flatnonzero(within & found)
            right = np.searchsorted(grams.hashes, runs[hits], side="right")
            spans = zip(
                owner[hits].tolist(),
                (hits - starts[owner[hits]]).tolist(),
                left[hits].tolist(),
                right.tolist(),
                strict=True,
            )
            for q, pos, lo, hi in spans:
                for item in grams.items[lo:hi].tolist():
                    first.setdefault((q, int(self.index.item_task[item])), (pos, k, item))
        contaminated = np.zeros(len(texts), dtype=bool)
        for (q, task_index), (pos, k, item) in first.items():
            task = self.index.task_names[task_index]
            ngram = " ".join(word_lists[q][pos : pos + k])
            contaminated[q] = True
            self.matched[task] += 1
            self.ngrams[task][ngram] += 1
            if len(self.examples[task]) < EXAMPLES:
                text = texts[q]
                self.examples[task].append(
                    {
                        "query": text
                        if len(text) <= QUERY_CHARS
                        else text[: QUERY_CHARS - 1] + "…",
                        "ngram": ngram,
                        "eval_item": self.index.item_ids[item],
                    }
                )
        return contaminated

    def as_dict(self, cleaned: int) -> dict[str, dict]:
        """Per task: its eval items, the queries that matched it and their share of ``cleaned``
        (the queries the check ran on), the most frequent matching n-grams, a few examples."""
        return {
            task: {
                "eval_items": self.index.items_per_task[task],
                "matched_queries": self.matched[task],
                "share": round(self.matched[task] / cleaned, 6) if cleaned else 0.0,
                "top_ngrams": dict(self.ngrams[task].most_common(TOP_NGRAMS)),
                "examples": self.examples[task],
            }
            for task in self.index.task_names
        }
