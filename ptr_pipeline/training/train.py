"""Weighted thought-mask SFT under DeepSpeed: the process that ``launch.py`` starts.

Run (one process):   python -m ptr_pipeline.training.train --job job.json
Run (several ranks): deepspeed --num_gpus N --module ptr_pipeline.training.train --job job.json

``job.json`` is a ``TrainJob``: settings, the resolved base model, the tokenized examples (Parquet,
``schemas.TRAIN_EXAMPLES``) and the output folder. Rank 0 saves a Hugging Face checkpoint
(safetensors, tokenizer, config) and its manifest (``storage.CHECKPOINT_MANIFEST``: settings, loss
curve, files with sha256). A rank that fails writes its error to ``error_dir/rank-<N>.json`` first,
so the launcher can report the rank that failed rather than the ranks it took down.

Loss normalisation: each micro-batch's loss is divided by the weight of the whole optimizer step
(all micro-batches, all ranks; one all-reduce per step) and multiplied by
``gradient_accumulation_steps x world_size``, which undoes DeepSpeed's division by the former in
``engine.backward`` and its mean over ranks. The gradient is then that of
``sum(w * ce) / sum(w)`` over the step, whatever the cut into micro-batches and ranks.
"""

import argparse
import json
import math
import os
import random
import time
import traceback
from pathlib import Path

import deepspeed
import deepspeed.comm as dist
import pyarrow.parquet as pq
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from ptr_pipeline.conversation import Encoded
from ptr_pipeline.schemas import IGNORE_INDEX
from ptr_pipeline.storage import CHECKPOINT_MANIFEST, folder_manifest_files
from ptr_pipeline.training.loss import supervised_weight, weighted_thought_loss
from ptr_pipeline.training.settings import TrainJob, deepspeed_config
from ptr_pipeline.training.tokenize import Batch, collate, step_plan, total_steps


def main(job: TrainJob) -> dict:
    settings = job.settings
    rank = int(os.environ.get("RANK", "0"))
    _seed(settings.seed)
    hf_logging.disable_progress_bar()

    # --- setup: examples, tokenizer, model, engine
    examples = [Encoded(**r) for r in pq.read_table(job.examples_path).to_pylist()]
    tokenizer = AutoTokenizer.from_pretrained(job.model_path)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    dtype = torch.bfloat16 if settings.precision == "bf16" else torch.float32  # half the host RAM
    model = AutoModelForCausalLM.from_pretrained(job.model_path, dtype=dtype)
    engine, *_ = deepspeed.initialize(
        model=model, model_parameters=model.parameters(), config=deepspeed_config(settings)
    )
    world = engine.world_size
    steps = total_steps(len(examples), settings, world)
    scale = settings.gradient_accumulation_steps * world
    # A rank with no row left for a micro-step still joins every collective, with zero weight.
    empty = Encoded(examples[0].input_ids, [IGNORE_INDEX] * len(examples[0].input_ids),
                    [0.0] * len(examples[0].input_ids))  # fmt: skip

    # --- loop: one iteration per optimizer step
    losses, tokens = [], 0
    started = time.perf_counter()
    for step, plan in enumerate(step_plan(len(examples), settings, world), start=1):
        batches = [
            _to(collate([examples[i] for i in indices] or [empty], pad_id), engine.device)
            for indices in plan[engine.global_rank]
        ]
        step_weight = _all_reduce(sum(supervised_weight(b.labels, b.loss_weights) for b in batches))
        step_loss = torch.zeros((), dtype=torch.float32)
        for batch, indices in zip(batches, plan[engine.global_rank], strict=True):
            logits = engine(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
            loss = weighted_thought_loss(logits, batch.labels, batch.loss_weights, step_weight)
            engine.backward(loss * scale)
            engine.step()
            step_loss += loss.detach().float().cpu()
            tokens += int(batch.attention_mask.sum()) if indices else 0
        losses.append(round(_all_reduce(step_loss).item(), 6))
        if not math.isfinite(losses[-1]):  # every rank sees the same reduced loss: all stop
            raise FloatingPointError(
                f"loss is {losses[-1]} at step {step}; lower learning_rate or set gradient_clipping"
            )
        if rank == 0 and (step == 1 or step == steps or step % max(1, steps // 10) == 0):
            print(f"step {step}/{steps} loss {losses[-1]:.4f}", flush=True)  # about 12 lines
    seconds = time.perf_counter() - started

    # --- save (rank 0 writes; every rank joins the ZeRO-3 gather)
    summary = {
        "steps": len(losses),
        "examples": len(examples),
        "examples_dropped_too_long": job.examples_dropped_too_long,
        "turns_cut_at_stop_token": job.turns_cut_at_stop_token,
        "loss_curve": losses,
        "train_seconds": round(seconds, 3),
        "tokens_per_s": round(_all_reduce(torch.tensor(float(tokens))).item() / seconds, 1)
        if seconds
        else None,
        "world_size": world,
    }
    state_dict = engine._zero3_consolidated_16bit_state_dict() if settings.zero_stage == 3 else None
    if rank == 0:
        _save(engine.module, tokenizer, state_dict, job, summary)
    return summary


def _to(batch: Batch, device) -> Batch:
    return Batch(*(t.to(device) for t in vars(batch).values()))


def _all_reduce(value: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (a CPU float32 scalar in, the same out)."""
    tensor = torch.as_tensor(value, dtype=torch.float32).detach().clone().reshape(1)
    if dist.get_world_size() > 1:
        device = (
            torch.device("cuda", torch.cuda.current_device())
            if torch.cuda.is_available()
            else "cpu"
        )
        tensor = tensor.to(device)
        dist.all_reduce(tensor)
    return tensor.cpu()[0]


def _seed(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def _save(model, tokenizer, state_dict, job: TrainJob, summary: dict) -> None:
    output_dir = Path(job.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir, state_dict=state_dict, safe_serialization=True)
    tokenizer.save_pretrained(output_dir)
    manifest = {
        "base_model": job.base_model,
        "model_path": job.model_path,
        "dataset_fingerprint": job.dataset_fingerprint,
        "code_version": job.code_version,
        "settings": job.settings.model_dump(),
        "deepspeed_config": deepspeed_config(job.settings),
        "summary": summary,
        "files": folder_manifest_files(output_dir),
        "versions": {"torch": torch.__version__, "deepspeed": deepspeed.__version__},
    }
    (output_dir / CHECKPOINT_MANIFEST).write_text(json.dumps(manifest, indent=2))


def _record_error(job: TrainJob, error: BaseException) -> None:
    """Leave this rank's error where the launcher looks, before the process exits."""
    rank = os.environ.get("RANK", "0")
    path = Path(job.error_dir) / f"rank-{rank}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "rank": int(rank),
                "time": time.time(),
                "error": f"{type(error).__name__}: {error}",
                "traceback": "".join(traceback.format_exception(error)),
            }
        )
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--job", required=True, type=Path, help="TrainJob JSON written by launch.py"
    )
    parser.add_argument("--local_rank", type=int, default=0, help="set by the deepspeed launcher")
    args = parser.parse_args()
    train_job = TrainJob.model_validate_json(args.job.read_text())
    try:
        main(train_job)
    except BaseException as e:
        _record_error(train_job, e)
        raise
