"""Weighted thought-mask SFT under DeepSpeed: the process that ``launch.py`` starts.

Run (one process):   python -m ptr_pipeline.training.train --job job.json
Run (several ranks): deepspeed --num_gpus N --module ptr_pipeline.training.train --job job.json

``job.json`` holds the settings, the resolved base model path, the dataset Parquet path and the
output folder. Rank 0 saves a Hugging Face checkpoint (safetensors, tokenizer, config) and
``ptr_manifest.json`` (settings, loss curve, files with sha256) into the output folder.
"""

import argparse
import json
import os
import random
import time
from pathlib import Path

import deepspeed
import pyarrow.parquet as pq
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from ptr_pipeline.storage import file_sha256
from ptr_pipeline.training.launch import MANIFEST
from ptr_pipeline.training.loss import weighted_thought_loss
from ptr_pipeline.training.settings import TrainSettings, deepspeed_config
from ptr_pipeline.training.tokenize import Batch, collate, encode_example


def main(job: dict) -> dict:
    settings = TrainSettings.model_validate(job["settings"])
    output_dir = Path(job["output_dir"])
    rank = int(os.environ.get("RANK", "0"))
    _seed(settings.seed)
    hf_logging.disable_progress_bar()

    # --- setup: tokenizer, data, model, engine
    tokenizer = AutoTokenizer.from_pretrained(job["model_path"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    examples, dropped = _encode(tokenizer, Path(job["dataset_path"]), settings)
    if not examples:
        raise SystemExit(f"no training example fits max_seq_len={settings.max_seq_len}")
    dtype = torch.bfloat16 if settings.precision == "bf16" else torch.float32  # half the host RAM
    model = AutoModelForCausalLM.from_pretrained(job["model_path"], dtype=dtype)
    engine, *_ = deepspeed.initialize(
        model=model, model_parameters=model.parameters(), config=deepspeed_config(settings)
    )
    world = engine.world_size
    micro_per_epoch = len(examples) // (settings.micro_batch_size * world) or 1
    steps_per_epoch = max(1, micro_per_epoch // settings.gradient_accumulation_steps)
    total_steps = min(settings.max_steps or 10**12, steps_per_epoch * settings.num_epochs)

    # --- loop
    losses, tokens, step, micro_losses = [], 0, 0, []
    started = time.perf_counter()
    rng = random.Random(settings.seed)
    while step < total_steps:
        for batch in _epoch(
            examples, micro_per_epoch, settings, rng, engine, tokenizer.pad_token_id
        ):
            logits = engine(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
            loss = weighted_thought_loss(logits, batch.labels, batch.weights)
            engine.backward(loss)
            boundary = engine.is_gradient_accumulation_boundary()
            engine.step()
            micro_losses.append(loss.item())
            tokens += int(batch.attention_mask.sum())
            if boundary:
                step += 1
                losses.append(round(sum(micro_losses) / len(micro_losses), 6))
                micro_losses = []
                if rank == 0:
                    print(f"step {step}/{total_steps} loss {losses[-1]:.4f}", flush=True)
                if step >= total_steps:
                    break
    seconds = time.perf_counter() - started

    # --- save (rank 0 writes; every rank joins the ZeRO-3 gather)
    summary = {
        "steps": step,
        "examples": len(examples),
        "examples_dropped_too_long": dropped,
        "loss_curve": losses,
        "train_seconds": round(seconds, 3),
        "tokens_per_s": round(tokens * world / seconds, 1) if seconds else None,
        "world_size": world,
    }
    state_dict = engine._zero3_consolidated_16bit_state_dict() if settings.zero_stage == 3 else None
    if rank == 0:
        _save(engine.module, tokenizer, state_dict, output_dir, job, summary)
    return summary


def _encode(tokenizer, dataset_path: Path, settings: TrainSettings):
    rows = pq.read_table(dataset_path).to_pylist()
    encoded = [
        encode_example(tokenizer, r["query"], r["thoughts"], r["answer"], settings) for r in rows
    ]
    examples = [e for e in encoded if e is not None]
    return examples, len(encoded) - len(examples)


def _epoch(examples, micro_batches: int, settings: TrainSettings, rng, engine, pad_id: int):
    """One shuffled pass: this rank's ``micro_batches`` micro-batches, on the engine's device."""
    order = list(range(len(examples)))
    rng.shuffle(order)  # same seed on every rank: the same order, sliced per rank below
    mine = order[engine.global_rank :: engine.world_size]
    size = settings.micro_batch_size
    for start in range(0, micro_batches * size, size):
        batch = collate([examples[i] for i in mine[start : start + size]], pad_id)
        yield Batch(*(t.to(engine.device) for t in vars(batch).values()))


def _seed(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def _save(model, tokenizer, state_dict, output_dir: Path, job: dict, summary: dict) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir, state_dict=state_dict, safe_serialization=True)
    tokenizer.save_pretrained(output_dir)
    files = {
        p.name: {"bytes": p.stat().st_size, "sha256": file_sha256(p)}
        for p in sorted(output_dir.iterdir())
        if p.is_file() and p.name != MANIFEST
    }
    manifest = {
        "base_model": job["base_model"],
        "model_path": job["model_path"],
        "dataset_fingerprint": job.get("dataset_fingerprint"),
        "code_version": job.get("code_version"),
        "settings": job["settings"],
        "deepspeed_config": deepspeed_config(TrainSettings.model_validate(job["settings"])),
        "summary": summary,
        "files": files,
        "versions": {"torch": torch.__version__, "deepspeed": deepspeed.__version__},
    }
    (output_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", required=True, type=Path, help="job JSON written by launch.py")
    parser.add_argument("--local_rank", type=int, default=0, help="set by the deepspeed launcher")
    args = parser.parse_args()
    main(json.loads(args.job.read_text()))
