"""Assets: filter_decisions (every row's scores and verdict), ptr_dataset (the kept training
rows, with SFT pairs mixed in when configured) and ptr_dataset_hf (the same rows as a Hugging Face
``datasets`` folder with a dataset card)."""

import json
import shutil
import tempfile
import time
from pathlib import Path

import dagster as dg
import pyarrow as pa

from ptr_pipeline import filtering
from ptr_pipeline.defs.resources import PtrHomeResource
from ptr_pipeline.filtering.export import export_dataset, generation_summary
from ptr_pipeline.filtering.mix import mix_sft, read_sft_pairs
from ptr_pipeline.storage import CHECKPOINT_MANIFEST, folder_manifest_files


class ConsistencyFilterConfig(dg.Config, filtering.FilterSettings):
    """Dagster view of FilterSettings: same fields, same defaults."""


@dg.multi_asset(
    group_name="dataset",
    # The model references only name the models in the dataset card.
    internal_asset_deps={
        "filter_decisions": {dg.AssetKey("strong_refinements")},
        "ptr_dataset": {dg.AssetKey("strong_refinements")},
        "ptr_dataset_hf": {
            dg.AssetKey("strong_refinements"),
            dg.AssetKey("weak_model"),
            dg.AssetKey("strong_model"),
        },
    },
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
            description="Training rows: the kept progressions (query, thoughts, answer), and SFT "
            "pairs when sft_fraction > 0 (column origin).",
        ),
        "ptr_dataset_hf": dg.AssetOut(
            io_manager_key="checkpoint_io_manager",
            code_version=filtering.CODE_VERSION,
            kinds={"huggingface"},
            description="ptr_dataset as a Hugging Face datasets folder (datasets.load_from_disk "
            "reads it; push_to_hub publishes it) with a README.md dataset card: sources, models, "
            "settings, filter statistics; the licence left for you to set.",
        ),
    },
)
def consistency_filter(
    context: dg.AssetExecutionContext,
    config: ConsistencyFilterConfig,
    strong_refinements: pa.Table,
    weak_model: pa.Table,
    strong_model: pa.Table,
    ptr_home: PtrHomeResource,
):
    started = time.perf_counter()
    pairs = (  # read first: a bad SFT source fails before the filter runs
        read_sft_pairs(
            config.sft_source, config.sft_split, config.sft_question_field, config.sft_answer_field
        )
        if config.sft_source
        else None
    )
    result = filtering.filter_consistent(strong_refinements, config)
    dataset, mix = result.kept, None
    if pairs is not None:
        dataset, mix = mix_sft(result.kept, pairs, config.sft_fraction, config.seed)
        mix["sft_source"] = config.sft_source
    problems = filtering.dataset_problems(dataset)
    seconds = round(time.perf_counter() - started, 3)
    filter_info = {
        "settings": config.model_dump(),
        "thresholds": result.thresholds,
        "drop_counts": result.drop_counts,
        "stats": result.stats,
    }
    yield dg.MaterializeResult(
        asset_key="filter_decisions",
        value=result.decisions,
        metadata={
            "drop_counts": dg.MetadataValue.json(result.drop_counts),
            "pass_rate": result.stats["pass_rate"],
            "filter_stats": dg.MetadataValue.json(result.stats),  # per-step statistics
            "measure": result.stats["measure"],
            "thresholds": dg.MetadataValue.json(result.thresholds),
            "rules": dg.MetadataValue.json(config.rules),
            "compute_seconds": seconds,
        },
    )
    yield dg.MaterializeResult(
        asset_key="ptr_dataset",
        value=dataset,
        metadata={
            "pass_rate": result.stats["pass_rate"],
            "filter_stats": dg.MetadataValue.json(result.stats),
            "sft_mix": dg.MetadataValue.json(mix),
            "compute_seconds": seconds,
        },
        check_results=[
            dg.AssetCheckResult(
                asset_key="ptr_dataset",
                check_name="ptr_dataset_is_trainable",
                passed=not problems,
                description="; ".join(problems) or None,
                metadata={"rows": dataset.num_rows, "problems": dg.MetadataValue.json(problems)},
            )
        ],
    )
    pool = context.instance.get_latest_materialization_event(dg.AssetKey("query_pool"))
    pool_metadata = (
        pool.asset_materialization.metadata if pool and pool.asset_materialization else {}
    )
    provenance = {
        "queries": {
            key: pool_metadata[key].value
            for key in ("source", "records", "dropped", "decontaminated_against")
            if key in pool_metadata
        },
        "models": {
            ref.column("role")[0].as_py(): {
                field: ref.column(field)[0].as_py() for field in ("spec", "revision", "fingerprint")
            }
            for ref in (weak_model, strong_model)
        },
        "generation": generation_summary(strong_refinements),
        "consistency_filter": filter_info,
        "sft_mix": mix,
    }
    staging = ptr_home.home().work / "ptr_dataset_hf"
    staging.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=staging))
    try:
        export_dataset(dataset, folder / "dataset", provenance)
        manifest = {"files": folder_manifest_files(folder / "dataset"), "provenance": provenance}
        (folder / "dataset" / CHECKPOINT_MANIFEST).write_text(
            json.dumps(manifest, indent=1, default=str)
        )
        yield dg.MaterializeResult(asset_key="ptr_dataset_hf", value=folder / "dataset")
    finally:  # the IO manager published a hard-linked copy; the staging folder can go
        shutil.rmtree(folder, ignore_errors=True)
