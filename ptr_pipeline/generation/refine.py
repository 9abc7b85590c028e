"""Stage 3: the strong model refines the weak thoughts, round by round, in context.

Paper notes, section 2.1: the strong model gets q_i and S_thought and produces the refined answer
"via ICL". Round 1 sees the query and every weak thought; round r > 1 keeps the whole history and
appends the refine prompt, so each round refines round r-1 (open point 3).
"""

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

from ptr_pipeline import schemas
from ptr_pipeline.generation import prompts
from ptr_pipeline.generation.backends import Generator
from ptr_pipeline.generation.settings import RefineSettings
from ptr_pipeline.generation.thoughts import (
    CODE_VERSION,
    LazyGenerator,
    provenance,
    thoughts_by_query,
)
from ptr_pipeline.storage import fingerprint, run_sharded, table_fingerprint

log = logging.getLogger(__name__)


def refine_thoughts(
    thoughts: pa.Table,
    settings: RefineSettings,
    make_generator: Callable[[], Generator],
    work_root: Path,
) -> pa.Table:
    """Run ``settings.num_rounds`` strong refinement rounds for every query, in resumable shards.

    Args:
        thoughts: a ``schemas.WEAK_THOUGHTS`` table.
        settings: the stage settings.
        make_generator: builds the strong model's generator (at most once, only when needed).
        work_root: folder for shards; keyed below by inputs and settings.

    Returns:
        A ``schemas.STRONG_REFINEMENTS`` table, ``num_rounds`` rows per query.
    """
    schemas.validate(thoughts, schemas.WEAK_THOUGHTS, "strong_refinements input (weak_thoughts)")
    by_query = thoughts_by_query(thoughts)
    queries = pa.table({"query_id": list(by_query)})
    key = fingerprint(table_fingerprint(thoughts), settings.model_dump(), CODE_VERSION)
    generator = LazyGenerator(make_generator)

    def process(shard: pa.Table, index: int) -> pa.Table:
        ids = shard.column("query_id").to_pylist()
        history: dict[str, list[str]] = {qid: [] for qid in ids}
        rows = []
        for round_ in range(1, settings.num_rounds + 1):
            sampling = dataclasses.replace(
                settings.sampling(), seed=settings.seed + 1000 * round_ + index
            )
            conversations = [
                prompts.strong_conversation(
                    *by_query[qid],
                    history[qid],
                    settings.template,
                    settings.refine_prompt,
                )
                for qid in ids
            ]
            outputs = generator().generate(conversations, sampling)
            for qid, conv, (text,) in zip(ids, conversations, outputs, strict=True):
                history[qid].append(text)
                rows.append(
                    {
                        "query_id": qid,
                        "round": round_,
                        "refinement": text,
                        **provenance(settings.strong_model, settings, sampling, conv),
                    }
                )
        return pa.Table.from_pylist(rows, schema=schemas.STRONG_REFINEMENTS)

    return run_sharded(
        queries,
        work_root / "strong_refinements" / key[:16],
        settings.shard_size,
        process,
        schemas.STRONG_REFINEMENTS,
    )
