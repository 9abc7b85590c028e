"""Asset: ptr_checkpoint (DeepSpeed fine-tuning in a subprocess; GPU pool)."""

import json

import dagster as dg
import pyarrow as pa

from ptr_pipeline import training
from ptr_pipeline.defs.resources import ComputeResource, PtrHomeResource


class PtrCheckpointConfig(dg.Config, training.TrainSettings):
    """Dagster view of TrainSettings: same fields, same defaults."""


@dg.asset(
    group_name="training",
    io_manager_key="checkpoint_io_manager",
    code_version=training.CODE_VERSION,
    pool="gpu",
    kinds={"deepspeed", "pytorch"},
    description="Weighted thought-mask fine-tune of the base model, saved as a Hugging Face checkpoint.",
)
def ptr_checkpoint(
    context: dg.AssetExecutionContext,
    config: PtrCheckpointConfig,
    ptr_dataset: pa.Table,
    ptr_home: PtrHomeResource,
    compute: ComputeResource,
) -> dg.MaterializeResult:
    home = ptr_home.home()
    result = training.train_in_subprocess(
        ptr_dataset,
        config,
        model_path=home.resolve_model(config.base_model),
        work_dir=home.work / "ptr_checkpoint",
        device=compute.resolved_device,  # resolved (importing torch) only if training runs
        on_line=context.log.info,
        base_model=config.base_model,
    )
    summary = result.manifest["summary"]
    losses = summary["loss_curve"]
    return dg.MaterializeResult(
        value=result.checkpoint,
        metadata={
            "base_model": config.base_model,
            "reused": result.cached,
            "steps_run": 0 if result.cached else summary["steps"],
            "steps": summary["steps"],
            "examples": summary["examples"],
            "examples_dropped_too_long": summary["examples_dropped_too_long"],
            "first_loss": losses[0],
            "final_loss": losses[-1],
            "loss_curve": dg.MetadataValue.json(losses),
            "train_seconds": summary["train_seconds"],
            "tokens_per_s": summary["tokens_per_s"],
            "deepspeed_config": dg.MetadataValue.json(result.manifest["deepspeed_config"]),
            "manifest": dg.MetadataValue.md(
                f"```json\n{json.dumps(result.manifest['files'], indent=1)}\n```"
            ),
        },
    )
