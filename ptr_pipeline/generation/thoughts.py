"""Stage 2: the weak model drafts ``num_thoughts`` answers per query (PTR's thought sequence).

Paper notes, section 2.1: the weak attempts form S_thought. The drafts are sampled independently
(open point 2); each row carries its provenance (model, sampling, template, prompt hash).
"""

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

from ptr_pipeline import schemas
from ptr_pipeline.generation import prompts
from ptr_pipeline.generation.backends import Generator
from ptr_pipeline.generation.settings import Sampling, ThoughtSettings
from ptr_pipeline.storage import fingerprint, run_sharded, table_fingerprint

log = logging.getLogger(__name__)

CODE_VERSION = "gen_v1"


class LazyGenerator:
    """Builds the generator on first use, so a fully cached stage never loads a model."""

    def __init__(self, factory: Callable[[], Generator]):
        self._factory = factory
        self._generator: Generator | None = None

    def __call__(self) -> Generator:
        if self._generator is None:
            self._generator = self._factory()
        return self._generator


def provenance(
    model: str, settings, sampling: Sampling, conversation: prompts.Conversation
) -> dict:
    """The provenance columns every generated row carries (see schemas._PROVENANCE)."""
    return {
        "model": model,
        "backend": settings.backend,
        "sampling": sampling.to_json(),
        "template": settings.template,
        "prompt_hash": prompts.prompt_hash(conversation),
        "code_version": CODE_VERSION,
    }


def thoughts_by_query(thoughts: pa.Table) -> dict[str, tuple[str, list[str]]]:
    """query_id -> (query, its thoughts in sample order), queries in first-seen order."""
    grouped: dict[str, tuple[str, list[tuple[int, str]]]] = {}
    for r in thoughts.select(["query_id", "query", "sample_index", "thought"]).to_pylist():
        grouped.setdefault(r["query_id"], (r["query"], []))[1].append(
            (r["sample_index"], r["thought"])
        )
    return {
        qid: (query, [t for _, t in sorted(drafts)]) for qid, (query, drafts) in grouped.items()
    }


def generate_thoughts(
    queries: pa.Table,
    settings: ThoughtSettings,
    make_generator: Callable[[], Generator],
    work_root: Path,
) -> pa.Table:
    """Draft ``settings.num_thoughts`` weak answers for every query, in resumable shards.

    Args:
        queries: a ``schemas.QUERY_POOL`` table.
        settings: the stage settings.
        make_generator: builds the weak model's generator (called at most once, and only if some
            shard still has to be generated).
        work_root: folder for shards; the stage keys its own sub-folder by inputs and settings.

    Returns:
        A ``schemas.WEAK_THOUGHTS`` table, ``num_thoughts`` rows per query.
    """
    schemas.validate(queries, schemas.QUERY_POOL, "weak_thoughts input (query_pool)")
    key = fingerprint(table_fingerprint(queries), settings.model_dump(), CODE_VERSION)
    generator = LazyGenerator(make_generator)
    sampling = settings.sampling(n=settings.num_thoughts)

    def process(shard: pa.Table, index: int) -> pa.Table:
        conversations = [
            prompts.thought_conversation(q, settings.template)
            for q in shard.column("query").to_pylist()
        ]
        shard_sampling = dataclasses.replace(sampling, seed=settings.seed + index)
        drafts = generator().generate(conversations, shard_sampling)
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
                        "thought": text,
                        **provenance(settings.weak_model, settings, shard_sampling, conv),
                    }
                )
        return pa.Table.from_pylist(rows, schema=schemas.WEAK_THOUGHTS)

    return run_sharded(
        queries,
        work_root / "weak_thoughts" / key[:16],
        settings.shard_size,
        process,
        schemas.WEAK_THOUGHTS,
    )
