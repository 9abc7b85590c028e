"""Stage 2: the weak model drafts ``num_thoughts`` answers per query (PTR's thought sequence).

docs/paper_notes.md, section 2.1: the weak attempts form S_thought. The drafts are sampled
independently (open point 2); each row carries its provenance (model, sampling, template, prompt
hash).
"""

import dataclasses
import logging
from pathlib import Path

import pyarrow as pa

from ptr_pipeline import schemas
from ptr_pipeline.conversation import Conversation
from ptr_pipeline.engines import LazyGenerator, Sampling
from ptr_pipeline.generation import prompts
from ptr_pipeline.generation.settings import ThoughtSettings
from ptr_pipeline.models import model_fingerprint
from ptr_pipeline.storage import fingerprint, run_sharded, table_fingerprint

log = logging.getLogger(__name__)

CODE_VERSION = "gen_v4"


def provenance(model: str, settings, sampling: Sampling, conversation: Conversation) -> dict:
    """The provenance columns every generated row carries (see schemas._PROVENANCE)."""
    return {
        "model": model,
        "backend": settings.backend,
        "sampling": sampling.to_json(),
        "template": settings.template,
        "prompt_hash": prompts.prompt_hash(conversation),
        "code_version": CODE_VERSION,
    }


def _model_of(engine: LazyGenerator) -> str:
    if engine.model_path is None:
        raise ValueError("the generation stages need an engine built with its model_path")
    return engine.model_path


def generate_thoughts(
    queries: pa.Table, settings: ThoughtSettings, engine: LazyGenerator, work_root: Path
) -> pa.Table:
    """Draft ``settings.num_thoughts`` weak answers for every query, in resumable shards.

    Args:
        queries: a ``schemas.QUERY_POOL`` table.
        settings: the stage settings.
        engine: the weak model (built with its ``model_path``), loaded only if some shard still
            has to be generated.
        work_root: folder for shards; the stage keys its own sub-folder by inputs and settings.

    Returns:
        A ``schemas.WEAK_THOUGHTS`` table, ``num_thoughts`` rows per query.

    Raises:
        PromptTooLongError: before the model loads, naming a query that cannot fit its context.
    """
    schemas.validate(queries, schemas.QUERY_POOL, "weak_thoughts input (query_pool)")
    model = _model_of(engine)
    key = fingerprint(
        table_fingerprint(queries), settings.model_dump(), model_fingerprint(model), CODE_VERSION
    )
    sampling = settings.sampling(n=settings.num_thoughts)

    def conversation(query: str) -> Conversation:
        return prompts.thought_conversation(query, settings.template)

    def preflight(pending: pa.Table) -> None:
        engine.chat_format.check_fits(
            [
                (f"query {qid} ({source})", conversation(q))
                for qid, q, source in zip(
                    *(pending.column(c).to_pylist() for c in ("query_id", "query", "source")),
                    strict=True,
                )
            ],
            rounds=1,
            max_new_tokens=settings.max_new_tokens,
        )

    def process(shard: pa.Table, index: int) -> pa.Table:
        conversations = [conversation(q) for q in shard.column("query").to_pylist()]
        shard_sampling = dataclasses.replace(sampling, seed=settings.seed + index)
        drafts = engine().generate(conversations, shard_sampling)
        rows = []
        for qid, query, conv, samples in zip(
            shard.column("query_id").to_pylist(),
            shard.column("query").to_pylist(),
            conversations,
            drafts,
            strict=True,
        ):
            for i, text in enumerate(samples):
                rows.append(
                    {
                        "query_id": qid,
                        "query": query,
                        "sample_index": i,
                        "thought": str(text),
                        "finished": text.finished,
                        **provenance(model, settings, shard_sampling, conv),
                    }
                )
        return pa.Table.from_pylist(rows, schema=schemas.WEAK_THOUGHTS)

    return run_sharded(
        queries,
        work_root / "weak_thoughts" / key[:16],
        settings.shard_size,
        process,
        schemas.WEAK_THOUGHTS,
        before_first=preflight,
    )
