"""Settings of the training stage, the typed job the training process receives, and the DeepSpeed
config built from the settings (never hand-edited)."""

from importlib.util import find_spec
from typing import Literal

import pydantic

# Attention implementations whose packed rows give the per-token losses and gradients of
# unpacked ones (``test_packing.py::test_packing_is_exact`` runs each).
PACKING_EXACT = ("eager", "sdpa")


class LoraSettings(pydantic.BaseModel):
    """LoRA adapters (peft 0.21, ``peft.LoraConfig``): only the adapters train; the checkpoint holds
    the merged model and the adapter (``adapter/``)."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    r: int = pydantic.Field(16, ge=1, description="adapter rank")
    alpha: float = pydantic.Field(32.0, gt=0.0, description="scaling: alpha / r")
    dropout: float = pydantic.Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] | None = pydantic.Field(
        None,
        description="module names to adapt; None = peft's default for the architecture; "
        '["all-linear"] = every linear layer but the output layer',
    )


class TrainSettings(pydantic.BaseModel):
    """Weighted thought-mask fine-tuning. Defaults are the CPU demo. The model trained is an
    input (the ``base_model`` asset), not a setting."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    zero_stage: int = pydantic.Field(0, ge=0, le=3, description="DeepSpeed ZeRO stage")
    offload_optimizer: bool = pydantic.Field(False, description="ZeRO >= 1: optimizer state on CPU")
    precision: Literal["fp32", "bf16"] = "fp32"
    learning_rate: float = pydantic.Field(1e-3, gt=0.0)
    warmup_steps: int = pydantic.Field(0, ge=0, description="linear warm-up, then constant")
    weight_decay: float = pydantic.Field(0.0, ge=0.0)
    gradient_clipping: float = pydantic.Field(1.0, ge=0.0)
    num_epochs: int = pydantic.Field(
        4,
        ge=1,
        description="passes over the dataset (4: the miniature world's measured default, 60 "
        "steps on the demo's rows; the released code ran 3)",
    )
    max_steps: int | None = pydantic.Field(
        None, ge=1, description="optimizer steps; caps num_epochs"
    )
    micro_batch_size: int = pydantic.Field(
        32,
        ge=1,
        description="dataset rows per device per micro-step (packed or not); the loss is "
        "normalised over the whole optimizer step, so micro_batch_size x "
        "gradient_accumulation_steps x num_gpus can be cut any way without changing the objective",
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
    seed: int = 19260817  # the official code's seed
    num_gpus: int = pydantic.Field(
        1, ge=1, description=">1 starts the deepspeed launcher with that many ranks"
    )
    packing: bool = pydantic.Field(
        True,
        description="pack each micro-batch's rows into rows of max_seq_len (best-fit "
        "decreasing), position_ids restarting per sample, no attention across samples; the "
        "step's rows and objective are those of packing: false",
    )
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = pydantic.Field(
        "sdpa",
        description="transformers attention; packing is allowed with those tested to keep packed "
        "samples apart here (PACKING_EXACT); flash_attention_2 (GPU) needs packing: false",
    )
    gradient_checkpointing: bool = pydantic.Field(
        False,
        description="recompute activations in the backward pass (less memory, ~1/3 more compute)",
    )
    loss: Literal["answer_ce", "ptr3"] = pydantic.Field(
        "answer_ce",
        description="answer_ce: weighted cross-entropy (the released code); ptr3: the paper's "
        "Eq. 3.4, lambda1 x answer_ce + lambda2 x consistency + lambda3 x confidence",
    )
    ptr3_lambdas: list[float] = pydantic.Field(
        [0.8, 0.1, 0.1],
        description="loss: ptr3: (lambda1, lambda2, lambda3), each >= 0, summing to 1; the paper "
        "reports lambda1 ~ 0.8 as best",
    )
    ptr3_beta0: float = pydantic.Field(
        1.0, ge=0.0, description="loss: ptr3: beta_t = beta0 * t / n weighs step t's confidence"
    )
    lora: LoraSettings | None = pydantic.Field(None, description="None = full fine-tuning")
    save_steps: int | None = pydantic.Field(
        50,
        ge=1,
        description="save a resumable checkpoint every N optimizer steps (None = never); a "
        "rerun of a killed training resumes from the last complete one",
    )
    save_total_limit: int = pydantic.Field(
        2, ge=1, description="resumable checkpoints kept; older ones are deleted"
    )
    peak_tflops: float | None = pydantic.Field(
        None,
        gt=0.0,
        description="peak dense TFLOP/s of one device at the training precision (e.g. 989 for "
        "an H100 SXM in bf16); when set, the manifest reports MFU",
    )

    @pydantic.model_validator(mode="after")
    def _check(self) -> "TrainSettings":
        if self.offload_optimizer and self.zero_stage == 0:
            raise ValueError("offload_optimizer needs zero_stage >= 1")
        if self.packing and self.attn_implementation not in PACKING_EXACT:
            raise ValueError(
                f"packing with attn_implementation={self.attn_implementation!r} is not tested to "
                f"keep packed samples apart; use one of {sorted(PACKING_EXACT)} or packing: false"
            )
        if self.attn_implementation == "flash_attention_2" and not find_spec("flash_attn"):
            raise ValueError(
                "attn_implementation 'flash_attention_2' needs the flash-attn package (CUDA GPUs "
                "only); use sdpa"
            )
        lambdas = self.ptr3_lambdas
        if len(lambdas) != 3 or min(lambdas) < 0 or abs(sum(lambdas) - 1.0) > 1e-6:
            raise ValueError(
                f"ptr3_lambdas must be three weights >= 0 summing to 1 (Eq. 3.4), got {lambdas}"
            )
        return self

    def result_fields(self) -> dict:
        """The settings that decide the trained weights (the cache key): every field but when
        state is saved (``save_steps``, ``save_total_limit``), what is only reported
        (``peak_tflops``) and the ptr3 weights under ``loss: answer_ce``; changing those reuses or
        resumes a run."""
        unused = {"save_steps", "save_total_limit", "peak_tflops"}
        if self.loss == "answer_ce":
            unused |= {"ptr3_lambdas", "ptr3_beta0"}
        return self.model_dump(exclude=unused)


class TrainJob(pydantic.BaseModel):
    """What ``launch`` hands the training process (``train.py --job job.json``): one typed file."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    settings: TrainSettings
    base_model: str  # the model as the user named it (hub id, folder, tiny:/world: name)
    model_path: str  # what from_pretrained loads
    examples_path: str  # Parquet of tokenized examples (input_ids, labels, loss_weights)
    dataset_fingerprint: str
    refine_turn: str  # the dataset's (tokenize.dataset_refine_turn); recorded in the manifest
    examples_dropped_too_long: int
    turns_cut_at_stop_token: int = 0
    origin_counts: dict[str, int] = {}  # rows per origin (ptr, sft) of the dataset
    output_dir: str  # the checkpoint folder to write
    resume_dir: str  # resumable checkpoints step-<N>/ (written and read by train.py)
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
