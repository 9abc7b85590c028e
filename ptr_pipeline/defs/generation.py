"""Assets: weak_thoughts and strong_refinements (GPU pool)."""

import time

import dagster as dg
import pyarrow as pa

from ptr_pipeline import generation
from ptr_pipeline.defs.models import model_path
from ptr_pipeline.defs.resources import ComputeResource, PtrHomeResource


class WeakThoughtsConfig(dg.Config, generation.ThoughtSettings):
    """Dagster view of ThoughtSettings: same fields, same defaults."""


class StrongRefinementsConfig(dg.Config, generation.RefineSettings):
    """Dagster view of RefineSettings: same fields, same defaults."""


@dg.asset(
    group_name="dataset",
    io_manager_key="parquet_io_manager",
    code_version=generation.CODE_VERSION,
    pool="gpu",
    kinds={"pytorch", "parquet"},
    description="The weak model's drafts (thoughts), num_thoughts per query, with provenance.",
)
def weak_thoughts(
    config: WeakThoughtsConfig,
    query_pool: pa.Table,
    weak_model: pa.Table,
    ptr_home: PtrHomeResource,
    compute: ComputeResource,
) -> dg.MaterializeResult:
    home, started = ptr_home.home(), time.perf_counter()
    engine = compute.engine(config.backend, model_path(weak_model), config)
    table = generation.generate_thoughts(query_pool, config, engine, home.work)
    engine.close()
    return dg.MaterializeResult(
        value=table, metadata=_generation_metadata(table, "thought", started)
    )


@dg.asset(
    group_name="dataset",
    io_manager_key="parquet_io_manager",
    code_version=generation.CODE_VERSION,
    pool="gpu",
    kinds={"pytorch", "parquet"},
    description="The strong model's in-context refinements of the thoughts, round by round.",
)
def strong_refinements(
    config: StrongRefinementsConfig,
    weak_thoughts: pa.Table,
    strong_model: pa.Table,
    ptr_home: PtrHomeResource,
    compute: ComputeResource,
) -> dg.MaterializeResult:
    home, started = ptr_home.home(), time.perf_counter()
    engine = compute.engine(config.backend, model_path(strong_model), config)
    table = generation.refine_thoughts(weak_thoughts, config, engine, home.work)
    engine.close()
    turns = sorted(set(table.column("refine_turn").to_pylist()))
    return dg.MaterializeResult(
        value=table,
        metadata={
            **_generation_metadata(table, "refinement", started),
            # the turn training and evaluation will use (strong rounds > 1 use it here too)
            "refine_turn": turns[0] if len(turns) == 1 else dg.MetadataValue.json(turns),
        },
    )


def _generation_metadata(table: pa.Table, text_column: str, started: float) -> dict:
    texts = table.column(text_column).to_pylist()
    return {
        "compute_seconds": round(time.perf_counter() - started, 3),
        "mean_chars": round(sum(map(len, texts)) / len(texts), 1) if texts else 0.0,
        "empty_outputs": sum(not t for t in texts),
    }
