"""Stage 4: the consistency filter. Keep rows whose thought -> answer progression is coherent.

The paper (section 3.1.2 and appendix A.1; ``docs/paper_notes.md`` section 2.5 and open point 4)
filters for "thought(s)-answer consistency" with sentence-embedding similarity and N-sample
self-consistency, without stating the model, N or thresholds. Here every progression (the weak
thoughts, the strong rounds before the last, then the last round: the answer) gets every score,
and the first rule that fires, in this order:

1. ``empty_step``: a thought or the answer is blank (Unicode whitespace included);
2. ``truncated_step``: a step hit ``max_new_tokens`` without ending (the generation stages'
   ``finished``);
3. ``answer_too_short``: fewer than ``min_answer_chars`` characters;
4. ``repetitive``: a step repeats its own sentences or token 3-grams (``measures.repetition`` over
   ``max_repetition``);
5. ``off_topic``: the answer's similarity to the query is below ``min_query_similarity``;
6. ``incoherent_step``: a step's similarity to the step before it is below
   ``min_step_similarity``;
7. ``unchanged_answer``: the answer repeats the step before it verbatim;
8. ``self_inconsistent``: the strong model's other samples of the last round (the refine stage's
   ``consistency_samples``) form a majority the answer is not part of. Each candidate (the
   answer and the samples) is reduced to its result (``vote_key``): the answer it marks
   (``answers.final_answer``: "The answer is 36"), else the last number it states that the query
   does not ("There are 36 eggs in 3 dozen" -> 36). Two candidates agree when both have a result
   and it is the same, else when their similarity reaches ``agree_similarity``. The answer's
   ``agreement`` is the share of candidates agreeing with it, ``majority`` the largest share
   agreeing with any one candidate; the row is dropped when ``agreement < majority``.

Similarities come from ``measures`` (sentence embeddings when ``embedding_model`` is set, else
TF-IDF cosine over script-aware tokens, fitted once on every text of the table). ``rules`` names
the rules that may drop a row; every row is scored by all of them. Rows are judged in batches of
``batch_size`` queries.
"""

import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ptr_pipeline import answers, schemas
from ptr_pipeline.conversation import GENERIC_REFINE_TURN
from ptr_pipeline.filtering import measures
from ptr_pipeline.filtering.settings import DEFAULT_THRESHOLDS, REASONS, FilterSettings

log = logging.getLogger(__name__)

CODE_VERSION = "filter_v3"


class NothingKeptError(ValueError):
    """Every progression was dropped: there is no dataset to write."""


@dataclass(frozen=True)
class FilterResult:
    decisions: pa.Table  # schemas.FILTER_DECISIONS, one row per query
    kept: pa.Table  # schemas.PTR_DATASET
    drop_counts: dict[str, int]  # every reason in REASONS -> rows dropped (zeros included)
    stats: dict[str, object]  # pass rate and per-step statistics
    thresholds: dict[str, float]  # the thresholds in effect (calibrated defaults resolved)


def iter_progressions(
    refinements: pa.Table, include_strong_rounds: bool = True, batch_size: int = 1024
) -> Iterator[list[dict]]:
    """The progressions of ``refinements`` (a ``schemas.STRONG_REFINEMENTS`` table), in batches
    of ``batch_size`` queries, queries in first-seen order. A progression is ``query_id``,
    ``query``, ``thoughts`` (the weak drafts, then the strong rounds before the last), ``answer``
    (the last strong round), ``finished`` (one flag per step: thoughts, then answer) and
    ``samples`` (the last round's self-consistency samples) and ``refine_turn``. Only one batch
    is held as Python objects at a time."""
    schemas.validate(refinements, schemas.STRONG_REFINEMENTS, "strong_refinements")
    ids = refinements.column("query_id")
    rank = pc.index_in(ids, value_set=pc.unique(ids))  # each row's query, in first-seen order
    table = refinements.append_column("_rank", rank)
    table = table.take(pc.sort_indices(table, [("_rank", "ascending"), ("round", "ascending")]))
    ranks = table.column("_rank").to_numpy()
    starts = np.searchsorted(ranks, np.arange(0, len(ids.unique()) + 1))  # a query's first row
    columns = ["query_id", "query", "thoughts", "thoughts_finished", "refinement", "finished"]
    for first in range(0, len(starts) - 1, batch_size):
        last = min(first + batch_size, len(starts) - 1)
        rows = table.slice(starts[first], starts[last] - starts[first])
        rows = rows.select([*columns, "samples", "refine_turn"]).to_pylist()
        batch = []
        for q in range(first, last):
            strong = rows[starts[q] - starts[first] : starts[q + 1] - starts[first]]
            earlier = strong[:-1] if include_strong_rounds else []
            head, answer = strong[0], strong[-1]
            batch.append(
                {
                    "query_id": head["query_id"],
                    "query": head["query"],
                    "thoughts": head["thoughts"] + [r["refinement"] for r in earlier],
                    "answer": answer["refinement"],
                    "finished": [
                        *head["thoughts_finished"],
                        *(r["finished"] for r in earlier),
                        answer["finished"],
                    ],
                    "samples": answer["samples"],
                    "refine_turn": head["refine_turn"],
                }
            )
        yield batch


def filter_consistent(refinements: pa.Table, settings: FilterSettings) -> FilterResult:
    """Judge every query's progression and keep the coherent ones.

    Args:
        refinements: a ``schemas.STRONG_REFINEMENTS`` table.
        settings: rules and thresholds.

    Returns:
        A FilterResult with every row's scores and verdict, the kept training rows and statistics.

    Raises:
        NothingKeptError: no progression passes; raised before anything is written, so the last
            good dataset stays in place (the message counts the rows per reason).
        ImportError: ``embedding_model`` is set without sentence-transformers installed.
    """

    def batches() -> Iterator[list[dict]]:
        return iter_progressions(refinements, settings.include_strong_rounds, settings.batch_size)

    return judge_progressions(batches, settings)


def judge_progressions(
    progressions: list[dict] | Callable[[], Iterable[list[dict]]],
    settings: FilterSettings,
    similarity: measures.Similarity | None = None,
) -> FilterResult:
    """``filter_consistent`` on progressions (``iter_progressions``' dicts; a missing
    ``finished`` means every step ended, a missing ``samples`` means none, a missing
    ``refine_turn`` the paper's generic turn): a list, or a function
    returning their batches afresh (called twice: to fit the measure, then to judge).
    ``similarity`` replaces the measure the settings name (a model loaded once, reused)."""
    if similarity is None:
        similarity = measures.make_similarity(settings.embedding_model, settings.embedding_device)
    if isinstance(progressions, list):
        listed, size = progressions, settings.batch_size

        def batches() -> Iterable[list[dict]]:
            return (listed[i : i + size] for i in range(0, len(listed), size))
    else:
        batches = progressions
    similarity.fit(
        text
        for batch in batches()
        for p in batch
        for text in [p["query"], *p["thoughts"], p["answer"]]
    )
    decisions = []
    for batch in batches():
        rows = _score(batch, similarity, settings.threshold("agree_similarity", similarity.name))
        for row in rows:
            row["drop_reason"] = drop_reason(row, settings, similarity.name)
            row["keep"] = row["drop_reason"] is None
        decisions.append(pa.Table.from_pylist(rows, schema=schemas.FILTER_DECISIONS))
    table = pa.concat_tables(decisions) if decisions else schemas.FILTER_DECISIONS.empty_table()
    reasons = Counter(r for r in table.column("drop_reason").to_pylist() if r is not None)
    drop_counts = {reason: reasons.get(reason, 0) for reason in REASONS}
    progression_columns = [n for n in schemas.PTR_DATASET.names if n != "origin"]
    kept = table.filter(table.column("keep")).select(progression_columns)
    kept = kept.append_column("origin", pa.array(["ptr"] * kept.num_rows, pa.string()))
    kept = kept.select(schemas.PTR_DATASET.names)
    if table.num_rows and not kept.num_rows:
        raise NothingKeptError(
            f"the consistency filter kept 0 of {table.num_rows} rows (dropped "
            f"{ {k: v for k, v in drop_counts.items() if v} }); nothing was written: loosen "
            "its thresholds"
        )
    stats = {"measure": similarity.name, **_stats(table)}
    log.info(
        "consistency filter kept %d of %d rows; dropped %s",
        kept.num_rows,
        table.num_rows,
        {k: v for k, v in drop_counts.items() if v},
    )
    thresholds = {
        name: settings.threshold(name, similarity.name) for name in DEFAULT_THRESHOLDS["lexical"]
    }
    return FilterResult(
        decisions=table,
        kept=kept.cast(schemas.PTR_DATASET),
        drop_counts=drop_counts,
        stats=stats,
        thresholds={**thresholds, "max_repetition": settings.max_repetition},
    )


def _score(batch: list[dict], similarity: measures.Similarity, agree_at: float) -> list[dict]:
    """Every score of every progression of ``batch``, with one similarity call per kind."""
    steps = [[*p["thoughts"], p["answer"]] for p in batch]
    step_sims = iter(similarity.pairs([pair for s in steps for pair in pairwise(s)]).tolist())
    query_sims = similarity.pairs([(p["query"], p["answer"]) for p in batch]).tolist()
    # Self-consistency: the candidates (the answer, then the samples), each pair once.
    candidates = [[p["answer"], *p.get("samples", [])] for p in batch]
    vote_sims = iter(
        similarity.pairs([(c[i], c[j]) for c in candidates for i, j in _upper(len(c))]).tolist()
    )
    rows = []
    for p, s, query_sim, cands in zip(batch, steps, query_sims, candidates, strict=True):
        sims = {(i, j): next(vote_sims) for i, j in _upper(len(cands))}
        agreement, majority = (
            _vote([vote_key(c, p["query"]) for c in cands], sims, agree_at)
            if len(cands) > 1
            else (None, None)
        )
        rows.append(
            {
                "query_id": p["query_id"],
                "query": p["query"],
                "thoughts": p["thoughts"],
                "answer": p["answer"],
                "finished": p.get("finished") or [True] * len(s),
                "samples": p.get("samples", []),
                "refine_turn": p.get("refine_turn", GENERIC_REFINE_TURN),
                "step_similarity": [next(step_sims) for _ in range(len(s) - 1)],
                "query_similarity": query_sim,
                "repetition": [measures.repetition(step) for step in s],
                "agreement": agreement,
                "majority": majority,
            }
        )
    return rows


def _upper(n: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(n) for j in range(i + 1, n)]


def vote_key(response: str, query: str) -> str | None:
    """A response's result, for the self-consistency vote (rule 8 above); None when it states
    none (then similarity decides)."""
    marked = answers.final_answer(response)
    if marked is not None:
        return marked
    given = set(answers.numbers(query))
    stated = [n for n in answers.numbers(response) if n not in given]
    return stated[-1] if stated else None


def _vote(
    keys: list[str | None], sims: dict[tuple[int, int], float], agree_at: float
) -> tuple[float, float]:
    """The share of candidates (the answer first; their ``vote_key``) agreeing with the answer,
    and the largest share agreeing with any one candidate (each agrees with itself)."""
    support = [1] * len(keys)
    for (i, j), sim in sims.items():
        marked = keys[i] is not None and keys[j] is not None
        if (keys[i] == keys[j]) if marked else sim >= agree_at:
            support[i] += 1
            support[j] += 1
    return support[0] / len(keys), max(support) / len(keys)


def drop_reason(row: dict, s: FilterSettings, measure: str) -> str | None:
    """The first rule of ``s.rules`` (in ``REASONS`` order) that drops a scored ``row`` (a
    ``schemas.FILTER_DECISIONS`` row), with the thresholds of ``measure``; None keeps it."""
    steps = [*row["thoughts"], row["answer"]]
    fired = {
        "empty_step": lambda: any(not step.strip() for step in steps),
        "truncated_step": lambda: not all(row["finished"]),
        "answer_too_short": lambda: len(row["answer"].strip()) < s.min_answer_chars,
        "repetitive": lambda: max(row["repetition"]) > s.max_repetition,
        "off_topic": lambda: row["query_similarity"] < s.threshold("min_query_similarity", measure),
        "incoherent_step": lambda: any(
            sim < s.threshold("min_step_similarity", measure) for sim in row["step_similarity"]
        ),
        "unchanged_answer": lambda: len(steps) > 1 and steps[-1].strip() == steps[-2].strip(),
        "self_inconsistent": lambda: (
            row["agreement"] is not None and row["agreement"] < row["majority"]
        ),
    }
    return next((rule for rule in REASONS if rule in s.rules and fired[rule]()), None)


def _stats(table: pa.Table) -> dict[str, object]:
    """Pass rate, and per step position (1 = the first thought): mean length in characters, mean
    length growth over the step before, mean similarity and normalised edit distance to it."""
    n = table.num_rows
    kept = sum(table.column("keep").to_pylist())
    chars: dict[int, list[float]] = defaultdict(list)
    growth: dict[int, list[float]] = defaultdict(list)
    sims: dict[int, list[float]] = defaultdict(list)
    edits: dict[int, list[float]] = defaultdict(list)
    for r in table.select(["thoughts", "answer", "step_similarity"]).to_pylist():
        steps = [*r["thoughts"], r["answer"]]
        for k, step in enumerate(steps, start=1):
            chars[k].append(len(step))
        pairs = zip(pairwise(steps), r["step_similarity"], strict=True)
        for k, ((a, b), sim) in enumerate(pairs, start=2):
            growth[k].append(len(b) / max(len(a), 1))
            sims[k].append(sim)
            edits[k].append(measures.edit_distance(a, b))

    def mean(by_step: dict[int, list[float]]) -> dict[int, float]:
        return {k: round(float(np.mean(v)), 4) for k, v in sorted(by_step.items())}

    voted = table.column("agreement").null_count
    return {
        "rows": n,
        "kept": kept,
        "rows_with_samples": n - voted,  # 0: the self-consistency rule had nothing to vote on
        "pass_rate": round(kept / n, 4) if n else 0.0,
        "mean_chars_by_step": mean(chars),
        "mean_length_growth_by_step": mean(growth),
        "mean_similarity_to_previous_by_step": mean(sims),
        "mean_edit_distance_to_previous_by_step": mean(edits),
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
