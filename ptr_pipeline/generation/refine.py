"""Stage 3: the strong model refines the weak thoughts, round by round, in context.

docs/paper_notes.md, section 2.1: the strong model gets q_i and S_thought and produces the refined
answer "via ICL". Round 1 sees the query and every weak thought; round r > 1 keeps the whole
history and appends the refine turn, so each round refines round r-1 (open point 3). Every row
carries its query, the weak thoughts it refined and the refine turn (``refine_turn``: the template,
``{query}`` unfilled), so later stages need no re-join and training and evaluation ask with the
turn the data was made with.
"""

import dataclasses
import logging
from pathlib import Path

import pyarrow as pa

from ptr_pipeline import schemas
from ptr_pipeline.engines import LazyGenerator
from ptr_pipeline.generation import prompts
from ptr_pipeline.generation.settings import RefineSettings
from ptr_pipeline.generation.thoughts import CODE_VERSION, _model_of, provenance
from ptr_pipeline.models import default_refine_turn, model_fingerprint
from ptr_pipeline.storage import fingerprint, run_sharded, table_fingerprint

log = logging.getLogger(__name__)


def thoughts_by_query(thoughts: pa.Table) -> pa.Table:
    """One row per query (first-seen order): ``query_id``, ``query``, ``thoughts`` in sample
    order and ``thoughts_finished`` (each draft's ``finished``)."""
    grouped: dict[str, tuple[str, list[tuple[int, str, bool]]]] = {}
    columns = ["query_id", "query", "sample_index", "thought", "finished"]
    for r in thoughts.select(columns).to_pylist():
        grouped.setdefault(r["query_id"], (r["query"], []))[1].append(
            (r["sample_index"], r["thought"], r["finished"])
        )
    drafts = [sorted(d) for _, d in grouped.values()]
    return pa.table(
        {
            "query_id": list(grouped),
            "query": [query for query, _ in grouped.values()],
            "thoughts": [[t for _, t, _ in d] for d in drafts],
            "thoughts_finished": [[f for _, _, f in d] for d in drafts],
        }
    )


def refine_thoughts(
    thoughts: pa.Table, settings: RefineSettings, engine: LazyGenerator, work_root: Path
) -> pa.Table:
    """Run ``settings.num_rounds`` strong refinement rounds for every query, in resumable shards.

    Args:
        thoughts: a ``schemas.WEAK_THOUGHTS`` table.
        settings: the stage settings.
        engine: the strong model, loaded only if some shard still has to be generated.
        work_root: folder for shards; keyed below by inputs and settings.

    Returns:
        A ``schemas.STRONG_REFINEMENTS`` table, ``num_rounds`` rows per query, each with the
        refine turn in effect (``settings.refine_turn``, else the strong model's default:
        ``models.default_refine_turn``).

    Raises:
        PromptTooLongError: before the model loads, naming a query whose rounds cannot fit.
    """
    schemas.validate(thoughts, schemas.WEAK_THOUGHTS, "strong_refinements input (weak_thoughts)")
    queries = thoughts_by_query(thoughts)
    model = _model_of(engine)
    turn = settings.refine_turn or default_refine_turn(model)[0]
    # With one round the turn asks nothing here (it is only recorded for training and
    # evaluation), so changing it must not regenerate the answers: it is stamped after the cache.
    generating = settings.model_dump(exclude={"refine_turn"})
    if settings.num_rounds > 1:
        generating["refine_turn"] = turn
    key = fingerprint(
        table_fingerprint(thoughts), generating, model_fingerprint(model), CODE_VERSION
    )

    def first_round(query: str, drafts: list[str]):
        return prompts.strong_conversation(query, drafts, [], settings.template, turn)

    def preflight(pending: pa.Table) -> None:
        engine.chat_format.check_fits(
            [
                (f"query {r['query_id']}", first_round(r["query"], r["thoughts"]), r["query"])
                for r in pending.to_pylist()
            ],
            rounds=settings.num_rounds,
            max_new_tokens=settings.max_new_tokens,
            refine_turn=turn,
        )

    def process(shard: pa.Table, index: int) -> pa.Table:
        rows_in = shard.to_pylist()
        history: dict[str, list[str]] = {r["query_id"]: [] for r in rows_in}
        rows = []
        for round_ in range(1, settings.num_rounds + 1):
            sampling = dataclasses.replace(
                settings.sampling(), seed=settings.seed + 1000 * round_ + index
            )
            conversations = [
                prompts.strong_conversation(
                    r["query"],
                    r["thoughts"],
                    history[r["query_id"]],
                    settings.template,
                    turn,
                )
                for r in rows_in
            ]
            outputs = engine().generate(conversations, sampling)
            last = round_ == settings.num_rounds
            samples = (
                engine().generate(conversations, settings.consistency_sampling(seed=sampling.seed))
                if last and settings.consistency_samples
                else [[] for _ in conversations]
            )
            for r, conv, (text,), others in zip(
                rows_in, conversations, outputs, samples, strict=True
            ):
                history[r["query_id"]].append(str(text))
                rows.append(
                    {
                        **r,
                        "round": round_,
                        "refinement": str(text),
                        "finished": text.finished,
                        "samples": [str(o) for o in others],
                        "refine_turn": turn,
                        **provenance(model, settings, sampling, conv),
                    }
                )
        return pa.Table.from_pylist(rows, schema=schemas.STRONG_REFINEMENTS)

    table = run_sharded(
        queries,
        work_root / "strong_refinements" / key[:16],
        settings.shard_size,
        process,
        schemas.STRONG_REFINEMENTS,
        before_first=preflight,
    )
    column = table.schema.get_field_index("refine_turn")
    return table.set_column(
        column, table.schema.field(column), pa.array([turn] * table.num_rows, pa.string())
    )
