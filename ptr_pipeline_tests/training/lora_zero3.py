"""A single-rank ZeRO-3 LoRA training for ``test_lora.py`` (run in a subprocess with DeepSpeed's
CPU rendezvous variables set): ``python -m ptr_pipeline_tests.training.lora_zero3 BASE OUT``.

Trains 2 steps, then writes to OUT: ``ungathered.json`` (adapter shapes in
``engine.module.state_dict()``), ``gathered.json`` (keys and dtypes of the consolidated dict),
``ungathered_error.txt`` (what ``save_lora`` says to the ungathered dict), ``logits.pt`` (the
input ids and the trained model's eval logits, computed under ZeRO-3), and two checkpoints:
``full/`` from the consolidated dict, ``adapters_only/`` from the one with
``exclude_frozen_parameters=True``.
"""

import json
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from ptr_pipeline.training.lora import apply_lora, save_lora
from ptr_pipeline.training.settings import LoraSettings

LORA = LoraSettings(r=256, alpha=512.0, dropout=0.0)  # 256 x 512 adapters: > 1e5, partitioned


def main(base: str, out: Path) -> None:
    import deepspeed  # slow to import: only in the subprocess

    torch.manual_seed(0)
    model = apply_lora(AutoModelForCausalLM.from_pretrained(base), LORA)
    config = {
        "train_micro_batch_size_per_gpu": 2,
        "zero_optimization": {"stage": 3},
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "torch_adam": True}},
    }
    trainable = [p for p in model.parameters() if p.requires_grad]
    engine, *_ = deepspeed.initialize(model=model, model_parameters=trainable, config=config)
    ids = torch.randint(0, model.config.vocab_size, (2, 12))
    for _ in range(2):
        engine.backward(engine(input_ids=ids, labels=ids).loss)
        engine.step()

    ungathered = {k: list(v.shape) for k, v in engine.module.state_dict().items() if "lora_" in k}
    (out / "ungathered.json").write_text(json.dumps(ungathered))
    try:
        save_lora(engine.module.state_dict(), base, LORA, out / "refused", torch.float32)
    except ValueError as e:
        (out / "ungathered_error.txt").write_text(str(e))

    engine.module.eval()
    with torch.no_grad():
        logits = engine.module(input_ids=ids).logits
    torch.save({"input_ids": ids, "logits": logits}, out / "logits.pt")

    state = engine._zero3_consolidated_16bit_state_dict()
    adapters = engine._zero3_consolidated_16bit_state_dict(exclude_frozen_parameters=True)
    gathered = {k: [list(v.shape), str(v.dtype)] for k, v in state.items()}
    (out / "gathered.json").write_text(json.dumps({"full": gathered, "adapters": list(adapters)}))
    save_lora(state, base, LORA, out / "full", torch.float32)
    save_lora(adapters, base, LORA, out / "adapters_only", torch.float32)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
