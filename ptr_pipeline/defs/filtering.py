"""Assets: filter_decisions (every row's verdict) and ptr_dataset (the kept training rows)."""

import time

import dagster as dg
import pyarrow as pa

from ptr_pipeline import filtering


class ConsistencyFilterConfig(dg.Config, filtering.FilterSettings):
    """Dagster view of FilterSettings: same fields, same defaults."""


@dg.multi_asset(
    group_name="dataset",
    check_specs=[
        dg.AssetCheckSpec(
            "ptr_dataset_is_trainable",
            asset="ptr_dataset",
            blocking=True,  # a failed check stops the run before training
            description="Schema matches, at least one row, no empty queries or answers. "
            "Blocks training.",
        )
    ],
    outs={
        "filter_decisions": dg.AssetOut(
            io_manager_key="parquet_io_manager",
            code_version=filtering.CODE_VERSION,
            kinds={"parquet"},
            description="Every query's progression with every score (similarities, repetition, "
            "self-consistency agreement), its keep/drop verdict and the first rule that fired.",
        ),
        "ptr_dataset": dg.AssetOut(
            io_manager_key="parquet_io_manager",
            code_version=filtering.CODE_VERSION,
            kinds={"parquet"},
            description="Consistency-filtered training rows: query, thoughts, answer.",
        ),
    },
)
def consistency_filter(config: ConsistencyFilterConfig, strong_refinements: pa.Table):
    started = time.perf_counter()
    result = filtering.filter_consistent(strong_refinements, config)
    problems = filtering.dataset_problems(result.kept)
    seconds = round(time.perf_counter() - started, 3)
    yield dg.MaterializeResult(
        asset_key="filter_decisions",
        value=result.decisions,
        metadata={
            "drop_counts": dg.MetadataValue.json(result.drop_counts),
            "measure": result.stats["measure"],
            "thresholds": dg.MetadataValue.json(result.thresholds),
            "rules": dg.MetadataValue.json(config.rules),
            "compute_seconds": seconds,
        },
    )
    yield dg.MaterializeResult(
        asset_key="ptr_dataset",
        value=result.kept,
        metadata={
            "pass_rate": result.stats["pass_rate"],
            "filter_stats": dg.MetadataValue.json(result.stats),
            "compute_seconds": seconds,
        },
        check_results=[
            dg.AssetCheckResult(
                asset_key="ptr_dataset",
                check_name="ptr_dataset_is_trainable",
                passed=not problems,
                description="; ".join(problems) or None,
                metadata={
                    "rows": result.kept.num_rows,
                    "problems": dg.MetadataValue.json(problems),
                },
            )
        ],
    )
