"""Weighted thought-mask SFT under DeepSpeed: the process that ``launch.py`` starts.

Run (one process):   python -m ptr_pipeline.training.train --job job.json
Run (several ranks): deepspeed --num_gpus N --module ptr_pipeline.training.train --job job.json

``job.json`` is a ``TrainJob``: settings, the resolved base model, the tokenized examples (Parquet,
``schemas.TRAIN_EXAMPLES``), the output folder and the folder of resumable checkpoints. Rank 0
saves a Hugging Face checkpoint (safetensors, tokenizer, config; with LoRA the merged model and
``adapter/``) and its manifest (``storage.CHECKPOINT_MANIFEST``: settings, loss curve, throughput,
files with sha256). A rank that fails writes its error to ``error_dir/rank-<N>.json`` first, so the
launcher can report the rank that failed rather than the ranks it took down.

Loss normalisation: each micro-batch's loss is divided by totals of the whole optimizer step (the
supervised weight and the number of samples, over all micro-batches and ranks; one all-reduce per
step) and multiplied by ``gradient_accumulation_steps x world_size``, which undoes DeepSpeed's
division by the former in ``engine.backward`` and its mean over ranks. The gradient is then that of
the step's objective, whatever the cut into micro-batches and ranks, packed or not.

Only the logits a loss needs are computed: the model gets ``logits_to_keep`` = the positions whose
next token is supervised (``loss.supervised_positions``), so the LM head and the float32
log-softmax run there only.

Resume: every ``save_steps`` steps the ranks save a DeepSpeed checkpoint (weights, optimizer,
scheduler, counters) plus what DeepSpeed does not hold: each rank's RNG states, and (rank 0) the
step reached, the loss curve and the throughput counters (``trainer_state.json``, the completion
marker). It is written as ``.tmp-step-N`` and renamed to ``step-N`` once complete, so a kill leaves
either a complete checkpoint or one that is ignored. A rerun starts from the last complete one; the
data position is the step number (the step plan is a pure function of the seed), so the run ends
with the weights and the loss curve of an uninterrupted one.
"""

import argparse
import inspect
import json
import math
import os
import random
import shutil
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
from ptr_pipeline.training.loss import (
    answer_ce,
    next_token_logprobs,
    supervised_positions,
    supervised_weight,
)
from ptr_pipeline.training.settings import TrainJob, TrainSettings, deepspeed_config
from ptr_pipeline.training.tokenize import Batch, collate, step_plan, total_steps

TRAINER_STATE = "trainer_state.json"  # written last into a resumable checkpoint: its marker


def main(job: TrainJob) -> dict:
    settings = job.settings
    rank = int(os.environ.get("RANK", "0"))
    _seed(settings.seed)
    hf_logging.disable_progress_bar()

    # --- setup: examples, tokenizer, model, engine
    examples = [Encoded(**r) for r in pq.read_table(job.examples_path).to_pylist()]
    tokenizer = AutoTokenizer.from_pretrained(job.model_path)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    model = _model(job)
    engine, *_ = deepspeed.initialize(
        model=model,
        model_parameters=[p for p in model.parameters() if p.requires_grad],
        config=deepspeed_config(settings),
    )
    world = engine.world_size
    steps = total_steps(len(examples), settings, world)
    scale = settings.gradient_accumulation_steps * world
    # A rank with no row left for a micro-step still joins every collective, with zero weight.
    n0 = len(examples[0].input_ids)
    empty = Encoded(examples[0].input_ids, [IGNORE_INDEX] * n0, [0.0] * n0, [0] * n0)
    pack_into = settings.max_seq_len if settings.packing else None
    # Models that take logits_to_keep (transformers' Llama, Qwen2, ...; peft passes it through).
    inner = engine.module.get_base_model() if settings.lora is not None else engine.module
    keeps_logits = "logits_to_keep" in inspect.signature(inner.forward).parameters

    # --- resume from the last complete checkpoint, if any
    state = {"step": 0, "losses": [], "parts": {}, "tokens": 0, "seconds": 0.0}
    checkpoints = Path(job.resume_dir)
    last = last_checkpoint(checkpoints)
    if last is not None:
        engine.load_checkpoint(
            str(checkpoints), tag=last.name, load_module_strict=settings.lora is None
        )
        state = json.loads((last / TRAINER_STATE).read_text())
        _set_rng(torch.load(last / f"rng_state_{rank}.pth", weights_only=False))
        if rank == 0:
            print(f"resuming from {last.name} (step {state['step']} of {steps})", flush=True)

    # --- loop: one iteration per optimizer step
    losses, parts_curve = state["losses"], state["parts"]
    tokens = 0  # trained by this rank in this attempt (real tokens, not padding)
    started = time.perf_counter()
    for step, plan in enumerate(step_plan(len(examples), settings, world), start=1):
        if step <= state["step"]:
            continue  # trained before the checkpoint: the plan is replayed, not the step
        mine = plan[engine.global_rank]
        batches = [
            _to(
                collate([examples[i] for i in indices] or [empty], pad_id, pack_into), engine.device
            )
            for indices in mine
        ]
        totals = {
            "weight": _all_reduce(
                sum(supervised_weight(b.labels, b.loss_weights) for b in batches)
            ),
            "samples": _all_reduce(torch.tensor(float(sum(len(i) for i in mine)))),
        }
        step_loss = torch.zeros((), dtype=torch.float32)
        step_parts: dict[str, torch.Tensor] = {}
        for batch, indices in zip(batches, mine, strict=True):
            loss, parts = _micro_batch_loss(engine, batch, totals, settings, keeps_logits)
            engine.backward(loss * scale)
            engine.step()
            step_loss += loss.detach().float().cpu()
            for name, value in parts.items():
                step_parts[name] = step_parts.get(name, 0.0) + value
            tokens += sum(len(examples[i].input_ids) for i in indices)
        losses.append(round(_all_reduce(step_loss).item(), 6))
        for name, value in step_parts.items():
            parts_curve.setdefault(name, []).append(round(_all_reduce(value).item(), 6))
        if not math.isfinite(losses[-1]):  # every rank sees the same reduced loss: all stop
            raise FloatingPointError(
                f"loss is {losses[-1]} at step {step}; lower learning_rate or set gradient_clipping"
            )
        if rank == 0 and (step == 1 or step == steps or step % max(1, steps // 10) == 0):
            detail = " ".join(f"{k} {v[-1]:.4f}" for k, v in parts_curve.items())
            print(f"step {step}/{steps} loss {losses[-1]:.4f} {detail}".rstrip(), flush=True)
        if settings.save_steps and step % settings.save_steps == 0 and step < steps:
            _save_resumable(engine, checkpoints, settings, step, {
                "step": step, "losses": losses, "parts": parts_curve,
                "tokens": state["tokens"] + _all_reduce(torch.tensor(float(tokens))).item(),
                "seconds": state["seconds"] + time.perf_counter() - started,
            })  # fmt: skip

    # --- save (rank 0 writes; every rank joins the ZeRO-3 gather)
    train_seconds = state["seconds"] + time.perf_counter() - started
    train_tokens = state["tokens"] + _all_reduce(torch.tensor(float(tokens))).item()
    tokens_per_s = train_tokens / train_seconds if train_seconds else None
    flops = model_flops_per_token(engine.module, examples, settings)
    summary = {
        "steps": len(losses),
        "resumed_from_step": state_step(last) if last is not None else None,
        "examples": len(examples),
        "examples_dropped_too_long": job.examples_dropped_too_long,
        "turns_cut_at_stop_token": job.turns_cut_at_stop_token,
        "origin_counts": job.origin_counts,
        "loss_curve": losses,
        "loss_parts": parts_curve,
        "train_seconds": round(train_seconds, 3),
        "trained_tokens": int(train_tokens),
        "tokens_per_s": round(tokens_per_s, 1) if tokens_per_s else None,
        "model_flops_per_token": flops,
        "mfu": None,  # launch.report_mfu: for the peak_tflops of the run that reads it
        "world_size": world,
    }
    state_dict = None
    if settings.zero_stage == 3:  # gather the partitions (the adapters alone with LoRA)
        state_dict = engine._zero3_consolidated_16bit_state_dict(
            exclude_frozen_parameters=settings.lora is not None
        )
    if rank == 0:
        _save(engine.module, tokenizer, state_dict, job, summary)
    return summary


def _model(job: TrainJob):
    """The base model as trained: attention implementation, precision, activation checkpointing,
    LoRA adapters."""
    settings = job.settings
    dtype = torch.bfloat16 if settings.precision == "bf16" else torch.float32  # half the host RAM
    model = AutoModelForCausalLM.from_pretrained(
        job.model_path, dtype=dtype, attn_implementation=settings.attn_implementation
    )
    model.config.use_cache = False  # no KV cache in training; packing needs none
    if settings.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if settings.lora is not None:
        from ptr_pipeline.training.lora import apply_lora

        model = apply_lora(model, settings.lora)
    return model


def _micro_batch_loss(
    engine, batch: Batch, totals: dict, settings: TrainSettings, keeps_logits: bool
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """This micro-batch's share of the step's loss, and its parts (ptr3) for the log."""
    ptr3 = settings.loss == "ptr3"
    lambdas = settings.ptr3_lambdas if ptr3 else [1.0, 0.0, 0.0]
    keep = supervised_positions(batch.labels, batch.turns if lambdas[2] > 0 else None)
    out = engine(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        use_cache=False,
        output_hidden_states=lambdas[1] > 0,
        **({"logits_to_keep": keep} if keeps_logits else {}),
    )
    logits = out.logits if keeps_logits else out.logits[:, keep]
    nxt = keep + 1
    logprobs = next_token_logprobs(logits, batch.input_ids[:, nxt])
    weights = batch.loss_weights[:, nxt] * (batch.labels[:, nxt] != IGNORE_INDEX)
    if not ptr3:
        return answer_ce(logprobs, weights, totals["weight"]), {}
    from ptr_pipeline.training.ptr3 import ptr3_loss

    loss, parts = ptr3_loss(
        logprobs, weights, batch.sample_ids[:, nxt], batch.turns[:, nxt],
        out.hidden_states[-1] if lambdas[1] > 0 else None, batch.sample_ids, batch.turns,
        totals["weight"], totals["samples"], lambdas, settings.ptr3_beta0,
    )  # fmt: skip
    return loss, parts  # detached float32 scalars


def model_flops_per_token(model, examples: list[Encoded], settings: TrainSettings) -> float:
    """Training FLOPs per token, model FLOPs as in PaLM (Chowdhery et al. 2022, appendix B):
    6 N for the matrix products (forward 2N, backward 4N; 4N with LoRA, whose frozen weights get
    no weight gradient) plus 12 L d T for attention, N the parameters but the input embedding,
    L layers, d hidden size, T the mean sample length (packed samples attend within themselves).
    Activation recomputation does not count (MFU, not HFU)."""
    config = model.config
    tied = getattr(config, "tie_word_embeddings", False)  # then the embedding is the LM head too
    n = sum(_numel(p) for p in model.parameters())
    n -= 0 if tied else _numel(model.get_input_embeddings().weight)
    mean_len = sum(len(e.input_ids) for e in examples) / len(examples)
    factor = 4 if settings.lora is not None else 6
    attention = 12 * config.num_hidden_layers * config.hidden_size * mean_len
    return float(factor * n + attention)


def _numel(p) -> int:
    """Elements of a parameter, also when ZeRO-3 has partitioned it away (``ds_numel``)."""
    return p.ds_numel if hasattr(p, "ds_numel") else p.numel()


def last_checkpoint(folder: Path) -> Path | None:
    """The newest complete resumable checkpoint (``step-N`` with its trainer state), or None."""
    done = [p for p in folder.glob("step-*") if (p / TRAINER_STATE).is_file()]
    return max(done, key=state_step) if done else None


def state_step(checkpoint: Path) -> int:
    return int(checkpoint.name.removeprefix("step-"))


def _save_resumable(engine, folder: Path, settings: TrainSettings, step: int, state: dict) -> None:
    """A complete resumable checkpoint ``folder/step-<step>``, then the oldest pruned to
    ``save_total_limit``. Every rank writes its part; rank 0 writes the marker and renames."""
    tmp = f".tmp-step-{step:08d}"
    # LoRA: the frozen base weights come from the base model on resume; only adapters are saved.
    engine.save_checkpoint(
        str(folder), tag=tmp, save_latest=False, exclude_frozen_parameters=settings.lora is not None
    )
    torch.save(_rng(), folder / tmp / f"rng_state_{engine.global_rank}.pth")
    dist.barrier()
    if engine.global_rank == 0:
        (folder / tmp / TRAINER_STATE).write_text(json.dumps(state))
        os.rename(folder / tmp, folder / f"step-{step:08d}")
        for old in sorted(folder.glob("step-*"), key=state_step)[: -settings.save_total_limit]:
            shutil.rmtree(old)
        print(f"saved resumable checkpoint step-{step:08d}", flush=True)
    dist.barrier()


def _rng() -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to(batch: Batch, device) -> Batch:
    return Batch(*(t if t is None else t.to(device) for t in vars(batch).values()))


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
    if job.settings.lora is not None:
        from ptr_pipeline.training.lora import save_lora

        dtype = torch.bfloat16 if job.settings.precision == "bf16" else torch.float32
        save_lora(
            state_dict if state_dict is not None else model.state_dict(),
            job.model_path, job.settings.lora, output_dir, dtype,
        )  # fmt: skip
    else:
        model.save_pretrained(output_dir, state_dict=state_dict, safe_serialization=True)
    tokenizer.save_pretrained(output_dir)
    manifest = {
        "base_model": job.base_model,
        "model_path": job.model_path,
        "dataset_fingerprint": job.dataset_fingerprint,
        # The user turn between steps: evaluation and `refine` ask with it by default
        # (models.default_refine_turn), so a checkpoint is tested as it was trained.
        "refine_turn": job.refine_turn,
        "code_version": job.code_version,
        "settings": job.settings.model_dump(),
        "deepspeed_config": deepspeed_config(job.settings),
        "summary": summary,
        "files": folder_manifest_files(output_dir),
        "versions": {"torch": torch.__version__, "deepspeed": deepspeed.__version__},
        "machine": machine(),
    }
    (output_dir / CHECKPOINT_MANIFEST).write_text(json.dumps(manifest, indent=2))


def machine() -> dict:
    """What the weights depend on besides the inputs and versions: the same job gives the same
    bytes on one machine whatever the thread count, but another CPU runs other kernels (MKL picks
    its code path by CPU vendor and instruction set, torch its vectorized kernels by instruction
    set), whose float sums differ in the last bits and then grow over the steps (docs/world.md,
    "What the results depend on")."""
    import platform

    cpuinfo: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            cpuinfo.setdefault(key.strip(), value.strip())  # the first core's
    except OSError:  # not Linux: platform's name only
        pass
    return {
        "cpu": cpuinfo.get("model name") or platform.processor() or platform.machine(),
        "cpu_vendor": cpuinfo.get("vendor_id"),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


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
    # Tear the process group down before the interpreter does: left to exit, a gloo group's
    # threads were once destroyed while joinable and the rank aborted ("terminate called without
    # an active exception", exit -6) after its work was done.
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
