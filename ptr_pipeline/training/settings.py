"""Settings of the training stage, the typed job the training process receives, and the DeepSpeed
config built from the settings (never hand-edited)."""

from typing import Literal

import pydantic

from ptr_pipeline.conversation import REFINE_PROMPT


class TrainSettings(pydantic.BaseModel):
    """Weighted thought-mask fine-tuning. Defaults are the CPU demo. The model trained is an
    input (the ``base_model`` asset), not a setting."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    zero_stage: int = pydantic.Field(0, ge=0, le=3, description="DeepSpeed ZeRO stage")
    offload_optimizer: bool = pydantic.Field(False, description="ZeRO >= 1: optimizer state on CPU")
    precision: Literal["fp32", "bf16"] = "fp32"
    learning_rate: float = pydantic.Field(1e-3, gt=0.0)
    warmup_steps: int = pydantic.Field(0, ge=0, description="linear warm-up, then constant")
    weight_decay: float = pydantic.Field(0.0, ge=0.0)
    gradient_clipping: float = pydantic.Field(1.0, ge=0.0)
    num_epochs: int = pydantic.Field(2, ge=1)
    max_steps: int | None = pydantic.Field(
        None, ge=1, description="optimizer steps; caps num_epochs"
    )
    micro_batch_size: int = pydantic.Field(
        32,
        ge=1,
        description="sequences per device per micro-step; the loss is normalised over the whole "
        "optimizer step, so micro_batch_size x gradient_accumulation_steps x num_gpus can be cut "
        "any way without changing the objective",
    )
    gradient_accumulation_steps: int = pydantic.Field(1, ge=1)
    max_seq_len: int = pydantic.Field(
        1024, ge=16, description="longer examples are dropped (counted in the manifest)"
    )
    thought_weight: float = pydantic.Field(
        0.0,
        ge=0.0,
        description="loss weight of thought tokens; 0 = masked (the paper's thought mask)",
    )
    thought_weight_schedule: Literal["constant", "linear"] = pydantic.Field(
        "constant", description="linear: thought t of n gets thought_weight * t / n (beta_t)"
    )
    answer_weight: float = pydantic.Field(
        1.0, gt=0.0, description="loss weight of the final answer"
    )
    refine_prompt: str = pydantic.Field(REFINE_PROMPT, description="user turn between steps")
    seed: int = 19260817  # the official code's seed
    num_gpus: int = pydantic.Field(
        1, ge=1, description=">1 starts the deepspeed launcher with that many ranks"
    )

    @pydantic.model_validator(mode="after")
    def _check(self) -> "TrainSettings":
        if self.offload_optimizer and self.zero_stage == 0:
            raise ValueError("offload_optimizer needs zero_stage >= 1")
        return self


class TrainJob(pydantic.BaseModel):
    """What ``launch`` hands the training process (``train.py --job job.json``): one typed file."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    settings: TrainSettings
    base_model: str  # the model as the user named it (hub id, folder, tiny:/world: name)
    model_path: str  # what from_pretrained loads
    examples_path: str  # Parquet of tokenized examples (input_ids, labels, loss_weights)
    dataset_fingerprint: str
    examples_dropped_too_long: int
    turns_cut_at_stop_token: int = 0
    output_dir: str  # the checkpoint folder to write
    error_dir: str  # each failing rank writes rank-<N>.json here
    code_version: str


def deepspeed_config(s: TrainSettings) -> dict:
    """The DeepSpeed JSON config for ``s``."""
    zero: dict = {"stage": s.zero_stage}
    if s.zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    if s.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu"}
    config = {
        "train_micro_batch_size_per_gpu": s.micro_batch_size,
        "gradient_accumulation_steps": s.gradient_accumulation_steps,
        "gradient_clipping": s.gradient_clipping,
        "steps_per_print": 1_000_000_000,
        "zero_optimization": zero,
        "optimizer": {
            "type": "AdamW",
            # torch_adam: the torch optimizer, not a JIT-compiled op (minutes on first use).
            "params": {"lr": s.learning_rate, "weight_decay": s.weight_decay, "torch_adam": True},
        },
        "bf16": {"enabled": s.precision == "bf16"},
    }
    if s.warmup_steps:
        config["scheduler"] = {
            "type": "WarmupLR",
            "params": {
                "warmup_min_lr": 0.0,
                "warmup_max_lr": s.learning_rate,
                "warmup_num_steps": s.warmup_steps,
                "warmup_type": "linear",
            },
        }
    return config
