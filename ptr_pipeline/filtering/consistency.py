"""Stage 4: consistency filter. Keep rows whose thought -> answer progression is coherent.

docs/paper_notes.md, section 2.5 and open point 4: the paper filters "thought(s)-answer consistency"
with sentence-embedding similarity. This version uses a lexical measure (unigram F1 between
consecutive steps), which needs no model and is exact on CPU; an embedding scorer can replace
``lexical_similarity`` behind the same settings. Every row gets a verdict: ``keep`` and, when
dropped, the first failing rule in this order:

1. ``empty_step``: a thought or the answer is blank;
2. ``answer_too_short``: fewer than ``min_answer_chars`` characters;
3. ``degenerate_answer``: distinct/total words below ``min_distinct_ratio`` (repetition loops);
4. ``incoherent_step``: a step shares less than ``min_step_similarity`` with the step before it;
5. ``unchanged_answer``: (optional) the answer repeats the last thought verbatim.
"""

import logging
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from itertools import pairwise

import pyarrow as pa

from ptr_pipeline import schemas
from ptr_pipeline.filtering.settings import FilterSettings

log = logging.getLogger(__name__)

CODE_VERSION = "filter_v1"


class NothingKeptError(ValueError):
    """Every progression was dropped: there is no dataset to write."""


@dataclass(frozen=True)
class FilterResult:
    decisions: pa.Table  # schemas.FILTER_DECISIONS, one row per query
    kept: pa.Table  # schemas.PTR_DATASET
    drop_counts: dict[str, int]  # reason -> rows dropped
    stats: dict[str, object]  # pass rate and per-step statistics


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def lexical_similarity(a: str, b: str) -> float:
    """Unigram F1 between two texts (bag of lower-cased words), in [0, 1]."""
    wa, wb = Counter(_words(a)), Counter(_words(b))
    overlap = sum((wa & wb).values())
    if not overlap:
        return 0.0
    precision, recall = overlap / sum(wb.values()), overlap / sum(wa.values())
    return 2 * precision * recall / (precision + recall)


def _distinct_ratio(text: str) -> float:
    words = _words(text)
    return len(set(words)) / len(words) if words else 0.0


def assemble_progressions(refinements: pa.Table, include_strong_rounds: bool = True) -> list[dict]:
    """One progression per query: its weak thoughts, then the strong rounds; the last strong round
    is the answer. ``refinements`` is a ``schemas.STRONG_REFINEMENTS`` table (each row carries
    its query and weak thoughts)."""
    schemas.validate(refinements, schemas.STRONG_REFINEMENTS, "strong_refinements")
    by_query: dict[str, dict] = {}
    rounds: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for r in refinements.select(
        ["query_id", "query", "thoughts", "round", "refinement"]
    ).to_pylist():
        by_query.setdefault(r["query_id"], r)
        rounds[r["query_id"]].append((r["round"], r["refinement"]))
    out = []
    for qid, first in by_query.items():
        strong = [t for _, t in sorted(rounds[qid])]
        out.append(
            {
                "query_id": qid,
                "query": first["query"],
                "thoughts": first["thoughts"] + (strong[:-1] if include_strong_rounds else []),
                "answer": strong[-1],
            }
        )
    return out


def filter_consistent(refinements: pa.Table, settings: FilterSettings) -> FilterResult:
    """Judge every query's progression and keep the coherent ones.

    Args:
        refinements: a ``schemas.STRONG_REFINEMENTS`` table.
        settings: thresholds.

    Returns:
        A FilterResult with every row's verdict, the kept training rows and statistics.

    Raises:
        NothingKeptError: no progression passes; raised before anything is written, so the last
            good dataset stays in place (the message counts the rows per reason).
    """
    rows = []
    for p in assemble_progressions(refinements, settings.include_strong_rounds):
        steps = [*p["thoughts"], p["answer"]]
        sims = [lexical_similarity(a, b) for a, b in pairwise(steps)]
        distinct = _distinct_ratio(p["answer"])
        rows.append(
            {
                **p,
                "step_similarity": sims,
                "answer_distinct_ratio": distinct,
                "drop_reason": _drop_reason(steps, sims, distinct, settings),
            }
        )
    for r in rows:
        r["keep"] = r["drop_reason"] is None
    decisions = pa.Table.from_pylist(rows, schema=schemas.FILTER_DECISIONS)
    kept = pa.Table.from_pylist([r for r in rows if r["keep"]], schema=schemas.PTR_DATASET)
    drop_counts = dict(Counter(r["drop_reason"] for r in rows if not r["keep"]))
    if rows and not kept.num_rows:
        raise NothingKeptError(
            f"the consistency filter kept 0 of {len(rows)} rows (dropped {drop_counts}); "
            "nothing was written: loosen its thresholds"
        )
    stats = _stats(rows)
    log.info(
        "consistency filter kept %d of %d rows; dropped %s", kept.num_rows, len(rows), drop_counts
    )
    return FilterResult(decisions=decisions, kept=kept, drop_counts=drop_counts, stats=stats)


def _drop_reason(
    steps: list[str], sims: list[float], distinct: float, s: FilterSettings
) -> str | None:
    if any(not step.strip() for step in steps):
        return "empty_step"
    if len(steps[-1].strip()) < s.min_answer_chars:
        return "answer_too_short"
    if distinct < s.min_distinct_ratio:
        return "degenerate_answer"
    if any(sim < s.min_step_similarity for sim in sims):
        return "incoherent_step"
    if s.drop_unchanged and len(steps) > 1 and steps[-1].strip() == steps[-2].strip():
        return "unchanged_answer"
    return None


def _stats(rows: list[dict]) -> dict[str, object]:
    """Pass rate, and per step position: mean length (chars) and mean similarity to the previous step."""
    n = len(rows)
    by_step_len: dict[int, list[int]] = defaultdict(list)
    by_step_sim: dict[int, list[float]] = defaultdict(list)
    for r in rows:
        for i, step in enumerate([*r["thoughts"], r["answer"]]):
            by_step_len[i + 1].append(len(step))
        for i, sim in enumerate(r["step_similarity"]):
            by_step_sim[i + 2].append(sim)
    mean = lambda xs: round(sum(xs) / len(xs), 4) if xs else None  # noqa: E731
    return {
        "rows": n,
        "kept": sum(r["keep"] for r in rows),
        "pass_rate": round(sum(r["keep"] for r in rows) / n, 4) if n else 0.0,
        "mean_chars_by_step": {k: mean(v) for k, v in sorted(by_step_len.items())},
        "mean_similarity_to_previous_by_step": {k: mean(v) for k, v in sorted(by_step_sim.items())},
    }


def dataset_problems(dataset: pa.Table) -> list[str]:
    """Why a training table is unusable (wrong schema, no rows, blank queries or answers); [] if fine."""
    try:
        schemas.validate(dataset, schemas.PTR_DATASET, "ptr_dataset")
    except schemas.SchemaError as e:
        return [str(e)]
    problems = [] if dataset.num_rows else ["no rows survived the consistency filter"]
    for column in ("query", "answer"):
        blank = sum(not v.strip() for v in dataset.column(column).to_pylist())
        if blank:
            problems.append(f"{blank} rows with an empty {column}")
    return problems
