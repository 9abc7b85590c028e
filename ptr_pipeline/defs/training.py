"""Assets: ptr_checkpoint and sft_checkpoint (DeepSpeed fine-tuning in a subprocess; GPU pool).

Both come from one step with one config, so the SFT baseline always has PTR's data and step
budget: the same rows (thoughts dropped, ``training.sft_rows``), micro-batch, accumulation and
epochs. Either can be materialized alone.
"""

import json

import dagster as dg
import pyarrow as pa

from ptr_pipeline import training
from ptr_pipeline.defs.models import model_path
from ptr_pipeline.defs.resources import ComputeResource, PtrHomeResource
from ptr_pipeline.plots import loss_plot, markdown_image

CHECKPOINTS = {
    "ptr_checkpoint": "Weighted thought-mask fine-tune of the base model (PTR), a Hugging Face "
    "checkpoint.",
    "sft_checkpoint": "The SFT baseline: the base model fine-tuned on the strong answers alone "
    "(query -> answer), with PTR's data and step budget.",
}


class LoraConfig(dg.Config, training.LoraSettings):
    """Dagster view of LoraSettings (Dagster config nests Config classes only)."""


class PtrCheckpointConfig(dg.Config, training.TrainSettings):
    """Dagster view of TrainSettings: same fields, same defaults (for PTR and SFT alike)."""

    lora: LoraConfig | None = None


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            key,
            group_name="training",
            description=description,
            deps=["ptr_dataset", "base_model"],
            kinds={"deepspeed", "pytorch"},
        ).with_io_manager_key("checkpoint_io_manager")
        for key, description in CHECKPOINTS.items()
    ],
    name="fine_tune",
    can_subset=True,
    code_version=training.CODE_VERSION,
    pool="gpu",
)
def fine_tune(
    context: dg.AssetExecutionContext,
    config: PtrCheckpointConfig,
    ptr_dataset: pa.Table,
    base_model: pa.Table,
    ptr_home: PtrHomeResource,
    compute: ComputeResource,
):
    home = ptr_home.home()
    settings = training.TrainSettings(**config.model_dump())
    runs = {
        "ptr_checkpoint": (ptr_dataset, settings),
        # SFT rows have no thoughts: the thought weights cannot matter, so they are set to their
        # defaults and a thought-mask ablation reuses the cached SFT checkpoint.
        "sft_checkpoint": (training.sft_rows(ptr_dataset), training.sft_settings(settings)),
    }
    for key, (dataset, run_settings) in runs.items():
        if dg.AssetKey(key) not in context.selected_asset_keys:
            continue
        result = training.train_in_subprocess(
            dataset,
            run_settings,
            model_path=model_path(base_model),
            work_dir=home.work / key,
            device=compute.resolved_device,  # resolved (importing torch) only if training runs
            on_line=context.log.info,
            base_model=base_model.column("spec")[0].as_py(),
        )
        figure = home.artifacts / key / "loss.png"
        png = loss_plot(
            {key.removesuffix("_checkpoint"): result.manifest["summary"]["loss_curve"]}, figure
        )
        yield dg.MaterializeResult(
            asset_key=key,
            value=result.checkpoint,
            metadata={
                **_metadata(result),
                "loss_plot": dg.MetadataValue.md(markdown_image(png, f"{key} loss")),
                "loss_plot_path": dg.MetadataValue.path(str(figure)),
            },
        )


def _metadata(result: training.TrainResult) -> dict:
    summary = result.manifest["summary"]
    losses = summary["loss_curve"]
    return {
        "base_model": result.manifest["base_model"],
        "dataset_fingerprint": result.manifest["dataset_fingerprint"],
        "refine_turn": result.manifest["refine_turn"],
        "reused": result.cached,
        "steps_run": 0 if result.cached else summary["steps"] - (summary["resumed_from_step"] or 0),
        "steps": summary["steps"],
        "examples": summary["examples"],
        "examples_dropped_too_long": summary["examples_dropped_too_long"],
        "first_loss": losses[0],
        "final_loss": losses[-1],
        "loss_curve": dg.MetadataValue.json(losses),
        "train_seconds": summary["train_seconds"],
        "tokens_per_s": summary["tokens_per_s"],
        "trained_tokens": summary["trained_tokens"],
        "mfu": summary["mfu"],  # None unless peak_tflops is set
        "resumed_from_step": summary["resumed_from_step"],
        "origin_counts": dg.MetadataValue.json(summary["origin_counts"]),
        "loss_parts": dg.MetadataValue.json(summary["loss_parts"]),
        "deepspeed_config": dg.MetadataValue.json(result.manifest["deepspeed_config"]),
        "manifest": dg.MetadataValue.md(
            f"```json\n{json.dumps(result.manifest['files'], indent=1)}\n```"
        ),
    }
