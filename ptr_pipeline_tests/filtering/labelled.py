"""The labelled progressions (``progressions.jsonl``): handcrafted thought progressions in English
and Chinese, each with the verdict it deserves (``keep`` or the first rule that should drop it),
written from the rules' definitions without the filter's code. Read by the tests and by
``benchmarks/filter_quality.py``."""

import json
from pathlib import Path

LABELLED = Path(__file__).with_name("progressions.jsonl")


def load(path: Path = LABELLED) -> list[dict]:
    """Every labelled row: ``id``, ``category``, ``language``, ``query``, ``thoughts``, ``answer``,
    optional ``finished`` and ``samples``, ``expected``, ``why``."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def progressions(rows: list[dict]) -> list[dict]:
    """The rows as the filter's progressions (``filtering.judge_progressions``)."""
    return [
        {
            "query_id": r["id"],
            "query": r["query"],
            "thoughts": r["thoughts"],
            "answer": r["answer"],
            "finished": r.get("finished"),
            "samples": r.get("samples", []),
        }
        for r in rows
    ]
